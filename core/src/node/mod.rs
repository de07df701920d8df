//! The node-level state machine: every Raft group a node hosts, behind one entry point,
//! [`Node::handle`], that takes an [`Input`] and pushes [`Output`]s.
//!
//! Order of work inside one `handle` call: the input is applied to the groups it touches; each
//! touched group's readies are processed; everything those readies must persist becomes one
//! [`Write`] (one device, completions in order); messages for one peer from all groups become
//! one [`Output::Send`]. Messages raft-rs says must follow persistence wait for the write's
//! [`Input::WriteDone`].

mod admin;
mod config;
mod coordinators;
mod early;
mod follow_metadata;
mod leaders;
mod liveness;
mod peer_messages;
mod transactions;

pub use config::{GroupConfig, NodeConfig, PlantedBugs};
use peer_messages::{leaves_as, malformed};

use admin::{AdminPending, Forwarded};
use coordinators::Hosted;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_core::SeedableRng;

use bytes::Bytes;
use raft::eraftpb::MessageType;

use crate::coordinator::{Coordinator, GroupError, GroupOp, GroupResponse};
use crate::epoch_history::EpochHistory;
use crate::ids::{GroupId, IoSeq, NodeId, Offset, RaftId, RaftIndex, RequestId, Term};
use crate::io::{
    Acks, DeleteRecordsError, FetchError, GroupMessage, GroupRequest, Input, Output, ProduceError,
    Request, Response, TraceEvent, TxnRequest, WalRecord, Write,
};
use crate::log_store::LogStore;
use crate::metadata::{MetadataState, METADATA_GROUP};
use crate::partition::{LogKind, QuiescingHeartbeat, Replica};
use crate::time::Now;
use crate::txn::{TxnCoordinator, TxnError, TxnMeta, TxnResponse};

/// Not a Raft group: peer messages addressed to it carry the sender's list of the groups it
/// leads (gossip), so that every node can name any partition's leader in Metadata answers.
pub const LEADERS_GROUP: GroupId = GroupId(u64::MAX);

/// Not a Raft group either: a peer message addressed to it asks this node to take the
/// leadership of the group its context names (ElectLeaders through a node that neither leads
/// it nor is the one to lead). Raft's leadership transfer names the node to lead as the
/// message's sender, and peer links carry only their own node's messages, so the node to lead
/// asks the leader itself.
pub const TRANSFER_GROUP: GroupId = GroupId(u64::MAX - 1);

pub use transactions::TXN_GROUP;

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
    /// Its last stable offset (the high watermark but while a transaction is open).
    pub last_stable_offset: Offset,
    /// Its log start offset.
    pub log_start_offset: Offset,
    /// The leader epoch of the record at the log start offset (`None` for a command log, or
    /// when no epoch that early is known: data written before epochs were kept).
    pub log_start_epoch: Option<Term>,
    /// Points of its sparse offset and time index (those of batches no longer in memory; 0
    /// for a command log), at most `NodeConfig::index_points_max`.
    pub sparse_index_points: usize,
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
    /// The coordinators of the hosted partitions of the internal topics: a group coordinator
    /// per `__consumer_offsets` partition, a transaction coordinator per `__transaction_state`
    /// partition.
    coordinators: BTreeMap<GroupId, Hosted>,
    /// The applied metadata, when this node runs the metadata group.
    metadata: Option<MetadataState>,
    /// Groups the disk held that applying the metadata has not claimed yet.
    parked: BTreeMap<GroupId, GroupDurableState>,
    admin_pending: VecDeque<AdminPending>,
    /// Admin requests handed to the metadata leader, by token, until their entry applies here.
    forwarded: BTreeMap<u64, Forwarded>,
    /// The next forwarding token's counter (its low 40 bits).
    forward_next: u64,
    /// The forwarding tokens' top 24 bits, drawn from this start's seed and incarnation.
    forward_prefix: u64,
    /// Per peer, the groups it said it leads, with their terms (its latest gossip) and
    /// the replicas in sync it reported.
    remote_leaders: BTreeMap<NodeId, BTreeMap<GroupId, (Term, Vec<NodeId>)>>,
    /// Groups whose memory still holds entries the log cleaner rewrote (not yet applied or
    /// persisted when it told): each tick evicts them again until none is left.
    cleaned_pending: BTreeSet<GroupId>,
    /// Raft messages for groups not started here yet (see `early`).
    early: early::EarlyMessages,
    /// When each peer was last heard from, for quiet groups (see `liveness`).
    liveness: liveness::PeerLiveness,
    /// The groups that may be awake (not quiet): a tick visits only these, so that it costs
    /// what the active groups do. Every awake group is in it; a group found quiet at a tick
    /// leaves it, and returns when an input that touched it left it awake, or a peer's
    /// silence woke it.
    awake: BTreeSet<GroupId>,
    ticks: u64,
    now: Option<Now>,
    write_next: IoSeq,
    inflight: VecDeque<InflightWrite>,
    /// Bound on writes in flight; past it the driver is not keeping up, which is a bug in it.
    inflight_max: usize,
    /// Verifications and markers in flight (see `transactions`).
    txns: transactions::NodeTxns,
    /// Markers the partitions applied, for their coordinators to hear of.
    markers_applied: Vec<crate::partition::MarkerWrite>,
    /// A transaction coordinator applied entries in this round: its due markers go out.
    txn_applied: bool,
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
        assert!(
            config.index_points_max >= 2,
            "thinning merges two closed spans"
        );
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
            forward_prefix: (mix(&[seed, incarnation, 0x666f_7277]) << 40),
            remote_leaders: BTreeMap::new(),
            cleaned_pending: BTreeSet::new(),
            early: early::EarlyMessages::default(),
            liveness: liveness::PeerLiveness::default(),
            awake: BTreeSet::new(),
            ticks: 0,
            now: None,
            write_next: IoSeq(0),
            inflight: VecDeque::new(),
            inflight_max: 1 << 16,
            txns: transactions::NodeTxns::default(),
            markers_applied: Vec::new(),
            txn_applied: false,
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
        self.awake.insert(id);
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
                self.wake_for_silent_peers();
                let silent = self.liveness.silent();
                let groups = &mut self.groups;
                self.awake.retain(|group| {
                    let Some(replica) = groups.get_mut(group) else {
                        return false;
                    };
                    if replica.is_quiet() {
                        return false;
                    }
                    replica.tick(&self.config, silent, now, &mut sink);
                    touched.insert(*group);
                    true
                });
                for (group, coordinator) in self.coordinators.iter_mut() {
                    let replica = self.groups.get_mut(group).expect("coordinators are hosted");
                    coordinator.tick(replica, &self.config, now, &mut sink);
                }
                self.tick_transactions(now, &mut sink, &mut touched);
                self.compact_metadata(&mut sink);
                self.evict_cached_entries();
                self.evict_cleaned_pending();
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
                self.heard_from(from);
                for GroupMessage { group, message } in messages {
                    assert_eq!(
                        RaftId(message.from),
                        from.raft_id(),
                        "peer transport delivers messages from their sender"
                    );
                    if let Some(why) = malformed(&message) {
                        slog::warn!(self.logger, "dropped a malformed peer message"; "why" => why,
                            "from" => from.0, "group" => group.0, "term" => message.term);
                        continue;
                    }
                    if group == LEADERS_GROUP {
                        self.note_leaders(from, &message.context);
                        self.wake_unclaimed(from);
                    } else if group == TXN_GROUP {
                        self.on_txn_peer_message(
                            from,
                            &message.context,
                            now,
                            &mut sink,
                            &mut touched,
                        );
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
                        let quiescing = QuiescingHeartbeat::of(&message);
                        replica.step(message);
                        if let Some(heartbeat) = quiescing {
                            replica.on_quiescing_heartbeat(heartbeat, &self.config, &mut sink);
                        }
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
        // Markers applied: their coordinators hear of it (a local one proposes at once). A
        // transaction coordinator that applied an outcome sends its markers at once, not at
        // its next tick: the next transaction of the id waits for them.
        while !self.markers_applied.is_empty() || self.txn_applied {
            let mut touched = BTreeSet::new();
            for write in std::mem::take(&mut self.markers_applied) {
                self.marker_written(write, now, &mut sink, &mut touched);
            }
            if std::mem::take(&mut self.txn_applied) {
                self.send_due_markers(now, &mut sink, &mut touched);
            }
            self.flush(touched, &mut sink, &mut processed);
        }
        if sink.became_leader {
            self.gossip_leaders(&mut sink);
        }
        let me = self.config.node_id.raft_id();
        for (to, mut messages) in std::mem::take(&mut sink.sends) {
            messages.retain_mut(|m| {
                let leaves = leaves_as(me, &mut m.message);
                if !leaves {
                    slog::debug!(self.logger, "dropped a message raft-rs forwarded for another node";
                        "group" => m.group.0, "type" => ?m.message.get_msg_type(),
                        "from" => m.message.from);
                }
                leaves
            });
            if !messages.is_empty() {
                out.push(Output::Send { to, messages });
            }
        }
        out.extend(sink.out.drain(..));
        // After every input, the cheap invariants of the groups it touched; the full ones
        // (every group, O(n) walks) are `invariants()`, which tests and the simulator call.
        for group in processed {
            if let Some(replica) = self.groups.get(&group) {
                replica.invariants();
                if !replica.is_quiet() {
                    self.awake.insert(group);
                }
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
            Request::Group(GroupRequest {
                group,
                op: GroupOp::TxnOffsetCommit(commit),
            }) if commit.txn_start_ms.is_none() => {
                self.txn_offset_commit(now, id, group, commit, sink, touched)
            }
            Request::Group(GroupRequest { group, op }) => {
                match (
                    self.coordinators.get_mut(&group),
                    self.groups.get_mut(&group),
                ) {
                    (Some(Hosted::Group(coordinator)), Some(replica)) => {
                        coordinator.handle(replica, now, id, op, sink);
                        touched.insert(group);
                    }
                    _ => sink.reply(
                        id,
                        Response::Group(GroupResponse::failed(&op, GroupError::NotCoordinator)),
                    ),
                }
            }
            Request::Txn(TxnRequest { group, op }) => {
                match (
                    self.coordinators.get_mut(&group),
                    self.groups.get_mut(&group),
                ) {
                    (Some(Hosted::Txn(coordinator)), Some(replica)) => {
                        coordinator.handle(replica, now, id, op, sink);
                        touched.insert(group);
                    }
                    _ => sink.reply(
                        id,
                        Response::Txn(TxnResponse::failed(&op, TxnError::NotCoordinator)),
                    ),
                }
            }
            Request::ListGroups => {
                let groups = self
                    .coordinators
                    .values()
                    .filter_map(Hosted::group)
                    .flat_map(|c| c.list())
                    .collect();
                sink.reply(id, Response::ListGroups(groups));
            }
            Request::ListTransactions { duration_filter_ms } => {
                let running_long = |meta: &TxnMeta| {
                    duration_filter_ms < 0
                        || (!meta.state.is_settled()
                            && now.wall_ms.saturating_sub(meta.start_ms) > duration_filter_ms)
                };
                let mut listed = Vec::new();
                for (group, coordinator) in &self.coordinators {
                    let serving = self.groups[group].serving_term().is_some();
                    if let Some(c) = coordinator.txn().filter(|_| serving) {
                        let ids = c.stored().ids.iter().filter(|(_, m)| running_long(m));
                        listed.extend(ids.map(|(i, m)| (i.clone(), m.clone())));
                    }
                }
                sink.reply(id, Response::ListTransactions(listed));
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
            Request::Produce(produce) => self.produce(now, id, produce, sink, touched),
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
            Request::DescribeProducers { group } => {
                let response = match self.groups.get(&group).filter(|r| !r.is_command_log()) {
                    Some(replica) => replica.describe_producers(),
                    None => Err(FetchError::UnknownTopicOrPartition),
                };
                sink.reply(id, Response::DescribeProducers(response));
            }
            Request::EpochEnd(request) => {
                let response = match self
                    .groups
                    .get(&request.group)
                    .filter(|r| !r.is_command_log())
                {
                    Some(replica) => replica.epoch_end(&request),
                    None => Err(FetchError::UnknownTopicOrPartition),
                };
                sink.reply(id, Response::EpochEnd(response));
            }
        }
    }

    /// Keeps the partitions' entries in memory within `log_cache_bytes`: when over it, frees
    /// down to three quarters of it, from the partitions holding the most first.
    /// The log cleaner rewrote `group`'s entries up to `through` on disk: drops them from
    /// memory (those applied and persisted), so that fetches read the cleaned batches from
    /// the files rather than serve the originals. Returns the bytes freed.
    pub fn evict_cleaned(&mut self, group: GroupId, through: RaftIndex) -> u64 {
        match self.groups.get_mut(&group) {
            Some(replica) if !replica.is_command_log() => {
                let freed = replica.evict_through(&self.config, through);
                if replica.cleaned_pending() {
                    self.cleaned_pending.insert(group);
                }
                freed
            }
            _ => 0,
        }
    }

    /// Evicts again what the log cleaner rewrote but was not yet applied or persisted.
    fn evict_cleaned_pending(&mut self) {
        for group in std::mem::take(&mut self.cleaned_pending) {
            self.evict_cleaned(group, RaftIndex(0));
        }
    }

    fn evict_cached_entries(&mut self) {
        let budget = self.config.log_cache_bytes;
        // Summed first, without allocating: every tick walks every partition, and at
        // thousands of partitions a list built each tick was a good part of an idle node's work.
        let total: u64 = self
            .groups
            .values()
            .filter(|r| !r.is_command_log())
            .map(Replica::cached_bytes)
            .sum();
        if total <= budget {
            return;
        }
        let mut held: Vec<(u64, GroupId)> = self
            .groups
            .values()
            .filter(|r| !r.is_command_log())
            .map(|r| (r.cached_bytes(), r.group()))
            .collect();
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
                self.markers_applied.extend(replica.take_markers_written());
                if group == METADATA_GROUP {
                    self.apply_metadata(sink, &mut touched);
                } else if let Some(coordinator) = self.coordinators.get_mut(&group) {
                    let now = self.now.expect("handle sets now");
                    self.txn_applied |= coordinator.follow(replica, now, sink);
                    if let Hosted::Group(c) = coordinator {
                        self.markers_applied.extend(c.take_markers_written());
                    }
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

    /// The group coordinator of a hosted partition of the offsets topic.
    pub fn coordinator(&self, group: GroupId) -> Option<&Coordinator> {
        self.coordinators.get(&group).and_then(Hosted::group)
    }

    /// The transaction coordinator of a hosted partition of the transaction state topic.
    pub fn txn_coordinator(&self, group: GroupId) -> Option<&TxnCoordinator> {
        self.coordinators.get(&group).and_then(Hosted::txn)
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

    /// The leader-epoch history of a partition this node hosts (`None` for a command log or
    /// a group not hosted here).
    pub fn epoch_history(&self, group: GroupId) -> Option<&EpochHistory> {
        self.groups.get(&group).and_then(Replica::epoch_history)
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
                .all(|token| token & !FORWARD_COUNTER == self.forward_prefix
                    && token & FORWARD_COUNTER < self.forward_next),
            "forwarding tokens are this start's, and issued"
        );
        for replica in self.groups.values() {
            replica.invariants();
            replica.invariants_full();
            assert!(
                replica.is_quiet() || self.awake.contains(&replica.group()),
                "group {} is awake but not ticked",
                replica.group()
            );
        }
        for coordinator in self.coordinators.values() {
            coordinator.invariants();
        }
        self.txns.invariants();
        assert!(self.txns.waiting() <= self.config.pending_requests_max);
        for pair in self.inflight.iter().collect::<Vec<_>>().windows(2) {
            assert!(pair[0].seq < pair[1].seq);
        }
    }
}

/// Mixes several words into one seed (SplitMix64 finalizer over a running state).
/// The counter bits of a forwarding token.
const FORWARD_COUNTER: u64 = (1 << 40) - 1;

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
