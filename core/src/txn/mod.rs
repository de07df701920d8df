//! Kafka's transaction coordinator (KIP-98), as a state machine over a Raft group of the
//! internal [`TRANSACTION_STATE_TOPIC`].
//!
//! Each partition of that topic is a Raft group whose log holds [`TxnCommand`]s: the whole
//! metadata of one transactional id per entry, as Kafka's `__transaction_state` records are.
//! Every replica applies them into [`TxnStored`], so a new leader has every transactional id's
//! producer id, epoch and transaction state at hand. The leader of the partition coordinates
//! every transactional id that hashes to it ([`partition_for`], the group coordinator's hash).
//! Answers that change the stored state wait until their entry applies.
//!
//! # Producer ids
//!
//! A transactional id's producer id comes from its coordinator partition's own range
//! ([`ProducerIds`]): bit 62, the partition's index, and a counter that is part of the
//! replicated state. No two partitions share a range, nodes hand out idempotent producers' ids
//! below bit 62, and the counter only moves forward with the log, so an id is never handed out
//! twice, with no disk of its own.
//!
//! # What is here so far
//!
//! InitProducerId with a transactional id: a new id gets a producer id at epoch 0; every later
//! InitProducerId bumps the epoch (a new producer id once the epoch is exhausted), which fences
//! the previous instance; KIP-360's retry with the producer id and epoch an instance had.
//! DescribeTransactions and ListTransactions read the stored state. The transactions
//! themselves (AddPartitionsToTxn, EndTxn, markers) come next: the states they move through
//! are stored already.
//!
//! The module is split by job: `requests` holds what clients ask and what they are answered,
//! `state` the log entries and the [`TxnStored`] they build. This file holds the
//! [`TxnCoordinator`]: applying the log, answering requests and the proposals that wait.

mod requests;
mod state;

use std::collections::VecDeque;

use bytes::Bytes;

pub use requests::{InitProducerId, TxnError, TxnOp, TxnResponse};
pub use state::{TxnCommand, TxnMeta, TxnState, TxnStored};

use crate::coordinator::CommandLog;
use crate::ids::{GroupId, ProducerEpoch, ProducerId, RaftIndex, RequestId, Term};
use crate::io::Response;
use crate::node::Sink;
use crate::time::{Instant, Now};

pub use crate::coordinator::partition_for;

/// The internal topic whose partitions host the transaction coordinators.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Longest transactional id.
pub const TRANSACTIONAL_ID_MAX: usize = 1_000;

/// How long an answer waits for its entry to apply.
const PROPOSAL_TIMEOUT_MS: u64 = 5_000;

/// The transaction coordinator's settings (Kafka's broker settings, with Kafka's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnConfig {
    /// Longest `transaction.timeout.ms` a producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`, 15 minutes); InitProducerId asking for more is refused
    /// with INVALID_TRANSACTION_TIMEOUT.
    pub max_timeout_ms: u32,
    /// Most transactional ids one partition of the topic holds; InitProducerId for a new one
    /// is refused with COORDINATOR_NOT_AVAILABLE beyond it (and a warning logged once).
    pub transactional_ids_max: usize,
    /// Most bytes one partition's stored state takes encoded (its snapshot, one storage frame
    /// of at most 64 MiB): a new transactional id that would pass it is refused the same way.
    pub state_bytes_max: usize,
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            max_timeout_ms: 900_000,
            transactional_ids_max: 100_000,
            state_bytes_max: 32 << 20,
        }
    }
}

/// The producer ids of one `__transaction_state` partition: `1 << 62 | index << 40 | counter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIds {
    /// The partition's index in the topic.
    pub index: u32,
}

impl ProducerIds {
    /// The bit every transactional producer id has (nodes hand out ids below it).
    pub const BIT: i64 = 1 << 62;
    /// Counters have 40 bits.
    const COUNTER_BITS: u32 = 40;
    /// Indexes have 21 bits (62 less the counter's 40, less one).
    pub const INDEX_MAX: u32 = (1 << 21) - 1;

    /// The range of the partition at `index`.
    pub fn new(index: u32) -> Self {
        assert!(index <= Self::INDEX_MAX);
        Self { index }
    }

    /// The id with `counter`.
    pub fn id(self, counter: u64) -> ProducerId {
        assert!(
            counter < 1 << Self::COUNTER_BITS,
            "producer id range exhausted"
        );
        ProducerId(Self::BIT | (i64::from(self.index) << Self::COUNTER_BITS) | counter as i64)
    }

    /// The counter of `id`, if it is of this range.
    pub fn counter(self, id: ProducerId) -> Option<u64> {
        let own = id.0 >= 0
            && id.0 & Self::BIT != 0
            && (id.0 & !Self::BIT) >> Self::COUNTER_BITS == i64::from(self.index);
        own.then_some((id.0 & ((1 << Self::COUNTER_BITS) - 1)) as u64)
    }
}

/// An answer waiting for its entry to apply.
#[derive(Debug)]
struct Proposal {
    index: RaftIndex,
    term: Term,
    deadline: Instant,
    id: RequestId,
    transactional_id: String,
    /// What the answer is once the entry applies.
    answer: (ProducerId, ProducerEpoch),
}

/// One `__transaction_state` partition on one node.
#[derive(Debug)]
pub struct TxnCoordinator {
    stored: TxnStored,
    /// The log index `stored` is at.
    applied: RaftIndex,
    proposals: VecDeque<Proposal>,
    proposals_max: usize,
    /// The largest entry proposed.
    entry_bytes_max: usize,
    /// The next counter this leader hands out: past `stored.next_counter` by the ids of its
    /// proposals not applied yet.
    next_counter: u64,
    /// The term `next_counter` was counted in.
    counted_in: Option<Term>,
    /// A new transactional id was refused because the partition is full (logged once).
    refusing_ids: bool,
    /// Bytes of `stored` encoded: the partition's snapshot, which must fit a storage frame.
    stored_bytes: usize,
    config: TxnConfig,
    ids: ProducerIds,
    /// The partition's Raft group.
    partition: GroupId,
    logger: slog::Logger,
}

impl TxnCoordinator {
    /// A coordinator of the partition at `index` of the topic, whose Raft group is
    /// `partition`, with nothing applied yet, at most `proposals_max` proposals in flight,
    /// none larger than `entry_bytes_max`.
    pub fn new(
        (index, partition): (u32, GroupId),
        (proposals_max, entry_bytes_max): (usize, usize),
        config: TxnConfig,
        logger: &slog::Logger,
    ) -> Self {
        assert!(proposals_max > 0 && config.transactional_ids_max > 0);
        Self {
            stored: TxnStored::default(),
            applied: RaftIndex(0),
            proposals: VecDeque::new(),
            proposals_max,
            entry_bytes_max,
            next_counter: 0,
            counted_in: None,
            refusing_ids: false,
            stored_bytes: TxnStored::HEADER_BYTES,
            config,
            ids: ProducerIds::new(index),
            partition,
            logger: logger.new(slog::o!("transaction_state_partition" => index)),
        }
    }

    /// The applied state.
    pub fn stored(&self) -> &TxnStored {
        &self.stored
    }

    /// The log index the applied state is at.
    pub fn applied(&self) -> RaftIndex {
        self.applied
    }

    /// The partition's Raft group.
    pub fn partition(&self) -> GroupId {
        self.partition
    }

    /// The encoded applied state: the partition log's snapshot.
    pub(crate) fn snapshot(&self) -> Bytes {
        Bytes::from(self.stored.encode())
    }

    /// Applies one entry of the partition's log (an empty one is a leader's no-op) and
    /// answers what waited on it.
    pub(crate) fn apply(&mut self, index: RaftIndex, term: Term, data: &[u8], sink: &mut Sink) {
        assert_eq!(index.0, self.applied.0 + 1, "entries apply in order, once");
        self.applied = index;
        if !data.is_empty() {
            let command = TxnCommand::decode(data)
                .expect("transaction entries are encoded by the leader that proposed them");
            let TxnCommand::Put {
                transactional_id,
                meta,
            } = &command;
            if let Some(old) = self.stored.ids.get(transactional_id) {
                self.stored_bytes -= TxnStored::entry_bytes(transactional_id, old);
            }
            self.stored_bytes += TxnStored::entry_bytes(transactional_id, meta);
            let ids = self.ids;
            self.stored.apply(&command, |id| ids.counter(id));
        }
        while self.proposals.front().is_some_and(|p| p.index <= index) {
            let p = self.proposals.pop_front().expect("checked");
            let ours = p.index == index && p.term == term;
            let result = if ours {
                Ok(p.answer)
            } else {
                Err(TxnError::NotCoordinator)
            };
            reply(sink, p.id, TxnResponse::InitProducerId(result));
        }
    }

    /// A snapshot replaced the log up to `index`: its state replaces ours. Answers waiting on
    /// entries it covers are unknown (the entries may or may not be in it).
    pub(crate) fn restore(&mut self, index: RaftIndex, state: &[u8], sink: &mut Sink) {
        assert!(index > self.applied, "snapshots move forward");
        self.stored = TxnStored::decode(state).expect("snapshot data is checksummed");
        // The counter stays above every stored id of the range, whatever the bytes said.
        let ids = self.ids;
        let above = self
            .stored
            .ids
            .values()
            .filter_map(|m| ids.counter(m.producer_id));
        self.stored.next_counter = above.fold(self.stored.next_counter, |n, c| n.max(c + 1));
        self.stored_bytes = self.stored.encoded_len();
        self.applied = index;
        while self.proposals.front().is_some_and(|p| p.index <= index) {
            let p = self.proposals.pop_front().expect("checked");
            reply(
                sink,
                p.id,
                TxnResponse::InitProducerId(Err(TxnError::TimedOut)),
            );
        }
    }

    /// Answers the proposals that waited too long (their outcome is unknown).
    pub(crate) fn tick(&mut self, now: Now, sink: &mut Sink) {
        while self
            .proposals
            .front()
            .is_some_and(|p| p.deadline <= now.mono)
        {
            let p = self.proposals.pop_front().expect("checked");
            reply(
                sink,
                p.id,
                TxnResponse::InitProducerId(Err(TxnError::TimedOut)),
            );
        }
    }

    /// Handles one request for a transactional id this partition coordinates.
    pub(crate) fn handle(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: RequestId,
        op: TxnOp,
        sink: &mut Sink,
    ) {
        let transactional_id = op.transactional_id();
        if transactional_id.is_empty() || transactional_id.len() > TRANSACTIONAL_ID_MAX {
            return reply(sink, id, TxnResponse::failed(&op, TxnError::InvalidRequest));
        }
        let Some(term) = log.serving() else {
            // A leader that has not applied its term's first entry yet is loading: the client
            // waits and asks again, rather than look for another coordinator.
            let error = if log.leading() {
                TxnError::CoordinatorLoadInProgress
            } else {
                TxnError::NotCoordinator
            };
            return reply(sink, id, TxnResponse::failed(&op, error));
        };
        if self.counted_in != Some(term) {
            self.begin_term(term, sink);
        }
        match op {
            TxnOp::InitProducerId(init) => self.init_producer_id(log, now, id, init, sink),
            TxnOp::Describe { transactional_id } => {
                let found = self.stored.ids.get(&transactional_id).cloned();
                let result = found.ok_or(TxnError::TransactionalIdNotFound);
                reply(sink, id, TxnResponse::Describe(result));
            }
        }
    }

    /// This node serves a new term. Every entry of earlier terms still in its log is applied
    /// (a leader serves once its term's first entry is), so what an earlier term proposed and
    /// is still waiting is lost: its index holds this term's entries now. Those answers are
    /// NOT_COORDINATOR, and producer ids are counted on from the applied state.
    fn begin_term(&mut self, term: Term, sink: &mut Sink) {
        assert!(
            self.counted_in.is_none_or(|t| t < term),
            "terms move forward"
        );
        self.counted_in = Some(term);
        self.next_counter = self.stored.next_counter;
        for p in std::mem::take(&mut self.proposals) {
            assert!(p.term < term && p.index > self.applied);
            reply(
                sink,
                p.id,
                TxnResponse::InitProducerId(Err(TxnError::NotCoordinator)),
            );
        }
    }

    /// InitProducerId with a transactional id (Kafka's `handleInitProducerId`).
    fn init_producer_id(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: RequestId,
        init: InitProducerId,
        sink: &mut Sink,
    ) {
        let InitProducerId {
            transactional_id,
            timeout_ms,
            expected,
        } = init;
        let answer = |sink: &mut Sink, result| reply(sink, id, TxnResponse::InitProducerId(result));
        let timeout_ms = match u32::try_from(timeout_ms) {
            Ok(ms) if ms > 0 && ms <= self.config.max_timeout_ms => ms,
            _ => return answer(sink, Err(TxnError::InvalidTransactionTimeout)),
        };
        if self
            .proposals
            .iter()
            .any(|p| p.transactional_id == transactional_id)
        {
            return answer(sink, Err(TxnError::ConcurrentTransactions));
        }
        if self.proposals.len() >= self.proposals_max {
            return answer(sink, Err(TxnError::CoordinatorNotAvailable));
        }
        let known = self.stored.ids.get(&transactional_id).cloned();
        // A new id's entry is at most this large (its producer ids, no partitions yet).
        let new_entry_bytes = 4 + 64 + transactional_id.len();
        let full = self.stored.ids.len() >= self.config.transactional_ids_max
            || self.stored_bytes + new_entry_bytes > self.config.state_bytes_max;
        if known.is_none() && full {
            if !self.refusing_ids {
                self.refusing_ids = true;
                slog::warn!(self.logger,
                    "a new transactional id was refused: the partition holds the most it may";
                    "ids" => self.stored.ids.len(),
                    "per_partition_max" => self.config.transactional_ids_max,
                    "state_bytes" => self.stored_bytes,
                    "state_bytes_max" => self.config.state_bytes_max);
            }
            return answer(sink, Err(TxnError::CoordinatorNotAvailable));
        }
        let is_new = known.is_none();
        let meta = match known {
            // A new id (KIP-360's `expected` included: Kafka's new metadata has no epoch yet,
            // which any expected epoch matches).
            None => TxnMeta {
                producer_id: self.allocate(),
                epoch: ProducerEpoch(0),
                last: None,
                timeout_ms,
                state: TxnState::Empty,
                partitions: Vec::new(),
                start_ms: -1,
                updated_ms: now.wall_ms,
            },
            Some(meta) => {
                let current = (meta.producer_id, meta.epoch);
                if let Some(expected) = expected {
                    if expected != current {
                        if meta.last == Some(expected) {
                            // A retry of the KIP-360 call that bumped it: the same answer.
                            return answer(sink, Ok(current));
                        }
                        return answer(sink, Err(TxnError::ProducerFenced));
                    }
                }
                if !meta.state.is_settled() {
                    // A transaction is open or ending (Kafka aborts an open one first; the
                    // client retries on CONCURRENT_TRANSACTIONS until it has ended).
                    return answer(sink, Err(TxnError::ConcurrentTransactions));
                }
                let mut next = meta.clone();
                if meta.epoch.0 >= i16::MAX - 1 {
                    // The epoch is exhausted: a new producer id (Kafka does the same).
                    next.producer_id = self.allocate();
                    next.epoch = ProducerEpoch(0);
                } else {
                    next.epoch = ProducerEpoch(meta.epoch.0 + 1);
                }
                // Only a KIP-360 call keeps what it had, for its own retry: after a new
                // instance's call, the instance before it is fenced whatever it sends (Kafka's
                // `prepareIncrementProducerEpoch`).
                next.last = expected.map(|_| current);
                next.timeout_ms = timeout_ms;
                next.state = TxnState::Empty;
                next.partitions.clear();
                next.start_ms = -1;
                next.updated_ms = now.wall_ms;
                next
            }
        };
        let answer_ids = (meta.producer_id, meta.epoch);
        let data = TxnCommand::Put {
            transactional_id: transactional_id.clone(),
            meta,
        }
        .encode();
        if data.len() > self.entry_bytes_max {
            return answer(sink, Err(TxnError::CoordinatorNotAvailable));
        }
        match log.propose(Bytes::from(data)) {
            Some((index, term)) => {
                self.proposals.push_back(Proposal {
                    index,
                    term,
                    deadline: now.mono.plus_ms(PROPOSAL_TIMEOUT_MS),
                    id,
                    transactional_id,
                    answer: answer_ids,
                });
                if is_new && self.refusing_ids {
                    self.refusing_ids = false;
                    slog::info!(self.logger, "new transactional ids are taken again");
                }
            }
            None => answer(sink, Err(TxnError::NotCoordinator)),
        }
    }

    /// A producer id of this partition's range not handed out before.
    fn allocate(&mut self) -> ProducerId {
        self.next_counter = self.next_counter.max(self.stored.next_counter);
        let id = self.ids.id(self.next_counter);
        self.next_counter += 1;
        id
    }

    /// Asserts the coordinator's invariants.
    pub fn invariants(&self) {
        assert!(self.proposals.len() <= self.proposals_max);
        assert_eq!(
            self.stored_bytes,
            self.stored.encoded_len(),
            "state bytes counted"
        );
        for pair in self.proposals.iter().collect::<Vec<_>>().windows(2) {
            assert!(pair[0].index < pair[1].index, "proposals in log order");
        }
        for (transactional_id, meta) in &self.stored.ids {
            assert!(!transactional_id.is_empty());
            assert!(meta.producer_id.0 >= 0 && meta.epoch.0 >= 0);
            if let Some(counter) = self.ids.counter(meta.producer_id) {
                assert!(
                    counter < self.stored.next_counter,
                    "a stored producer id is below the partition's counter"
                );
            }
            if meta.state == TxnState::Empty {
                assert!(meta.partitions.is_empty(), "no transaction, no partitions");
            }
            if !meta.state.is_settled() {
                assert!(meta.start_ms >= 0, "an open transaction has a start");
            }
        }
    }
}

fn reply(sink: &mut Sink, id: RequestId, response: TxnResponse) {
    sink.reply(id, Response::Txn(response));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_id_ranges_are_disjoint_and_above_node_ids() {
        let a = ProducerIds::new(0);
        let b = ProducerIds::new(ProducerIds::INDEX_MAX);
        for counter in [0, 1, (1 << 40) - 1] {
            assert_eq!(a.counter(a.id(counter)), Some(counter));
            assert_eq!(b.counter(b.id(counter)), Some(counter));
            assert_eq!(a.counter(b.id(counter)), None);
            assert_eq!(b.counter(a.id(counter)), None);
            assert!(a.id(counter).0 >= ProducerIds::BIT && b.id(counter).0 > 0);
        }
        // Nodes hand out `node_id << 40 | counter` with 22-bit node ids: below bit 62.
        let node_max = ((1_i64 << 22) - 1) << 40 | ((1 << 40) - 1);
        assert!(node_max < ProducerIds::BIT);
        assert_eq!(a.counter(ProducerId(node_max)), None);
        assert_eq!(a.counter(ProducerId(-1)), None);
    }
}
