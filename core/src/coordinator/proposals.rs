//! Proposals whose answers wait for their entry to apply: what waits on each (an answer, the
//! SyncGroup answers of a generation, or nothing), the deadline, and proposing through the
//! partition's `CommandLog` within the bounds: on proposals in flight, on the size of one
//! entry, and on the bytes of the stored state (its snapshot, one storage frame), counted with
//! what the leader proposed and has not applied yet.

use std::collections::VecDeque;

use bytes::Bytes;

use super::command::{Command, StoredState};
use super::requests::{GroupError, GroupResponse};
use super::{reply, CommandLog, Coordinator};
use crate::ids::{Generation, RaftIndex, RequestId, Term};
use crate::node::Sink;
use crate::partition::MarkerWrite;
use crate::time::{Instant, Now};

/// How long an answer waits for its entry to apply.
const PROPOSAL_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug)]
pub(super) enum Waiting {
    /// An OffsetCommit or DeleteGroups answer.
    Answer { id: RequestId, op: WaitingOp },
    /// The leader's assignment for this generation: SyncGroup answers follow.
    Assignment {
        group_id: String,
        generation: Generation,
    },
    /// A record nobody waits for (an empty group's generation).
    Nothing,
    /// A transaction's marker: written once applied (`Coordinator::take_markers_written`).
    Marker(MarkerWrite),
}

#[derive(Debug, Clone)]
pub(super) enum WaitingOp {
    OffsetCommit,
    TxnOffsetCommit,
    Delete,
    /// OffsetDelete, with each partition's answer should its entry apply.
    OffsetDelete(Vec<super::requests::PartitionResult>),
}

impl WaitingOp {
    pub(super) fn answer(self, result: Result<(), GroupError>) -> GroupResponse {
        match self {
            Self::OffsetCommit => GroupResponse::OffsetCommit(result),
            Self::TxnOffsetCommit => GroupResponse::TxnOffsetCommit(result),
            Self::Delete => GroupResponse::Delete(result),
            Self::OffsetDelete(partitions) => {
                GroupResponse::OffsetDelete(result.map(|()| partitions))
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct Proposal {
    pub(super) index: RaftIndex,
    pub(super) term: Term,
    pub(super) deadline: Instant,
    pub(super) waiting: Waiting,
}

/// An entry to propose: its bytes, and what it may do to the stored state's size.
#[derive(Debug)]
pub(super) struct Entry {
    data: Vec<u8>,
    /// The most bytes it may add to the encoded state ([`StoredState::growth_bound`]).
    growth: usize,
    /// The encoded state's bytes as applied when it was made.
    stored_bytes: usize,
}

impl Entry {
    /// `command` as an entry, against the applied state `stored` of `stored_bytes` bytes.
    pub(super) fn new(command: &Command, stored: &StoredState, stored_bytes: usize) -> Self {
        Self {
            data: command.encode(),
            growth: stored.growth_bound(command),
            stored_bytes,
        }
    }

    /// The encoded entry's size.
    pub(super) fn len(&self) -> usize {
        self.data.len()
    }
}

/// What a coordinator has proposed and not yet seen apply, and the bounds on proposing.
#[derive(Debug)]
pub(super) struct Proposals {
    /// Answers waiting for their entry, in log order.
    pub(super) queue: VecDeque<Proposal>,
    /// Most proposals in `queue`, and most entries in `growing`.
    pub(super) max: usize,
    /// The largest entry proposed.
    pub(super) entry_bytes_max: usize,
    /// The most bytes the stored state may take encoded (`CoordinatorConfig::state_bytes_max`).
    pub(super) state_bytes_max: usize,
    /// Entries this node proposed in the term it serves that may grow the stored state and
    /// have not applied yet: each one's index and the most bytes it may add. Kept apart from
    /// `queue`, whose answers time out while their entries may still apply.
    growing: VecDeque<(RaftIndex, usize)>,
    /// The bytes of `growing`, summed.
    growing_bytes: usize,
    /// A proposal was refused because the state would pass `state_bytes_max`, and none that
    /// grows the state has been taken since: logged once, not per refusal.
    refusing_growth: bool,
}

impl Proposals {
    pub(super) fn new(max: usize, entry_bytes_max: usize, state_bytes_max: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            max,
            entry_bytes_max,
            state_bytes_max,
            growing: VecDeque::new(),
            growing_bytes: 0,
            refusing_growth: false,
        }
    }

    /// Entries up to `index` applied (or a snapshot covers them): what they add is in the
    /// stored state's count now.
    pub(super) fn applied(&mut self, index: RaftIndex) {
        while let Some(&(at, bytes)) = self.growing.front() {
            if at > index {
                break;
            }
            self.growing.pop_front();
            self.growing_bytes -= bytes;
        }
    }

    /// This node begins serving a term: every entry of earlier terms still in the log is
    /// applied, so what earlier terms proposed and is still counted was lost. The term logs
    /// its own first refusal.
    pub(super) fn serving(&mut self) {
        self.growing.clear();
        self.growing_bytes = 0;
        self.refusing_growth = false;
    }

    /// Whether `growth` more bytes fit the state of `stored_bytes` with what is proposed and
    /// not applied. The first refusal since the last growth taken is logged (a warning), and
    /// the first growth taken after it too.
    pub(super) fn room_for(
        &mut self,
        stored_bytes: usize,
        growth: usize,
        logger: &slog::Logger,
    ) -> bool {
        let fits = stored_bytes + self.growing_bytes + growth <= self.state_bytes_max;
        if !fits && !self.refusing_growth {
            self.refusing_growth = true;
            slog::warn!(logger,
                "group coordinator state full: refusing new groups (COORDINATOR_NOT_AVAILABLE), offset commits (INVALID_COMMIT_OFFSET_SIZE) and memberships (UNKNOWN_SERVER_ERROR) that would grow it (groups.state_bytes_max)";
                "state_bytes" => stored_bytes, "proposed_bytes" => self.growing_bytes,
                "growth" => growth, "state_bytes_max" => self.state_bytes_max);
        }
        if fits && growth > 0 && self.refusing_growth {
            self.refusing_growth = false;
            slog::info!(logger, "group coordinator state has room again";
                "state_bytes" => stored_bytes, "proposed_bytes" => self.growing_bytes,
                "growth" => growth, "state_bytes_max" => self.state_bytes_max);
        }
        fits
    }

    /// Proposes `entry`, unless it is larger than `entry_bytes_max` (an entry over the
    /// storage's frame limit would stop the node's disk writer), it would take the stored
    /// state past `state_bytes_max` (the state is the log's snapshot, one storage frame), the
    /// log refuses it (not leading) or too many wait already.
    ///
    /// The state's bound counts the growth of every entry this node proposed in its term and
    /// has not applied, so what a leader takes cannot pass it however many wait; a new
    /// leader's state holds its predecessors' entries, each checked the same way (against
    /// the `state_bytes_max` of the node that took it, at most 48 MiB by the node's
    /// configuration checks, well under a frame's 64 MiB).
    pub(super) fn propose(
        &mut self,
        log: &mut dyn CommandLog,
        entry: Entry,
        now: Now,
        waiting: Waiting,
        logger: &slog::Logger,
    ) -> Result<(), Refused> {
        if entry.len() > self.entry_bytes_max {
            return Err(Refused::TooLarge);
        }
        if self.queue.len() >= self.max {
            return Err(Refused::Unavailable);
        }
        if entry.growth > 0 {
            if self.growing.len() >= self.max {
                return Err(Refused::Unavailable);
            }
            // A marker always goes in: a transaction must be able to end. It grows the state
            // by one remembered transaction at most, and ending pending offsets shrinks it.
            let marker = matches!(waiting, Waiting::Marker(_));
            if !marker && !self.room_for(entry.stored_bytes, entry.growth, logger) {
                return Err(Refused::StateFull);
            }
        }
        let Some((index, term)) = log.propose(Bytes::from(entry.data)) else {
            return Err(Refused::Unavailable);
        };
        if entry.growth > 0 {
            self.growing.push_back((index, entry.growth));
            self.growing_bytes += entry.growth;
        }
        self.queue.push_back(Proposal {
            index,
            term,
            deadline: now.mono.plus_ms(PROPOSAL_TIMEOUT_MS),
            waiting,
        });
        Ok(())
    }

    /// Asserts the bounds, and that `growing` is in log order after `applied`.
    pub(super) fn invariants(&self, applied: RaftIndex) {
        assert!(self.queue.len() <= self.max);
        assert!(self.growing.len() <= self.max);
        for pair in self.queue.iter().collect::<Vec<_>>().windows(2) {
            assert!(pair[0].index < pair[1].index, "proposals in log order");
        }
        let mut after = applied;
        for &(index, _) in &self.growing {
            assert!(index > after, "growing entries in log order, none applied");
            after = index;
        }
        let sum: usize = self.growing.iter().map(|(_, bytes)| bytes).sum();
        assert_eq!(sum, self.growing_bytes, "proposed growth counted");
    }
}

impl Coordinator {
    /// Proposes `command` and answers `id` when its entry applies (or with why it was not
    /// proposed).
    pub(super) fn propose_answer(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: RequestId,
        command: Command,
        op: WaitingOp,
        sink: &mut Sink,
    ) {
        let fallback = op.clone();
        let failed = move |error| fallback.clone().answer(Err(error));
        if self.proposals.queue.len() >= self.proposals.max {
            return reply(sink, id, failed(GroupError::CoordinatorNotAvailable));
        }
        // Only offset commits grow the state: past its bound, as past the bound on one entry,
        // their records are too large (Kafka's INVALID_COMMIT_OFFSET_SIZE).
        let too_large = match &op {
            WaitingOp::OffsetCommit | WaitingOp::TxnOffsetCommit => GroupError::CommitTooLarge,
            _ => GroupError::GroupTooLarge,
        };
        let entry = Entry::new(&command, &self.stored, self.stored_bytes);
        let waiting = Waiting::Answer { id, op };
        match self
            .proposals
            .propose(log, entry, now, waiting, &self.logger)
        {
            Ok(()) => {}
            Err(Refused::Unavailable) => reply(sink, id, failed(GroupError::NotCoordinator)),
            Err(Refused::TooLarge | Refused::StateFull) => reply(sink, id, failed(too_large)),
        }
    }
}

/// Why a proposal was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not leading, or too many proposals wait already.
    Unavailable,
    /// The entry would be larger than `entry_bytes_max`.
    TooLarge,
    /// The stored state would pass `state_bytes_max`.
    StateFull,
}

/// Proposes a group's membership that nobody waits for (a completed join); one too large to
/// store is logged on the group's `logger` (its members' SyncGroup is refused the same way).
pub(super) fn store_membership(
    log: &mut dyn CommandLog,
    proposals: &mut Proposals,
    entry: Entry,
    now: Now,
    logger: &slog::Logger,
) {
    if proposals.propose(log, entry, now, Waiting::Nothing, logger) == Err(Refused::TooLarge) {
        slog::warn!(logger, "the group's membership is too large to store";
            "entry_bytes_max" => proposals.entry_bytes_max);
    }
}
