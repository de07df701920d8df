//! Deterministic simulation of oxbow clusters.
//!
//! Today: an in-process discrete-event simulation of several cores (the real `Node`s over the
//! real segment log on simulated disks, a simulated network and clocks), with fault injection
//! and a checker. The turmoil world that runs the node runtime and the client builds on it.

#![deny(missing_docs)]

pub mod checker;
pub mod cluster;
pub mod options;
pub mod rng;
