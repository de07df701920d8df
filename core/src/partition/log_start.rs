//! A partition's log start offset, moved forward through its Raft log (Kafka's DeleteRecords;
//! retention will propose the same command): the command entry, the leader's proposal, and the
//! requests waiting for it to apply.
//!
//! The command is a normal entry with no data (so it holds no record batch) and the encoded
//! command as its context. Every replica applies it at the same index, so every replica agrees
//! on the log start offset, and it never moves back after a leader change. The entries whose
//! records all lie below it are then compacted away (`RecordState::compact`), and the storage
//! deletes their files.

use std::collections::VecDeque;

use super::{Kind, Replica};
use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{Offset, RaftIndex, RequestId, Term};
use crate::io::{DeleteRecordsError, DeleteRecordsRequest, Response};
use crate::node::{NodeConfig, Sink};
use crate::time::{Instant, Now};

/// The only partition command so far: the log start offset moves to this offset.
const LOG_START: u8 = 1;

/// Encodes the command "the log start offset moves to `offset`".
fn encode(offset: Offset) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(LOG_START);
    w.i64(offset.0);
    w.bytes
}

/// Decodes a partition command entry's context.
pub(super) fn decode(context: &[u8]) -> Result<Offset, DecodeError> {
    let mut r = Reader::new(context);
    if r.u8()? != LOG_START {
        return Err(DecodeError("unknown partition command"));
    }
    let offset = Offset(r.i64()?);
    r.finish()?;
    if offset.0 < 0 {
        return Err(DecodeError("negative log start offset"));
    }
    Ok(offset)
}

/// A DeleteRecords waiting for its command to apply.
#[derive(Debug)]
pub(super) struct Wait {
    id: RequestId,
    index: RaftIndex,
    term: Term,
    deadline: Instant,
}

/// The DeleteRecords requests waiting on a partition.
#[derive(Debug, Default)]
pub(super) struct Waits(VecDeque<Wait>);

impl Waits {
    /// No DeleteRecords request waits.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entry at `applied`, of `term`, is applied; `log_start` is the partition's log start
    /// offset after it.
    pub(super) fn resolve(
        &mut self,
        applied: RaftIndex,
        term: Term,
        log_start: Offset,
        sink: &mut Sink,
    ) {
        // Exact matches over the whole queue: a node that leads again after losing its
        // leadership may wait on the same index twice, in two terms (every index is applied
        // once, or overwritten by a snapshot: `fail_overwritten`).
        if !self.0.iter().any(|w| w.index == applied) {
            return;
        }
        let mut keep = VecDeque::with_capacity(self.0.len());
        for wait in self.0.drain(..) {
            if wait.index != applied {
                keep.push_back(wait);
                continue;
            }
            // Another entry at its index: the command is definitely not in the log.
            let answer = if wait.term == term {
                Ok(log_start)
            } else {
                Err(DeleteRecordsError::NotLeader { leader: None })
            };
            sink.reply(wait.id, Response::DeleteRecords(answer));
        }
        self.0 = keep;
    }

    /// Answers the waits whose deadline passed: they may still apply.
    pub(super) fn expire(&mut self, now: Now, sink: &mut Sink) {
        self.fail(sink, DeleteRecordsError::TimedOut, |w| {
            w.deadline <= now.mono
        });
    }

    /// A snapshot replaced the entries up to `index` unseen: the outcome is unknown.
    pub(super) fn fail_overwritten(&mut self, index: RaftIndex, sink: &mut Sink) {
        self.fail(sink, DeleteRecordsError::TimedOut, |w| w.index <= index);
    }

    /// The partition is being removed.
    pub(super) fn fail_all(&mut self, sink: &mut Sink) {
        self.fail(sink, DeleteRecordsError::UnknownTopicOrPartition, |_| true);
    }

    fn fail(&mut self, sink: &mut Sink, error: DeleteRecordsError, doomed: impl Fn(&Wait) -> bool) {
        if !self.0.iter().any(&doomed) {
            return;
        }
        let mut keep = VecDeque::with_capacity(self.0.len());
        for wait in self.0.drain(..) {
            if doomed(&wait) {
                sink.reply(wait.id, Response::DeleteRecords(Err(error)));
            } else {
                keep.push_back(wait);
            }
        }
        self.0 = keep;
    }

    /// At most one wait per (index, term): one proposal, one entry. Quadratic: for
    /// `invariants_full`.
    pub(super) fn invariants(&self) {
        for (i, a) in self.0.iter().enumerate() {
            assert!(
                self.0
                    .iter()
                    .skip(i + 1)
                    .all(|b| (b.index, b.term) != (a.index, a.term)),
                "two waits on one entry"
            );
        }
    }
}

impl Replica {
    /// DeleteRecords on this partition's leader: proposes the new log start offset and answers
    /// once it is applied (or at once when there is nothing to move).
    pub(crate) fn delete_records(
        &mut self,
        config: &NodeConfig,
        now: Now,
        id: RequestId,
        request: &DeleteRecordsRequest,
        sink: &mut Sink,
    ) {
        assert_eq!(request.group, self.group);
        let answer = self.delete_records_inner(config, now, id, request);
        if let Some(answer) = answer {
            sink.reply(id, Response::DeleteRecords(answer));
        }
    }

    fn delete_records_inner(
        &mut self,
        config: &NodeConfig,
        now: Now,
        id: RequestId,
        request: &DeleteRecordsRequest,
    ) -> Option<Result<Offset, DeleteRecordsError>> {
        let Some(term) = self.serving_leader().map(|l| l.term) else {
            return Some(Err(DeleteRecordsError::NotLeader {
                leader: self.leader_hint(),
            }));
        };
        let Kind::Records(records) = &self.kind else {
            panic!("DeleteRecords goes to record partitions only");
        };
        let high_watermark = records.next_offset();
        let offset = request.offset.unwrap_or(high_watermark);
        if offset > high_watermark {
            return Some(Err(DeleteRecordsError::OffsetOutOfRange));
        }
        if offset <= records.log_start_offset() {
            // Kafka answers the current low watermark; the log start never moves back.
            return Some(Ok(records.log_start_offset()));
        }
        if config.planted.local_log_start() {
            let Kind::Records(records) = &mut self.kind else {
                unreachable!("checked above");
            };
            records.move_log_start_locally(offset);
            return Some(Ok(offset));
        }
        if records.log_start_waits.0.len() >= config.pending_requests_max {
            return Some(Err(DeleteRecordsError::Backpressure));
        }
        let last_before = self.raw.raft.raft_log.last_index();
        self.wake();
        if self.raw.propose(encode(offset), Vec::new()).is_err() {
            return Some(Err(DeleteRecordsError::NotLeader {
                leader: self.leader_hint(),
            }));
        }
        let index = RaftIndex(self.raw.raft.raft_log.last_index());
        assert_eq!(index.0, last_before + 1, "one proposal, one entry");
        let Kind::Records(records) = &mut self.kind else {
            unreachable!("checked above");
        };
        records.log_start_waits.0.push_back(Wait {
            id,
            index,
            term,
            deadline: now.mono.plus_ms(u64::from(request.timeout_ms)),
        });
        None
    }
}
