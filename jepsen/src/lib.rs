//! Jepsen-style histories and the consistency checker for oxbow (and any Kafka-like log).
//!
//! [`history`] is the model: sends (invoke, then ok, fail or info, with process and time), the
//! polls of readers during the run, and a final read. [`checker`] finds the anomalies Jepsen
//! found in Kafka-like systems and reports each class with a count and examples. [`txn`] does
//! the same for consume-transform-produce with transactions: its own history (attempts, their
//! outcomes and which output values each wrote, isolation-aware readers, the group's committed
//! offsets) and a checker of exactly-once. The simulator's turmoil world (`oxbow-sim`) records
//! histories and checks them here; this crate depends on nothing of oxbow's, so it can check
//! histories from real clusters too. [`jsonl`] writes and reads histories as history files
//! (JSON Lines, `docs/jepsen.md`); [`edn`] reads the EDN histories of Jepsen's own Kafka test.

#![deny(missing_docs)]

pub mod checker;
pub mod edn;
pub mod history;
pub mod jsonl;
pub mod txn;
