//! The node-level state machine: every Raft group a node hosts, behind one entry point,
//! [`Node::handle`], that takes an [`Input`] and pushes [`Output`]s.
//!
//! Order of work inside one `handle` call: the input is applied to the groups it touches; each
//! touched group's readies are processed; everything those readies must persist becomes one
//! [`Write`] (one device, completions in order); messages for one peer from all groups become
//! one [`Output::Send`]. Messages raft-rs says must follow persistence wait for the write's
//! [`Input::WriteDone`].

mod admin;
mod early;
mod follow_metadata;

use admin::{AdminPending, Forwarded};

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_core::SeedableRng;

use bytes::Bytes;
use raft::eraftpb::MessageType;

use crate::batch::TimestampType;
use crate::codec::{Reader, Writer};
use crate::coordinator::{Coordinator, CoordinatorConfig, GroupError, GroupResponse};
use crate::ids::{GroupId, IoSeq, NodeId, Offset, RaftId, RaftIndex, RequestId, Term};
use crate::io::{
    Acks, DeleteRecordsError, FetchError, GroupMessage, GroupRequest, Input, Output, ProduceError,
    Request, Response, TraceEvent, WalRecord, Write,
};
use crate::log_store::LogStore;
use crate::metadata::{MetadataState, METADATA_GROUP};
use crate::partition::{Applied, LogKind, Replica};
use crate::time::Now;

/// Not a Raft group: peer messages addressed to it carry the sender's list of the groups it
/// leads (gossip), so that every node can name any partition's leader in Metadata answers.
pub const LEADERS_GROUP: GroupId = GroupId(u64::MAX);

/// Not a Raft group either: a peer message addressed to it asks this node to take the
/// leadership of the group its context names (ElectLeaders through a node that neither leads
/// it nor is the one to lead). Raft's leadership transfer names the node to lead as the
/// message's sender, and peer links carry only their own node's messages, so the node to lead
/// asks the leader itself.
pub const TRANSFER_GROUP: GroupId = GroupId(u64::MAX - 1);

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
}

impl PlantedBugs {
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
            pending_requests_max: 10_000,
            producers_max: 10_000,
            producer_expiration_ms: crate::producer::EXPIRATION_MS_DEFAULT,
            retain_entries_max: None,
            log_cache_bytes: 128 << 20,
            offset_index_interval_bytes: 1 << 20,
            catch_up_read_bytes: 8 << 20,
            checkpoint_bytes: 8 << 20,
            checkpoint_ticks: 100,
            snapshot_retry_ticks: 50,
            command_entries_max: 10_000,
            metadata_entries_max: 1_000,
            planted: PlantedBugs::default(),
        }
    }
}

/// What a node knows of one of its groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its current Raft term (the partition leader epoch).
    pub term: Term,
    /// Whether this node is the leader and ready to serve.
    pub serving: bool,
    /// Its high watermark.
    pub high_watermark: Offset,
    /// Its log start offset.
    pub log_start_offset: Offset,
}

/// What a node's disk held for one group when it started: the result of replaying its log.
#[derive(Clone, Debug, Default)]
pub struct GroupDurableState {
    /// Last hard state written.
    pub hard_state: raft::eraftpb::HardState,
    /// Latest snapshot (index 0 when none).
    pub snapshot: raft::eraftpb::Snapshot,
    /// The latest checkpoint after the snapshot, if any: the entries up to it stay on disk.
    pub checkpoint: Option<crate::io::Checkpoint>,
    /// With a checkpoint, the terms of the entries from the snapshot to it, as
    /// `(first index, term)` runs; empty otherwise.
    pub terms: Vec<(u64, u64)>,
    /// Entries after the checkpoint (or after the snapshot, without one), contiguous.
    pub entries: Vec<raft::eraftpb::Entry>,
}

/// Everything a node's disk held when it started.
#[derive(Clone, Debug, Default)]
pub struct DurableState {
    /// Per group.
    pub groups: BTreeMap<GroupId, GroupDurableState>,
}

/// Collects a handle call's outputs: sends are coalesced per peer, records into one write.
pub(crate) struct Sink {
    sends: BTreeMap<NodeId, Vec<GroupMessage>>,
    records: Vec<WalRecord>,
    sync: bool,
    out: VecDeque<Output>,
    /// Some group's leadership came to this node: peers hear of it at once, not at the next
    /// gossip round.
    pub(crate) became_leader: bool,
}

impl Sink {
    pub(crate) fn send(&mut self, group: GroupId, message: raft::eraftpb::Message) {
        self.sends
            .entry(RaftId(message.to).voter())
            .or_default()
            .push(GroupMessage { group, message });
    }

    pub(crate) fn write(&mut self, record: WalRecord, sync: bool) {
        self.records.push(record);
        self.sync |= sync;
    }

    pub(crate) fn reply(&mut self, id: RequestId, response: Response) {
        self.out.push_back(Output::Reply { id, response });
    }

    pub(crate) fn reply_produce(
        &mut self,
        acks: Acks,
        id: RequestId,
        response: Result<crate::io::ProduceAck, ProduceError>,
    ) {
        if acks != Acks::None {
            self.reply(id, Response::Produce(response));
        }
    }

    pub(crate) fn read(&mut self, read: crate::io::DiskRead) {
        self.out.push_back(Output::ReadEntries(read));
    }

    pub(crate) fn trace(&mut self, event: TraceEvent) {
        self.out.push_back(Output::Trace(event));
    }
}

/// A write handed to the disk and not yet done, with the readies it completes.
#[derive(Debug)]
struct InflightWrite {
    seq: IoSeq,
    readies: Vec<(GroupId, u64, Option<RaftIndex>)>,
}

/// All Raft groups of one node. Deterministic: the same inputs (with the same `now`s) give the
/// same outputs. See the module documentation for the order of work.
pub struct Node {
    config: NodeConfig,
    seed: u64,
    incarnation: u64,
    logger: slog::Logger,
    groups: BTreeMap<GroupId, Replica>,
    /// Group coordinators, one per hosted partition of the internal offsets topic.
    coordinators: BTreeMap<GroupId, Coordinator>,
    /// The applied metadata, when this node runs the metadata group.
    metadata: Option<MetadataState>,
    /// Groups the disk held that applying the metadata has not claimed yet.
    parked: BTreeMap<GroupId, GroupDurableState>,
    admin_pending: VecDeque<AdminPending>,
    /// Admin requests handed to the metadata leader, by token, until their entry applies here.
    forwarded: BTreeMap<u64, Forwarded>,
    /// The next forwarding token's counter (the incarnation goes in its top bits).
    forward_next: u64,
    /// Per peer, the groups it said it leads, with their terms (its latest gossip) and
    /// the replicas in sync it reported.
    remote_leaders: BTreeMap<NodeId, BTreeMap<GroupId, (Term, Vec<NodeId>)>>,
    /// Raft messages for groups not started here yet (see `early`).
    early: early::EarlyMessages,
    ticks: u64,
    now: Option<Now>,
    write_next: IoSeq,
    inflight: VecDeque<InflightWrite>,
    /// Bound on writes in flight; past it the driver is not keeping up, which is a bug in it.
    inflight_max: usize,
}

impl Node {
    /// Starts a node from what its disk held. `seed` and `incarnation` (a restart counter) seed
    /// the Raft election timeouts, so every run with the same seed elects the same way.
    ///
    /// With a metadata group, the disk's other groups are parked until applying the metadata
    /// log says which partitions this node hosts (the metadata log replays from the start).
    pub fn new(
        config: NodeConfig,
        seed: u64,
        incarnation: u64,
        durable: DurableState,
        logger: &slog::Logger,
    ) -> Self {
        assert!(config.election_tick > config.heartbeat_tick && config.heartbeat_tick > 0);
        assert!(config.retain_entries_max != Some(0) && config.leader_gossip_ticks > 0);
        assert!(config.offset_index_interval_bytes > 0 && config.catch_up_read_bytes > 0);
        assert!(config.producers_max > 0 && config.producer_expiration_ms > 0);
        let mut durable = durable.groups;
        let mut node = Self {
            seed,
            incarnation,
            logger: logger.clone(),
            groups: BTreeMap::new(),
            coordinators: BTreeMap::new(),
            metadata: None,
            parked: BTreeMap::new(),
            admin_pending: VecDeque::new(),
            forwarded: BTreeMap::new(),
            forward_next: 0,
            remote_leaders: BTreeMap::new(),
            early: early::EarlyMessages::default(),
            ticks: 0,
            now: None,
            write_next: IoSeq(0),
            inflight: VecDeque::new(),
            inflight_max: 1 << 16,
            config,
        };
        if !node.config.metadata_voters.is_empty() {
            let voters = node.config.metadata_voters.clone();
            assert!(
                voters.contains(&node.config.node_id),
                "a node with a metadata group votes in it"
            );
            let state = durable.remove(&METADATA_GROUP);
            node.start_group(METADATA_GROUP, &voters, LogKind::Commands, state);
            node.metadata = Some(MetadataState::new(voters));
        }
        for group in node.config.groups.clone() {
            assert!(group.id != METADATA_GROUP && group.id != LEADERS_GROUP);
            let state = durable.remove(&group.id);
            node.start_group(
                group.id,
                &group.voters,
                LogKind::Records(group.timestamps),
                state,
            );
        }
        if node.metadata.is_some() {
            node.parked = durable;
        } else {
            assert!(
                durable.is_empty(),
                "disk holds groups this node is not configured for: {:?}",
                durable.keys()
            );
        }
        node
    }

    /// Starts hosting a group, from its durable state if the disk held one. A command log's
    /// entries are commands (metadata, group coordination), not record batches.
    fn start_group(
        &mut self,
        id: GroupId,
        voters: &[NodeId],
        kind: LogKind,
        durable: Option<GroupDurableState>,
    ) {
        assert!(
            voters.contains(&self.config.node_id),
            "a node hosts only groups it votes in"
        );
        assert!(!self.groups.contains_key(&id), "group {id} started twice");
        let voter_ids: Vec<u64> = voters.iter().map(|n| n.raft_id().0).collect();
        let mut checkpoint = None;
        let store = match durable {
            Some(state) => {
                let mut snapshot = state.snapshot;
                if snapshot.get_metadata().index == 0 {
                    // No snapshot yet: the configuration is still the group's first voters.
                    snapshot.mut_metadata().mut_conf_state().voters = voter_ids;
                }
                let conf_state = snapshot.get_metadata().get_conf_state().clone();
                // An installed snapshot and the hard state raft-rs gives with it go into one
                // write, snapshot first; a crash can keep the snapshot and tear off the hard
                // state. A snapshot is committed by definition, so its index and term bound
                // the hard state from below (a raised term carries no vote: a vote in it would
                // have been written, and synced, before the snapshot).
                let mut hard_state = state.hard_state;
                let meta = snapshot.get_metadata();
                if hard_state.commit < meta.index {
                    hard_state.commit = meta.index;
                }
                if hard_state.term < meta.term {
                    hard_state.term = meta.term;
                    hard_state.vote = 0;
                }
                // A checkpoint is of applied entries, so committed ones; the commit index alone
                // is not always synced, so it may be behind.
                let on_disk = state.checkpoint.as_ref().map(|c| {
                    hard_state.commit = hard_state.commit.max(c.index);
                    (c.index, state.terms.clone())
                });
                checkpoint = state.checkpoint;
                LogStore::recover(hard_state, conf_state, snapshot, on_disk, state.entries)
            }
            None => LogStore::new(voter_ids),
        };
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix(&[
            self.seed,
            id.0,
            self.config.node_id.0,
            self.incarnation,
        ]));
        let replica = Replica::new(
            &self.config,
            id,
            store,
            kind,
            checkpoint,
            rng,
            &self.logger.new(slog::o!("group" => id.0)),
        );
        self.groups.insert(id, replica);
        // What peers sent before this node started the group (see `early`).
        let replica = self.groups.get_mut(&id).expect("just started");
        for message in self.early.take(id) {
            replica.step(message);
        }
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Handles one input at time `now` and appends the resulting outputs to `out`.
    pub fn handle(&mut self, now: Now, input: Input, out: &mut Vec<Output>) {
        if let Some(before) = self.now {
            assert!(now.mono >= before.mono, "monotonic time went backwards");
        }
        self.now = Some(now);
        let mut sink = Sink {
            sends: BTreeMap::new(),
            records: Vec::new(),
            sync: false,
            out: VecDeque::new(),
            became_leader: false,
        };
        let mut touched = BTreeSet::new();
        match input {
            Input::Tick => {
                self.ticks += 1;
                for replica in self.groups.values_mut() {
                    replica.tick(&self.config, now, &mut sink);
                    touched.insert(replica.group());
                }
                for (group, coordinator) in self.coordinators.iter_mut() {
                    let replica = self.groups.get_mut(group).expect("coordinators are hosted");
                    coordinator.tick(replica, now, &mut sink);
                    // The coordinator's state is the snapshot: offsets and groups, each once.
                    if replica.entries_held() >= self.config.command_entries_max {
                        assert_eq!(coordinator.applied(), replica.applied_index());
                        let state = Bytes::from(coordinator.stored().encode());
                        replica.compact_commands(state, &mut sink);
                    }
                }
                self.compact_metadata(&mut sink);
                self.evict_cached_entries();
                self.expire_admin(now, &mut sink);
                if self.ticks.is_multiple_of(self.config.leader_gossip_ticks) {
                    self.gossip_leaders(&mut sink);
                }
                // Held long enough for any replica to apply the metadata that starts a group.
                self.early.expire(
                    self.ticks
                        .saturating_sub(2 * self.config.election_tick as u64),
                );
            }
            Input::Peer { from, messages } => {
                for GroupMessage { group, message } in messages {
                    assert_eq!(
                        RaftId(message.from),
                        from.raft_id(),
                        "peer transport delivers messages from their sender"
                    );
                    if !terms_fit_leader_epochs(&message) {
                        // Kafka's leader epoch is an i32 and every stored batch carries its
                        // term as one: a term past it could never be served. Only a broken
                        // or hostile peer sends one (links are authenticated); drop it.
                        slog::warn!(self.logger, "dropped a peer message with a term past i32::MAX";
                            "from" => from.0, "group" => group.0, "term" => message.term);
                        continue;
                    }
                    if group == LEADERS_GROUP {
                        self.note_leaders(from, &message.context);
                    } else if group == TRANSFER_GROUP {
                        let asked = <[u8; 8]>::try_from(&message.context[..])
                            .map(|b| GroupId(u64::from_le_bytes(b)));
                        if let Some((group, replica)) =
                            asked.ok().and_then(|g| Some((g, self.groups.get_mut(&g)?)))
                        {
                            replica.transfer_leader(self.config.node_id);
                            touched.insert(group);
                        }
                    } else if let Some(replica) = self.groups.get_mut(&group) {
                        replica.step(message);
                        touched.insert(group);
                    } else if matches!(
                        message.get_msg_type(),
                        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                    ) {
                        // Only a new group's first election is worth holding for: appends
                        // and heartbeats come again, and a stale one (a commit index from
                        // before a crash) must not reach a group that starts empty.
                        let max = self.config.early_messages_max;
                        self.early.hold(group, message, self.ticks, max);
                    }
                }
            }
            Input::Request { id, request } => {
                self.handle_request(now, id, request, &mut sink, &mut touched)
            }
            Input::WriteDone { seq } => self.handle_write_done(seq, &mut sink, &mut touched),
            Input::EntriesRead {
                group,
                low,
                entries,
            } => {
                if let Some(replica) = self.groups.get_mut(&group) {
                    replica.on_entries_read(low, entries);
                    touched.insert(group);
                }
            }
        }
        let mut processed = BTreeSet::new();
        self.flush(touched, &mut sink, &mut processed);
        if sink.became_leader {
            self.gossip_leaders(&mut sink);
        }
        for (to, messages) in std::mem::take(&mut sink.sends) {
            out.push(Output::Send { to, messages });
        }
        out.extend(sink.out.drain(..));
        // After every input, the cheap invariants of the groups it touched; the full ones
        // (every group, O(n) walks) are `invariants()`, which tests and the simulator call.
        for group in processed {
            if let Some(replica) = self.groups.get(&group) {
                replica.invariants();
            }
        }
        if let (Some(front), Some(back)) = (self.inflight.front(), self.inflight.back()) {
            assert!(
                front.seq <= back.seq && back.seq < self.write_next,
                "writes in flight are in issue order"
            );
        }
    }

    fn handle_request(
        &mut self,
        now: Now,
        id: RequestId,
        request: Request,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        match request {
            Request::Admin(admin) => self.handle_admin(now, id, admin, sink, touched),
            Request::Group(GroupRequest { group, op }) => {
                match (
                    self.coordinators.get_mut(&group),
                    self.groups.get_mut(&group),
                ) {
                    (Some(coordinator), Some(replica)) => {
                        coordinator.handle(replica, now, id, op, sink);
                        touched.insert(group);
                    }
                    _ => sink.reply(
                        id,
                        Response::Group(GroupResponse::failed(&op, GroupError::NotCoordinator)),
                    ),
                }
            }
            Request::ListGroups => {
                let groups = self.coordinators.values().flat_map(|c| c.list()).collect();
                sink.reply(id, Response::ListGroups(groups));
            }
            Request::TransferLeader { group, to } => {
                let me = self.config.node_id;
                let handed = match self.groups.get_mut(&group) {
                    Some(replica) if !replica.is_voter(to) => false,
                    // The leader transfers; the node to lead asks its leader.
                    Some(replica) if replica.leading().is_some() || to == me => {
                        touched.insert(group);
                        replica.transfer_leader(to)
                    }
                    Some(_) => {
                        let message = raft::eraftpb::Message {
                            from: me.raft_id().0,
                            to: to.raft_id().0,
                            context: Bytes::copy_from_slice(&group.0.to_le_bytes()),
                            ..Default::default()
                        };
                        sink.send(TRANSFER_GROUP, message);
                        true
                    }
                    None => false,
                };
                sink.reply(id, Response::TransferLeader(handed));
            }
            Request::Produce(produce) => match self
                .groups
                .get_mut(&produce.group)
                .filter(|r| !r.is_command_log())
            {
                Some(replica) => {
                    touched.insert(produce.group);
                    replica.produce(&self.config, now, id, produce, sink);
                }
                None => {
                    sink.reply_produce(produce.acks, id, Err(ProduceError::UnknownTopicOrPartition))
                }
            },
            Request::Fetch(fetch) => {
                let response = match self
                    .groups
                    .get(&fetch.group)
                    .filter(|r| !r.is_command_log())
                {
                    Some(replica) => replica.fetch(&self.config, &fetch),
                    None => Err(FetchError::UnknownTopicOrPartition),
                };
                sink.reply(id, Response::Fetch(response));
            }
            Request::DeleteRecords(delete) => match self
                .groups
                .get_mut(&delete.group)
                .filter(|r| !r.is_command_log())
            {
                Some(replica) => {
                    touched.insert(delete.group);
                    replica.delete_records(&self.config, now, id, &delete, sink);
                }
                None => sink.reply(
                    id,
                    Response::DeleteRecords(Err(DeleteRecordsError::UnknownTopicOrPartition)),
                ),
            },
            Request::FindTimestamp(find) => {
                let response = match self.groups.get(&find.group).filter(|r| !r.is_command_log()) {
                    Some(replica) => replica.find_timestamp(find.timestamp, find.after),
                    None => Err(FetchError::UnknownTopicOrPartition),
                };
                sink.reply(id, Response::FindTimestamp(response));
            }
        }
    }

    /// Keeps the partitions' entries in memory within `log_cache_bytes`: when over it, frees
    /// down to three quarters of it, from the partitions holding the most first.
    fn evict_cached_entries(&mut self) {
        let budget = self.config.log_cache_bytes;
        let mut held: Vec<(u64, GroupId)> = self
            .groups
            .values()
            .filter(|r| !r.is_command_log())
            .map(|r| (r.cached_bytes(), r.group()))
            .collect();
        let total: u64 = held.iter().map(|(bytes, _)| bytes).sum();
        if total <= budget {
            return;
        }
        let mut to_free = total - budget / 4 * 3;
        held.sort_unstable_by(|a, b| b.cmp(a));
        for (_, group) in held {
            if to_free == 0 {
                break;
            }
            let replica = self.groups.get_mut(&group).expect("listed");
            to_free = to_free.saturating_sub(replica.evict(&self.config, to_free));
        }
    }

    fn handle_write_done(&mut self, seq: IoSeq, sink: &mut Sink, touched: &mut BTreeSet<GroupId>) {
        let write = self
            .inflight
            .pop_front()
            .expect("a write completed that was never issued");
        assert_eq!(
            write.seq, seq,
            "disk completions must come back in issue order"
        );
        self.complete(write, sink, touched);
    }

    fn complete(&mut self, write: InflightWrite, sink: &mut Sink, touched: &mut BTreeSet<GroupId>) {
        for (group, number, last_entry) in write.readies {
            // A group removed since (its topic was deleted) has nothing left to complete.
            if let Some(replica) = self.groups.get_mut(&group) {
                replica.on_written(number, last_entry, sink);
                touched.insert(group);
            }
        }
    }

    /// Processes readies until none is left. A round that has nothing to write while no write
    /// is in flight completes at once: there is nothing to wait for.
    fn flush(
        &mut self,
        mut touched: BTreeSet<GroupId>,
        sink: &mut Sink,
        processed: &mut BTreeSet<GroupId>,
    ) {
        loop {
            let mut readies = Vec::new();
            processed.extend(touched.iter().copied());
            for group in std::mem::take(&mut touched) {
                // Touched groups may have been removed by metadata applied earlier this round.
                let Some(replica) = self.groups.get_mut(&group) else {
                    continue;
                };
                for ready in replica.process_ready(&self.config, sink) {
                    readies.push((group, ready.number, ready.last_entry));
                }
                if group == METADATA_GROUP {
                    self.apply_metadata(sink, &mut touched);
                } else if let Some(coordinator) = self.coordinators.get_mut(&group) {
                    let now = self.now.expect("handle sets now");
                    for applied in replica.take_commands_applied() {
                        match applied {
                            Applied::Entry(index, term, data) => {
                                coordinator.apply(index, term, &data, now, sink)
                            }
                            Applied::Snapshot(index, state) => {
                                coordinator.restore(index, &state, sink)
                            }
                        }
                    }
                    coordinator.observe(replica.serving_term(), now, sink);
                }
            }
            if readies.is_empty() && sink.records.is_empty() {
                if touched.is_empty() {
                    return;
                }
                // Groups started by applied metadata: process their first readies.
                continue;
            }
            let seq = self.write_next;
            self.write_next = IoSeq(seq.0 + 1);
            let write = InflightWrite { seq, readies };
            if sink.records.is_empty() && self.inflight.is_empty() {
                self.complete(write, sink, &mut touched);
                continue;
            }
            assert!(
                self.inflight.len() < self.inflight_max,
                "disk writes in flight past their bound"
            );
            let records = std::mem::take(&mut sink.records);
            let sync = std::mem::take(&mut sink.sync);
            sink.out
                .push_back(Output::Write(Write { seq, records, sync }));
            self.inflight.push_back(write);
            if touched.is_empty() {
                return;
            }
        }
    }

    /// Compacts the metadata log behind a snapshot of the applied metadata once it holds
    /// `metadata_entries_max` entries.
    fn compact_metadata(&mut self, sink: &mut Sink) {
        let (Some(state), Some(replica)) =
            (self.metadata.as_ref(), self.groups.get_mut(&METADATA_GROUP))
        else {
            return;
        };
        if replica.entries_held() >= self.config.metadata_entries_max {
            assert_eq!(
                state.applied(),
                replica.applied_index(),
                "the metadata state is applied as far as its log"
            );
            replica.compact_commands(Bytes::from(state.encode()), sink);
        }
    }

    /// Tells every peer which groups this node leads.
    fn gossip_leaders(&mut self, sink: &mut Sink) {
        let mut w = Writer::default();
        let leading: Vec<(GroupId, Term, Vec<NodeId>)> = self
            .groups
            .values()
            .filter_map(|r| Some((r.group(), r.leading()?, r.in_sync(&self.config)?)))
            .collect();
        w.u32(leading.len() as u32);
        for (group, term, in_sync) in leading {
            w.u64(group.0);
            w.u64(term.0);
            w.u8(u8::try_from(in_sync.len()).expect("a group has few replicas"));
            for node in in_sync {
                w.u64(node.0);
            }
        }
        let context = Bytes::from(w.bytes);
        for peer in &self.config.metadata_voters {
            if *peer != self.config.node_id {
                let message = raft::eraftpb::Message {
                    from: self.config.node_id.raft_id().0,
                    to: peer.raft_id().0,
                    context: context.clone(),
                    ..Default::default()
                };
                sink.send(LEADERS_GROUP, message);
            }
        }
    }

    fn note_leaders(&mut self, from: NodeId, context: &[u8]) {
        let mut r = Reader::new(context);
        let decoded = (|| {
            let count = r.u32()?;
            let mut led = BTreeMap::new();
            for _ in 0..count.min(1 << 20) {
                let (group, term) = (GroupId(r.u64()?), Term(r.u64()?));
                let in_sync = (0..r.u8()?)
                    .map(|_| r.u64().map(NodeId))
                    .collect::<Result<Vec<_>, _>>()?;
                led.insert(group, (term, in_sync));
            }
            Ok::<_, crate::codec::DecodeError>(led)
        })();
        // A peer's gossip that does not decode is dropped, as the network could have.
        if let Ok(led) = decoded {
            self.remote_leaders.insert(from, led);
        }
    }

    /// The leader of a group and its term, as far as this node knows: its own view for groups
    /// it hosts, else the peers' gossip (the claim with the highest term).
    pub fn leader(&self, group: GroupId) -> Option<(NodeId, Term)> {
        if let Some(status) = self.groups.get(&group).map(Replica::status) {
            if let Some(leader) = status.leader {
                return Some((leader, status.term));
            }
        }
        self.remote_leaders
            .iter()
            .filter_map(|(node, led)| led.get(&group).map(|(term, _)| (*node, *term)))
            .max_by_key(|(_, term)| *term)
    }

    /// The replicas in sync of a group (Kafka's ISR), as its leader knows them: this node's
    /// own count when it leads, else what the leader last gossiped; `None` when no leader is
    /// known.
    pub fn in_sync(&self, group: GroupId) -> Option<Vec<NodeId>> {
        if let Some(in_sync) = self
            .groups
            .get(&group)
            .and_then(|r| r.in_sync(&self.config))
        {
            return Some(in_sync);
        }
        let (leader, term) = self.leader(group)?;
        self.remote_leaders
            .get(&leader)
            .and_then(|led| led.get(&group))
            .filter(|(t, _)| *t == term)
            .map(|(_, in_sync)| in_sync.clone())
    }

    /// The group coordinator of a hosted partition of the offsets topic.
    pub fn coordinator(&self, group: GroupId) -> Option<&Coordinator> {
        self.coordinators.get(&group)
    }

    /// The applied cluster metadata, if this node runs the metadata group.
    pub fn metadata(&self) -> Option<&MetadataState> {
        self.metadata.as_ref()
    }

    /// Groups the disk held that the applied metadata has not claimed (yet).
    pub fn parked_groups(&self) -> impl Iterator<Item = &GroupId> {
        self.parked.keys()
    }

    /// What this node knows of a group, for metadata answers; `None` if it does not host it.
    pub fn group_status(&self, group: GroupId) -> Option<GroupStatus> {
        self.groups.get(&group).map(Replica::status)
    }

    /// Asserts every invariant of every group, including the linear-time ones. `handle` checks
    /// the constant-time invariants of the groups each input touched.
    pub fn invariants(&self) {
        self.early.invariants();
        assert!(
            self.admin_pending.len() + self.forwarded.len() <= self.config.pending_requests_max,
            "admin requests waiting are bounded"
        );
        assert!(
            self.forwarded
                .keys()
                .all(|token| token >> 40 == self.incarnation
                    && token & ((1 << 40) - 1) < self.forward_next),
            "forwarding tokens are this incarnation's, and issued"
        );
        for replica in self.groups.values() {
            replica.invariants();
            replica.invariants_full();
        }
        for coordinator in self.coordinators.values() {
            coordinator.invariants();
        }
        for pair in self.inflight.iter().collect::<Vec<_>>().windows(2) {
            assert!(pair[0].seq < pair[1].seq);
        }
    }
}

/// Mixes several words into one seed (SplitMix64 finalizer over a running state).
pub(crate) fn mix(words: &[u64]) -> u64 {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for word in words {
        state ^= *word;
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        state = z ^ (z >> 31);
    }
    state
}

/// Whether every term a message carries fits a Kafka leader epoch (an i32).
fn terms_fit_leader_epochs(message: &raft::eraftpb::Message) -> bool {
    let fits = |term: u64| term <= i32::MAX as u64;
    fits(message.term)
        && fits(message.log_term)
        && message.get_entries().iter().all(|e| fits(e.term))
        && fits(message.get_snapshot().get_metadata().term)
}
