//! A partition's leader-epoch history (Kafka's leader-epoch cache, KIP-101 and KIP-320): the
//! first offset of each leader epoch, which is the Raft term of the leader that wrote it.
//!
//! Applying the partition's log builds it: the first entry of a term above the latest epoch
//! starts that epoch at the offset after every record before it (a batch at its base offset;
//! a leader's no-op, which has no records, at the offset its leader's first record will get).
//! So on a serving leader, which has applied the first entry of its own term, the latest epoch
//! is its term, as in Kafka, where a new leader starts its epoch at its log end at election.
//! An epoch that ended without a record (its leader lost leadership before writing) is
//! replaced by the next, which starts at the same offset, as Kafka's cache replaces it.
//!
//! It answers OffsetForLeaderEpoch (the end offset of an epoch, [`EpochHistory::end_of`]) and
//! the epoch of a record by its offset (ListOffsets). It travels in checkpoints and snapshots,
//! and its start is dropped with the records below the log start offset (all but the epoch
//! holding the log start, whose start moves up to it), as Kafka truncates its cache, so it
//! holds at most one epoch per election whose records are still in the log.

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{Offset, Term};

/// The start offset of each leader epoch with records in the log (and of the latest epoch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochHistory {
    /// `(epoch, start offset)`, epochs and start offsets strictly increasing.
    epochs: Vec<(Term, Offset)>,
}

/// The answer to OffsetForLeaderEpoch: an epoch and its end offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEnd {
    /// The largest epoch at or below the one asked that the history holds (the one asked when
    /// it is below every epoch held), or -1 when undefined.
    pub leader_epoch: i32,
    /// The offset after the epoch's last record: the next epoch's start, or for the latest
    /// epoch the high watermark; -1 when undefined.
    pub end_offset: i64,
}

impl EpochEnd {
    /// Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET.
    pub const UNDEFINED: Self = Self {
        leader_epoch: -1,
        end_offset: -1,
    };
}

impl EpochHistory {
    /// No epoch known (a new partition; or a checkpoint or snapshot written before histories
    /// were kept, whose epochs are learnt from the entries applied after it).
    pub fn new() -> Self {
        Self::default()
    }

    /// The `(epoch, start offset)` pairs, oldest first.
    pub fn epochs(&self) -> &[(Term, Offset)] {
        &self.epochs
    }

    /// The latest epoch, if any.
    pub fn latest(&self) -> Option<Term> {
        self.epochs.last().map(|(term, _)| *term)
    }

    /// An entry of `term` is applied whose records (if any) start at `next`, the offset after
    /// every record applied before it. Returns whether it started an epoch.
    pub fn on_entry(&mut self, term: Term, next: Offset) -> bool {
        match self.epochs.last() {
            Some((latest, _)) if *latest >= term => return false,
            // The latest epoch ended without a record: the new one takes its place.
            Some((_, start)) if *start == next => {
                self.epochs.pop();
            }
            _ => {}
        }
        debug_assert!(self.epochs.last().is_none_or(|(_, start)| *start < next));
        self.epochs.push((term, next));
        true
    }

    /// The log start offset moved to `log_start`: drops every epoch whose records all lie
    /// below it (the next epoch starts at or below it), and moves the start of the epoch that
    /// holds it up to it. Kafka's `truncateFromStart`.
    pub fn truncate_start(&mut self, log_start: Offset) {
        let below = self
            .epochs
            .iter()
            .take_while(|(_, start)| *start <= log_start)
            .count();
        if below == 0 {
            return;
        }
        self.epochs.drain(..below - 1);
        self.epochs[0].1 = log_start;
    }

    /// The epoch of the record at `offset`: the latest epoch starting at or before it (`None`
    /// if it is below every epoch held).
    pub fn epoch_at(&self, offset: Offset) -> Option<Term> {
        self.epochs
            .iter()
            .rev()
            .find(|(_, start)| *start <= offset)
            .map(|(term, _)| *term)
    }

    /// OffsetForLeaderEpoch on the leader, as Kafka's `LeaderEpochFileCache::endOffsetFor`
    /// answers it: for `requested`, the largest epoch at or below it and that epoch's end
    /// offset (the start of the next epoch; for the latest epoch, `high_watermark`). An
    /// epoch below every epoch held gets itself and the start of the oldest epoch held (its
    /// records, if it had any, lie below it); -1 and an epoch above the latest are undefined.
    ///
    /// Kafka answers the latest epoch with the leader's log end offset; here it is the high
    /// watermark: a consumer has read only below it, and the records above it are not yet
    /// committed, so a new leader may not have them.
    pub fn end_of(&self, requested: i32, high_watermark: Offset) -> EpochEnd {
        let Ok(requested) = u64::try_from(requested).map(Term) else {
            return EpochEnd::UNDEFINED;
        };
        if self.latest() == Some(requested) {
            return EpochEnd {
                leader_epoch: epoch_i32(requested),
                end_offset: high_watermark.0,
            };
        }
        let Some(next) = self.epochs.iter().position(|(term, _)| *term > requested) else {
            return EpochEnd::UNDEFINED;
        };
        let end_offset = self.epochs[next].1 .0;
        let leader_epoch = match next {
            0 => requested,
            _ => self.epochs[next - 1].0,
        };
        EpochEnd {
            leader_epoch: epoch_i32(leader_epoch),
            end_offset,
        }
    }

    /// Appends the encoding (`decode` reads it back).
    pub fn encode(&self, w: &mut Writer) {
        w.u32(u32::try_from(self.epochs.len()).expect("epochs fit in u32"));
        for (term, start) in &self.epochs {
            w.u64(term.0);
            w.i64(start.0);
        }
    }

    /// Reads what `encode` wrote, refusing a history that is out of order.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.u32()?;
        let mut epochs: Vec<(Term, Offset)> = Vec::new();
        for _ in 0..count {
            let term = Term(r.u64()?);
            let start = Offset(r.i64()?);
            if start.0 < 0
                || i32::try_from(term.0).is_err()
                || epochs
                    .last()
                    .is_some_and(|(t, s)| *t >= term || *s >= start)
            {
                return Err(DecodeError("epoch history out of order"));
            }
            epochs.push((term, start));
        }
        Ok(Self { epochs })
    }

    /// Epochs and start offsets strictly increasing, every start at or below `high_watermark`
    /// (unless `ahead`: installed from a snapshot whose history is later than its index, until
    /// the entries after the index are applied again).
    pub fn invariants(&self, high_watermark: Offset, ahead: bool) {
        for pair in self.epochs.windows(2) {
            assert!(pair[0].0 < pair[1].0, "epochs increase: {:?}", self.epochs);
            assert!(
                pair[0].1 < pair[1].1,
                "epoch starts increase: {:?}",
                self.epochs
            );
        }
        if let Some((_, start)) = self.epochs.last() {
            assert!(
                ahead || *start <= high_watermark,
                "an epoch starts above the high watermark {high_watermark}: {:?}",
                self.epochs
            );
        }
    }
}

/// A term as a Kafka leader epoch (the core refuses terms that do not fit one).
fn epoch_i32(term: Term) -> i32 {
    i32::try_from(term.0).expect("terms fit a Kafka leader epoch")
}

/// Kafka's check of a request's `current_leader_epoch` against the partition's leader epoch
/// (`term`): -1 checks nothing; an older epoch is fenced (FENCED_LEADER_EPOCH: the client's
/// metadata is stale), a newer one unknown (UNKNOWN_LEADER_EPOCH: this node is behind).
pub fn check_leader_epoch(current_leader_epoch: i32, term: Term) -> Result<(), LeaderEpochError> {
    if current_leader_epoch == -1 {
        return Ok(());
    }
    let current = i64::from(current_leader_epoch);
    let term = i64::try_from(term.0).unwrap_or(i64::MAX);
    match current.cmp(&term) {
        std::cmp::Ordering::Less => Err(LeaderEpochError::Fenced),
        std::cmp::Ordering::Greater => Err(LeaderEpochError::Unknown),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// A request's `current_leader_epoch` is not the partition's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderEpochError {
    /// Older than the partition's: FENCED_LEADER_EPOCH (74).
    Fenced,
    /// Newer than the partition's: UNKNOWN_LEADER_EPOCH (76).
    Unknown,
}

impl LeaderEpochError {
    /// The Kafka error code that answers this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            Self::Fenced => 74,
            Self::Unknown => 76,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(pairs: &[(u64, i64)]) -> EpochHistory {
        EpochHistory {
            epochs: pairs.iter().map(|(t, s)| (Term(*t), Offset(*s))).collect(),
        }
    }

    #[test]
    fn entries_start_epochs_and_an_empty_epoch_gives_way() {
        let mut h = EpochHistory::new();
        assert!(h.on_entry(Term(2), Offset(0))); // the first leader's no-op
        assert!(!h.on_entry(Term(2), Offset(0))); // its first batch
        assert!(!h.on_entry(Term(2), Offset(3)));
        assert!(h.on_entry(Term(3), Offset(5))); // a no-op, and no record in term 3
        assert!(h.on_entry(Term(5), Offset(5))); // term 5 takes its place
        assert!(h.on_entry(Term(6), Offset(9)));
        assert_eq!(h, history(&[(2, 0), (5, 5), (6, 9)]));
        h.invariants(Offset(9), false);
        assert_eq!(h.epoch_at(Offset(4)), Some(Term(2)));
        assert_eq!(h.epoch_at(Offset(5)), Some(Term(5)));
        assert_eq!(h.epoch_at(Offset(100)), Some(Term(6)));
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let h = history(&[(2, 10), (5, 15), (6, 19)]);
        let end = |e| {
            let EpochEnd {
                leader_epoch,
                end_offset,
            } = h.end_of(e, Offset(30));
            (leader_epoch, end_offset)
        };
        assert_eq!(end(-1), (-1, -1));
        assert_eq!(end(1), (1, 10), "below every epoch: the oldest start");
        assert_eq!(end(2), (2, 15));
        assert_eq!(end(3), (2, 15), "no epoch 3: the one before it");
        assert_eq!(end(5), (5, 19));
        assert_eq!(end(6), (6, 30), "the latest ends at the high watermark");
        assert_eq!(end(7), (-1, -1));
        assert_eq!(
            EpochHistory::new().end_of(0, Offset(0)),
            EpochEnd::UNDEFINED
        );
    }

    #[test]
    fn truncating_the_start_keeps_the_epoch_holding_the_log_start() {
        let mut h = history(&[(2, 10), (5, 15), (6, 19)]);
        h.truncate_start(Offset(9));
        assert_eq!(h, history(&[(2, 10), (5, 15), (6, 19)]));
        h.truncate_start(Offset(15));
        assert_eq!(h, history(&[(5, 15), (6, 19)]));
        h.truncate_start(Offset(17));
        assert_eq!(h, history(&[(5, 17), (6, 19)]));
        h.truncate_start(Offset(40));
        assert_eq!(h, history(&[(6, 40)]));
    }

    #[test]
    fn the_encoding_reads_back_and_refuses_disorder() {
        let h = history(&[(2, 10), (5, 15)]);
        let mut w = Writer::default();
        h.encode(&mut w);
        let mut r = Reader::new(&w.bytes);
        assert_eq!(EpochHistory::decode(&mut r), Ok(h));
        r.finish().expect("all read");
        let mut w = Writer::default();
        history(&[(5, 10), (2, 15)]).encode(&mut w);
        assert!(EpochHistory::decode(&mut Reader::new(&w.bytes)).is_err());
    }

    #[test]
    fn current_leader_epochs_are_checked_as_kafka_does() {
        assert_eq!(check_leader_epoch(-1, Term(4)), Ok(()));
        assert_eq!(check_leader_epoch(4, Term(4)), Ok(()));
        assert_eq!(
            check_leader_epoch(3, Term(4)),
            Err(LeaderEpochError::Fenced)
        );
        assert_eq!(
            check_leader_epoch(-2, Term(4)),
            Err(LeaderEpochError::Fenced)
        );
        assert_eq!(
            check_leader_epoch(5, Term(4)),
            Err(LeaderEpochError::Unknown)
        );
    }
}
