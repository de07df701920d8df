//! oxbow's IO edge: durable segment storage over real and simulated disks. The tokio node
//! runtime, peer transport and Kafka listener build on this (see docs/ARCHITECTURE.md).

#![deny(missing_docs)]

pub mod address;
pub mod config;
pub mod kafka;
pub mod producer_ids;
pub mod runtime;
pub mod storage;
