//! Transactions: the history of a consume-transform-produce run with Kafka transactions.
//!
//! [`history`] is the model: producer instances (with their transactional ids and when each
//! was initialized, which fences the older ones), every transaction attempt with the inputs it
//! consumed, the output values it sent (so every value read maps back to its attempt), the
//! group offsets it sent and how it ended; the polls of read_committed and read_uncommitted
//! readers; the group's committed offsets as OffsetFetch returned them; and the final
//! read_committed read.

pub mod history;

pub use history::{
    Bounds, FinalRead, InputId, InputRecord, Instance, InstanceId, Isolation, OffsetFetch,
    OutputRecord, TxnHistory, TxnId, TxnOp, TxnOutcome, TxnPoll,
};
