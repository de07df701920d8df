//! One group's replica on this node: a raft-rs `RawNode` whose log is the group's log, and the
//! Raft plumbing around it (ticks with the seeded election jitter, readies, persistence,
//! snapshots, compaction, leadership). What the log holds is the replica's [`Kind`]:
//!
//! - a partition's record batches ([`records`]: the state applying them builds, fetches,
//!   retention; [`produce`]: the leader's produce path and the answers waiting on it);
//! - or commands ([`commands`]: the metadata group and the group coordinators' partitions, whose
//!   applied entries are handed to `Node`).
//!
//! Ready handling follows raft-rs's asynchronous-persistence contract: entries and hard state
//! become readable in [`LogStore`] at once and are handed to the disk as [`WalRecord`]s; the
//! messages raft says must follow persistence are held until the write's completion arrives.

mod commands;
mod log_start;
mod markers;
mod produce;
mod quiesce;
mod records;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

use crate::batch::TimestampType;
use crate::ids::{GroupId, NodeId, Offset, RaftId, RaftIndex, Term};
use crate::io::{DiskRead, TraceEvent, WalRecord};
use crate::log_store::LogStore;
use crate::node::{NodeConfig, Sink};
use crate::time::Now;

pub(crate) use commands::Applied;
use commands::CommandState;
pub use markers::{MarkerOutcome, MarkerWrite};
use quiesce::is_quiescing;
pub(crate) use quiesce::QuiescingHeartbeat;
use records::RecordState;

/// What a group's log holds, chosen when the group starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogKind {
    /// A partition: Kafka record batches, whose timestamps the leader stamps this way.
    Records(TimestampType),
    /// A command log (the metadata group, or a group coordinator's partition).
    Commands,
}

/// What a replica's log holds, with the state that only that kind of log has.
enum Kind {
    /// A partition: its entries are record batches, and applying them builds the partition's
    /// state (offsets, producer table); its leader takes produce requests.
    Records(Box<RecordState>),
    /// A command log (the metadata group, or a group coordinator's partition): its entries are
    /// encoded commands, not record batches; they are
    /// collected for `Node` to apply. The metadata log is never compacted; a coordinator's log
    /// is, by `Node`, with the coordinator's state as the snapshot (`compact_commands`).
    Commands(CommandState),
}

impl Kind {
    /// The partition state of a record-batch log; a command log has none.
    fn records(&self) -> &RecordState {
        match self {
            Kind::Records(records) => records,
            Kind::Commands(_) => panic!("a command log has no record batches"),
        }
    }

    /// The partition state of a record-batch log; a command log has none.
    fn records_mut(&mut self) -> &mut RecordState {
        match self {
            Kind::Records(records) => records,
            Kind::Commands(_) => panic!("a command log has no record batches"),
        }
    }
}

/// This node's leadership of the group, while it lasts.
#[derive(Debug)]
struct Leadership {
    term: Term,
    /// Index of the leader's first entry in its term; it serves once that is applied.
    term_start: RaftIndex,
}

/// Held messages of one ready, released when the write holding that ready completes.
#[derive(Debug)]
struct Held {
    number: u64,
    messages: Vec<Message>,
}

/// One group's replica on this node: the Raft node, and what applying its log builds.
pub(crate) struct Replica {
    group: GroupId,
    node: NodeId,
    raw: RawNode<LogStore>,
    /// What the log holds, and the state only that kind of log has.
    kind: Kind,
    /// The group's seeded RNG, for election jitter.
    rng: ChaCha8Rng,
    /// The (term, role) the current jitter was drawn for.
    election_round: (u64, StateRole),
    /// Ticks still withheld from raft-rs's election clock in this round.
    withheld_ticks: usize,
    /// Ticks so far, and, while leading, the tick each follower was last seen recently
    /// active (raft-rs clears its flag at every quorum check, so it is sampled each tick).
    ticks: u64,
    followers_heard: BTreeMap<u64, u64>,
    /// The last index the log cleaner rewrote on disk: cached entries up to it leave memory
    /// once applied and persisted (`evict_through`), as they must not be served.
    cleaned_through: u64,
    // Applied state.
    applied: RaftIndex,
    /// Index of the latest snapshot, advanced when the log is compacted: the log holds the
    /// entries after it.
    snapshot_index: RaftIndex,
    leader: Option<Leadership>,
    // Persistence.
    held: VecDeque<Held>,
    /// Ticks since a snapshot was sent to each peer still catching up from it.
    snapshot_ticks: BTreeMap<u64, u32>,
    /// Reads of evicted entries asked of the driver, by first index, with the raft-rs
    /// requests waiting on each (at most [`READ_WAITERS_MAX`]; raft-rs asks again anyway).
    reads: BTreeMap<u64, Vec<raft::GetEntriesContext>>,
    /// Quiescent: not ticked until something wakes it (see `quiesce`).
    quiet: bool,
}

/// raft-rs requests kept per read of evicted entries.
const READ_WAITERS_MAX: usize = 8;

/// The per-ready summary the node needs to complete the write later.
pub(crate) struct ReadyWritten {
    pub(crate) number: u64,
    pub(crate) last_entry: Option<RaftIndex>,
}

impl Replica {
    pub(crate) fn new(
        config: &NodeConfig,
        group: GroupId,
        store: LogStore,
        kind: LogKind,
        checkpoint: Option<crate::io::Checkpoint>,
        mut rng: ChaCha8Rng,
        logger: &slog::Logger,
    ) -> Self {
        // The group's base election timeout, in [election_tick, 2 * election_tick).
        let election_tick_min =
            config.election_tick + (rng.next_u64() % config.election_tick as u64) as usize;
        let snapshot = store.snapshot().clone();
        let snapshot_index = RaftIndex(snapshot.get_metadata().index);
        let mut applied = snapshot_index;
        let persisted = RaftIndex(store.last_index());
        let kind = match kind {
            LogKind::Records(timestamps) => match checkpoint {
                // A partition starts applying after its checkpoint: the entries before it
                // stay on disk (the store holds only their terms).
                Some(checkpoint) if checkpoint.index > snapshot_index.0 => {
                    assert_eq!(
                        Some(checkpoint.term),
                        store.term_at(checkpoint.index),
                        "a checkpoint is of an entry of the log"
                    );
                    applied = RaftIndex(checkpoint.index);
                    Kind::Records(Box::new(RecordState::from_checkpoint(
                        &checkpoint.data,
                        &snapshot,
                        timestamps,
                        persisted,
                        config.index_points_max,
                    )))
                }
                _ => Kind::Records(Box::new(RecordState::new(
                    &snapshot,
                    timestamps,
                    persisted,
                    config.index_points_max,
                ))),
            },
            LogKind::Commands => Kind::Commands(CommandState::new(&snapshot)),
        };
        assert!(
            applied.0 + 1 >= store.cache_first(),
            "every entry not applied is in memory"
        );
        let raft_config = raft::Config {
            id: config.node_id.raft_id().0,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            // A range of width one: raft-rs draws the timeout with `thread_rng`, so the jitter
            // comes from the node's seeded RNG instead (see `Node::new`).
            min_election_tick: election_tick_min,
            max_election_tick: election_tick_min + 1,
            applied: applied.0,
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            max_uncommitted_size: config.max_uncommitted_size,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        };
        let raw = RawNode::new(&raft_config, store, logger).expect("valid raft configuration");
        Self {
            group,
            node: config.node_id,
            raw,
            kind,
            rng,
            election_round: (u64::MAX, StateRole::Leader),
            withheld_ticks: 0,
            ticks: 0,
            followers_heard: BTreeMap::new(),
            cleaned_through: 0,
            applied,
            snapshot_index,
            leader: None,
            held: VecDeque::new(),
            snapshot_ticks: BTreeMap::new(),
            reads: BTreeMap::new(),
            quiet: false,
        }
    }

    /// One tick; `silent`: the peers this node has not heard from for an election timeout.
    pub(crate) fn tick(
        &mut self,
        config: &NodeConfig,
        silent: &BTreeSet<NodeId>,
        now: Now,
        sink: &mut Sink,
    ) {
        // raft-rs draws a randomized election timeout with `thread_rng`, so it is given a range
        // of width one and the jitter comes from here: at every new (term, role) a seeded
        // number of ticks is withheld from a non-leader's election clock. Nodes that time out
        // together (a split vote) thus draw apart, as raft's randomized timeouts intend.
        let round = (self.raw.raft.term, self.raw.raft.state);
        if round != self.election_round {
            self.election_round = round;
            self.withheld_ticks = (self.rng.next_u64() % config.election_tick as u64) as usize;
        }
        if self.raw.raft.state != StateRole::Leader && self.withheld_ticks > 0 {
            self.withheld_ticks -= 1;
        } else if !self.snapshot_unpersisted() {
            self.raw.tick();
        }
        self.ticks += 1;
        if self.leader.is_some() {
            let ticks = self.ticks;
            for (id, pr) in self.raw.raft.prs().iter() {
                if pr.recent_active {
                    self.followers_heard.insert(*id, ticks);
                }
            }
        } else if !self.followers_heard.is_empty() {
            self.followers_heard.clear();
        }
        if let Kind::Records(records) = &mut self.kind {
            records.produce.expire_pending(now, sink);
            records.log_start_waits.expire(now, sink);
        }
        self.retry_stuck_snapshots(config);
        self.compact(config, sink);
        self.checkpoint(config, sink, false);
        self.maybe_quiesce(config, silent, sink);
    }

    /// Writes a checkpoint of a partition's applied state after enough bytes, or ticks, of
    /// applied batches: a restart then holds and applies only the entries after it. Only at an
    /// applied index that is also persisted (the state is exactly the one at that index).
    /// `force`: write one now if anything was applied since the last (a group about to
    /// quiesce does not tick towards one).
    fn checkpoint(&mut self, config: &NodeConfig, sink: &mut Sink, force: bool) {
        let applied = self.applied.0;
        let persisted = self.raw.raft.raft_log.persisted;
        let Kind::Records(records) = &mut self.kind else {
            return;
        };
        let (bytes, ticks) = &mut records.since_checkpoint;
        if *bytes == 0 {
            return;
        }
        *ticks += 1;
        let due = force || *bytes >= config.checkpoint_bytes || *ticks >= config.checkpoint_ticks;
        if !due || applied > persisted || applied <= self.snapshot_index.0 {
            return;
        }
        records.since_checkpoint = (0, 0);
        let term = self
            .raw
            .store()
            .term_at(applied)
            .expect("applied is in the log");
        let data = records.checkpoint_data(self.raw.store(), config.offset_index_interval_bytes);
        sink.write(
            WalRecord::Checkpoint {
                group: self.group,
                checkpoint: crate::io::Checkpoint {
                    index: applied,
                    term,
                    data: data.into(),
                },
            },
            false,
        );
    }

    /// Whether a snapshot installed here is not persisted yet. raft-rs counts it applied only
    /// once it is (`report_applied`), and a campaign (an election timeout, a leadership
    /// transfer's MsgTimeoutNow) reads the committed entries after what raft-rs counts applied,
    /// which the snapshot replaced in the store: raft-rs would fail fatally. Such a replica
    /// neither ticks raft-rs nor campaigns until the write is done, so a stalled disk delays
    /// its election timeout instead of crashing the node.
    fn snapshot_unpersisted(&self) -> bool {
        self.raw.store().first_index() > self.raw.raft.raft_log.applied + 1
    }

    /// The topic's cleanup policy, from this node's metadata: when the partition starts, and
    /// whenever the topic's configuration changes. A command log has none.
    pub(crate) fn set_cleanup(&mut self, cleanup: crate::metadata::Cleanup) {
        if let Kind::Records(records) = &mut self.kind {
            records.cleanup = cleanup;
        }
    }

    /// Starts an election now (a new partition's first replica: the group would otherwise
    /// wait out an election timeout before its first leader).
    pub(crate) fn campaign(&mut self) {
        self.wake();
        if self.snapshot_unpersisted() {
            return;
        }
        // An error is raft-rs declining (already leading, or not a voter): nothing to do.
        let _ = self.raw.campaign();
    }

    /// Asks the leader to hand leadership to voter `to` (raft-rs brings it up to date, then
    /// tells it to campaign at once); a follower passes the request to the leader it knows.
    /// False when `to` is not a voter of the group.
    pub(crate) fn transfer_leader(&mut self, to: NodeId) -> bool {
        if !self.is_voter(to) {
            return false;
        }
        self.wake();
        self.raw.transfer_leader(to.raft_id().0);
        true
    }

    /// Whether `node` votes in this group.
    pub(crate) fn is_voter(&self, node: NodeId) -> bool {
        self.raw
            .raft
            .prs()
            .conf()
            .voters()
            .contains(node.raft_id().0)
    }

    pub(crate) fn step(&mut self, message: Message) {
        if !is_quiescing(&message) {
            self.wake();
        }
        if message.get_msg_type() == MessageType::MsgTimeoutNow && self.snapshot_unpersisted() {
            // A campaign now would fail raft-rs (see `snapshot_unpersisted`); the leader's
            // transfer times out and is asked again.
            return;
        }
        // Errors here are raft-rs refusing a message (stale term, unknown peer): dropped, as
        // the network could have dropped it.
        let _ = self.raw.step(message);
    }

    /// The last applied index.
    pub(crate) fn applied_index(&self) -> RaftIndex {
        self.applied
    }

    /// Entries held after the latest snapshot (those a compaction would drop).
    pub(crate) fn entries_held(&self) -> u64 {
        self.applied.0.saturating_sub(self.snapshot_index.0)
    }

    /// Whether this group's log holds commands rather than record batches.
    pub(crate) fn is_command_log(&self) -> bool {
        matches!(self.kind, Kind::Commands(_))
    }

    /// The term this node leads and serves in, if it does.
    pub(crate) fn serving_term(&self) -> Option<Term> {
        self.serving_leader().map(|l| l.term)
    }

    /// When this node leads the group: the replicas in sync (Kafka's ISR), this one and each
    /// follower heard from within two election timeouts that holds every committed entry or
    /// is replicated to in steady state (not probed for where its log ends, nor sent a
    /// snapshot: those are behind).
    pub(crate) fn in_sync(&self, config: &NodeConfig) -> Option<Vec<NodeId>> {
        let unheard_max = 2 * config.election_tick as u64;
        self.leader.as_ref()?;
        let me = self.raw.raft.id;
        let committed = self.raw.raft.raft_log.committed;
        let mut replicas: Vec<NodeId> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, pr)| {
                let heard = self
                    .followers_heard
                    .get(*id)
                    .is_some_and(|t| self.ticks - t <= unheard_max);
                **id == me
                    || (heard && (pr.state == ProgressState::Replicate || pr.matched >= committed))
            })
            .map(|(id, _)| RaftId(*id).voter())
            .collect();
        replicas.sort();
        Some(replicas)
    }

    /// Whether this node leads the group now, and in which term.
    pub(crate) fn leading(&self) -> Option<Term> {
        self.leader.as_ref().map(|l| l.term)
    }

    /// The group's current Raft term, as this replica knows it.
    pub(crate) fn term(&self) -> Term {
        Term(self.raw.raft.term)
    }

    /// Whether the group has ever had a leader, as far as this replica's log shows: a leader
    /// commits an entry of its term first, and nothing else commits.
    pub(crate) fn has_had_leader(&self) -> bool {
        self.raw.raft.raft_log.committed > 0
    }

    pub(crate) fn leader_hint(&self) -> Option<NodeId> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(RaftId(id).voter()),
        }
    }

    /// The leader serves once it has applied the first entry of its own term: only then is its
    /// high watermark at least every earlier leader's.
    fn serving_leader(&self) -> Option<&Leadership> {
        self.leader
            .as_ref()
            .filter(|l| self.applied >= l.term_start)
    }

    /// Handles every ready raft-rs has. Returns the readies handed to the disk.
    pub(crate) fn process_ready(
        &mut self,
        config: &NodeConfig,
        sink: &mut Sink,
    ) -> Vec<ReadyWritten> {
        let mut written = Vec::new();
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            for message in ready.take_messages() {
                self.note_snapshot_sent(&message);
                sink.send(self.group, message);
            }
            if !ready.snapshot().is_empty() {
                self.install_snapshot(ready.snapshot().clone(), sink);
            }
            let committed = ready.take_committed_entries();
            self.apply(committed, sink);
            let entries = ready.take_entries();
            let last_entry = entries.last().map(|e| RaftIndex(e.index));
            if !entries.is_empty() {
                self.raw.mut_store().append(&entries);
                sink.write(
                    WalRecord::Entries {
                        group: self.group,
                        entries,
                    },
                    true,
                );
            }
            if let Some(hard_state) = ready.hs() {
                self.raw.mut_store().set_hard_state(hard_state.clone());
                sink.write(
                    WalRecord::HardState {
                        group: self.group,
                        hard_state: hard_state.clone(),
                        must_sync: ready.must_sync(),
                    },
                    ready.must_sync(),
                );
            }
            let persisted_messages = ready.take_persisted_messages();
            let number = ready.number();
            if config.planted.early_persisted_messages() {
                for message in persisted_messages {
                    sink.send(self.group, message);
                }
            } else if !persisted_messages.is_empty() {
                self.held.push_back(Held {
                    number,
                    messages: persisted_messages,
                });
            }
            self.raw.advance_append_async(ready);
            self.report_applied();
            self.update_leadership(sink);
            written.push(ReadyWritten { number, last_entry });
        }
        self.request_reads(config, sink);
        written
    }

    /// Asks the driver to read the evicted entries raft-rs wanted (for a lagging follower).
    fn request_reads(&mut self, config: &NodeConfig, sink: &mut Sink) {
        let cache_first = self.raw.store().cache_first();
        for (low, high, context) in self.raw.mut_store().take_misses() {
            let waiting = self.reads.entry(low).or_default();
            if waiting.is_empty() {
                sink.read(DiskRead {
                    group: self.group,
                    from: RaftIndex(low),
                    // Only evicted entries, so committed ones: an uncommitted entry read now
                    // could be replaced before the answer comes back.
                    to: RaftIndex(high.min(cache_first) - 1),
                    read_bytes: u64::from(config.catch_up_read_bytes),
                    max_bytes: config.catch_up_read_bytes,
                    skip_below: Offset(0),
                    end_offset: Offset::MAX,
                });
            }
            if waiting.len() < READ_WAITERS_MAX {
                waiting.push(context);
            }
        }
    }

    /// The driver read entries from `low` on: raft-rs sends them to the followers waiting.
    pub(crate) fn on_entries_read(&mut self, low: RaftIndex, entries: Vec<Entry>) {
        let waiting = self.reads.remove(&low.0).unwrap_or_default();
        if entries.is_empty() || self.leader.is_none() {
            // Compacted meanwhile: raft-rs finds that when it asks again, and sends a snapshot.
            return;
        }
        self.raw.mut_store().set_fetched(entries);
        for context in waiting {
            self.raw.on_entries_fetched(context);
        }
    }

    /// Bytes of entries held in memory.
    pub(crate) fn cached_bytes(&self) -> u64 {
        self.raw.store().cached_bytes()
    }

    /// Frees up to about `bytes` of memory: read-back entries, then the oldest cached entries
    /// that are applied and persisted (the disk has them). Returns the bytes freed.
    pub(crate) fn evict(&mut self, config: &NodeConfig, bytes: u64) -> u64 {
        let before = self.raw.store().cached_bytes();
        self.raw.mut_store().drop_fetched();
        let upto = self.evictable();
        let mut freed = before - self.raw.store().cached_bytes();
        let store = self.raw.store();
        let mut index = store.cache_first();
        while freed < bytes && index <= upto {
            let entry = store.entry(index).expect("cached");
            freed += crate::log_store::entry_bytes(entry);
            index += 1;
        }
        self.evict_to(config, index - 1);
        freed
    }

    /// Drops from memory every entry up to `through` that is applied and persisted (and the
    /// entries read back from disk), whatever the budget: the log cleaner rewrote them on
    /// disk, and a read of them must now find the cleaned batches there, not the originals
    /// held here. Returns the bytes freed.
    /// Entries not yet applied or persisted stay until they are: `cleaned_pending` says so,
    /// and the node calls again.
    pub(crate) fn evict_through(&mut self, config: &NodeConfig, through: RaftIndex) -> u64 {
        self.cleaned_through = self.cleaned_through.max(through.0);
        let before = self.raw.store().cached_bytes();
        self.raw.mut_store().drop_fetched();
        self.evict_to(config, self.cleaned_through.min(self.evictable()));
        before - self.raw.store().cached_bytes()
    }

    /// Whether memory still holds an entry the log cleaner rewrote (one not yet applied or
    /// persisted when it was told).
    pub(crate) fn cleaned_pending(&self) -> bool {
        self.cleaned_through >= self.raw.store().cache_first()
    }

    /// The last index that may leave memory: applied and persisted (the disk has it).
    fn evictable(&self) -> u64 {
        self.applied.0.min(self.raw.raft.raft_log.persisted)
    }

    /// Drops the cached entries up to `upto` (at most `evictable`), indexing their batches
    /// for reads from disk.
    fn evict_to(&mut self, config: &NodeConfig, upto: u64) {
        debug_assert!(upto <= self.evictable());
        let evicted = self.raw.mut_store().evict(upto);
        if let Kind::Records(records) = &mut self.kind {
            records.on_evicted(&evicted, config.offset_index_interval_bytes);
        }
    }

    /// Tells raft-rs what is applied, as far as it is also persisted: raft-rs requires
    /// applied <= persisted, and an installed snapshot counts as applied before its write is done.
    fn report_applied(&mut self) {
        let raft_log = &self.raw.raft.raft_log;
        let reportable = self.applied.0.min(raft_log.persisted);
        if reportable > raft_log.applied {
            self.raw.advance_apply_to(reportable);
        }
    }

    /// The write holding ready `number` (and every earlier one) is done.
    pub(crate) fn on_written(
        &mut self,
        number: u64,
        last_entry: Option<RaftIndex>,
        sink: &mut Sink,
    ) {
        self.raw.on_persist_ready(number);
        self.report_applied();
        while self.held.front().is_some_and(|h| h.number <= number) {
            let held = self.held.pop_front().expect("checked");
            for message in held.messages {
                sink.send(self.group, message);
            }
        }
        if let Kind::Records(records) = &mut self.kind {
            records
                .produce
                .on_persisted(last_entry, self.raw.store(), sink);
        }
    }

    fn update_leadership(&mut self, sink: &mut Sink) {
        let is_leader = self.raw.raft.state == StateRole::Leader;
        if !is_leader {
            self.leader = None;
            if let Kind::Records(records) = &mut self.kind {
                records.produce.leader = None;
            }
            self.snapshot_ticks.clear();
            self.reads.clear();
            return;
        }
        let term = Term(self.raw.raft.term);
        if self.leader.as_ref().is_some_and(|l| l.term == term) {
            return;
        }
        // New leadership: rebuild the leader's view from the applied state plus every entry
        // in its log after it. The store holds all of them: the ready that made this node
        // leader has just been appended.
        let last = self.raw.store().last_index();
        assert_eq!(
            last,
            self.raw.raft.raft_log.last_index(),
            "leader's log fully handed over"
        );
        if let Kind::Records(records) = &mut self.kind {
            records.produce.leader =
                Some(records.leader_state(self.raw.store(), self.applied.0 + 1, last));
        }
        self.leader = Some(Leadership {
            term,
            term_start: RaftIndex(last),
        });
        sink.trace(TraceEvent::BecameLeader {
            group: self.group,
            term,
        });
        sink.became_leader = true;
    }

    fn apply(&mut self, entries: Vec<Entry>, sink: &mut Sink) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied.0 + 1,
                "entries are applied in order, once"
            );
            let crc = match entry.get_entry_type() {
                EntryType::EntryNormal => match &mut self.kind {
                    Kind::Records(records) => records.apply(&entry),
                    Kind::Commands(commands) => {
                        commands.apply(&entry);
                        0
                    }
                },
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    panic!("configuration changes are never proposed; membership is static");
                }
            };
            self.applied = RaftIndex(entry.index);
            sink.trace(TraceEvent::Applied {
                group: self.group,
                index: self.applied,
                term: Term(entry.term),
                next_offset: self.next_offset(),
                crc,
            });
            if let Kind::Records(records) = &mut self.kind {
                records
                    .produce
                    .resolve_applied(self.applied, Term(entry.term), sink);
                records
                    .markers
                    .resolve_applied(self.applied, Term(entry.term));
                let log_start = records.log_start_offset();
                records
                    .log_start_waits
                    .resolve(self.applied, Term(entry.term), log_start, sink);
            }
        }
    }

    /// The offset after the last applied record: the high watermark (0 in a command log).
    fn next_offset(&self) -> Offset {
        match &self.kind {
            Kind::Records(records) => records.next_offset(),
            Kind::Commands(_) => Offset(0),
        }
    }

    /// The first offset still held (0 in a command log).
    fn log_start_offset(&self) -> Offset {
        match &self.kind {
            Kind::Records(records) => records.log_start_offset(),
            Kind::Commands(_) => Offset(0),
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot, sink: &mut Sink) {
        let index = RaftIndex(snapshot.get_metadata().index);
        assert!(
            index > self.applied,
            "raft only sends snapshots past what is applied"
        );
        // A partition's snapshot carries its log start offset and producer table; a command
        // log's is its state machine's state, for `Node` to restore.
        let next_offset = match &mut self.kind {
            Kind::Records(records) => records.install_snapshot(index, &snapshot.data, sink),
            Kind::Commands(commands) => {
                commands.install_snapshot(index, snapshot.data.clone());
                Offset(0)
            }
        };
        self.raw.mut_store().apply_snapshot(snapshot.clone());
        self.applied = index;
        self.snapshot_index = index;
        sink.trace(TraceEvent::InstalledSnapshot {
            group: self.group,
            index,
            next_offset,
        });
        sink.write(
            WalRecord::Snapshot {
                group: self.group,
                snapshot,
                install: true,
            },
            true,
        );
    }

    fn note_snapshot_sent(&mut self, message: &Message) {
        if message.get_msg_type() == MessageType::MsgSnapshot {
            self.snapshot_ticks.insert(message.to, 0);
        }
    }

    /// A snapshot message lost on the way leaves raft-rs waiting forever (the peer's progress
    /// stays in the snapshot state); after a while, report it failed so raft sends another.
    fn retry_stuck_snapshots(&mut self, config: &NodeConfig) {
        let mut failed = Vec::new();
        for (peer, ticks) in self.snapshot_ticks.iter_mut() {
            *ticks += 1;
            let state = self.raw.raft.prs().get(*peer).map(|p| p.state);
            if state != Some(ProgressState::Snapshot) {
                failed.push((*peer, false));
            } else if *ticks >= config.snapshot_retry_ticks {
                failed.push((*peer, true));
            }
        }
        for (peer, report) in failed {
            self.snapshot_ticks.remove(&peer);
            if report {
                self.raw.report_snapshot(peer, SnapshotStatus::Failure);
            }
        }
    }

    /// Drops the entries up to `target` (applied and persisted) behind a snapshot of `data`,
    /// and hands the snapshot to the disk, synced: the storage deletes the files it makes
    /// unneeded only once it is durable, and an idle partition may write nothing after it.
    fn compact_to(&mut self, target: u64, data: Bytes, sink: &mut Sink) {
        let mut snapshot = Snapshot {
            data,
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = target;
        meta.term = self.raw.store().term_at(target).expect("held");
        meta.set_conf_state(self.raw.store().conf_state().clone());
        self.raw.mut_store().compact(snapshot.clone());
        sink.write(
            WalRecord::Snapshot {
                group: self.group,
                snapshot,
                install: false,
            },
            true,
        );
    }

    /// The leader-epoch history, if the log holds records.
    pub(crate) fn epoch_history(&self) -> Option<&crate::epoch_history::EpochHistory> {
        match &self.kind {
            Kind::Records(records) => Some(records.epochs()),
            Kind::Commands(_) => None,
        }
    }

    pub(crate) fn group(&self) -> GroupId {
        self.group
    }

    pub(crate) fn status(&self) -> crate::node::GroupStatus {
        crate::node::GroupStatus {
            leader: self.leader_hint(),
            term: Term(self.raw.raft.term),
            serving: self.serving_leader().is_some(),
            high_watermark: self.next_offset(),
            last_stable_offset: match &self.kind {
                Kind::Records(records) => records.last_stable_offset(),
                Kind::Commands(_) => self.next_offset(),
            },
            log_start_offset: self.log_start_offset(),
            log_start_epoch: match &self.kind {
                Kind::Records(records) => records.epochs().epoch_at(records.log_start_offset()),
                Kind::Commands(_) => None,
            },
            sparse_index_points: match &self.kind {
                Kind::Records(records) => records.sparse_points(),
                Kind::Commands(_) => 0,
            },
        }
    }

    /// Linear-time invariants (the whole log, every producer).
    pub(crate) fn invariants_full(&self) {
        self.raw.store().invariants_full();
        if let Kind::Records(records) = &self.kind {
            records.invariants_full(self.raw.store().cache_first());
        }
    }

    /// Constant-time invariants, checked after every input that touches the group.
    pub(crate) fn invariants(&self) {
        self.raw.store().invariants();
        assert!(self.applied.0 <= self.raw.raft.raft_log.committed);
        assert!(self.snapshot_index.0 + 1 == self.raw.store().first_index());
        if self.leader.is_some() {
            assert_eq!(self.raw.raft.state, StateRole::Leader);
        }
        if let Kind::Records(records) = &self.kind {
            if let Some(leader) = self.serving_leader() {
                // It applied the first entry of its term, which started its epoch.
                assert_eq!(records.epochs().latest(), Some(leader.term));
            }
            records.invariants(
                self.raw.store().first_index(),
                self.raw.raft.raft_log.last_index(),
                self.applied,
                self.leading(),
            );
        }
    }
}
