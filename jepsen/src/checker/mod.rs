//! The checker: each anomaly class with a count and up to a few examples, and the figures
//! Jepsen measures beside them (int-send-skips, how many times each value was consumed,
//! realtime lag).
//!
//! A partition's order is judged as Jepsen does: by the *dense index* of each offset among
//! every offset known to hold a record (the final read, acknowledged sends, polls, the
//! group's reads), since offsets may be sparse (transaction markers). [`order`] builds it;
//! [`polls`] judges the readers' polls (between polls and within one) and measures; [`sends`]
//! judges the order of each producer's sends; [`report`] renders a verdict as JSON. A
//! compacted topic's history (`History::compaction`) is judged by [`compaction`] where records
//! may vanish: what a log cleaner may remove, and the classes of what it may not.

mod compaction;
mod cycles;
mod order;
mod polls;
pub mod report;
mod sends;

use std::collections::BTreeMap;

use crate::history::{Delivery, History, Outcome};
pub use cycles::Cycle;
use order::Orders;
pub use report::{report_json, txn_report_json};

/// Examples kept per anomaly class.
pub(crate) const EXAMPLES: usize = 3;

/// The kinds of anomaly the checker knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Anomaly {
    /// An acknowledged write (acks=all) is never read.
    LostWrite,
    /// A value is read where it was not acknowledged.
    OffsetMismatch,
    /// A value of an idempotent producer is read twice.
    Duplicate,
    /// A value whose send definitely failed is read.
    ReadOfFailedSend,
    /// A value nobody sent is read.
    Phantom,
    /// A send never resolved.
    UnresolvedSend,
    /// An idempotent producer's values are not in send order within a partition.
    NonmonotonicSend,
    /// One offset read with two values (during the run, or against the final log).
    InconsistentOffset,
    /// A reader skipped offsets, or a read was not dense.
    PollSkip,
    /// A reader went back to offsets it had read.
    NonmonotonicPoll,
    /// Within one poll, consecutive records of one partition skipped records of the
    /// partition's order (dense index delta above 1: Jepsen's int-poll-skip).
    IntPollSkip,
    /// Within one poll, consecutive records of one partition went back or repeated (dense
    /// index delta below 1: Jepsen's int-nonmonotonic-poll).
    IntNonmonotonicPoll,
    /// The sends of one operation of a producer (`SendOp::op`) landed in a partition out of
    /// their send order (Jepsen's int-nonmonotonic-send).
    IntNonmonotonicSend,
    /// The final read never finished.
    Liveness,
    /// A consumer group's committed offset of a partition went back (in generation order).
    CommittedOffsetBackwards,
    /// One record was read by two members of a consumer group in the same generation.
    GroupDoubleDelivery,
    /// An acknowledged write (acks=all) was never read by any member of the consumer group.
    NeverDeliveredToGroup,
    /// The consumer group's members never read every acknowledged write.
    GroupLiveness,
    /// A log start offset went back: the final read began below an offset an acknowledged
    /// DeleteRecords moved it to, or a reader's reset went past where the final read began.
    LogStartWentBack,
    /// Records vanished above every log start offset a DeleteRecords call asked for (in a run
    /// without retention, nothing else may move it).
    LogStartUnasked,
    /// A transaction polled a record it sent itself, before it committed (Jepsen's
    /// precommitted-read).
    PrecommittedRead,
    /// Committed transactions each polled another's records in a cycle (write-read
    /// dependencies alone; Jepsen's G1c without ww inference): each read records of one that
    /// had not committed yet.
    WriteReadCycle,
    /// Compacted topic: the latest record known of a key in a partition (acknowledged there,
    /// polled, or read by the group), a value, is not in the final read, and no later record of
    /// its key may have superseded it.
    CompactionLostLatest,
    /// Compacted topic: the final read's latest record of a key in a partition is a value, yet
    /// a later record of the key is known there that had to be there (the key's latest, a
    /// value, or a tombstone younger than `delete.retention.ms`): an old value resurrected, as
    /// by a cleaner that keeps the first record of each key.
    CompactionResurrected,
    /// Compacted topic: a read that began at or before a tombstone's offset passed it without
    /// it, before `delete.retention.ms` had passed since the tombstone was written, while no
    /// later record of its key may have superseded it.
    CompactionTombstoneEarly,
}

impl Anomaly {
    /// The class's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::LostWrite => "lost acknowledged write",
            Self::OffsetMismatch => "acknowledged offset differs from the read",
            Self::Duplicate => "duplicate",
            Self::ReadOfFailedSend => "read of a definitely failed send",
            Self::Phantom => "phantom",
            Self::UnresolvedSend => "unresolved send",
            Self::NonmonotonicSend => "nonmonotonic send",
            Self::InconsistentOffset => "inconsistent offset",
            Self::PollSkip => "poll skip",
            Self::NonmonotonicPoll => "nonmonotonic poll",
            Self::IntPollSkip => "skip within a poll",
            Self::IntNonmonotonicPoll => "went back within a poll",
            Self::IntNonmonotonicSend => "sends of one operation out of order",
            Self::Liveness => "liveness",
            Self::CommittedOffsetBackwards => "committed offset went backwards",
            Self::GroupDoubleDelivery => "record read by two members in one generation",
            Self::NeverDeliveredToGroup => "acknowledged write never read by the group",
            Self::GroupLiveness => "group liveness",
            Self::LogStartWentBack => "log start offset went back",
            Self::LogStartUnasked => "log start offset moved unasked",
            Self::PrecommittedRead => "transaction read its own write",
            Self::WriteReadCycle => "transactions read each other's writes",
            Self::CompactionLostLatest => "latest record of a key lost in a compacted topic",
            Self::CompactionResurrected => "superseded value resurrected by compaction",
            Self::CompactionTombstoneEarly => "tombstone removed before delete.retention.ms",
        }
    }
}

/// What the checker found.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Each anomaly class found: its count and a few examples.
    pub anomalies: BTreeMap<Anomaly, (u64, Vec<String>)>,
    /// Sends invoked.
    pub sent: u64,
    /// Sends acknowledged.
    pub acknowledged: u64,
    /// Sends that definitely failed.
    pub failed: u64,
    /// Sends whose outcome is unknown.
    pub indeterminate: u64,
    /// Records in the final read.
    pub records_read: u64,
    /// Acknowledged acks=1 writes that were lost (allowed).
    pub lost_leader_only: u64,
    /// Acknowledged writes below the final read's log start offset, gone by DeleteRecords
    /// or retention (allowed).
    pub trimmed: u64,
    /// Compacted topic: acknowledged writes not in the final read because a later record of
    /// their key superseded them, or tombstones past `delete.retention.ms` (allowed).
    pub compacted: u64,
    /// Consecutive sends of one operation to one partition with other records between them
    /// (Jepsen's int-send-skip: information, since Kafka allows it).
    pub int_send_skips: u64,
    /// A few of them.
    pub int_send_skip_examples: Vec<String>,
    /// How many times one reader polled one value: times → how many (reader, value) pairs.
    /// All 1 when no reader read a record twice.
    pub reader_consume_counts: BTreeMap<u64, u64>,
    /// How many times the consumer group's members read one value, over all generations:
    /// times → how many values (Jepsen's consume-counts; 1 for exactly-once consumption, more
    /// after rebalances under at-least-once).
    pub group_consume_counts: BTreeMap<u64, u64>,
    /// Realtime lag of the readers' polls.
    pub realtime_lag: Lag,
    /// Dependency cycles between operations that Kafka allows (measured): per class, how
    /// many strongly connected components hold one, and a few example cycles.
    pub cycles: BTreeMap<Cycle, (u64, Vec<String>)>,
}

/// Realtime lag, as Jepsen measures it: after each poll, for each partition its reader has
/// read (since it was last repositioned), how long before the poll the highest record the
/// reader had read of that partition had stopped being the partition's tail, that is since
/// some later record of the partition's order was known written (acknowledged, or returned by
/// a poll). Zero while it was the tail. Measured from the poll's invocation when recorded,
/// else from its return (which may overstate it by the poll's own duration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Samples (polls × partitions their readers had read).
    pub samples: u64,
    /// The largest lag (ms).
    pub max_ms: u64,
    /// The median (nearest rank, ms).
    pub p50_ms: u64,
    /// The 99th percentile (nearest rank, ms).
    pub p99_ms: u64,
    /// Where the largest lag was seen.
    pub worst: Option<String>,
}

impl Verdict {
    /// Whether nothing is wrong.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The classes found, in order.
    pub fn classes(&self) -> Vec<Anomaly> {
        self.anomalies.keys().copied().collect()
    }

    /// How many of `class` were found.
    pub fn count(&self, class: Anomaly) -> u64 {
        self.anomalies.get(&class).map_or(0, |(count, _)| *count)
    }

    /// One line per anomaly class: name, count, examples.
    pub fn lines(&self) -> Vec<String> {
        self.anomalies
            .iter()
            .map(|(class, (count, examples))| {
                format!("{}: {count} (e.g. {})", class.name(), examples.join("; "))
            })
            .collect()
    }

    fn report(&mut self, class: Anomaly, example: impl FnOnce() -> String) {
        let (count, examples) = self.anomalies.entry(class).or_default();
        *count += 1;
        if examples.len() < EXAMPLES {
            examples.push(example());
        }
    }
}

/// Checks the consumer group: one owner per record and generation, committed offsets that
/// never go back across generations, and every acknowledged write read by some member.
fn check_group(history: &History, verdict: &mut Verdict) {
    let group = &history.group;
    if !group.ran {
        return;
    }
    let mut owner: BTreeMap<(i32, i32, i64), usize> = BTreeMap::new();
    for d in &group.deliveries {
        if let Some(other) = owner.insert((d.generation, d.partition, d.offset), d.member) {
            if other != d.member {
                verdict.report(Anomaly::GroupDoubleDelivery, || {
                    format!(
                        "{}@{} (value {}) read by members {other} and {} in generation {}",
                        d.partition, d.offset, d.value, d.member, d.generation
                    )
                });
            }
        }
    }
    let mut commits: Vec<&crate::history::GroupCommit> = group.commits.iter().collect();
    commits.sort_by_key(|c| (c.partition, c.generation, c.at_ms));
    for pair in commits.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.partition == b.partition && b.offset < a.offset {
            verdict.report(Anomaly::CommittedOffsetBackwards, || {
                format!(
                    "partition {}: {} (member {}, generation {}) then {} (member {}, generation {})",
                    a.partition, a.offset, a.member, a.generation, b.offset, b.member, b.generation
                )
            });
        }
    }
    if !group.finished {
        verdict.report(Anomaly::GroupLiveness, || {
            format!(
                "the members read {} records and never caught up",
                group.deliveries.len()
            )
        });
        return;
    }
    // Records below the log start the group last saw, or below the final read's, may be gone
    // by DeleteRecords or retention before the group read them.
    let starts: BTreeMap<i32, i64> = history
        .group_starts
        .keys()
        .chain(history.final_starts.keys())
        .map(|&partition| {
            let start = history
                .group_starts
                .get(&partition)
                .copied()
                .unwrap_or(0)
                .max(start_of(history, partition));
            (partition, start)
        })
        .collect();
    for send in history.unread_by_group(&starts) {
        verdict.report(Anomaly::NeverDeliveredToGroup, || {
            format!(
                "value {} acknowledged at {} ms",
                send.value, send.completed_ms
            )
        });
    }
}

/// Where the final read of `partition` began: its log start offset then.
fn start_of(history: &History, partition: i32) -> i64 {
    history.final_starts.get(&partition).copied().unwrap_or(0)
}

/// Checks log start offsets: they never go back below what DeleteRecords acknowledged or what
/// was seen earlier, and, without retention, they move only as far as DeleteRecords asked.
fn check_log_starts(history: &History, verdict: &mut Verdict) {
    if !history.finished {
        return;
    }
    // Per partition: the highest acknowledged log start, and the furthest any call may have
    // moved it.
    let mut acknowledged: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    let mut asked: BTreeMap<i32, i64> = BTreeMap::new();
    for trim in &history.trims {
        let furthest = match (trim.low_watermark, trim.offset) {
            (Some(low), offset) => {
                let entry = acknowledged.entry(trim.partition).or_insert((0, 0));
                if low > entry.0 {
                    *entry = (low, trim.completed_ms);
                }
                low.max(offset.unwrap_or(low))
            }
            // Unknown: it may have moved the log start as far as it asked.
            (None, offset) => offset.unwrap_or(i64::MAX),
        };
        let entry = asked.entry(trim.partition).or_insert(0);
        *entry = (*entry).max(furthest);
    }
    for (&partition, &start) in &history.final_starts {
        if let Some(&(low, at_ms)) = acknowledged.get(&partition) {
            if start < low {
                verdict.report(Anomaly::LogStartWentBack, || {
                    format!(
                        "partition {partition}: DeleteRecords acknowledged log start {low} at {at_ms} ms; the final read began at {start}"
                    )
                });
            }
        }
        if let Some(&later) = history.group_starts.get(&partition) {
            if later < start {
                verdict.report(Anomaly::LogStartWentBack, || {
                    format!("partition {partition}: the final read began at {start}, the log start was {later} later")
                });
            }
        }
        let furthest = asked.get(&partition).copied().unwrap_or(0);
        if !history.retention && start > furthest {
            verdict.report(Anomaly::LogStartUnasked, || {
                format!(
                    "partition {partition}: the final read began at {start}; DeleteRecords asked for at most {furthest}"
                )
            });
        }
    }
}

/// Checks `history` against what each producer promised.
pub fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let compacted = history
        .compaction
        .map(|config| compaction::Compacted::of(history, config));
    check_group(history, &mut verdict);
    // Where each value was read in the final read.
    let mut read_at: BTreeMap<u64, Vec<(i32, i64)>> = BTreeMap::new();
    check_log_starts(history, &mut verdict);
    for (partition, reads) in &history.reads {
        let mut expected = start_of(history, *partition);
        let mut seen = BTreeMap::new();
        for (offset, value) in reads {
            verdict.records_read += 1;
            if let Some(other) = seen.insert(*offset, *value) {
                if other != *value {
                    verdict.report(Anomaly::InconsistentOffset, || {
                        format!("{partition}@{offset} read as {other} and as {value}")
                    });
                }
                continue;
            }
            // A compacted log has holes where the cleaner removed records.
            let out_of_place = if history.sparse_offsets || history.compaction.is_some() {
                *offset < expected
            } else {
                *offset != expected
            };
            if out_of_place {
                verdict.report(Anomaly::PollSkip, || {
                    format!(
                        "final read of partition {partition}: offset {offset} after {}",
                        expected - 1
                    )
                });
            }
            expected = offset + 1;
            read_at
                .entry(*value)
                .or_default()
                .push((*partition, *offset));
        }
    }
    for send in history.sends.values() {
        verdict.sent += 1;
        let reads = read_at.get(&send.value).map_or(&[][..], Vec::as_slice);
        match &send.outcome {
            Outcome::Pending => verdict.report(Anomaly::UnresolvedSend, || {
                format!(
                    "value {} of producer {} never resolved",
                    send.value, send.producer
                )
            }),
            Outcome::Ok { partition, offset } => {
                verdict.acknowledged += 1;
                if *offset >= 0 && *offset < start_of(history, *partition) {
                    // Below the log start: gone by DeleteRecords or retention (whether it was
                    // allowed to move there is `check_log_starts`'s question).
                    verdict.trimmed += 1;
                } else if let Some(compacted) = compacted
                    .as_ref()
                    .filter(|_| send.kind != Delivery::LeaderOnly)
                    .filter(|_| match *offset {
                        // acks=0: no offset to be at, only the read.
                        ..0 => reads.is_empty(),
                        _ => !reads.contains(&(*partition, *offset)),
                    })
                {
                    // Not where it was acknowledged: the cleaner may have removed it.
                    compacted.judge_acknowledged(send, reads.is_empty(), &mut verdict);
                } else if reads.is_empty() {
                    if send.kind == Delivery::LeaderOnly {
                        verdict.lost_leader_only += 1;
                    } else {
                        verdict.report(Anomaly::LostWrite, || {
                            format!(
                                "value {} acknowledged at {partition}@{offset} at {} ms",
                                send.value, send.completed_ms
                            )
                        });
                    }
                } else if *offset >= 0 && !reads.contains(&(*partition, *offset)) {
                    if send.kind == Delivery::LeaderOnly {
                        // The acknowledged copy was lost with its leader; an earlier attempt's
                        // copy (a retry after no answer) survived elsewhere: allowed for acks=1.
                        verdict.lost_leader_only += 1;
                        continue;
                    }
                    verdict.report(Anomaly::OffsetMismatch, || {
                        format!(
                            "value {} acknowledged at {partition}@{offset}, read at {reads:?}",
                            send.value
                        )
                    });
                }
            }
            Outcome::Fail(why) => {
                verdict.failed += 1;
                if !reads.is_empty() {
                    verdict.report(Anomaly::ReadOfFailedSend, || {
                        format!("value {} failed ({why}), read at {reads:?}", send.value)
                    });
                }
            }
            Outcome::Info(_) => verdict.indeterminate += 1,
        }
        if reads.len() > 1 && send.kind == Delivery::Idempotent {
            verdict.report(Anomaly::Duplicate, || {
                format!(
                    "value {} of an idempotent producer read at {reads:?}",
                    send.value
                )
            });
        }
    }
    for value in read_at.keys() {
        if !history.sends.contains_key(value) {
            verdict.report(Anomaly::Phantom, || format!("value {value}"));
        }
    }
    let orders = Orders::of(history);
    if let Some(compacted) = &compacted {
        compacted.check(&mut verdict);
    }
    sends::check_send_order(history, &orders, &read_at, &mut verdict);
    polls::check_polls(history, &orders, &mut verdict);
    polls::measure(history, &orders, &mut verdict);
    cycles::check_cycles(history, &orders, &mut verdict);
    if !history.finished {
        verdict.report(Anomaly::Liveness, || {
            "the client never finished its final read".into()
        });
    }
    verdict
}

#[cfg(test)]
mod class_tests;
#[cfg(test)]
mod tests;
