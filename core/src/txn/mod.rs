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
//! # Transactions
//!
//! InitProducerId with a transactional id gives a new id a producer id at epoch 0; every later
//! one bumps the epoch (a new producer id once the epoch is exhausted), which fences the
//! instance before; KIP-360's retry with the producer id and epoch an instance had gets the
//! current ones. AddPartitionsToTxn (and AddOffsetsToTxn) opens a transaction (`Ongoing`) and
//! adds partitions to it; EndTxn stores the outcome (`PrepareCommit`, `PrepareAbort`) and is
//! answered then, as in Kafka; the markers of that outcome are then written to every partition
//! of the transaction, and the transaction is complete (`CompleteCommit`, `CompleteAbort`).
//! A transaction open past its `transaction.timeout.ms`, or found open by a new instance's
//! InitProducerId, is aborted with an epoch bump that fences the instance that opened it. An
//! id without requests for `transactional.id.expiration.ms` is removed.
//!
//! Every change is one proposal whose answer waits for it to apply; while one is in flight for
//! an id, other requests for it are answered CONCURRENT_TRANSACTIONS (Kafka's pending
//! transition).
//!
//! The module is split by job: `requests` holds what clients ask and what they are answered,
//! `state` the log entries and the [`TxnStored`] they build, `transitions` how each request
//! and timer changes a transactional id's metadata, `producer_ids` the producer id ranges.
//! This file holds the [`TxnCoordinator`]: applying the log, dispatching requests, timers and
//! the proposals that wait.

mod markers;
mod producer_ids;
mod requests;
mod state;
mod transitions;

use std::collections::VecDeque;

use bytes::Bytes;

pub use markers::{MarkerJob, MARKER_RETRY_MS};
pub use producer_ids::ProducerIds;
pub use requests::{AddPartitions, EndTxn, InitProducerId, TxnError, TxnOp, TxnResponse};
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
    /// How often the leader looks for transactions open past their timeout, and ids past their
    /// expiration (Kafka's `transaction.abort.timed.out.transaction.cleanup.interval.ms`, and
    /// its `transactional.id.expiration.ms` check, which runs every hour there).
    pub check_interval_ms: u64,
    /// How long a transactional id without requests and without an open transaction is kept
    /// (Kafka's `transactional.id.expiration.ms`, 7 days).
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            max_timeout_ms: 900_000,
            transactional_ids_max: 100_000,
            state_bytes_max: 32 << 20,
            check_interval_ms: 10_000,
            id_expiration_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// What a proposal's answer is once its entry applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// InitProducerId: this producer id and epoch.
    InitProducerId(ProducerId, ProducerEpoch),
    /// InitProducerId that found a transaction open and aborts it first: CONCURRENT_TRANSACTIONS
    /// (the client asks again, and gets its epoch once the abort is complete).
    AbortFirst,
    /// AddPartitionsToTxn or AddOffsetsToTxn: done.
    AddPartitions,
    /// EndTxn: the outcome is stored.
    EndTxn,
    /// The coordinator's own change (a timeout's abort, a completion, an expiry): no answer.
    Nobody,
}

impl Waiting {
    /// The answer: the request's `Ok` once its entry applied, or `error`.
    fn answer(self, error: Option<TxnError>) -> Option<TxnResponse> {
        let done = error.map_or(Ok(()), Err);
        Some(match self {
            Self::InitProducerId(id, epoch) => {
                TxnResponse::InitProducerId(error.map_or(Ok((id, epoch)), Err))
            }
            Self::AbortFirst => {
                TxnResponse::InitProducerId(Err(error.unwrap_or(TxnError::ConcurrentTransactions)))
            }
            Self::AddPartitions => TxnResponse::AddPartitions(done),
            Self::EndTxn => TxnResponse::EndTxn(done),
            Self::Nobody => return None,
        })
    }
}

/// An answer waiting for its entry to apply.
#[derive(Debug)]
struct Proposal {
    index: RaftIndex,
    term: Term,
    deadline: Instant,
    /// The request to answer (none for the coordinator's own changes).
    id: Option<RequestId>,
    transactional_id: String,
    waiting: Waiting,
}

impl Proposal {
    /// Answers the request, if any: `Ok` (its entry applied) or `error`.
    fn answer(self, error: Option<TxnError>, sink: &mut Sink) {
        if let (Some(id), Some(response)) = (self.id, self.waiting.answer(error)) {
            reply(sink, id, response);
        }
    }
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
    /// When the leader next looks for timed-out transactions and expired ids.
    next_check: Option<Instant>,
    /// A new transactional id was refused because the partition is full (logged once).
    refusing_ids: bool,
    /// Bytes of `stored` encoded: the partition's snapshot, which must fit a storage frame.
    stored_bytes: usize,
    /// The markers of the transactions whose outcome is stored.
    markers: markers::Markers,
    config: TxnConfig,
    ids: ProducerIds,
    /// The partition's Raft group.
    partition: GroupId,
    logger: slog::Logger,
    /// Planted bug `accept-fenced-epoch` (see `PlantedBugs`).
    pub(crate) planted_accept_fenced_epoch: bool,
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
        assert!(config.check_interval_ms > 0 && config.id_expiration_ms > 0);
        Self {
            stored: TxnStored::default(),
            applied: RaftIndex(0),
            proposals: VecDeque::new(),
            proposals_max,
            entry_bytes_max,
            next_counter: 0,
            counted_in: None,
            next_check: None,
            refusing_ids: false,
            stored_bytes: TxnStored::HEADER_BYTES,
            markers: markers::Markers::default(),
            config,
            ids: ProducerIds::new(index),
            partition,
            logger: logger.new(slog::o!("transaction_state_partition" => index)),
            planted_accept_fenced_epoch: false,
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
            let transactional_id = command.transactional_id();
            if let Some(old) = self.stored.ids.get(transactional_id) {
                self.stored_bytes -= TxnStored::entry_bytes(transactional_id, old);
            }
            if let TxnCommand::Put { meta, .. } = &command {
                self.stored_bytes += TxnStored::entry_bytes(transactional_id, meta);
            }
            let ids = self.ids;
            self.stored.apply(&command, |id| ids.counter(id));
            let transactional_id = command.transactional_id();
            let state = self.stored.ids.get(transactional_id).map(|m| m.state);
            self.markers.on_applied(transactional_id, state);
        }
        while self.proposals.front().is_some_and(|p| p.index <= index) {
            let p = self.proposals.pop_front().expect("checked");
            let ours = p.index == index && p.term == term;
            p.answer((!ours).then_some(TxnError::NotCoordinator), sink);
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
        self.markers = markers::Markers::default();
        for (transactional_id, meta) in &self.stored.ids {
            self.markers.on_applied(transactional_id, Some(meta.state));
        }
        self.applied = index;
        while self.proposals.front().is_some_and(|p| p.index <= index) {
            let p = self.proposals.pop_front().expect("checked");
            p.answer(Some(TxnError::TimedOut), sink);
        }
    }

    /// Answers the proposals that waited too long (their outcome is unknown), and, on the
    /// serving leader, aborts transactions open past their timeout and removes expired ids.
    pub(crate) fn tick(&mut self, log: &mut dyn CommandLog, now: Now, sink: &mut Sink) {
        while self
            .proposals
            .front()
            .is_some_and(|p| p.deadline <= now.mono)
        {
            let p = self.proposals.pop_front().expect("checked");
            p.answer(Some(TxnError::TimedOut), sink);
        }
        let Some(term) = log.serving() else {
            self.next_check = None;
            return;
        };
        if self.counted_in != Some(term) {
            self.begin_term(term, sink);
        }
        let due = self.next_check.get_or_insert(now.mono);
        if *due <= now.mono {
            *due = now.mono.plus_ms(self.config.check_interval_ms);
            self.expire(log, now);
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
        if let TxnOp::Describe { transactional_id } = &op {
            let found = self.stored.ids.get(transactional_id).cloned();
            let result = found.ok_or(TxnError::TransactionalIdNotFound);
            return reply(sink, id, TxnResponse::Describe(result));
        }
        if self.in_flight(op.transactional_id()) {
            // Kafka's pending transition: the client retries.
            return reply(
                sink,
                id,
                TxnResponse::failed(&op, TxnError::ConcurrentTransactions),
            );
        }
        let failed = TxnResponse::failed(&op, TxnError::CoordinatorNotAvailable);
        let change = match op {
            TxnOp::InitProducerId(init) => self.init_producer_id(now, init),
            TxnOp::AddPartitions(add) => self.add_partitions(now, add),
            TxnOp::EndTxn(end) => self.end_txn(now, end),
            TxnOp::Describe { .. } => unreachable!("answered above"),
        };
        match change {
            Ok(Change::Answer(response)) => reply(sink, id, response),
            Ok(Change::Store(put, waiting)) => {
                if let Err(error) = self.propose(log, now, Some(id), put, waiting) {
                    let response = waiting.answer(Some(error)).unwrap_or(failed);
                    reply(sink, id, response);
                }
            }
            Err(response) => reply(sink, id, response),
        }
    }

    /// Whether a change of `transactional_id` is proposed and not applied yet.
    fn in_flight(&self, transactional_id: &str) -> bool {
        self.proposals
            .iter()
            .any(|p| p.transactional_id == transactional_id)
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
        self.markers.progress.clear();
        for p in std::mem::take(&mut self.proposals) {
            assert!(p.term < term && p.index > self.applied);
            p.answer(Some(TxnError::NotCoordinator), sink);
        }
    }

    /// Proposes `command`, to be answered as `waiting` once it applies (to request `id`, if
    /// any), or the error that keeps it from the log.
    fn propose(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: Option<RequestId>,
        command: TxnCommand,
        waiting: Waiting,
    ) -> Result<(), TxnError> {
        if self.proposals.len() >= self.proposals_max {
            return Err(TxnError::CoordinatorNotAvailable);
        }
        let transactional_id = command.transactional_id().to_string();
        let old = self.stored.ids.get(&transactional_id);
        let is_new = old.is_none();
        let old_bytes = old.map_or(0, |m| TxnStored::entry_bytes(&transactional_id, m));
        let new_bytes = match &command {
            TxnCommand::Put { meta, .. } => TxnStored::entry_bytes(&transactional_id, meta),
            TxnCommand::Remove { .. } => 0,
        };
        let full = (is_new && self.stored.ids.len() >= self.config.transactional_ids_max)
            || self.stored_bytes - old_bytes + new_bytes > self.config.state_bytes_max;
        if full && new_bytes > old_bytes {
            if !self.refusing_ids {
                self.refusing_ids = true;
                slog::warn!(self.logger,
                    "a transactional id's change was refused: the partition holds the most it may";
                    "ids" => self.stored.ids.len(),
                    "per_partition_max" => self.config.transactional_ids_max,
                    "state_bytes" => self.stored_bytes,
                    "state_bytes_max" => self.config.state_bytes_max);
            }
            return Err(TxnError::CoordinatorNotAvailable);
        }
        let data = command.encode();
        if data.len() > self.entry_bytes_max {
            return Err(TxnError::InvalidRequest);
        }
        let Some((index, term)) = log.propose(Bytes::from(data)) else {
            return Err(TxnError::NotCoordinator);
        };
        self.proposals.push_back(Proposal {
            index,
            term,
            deadline: now.mono.plus_ms(PROPOSAL_TIMEOUT_MS),
            id,
            transactional_id,
            waiting,
        });
        if new_bytes > old_bytes && self.refusing_ids {
            self.refusing_ids = false;
            slog::info!(self.logger, "transactional ids' changes are taken again");
        }
        Ok(())
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
            match meta.state {
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                    assert!(meta.partitions.is_empty(), "no transaction, no partitions")
                }
                TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    assert!(meta.start_ms >= 0, "an open transaction has a start");
                    assert!(!meta.partitions.is_empty(), "a transaction has partitions");
                }
            }
            assert!(
                meta.partitions.windows(2).all(|w| w[0] < w[1]),
                "a transaction's partitions are sorted, each once"
            );
            let preparing = matches!(meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort);
            assert_eq!(
                self.markers.preparing.contains(transactional_id),
                preparing,
                "the preparing ids follow the state"
            );
        }
        assert!(self.markers.preparing.len() <= self.stored.ids.len());
    }
}

/// What a request does to a transactional id's metadata.
#[derive(Debug)]
enum Change {
    /// Nothing to store: the answer now.
    Answer(TxnResponse),
    /// Store this, and answer as waiting once it applies.
    Store(TxnCommand, Waiting),
}

fn reply(sink: &mut Sink, id: RequestId, response: TxnResponse) {
    sink.reply(id, Response::Txn(response));
}
