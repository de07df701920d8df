//! The readers' polls during the run: each agrees with the final log, each reader moves
//! through each partition's order one record at a time, between polls (poll skip,
//! nonmonotonic poll, with resets to the log start allowed) and within one poll
//! (int-poll-skip, int-nonmonotonic-poll); and what is measured rather than judged: how many
//! times each value was consumed, and realtime lag.
//!
//! In a compacted topic a reader may pass over records the cleaner removed: a skip is then one
//! over a record the final read holds, by a poll that returned before the final read began
//! (the record was there from its write until then, so the reader's fetch had to return it;
//! later, a cleaner running during the final read may have removed it), and a polled record
//! the final read lacks is no inconsistent offset (whether it was allowed to vanish is
//! `compaction`'s question). Going back stays an anomaly.

use std::collections::{BTreeMap, BTreeSet};

use super::order::Orders;
use super::{start_of, Anomaly, Lag, Verdict};
use crate::history::{History, Outcome};

/// Removes `reader`'s entries (of every partition) from `map`, visiting only them (a history
/// of many readers would make a pass over every entry quadratic).
fn forget<V>(map: &mut BTreeMap<(usize, i32), V>, reader: usize) {
    let keys: Vec<(usize, i32)> = map
        .range((reader, i32::MIN)..=(reader, i32::MAX))
        .map(|(k, _)| *k)
        .collect();
    for key in keys {
        map.remove(&key);
    }
}

/// Checks the polls against the final log and each partition's order.
pub(super) fn check_polls(history: &History, orders: &Orders, verdict: &mut Verdict) {
    let final_log: BTreeMap<(i32, i64), u64> = history
        .reads
        .iter()
        .flat_map(|(p, reads)| reads.iter().map(move |(o, v)| ((*p, *o), *v)))
        .collect();
    let compacted = history.compaction.is_some();
    // In a compacted topic: whether a poll that returned at `at_ms` came before the final read
    // began (unknown: never).
    let before_final = |at_ms: u64| history.final_read_began_ms.is_some_and(|b| at_ms <= b);
    // In a compacted topic, the records every read before the final one must have met: each
    // key's latest in the final log (a superseded record the final read held may be gone from
    // the replica another read was served by: replicas clean on their own schedules).
    let owed: BTreeSet<(i32, i64)> = if compacted {
        history
            .final_latest()
            .into_iter()
            .map(|(p, o, _)| (p, o))
            .collect()
    } else {
        BTreeSet::new()
    };
    // Whether the dense indexes from `expected` up to (not including) `index` skip a record:
    // any known one, or in a compacted topic one it owed, before the final read began.
    let skips = |partition: i32, expected: usize, index: usize, at_ms: u64| {
        !compacted
            || before_final(at_ms)
                && (expected..index).any(|i| {
                    orders
                        .offset(partition, i)
                        .is_some_and(|o| owed.contains(&(partition, o)))
                })
    };
    // Per reader and partition: the offset and dense index it read last.
    let mut last: BTreeMap<(usize, i32), (i64, usize)> = BTreeMap::new();
    let mut reset: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    for poll in &history.polls {
        if poll.repositioned {
            // Assigned anew or subscribed: no reference point in any partition.
            forget(&mut last, poll.reader);
            forget(&mut reset, poll.reader);
        }
        for &(partition, from) in &poll.resets {
            reset.insert((poll.reader, partition), from);
        }
        // Partitions this poll has returned records of so far.
        let mut in_poll: BTreeSet<i32> = BTreeSet::new();
        for &(partition, offset, value) in &poll.records {
            let start = start_of(history, partition);
            if history.finished && offset >= start {
                match final_log.get(&(partition, offset)) {
                    Some(v) if *v == value => {}
                    Some(v) => verdict.report(Anomaly::InconsistentOffset, || {
                        format!(
                            "reader {} read {value} at {partition}@{offset} at {} ms; the final log has {v}",
                            poll.reader, poll.at_ms
                        )
                    }),
                    // Cleaned away since: judged by `compaction`.
                    None if compacted => {}
                    None => verdict.report(Anomaly::InconsistentOffset, || {
                        format!(
                            "reader {} read {value} at {partition}@{offset} at {} ms; the final log ends before it",
                            poll.reader, poll.at_ms
                        )
                    }),
                }
            }
            let index = orders
                .index(partition, offset)
                .expect("every polled offset is in the order");
            let previous = last.insert((poll.reader, partition), (offset, index));
            let (previous_offset, expected) = match previous {
                Some((o, i)) => (o, i + 1),
                // Repositioned: wherever it begins is fine.
                None if poll.repositioned => (-1, index),
                None => (-1, 0),
            };
            if !in_poll.insert(partition) {
                // Within one poll.
                if index > expected {
                    if !skips(partition, expected, index, poll.at_ms) {
                        continue;
                    }
                    verdict.report(Anomaly::IntPollSkip, || {
                        format!(
                            "reader {} read {partition}@{previous_offset} then @{offset} in one poll at {} ms, skipping {} records",
                            poll.reader,
                            poll.at_ms,
                            index - expected
                        )
                    });
                } else if index < expected {
                    verdict.report(Anomaly::IntNonmonotonicPoll, || {
                        format!(
                            "reader {} read {partition}@{previous_offset} then @{offset} in one poll at {} ms",
                            poll.reader, poll.at_ms
                        )
                    });
                }
                continue;
            }
            let was_reset = reset.remove(&(poll.reader, partition)).is_some();
            if was_reset && index > expected {
                // Reset to the log start offset: it may lie ahead, never past where the
                // final read began (the log start only moves up). In a compacted topic the
                // first record after it may lie above it: only records it owed (each key's
                // latest in the final log) between the two count.
                let past_start = if compacted {
                    offset > start
                        && before_final(poll.at_ms)
                        && owed
                            .range((partition, start)..(partition, offset))
                            .next()
                            .is_some()
                } else {
                    offset > start
                };
                if history.finished && past_start {
                    verdict.report(Anomaly::LogStartWentBack, || {
                        format!(
                            "reader {} reset from {partition}@{previous_offset} to @{offset} at {} ms; the final read began at @{start}",
                            poll.reader, poll.at_ms
                        )
                    });
                }
            } else if index > expected {
                if !skips(partition, expected, index, poll.at_ms) {
                    continue;
                }
                verdict.report(Anomaly::PollSkip, || {
                    format!(
                        "reader {} jumped from {partition}@{previous_offset} to @{offset} at {} ms",
                        poll.reader, poll.at_ms
                    )
                });
            } else if index < expected {
                verdict.report(Anomaly::NonmonotonicPoll, || {
                    format!(
                        "reader {} went back from {partition}@{previous_offset} to @{offset} at {} ms",
                        poll.reader, poll.at_ms
                    )
                });
            }
        }
    }
}

/// Measures how many times each value was consumed, and the polls' realtime lag.
pub(super) fn measure(history: &History, orders: &Orders, verdict: &mut Verdict) {
    let mut by_reader: BTreeMap<(usize, u64), u64> = BTreeMap::new();
    for poll in &history.polls {
        for &(_, _, value) in &poll.records {
            *by_reader.entry((poll.reader, value)).or_default() += 1;
        }
    }
    for times in by_reader.into_values() {
        *verdict.reader_consume_counts.entry(times).or_default() += 1;
    }
    let mut by_group: BTreeMap<u64, u64> = BTreeMap::new();
    for d in &history.group.deliveries {
        *by_group.entry(d.value).or_default() += 1;
    }
    for times in by_group.into_values() {
        *verdict.group_consume_counts.entry(times).or_default() += 1;
    }
    verdict.realtime_lag = realtime_lag(history, orders);
}

/// Realtime lag (see [`Lag`]).
fn realtime_lag(history: &History, orders: &Orders) -> Lag {
    // When each value was known written: acknowledged, or returned by a poll.
    let mut written: BTreeMap<u64, u64> = BTreeMap::new();
    let mut note = |value: u64, at_ms: u64| {
        let t = written.entry(value).or_insert(at_ms);
        *t = (*t).min(at_ms);
    };
    for send in history.sends.values() {
        if let Outcome::Ok { .. } = send.outcome {
            note(send.value, send.completed_ms);
        }
    }
    for poll in &history.polls {
        for &(_, _, value) in &poll.records {
            note(value, poll.at_ms);
        }
    }
    // Per partition and dense index: since when some record at or after it was known written
    // (a later record's existence proves the earlier ones').
    let mut expired: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
    let mut expired_at = |partition: i32, index: usize| -> Option<u64> {
        let times = expired.entry(partition).or_insert_with(|| {
            let mut times: Vec<u64> = orders
                .values(partition)
                .iter()
                .map(|v| written.get(v).copied().unwrap_or(u64::MAX))
                .collect();
            for i in (0..times.len().saturating_sub(1)).rev() {
                times[i] = times[i].min(times[i + 1]);
            }
            times
        });
        times.get(index).copied().filter(|&t| t != u64::MAX)
    };
    // Per reader and partition: the highest dense index it has read.
    let mut highest: BTreeMap<(usize, i32), usize> = BTreeMap::new();
    let mut lags: Vec<(u64, usize, i32)> = Vec::new();
    for (i, poll) in history.polls.iter().enumerate() {
        if poll.repositioned {
            forget(&mut highest, poll.reader);
        }
        for &(partition, offset, _) in &poll.records {
            if let Some(index) = orders.index(partition, offset) {
                let entry = highest.entry((poll.reader, partition)).or_insert(index);
                *entry = (*entry).max(index);
            }
        }
        let at = poll.invoked_ms.unwrap_or(poll.at_ms);
        for (&(_, partition), &index) in
            highest.range((poll.reader, i32::MIN)..=(poll.reader, i32::MAX))
        {
            let lag = expired_at(partition, index + 1).map_or(0, |t| at.saturating_sub(t));
            lags.push((lag, i, partition));
        }
    }
    let Some(&(max_ms, worst_poll, worst_partition)) = lags.iter().max_by_key(|l| l.0) else {
        return Lag::default();
    };
    let mut sorted: Vec<u64> = lags.iter().map(|l| l.0).collect();
    sorted.sort_unstable();
    let rank = |p: usize| sorted[(sorted.len() * p).div_ceil(100).max(1) - 1];
    let poll = &history.polls[worst_poll];
    Lag {
        samples: sorted.len() as u64,
        max_ms,
        p50_ms: rank(50),
        p99_ms: rank(99),
        worst: (max_ms > 0).then(|| {
            format!(
                "reader {} at {} ms, partition {worst_partition}",
                poll.reader, poll.at_ms
            )
        }),
    }
}
