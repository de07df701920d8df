//! Transactions: the history of a consume-transform-produce run with Kafka transactions and
//! the checker that judges it for exactly-once.
//!
//! [`history`] is the model: producer instances (with their transactional ids and when each
//! was initialized, which fences the older ones), every transaction attempt with the inputs it
//! consumed, the output values it sent (so every value read maps back to its attempt), the
//! group offsets it sent and how it ended; the polls of read_committed and read_uncommitted
//! readers; the group's committed offsets as OffsetFetch returned them; and the final
//! read_committed read. [`checker::check`] decides each attempt's fate and reports each
//! [`TxnAnomaly`] class with a count and examples in a [`TxnVerdict`].
//!
//! ```
//! use oxbow_jepsen::txn::{check, InputId, InstanceId, TxnHistory, TxnOp, TxnOutcome};
//!
//! let mut h = TxnHistory::default();
//! let i0 = InstanceId(0);
//! h.instance(i0, "t-0", 0, 1);
//! // Input 7 (partition 0, offset 3) to two outputs; its offset; committed.
//! let op = TxnOp::new(2)
//!     .consume(0, 3, InputId(7))
//!     .produce(0, InputId(7), 0, 700)
//!     .produce(1, InputId(7), 1, 701)
//!     .send_offset(0, 4)
//!     .commit_sent(5)
//!     .ended(TxnOutcome::Committed, 6);
//! h.txn(i0, 0, op);
//! h.offset_fetch(7, 8, &[(0, 4)]);
//! h.final_read.partitions.insert(0, vec![(0, 700)]);
//! h.final_read.partitions.insert(1, vec![(0, 701)]);
//! h.final_read.finished = true;
//! h.final_read.completed_ms = 9;
//! let verdict = check(&h);
//! assert!(verdict.is_valid(), "{verdict}");
//! ```

pub mod checker;
pub mod history;
#[cfg(test)]
mod tests;
pub mod verdict;

pub use checker::check;
pub use history::{
    Bounds, FinalRead, InputId, InputRecord, Instance, InstanceId, Isolation, OffsetFetch,
    OutputRecord, TxnHistory, TxnId, TxnOp, TxnOutcome, TxnPoll,
};
pub use verdict::{TxnAnomaly, TxnCounts, TxnVerdict};
