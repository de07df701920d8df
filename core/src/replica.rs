//! One partition replica: a raft-rs `RawNode` whose log is the partition's event log, plus the
//! partition state that applying that log builds (offsets, high watermark, producer table).
//!
//! Ready handling follows raft-rs's asynchronous-persistence contract: entries and hard state
//! become readable in [`LogStore`] at once and are handed to the disk as [`WalRecord`]s; the
//! messages raft says must follow persistence are held until the write's completion arrives.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

use crate::batch::{Batch, TimestampType};
use crate::ids::{GroupId, NodeId, Offset, ProducerId, RaftIndex, RequestId, Term};
use crate::io::{
    Acks, FetchData, FetchError, FetchRequest, ProduceAck, ProduceError, ProduceRequest, Response,
    TraceEvent, WalRecord,
};
use crate::log_store::LogStore;
use crate::node::{NodeConfig, Sink};
use crate::producer::{ProducerBatch, ProducerTable, SequenceCheck, SequenceError};
use crate::snapshot::SnapshotData;
use crate::time::{Instant, Now};

/// What the leader knows beyond the applied state: its whole log, including the uncommitted
/// suffix, which it never truncates while it leads.
#[derive(Debug)]
struct LeaderState {
    term: Term,
    /// Index of the leader's first entry in its term; it serves once that is applied.
    term_start: RaftIndex,
    /// Offset after the last record in the leader's log.
    log_end_offset: Offset,
    /// The producer table with every batch in the leader's log applied.
    producers: ProducerTable,
}

/// Partition state at the latest snapshot index, advanced when the log is compacted.
#[derive(Clone, Debug)]
struct Shadow {
    index: RaftIndex,
    next_offset: Offset,
    producers: ProducerTable,
}

/// What a waiting produce is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// acks=1: the leader's own write of the entry is durable.
    Persisted,
    /// acks=all, or a duplicate of a batch not yet applied: the entry is applied.
    Applied,
}

#[derive(Debug)]
struct Pending {
    id: RequestId,
    index: RaftIndex,
    term: Term,
    wait: Wait,
    ack: ProduceAck,
    deadline: Instant,
}

/// Held messages of one ready, released when the write holding that ready completes.
#[derive(Debug)]
struct Held {
    number: u64,
    messages: Vec<Message>,
}

pub(crate) struct Replica {
    group: GroupId,
    node: NodeId,
    raw: RawNode<LogStore>,
    timestamps: TimestampType,
    /// A command log (the metadata group, or a group coordinator's partition): its entries are
    /// encoded commands, not record batches; they are
    /// collected for `Node` to apply. The metadata log is never compacted; a coordinator's log
    /// is, by `Node`, with the coordinator's state as the snapshot (`compact_commands`).
    command_log: bool,
    commands_applied: Vec<Applied>,
    /// The group's seeded RNG, for election jitter.
    rng: ChaCha8Rng,
    /// The (term, role) the current jitter was drawn for.
    election_round: (u64, StateRole),
    /// Ticks still withheld from raft-rs's election clock in this round.
    withheld_ticks: usize,
    // Applied state.
    applied: RaftIndex,
    next_offset: Offset,
    log_start_offset: Offset,
    producers: ProducerTable,
    /// Base offset of each applied batch still held, to its Raft index.
    offset_index: BTreeMap<Offset, RaftIndex>,
    shadow: Shadow,
    leader: Option<LeaderState>,
    // Persistence.
    held: VecDeque<Held>,
    persisted: RaftIndex,
    pending: VecDeque<Pending>,
    /// Ticks since a snapshot was sent to each peer still catching up from it.
    snapshot_ticks: BTreeMap<u64, u32>,
}

/// What a command log applied, in order, for `Node` to apply to its state machine.
#[derive(Clone, Debug)]
pub(crate) enum Applied {
    /// An entry: index, term, command bytes (empty for a leader's no-op).
    Entry(RaftIndex, Term, Bytes),
    /// A snapshot replaced everything up to this index: the state machine's encoded state.
    Snapshot(RaftIndex, Bytes),
}

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
        timestamps: TimestampType,
        command_log: bool,
        mut rng: ChaCha8Rng,
        logger: &slog::Logger,
    ) -> Self {
        // The group's base election timeout, in [election_tick, 2 * election_tick).
        let election_tick_min =
            config.election_tick + (rng.next_u64() % config.election_tick as u64) as usize;
        let snapshot = store.snapshot().clone();
        let mut commands_applied = Vec::new();
        let (log_start_offset, producers) = if command_log && snapshot.get_metadata().index > 0 {
            // A command log's snapshot is its state machine's state, for `Node` to restore.
            commands_applied.push(Applied::Snapshot(
                RaftIndex(snapshot.get_metadata().index),
                snapshot.data.clone(),
            ));
            (Offset(0), ProducerTable::new(config.producers_max))
        } else if snapshot.get_metadata().index > 0 {
            let data =
                SnapshotData::decode(&snapshot.data).expect("stored snapshot data is checksummed");
            (data.log_start_offset, data.producers)
        } else {
            (Offset(0), ProducerTable::new(config.producers_max))
        };
        let applied = RaftIndex(snapshot.get_metadata().index);
        let raft_config = raft::Config {
            id: config.node_id.raft_id(),
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
        let persisted = RaftIndex(store.last_index());
        let raw = RawNode::new(&raft_config, store, logger).expect("valid raft configuration");
        Self {
            group,
            node: config.node_id,
            raw,
            timestamps,
            command_log,
            commands_applied,
            rng,
            election_round: (u64::MAX, StateRole::Leader),
            withheld_ticks: 0,
            applied,
            next_offset: log_start_offset,
            log_start_offset,
            producers: producers.clone(),
            offset_index: BTreeMap::new(),
            shadow: Shadow {
                index: applied,
                next_offset: log_start_offset,
                producers,
            },
            leader: None,
            held: VecDeque::new(),
            persisted,
            pending: VecDeque::new(),
            snapshot_ticks: BTreeMap::new(),
        }
    }

    pub(crate) fn tick(&mut self, config: &NodeConfig, now: Now, sink: &mut Sink) {
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
        } else {
            self.raw.tick();
        }
        self.expire_pending(now, sink);
        self.retry_stuck_snapshots(config);
        self.compact(config, sink);
    }

    pub(crate) fn step(&mut self, message: Message) {
        // Errors here are raft-rs refusing a message (stale term, unknown peer): dropped, as
        // the network could have dropped it.
        let _ = self.raw.step(message);
    }

    /// Proposes an entry of a command log; answers its index and term, or the leader
    /// this node knows of when it cannot propose.
    pub(crate) fn propose_command(
        &mut self,
        data: Bytes,
    ) -> Result<(RaftIndex, Term), Option<NodeId>> {
        assert!(self.command_log);
        let Some(term) = self.serving_leader().map(|l| l.term) else {
            return Err(self.leader_hint());
        };
        let last_before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(Vec::new(), data.to_vec()).is_err() {
            return Err(self.leader_hint());
        }
        let index = RaftIndex(self.raw.raft.raft_log.last_index());
        assert_eq!(index.0, last_before + 1, "one proposal, one entry");
        Ok((index, term))
    }

    /// Hands a metadata proposal to the leader this follower knows of (raft-rs forwards it).
    pub(crate) fn forward_metadata(&mut self, data: Bytes) -> Result<(), Option<NodeId>> {
        assert!(self.command_log);
        if self.leader_hint().is_none() || self.raw.propose(Vec::new(), data.to_vec()).is_err() {
            return Err(self.leader_hint());
        }
        Ok(())
    }

    /// What this command log applied since the last call, in order.
    pub(crate) fn take_commands_applied(&mut self) -> Vec<Applied> {
        std::mem::take(&mut self.commands_applied)
    }

    /// The last applied index.
    pub(crate) fn applied_index(&self) -> RaftIndex {
        self.applied
    }

    /// Entries held after the latest snapshot (those a compaction would drop).
    pub(crate) fn entries_held(&self) -> u64 {
        self.applied.0.saturating_sub(self.shadow.index.0)
    }

    /// Compacts a command log up to what is applied, with `state` (the state machine's state
    /// at that index) as the snapshot. Only when everything applied is also persisted here.
    pub(crate) fn compact_commands(&mut self, state: Bytes, sink: &mut Sink) -> bool {
        assert!(self.command_log && self.group != crate::metadata::METADATA_GROUP);
        let target = self.applied.0;
        if target <= self.shadow.index.0 || self.raw.raft.raft_log.persisted < target {
            return false;
        }
        self.compact_to(target, state, sink);
        self.shadow.index = RaftIndex(target);
        true
    }

    /// Whether this group's log holds commands rather than record batches.
    pub(crate) fn is_command_log(&self) -> bool {
        self.command_log
    }

    /// The term this node leads and serves in, if it does.
    pub(crate) fn serving_term(&self) -> Option<Term> {
        self.serving_leader().map(|l| l.term)
    }

    /// Whether this node leads the group now, and in which term.
    pub(crate) fn leading(&self) -> Option<Term> {
        self.leader.as_ref().map(|l| l.term)
    }

    /// The group is being removed: answer every waiting produce.
    pub(crate) fn fail_pending(&mut self, sink: &mut Sink) {
        for p in self.pending.drain(..) {
            sink.reply(
                p.id,
                Response::Produce(Err(ProduceError::UnknownTopicOrPartition)),
            );
        }
    }

    pub(crate) fn leader_hint(&self) -> Option<NodeId> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(NodeId(id)),
        }
    }

    /// The leader serves once it has applied the first entry of its own term: only then is its
    /// high watermark at least every earlier leader's.
    fn serving_leader(&self) -> Option<&LeaderState> {
        self.leader
            .as_ref()
            .filter(|l| self.applied >= l.term_start)
    }

    pub(crate) fn produce(
        &mut self,
        config: &NodeConfig,
        now: Now,
        id: RequestId,
        request: ProduceRequest,
        sink: &mut Sink,
    ) {
        assert_eq!(request.group, self.group);
        match self.produce_inner(
            config,
            now,
            id,
            request.acks,
            request.batch,
            request.timeout_ms,
        ) {
            Ok(Some(ack)) => sink.reply_produce(request.acks, id, Ok(ack)),
            Ok(None) => {}
            Err(error) => sink.reply_produce(request.acks, id, Err(error)),
        }
    }

    /// Returns an ack to send now, `None` when the answer waits, or the error to send now.
    fn produce_inner(
        &mut self,
        config: &NodeConfig,
        now: Now,
        id: RequestId,
        acks: Acks,
        bytes: Bytes,
        timeout_ms: u32,
    ) -> Result<Option<ProduceAck>, ProduceError> {
        if self.serving_leader().is_none() {
            return Err(ProduceError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        let batch = Batch::parse(bytes, config.batch_bytes_max).map_err(ProduceError::Batch)?;
        let deadline = now.mono.plus_ms(u64::from(timeout_ms));
        let leader = self.leader.as_mut().expect("serving leader");
        let producer = producer_batch(&batch);
        if let Some(producer) = &producer {
            let verdict = if config.planted.skip_sequence_check() {
                Ok(SequenceCheck::Append)
            } else {
                leader.producers.check(producer)
            };
            match verdict {
                Ok(SequenceCheck::Append) => {}
                Ok(SequenceCheck::Duplicate(original)) => {
                    let ack = ProduceAck {
                        base_offset: original.base_offset,
                        log_append_time_ms: -1,
                    };
                    if original.index <= self.applied || acks != Acks::All {
                        return Ok(Some(ack));
                    }
                    self.wait(
                        config,
                        Pending {
                            id,
                            index: original.index,
                            term: original.term,
                            wait: Wait::Applied,
                            ack,
                            deadline,
                        },
                    )?;
                    return Ok(None);
                }
                Err(SequenceError::OutOfOrder { expected, received }) => {
                    return Err(ProduceError::OutOfOrderSequence { expected, received });
                }
                Err(SequenceError::StaleEpoch { .. }) => {
                    return Err(ProduceError::InvalidProducerEpoch)
                }
            }
        }
        if acks != Acks::None && self.pending.len() >= config.pending_requests_max {
            return Err(ProduceError::Backpressure);
        }
        let term = leader.term;
        let base_offset = leader.log_end_offset;
        let batch = batch.stamp(base_offset, term, self.timestamps, now.wall_ms);
        let last_before = self.raw.raft.raft_log.last_index();
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.from = self.node.raft_id();
        let entry = Entry {
            data: batch.bytes().clone(),
            ..Entry::default()
        };
        message.set_entries(vec![entry].into());
        if self.raw.step(message).is_err() {
            // Dropped by raft-rs (leadership transfer, or the uncommitted-size limit).
            return Err(ProduceError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        let index = RaftIndex(self.raw.raft.raft_log.last_index());
        assert_eq!(index.0, last_before + 1, "one proposal, one entry");
        assert_eq!(self.raw.raft.raft_log.term(index.0).ok(), Some(term.0));
        let leader = self.leader.as_mut().expect("still leader after proposing");
        leader.log_end_offset = batch.next_offset();
        if let Some(producer) = &producer {
            leader.producers.record(producer, base_offset, index, term);
        }
        let log_append_time_ms = if self.timestamps == TimestampType::LogAppendTime {
            now.wall_ms
        } else {
            -1
        };
        let ack = ProduceAck {
            base_offset,
            log_append_time_ms,
        };
        let wait = match acks {
            Acks::None => return Ok(None),
            Acks::Leader => Wait::Persisted,
            Acks::All => Wait::Applied,
        };
        self.wait(
            config,
            Pending {
                id,
                index,
                term,
                wait,
                ack,
                deadline,
            },
        )?;
        Ok(None)
    }

    fn wait(&mut self, config: &NodeConfig, pending: Pending) -> Result<(), ProduceError> {
        if self.pending.len() >= config.pending_requests_max {
            return Err(ProduceError::Backpressure);
        }
        self.pending.push_back(pending);
        Ok(())
    }

    pub(crate) fn fetch(
        &self,
        config: &NodeConfig,
        request: &FetchRequest,
    ) -> Result<FetchData, FetchError> {
        assert_eq!(request.group, self.group);
        let Some(leader) = self.serving_leader() else {
            return Err(FetchError::NotLeader {
                leader: self.leader_hint(),
            });
        };
        // Planted bug `fetch-above-hwm`: serve the uncommitted suffix too.
        let (readable_end, last_index) = if config.planted.fetch_above_hwm() {
            (leader.log_end_offset, self.raw.store().last_index())
        } else {
            (self.next_offset, self.applied.0)
        };
        if request.offset < self.log_start_offset || request.offset > readable_end {
            return Err(FetchError::OffsetOutOfRange {
                log_start_offset: self.log_start_offset,
                high_watermark: self.next_offset,
            });
        }
        // Start at the batch holding the offset; Kafka serves whole batches.
        let start = self
            .offset_index
            .range(..=request.offset)
            .next_back()
            .map(|(_, index)| index.0);
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        if let Some(start) = start {
            for index in start..=last_index {
                if bytes >= request.max_bytes as usize {
                    break;
                }
                let entry = self
                    .raw
                    .store()
                    .entry(index)
                    .expect("entries from the log start on are held");
                if let Some(batch) = record_batch(entry) {
                    if batch.next_offset() <= request.offset {
                        continue;
                    }
                    bytes += entry.data.len();
                    batches.push(batch.into_bytes());
                }
            }
        }
        Ok(FetchData {
            high_watermark: self.next_offset,
            log_start_offset: self.log_start_offset,
            batches,
        })
    }

    /// The first committed batch whose largest timestamp is at least `timestamp`. Reads only
    /// batch headers, but walks the batches: a time index is future work.
    pub(crate) fn find_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>, FetchError> {
        if self.serving_leader().is_none() {
            return Err(FetchError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        for index in self.offset_index.values() {
            let entry = self
                .raw
                .store()
                .entry(index.0)
                .expect("indexed batches are held");
            let batch = record_batch(entry).expect("the offset index points at batches");
            if batch.max_timestamp() >= timestamp {
                return Ok(Some(batch.into_bytes()));
            }
        }
        Ok(None)
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
        written
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
        if let Some(index) = last_entry {
            self.persisted = self.persisted.max(index);
        }
        self.resolve_persisted(sink);
    }

    fn resolve_persisted(&mut self, sink: &mut Sink) {
        let persisted = self.persisted;
        let store = self.raw.store();
        let mut keep = VecDeque::with_capacity(self.pending.len());
        for p in self.pending.drain(..) {
            if p.wait != Wait::Persisted || p.index > persisted {
                keep.push_back(p);
                continue;
            }
            let response = if store.term_at(p.index.0) == Some(p.term.0) {
                Ok(p.ack)
            } else {
                Err(ProduceError::NotLeader { leader: None })
            };
            sink.reply(p.id, Response::Produce(response));
        }
        self.pending = keep;
    }

    fn update_leadership(&mut self, sink: &mut Sink) {
        let is_leader = self.raw.raft.state == StateRole::Leader;
        if !is_leader {
            self.leader = None;
            self.snapshot_ticks.clear();
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
        let mut producers = self.producers.clone();
        let mut log_end_offset = self.next_offset;
        let batches_from = if self.command_log {
            last + 1
        } else {
            self.applied.0 + 1
        };
        for index in batches_from..=last {
            let entry = self.raw.store().entry(index).expect("held");
            if let Some(batch) = record_batch(entry) {
                assert_eq!(
                    batch.base_offset(),
                    log_end_offset,
                    "offsets along a log are dense"
                );
                if let Some(p) = producer_batch(&batch) {
                    producers.record(&p, batch.base_offset(), RaftIndex(index), Term(entry.term));
                }
                log_end_offset = batch.next_offset();
            }
        }
        self.leader = Some(LeaderState {
            term,
            term_start: RaftIndex(last),
            log_end_offset,
            producers,
        });
        sink.trace(TraceEvent::BecameLeader {
            group: self.group,
            term,
        });
    }

    fn apply(&mut self, entries: Vec<Entry>, sink: &mut Sink) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied.0 + 1,
                "entries are applied in order, once"
            );
            let mut crc = 0;
            match entry.get_entry_type() {
                EntryType::EntryNormal if self.command_log => {
                    self.commands_applied.push(Applied::Entry(
                        RaftIndex(entry.index),
                        Term(entry.term),
                        entry.data.clone(),
                    ));
                }
                EntryType::EntryNormal => {
                    if let Some(batch) = record_batch(&entry) {
                        // Pair assertion: the leader stamped this offset from the same log.
                        assert_eq!(
                            batch.base_offset(),
                            self.next_offset,
                            "applied batch is not at the log end"
                        );
                        self.offset_index
                            .insert(batch.base_offset(), RaftIndex(entry.index));
                        if let Some(p) = producer_batch(&batch) {
                            self.producers.record(
                                &p,
                                batch.base_offset(),
                                RaftIndex(entry.index),
                                Term(entry.term),
                            );
                        }
                        self.next_offset = batch.next_offset();
                        crc = batch.crc();
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    panic!("configuration changes are never proposed; membership is static");
                }
            }
            self.applied = RaftIndex(entry.index);
            sink.trace(TraceEvent::Applied {
                group: self.group,
                index: self.applied,
                term: Term(entry.term),
                next_offset: self.next_offset,
                crc,
            });
            self.resolve_applied(Term(entry.term), sink);
        }
    }

    fn resolve_applied(&mut self, term: Term, sink: &mut Sink) {
        let applied = self.applied;
        let mut keep = VecDeque::with_capacity(self.pending.len());
        for p in self.pending.drain(..) {
            if p.index != applied {
                keep.push_back(p);
                continue;
            }
            // An entry at the index we proposed at, but from another term: ours was replaced
            // and is definitely not in the log.
            let response = if p.term == term {
                Ok(p.ack)
            } else {
                Err(ProduceError::NotLeader { leader: None })
            };
            sink.reply(p.id, Response::Produce(response));
        }
        self.pending = keep;
    }

    fn install_snapshot(&mut self, snapshot: Snapshot, sink: &mut Sink) {
        let index = RaftIndex(snapshot.get_metadata().index);
        assert!(
            index > self.applied,
            "raft only sends snapshots past what is applied"
        );
        if self.command_log {
            assert!(
                self.group != crate::metadata::METADATA_GROUP,
                "the metadata log is never compacted"
            );
            self.raw.mut_store().apply_snapshot(snapshot.clone());
            self.applied = index;
            self.shadow.index = index;
            self.commands_applied
                .push(Applied::Snapshot(index, snapshot.data.clone()));
            sink.trace(TraceEvent::InstalledSnapshot {
                group: self.group,
                index,
                log_start_offset: Offset(0),
            });
            sink.write(
                WalRecord::Snapshot {
                    group: self.group,
                    snapshot,
                    install: true,
                },
                true,
            );
            return;
        }
        let data =
            SnapshotData::decode(&snapshot.data).expect("snapshot data from a leader decodes");
        self.raw.mut_store().apply_snapshot(snapshot.clone());
        self.applied = index;
        self.next_offset = data.log_start_offset;
        self.log_start_offset = data.log_start_offset;
        self.producers = data.producers.clone();
        self.offset_index.clear();
        self.shadow = Shadow {
            index,
            next_offset: data.log_start_offset,
            producers: data.producers,
        };
        // Entries we waited on were overwritten without our seeing them: the outcome is unknown.
        let mut keep = VecDeque::new();
        for p in self.pending.drain(..) {
            if p.index <= index {
                sink.reply(p.id, Response::Produce(Err(ProduceError::TimedOut)));
            } else {
                keep.push_back(p);
            }
        }
        self.pending = keep;
        sink.trace(TraceEvent::InstalledSnapshot {
            group: self.group,
            index,
            log_start_offset: data.log_start_offset,
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

    fn expire_pending(&mut self, now: Now, sink: &mut Sink) {
        if self.pending.iter().all(|p| p.deadline > now.mono) {
            return;
        }
        let mut keep = VecDeque::with_capacity(self.pending.len());
        for p in self.pending.drain(..) {
            if p.deadline <= now.mono {
                sink.reply(p.id, Response::Produce(Err(ProduceError::TimedOut)));
            } else {
                keep.push_back(p);
            }
        }
        self.pending = keep;
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

    /// Retention by entry count: keep the last `retain_entries_max` applied entries and compact
    /// the rest into a snapshot carrying the partition metadata at that point.
    fn compact(&mut self, config: &NodeConfig, sink: &mut Sink) {
        let first = self.raw.store().first_index();
        let applied = self.applied.0;
        // Command logs are compacted by `Node`, which has their state (`compact_commands`);
        // the metadata log not at all yet: it grows by one entry per admin change.
        if self.command_log
            || applied < first
            || applied - first < config.retain_entries_max + config.retain_entries_max / 2
        {
            return;
        }
        let target = applied - config.retain_entries_max;
        assert!(
            target >= first && target < applied,
            "compaction keeps the newest entries"
        );
        assert!(
            self.raw.raft.raft_log.persisted >= target,
            "only persisted entries are compacted"
        );
        for index in self.shadow.index.0 + 1..=target {
            let entry = self.raw.store().entry(index).expect("held");
            if let Some(batch) = record_batch(entry) {
                assert_eq!(batch.base_offset(), self.shadow.next_offset);
                if let Some(p) = producer_batch(&batch) {
                    self.shadow.producers.record(
                        &p,
                        batch.base_offset(),
                        RaftIndex(index),
                        Term(entry.term),
                    );
                }
                self.shadow.next_offset = batch.next_offset();
            }
        }
        self.shadow.index = RaftIndex(target);
        let data = SnapshotData {
            log_start_offset: self.shadow.next_offset,
            producers: self.shadow.producers.clone(),
        };
        self.compact_to(target, data.encode().into(), sink);
        self.log_start_offset = self.shadow.next_offset;
        self.offset_index = self.offset_index.split_off(&self.log_start_offset);
    }

    /// Drops the entries up to `target` (applied and persisted) behind a snapshot of `data`,
    /// and hands the snapshot to the disk.
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
            false,
        );
    }

    pub(crate) fn group(&self) -> GroupId {
        self.group
    }

    pub(crate) fn status(&self) -> crate::node::GroupStatus {
        crate::node::GroupStatus {
            leader: self.leader_hint(),
            term: Term(self.raw.raft.term),
            serving: self.serving_leader().is_some(),
            high_watermark: self.next_offset,
            log_start_offset: self.log_start_offset,
        }
    }

    /// Linear-time invariants (the whole log, every producer).
    pub(crate) fn invariants_full(&self) {
        self.raw.store().invariants_full();
        self.producers.invariants();
        if let Some(leader) = &self.leader {
            leader.producers.invariants();
        }
    }

    /// Constant-time invariants, checked after every input that touches the group.
    pub(crate) fn invariants(&self) {
        self.raw.store().invariants();
        assert!(self.log_start_offset <= self.next_offset);
        assert!(self.applied.0 <= self.raw.raft.raft_log.committed);
        assert!(self.shadow.index.0 + 1 == self.raw.store().first_index());
        assert_eq!(self.shadow.next_offset, self.log_start_offset);
        if let Some(leader) = &self.leader {
            assert!(leader.log_end_offset >= self.next_offset);
            assert_eq!(self.raw.raft.state, StateRole::Leader);
        }
        if let Some((offset, index)) = self.offset_index.first_key_value() {
            assert!(*offset >= self.log_start_offset && index.0 >= self.raw.store().first_index());
        }
        if let Some(leader) = &self.leader {
            // A waiting acks=all or acks=1 produce on the leader is for an entry of its log.
            for p in self.pending.iter().filter(|p| p.term == leader.term) {
                assert!(p.index.0 <= self.raw.raft.raft_log.last_index());
            }
        }
    }
}

fn record_batch(entry: &Entry) -> Option<Batch> {
    if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
        Some(Batch::trusted(entry.data.clone()))
    } else {
        None
    }
}

fn producer_batch(batch: &Batch) -> Option<ProducerBatch> {
    let producer_id: ProducerId = batch.producer_id();
    (producer_id.0 >= 0).then(|| ProducerBatch {
        producer_id,
        epoch: batch.producer_epoch(),
        first_sequence: batch.base_sequence(),
        count: batch.record_count(),
    })
}

impl crate::coordinator::CommandLog for Replica {
    fn serving(&self) -> Option<Term> {
        self.serving_term()
    }

    fn propose(&mut self, data: Bytes) -> Option<(RaftIndex, Term)> {
        self.propose_command(data).ok()
    }
}
