//! Compacted topics (`History::compaction`): which records a log cleaner may remove, and the
//! classes of what it may not.
//!
//! The model is Kafka's guarantee: a consumer that reads from the log start sees, for every
//! key, at least the key's latest record (offsets and order kept, holes allowed), and sees a
//! tombstone if it passes the tombstone's offset within `delete.retention.ms` of its write. So
//! a record of a partition may vanish only when a later record of its key (same partition,
//! higher offset) superseded it (`min.compaction.lag.ms` after its write, at the earliest),
//! or when it is a tombstone older than `delete.retention.ms`; and once a tombstone has gone,
//! so has everything of its key before it.
//!
//! What is *known* of a partition's log is every record acknowledged at an offset (acks=all),
//! polled by a reader, read by a consumer-group member, or in the final read, with its send's
//! key. Sends whose place is unknown
//! (indeterminate, pending, acks=0, acks=1 which may be lost) may or may not be there: such a
//! send that no read ever returned may still have superseded a known record, but only if it
//! is a tombstone that may have expired by the end of the final read (any later record of
//! the key that survived would have been read). Such a tombstone *excuses* the key's records.
//!
//! Each known record the final read lacks (at or above its log start) meets one fate:
//! superseded by a later known record of its key (allowed; `lost-write` if gone within
//! `min.compaction.lag.ms`), excused, an expired tombstone (allowed), or, being its key's
//! latest, `compaction-lost-latest` (a value) or `compaction-tombstone-early` (a tombstone).
//! Beside it: `compaction-resurrected` (the final read's latest record of a key is a value,
//! with a later record of the key known, while the key's latest had to be there: a cleaner
//! running during the final read may remove an expired tombstone and the value before it
//! that the read had already passed), and `compaction-tombstone-early` for the readers' polls
//! ([`tombstones`]). Going back within a reader's reads stays `nonmonotonic-poll` and
//! `int-nonmonotonic-poll` (`polls.rs`), whose rules hold in a compacted log unchanged.

mod tombstones;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::{start_of, Anomaly, Verdict};
use crate::history::{Compaction, Delivery, History, Outcome, SendOp};

/// Where a known record was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Its send was acknowledged at its offset.
    Acknowledged {
        /// When.
        at_ms: u64,
    },
    /// A reader's poll returned it.
    Polled {
        /// The reader.
        reader: usize,
        /// When the poll returned.
        at_ms: u64,
    },
    /// A consumer-group member read it.
    Group {
        /// The member.
        member: usize,
        /// Its generation then.
        generation: i32,
    },
    /// The final read returned it.
    FinalRead,
}

impl Source {
    fn describe(self) -> String {
        match self {
            Self::Acknowledged { at_ms } => format!("acknowledged at {at_ms} ms"),
            Self::Polled { reader, at_ms } => format!("polled by reader {reader} at {at_ms} ms"),
            Self::Group { member, generation } => {
                format!("read by group member {member} in generation {generation}")
            }
            Self::FinalRead => "in the final read".into(),
        }
    }
}

/// A record known to have been in a partition's log at some offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    value: u64,
    source: Source,
}

/// What became of a known record the final read may lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// In the final read.
    Present,
    /// Below the final read's log start.
    Trimmed,
    /// A later known record of its key superseded it: value and offset of the latest.
    Superseded { by: u64, at: i64 },
    /// A tombstone of its key whose place is unknown may have superseded it and expired.
    Excused { by: u64 },
    /// A tombstone older than `delete.retention.ms` when the final read ended.
    Expired,
    /// The latest known record of its key, a value: it must be there.
    LostLatest,
    /// The latest known record of its key, a tombstone younger than `delete.retention.ms`
    /// when the final read ended: it must be there.
    EarlyTombstone,
}

/// A compacted history, indexed for judging what vanished.
pub(super) struct Compacted<'h> {
    history: &'h History,
    config: Compaction,
    /// Per (partition, key): each offset known to hold a record of the key, with what is known
    /// there (normally one record; more when reads disagree).
    known: BTreeMap<(i32, u64), BTreeMap<i64, Vec<Known>>>,
    /// The final read: (partition, offset, value).
    final_log: BTreeSet<(i32, i64, u64)>,
    /// Per key: the tombstones whose place is unknown that no read returned, and that may
    /// have expired by the end of the final read: what may have removed a key's records.
    excusing: BTreeMap<u64, Vec<u64>>,
    /// Per key: its sends.
    by_key: BTreeMap<u64, Vec<&'h SendOp>>,
}

/// Where `send` is known to be: acknowledged at an offset, acks=all (acks=1 acknowledgements
/// may name an offset their leader lost).
fn placed(send: &SendOp) -> Option<(i32, i64)> {
    match send.outcome {
        Outcome::Ok { partition, offset } if offset >= 0 && send.kind != Delivery::LeaderOnly => {
            Some((partition, offset))
        }
        _ => None,
    }
}

impl<'h> Compacted<'h> {
    /// Indexes `history`, a compacted topic's with settings `config`.
    pub fn of(history: &'h History, config: Compaction) -> Self {
        let mut known: BTreeMap<(i32, u64), BTreeMap<i64, Vec<Known>>> = BTreeMap::new();
        let mut read: BTreeSet<u64> = BTreeSet::new();
        let mut note = |partition: i32, offset: i64, value: u64, source: Source| {
            // A value nobody sent has no key (a phantom, reported as such).
            let Some(send) = history.sends.get(&value) else {
                return;
            };
            let records = known
                .entry((partition, send.key))
                .or_default()
                .entry(offset)
                .or_default();
            if !records.iter().any(|k| k.value == value) {
                records.push(Known { value, source });
            }
        };
        for (&partition, reads) in &history.reads {
            for &(offset, value) in reads {
                note(partition, offset, value, Source::FinalRead);
                read.insert(value);
            }
        }
        for send in history.sends.values() {
            if let Some((partition, offset)) = placed(send) {
                let at_ms = send.completed_ms;
                note(
                    partition,
                    offset,
                    send.value,
                    Source::Acknowledged { at_ms },
                );
            }
        }
        for poll in &history.polls {
            for &(partition, offset, value) in &poll.records {
                let (reader, at_ms) = (poll.reader, poll.at_ms);
                note(partition, offset, value, Source::Polled { reader, at_ms });
                read.insert(value);
            }
        }
        for d in &history.group.deliveries {
            let (member, generation) = (d.member, d.generation);
            note(
                d.partition,
                d.offset,
                d.value,
                Source::Group { member, generation },
            );
            read.insert(d.value);
        }
        let final_log = history
            .reads
            .iter()
            .flat_map(|(&p, reads)| reads.iter().map(move |&(o, v)| (p, o, v)))
            .collect();
        let mut by_key: BTreeMap<u64, Vec<&SendOp>> = BTreeMap::new();
        for send in history.sends.values() {
            by_key.entry(send.key).or_default().push(send);
        }
        let mut this = Self {
            history,
            config,
            known,
            final_log,
            excusing: BTreeMap::new(),
            by_key,
        };
        for &value in &history.tombstones {
            let Some(send) = history.sends.get(&value) else {
                continue;
            };
            let unplaced = placed(send).is_none() && !matches!(send.outcome, Outcome::Fail(_));
            if unplaced && !read.contains(&value) && this.expired(send) {
                this.excusing.entry(send.key).or_default().push(value);
            }
        }
        this
    }

    /// Whether tombstone `send` may have been removed by the end of the final read:
    /// `delete.retention.ms` after it was invoked (unknown when the history does not say when
    /// the final read ended: then it may).
    fn expired(&self, send: &SendOp) -> bool {
        self.history.final_read_ms.is_none_or(|end| {
            end >= send
                .invoked_ms
                .saturating_add(self.config.delete_retention_ms)
        })
    }

    /// The latest known record of `key` in `partition` above `offset`.
    fn later(&self, partition: i32, key: u64, offset: i64) -> Option<(i64, Known)> {
        let records = self.known.get(&(partition, key))?;
        let (&at, known) = records
            .range((Bound::Excluded(offset), Bound::Unbounded))
            .next_back()?;
        Some((at, known[0]))
    }

    /// What became of record `value` of `key` at `partition`@`offset`.
    fn fate(&self, partition: i32, key: u64, offset: i64, value: u64) -> Fate {
        if offset < start_of(self.history, partition) {
            return Fate::Trimmed;
        }
        if self.final_log.contains(&(partition, offset, value)) {
            return Fate::Present;
        }
        if let Some((at, known)) = self.later(partition, key, offset) {
            return Fate::Superseded {
                by: known.value,
                at,
            };
        }
        if let Some(&by) = self
            .excusing
            .get(&key)
            .and_then(|t| t.iter().find(|&&t| t != value))
        {
            return Fate::Excused { by };
        }
        match self.history.sends.get(&value) {
            Some(send) if self.history.is_tombstone(value) => {
                if self.expired(send) {
                    Fate::Expired
                } else {
                    Fate::EarlyTombstone
                }
            }
            _ => Fate::LostLatest,
        }
    }

    /// Judges acknowledged acks=all `send`, which the final read does not hold where it was
    /// acknowledged (`unread`: nowhere): counted as compacted when the cleaner may have removed
    /// it; its key's latest is left to [`Compacted::check`].
    pub fn judge_acknowledged(&self, send: &SendOp, unread: bool, verdict: &mut Verdict) {
        let Some((partition, offset)) = placed(send) else {
            // acks=0: no offset, so only whether anything may have superseded it.
            if unread {
                self.judge_unplaced(send, verdict);
            }
            return;
        };
        match self.fate(partition, send.key, offset, send.value) {
            Fate::Superseded { by, at } => {
                let lag = self.config.min_compaction_lag_ms;
                let end = self.history.final_read_ms;
                match end.filter(|&end| end < send.invoked_ms.saturating_add(lag)) {
                    Some(end) => verdict.report(Anomaly::LostWrite, || {
                        format!(
                            "value {} of key {} at {partition}@{offset}, written at {} ms, superseded by {by} at @{at}, is gone by {end} ms, within min.compaction.lag.ms ({lag} ms)",
                            send.value, send.key, send.invoked_ms
                        )
                    }),
                    None if unread => verdict.compacted += 1,
                    None => {}
                }
            }
            Fate::Excused { .. } | Fate::Expired if unread => verdict.compacted += 1,
            // The key's latest: `check` judges it once per key.
            _ => {}
        }
    }

    /// Judges an acknowledged send without an offset (acks=0) that no read returned: it may
    /// have been superseded by any other send of its key that may have come after it, or be a
    /// tombstone that expired; otherwise it was its key's latest and is lost.
    fn judge_unplaced(&self, send: &SendOp, verdict: &mut Verdict) {
        let sends = self.by_key.get(&send.key).map_or(&[][..], Vec::as_slice);
        let later = sends.iter().any(|other| {
            other.value != send.value
                && match other.outcome {
                    Outcome::Fail(_) => false,
                    Outcome::Ok { .. } => other.completed_ms >= send.invoked_ms,
                    Outcome::Pending | Outcome::Info(_) => true,
                }
        });
        if later || (self.history.is_tombstone(send.value) && self.expired(send)) {
            verdict.compacted += 1;
        } else {
            verdict.report(Anomaly::CompactionLostLatest, || {
                format!(
                    "value {} of key {} (acks=0, acknowledged at {} ms) is not in the final read, and no other send of its key came after it",
                    send.value, send.key, send.completed_ms
                )
            });
        }
    }

    /// Judges each key of each partition: its latest known record is in the final read (or
    /// may have gone), the final read's latest of it is no superseded value, and readers saw
    /// its tombstones within `delete.retention.ms`.
    pub fn check(&self, verdict: &mut Verdict) {
        if !self.history.finished {
            return; // the final read is unfinished: liveness says so
        }
        for (&(partition, key), records) in &self.known {
            let Some((&offset, latest)) = records.iter().next_back() else {
                continue;
            };
            let present = latest
                .iter()
                .any(|k| self.final_log.contains(&(partition, offset, k.value)));
            let known = latest[0];
            let fate = if present {
                Fate::Present
            } else {
                self.fate(partition, key, offset, known.value)
            };
            if fate == Fate::LostLatest {
                verdict.report(Anomaly::CompactionLostLatest, || {
                    format!(
                        "key {key}: its latest record, value {} at {partition}@{offset} ({}), is not in the final read",
                        known.value,
                        known.source.describe()
                    )
                });
            }
            // Only while the key's latest had to be there: once it may have gone (an expired
            // tombstone, or one that may have come after it), a cleaner running during the
            // final read may have removed it with the value the read had already passed.
            if matches!(fate, Fate::LostLatest | Fate::EarlyTombstone) {
                self.check_resurrected(partition, key, records, verdict);
            }
        }
        tombstones::check(self, verdict);
    }

    /// The final read's latest record of `key` in `partition` must not be a value with a later
    /// record of the key known (when the key's latest had to be there): that value was
    /// superseded, and shows as the key's state.
    fn check_resurrected(
        &self,
        partition: i32,
        key: u64,
        records: &BTreeMap<i64, Vec<Known>>,
        verdict: &mut Verdict,
    ) {
        let in_final = records.iter().rev().find_map(|(&offset, known)| {
            known
                .iter()
                .find(|k| self.final_log.contains(&(partition, offset, k.value)))
                .map(|k| (offset, k.value))
        });
        let Some((read_at, read)) = in_final else {
            return;
        };
        if self.history.is_tombstone(read) {
            return; // deleted either way: what vanished after it is lost-latest's
        }
        if let Some((at, later)) = self.later(partition, key, read_at) {
            verdict.report(Anomaly::CompactionResurrected, || {
                format!(
                    "key {key}: the final read's latest is value {read} at {partition}@{read_at}, but {} {} was written after it at @{at} ({})",
                    if self.history.is_tombstone(later.value) { "tombstone" } else { "value" },
                    later.value,
                    later.source.describe()
                )
            });
        }
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
