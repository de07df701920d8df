//! What a node is configured with: its groups, the Raft and storage settings, the limits, and
//! the planted bugs the simulator may switch on.

use crate::batch::TimestampType;
use crate::coordinator::CoordinatorConfig;
use crate::ids::{GroupId, NodeId};
use crate::metadata::PartitionLimits;
use crate::txn::TxnConfig;

/// Test-only switches that break the system the way real bugs do, so that the checkers can
/// be shown to catch them. They do nothing unless `oxbow-core` is built with the
/// `planted-bugs` feature, which only the simulator and tests enable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Release raft's persisted messages (votes, append acks) before the disk completes.
    pub early_persisted_messages: bool,
    /// Accept every idempotent batch without checking its sequence.
    pub skip_sequence_check: bool,
    /// Serve fetches past the high watermark (uncommitted records).
    pub fetch_above_hwm: bool,
    /// The node runtime's disk writer reports a write done before its fsync (so replies and
    /// raft's persisted messages go out for bytes a crash can still lose).
    pub ack_before_fsync: bool,
    /// Recovery keeps a torn or corrupt tail instead of cutting it (later frames land after
    /// the garbage, and the next recovery loses them).
    pub keep_torn_tail: bool,
    /// The group coordinator answers every member's SyncGroup with the leader's own
    /// assignment (a misrouted assignment: members share partitions, others go unread).
    pub assignment_to_all: bool,
    /// Reading entries back from the segment files takes any frame at the next index, also
    /// one a new leader replaced (a read from a stale file position).
    pub serve_stale_frames: bool,
    /// Compaction deletes every segment before the newest durable header, also ones that still
    /// hold entries above the snapshot (records above the log start offset).
    pub delete_live_segments: bool,
    /// DeleteRecords moves the leader's log start offset at once, without its Raft log: the
    /// followers never learn it, and a new leader's log start is back below it.
    pub local_log_start: bool,
    /// The transaction coordinator counts the marker of partition 0 of every data topic as
    /// written without sending it: that partition's part of every transaction stays open.
    pub skip_marker: bool,
    /// read_committed fetches read up to the high watermark, as if the last stable offset
    /// were it: records of open transactions are served.
    pub lso_is_hw: bool,
    /// A fenced producer epoch is accepted: by the transaction coordinator (for
    /// AddPartitionsToTxn, EndTxn and the partitions' verification) and by the partitions.
    pub accept_fenced_epoch: bool,
    /// The log cleaner keeps each key's first record of the range it maps instead of its
    /// last (the offset map keeps a key's first offset, and a record stays if it is not
    /// after it): a compacted topic loses its keys' latest values and serves old ones.
    pub clean_keep_first: bool,
    /// The log cleaner drops a key's latest tombstone at once, without waiting for its
    /// batch's delete horizon (`delete.retention.ms`): a consumer that reads the topic
    /// within that time never learns the key was deleted.
    pub clean_drop_tombstones: bool,
}

/// The field of [`PlantedBugs`] that switches one bug on.
type BugSwitch = fn(&mut PlantedBugs) -> &mut bool;

/// Each planted bug's name (as the simulator's `--plant-bug` and the node's
/// `OXBOW_PLANTED_BUGS` spell it) and its switch.
const PLANTED: [(&str, BugSwitch); 14] = [
    ("early-persisted-messages", |b| {
        &mut b.early_persisted_messages
    }),
    ("skip-sequence-check", |b| &mut b.skip_sequence_check),
    ("fetch-above-hwm", |b| &mut b.fetch_above_hwm),
    ("ack-before-fsync", |b| &mut b.ack_before_fsync),
    ("keep-torn-tail", |b| &mut b.keep_torn_tail),
    ("assignment-to-all", |b| &mut b.assignment_to_all),
    ("serve-stale-frames", |b| &mut b.serve_stale_frames),
    ("delete-live-segments", |b| &mut b.delete_live_segments),
    ("local-log-start", |b| &mut b.local_log_start),
    ("skip-marker", |b| &mut b.skip_marker),
    ("lso-is-hw", |b| &mut b.lso_is_hw),
    ("accept-fenced-epoch", |b| &mut b.accept_fenced_epoch),
    ("clean-keep-first", |b| &mut b.clean_keep_first),
    ("clean-drop-tombstones", |b| &mut b.clean_drop_tombstones),
];

impl PlantedBugs {
    /// Every planted bug's name.
    pub fn all_names() -> impl Iterator<Item = &'static str> {
        PLANTED.iter().map(|(name, _)| *name)
    }

    /// The bugs of a comma-separated list of names (an empty list plants none).
    pub fn parse(names: &str) -> Result<Self, String> {
        let mut bugs = Self::default();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let Some((_, switch)) = PLANTED.iter().find(|(known, _)| *known == name) else {
                let known = Self::all_names().collect::<Vec<_>>().join(", ");
                return Err(format!("unknown planted bug {name:?}; known: {known}"));
            };
            *switch(&mut bugs) = true;
        }
        Ok(bugs)
    }

    /// The names of the bugs set (whether or not the feature makes them take effect).
    pub fn names(&self) -> Vec<&'static str> {
        let mut bugs = *self;
        PLANTED
            .iter()
            .filter(|(_, switch)| *switch(&mut bugs))
            .map(|(name, _)| *name)
            .collect()
    }

    /// Whether `early_persisted_messages` is in effect.
    pub fn early_persisted_messages(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.early_persisted_messages
    }
    /// Whether `skip_sequence_check` is in effect.
    pub fn skip_sequence_check(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.skip_sequence_check
    }
    /// Whether `fetch_above_hwm` is in effect.
    pub fn fetch_above_hwm(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.fetch_above_hwm
    }
    /// Whether `ack_before_fsync` is in effect.
    pub fn ack_before_fsync(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.ack_before_fsync
    }
    /// Whether `keep_torn_tail` is in effect.
    pub fn keep_torn_tail(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.keep_torn_tail
    }
    /// Whether `assignment_to_all` is in effect.
    pub fn assignment_to_all(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.assignment_to_all
    }
    /// Whether `serve_stale_frames` is in effect.
    pub fn serve_stale_frames(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.serve_stale_frames
    }
    /// Whether `delete_live_segments` is in effect.
    pub fn delete_live_segments(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.delete_live_segments
    }
    /// Whether `local_log_start` is in effect.
    pub fn local_log_start(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.local_log_start
    }
    /// Whether `skip_marker` is in effect.
    pub fn skip_marker(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.skip_marker
    }
    /// Whether `lso_is_hw` is in effect.
    pub fn lso_is_hw(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.lso_is_hw
    }
    /// Whether `accept_fenced_epoch` is in effect.
    pub fn accept_fenced_epoch(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.accept_fenced_epoch
    }
    /// Whether `clean_keep_first` is in effect.
    pub fn clean_keep_first(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.clean_keep_first
    }
    /// Whether `clean_drop_tombstones` is in effect.
    pub fn clean_drop_tombstones(&self) -> bool {
        cfg!(feature = "planted-bugs") && self.clean_drop_tombstones
    }
}

/// A Raft group this node hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// The group.
    pub id: GroupId,
    /// Its voters; this node must be one.
    pub voters: Vec<NodeId>,
    /// How record timestamps are stamped.
    pub timestamps: TimestampType,
}

/// Static configuration of a node's core. Every limit is here, so every queue has a bound.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node.
    pub node_id: NodeId,
    /// Groups it hosts regardless of metadata (the simulator's and tests' static partitions).
    pub groups: Vec<GroupConfig>,
    /// Voters of the metadata group, this node among them; empty for no metadata group.
    /// Partition groups of topics created through it start and stop as it is applied.
    pub metadata_voters: Vec<NodeId>,
    /// Ticks between two leadership gossips to every peer.
    pub leader_gossip_ticks: u64,
    /// Raft election timeout in ticks; the actual timeout per group and incarnation is drawn
    /// from `[election_tick, 2 * election_tick)` with the node's seeded RNG.
    pub election_tick: usize,
    /// Raft heartbeat interval in ticks.
    pub heartbeat_tick: usize,
    /// Largest append message raft sends (bytes).
    pub max_size_per_msg: u64,
    /// Raft messages held for groups not started here yet (a peer applied the metadata that
    /// creates them first); past it they are dropped.
    pub early_messages_max: usize,
    /// Most append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Most bytes proposed but not yet committed per group; past it proposals are refused.
    pub max_uncommitted_size: u64,
    /// Largest record batch accepted.
    pub batch_bytes_max: usize,
    /// Most bytes a compressed batch's records may inflate to (checked at produce).
    pub batch_decompressed_bytes_max: usize,
    /// Largest entry a group coordinator proposes (one offset commit, or a group's
    /// membership with every member's metadata and assignment); larger ones are refused.
    pub group_entry_bytes_max: usize,
    /// The group coordinators' settings (session timeouts, the initial rebalance delay,
    /// offsets retention).
    pub coordinator: CoordinatorConfig,
    /// The transaction coordinators' settings (the longest transaction timeout, the most
    /// transactional ids per `__transaction_state` partition).
    pub txn: TxnConfig,
    /// Most produce requests waiting for an answer per group.
    pub pending_requests_max: usize,
    /// Most idempotent producers remembered per partition: past it the leader refuses producer
    /// ids its table does not know (`ProduceError::TooManyProducers`) rather than forget a live
    /// one. Checked by the leader only: the table itself is replicated state.
    pub producers_max: usize,
    /// A producer that has not written to a partition for this long is forgotten (Kafka's
    /// `producer.id.expiration.ms`), measured on the time the leader stamps on each entry, so
    /// every replica forgets it at the same entry. At least 1.
    pub producer_expiration_ms: u64,
    /// Applied entries kept per partition before older ones are compacted into a snapshot,
    /// moving the log start offset (a simulator setting, to exercise snapshots; `None` in
    /// production, where retention by time and size does it, as in Kafka).
    pub retain_entries_max: Option<u64>,
    /// Bytes of partition log entries held in memory, across the node's partitions: entries
    /// not yet applied or persisted are always held; older ones only within this budget
    /// (checked every tick), and otherwise read from disk.
    pub log_cache_bytes: u64,
    /// Bytes of batches per point of a partition's offset and time index once the batches
    /// are no longer in memory (Kafka's `index.interval.bytes`, coarser).
    pub offset_index_interval_bytes: u64,
    /// Most points of a partition's sparse index (of the batches no longer in memory), which
    /// every checkpoint holds at 24 bytes a point: past it every other point goes, its span
    /// merged into the one before, and the interval doubles, so that neither memory nor a
    /// checkpoint (one storage frame of at most 64 MiB) grows with the data kept. At least 2.
    pub index_points_max: usize,
    /// Bytes read from disk at once for a follower that is behind.
    pub catch_up_read_bytes: u32,
    /// A partition writes a checkpoint of its applied state after this many bytes of
    /// batches applied (a restart holds and applies only the entries after it)...
    pub checkpoint_bytes: u64,
    /// ...or this many ticks after anything was applied.
    pub checkpoint_ticks: u64,
    /// Ticks to wait for a follower to install a snapshot before sending it again.
    pub snapshot_retry_ticks: u32,
    /// Entries a group coordinator's log holds before it is compacted into a snapshot of the
    /// coordinator's state (the latest offset per partition and group, so compacted by key).
    pub command_entries_max: u64,
    /// Entries the metadata log holds before it is compacted into a snapshot of the applied
    /// metadata, so that neither its size nor a restart's replay grows with history.
    pub metadata_entries_max: u64,
    /// Most partitions in the cluster and partition replicas per node that a topic creation or
    /// growth this node takes may reach (`max_partitions`, `max_partitions_per_node`). Written
    /// into the metadata entry, which every replica checks alike when it applies it.
    pub partition_limits: PartitionLimits,
    /// Whether idle partitions quiesce: stop ticking until something happens
    /// (`partition/quiesce.rs`), so that a node's idle cost follows its active partitions.
    /// Needs the leader gossip (a metadata group): a group quiesces only if each of its
    /// replicas is a metadata voter.
    pub quiesce: bool,
    /// Planted bugs (inert without the `planted-bugs` feature).
    pub planted: PlantedBugs,
}

impl NodeConfig {
    /// Defaults sized for a production node with 100 ms ticks.
    pub fn new(node_id: NodeId, groups: Vec<GroupConfig>) -> Self {
        Self {
            node_id,
            groups,
            metadata_voters: Vec::new(),
            leader_gossip_ticks: 5,
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 << 20,
            batch_bytes_max: 1 << 20,
            batch_decompressed_bytes_max: 64 << 20,
            early_messages_max: 4_096,
            group_entry_bytes_max: 4 << 20,
            coordinator: CoordinatorConfig::default(),
            txn: TxnConfig::default(),
            pending_requests_max: 10_000,
            producers_max: 10_000,
            producer_expiration_ms: crate::producer::EXPIRATION_MS_DEFAULT,
            retain_entries_max: None,
            log_cache_bytes: 128 << 20,
            offset_index_interval_bytes: 1 << 20,
            index_points_max: 1_000_000,
            catch_up_read_bytes: 8 << 20,
            checkpoint_bytes: 8 << 20,
            checkpoint_ticks: 100,
            snapshot_retry_ticks: 50,
            command_entries_max: 10_000,
            metadata_entries_max: 1_000,
            partition_limits: PartitionLimits::DEFAULT,
            quiesce: true,
            planted: PlantedBugs::default(),
        }
    }
}
