//! The produce path of a record-batch partition: the leader's view of its whole log (log end
//! offset, producer table with the uncommitted suffix), from which it checks idempotence,
//! stamps and proposes batches; and the produce requests waiting for an answer (acks=1 until
//! the leader's write is done, acks=all until the entry is applied, each until its deadline).
//!
//! Every entry of an idempotent producer's batch carries the leader's [`AppendTime`] in the
//! entry's context (its wall clock, never below its log's latest, and its producer expiration),
//! the only time the producer table goes by (see `crate::producer`).

use std::collections::VecDeque;

use bytes::Bytes;
use raft::eraftpb::{Entry, Message, MessageType};

use super::Replica;
use crate::batch::{Batch, TimestampType};
use crate::codec::{Reader, Writer};
use crate::ids::{Offset, ProducerId, RaftIndex, RequestId, Term};
use crate::io::{Acks, FetchError, ProduceAck, ProduceError, ProduceRequest, Response, TraceEvent};
use crate::log_store::LogStore;
use crate::node::{NodeConfig, Sink};
use crate::producer::{
    ActiveProducer, AppendTime, ProducerBatch, ProducerTable, SequenceCheck, SequenceError,
};
use crate::time::{Instant, Now};

/// What the leader knows beyond the applied state: its whole log, including the uncommitted
/// suffix, which it never truncates while it leads. (Its term is the replica's `Leadership`.)
#[derive(Debug)]
pub(super) struct LeaderState {
    /// Offset after the last record in the leader's log.
    pub(super) log_end_offset: Offset,
    /// The producer table with every batch in the leader's log applied.
    pub(super) producers: ProducerTable,
    /// Whether the table is full: the last producer id it did not know was refused, and no
    /// append has found it below the limit since. Only changes are traced (and logged by the
    /// runtime), not every refusal.
    pub(super) refusing_producers: bool,
}

impl Replica {
    /// The producers the applied producer table remembers, from the serving leader only
    /// (DescribeProducers; Kafka answers from the leader's producer state too).
    pub(crate) fn describe_producers(&self) -> Result<Vec<ActiveProducer>, FetchError> {
        if self.serving_leader().is_none() {
            return Err(FetchError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        Ok(self.kind.records().producers().active().collect())
    }
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

/// The produce path's state: the leader's view, and the requests waiting for an answer.
pub(super) struct ProduceState {
    /// How the leader stamps record timestamps.
    timestamps: TimestampType,
    /// The leader's view of its log, while this node leads.
    pub(super) leader: Option<LeaderState>,
    /// The last entry whose write is done here.
    persisted: RaftIndex,
    pending: VecDeque<Pending>,
}

impl ProduceState {
    /// Nothing waiting; the entries up to `persisted` are on the disk.
    pub(super) fn new(timestamps: TimestampType, persisted: RaftIndex) -> Self {
        Self {
            timestamps,
            leader: None,
            persisted,
            pending: VecDeque::new(),
        }
    }

    /// How the leader stamps record timestamps.
    pub(super) fn timestamps(&self) -> TimestampType {
        self.timestamps
    }

    /// No produce request waits for an answer.
    pub(super) fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    fn wait(&mut self, config: &NodeConfig, pending: Pending) -> Result<(), ProduceError> {
        if self.pending.len() >= config.pending_requests_max {
            return Err(ProduceError::Backpressure);
        }
        self.pending.push_back(pending);
        Ok(())
    }

    /// The group is being removed: answer every waiting produce.
    fn fail_pending(&mut self, sink: &mut Sink) {
        for p in self.pending.drain(..) {
            sink.reply(
                p.id,
                Response::Produce(Err(ProduceError::UnknownTopicOrPartition)),
            );
        }
    }

    /// The entry at `applied`, of `term`, is applied: answer the requests waiting on it.
    pub(super) fn resolve_applied(&mut self, applied: RaftIndex, term: Term, sink: &mut Sink) {
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

    /// A write is done; it held entries up to `last_entry`, if any. Answers the acks=1
    /// requests whose entries are now persisted.
    pub(super) fn on_persisted(
        &mut self,
        last_entry: Option<RaftIndex>,
        store: &LogStore,
        sink: &mut Sink,
    ) {
        if let Some(index) = last_entry {
            self.persisted = self.persisted.max(index);
        }
        self.resolve_persisted(store, sink);
    }

    fn resolve_persisted(&mut self, store: &LogStore, sink: &mut Sink) {
        let persisted = self.persisted;
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

    /// A snapshot up to `index` was installed.
    pub(super) fn fail_overwritten(&mut self, index: RaftIndex, sink: &mut Sink) {
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
    }

    pub(super) fn expire_pending(&mut self, now: Now, sink: &mut Sink) {
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

    /// Linear-time invariants (every producer).
    pub(super) fn invariants_full(&self) {
        if let Some(leader) = &self.leader {
            leader.producers.invariants();
        }
    }

    /// Constant-time invariants. `leading`: the term this node leads in, if it does;
    /// `last_index`: the last index of raft-rs's log; `next_offset`: the applied state's.
    pub(super) fn invariants(&self, leading: Option<Term>, last_index: u64, next_offset: Offset) {
        assert_eq!(
            self.leader.is_some(),
            leading.is_some(),
            "a leader, and only a leader, has a view of its log"
        );
        if let Some(leader) = &self.leader {
            assert!(leader.log_end_offset >= next_offset);
        }
        if let Some(term) = leading {
            // A waiting acks=all or acks=1 produce on the leader is for an entry of its log.
            for p in self.pending.iter().filter(|p| p.term == term) {
                assert!(p.index.0 <= last_index);
            }
        }
    }
}

impl Replica {
    /// Handles a produce request. `verified`: for a transactional batch, the start of the
    /// transaction its coordinator says the producer added this partition to (KIP-890's
    /// verification, done by `Node` before), which a batch not continuing a transaction open
    /// here needs.
    pub(crate) fn produce(
        &mut self,
        config: &NodeConfig,
        now: Now,
        id: RequestId,
        (request, verified): (ProduceRequest, Option<i64>),
        sink: &mut Sink,
    ) {
        assert_eq!(request.group, self.group);
        assert!(
            !self.is_command_log(),
            "produce requests go to record-batch partitions only"
        );
        let acks = request.acks;
        match self.produce_inner(config, now, id, (request, verified), sink) {
            Ok(Some(ack)) => sink.reply_produce(acks, id, Ok(ack)),
            Ok(None) => {}
            Err(error) => sink.reply_produce(acks, id, Err(error)),
        }
    }

    /// Returns an ack to send now, `None` when the answer waits, or the error to send now.
    fn produce_inner(
        &mut self,
        config: &NodeConfig,
        now: Now,
        id: RequestId,
        (request, verified): (ProduceRequest, Option<i64>),
        sink: &mut Sink,
    ) -> Result<Option<ProduceAck>, ProduceError> {
        let ProduceRequest {
            acks,
            batch: bytes,
            timeout_ms,
            ..
        } = request;
        let Some(term) = self.serving_term() else {
            return Err(ProduceError::NotLeader {
                leader: self.leader_hint(),
            });
        };
        // A compacted topic keeps the latest record per key: records need keys (Kafka's
        // `LogValidator.validateKey`). Only then does the walk look at keys.
        let require_keys = self.kind.records().cleanup.compact;
        let batch = Batch::parse(
            bytes,
            config.batch_bytes_max,
            config.batch_decompressed_bytes_max,
            require_keys,
        )
        .map_err(ProduceError::Batch)?;
        let deadline = now.mono.plus_ms(u64::from(timeout_ms));
        let applied = self.applied;
        let log_start_offset = self.kind.records().log_start_offset();
        let produce = &mut self.kind.records_mut().produce;
        let leader = produce.leader.as_mut().expect("serving leader");
        // A transactional batch continues the producer's transaction open here, or begins
        // the one its coordinator verified (KIP-890); anything else could never see its
        // marker (INVALID_TXN_STATE).
        let txn_start_ms = if batch.is_transactional() {
            let open = leader
                .producers
                .open_transaction(batch.producer_id(), batch.producer_epoch());
            match open.or(verified) {
                Some(start) => Some(start),
                None => return Err(ProduceError::InvalidTxnState),
            }
        } else {
            None
        };
        let producer = producer_batch(&batch, txn_start_ms);
        // The time the entry will carry, and every replica's table will go by.
        let at = leader
            .producers
            .next_append_time(now.wall_ms, config.producer_expiration_ms);
        if let Some(producer) = &producer {
            let verdict = match leader.producers.check(producer, &at, config.producers_max) {
                _ if config.planted.skip_sequence_check() => Ok(SequenceCheck::Append),
                // Planted bug `accept-fenced-epoch`.
                Err(SequenceError::StaleEpoch { .. }) if config.planted.accept_fenced_epoch() => {
                    Ok(SequenceCheck::Append)
                }
                verdict => verdict,
            };
            match verdict {
                Ok(SequenceCheck::Append) => {}
                Ok(SequenceCheck::Duplicate(original)) => {
                    let ack = ProduceAck {
                        base_offset: original.base_offset,
                        log_append_time_ms: -1,
                        log_start_offset,
                    };
                    if original.index <= applied || acks != Acks::All {
                        return Ok(Some(ack));
                    }
                    produce.wait(
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
                Err(SequenceError::TableFull { producers, limit }) => {
                    if !leader.refusing_producers {
                        leader.refusing_producers = true;
                        sink.trace(TraceEvent::ProducerTableFull {
                            group: self.group,
                            producers: producers as u64,
                            limit: limit as u64,
                        });
                    }
                    return Err(ProduceError::TooManyProducers);
                }
            }
        }
        if acks != Acks::None && produce.pending.len() >= config.pending_requests_max {
            return Err(ProduceError::Backpressure);
        }
        let base_offset = leader.log_end_offset;
        let timestamps = produce.timestamps;
        let batch = batch.stamp(base_offset, term, timestamps, now.wall_ms);
        // Only batches of idempotent producers carry the time: the table changes with them
        // alone, and plain batches stay as small as they were.
        let entry = Entry {
            data: batch.bytes().clone(),
            context: producer
                .as_ref()
                .map_or_else(Bytes::new, |_| encode_context(&at, txn_start_ms)),
            ..Entry::default()
        };
        let index = self.propose_batch(entry, term)?;
        let produce = &mut self.kind.records_mut().produce;
        let leader = produce
            .leader
            .as_mut()
            .expect("still leader after proposing");
        leader.log_end_offset = batch.next_offset();
        // As applying the entry will (`records::record_producer`).
        if let Some(producer) = &producer {
            leader.producers.advance(&at);
            leader.producers.record(producer, base_offset, index, term);
        }
        if leader.refusing_producers && leader.producers.len() < config.producers_max {
            leader.refusing_producers = false;
            sink.trace(TraceEvent::ProducerTableHasRoom {
                group: self.group,
                producers: leader.producers.len() as u64,
                limit: config.producers_max as u64,
            });
        }
        let log_append_time_ms = if timestamps == TimestampType::LogAppendTime {
            now.wall_ms
        } else {
            -1
        };
        let ack = ProduceAck {
            base_offset,
            log_append_time_ms,
            log_start_offset,
        };
        let wait = match acks {
            Acks::None => return Ok(None),
            Acks::Leader => Wait::Persisted,
            Acks::All => Wait::Applied,
        };
        produce.wait(
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

    /// Proposes one batch entry in `term`, the leader's: its index.
    pub(super) fn propose_batch(
        &mut self,
        entry: Entry,
        term: Term,
    ) -> Result<RaftIndex, ProduceError> {
        let last_before = self.raw.raft.raft_log.last_index();
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.from = self.node.raft_id().0;
        message.set_entries(vec![entry].into());
        self.wake();
        if self.raw.step(message).is_err() {
            // Dropped by raft-rs: a leadership transfer under way, or the uncommitted-size
            // limit. The latter is backpressure, not a lost leadership: answering
            // NOT_LEADER_OR_FOLLOWER would send the client to refresh its metadata and come
            // straight back.
            if self.raw.raft.state == raft::StateRole::Leader
                && self.raw.raft.lead_transferee.is_none()
            {
                return Err(ProduceError::Backpressure);
            }
            return Err(ProduceError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        let index = RaftIndex(self.raw.raft.raft_log.last_index());
        assert_eq!(index.0, last_before + 1, "one proposal, one entry");
        assert_eq!(self.raw.raft.raft_log.term(index.0).ok(), Some(term.0));
        Ok(index)
    }

    /// The group is being removed: answer every waiting produce. (A command log has none:
    /// `Node` drops its coordinator's waiting answers.)
    pub(crate) fn fail_pending(&mut self, sink: &mut Sink) {
        if let super::Kind::Records(records) = &mut self.kind {
            records.produce.fail_pending(sink);
            records.log_start_waits.fail_all(sink);
        }
    }
}

/// The first byte of a batch entry's context: the leader's [`AppendTime`] follows. (A command
/// entry, which has no data, has its command there: `log_start`.)
const APPEND_TIME: u8 = 2;
/// The first byte of a transactional batch entry's context, a marker's included: the leader's
/// [`AppendTime`], then the transaction's start on its coordinator (what names it).
const TXN_APPEND_TIME: u8 = 3;

/// A batch entry's context: the leader's append time, and for a transactional batch its
/// transaction's start.
pub(super) fn encode_context(at: &AppendTime, txn_start_ms: Option<i64>) -> Bytes {
    let mut w = Writer::default();
    match txn_start_ms {
        None => {
            w.u8(APPEND_TIME);
            at.encode(&mut w);
        }
        Some(start) => {
            w.u8(TXN_APPEND_TIME);
            at.encode(&mut w);
            w.i64(start);
        }
    }
    Bytes::from(w.bytes)
}

/// What a batch entry's context holds: the append time, and a transactional batch's
/// transaction start; `None` for an entry written before the leader stamped one.
pub(super) fn entry_context(entry: &Entry) -> Option<(AppendTime, Option<i64>)> {
    if entry.context.is_empty() {
        return None;
    }
    let decode = || {
        let mut r = Reader::new(&entry.context);
        let tag = r.u8()?;
        let at = AppendTime::decode(&mut r)?;
        let start = match tag {
            APPEND_TIME => None,
            TXN_APPEND_TIME => Some(r.i64()?),
            _ => return Err(crate::codec::DecodeError("unknown batch entry context")),
        };
        r.finish()?;
        Ok((at, start))
    };
    Some(decode().expect("batch entry contexts come from our leaders"))
}

/// The idempotent-producer fields of a batch, with its transaction's start if it is
/// transactional; `None` for a batch without a producer id, or a marker.
pub(super) fn producer_batch(batch: &Batch, txn_start_ms: Option<i64>) -> Option<ProducerBatch> {
    let producer_id: ProducerId = batch.producer_id();
    (producer_id.0 >= 0 && !batch.is_control()).then(|| ProducerBatch {
        producer_id,
        epoch: batch.producer_epoch(),
        first_sequence: batch.base_sequence(),
        // Its offsets, not its records: a cleaned batch holds fewer records, but its sequences
        // still span every offset (Kafka's cleaner keeps the last offset delta for this).
        count: batch.last_offset_delta() + 1,
        transactional: batch.is_transactional(),
        txn_start_ms: txn_start_ms.filter(|_| batch.is_transactional()),
    })
}
