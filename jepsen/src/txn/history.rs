//! The history of a consume-transform-produce run with Kafka transactions: the producer
//! instances and when each was initialized, every transaction attempt with what it consumed,
//! what it wrote (so that every output value maps back to its attempt) and how it ended, the
//! polls of read_committed and read_uncommitted readers, the group's committed offsets as
//! OffsetFetch returned them, and the final read_committed read of every output partition.
//!
//! One input topic and one output topic: input partitions and output partitions are numbered
//! each in their own topic. One consumer group owns the committed offsets. Times are
//! milliseconds on one clock (the simulator's, or the Jepsen control node's).

use std::collections::BTreeMap;
use std::fmt;

/// A transactional producer instance: one InitProducerId and what follows it. A producer that
/// initializes again (after a fatal error, a restart) is a new instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstanceId(pub u32);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// One transaction attempt: the instance and the attempt's number within it. A transaction
/// retried after an abort is a new attempt with a new number (and new output values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TxnId {
    /// The instance that ran it.
    pub instance: InstanceId,
    /// Its number within the instance.
    pub number: u32,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.instance, self.number)
    }
}

/// An input record's id: the value of the record in the input topic, unique in the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputId(pub u64);

impl fmt::Display for InputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "input {}", self.0)
    }
}

/// A producer instance and its initialization (InitProducerId with its transactional id),
/// which fences every instance of the same transactional id initialized before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Its transactional id.
    pub transactional_id: String,
    /// When InitProducerId was sent (taken before the request leaves).
    pub init_invoked_ms: u64,
    /// When InitProducerId was answered (taken after the answer came; the instance runs
    /// transactions only after it).
    pub init_completed_ms: u64,
}

/// An input record a transaction consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputRecord {
    /// Input partition.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its id (the record's value).
    pub input: InputId,
}

/// An output record a transaction sent: one copy of one input's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputRecord {
    /// Output partition.
    pub partition: i32,
    /// The input it is an output of.
    pub input: InputId,
    /// Which copy of the input's outputs it is.
    pub copy: u32,
    /// The value sent: unique in the run (per input, copy and attempt).
    pub value: u64,
}

/// How a transaction attempt ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// EndTxn(commit) was acknowledged.
    Committed,
    /// EndTxn(abort) was acknowledged, or the client knows it failed before it sent the
    /// commit (and never sent it).
    Aborted,
    /// The commit was sent and its answer never came (a timeout, a lost connection), or the
    /// run ended with the attempt open. It committed only if the commit was sent and its
    /// records are visible in the final read.
    Indeterminate,
    /// The instance got a fencing error (a newer instance of its transactional id, or the
    /// coordinator's timeout). Before the commit was sent, the attempt cannot commit; after,
    /// it may have (a retried EndTxn is fenced once a newer instance bumped the epoch after
    /// the first one committed), which the final read decides.
    Fenced,
}

/// One transaction attempt of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOp {
    /// When the client began it (taken before any request of it leaves: when
    /// `beginTransaction` was called).
    pub invoked_ms: u64,
    /// The input records it consumed.
    pub consumed: Vec<InputRecord>,
    /// Every output record it sent (each send invoked, whatever its answer).
    pub produced: Vec<OutputRecord>,
    /// The group's offsets it sent to the transaction (TxnOffsetCommit): per input partition,
    /// the next offset to consume. One per partition: the last one sent.
    pub offsets: BTreeMap<i32, i64>,
    /// When EndTxn(commit) was first sent (taken before it leaves: when `commitTransaction`
    /// was called); `None` if it never was.
    pub commit_sent_ms: Option<u64>,
    /// How it ended.
    pub outcome: TxnOutcome,
    /// When the client learned its outcome.
    pub completed_ms: u64,
}

impl TxnOp {
    /// An attempt begun at `invoked_ms`, with nothing consumed or produced yet and an
    /// `Indeterminate` outcome until [`TxnOp::ended`] says otherwise.
    pub fn new(invoked_ms: u64) -> Self {
        Self {
            invoked_ms,
            consumed: Vec::new(),
            produced: Vec::new(),
            offsets: BTreeMap::new(),
            commit_sent_ms: None,
            outcome: TxnOutcome::Indeterminate,
            completed_ms: invoked_ms,
        }
    }

    /// Consumed `input` at `partition`@`offset` of the input topic.
    pub fn consume(mut self, partition: i32, offset: i64, input: InputId) -> Self {
        self.consumed.push(InputRecord {
            partition,
            offset,
            input,
        });
        self
    }

    /// Sent `value`, copy `copy` of `input`'s output, to output `partition`.
    pub fn produce(mut self, partition: i32, input: InputId, copy: u32, value: u64) -> Self {
        self.produced.push(OutputRecord {
            partition,
            input,
            copy,
            value,
        });
        self
    }

    /// Sent the group's next offset `next` of input `partition` to the transaction.
    pub fn send_offset(mut self, partition: i32, next: i64) -> Self {
        self.offsets.insert(partition, next);
        self
    }

    /// Sent EndTxn(commit) at `at_ms`.
    pub fn commit_sent(mut self, at_ms: u64) -> Self {
        self.commit_sent_ms = Some(at_ms);
        self
    }

    /// Ended with `outcome`, learned at `at_ms`.
    pub fn ended(mut self, outcome: TxnOutcome, at_ms: u64) -> Self {
        self.outcome = outcome;
        self.completed_ms = at_ms;
        self
    }
}

/// A reader's isolation level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isolation {
    /// Reads up to the last stable offset and skips aborted records.
    ReadCommitted,
    /// Reads up to the high watermark, aborted records included.
    ReadUncommitted,
}

/// What one fetch response said of a partition's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The last stable offset (the first offset not yet stable), if reported.
    pub last_stable: Option<i64>,
    /// The high watermark, if reported.
    pub high_watermark: Option<i64>,
}

/// One poll of an output-topic reader during the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnPoll {
    /// The reader (process).
    pub reader: usize,
    /// Its isolation level.
    pub isolation: Isolation,
    /// When the poll returned (taken after it returned).
    pub at_ms: u64,
    /// What it returned: (output partition, offset, value).
    pub records: Vec<(i32, i64, u64)>,
    /// Per output partition, the bounds the last fetch of this poll reported (both from the
    /// one response).
    pub bounds: BTreeMap<i32, Bounds>,
}

/// One OffsetFetch of the group's committed offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetFetch {
    /// When it was sent.
    pub invoked_ms: u64,
    /// When it was answered.
    pub completed_ms: u64,
    /// Per input partition, the committed offset; partitions without one are left out.
    pub offsets: BTreeMap<i32, i64>,
}

/// The final read, after healing: every output partition read with read_committed from its
/// start to its last stable offset, which was then its end (no transaction open).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalRead {
    /// Per output partition, (offset, value) in read order. Every partition any transaction
    /// wrote to must be here (empty if it holds nothing visible).
    pub partitions: BTreeMap<i32, Vec<(i64, u64)>>,
    /// When it finished.
    pub completed_ms: u64,
    /// Whether it finished (every partition read to its end).
    pub finished: bool,
}

/// What the clients of a consume-transform-produce run observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnHistory {
    /// Every producer instance.
    pub instances: BTreeMap<InstanceId, Instance>,
    /// Every transaction attempt.
    pub txns: BTreeMap<TxnId, TxnOp>,
    /// Every non-empty poll of the output readers, in the order they returned.
    pub polls: Vec<TxnPoll>,
    /// Every answered OffsetFetch of the group's committed offsets.
    pub offset_fetches: Vec<OffsetFetch>,
    /// The final read.
    pub final_read: FinalRead,
}

impl TxnHistory {
    /// Records an instance of `transactional_id` whose InitProducerId was sent at
    /// `invoked_ms` and answered at `completed_ms`.
    pub fn instance(
        &mut self,
        id: InstanceId,
        transactional_id: &str,
        invoked_ms: u64,
        completed_ms: u64,
    ) {
        self.instances.insert(
            id,
            Instance {
                transactional_id: transactional_id.to_owned(),
                init_invoked_ms: invoked_ms,
                init_completed_ms: completed_ms,
            },
        );
    }

    /// Records attempt `number` of `instance`.
    pub fn txn(&mut self, instance: InstanceId, number: u32, op: TxnOp) -> TxnId {
        let id = TxnId { instance, number };
        self.txns.insert(id, op);
        id
    }

    /// Records a poll of `reader` that returned at `at_ms`, without bounds.
    pub fn poll(
        &mut self,
        reader: usize,
        isolation: Isolation,
        at_ms: u64,
        records: Vec<(i32, i64, u64)>,
    ) {
        self.polls.push(TxnPoll {
            reader,
            isolation,
            at_ms,
            records,
            bounds: BTreeMap::new(),
        });
    }

    /// Records an OffsetFetch sent at `invoked_ms` that answered `offsets` at `completed_ms`.
    pub fn offset_fetch(&mut self, invoked_ms: u64, completed_ms: u64, offsets: &[(i32, i64)]) {
        self.offset_fetches.push(OffsetFetch {
            invoked_ms,
            completed_ms,
            offsets: offsets.iter().copied().collect(),
        });
    }
}
