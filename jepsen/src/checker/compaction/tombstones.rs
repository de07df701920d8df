//! Tombstones and the reads that passed them (`compaction-tombstone-early`): a read that began
//! at or before a tombstone's offset and passed it within `delete.retention.ms` of the
//! tombstone's write must have returned it, unless a later record of its key superseded it.
//!
//! The reads are the final read (from its log start; it passed every offset by the time it
//! ended, `History::final_read_ms`) and each reader's *runs*: its records of one partition
//! from where it began (the log start, for a reader never repositioned or after a reset to
//! it; else its first record) until it was repositioned or reset. A run passed an offset by
//! the time a poll returned a record above it.

use std::collections::{BTreeMap, BTreeSet};

use super::{start_of, Anomaly, Compacted, Verdict};
use crate::history::History;

/// One reader's records of one partition from where it began until it was moved.
#[derive(Debug, Default)]
struct Run {
    reader: usize,
    /// Where it began: `None` at the log start, else at this offset.
    begin: Option<i64>,
    /// Its records (offset, value, when their poll returned), in read order.
    records: Vec<(i64, u64, u64)>,
}

/// A run indexed by offset.
struct Passes {
    reader: usize,
    begin: Option<i64>,
    /// Offsets read, ascending, each with the earliest time the run had read it or any offset
    /// above it (when it had passed everything below).
    passed: Vec<(i64, u64)>,
    /// (offset, value) read.
    read: BTreeSet<(i64, u64)>,
}

impl Passes {
    fn of(run: Run) -> Self {
        let read = run.records.iter().map(|&(o, v, _)| (o, v)).collect();
        let mut passed: Vec<(i64, u64)> = run.records.iter().map(|&(o, _, t)| (o, t)).collect();
        passed.sort_unstable();
        for i in (0..passed.len().saturating_sub(1)).rev() {
            passed[i].1 = passed[i].1.min(passed[i + 1].1);
        }
        Self {
            reader: run.reader,
            begin: run.begin,
            passed,
            read,
        }
    }

    /// When the run passed `offset` without reading `value` there, having begun at or below
    /// it: the first offset it read above it, and the earliest time it had.
    fn passed_without(&self, offset: i64, value: u64) -> Option<(i64, u64)> {
        if self.begin.is_some_and(|b| b > offset) || self.read.contains(&(offset, value)) {
            return None;
        }
        let i = self.passed.partition_point(|&(o, _)| o <= offset);
        self.passed.get(i).copied()
    }
}

/// Each partition's runs of every reader.
fn runs(history: &History) -> BTreeMap<i32, Vec<Passes>> {
    let mut runs: Vec<(i32, Run)> = Vec::new();
    // Per (reader, partition): its open run, and whether its next begins at the log start.
    let mut open: BTreeMap<(usize, i32), usize> = BTreeMap::new();
    let mut from_start: BTreeSet<(usize, i32)> = BTreeSet::new();
    let mut moved: BTreeSet<usize> = BTreeSet::new();
    for poll in &history.polls {
        let reader = poll.reader;
        if poll.repositioned {
            open.retain(|&(r, _), _| r != reader);
            from_start.retain(|&(r, _)| r != reader);
            moved.insert(reader);
        }
        for &(partition, _) in &poll.resets {
            open.remove(&(reader, partition));
            from_start.insert((reader, partition));
        }
        for &(partition, offset, value) in &poll.records {
            let index = *open.entry((reader, partition)).or_insert_with(|| {
                let at_start = from_start.remove(&(reader, partition)) || !moved.contains(&reader);
                runs.push((
                    partition,
                    Run {
                        reader,
                        begin: (!at_start).then_some(offset),
                        records: Vec::new(),
                    },
                ));
                runs.len() - 1
            });
            runs[index].1.records.push((offset, value, poll.at_ms));
        }
    }
    let mut by_partition: BTreeMap<i32, Vec<Passes>> = BTreeMap::new();
    for (partition, run) in runs {
        by_partition
            .entry(partition)
            .or_default()
            .push(Passes::of(run));
    }
    by_partition
}

/// Reports every read that passed a tombstone, the latest known record of its key, within
/// `delete.retention.ms` of its write without returning it.
pub(super) fn check(compacted: &Compacted<'_>, verdict: &mut Verdict) {
    let history = compacted.history;
    let retention = compacted.config.delete_retention_ms;
    let runs = runs(history);
    for (&(partition, key), records) in &compacted.known {
        let start = start_of(history, partition);
        for (&offset, known) in records.range(start..) {
            for k in known {
                let Some(send) = history
                    .sends
                    .get(&k.value)
                    .filter(|_| history.is_tombstone(k.value))
                else {
                    continue;
                };
                // Superseded, or possibly: it may have gone at any time.
                if compacted.later(partition, key, offset).is_some()
                    || compacted
                        .excusing
                        .get(&key)
                        .is_some_and(|t| t.iter().any(|&t| t != k.value))
                {
                    continue;
                }
                let deadline = send.invoked_ms.saturating_add(retention);
                let tombstone = k.value;
                let written = send.invoked_ms;
                if let Some(end) = history.final_read_ms.filter(|&end| end < deadline) {
                    if !compacted
                        .final_log
                        .contains(&(partition, offset, tombstone))
                    {
                        verdict.report(Anomaly::CompactionTombstoneEarly, || {
                            format!(
                                "tombstone {tombstone} of key {key} at {partition}@{offset}, written at {written} ms, is not in the final read, which ended at {end} ms, within delete.retention.ms ({retention} ms)"
                            )
                        });
                    }
                }
                for run in runs.get(&partition).into_iter().flatten() {
                    let Some((above, at_ms)) = run.passed_without(offset, tombstone) else {
                        continue;
                    };
                    if at_ms < deadline {
                        verdict.report(Anomaly::CompactionTombstoneEarly, || {
                            format!(
                                "reader {} read {partition} from {} past @{offset} (to @{above} by {at_ms} ms) without tombstone {tombstone} of key {key}, written at {written} ms, within delete.retention.ms ({retention} ms)",
                                run.reader,
                                run.begin.map_or("the log start".into(), |b| format!("@{b}")),
                            )
                        });
                    }
                }
            }
        }
    }
}
