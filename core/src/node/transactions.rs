//! Transactions across a node's groups and its peers: KIP-890's verification of a transactional
//! batch (or a transactional offset commit) with its coordinator before the partition's leader
//! appends it, and the markers a transaction coordinator has written to every partition of an
//! ended transaction (Kafka's WriteTxnMarkers), each from whichever node leads the partition: a
//! data partition's marker is a control batch, a `__consumer_offsets` partition's a command of
//! its group coordinator.
//!
//! Both go between nodes as peer messages to [`TXN_GROUP`] (not a Raft group), whose context
//! is one [`TxnMessage`]. A lost message is a lost request: a verification times out with the
//! produce request that waits on it, and a marker is sent again by its coordinator
//! (`txn::MARKER_RETRY_MS`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::{Hosted, Node, Sink};
use crate::batch::{Batch, Marker};
use crate::codec::{DecodeError, Reader, Writer};
use crate::coordinator::{GroupError, GroupOp, GroupResponse, TxnOffsetCommit, OFFSETS_TOPIC};
use crate::ids::{GroupId, NodeId, ProducerEpoch, ProducerId, RequestId, Term};
use crate::io::{ProduceError, ProduceRequest, Response};
use crate::metadata::MetadataState;
use crate::partition::{MarkerOutcome, MarkerWrite};
use crate::time::{Instant, Now};
use crate::txn::{partition_for, MarkerJob, TxnError, TRANSACTION_STATE_TOPIC};

/// Not a Raft group: peer messages addressed to it carry a [`TxnMessage`].
pub const TXN_GROUP: GroupId = GroupId(u64::MAX - 2);

/// Most markers one coordinator partition sends per tick.
const MARKERS_PER_TICK: usize = 1_000;

/// How long a transactional offset commit waits for its verification (as long as the group
/// coordinator's answers wait for their entries).
const OFFSETS_VERIFY_MS: u64 = 5_000;

/// A verification not answered for this long is asked again, of whichever node leads the
/// coordinator's partition now (the question, or its answer, may have been lost with a
/// leader), until its requests' deadline.
const VERIFY_AGAIN_MS: u64 = 1_000;

/// What nodes tell each other about transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TxnMessage {
    /// A partition's leader asks the coordinator of `transactional_id` whether the producer
    /// added the partition to its open transaction.
    Verify {
        /// The asking node's token for the answer.
        token: u64,
        /// The coordinator's partition (Raft group).
        coordinator: GroupId,
        transactional_id: String,
        producer: (ProducerId, ProducerEpoch),
        partition: (String, i32),
    },
    /// The coordinator's answer: the transaction's start, or why not.
    Verified {
        token: u64,
        result: Result<i64, TxnError>,
    },
    /// A coordinator asks a partition's leader to write a marker.
    WriteMarker(MarkerWrite),
    /// The partition's leader wrote it (or found nothing of the transaction open).
    MarkerWritten(MarkerWrite),
}

const VERIFY: u8 = 1;
const VERIFIED: u8 = 2;
const WRITE_MARKER: u8 = 3;
const MARKER_WRITTEN: u8 = 4;

fn string(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
}

fn encode_write(w: &mut Writer, write: &MarkerWrite) {
    w.u64(write.coordinator.0);
    w.bytes(write.transactional_id.as_bytes());
    w.u64(write.group.0);
    w.i64(write.marker.producer_id.0);
    w.i16(write.marker.epoch.0);
    w.u8(u8::from(write.marker.commit));
    w.i32(write.marker.coordinator_epoch);
    w.i64(write.txn_start_ms);
    w.bytes(write.partition.0.as_bytes());
    w.i32(write.partition.1);
}

fn decode_write(r: &mut Reader<'_>) -> Result<MarkerWrite, DecodeError> {
    let coordinator = GroupId(r.u64()?);
    let transactional_id = string(r)?;
    let group = GroupId(r.u64()?);
    let marker = Marker {
        producer_id: ProducerId(r.i64()?),
        epoch: ProducerEpoch(r.i16()?),
        commit: match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError("bad marker type")),
        },
        coordinator_epoch: r.i32()?,
    };
    if marker.producer_id.0 < 0 || marker.epoch.0 < 0 {
        return Err(DecodeError("a marker without a producer"));
    }
    let txn_start_ms = r.i64()?;
    let partition = (string(r)?, r.i32()?);
    Ok(MarkerWrite {
        coordinator,
        transactional_id,
        group,
        partition,
        marker,
        txn_start_ms,
    })
}

impl TxnMessage {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Self::Verify {
                token,
                coordinator,
                transactional_id,
                producer,
                partition,
            } => {
                w.u8(VERIFY);
                w.u64(*token);
                w.u64(coordinator.0);
                w.bytes(transactional_id.as_bytes());
                w.i64(producer.0 .0);
                w.i16(producer.1 .0);
                w.bytes(partition.0.as_bytes());
                w.i32(partition.1);
            }
            Self::Verified { token, result } => {
                w.u8(VERIFIED);
                w.u64(*token);
                match result {
                    Ok(start) => {
                        w.u8(0);
                        w.i64(*start);
                    }
                    Err(error) => {
                        w.u8(1);
                        w.i16(error.kafka_code());
                    }
                }
            }
            Self::WriteMarker(write) => {
                w.u8(WRITE_MARKER);
                encode_write(&mut w, write);
            }
            Self::MarkerWritten(write) => {
                w.u8(MARKER_WRITTEN);
                encode_write(&mut w, write);
            }
        }
        w.bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let message = match r.u8()? {
            VERIFY => Self::Verify {
                token: r.u64()?,
                coordinator: GroupId(r.u64()?),
                transactional_id: string(&mut r)?,
                producer: (ProducerId(r.i64()?), ProducerEpoch(r.i16()?)),
                partition: (string(&mut r)?, r.i32()?),
            },
            VERIFIED => Self::Verified {
                token: r.u64()?,
                result: match r.u8()? {
                    0 => Ok(r.i64()?),
                    1 => Err(TxnError::from_kafka_code(r.i16()?)),
                    _ => return Err(DecodeError("bad verification result")),
                },
            },
            WRITE_MARKER => Self::WriteMarker(decode_write(&mut r)?),
            MARKER_WRITTEN => Self::MarkerWritten(decode_write(&mut r)?),
            _ => return Err(DecodeError("unknown transaction message")),
        };
        r.finish()?;
        Ok(message)
    }
}

/// A request waiting for its producer's verification.
#[derive(Debug)]
enum Waiter {
    /// A produce request, for a data partition.
    Produce(ProduceRequest),
    /// A transactional offset commit, for a group coordinator.
    Offsets(TxnOffsetCommit),
}

impl Waiter {
    /// Answers the request with `error` (a produce request with `ProduceError::TxnVerification`
    /// and the like, an offset commit with `GroupError::Txn`).
    fn fail(self, id: RequestId, produce: ProduceError, offsets: GroupError, sink: &mut Sink) {
        match self {
            Self::Produce(request) => sink.reply_produce(request.acks, id, Err(produce)),
            Self::Offsets(_) => sink.reply(
                id,
                Response::Group(GroupResponse::TxnOffsetCommit(Err(offsets))),
            ),
        }
    }
}

/// Requests of one producer on one partition waiting for its verification.
#[derive(Debug)]
struct Verifying {
    group: GroupId,
    producer: ProducerId,
    /// The term the partition's leader served when it asked: an answer in another term is
    /// not for this leadership.
    term: Option<Term>,
    /// In arrival order: handed to the partition in that order.
    waiting: VecDeque<(RequestId, Waiter)>,
    deadline: Instant,
    /// The coordinator's partition (Raft group) asked, and the question (a
    /// [`TxnMessage::Verify`]), asked again after [`VERIFY_AGAIN_MS`].
    ask: (GroupId, TxnMessage),
    /// When it was last asked.
    asked_at: Instant,
}

/// A node's transactions in flight between its groups and its peers.
#[derive(Debug, Default)]
pub(crate) struct NodeTxns {
    /// Verifications asked, by token.
    verifying: BTreeMap<u64, Verifying>,
    /// The token of each (partition, producer) being verified.
    by_producer: BTreeMap<(GroupId, ProducerId), u64>,
    next_token: u64,
    /// Requests waiting, across verifications.
    waiting: usize,
}

impl NodeTxns {
    /// Requests waiting for their verification.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// The verification of `token`, no longer waited on.
    fn take(&mut self, token: u64) -> Option<Verifying> {
        let verifying = self.verifying.remove(&token)?;
        self.by_producer
            .remove(&(verifying.group, verifying.producer));
        self.waiting -= verifying.waiting.len();
        Some(verifying)
    }

    pub(crate) fn invariants(&self) {
        assert_eq!(self.verifying.len(), self.by_producer.len());
        let waiting: usize = self.verifying.values().map(|v| v.waiting.len()).sum();
        assert_eq!(waiting, self.waiting);
        for (token, v) in &self.verifying {
            assert_eq!(self.by_producer.get(&(v.group, v.producer)), Some(token));
            assert!(!v.waiting.is_empty());
        }
    }
}

/// The (topic, partition) of a partition's Raft group (a walk over the topics: once per
/// transaction and partition).
fn partition_of(metadata: &MetadataState, group: GroupId) -> Option<(String, i32)> {
    metadata.topics().values().find_map(|topic| {
        let index = topic.partitions.iter().position(|p| p.group == group)?;
        Some((topic.name.clone(), index as i32))
    })
}

/// The coordinator partition of a transactional id.
fn coordinator_of(metadata: &MetadataState, transactional_id: &str) -> Option<GroupId> {
    let topic = metadata.topic(TRANSACTION_STATE_TOPIC)?;
    Some(topic.partitions[partition_for(transactional_id, topic.partitions.len())].group)
}

impl Node {
    /// A produce request: a transactional batch that begins its transaction on the partition
    /// waits for its coordinator's verification; everything else goes to the partition.
    pub(super) fn produce(
        &mut self,
        now: Now,
        id: RequestId,
        request: ProduceRequest,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        let group = request.group;
        let Some(replica) = self.groups.get_mut(&group).filter(|r| !r.is_command_log()) else {
            return sink.reply_produce(
                request.acks,
                id,
                Err(ProduceError::UnknownTopicOrPartition),
            );
        };
        touched.insert(group);
        let Some((producer, epoch)) = Batch::peek_transactional(&request.batch) else {
            return replica.produce(&self.config, now, id, (request, None), sink);
        };
        let queued = self.txns.by_producer.contains_key(&(group, producer));
        if !queued && !replica.needs_verification(producer, epoch) {
            // Continues the transaction open here, or the partition refuses it anyway.
            return replica.produce(&self.config, now, id, (request, None), sink);
        }
        let Some(transactional_id) = request.transactional_id.clone() else {
            return sink.reply_produce(request.acks, id, Err(ProduceError::InvalidTxnState));
        };
        let timeout_ms = u64::from(request.timeout_ms);
        let waiter = (id, Waiter::Produce(request));
        self.verify(
            now,
            (group, transactional_id, (producer, epoch)),
            waiter,
            timeout_ms,
            sink,
            touched,
        );
    }

    /// A transactional offset commit for a group coordinator this node hosts: verified with
    /// the producer's transaction coordinator first (the offsets partition must be in its open
    /// transaction: AddOffsetsToTxn), which names the transaction its marker will end.
    pub(super) fn txn_offset_commit(
        &mut self,
        now: Now,
        id: RequestId,
        group: GroupId,
        commit: TxnOffsetCommit,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        let serving = self.groups.get(&group).and_then(|r| r.serving_term());
        if serving.is_none() || !matches!(self.coordinators.get(&group), Some(Hosted::Group(_))) {
            let answer = GroupResponse::TxnOffsetCommit(Err(GroupError::NotCoordinator));
            return sink.reply(id, Response::Group(answer));
        }
        let key = (group, commit.transactional_id.clone(), commit.producer);
        let waiter = (id, Waiter::Offsets(commit));
        self.verify(now, key, waiter, OFFSETS_VERIFY_MS, sink, touched);
    }

    /// Asks the coordinator of `transactional_id` whether `producer` added the partition of
    /// `group` to its open transaction; `waiter` waits for the answer, behind the producer's
    /// earlier requests on the partition if a verification is under way already.
    fn verify(
        &mut self,
        now: Now,
        (group, transactional_id, (producer, epoch)): (
            GroupId,
            String,
            (ProducerId, ProducerEpoch),
        ),
        (id, waiter): (RequestId, Waiter),
        timeout_ms: u64,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        if self.txns.waiting >= self.config.pending_requests_max {
            let full = GroupError::CoordinatorNotAvailable;
            return waiter.fail(id, ProduceError::Backpressure, full, sink);
        }
        if let Some(token) = self.txns.by_producer.get(&(group, producer)) {
            let verifying = self.txns.verifying.get_mut(token).expect("indexed");
            verifying.waiting.push_back((id, waiter));
            self.txns.waiting += 1;
            return;
        }
        let metadata = self.metadata.as_ref();
        let coordinator = metadata.and_then(|m| coordinator_of(m, &transactional_id));
        let partition = metadata.and_then(|m| partition_of(m, group));
        let (Some(coordinator), Some(partition)) = (coordinator, partition) else {
            let error = TxnError::CoordinatorNotAvailable;
            return waiter.fail(
                id,
                ProduceError::TxnVerification(error),
                GroupError::Txn(error),
                sink,
            );
        };
        let token = self.txns.next_token;
        self.txns.next_token += 1;
        let term = self.groups.get(&group).and_then(|r| r.serving_term());
        let verify = TxnMessage::Verify {
            token,
            coordinator,
            transactional_id,
            producer: (producer, epoch),
            partition,
        };
        self.txns.verifying.insert(
            token,
            Verifying {
                group,
                producer,
                term,
                waiting: VecDeque::from([(id, waiter)]),
                deadline: now.mono.plus_ms(timeout_ms),
                ask: (coordinator, verify.clone()),
                asked_at: now.mono,
            },
        );
        self.txns.by_producer.insert((group, producer), token);
        self.txns.waiting += 1;
        if !self.hand_to_leader(coordinator, verify, now, sink, touched) {
            let answer = TxnMessage::Verified {
                token,
                result: Err(TxnError::NotCoordinator),
            };
            let me = self.config.node_id;
            self.on_txn_message(me, answer, now, sink, touched);
        }
    }

    /// Hands `message` to the leader of `group` (this node's own, or a peer); false when no
    /// leader is known.
    fn hand_to_leader(
        &mut self,
        group: GroupId,
        message: TxnMessage,
        now: Now,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) -> bool {
        let me = self.config.node_id;
        match self.leader(group) {
            Some((leader, _)) if leader == me => {
                self.on_txn_message(me, message, now, sink, touched)
            }
            Some((leader, _)) => self.send_txn(leader, &message, sink),
            None => return false,
        }
        true
    }

    fn send_txn(&self, to: NodeId, message: &TxnMessage, sink: &mut Sink) {
        let message = raft::eraftpb::Message {
            from: self.config.node_id.raft_id().0,
            to: to.raft_id().0,
            context: Bytes::from(message.encode()),
            ..Default::default()
        };
        sink.send(TXN_GROUP, message);
    }

    /// A peer's message to [`TXN_GROUP`]; one that does not decode is dropped, as the network
    /// could have.
    pub(super) fn on_txn_peer_message(
        &mut self,
        from: NodeId,
        context: &[u8],
        now: Now,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        match TxnMessage::decode(context) {
            Ok(message) => self.on_txn_message(from, message, now, sink, touched),
            Err(error) => {
                slog::warn!(self.logger, "dropped a transaction message that does not decode";
                "from" => from.0, "why" => error.0)
            }
        }
    }

    /// A transaction message from `from` (this node itself for what it asks itself).
    fn on_txn_message(
        &mut self,
        from: NodeId,
        message: TxnMessage,
        now: Now,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        let me = self.config.node_id;
        match message {
            TxnMessage::Verify {
                token,
                coordinator,
                transactional_id,
                producer,
                partition,
            } => {
                let serving = self
                    .groups
                    .get(&coordinator)
                    .is_some_and(|r| r.serving_term().is_some());
                let result = match self.coordinators.get(&coordinator).and_then(Hosted::txn) {
                    Some(c) if serving => c.verify(&transactional_id, producer, &partition),
                    _ => Err(TxnError::NotCoordinator),
                };
                let answer = TxnMessage::Verified { token, result };
                if from == me {
                    self.on_txn_message(me, answer, now, sink, touched);
                } else {
                    self.send_txn(from, &answer, sink);
                }
            }
            TxnMessage::Verified { token, result } => {
                let Some(verifying) = self.txns.take(token) else {
                    return; // timed out meanwhile
                };
                let group = verifying.group;
                let same_term =
                    self.groups.get(&group).and_then(|r| r.serving_term()) == verifying.term;
                let result = match result {
                    Ok(_) if !same_term => Err(TxnError::NotCoordinator),
                    result => result,
                };
                let (Some(replica), Ok(start)) = (self.groups.get_mut(&group), result) else {
                    let (produce, offsets) = match result {
                        Err(error) => {
                            (ProduceError::TxnVerification(error), GroupError::Txn(error))
                        }
                        Ok(_) => (
                            ProduceError::UnknownTopicOrPartition,
                            GroupError::NotCoordinator,
                        ),
                    };
                    for (id, waiter) in verifying.waiting {
                        waiter.fail(id, produce.clone(), offsets.clone(), sink);
                    }
                    return;
                };
                touched.insert(group);
                for (id, waiter) in verifying.waiting {
                    match waiter {
                        Waiter::Produce(request) => {
                            replica.produce(&self.config, now, id, (request, Some(start)), sink)
                        }
                        Waiter::Offsets(mut commit) => {
                            commit.txn_start_ms = Some(start);
                            match self.coordinators.get_mut(&group) {
                                Some(Hosted::Group(c)) => c.handle(
                                    replica,
                                    now,
                                    id,
                                    GroupOp::TxnOffsetCommit(commit),
                                    sink,
                                ),
                                _ => Waiter::Offsets(commit).fail(
                                    id,
                                    ProduceError::UnknownTopicOrPartition,
                                    GroupError::NotCoordinator,
                                    sink,
                                ),
                            }
                        }
                    }
                }
            }
            TxnMessage::WriteMarker(write) => {
                let outcome = match (
                    self.groups.get_mut(&write.group),
                    self.coordinators.get_mut(&write.group),
                ) {
                    (Some(replica), None) if !replica.is_command_log() => {
                        touched.insert(write.group);
                        replica.write_marker(&self.config, now, write.clone())
                    }
                    (Some(replica), Some(Hosted::Group(c))) => {
                        touched.insert(write.group);
                        c.write_marker(replica, now, write.clone())
                    }
                    _ => MarkerOutcome::Refused,
                };
                if outcome == MarkerOutcome::Written {
                    self.marker_written(write, now, sink, touched);
                }
            }
            TxnMessage::MarkerWritten(write) => {
                let coordinator = write.coordinator;
                if let (Some(Hosted::Txn(c)), Some(replica)) = (
                    self.coordinators.get_mut(&coordinator),
                    self.groups.get_mut(&coordinator),
                ) {
                    let job = MarkerJob {
                        transactional_id: write.transactional_id,
                        marker: write.marker,
                        txn_start_ms: write.txn_start_ms,
                        partition: write.partition,
                    };
                    if replica.serving_term().is_some() {
                        c.marker_written(replica, now, &job);
                        touched.insert(coordinator);
                    }
                }
            }
        }
    }

    /// A marker is written: its coordinator hears of it (wherever it is now).
    pub(super) fn marker_written(
        &mut self,
        write: MarkerWrite,
        now: Now,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        let coordinator = write.coordinator;
        let answer = TxnMessage::MarkerWritten(write);
        // Without a known leader the coordinator sends the marker again.
        self.hand_to_leader(coordinator, answer, now, sink, touched);
    }

    /// A tick: every serving transaction coordinator sends the markers that are due, each to
    /// its partition's leader; verifications past their requests' deadline answer them.
    pub(super) fn tick_transactions(
        &mut self,
        now: Now,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        let expired: Vec<u64> = self
            .txns
            .verifying
            .iter()
            .filter(|(_, v)| v.deadline <= now.mono)
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            let verifying = self.txns.take(token).expect("listed");
            for (id, waiter) in verifying.waiting {
                let offsets = GroupError::Txn(TxnError::TimedOut);
                waiter.fail(id, ProduceError::TimedOut, offsets, sink);
            }
        }
        let again: Vec<(GroupId, TxnMessage)> = self
            .txns
            .verifying
            .values_mut()
            .filter(|v| v.asked_at.plus_ms(VERIFY_AGAIN_MS) <= now.mono)
            .map(|v| {
                v.asked_at = now.mono;
                v.ask.clone()
            })
            .collect();
        for (coordinator, ask) in again {
            // No leader known yet: asked again at the next round.
            self.hand_to_leader(coordinator, ask, now, sink, touched);
        }
        self.send_due_markers(now, sink, touched);
    }

    /// Every serving transaction coordinator sends the markers that are due (never sent, or
    /// not answered for `txn::MARKER_RETRY_MS`), each to its partition's leader.
    pub(super) fn send_due_markers(
        &mut self,
        now: Now,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        let mut jobs = Vec::new();
        for (group, hosted) in self.coordinators.iter_mut() {
            let Hosted::Txn(c) = hosted else { continue };
            let Some(term) = self.groups[group].serving_term() else {
                continue;
            };
            for job in c.markers_due(now, term.0, MARKERS_PER_TICK) {
                jobs.push((*group, job));
            }
        }
        for (coordinator, job) in jobs {
            self.send_marker(coordinator, job, now, sink, touched);
        }
    }

    /// Sends one marker to its partition's leader (a `__consumer_offsets` partition's is its
    /// group coordinator's). A partition that no longer exists needs no marker, nor does
    /// another internal topic's (no transaction adds one).
    fn send_marker(
        &mut self,
        coordinator: GroupId,
        job: MarkerJob,
        now: Now,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        let group = self.metadata.as_ref().and_then(|m| {
            let topic = m.topic(&job.partition.0)?;
            let index = usize::try_from(job.partition.1).ok()?;
            Some(topic.partitions.get(index)?.group)
        });
        let internal =
            crate::metadata::is_internal(&job.partition.0) && job.partition.0 != OFFSETS_TOPIC;
        let write = MarkerWrite {
            coordinator,
            transactional_id: job.transactional_id,
            group: group.unwrap_or(GroupId(0)),
            partition: job.partition,
            marker: job.marker,
            txn_start_ms: job.txn_start_ms,
        };
        // Planted bug `skip-marker`: partition 0 of a data topic never gets its marker.
        let skipped = self.config.planted.skip_marker()
            && !internal
            && write.partition.1 == 0
            && write.partition.0 != OFFSETS_TOPIC;
        let (Some(group), false, false) = (group, internal, skipped) else {
            return self.marker_written(write, now, sink, touched);
        };
        // Without a known leader, sent again once one is.
        self.hand_to_leader(group, TxnMessage::WriteMarker(write), now, sink, touched);
    }
}
