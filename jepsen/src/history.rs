//! The history of a run: every operation a client invoked, how and when it ended, and what
//! the readers saw. Operations follow Jepsen's model: an invocation, then ok (acknowledged),
//! fail (definitely did not happen) or info (may have happened), each with its process and
//! time.

use std::collections::BTreeMap;

/// What a producer promises, which decides what the checker holds it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Idempotent, acks=all: no acknowledged write lost, no duplicate, no reordering.
    Idempotent,
    /// acks=all without idempotence: at least once (duplicates allowed).
    AtLeastOnce,
    /// acks=1: an acknowledged write may be lost when the leader fails.
    LeaderOnly,
}

/// How one send ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not answered yet.
    Pending,
    /// Acknowledged at this partition and offset.
    Ok {
        /// Partition.
        partition: i32,
        /// Offset (-1 for acks=0).
        offset: i64,
    },
    /// Definitely not written.
    Fail(String),
    /// May have been written.
    Info(String),
}

/// One send of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendOp {
    /// The producer (process).
    pub producer: usize,
    /// What it promises.
    pub kind: Delivery,
    /// The key.
    pub key: u64,
    /// The value (unique in the run).
    pub value: u64,
    /// When it was invoked (simulated ms).
    pub invoked_ms: u64,
    /// How it ended, and when.
    pub outcome: Outcome,
    /// When it ended (simulated ms; 0 while pending).
    pub completed_ms: u64,
    /// The operation it was part of, when one operation of its producer sent several values
    /// (a batch, or the sends of a transaction): an id unique in the run. Within one operation
    /// the sends are ordered by invocation time, then value. `None`: the send was an operation
    /// of its own.
    pub op: Option<u64>,
}

/// One poll of a reader during the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// The reader (process).
    pub reader: usize,
    /// When it was invoked (ms), when known: realtime lag is measured from it (else from
    /// `at_ms`).
    pub invoked_ms: Option<u64>,
    /// When it returned (simulated ms).
    pub at_ms: u64,
    /// What it returned, in order: (partition, offset, value).
    pub records: Vec<(i32, i64, u64)>,
    /// The partitions whose position was out of range in this poll and went to the log start
    /// offset (`auto.offset.reset=earliest`), each with the position it left. The reset came
    /// before any of the partition's records in `records`.
    pub resets: Vec<(i32, i64)>,
    /// Whether the reader was assigned partitions anew or subscribed (Jepsen's `:assign`,
    /// `:subscribe`, or a group rebalance) before this poll: its position in every partition
    /// may then be anywhere, so this poll's first record of each partition is not judged
    /// against what the reader read before (within the poll, records still are).
    pub repositioned: bool,
}

/// A DeleteRecords call: a partition's log start offset asked to move up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrimOp {
    /// Partition.
    pub partition: i32,
    /// The offset asked for; `None`: the high watermark (Kafka's -1).
    pub offset: Option<i64>,
    /// When it was invoked (simulated ms).
    pub invoked_ms: u64,
    /// When it ended (simulated ms).
    pub completed_ms: u64,
    /// The log start offset it answered once acknowledged; `None` when it failed or its
    /// outcome is unknown (it may then have moved the log start up to `offset`).
    pub low_watermark: Option<i64>,
}

/// A record a consumer-group member read, in the generation it read it in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDelivery {
    /// The member (process; a restarted member is a new one).
    pub member: usize,
    /// Its generation when it read the record.
    pub generation: i32,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Value.
    pub value: u64,
}

/// An acknowledged offset commit of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// The member.
    pub member: usize,
    /// The generation it committed in.
    pub generation: i32,
    /// Partition.
    pub partition: i32,
    /// The committed offset (the next to read).
    pub offset: i64,
    /// When it was acknowledged (simulated ms).
    pub at_ms: u64,
}

/// What one consumer group's members did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupHistory {
    /// Whether a group ran in this history (otherwise the group checks are skipped).
    pub ran: bool,
    /// Every record a member read.
    pub deliveries: Vec<GroupDelivery>,
    /// Every acknowledged commit, in acknowledgement order.
    pub commits: Vec<GroupCommit>,
    /// Set when the members had read every acknowledged write (the group's liveness).
    pub finished: bool,
}

/// What the client hosts observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The consumer group's members.
    pub group: GroupHistory,
    /// Every send, by value.
    pub sends: BTreeMap<u64, SendOp>,
    /// The polls of the readers that run alongside the producers: every non-empty one, in the
    /// order they returned (empty ones may be left out; recorded, they count in the realtime
    /// lag).
    pub polls: Vec<Poll>,
    /// The final read: per partition, (offset, value) in read order, from where the final
    /// read began (`final_starts`).
    pub reads: BTreeMap<i32, Vec<(i64, u64)>>,
    /// Per partition, the log start offset the final read began at (its first record, or its
    /// position when the partition held none). Records below it may be gone.
    pub final_starts: BTreeMap<i32, i64>,
    /// Per partition, the log start offset last seen while waiting for the consumer group to
    /// catch up (asked only when retention may move it); the group need not read records
    /// below it, nor below `final_starts`.
    pub group_starts: BTreeMap<i32, i64>,
    /// Every DeleteRecords call.
    pub trims: Vec<TrimOp>,
    /// Whether the topic has retention, which moves log start offsets unasked (so no
    /// DeleteRecords call need justify them).
    pub retention: bool,
    /// Set when the client finished its final read.
    pub finished: bool,
    /// Whether offsets may have holes (transaction markers, as in Jepsen's histories with
    /// transactions): the final read must then only go up, not take every offset.
    pub sparse_offsets: bool,
}
