//! The node-level state machine: every Raft group a node hosts, behind one entry point,
//! [`Node::handle`], that takes an [`Input`] and pushes [`Output`]s.
//!
//! Order of work inside one `handle` call: the input is applied to the groups it touches; each
//! touched group's readies are processed; everything those readies must persist becomes one
//! [`Write`] (one device, completions in order); messages for one peer from all groups become
//! one [`Output::Send`]. Messages raft-rs says must follow persistence wait for the write's
//! [`Input::WriteDone`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_core::{RngCore, SeedableRng};

use crate::batch::TimestampType;
use crate::ids::{GroupId, IoSeq, NodeId, Offset, RaftIndex, RequestId};
use crate::io::{
    Acks, GroupMessage, Input, Output, ProduceError, Request, Response, TraceEvent, WalRecord,
    Write,
};
use crate::log_store::LogStore;
use crate::replica::Replica;
use crate::time::Now;

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
    /// The groups it hosts.
    pub groups: Vec<GroupConfig>,
    /// Raft election timeout in ticks; the actual timeout per group and incarnation is drawn
    /// from `[election_tick, 2 * election_tick)` with the node's seeded RNG.
    pub election_tick: usize,
    /// Raft heartbeat interval in ticks.
    pub heartbeat_tick: usize,
    /// Largest append message raft sends (bytes).
    pub max_size_per_msg: u64,
    /// Most append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Most bytes proposed but not yet committed per group; past it proposals are refused.
    pub max_uncommitted_size: u64,
    /// Largest record batch accepted.
    pub batch_bytes_max: usize,
    /// Most produce requests waiting for an answer per group.
    pub pending_requests_max: usize,
    /// Most idempotent producers remembered per group.
    pub producers_max: usize,
    /// Applied entries kept per group before older ones are compacted into a snapshot.
    pub retain_entries_max: u64,
    /// Ticks to wait for a follower to install a snapshot before sending it again.
    pub snapshot_retry_ticks: u32,
    /// Planted bugs (inert without the `planted-bugs` feature).
    pub planted: PlantedBugs,
}

impl NodeConfig {
    /// Defaults sized for a production node with 100 ms ticks.
    pub fn new(node_id: NodeId, groups: Vec<GroupConfig>) -> Self {
        Self {
            node_id,
            groups,
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 << 20,
            batch_bytes_max: 1 << 20,
            pending_requests_max: 10_000,
            producers_max: 10_000,
            retain_entries_max: 1_000_000,
            snapshot_retry_ticks: 50,
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
    pub term: crate::ids::Term,
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
    /// Entries after the snapshot, contiguous.
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
}

impl Sink {
    pub(crate) fn send(&mut self, group: GroupId, message: raft::eraftpb::Message) {
        assert!(message.to != 0);
        self.sends
            .entry(NodeId(message.to))
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
    groups: BTreeMap<GroupId, Replica>,
    now: Option<Now>,
    write_next: IoSeq,
    inflight: VecDeque<InflightWrite>,
    /// Bound on writes in flight; past it the driver is not keeping up, which is a bug in it.
    inflight_max: usize,
}

impl Node {
    /// Starts a node from what its disk held. `seed` and `incarnation` (a restart counter) seed
    /// the Raft election timeouts, so every run with the same seed elects the same way.
    pub fn new(
        config: NodeConfig,
        seed: u64,
        incarnation: u64,
        durable: DurableState,
        logger: &slog::Logger,
    ) -> Self {
        assert!(config.election_tick > config.heartbeat_tick && config.heartbeat_tick > 0);
        assert!(config.retain_entries_max > 0);
        let mut groups = BTreeMap::new();
        let mut durable = durable.groups;
        for group in &config.groups {
            assert!(
                group.voters.contains(&config.node_id),
                "a node hosts only groups it votes in"
            );
            let voters: Vec<u64> = group.voters.iter().map(|n| n.raft_id()).collect();
            let store = match durable.remove(&group.id) {
                Some(state) => {
                    let mut snapshot = state.snapshot;
                    if snapshot.get_metadata().index == 0 {
                        // No snapshot yet: the configuration is still the group's first voters.
                        snapshot.mut_metadata().mut_conf_state().voters = voters;
                    }
                    let conf_state = snapshot.get_metadata().get_conf_state().clone();
                    LogStore::recover(state.hard_state, conf_state, snapshot, state.entries)
                }
                None => LogStore::new(voters),
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix(&[
                seed,
                group.id.0,
                config.node_id.0,
                incarnation,
            ]));
            let election_tick_min =
                config.election_tick + (rng.next_u64() % config.election_tick as u64) as usize;
            let replica = Replica::new(
                &config,
                group.id,
                store,
                group.timestamps,
                election_tick_min,
                logger,
            );
            groups.insert(group.id, replica);
        }
        assert!(
            durable.is_empty(),
            "disk holds groups this node is not configured for: {:?}",
            durable.keys()
        );
        Self {
            config,
            groups,
            now: None,
            write_next: IoSeq(0),
            inflight: VecDeque::new(),
            inflight_max: 1 << 16,
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
        };
        let mut touched = BTreeSet::new();
        match input {
            Input::Tick => {
                for replica in self.groups.values_mut() {
                    replica.tick(&self.config, now, &mut sink);
                    touched.insert(replica.group());
                }
            }
            Input::Peer { from, messages } => {
                for GroupMessage { group, message } in messages {
                    assert_eq!(
                        message.from, from.0,
                        "peer transport delivers messages from their sender"
                    );
                    if let Some(replica) = self.groups.get_mut(&group) {
                        replica.step(message);
                        touched.insert(group);
                    }
                }
            }
            Input::Request { id, request } => {
                self.handle_request(now, id, request, &mut sink, &mut touched)
            }
            Input::WriteDone { seq } => self.handle_write_done(seq, &mut sink, &mut touched),
        }
        let mut processed = BTreeSet::new();
        self.flush(touched, &mut sink, &mut processed);
        for (to, messages) in std::mem::take(&mut sink.sends) {
            out.push(Output::Send { to, messages });
        }
        out.extend(sink.out.drain(..));
        // After every input, the cheap invariants of the groups it touched; the full ones
        // (every group, O(n) walks) are `invariants()`, which tests and the simulator call.
        for group in processed {
            self.groups[&group].invariants();
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
            Request::Produce(produce) => match self.groups.get_mut(&produce.group) {
                Some(replica) => {
                    touched.insert(produce.group);
                    replica.produce(&self.config, now, id, produce, sink);
                }
                None => {
                    sink.reply_produce(produce.acks, id, Err(ProduceError::UnknownTopicOrPartition))
                }
            },
            Request::Fetch(fetch) => {
                let response = match self.groups.get(&fetch.group) {
                    Some(replica) => replica.fetch(&self.config, &fetch),
                    None => Err(crate::io::FetchError::UnknownTopicOrPartition),
                };
                sink.reply(id, Response::Fetch(response));
            }
            Request::FindTimestamp(find) => {
                let response = match self.groups.get(&find.group) {
                    Some(replica) => replica.find_timestamp(find.timestamp),
                    None => Err(crate::io::FetchError::UnknownTopicOrPartition),
                };
                sink.reply(id, Response::FindTimestamp(response));
            }
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
            let replica = self
                .groups
                .get_mut(&group)
                .expect("groups are never removed");
            replica.on_written(number, last_entry, sink);
            touched.insert(group);
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
                let replica = self.groups.get_mut(&group).expect("touched groups exist");
                for ready in replica.process_ready(&self.config, sink) {
                    readies.push((group, ready.number, ready.last_entry));
                }
            }
            if readies.is_empty() && sink.records.is_empty() {
                return;
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

    /// What this node knows of a group, for metadata answers; `None` if it does not host it.
    pub fn group_status(&self, group: GroupId) -> Option<GroupStatus> {
        self.groups.get(&group).map(Replica::status)
    }

    /// Asserts every invariant of every group, including the linear-time ones. `handle` checks
    /// the constant-time invariants of the groups each input touched.
    pub fn invariants(&self) {
        for replica in self.groups.values() {
            replica.invariants();
            replica.invariants_full();
        }
        for pair in self.inflight.iter().collect::<Vec<_>>().windows(2) {
            assert!(pair[0].seq < pair[1].seq);
        }
    }
}

/// Mixes several words into one seed (SplitMix64 finalizer over a running state).
fn mix(words: &[u64]) -> u64 {
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
