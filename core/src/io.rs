//! Everything that crosses the core's boundary: [`Input`]s the driver feeds to
//! `Node::handle`, and [`Output`]s it must carry out.

use bytes::Bytes;
use raft::eraftpb::{Entry, HardState, Message, Snapshot};

use crate::batch::BatchError;
use crate::coordinator::{GroupOp, GroupResponse, ListedGroup};
use crate::epoch_history::{EpochEnd, LeaderEpochError};
use crate::ids::{GroupId, IoSeq, NodeId, Offset, RaftIndex, RequestId, Sequence, Term};
use crate::metadata::{AdminError, MetadataChange, MetadataCommand};
use crate::producer::{AbortedTxn, ActiveProducer};
use crate::txn::{TxnError, TxnMeta, TxnOp, TxnResponse};

/// One input to a node.
#[derive(Clone, Debug)]
pub enum Input {
    /// The driver's periodic tick; every group's Raft clock advances by one tick.
    Tick,
    /// Raft messages from a peer, possibly for many groups.
    Peer {
        /// The sending node.
        from: NodeId,
        /// The messages, in the order they were sent.
        messages: Vec<GroupMessage>,
    },
    /// A client request.
    Request {
        /// The driver's id for routing the reply.
        id: RequestId,
        /// The request.
        request: Request,
    },
    /// The disk finished the write with this sequence number (durably, if it asked for sync).
    /// Completions arrive in the order the writes were issued. A failed write is not an input:
    /// the driver stops the node, since the core cannot know what reached the disk.
    WriteDone {
        /// The completed write.
        seq: IoSeq,
    },
    /// The disk read asked by [`Output::ReadEntries`]: the group's entries from `low` on, as
    /// many as were there (fewer, or none, if compaction removed them meanwhile).
    EntriesRead {
        /// The group.
        group: GroupId,
        /// The first index asked.
        low: RaftIndex,
        /// The entries, contiguous from `low`.
        entries: Vec<Entry>,
    },
}

/// A Raft message of one group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMessage {
    /// The group.
    pub group: GroupId,
    /// The raft-rs message.
    pub message: Message,
}

/// One output of a node.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send these messages to one peer, in order. All messages bound for one peer from one
    /// `handle` call leave together (heartbeats of all groups included).
    Send {
        /// The peer.
        to: NodeId,
        /// The messages.
        messages: Vec<GroupMessage>,
    },
    /// Write these records to the node's log, after every earlier write, and answer with
    /// [`Input::WriteDone`].
    Write(Write),
    /// Answer a client request.
    Reply {
        /// The id the request came with.
        id: RequestId,
        /// The answer.
        response: Response,
    },
    /// Read entries of a group's log from disk, after every earlier write, and answer with
    /// [`Input::EntriesRead`] (raft-rs needs them for a lagging follower and memory no longer
    /// holds them).
    ReadEntries(DiskRead),
    /// Something happened that checkers and the trace hash care about.
    Trace(TraceEvent),
}

/// A read of a group's log on disk: the entries from `from` to `to` (inclusive), stopping
/// once `read_bytes` of entry data are read (at least one entry is). Used for entries memory
/// no longer holds: a lagging follower's, and a fetch or timestamp lookup of old records (then
/// [`DiskRead::batches`] keeps the record batches, skips those whose records all lie below
/// `skip_below`, and serves at most `max_bytes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskRead {
    /// The group.
    pub group: GroupId,
    /// First Raft index to read.
    pub from: RaftIndex,
    /// Last Raft index to read.
    pub to: RaftIndex,
    /// The disk reader stops once it has read this many bytes of entries.
    pub read_bytes: u64,
    /// Batches served stop once this many bytes are collected (at least one is served).
    pub max_bytes: u32,
    /// Skip batches whose next offset is at or below this.
    pub skip_below: Offset,
    /// Serve no batch that starts at or after this offset (a read_committed fetch's last
    /// stable offset; `Offset::MAX` otherwise).
    pub end_offset: Offset,
}

/// A write to the node's log device.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// Order of the write; completions must come back in this order.
    pub seq: IoSeq,
    /// The records, applied in order on recovery.
    pub records: Vec<WalRecord>,
    /// Whether the write must be durable (fsync) before it is reported done.
    pub sync: bool,
}

/// One durable change to a group's Raft state. Recovery replays them in order.
#[derive(Clone, Debug, PartialEq)]
pub enum WalRecord {
    /// Entries to append; an entry at an index already held replaces it and all after it.
    Entries {
        /// The group.
        group: GroupId,
        /// Contiguous entries.
        entries: Vec<Entry>,
    },
    /// The group's new hard state (term, vote, Raft commit index).
    HardState {
        /// The group.
        group: GroupId,
        /// The hard state.
        hard_state: HardState,
        /// Whether it must be durable when the write is done (raft-rs's `must_sync`: a new
        /// term or vote); a Raft commit index alone need not be, so its group's file need not
        /// be fsynced for it.
        must_sync: bool,
    },
    /// A snapshot. `install` (received from a leader) replaces the whole log; otherwise it is
    /// local compaction and only the entries up to its index are dropped.
    Snapshot {
        /// The group.
        group: GroupId,
        /// Metadata and partition data at the snapshot index.
        snapshot: Snapshot,
        /// Whether the snapshot replaces the log.
        install: bool,
    },
    /// A partition's applied state at an index (need not be durable): a restart starts
    /// applying after it instead of at the snapshot, and holds only the entries after it.
    Checkpoint {
        /// The group.
        group: GroupId,
        /// The checkpoint.
        checkpoint: Checkpoint,
    },
    /// The group is gone (its topic was deleted): forget everything written for it.
    RemoveGroup {
        /// The group.
        group: GroupId,
    },
}

impl WalRecord {
    /// The group the record belongs to.
    pub fn group(&self) -> GroupId {
        match self {
            Self::Entries { group, .. }
            | Self::HardState { group, .. }
            | Self::Snapshot { group, .. }
            | Self::Checkpoint { group, .. }
            | Self::RemoveGroup { group } => *group,
        }
    }
}

/// A partition's applied state at a Raft index, which must be in the log and applied (so
/// committed): unlike a snapshot it truncates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last applied index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The partition's state, as the core encodes it.
    pub data: Bytes,
}

/// Producer acknowledgement mode (Kafka `acks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: never answered.
    None,
    /// acks=1: answered once the leader's own write is durable.
    Leader,
    /// acks=all: answered once the batch is committed by a quorum and applied.
    All,
}

/// A client request.
#[derive(Clone, Debug)]
pub enum Request {
    /// Append one record batch to a partition.
    Produce(ProduceRequest),
    /// Read batches from a partition, up to the high watermark.
    Fetch(FetchRequest),
    /// Find the first batch that may hold a record at or after a timestamp.
    FindTimestamp(FindTimestampRequest),
    /// The end offset of a leader epoch (Kafka's OffsetForLeaderEpoch), from the leader.
    EpochEnd(EpochEndRequest),
    /// Move a partition's log start offset forward (Kafka's DeleteRecords).
    DeleteRecords(DeleteRecordsRequest),
    /// Change the cluster metadata (create or delete topics, add partitions).
    Admin(AdminRequest),
    /// A consumer-group request, for the coordinator partition of its group.
    Group(GroupRequest),
    /// Every consumer group whose coordinator partition this node leads.
    ListGroups,
    /// A transaction request, for the `__transaction_state` partition of its transactional id.
    Txn(TxnRequest),
    /// Every transactional id whose coordinator partition this node leads and serves.
    ListTransactions {
        /// ListTransactions v1's `duration_filter` (KIP-994): when not negative, only the
        /// transactions running (open or ending) that began more than this many milliseconds
        /// ago by this node's wall clock.
        duration_filter_ms: i64,
    },
    /// Ask a partition's leader to hand its leadership to one of the partition's voters
    /// (Raft's leadership transfer; Kafka's preferred leader election). Any replica may take
    /// it: a follower passes it to the leader it knows.
    TransferLeader {
        /// The partition's group.
        group: GroupId,
        /// The voter to lead.
        to: NodeId,
    },
    /// The producers a record partition's serving leader remembers (DescribeProducers).
    DescribeProducers {
        /// The partition's group.
        group: GroupId,
    },
}

/// A consumer-group request routed to one coordinator partition (a group of the
/// `__consumer_offsets` topic).
#[derive(Clone, Debug)]
pub struct GroupRequest {
    /// The coordinator partition's Raft group.
    pub group: GroupId,
    /// The request.
    pub op: GroupOp,
}

/// A transaction request routed to one transaction coordinator partition (a group of the
/// `__transaction_state` topic).
#[derive(Clone, Debug)]
pub struct TxnRequest {
    /// The coordinator partition's Raft group.
    pub group: GroupId,
    /// The request.
    pub op: TxnOp,
}

/// What a node that does not lead the metadata group does with an admin request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Nothing: it answers `NotController`, naming the leader it knows.
    No,
    /// Hands the proposal to the leader through Raft and answers `Ok(None)` at once: the
    /// outcome is unknown (it shows in the metadata once applied). For topic auto-creation,
    /// which any node may trigger and nobody waits on.
    Blind,
    /// Hands the proposal to the leader through Raft, tagged with this node and a token,
    /// and answers with the outcome once this node applies the entry (as Kafka's brokers
    /// forward admin requests to the controller): clients may send admin requests to any
    /// node. `validate_only` is checked against this node's applied metadata.
    Await,
}

/// A change to the cluster metadata, proposed to the metadata group by its leader.
#[derive(Clone, Debug)]
pub struct AdminRequest {
    /// The change.
    pub command: MetadataCommand,
    /// Only check that the change would be applied; propose nothing.
    pub validate_only: bool,
    /// What a node that does not lead the metadata group does with it.
    pub forward: Forward,
    /// How long the client waits; after it the answer is `TimedOut`.
    pub timeout_ms: u32,
}

/// Append one RecordBatch v2.
#[derive(Clone, Debug)]
pub struct ProduceRequest {
    /// The partition's group.
    pub group: GroupId,
    /// Acknowledgement mode.
    pub acks: Acks,
    /// Exactly one RecordBatch v2, as the client sent it.
    pub batch: Bytes,
    /// How long the client waits for an answer; after it the answer is `TimedOut`.
    pub timeout_ms: u32,
    /// The producer's transactional id (Produce's `transactional_id`): a transactional batch
    /// that begins its transaction here is verified with its coordinator (KIP-890).
    pub transactional_id: Option<String>,
}

/// Read from a partition.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    /// The partition's group.
    pub group: GroupId,
    /// First offset wanted.
    pub offset: Offset,
    /// Stop adding batches once this many bytes are collected (at least one batch is given).
    pub max_bytes: u32,
    /// The leader epoch the client believes current (Kafka's `current_leader_epoch`), checked
    /// against the partition's (`epoch_history::check_leader_epoch`); -1 checks nothing.
    pub current_leader_epoch: i32,
    /// Kafka's `isolation_level` READ_COMMITTED: read up to the last stable offset only, with
    /// the aborted transactions of what is read.
    pub read_committed: bool,
}

/// Ask a partition's leader where a leader epoch ends (Kafka's OffsetForLeaderEpoch).
#[derive(Clone, Debug)]
pub struct EpochEndRequest {
    /// The partition's group.
    pub group: GroupId,
    /// As in [`FetchRequest::current_leader_epoch`].
    pub current_leader_epoch: i32,
    /// The epoch whose end is asked (a consumer's: the epoch of the last record it read).
    pub leader_epoch: i32,
}

/// An answer to a [`Request`].
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// Answer to a produce.
    Produce(Result<ProduceAck, ProduceError>),
    /// Answer to a fetch.
    Fetch(Result<FetchData, FetchError>),
    /// Answer to a timestamp lookup: the first committed batch whose max timestamp is at
    /// least the one asked, if any (the caller finds the record inside it).
    FindTimestamp(Result<FoundBatch, FetchError>),
    /// Answer to an epoch's end: `EpochHistory::end_of` on the serving leader.
    EpochEnd(Result<EpochEnd, FetchError>),
    /// Answer to DeleteRecords: the partition's log start offset (Kafka's low watermark) once
    /// the change is applied.
    DeleteRecords(Result<Offset, DeleteRecordsError>),
    /// Answer to an admin request: the change applied (`None` when only validated).
    Admin(Result<Option<MetadataChange>, AdminError>),
    /// Answer to a consumer-group request.
    Group(GroupResponse),
    /// Answer to ListGroups.
    ListGroups(Vec<ListedGroup>),
    /// Answer to a transaction request.
    Txn(TxnResponse),
    /// Answer to ListTransactions: each transactional id with what is stored of it.
    ListTransactions(Vec<(String, TxnMeta)>),
    /// Answer to TransferLeader: whether it was handed to Raft here (this node holds a
    /// replica and `to` is a voter); whether leadership moves shows in who leads.
    TransferLeader(bool),
    /// Answer to DescribeProducers: the applied producer table's producers, by id.
    DescribeProducers(Result<Vec<ActiveProducer>, FetchError>),
}

/// Delete a partition's records before `offset`: its log start offset moves there through the
/// partition's Raft log, so every replica agrees and it never moves back.
#[derive(Clone, Debug)]
pub struct DeleteRecordsRequest {
    /// The partition's group.
    pub group: GroupId,
    /// The new log start offset; `None` for the high watermark (Kafka's offset -1).
    pub offset: Option<Offset>,
    /// How long to wait for the change to apply.
    pub timeout_ms: u32,
}

/// Why a DeleteRecords was not done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteRecordsError {
    /// This node hosts no such partition.
    UnknownTopicOrPartition,
    /// This node is not the leader, or not yet ready to serve (or lost leadership before the
    /// change applied: it is then definitely not done).
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// The offset is above the high watermark.
    OffsetOutOfRange,
    /// Too many requests wait on this partition.
    Backpressure,
    /// Not applied within the timeout: it may still be.
    TimedOut,
}

impl DeleteRecordsError {
    /// The Kafka error code that answers this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            Self::OffsetOutOfRange => 1,
            Self::UnknownTopicOrPartition => 3,
            Self::NotLeader { .. } => 6,
            Self::TimedOut => 7,
            // REQUEST_TIMED_OUT too: the client retries after a while.
            Self::Backpressure => 7,
        }
    }
}

/// Find the first committed batch whose largest timestamp is at or after `timestamp`.
#[derive(Clone, Debug)]
pub struct FindTimestampRequest {
    /// The partition's group.
    pub group: GroupId,
    /// Unix milliseconds.
    pub timestamp: i64,
    /// Look only at batches after this Raft index (0: all). A caller whose `OnDisk` read held
    /// no batch late enough (the span's latest one lay below the log start) asks again after
    /// that read's `to`.
    pub after: RaftIndex,
}

/// A batch was appended (or had been, for a retried duplicate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Append time stamped by the leader for `LogAppendTime` partitions, else -1.
    pub log_append_time_ms: i64,
    /// The partition's log start offset when the batch was taken (Kafka answers it).
    pub log_start_offset: Offset,
}

/// Why a produce was not acknowledged. [`ProduceError::is_indeterminate`] tells whether the
/// batch may still have been written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProduceError {
    /// This node hosts no such partition.
    UnknownTopicOrPartition,
    /// This node is not the partition's leader, or not yet ready to lead.
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// The batch itself is bad.
    Batch(BatchError),
    /// Idempotence: the batch is not the next in sequence.
    OutOfOrderSequence {
        /// The sequence expected.
        expected: Sequence,
        /// The sequence sent.
        received: Sequence,
    },
    /// Idempotence: the producer's epoch is stale (fenced).
    InvalidProducerEpoch,
    /// Too many produce requests are waiting on this partition; nothing was written.
    Backpressure,
    /// No answer within the request's timeout; the batch may or may not be written.
    TimedOut,
    /// Idempotence: the partition's producer table is full (`NodeConfig::producers_max`
    /// producers that wrote within `producer_expiration_ms`), and the batch's producer is not in
    /// it. Nothing was written; the producers the table holds go on as before.
    ///
    /// Answered POLICY_VIOLATION (44): a definite, non-retriable refusal by a broker limit.
    /// Kafka has no code of its own for it (it never refuses a producer id; KIP-936's quota on
    /// new producer ids was never adopted), and the alternatives mislead clients:
    /// UNKNOWN_PRODUCER_ID and OUT_OF_ORDER_SEQUENCE_NUMBER make them reset their sequences or
    /// epoch and send again, into the same refusal; a retriable code (REQUEST_TIMED_OUT,
    /// THROTTLING_QUOTA_EXCEEDED) makes a well-behaved producer retry until its delivery timeout,
    /// while room comes only as producers expire (a day by default), and then report a timeout,
    /// which reads as "may have been written". POLICY_VIOLATION is a permanent error to the
    /// Java producer and librdkafka: they fail the batch at once, the application sees why, and
    /// the idempotent producer re-establishes its state and goes on (librdkafka does so in
    /// `node/tests/producers.rs`); our client reports `NotWritten`.
    TooManyProducers,
    /// A transactional batch, for a partition its producer did not add to an open transaction
    /// (or without a transactional id): the markers that would end its transaction could never
    /// come, and its records would hold back `read_committed` readers for good. Kafka's answer
    /// to a batch that fails KIP-890's verification: INVALID_TXN_STATE (48). Nothing was
    /// written.
    InvalidTxnState,
    /// KIP-890's verification with the transaction coordinator failed: fenced, a producer id
    /// not the transactional id's, or the coordinator could not answer (retriable, answered
    /// NOT_ENOUGH_REPLICAS as Kafka does for producers). Nothing was written.
    TxnVerification(TxnError),
}

impl ProduceError {
    /// Whether the batch may have been written despite the error.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Self::TimedOut)
    }

    /// The Kafka error code that answers this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            Self::UnknownTopicOrPartition => 3,
            Self::NotLeader { .. } => 6,
            Self::Batch(BatchError::Corrupt(_)) => 2,
            Self::Batch(BatchError::TooLarge { .. }) => 10,
            Self::Batch(BatchError::DecompressedTooLarge { .. }) => 10,
            Self::Batch(BatchError::Invalid(_) | BatchError::MissingKeys { .. }) => 87,
            Self::OutOfOrderSequence { .. } => 45,
            Self::InvalidProducerEpoch => 47,
            Self::Backpressure | Self::TimedOut => 7,
            Self::TooManyProducers => 44,
            Self::InvalidTxnState => 48,
            Self::TxnVerification(TxnError::ProducerFenced) => 47,
            Self::TxnVerification(TxnError::InvalidProducerIdMapping) => 49,
            Self::TxnVerification(TxnError::InvalidTxnState) => 48,
            Self::TxnVerification(_) => 19,
        }
    }
}

/// Batches read from a partition.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchData {
    /// The partition's high watermark: every offset below it is committed.
    pub high_watermark: Offset,
    /// The partition's last stable offset: below it every transaction has ended.
    pub last_stable_offset: Offset,
    /// For a read_committed fetch, the aborted transactions whose records the read may meet
    /// (from the offset asked up to the last stable offset), in marker order.
    pub aborted: Vec<AbortedTxn>,
    /// The first offset still held.
    pub log_start_offset: Offset,
    /// Whole batches, as stored, in offset order. The first may start before the offset asked.
    pub batches: Vec<Bytes>,
    /// When the offset asked is no longer in memory, `batches` is empty and the batches are
    /// to be read from disk with this (the driver does it, and serves what it finds).
    pub read: Option<DiskRead>,
}

impl DiskRead {
    /// The record batches of `entries` (read for this) to serve: whole batches in offset
    /// order, without those whose records all lie below `skip_below`, up to `max_bytes` (at
    /// least one).
    pub fn batches(&self, entries: Vec<Entry>) -> Vec<Bytes> {
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        for entry in entries {
            if bytes >= self.max_bytes as usize {
                break;
            }
            if entry.get_entry_type() != raft::eraftpb::EntryType::EntryNormal
                || entry.data.is_empty()
            {
                continue;
            }
            let batch = crate::batch::Batch::trusted(entry.data);
            if batch.next_offset() <= self.skip_below {
                continue;
            }
            if batch.base_offset() >= self.end_offset {
                break;
            }
            let batch = batch.into_bytes();
            bytes += batch.len();
            batches.push(batch);
        }
        batches
    }

    /// The first record batch of `entries` (read for this) whose largest timestamp is at
    /// least `timestamp`, skipping those below `skip_below`.
    pub fn first_at(&self, entries: Vec<Entry>, timestamp: i64) -> Option<Bytes> {
        let mut all = self.clone();
        all.max_bytes = u32::MAX;
        all.batches(entries)
            .into_iter()
            .find(|b| crate::batch::Batch::trusted(b.clone()).max_timestamp() >= timestamp)
    }
}

/// Answer to a timestamp lookup.
#[derive(Clone, Debug, PartialEq)]
pub enum FoundBatch {
    /// No committed batch has a timestamp that late.
    None,
    /// The first committed batch whose largest timestamp is at least the one asked.
    Batch(Bytes),
    /// That batch is on disk, among the batches of this read: the first one read whose
    /// largest timestamp is at least the one asked.
    OnDisk(DiskRead),
}

/// Why a fetch failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// This node hosts no such partition.
    UnknownTopicOrPartition,
    /// This node is not the leader, or not yet ready to serve.
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// The offset is below the log start or above the high watermark.
    OffsetOutOfRange {
        /// The first offset held.
        log_start_offset: Offset,
        /// The high watermark.
        high_watermark: Offset,
    },
    /// The request's `current_leader_epoch` is not the partition's (checked before whether
    /// this node leads, as Kafka does).
    LeaderEpoch(LeaderEpochError),
}

impl FetchError {
    /// The Kafka error code that answers this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            Self::UnknownTopicOrPartition => 3,
            Self::NotLeader { .. } => 6,
            Self::OffsetOutOfRange { .. } => 1,
            Self::LeaderEpoch(error) => error.kafka_code(),
        }
    }
}

/// Events for checkers and the trace hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// This node became the leader of a group.
    BecameLeader {
        /// The group.
        group: GroupId,
        /// The term it leads.
        term: Term,
    },
    /// This node applied a committed entry.
    Applied {
        /// The group.
        group: GroupId,
        /// The entry's index.
        index: RaftIndex,
        /// The entry's term.
        term: Term,
        /// The offset after the entry's records (the high watermark after applying it).
        next_offset: Offset,
        /// The batch's stored CRC-32C, or 0 for entries without records.
        crc: u32,
    },
    /// This node applied a metadata log entry (whether its command was refused or not).
    MetadataApplied {
        /// The entry's index.
        index: RaftIndex,
        /// Whether the metadata changed.
        changed: bool,
    },
    /// This node installed a snapshot from the leader.
    InstalledSnapshot {
        /// The group.
        group: GroupId,
        /// The snapshot's index.
        index: RaftIndex,
        /// The offset after the snapshot's index: the replica's high watermark once installed
        /// (its log start offset may be higher, inside or past the next batch).
        next_offset: Offset,
    },
    /// This node replaced its applied metadata with a snapshot of the metadata log (its own
    /// after a restart, or the leader's when it was behind).
    MetadataRestored {
        /// The snapshot's index.
        index: RaftIndex,
    },
    /// As a partition's leader, this node refused a new producer id because the producer table
    /// is full (`ProduceError::TooManyProducers`); once per change, not per refusal.
    ProducerTableFull {
        /// The partition's group.
        group: GroupId,
        /// Producers in its table.
        producers: u64,
        /// The limit.
        limit: u64,
    },
    /// The producer table that was full is below the limit again (producers expired).
    ProducerTableHasRoom {
        /// The partition's group.
        group: GroupId,
        /// Producers in its table.
        producers: u64,
        /// The limit.
        limit: u64,
    },
    /// As a group coordinator, this node refused a new consumer group because its partition
    /// holds the most groups it may (`CoordinatorConfig::groups_max`); once per change, not per
    /// refusal.
    CoordinatorGroupsFull {
        /// The `__consumer_offsets` partition's group.
        group: GroupId,
        /// Groups it holds.
        groups: u64,
        /// The limit.
        limit: u64,
    },
    /// The coordinator partition that refused new groups has room for one again.
    CoordinatorGroupsHaveRoom {
        /// The `__consumer_offsets` partition's group.
        group: GroupId,
        /// Groups it holds.
        groups: u64,
        /// The limit.
        limit: u64,
    },
}
