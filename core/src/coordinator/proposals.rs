//! Proposals whose answers wait for their entry to apply: what waits on each (an answer, the
//! SyncGroup answers of a generation, or nothing), the deadline, and proposing through the
//! partition's `CommandLog` within the bound on proposals in flight.

use std::collections::VecDeque;

use bytes::Bytes;

use super::requests::{GroupError, GroupResponse};
use super::{reply, CommandLog, Coordinator};
use crate::ids::{Generation, RaftIndex, RequestId, Term};
use crate::node::Sink;
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
}

#[derive(Debug, Clone)]
pub(super) enum WaitingOp {
    OffsetCommit,
    Delete,
    /// OffsetDelete, with each partition's answer should its entry apply.
    OffsetDelete(Vec<super::requests::PartitionResult>),
}

impl WaitingOp {
    pub(super) fn answer(self, result: Result<(), GroupError>) -> GroupResponse {
        match self {
            Self::OffsetCommit => GroupResponse::OffsetCommit(result),
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

impl Coordinator {
    pub(super) fn propose_answer(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: RequestId,
        data: Vec<u8>,
        op: WaitingOp,
        sink: &mut Sink,
    ) {
        let fallback = op.clone();
        let failed = move |error| fallback.clone().answer(Err(error));
        if self.proposals.len() >= self.proposals_max {
            return reply(sink, id, failed(GroupError::CoordinatorNotAvailable));
        }
        let too_large = match &op {
            WaitingOp::OffsetCommit => GroupError::CommitTooLarge,
            _ => GroupError::GroupTooLarge,
        };
        let waiting = Waiting::Answer { id, op };
        let limits = self.limits();
        match propose(log, &mut self.proposals, limits, data, now, waiting) {
            Ok(()) => {}
            Err(Refused::Unavailable) => reply(sink, id, failed(GroupError::NotCoordinator)),
            Err(Refused::TooLarge) => reply(sink, id, failed(too_large)),
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
}

/// Proposes `data`, unless it is larger than `entry_bytes_max` (an entry over the storage's
/// frame limit would stop the node's disk writer), the log refuses it (not leading) or too
/// many wait already.
pub(super) fn propose(
    log: &mut dyn CommandLog,
    proposals: &mut VecDeque<Proposal>,
    (proposals_max, entry_bytes_max): (usize, usize),
    data: Vec<u8>,
    now: Now,
    waiting: Waiting,
) -> Result<(), Refused> {
    if data.len() > entry_bytes_max {
        return Err(Refused::TooLarge);
    }
    if proposals.len() >= proposals_max {
        return Err(Refused::Unavailable);
    }
    match log.propose(Bytes::from(data)) {
        Some((index, term)) => {
            proposals.push_back(Proposal {
                index,
                term,
                deadline: now.mono.plus_ms(PROPOSAL_TIMEOUT_MS),
                waiting,
            });
            Ok(())
        }
        None => Err(Refused::Unavailable),
    }
}

/// Proposes a group's membership that nobody waits for (a completed join); one too large to
/// store is logged on the group's `logger` (its members' SyncGroup is refused the same way).
pub(super) fn store_membership(
    log: &mut dyn CommandLog,
    proposals: &mut VecDeque<Proposal>,
    limits: (usize, usize),
    data: Vec<u8>,
    now: Now,
    logger: &slog::Logger,
) {
    if propose(log, proposals, limits, data, now, Waiting::Nothing) == Err(Refused::TooLarge) {
        slog::warn!(logger, "the group's membership is too large to store";
            "entry_bytes_max" => limits.1);
    }
}
