//! A Kafka-protocol client in Rust, built on the `kafka-protocol` crate: a producer
//! (idempotent by default), a consumer by assignment, a consumer-group member, and an admin
//! client. It talks to oxbow
//! and to any Kafka-compatible broker, over any byte stream ([`transport::Connector`]): tokio
//! TCP in production, turmoil's simulated TCP in the simulator.
//!
//! Every failure after a request reached the network says whether it may have taken effect:
//! [`Error::is_indeterminate`], and for records [`producer::SendError::MaybeWritten`].
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use oxbow_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
//! let client = Client::new(ClientConfig::new("127.0.0.1:9092"))?;
//! let producer = Producer::new(client, ProducerConfig::default())?;
//! let delivered = producer.send(ProducerRecord::new("events", "hello")).await?.await?;
//! println!("partition {} offset {}", delivered.partition, delivered.offset);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod admin;
pub mod client;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod producer;
pub mod transport;

pub use admin::{Admin, NewTopic};
pub use client::{Client, ClientConfig, WallClock};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, Seek};
pub use error::{Error, Result};
pub use group::{ConsumerGroupMetadata, GroupConfig, GroupConsumer};
pub use producer::{
    Acks, Compression, Delivered, Producer, ProducerConfig, ProducerRecord, SendError,
    TransactionError, TransactionalProducer,
};
