//! Compacted topics against a model cleaner: random keyed writes (values and tombstones,
//! acknowledged, indeterminate or failed) into one partition, cleaned by random passes of a
//! correct cleaner, read by readers from the log start and by a final read. A correct
//! cleaner's history is always valid; the two planted bugs are always caught where the
//! history shows them.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::checker::{check, Anomaly};
use crate::history::{Compaction, Delivery, History, Outcome, Poll, SendOp};

/// One write: key, tombstone, how it ended (0..=6 acknowledged, 7 indeterminate and
/// written, 8 indeterminate and not written, 9 failed), and how late an indeterminate write
/// was appended (a retry still on its way: after later writes, even after it completed).
type Write = (u64, bool, u8, u64);

/// A record in the model log.
#[derive(Clone, Copy, Debug)]
struct Record {
    offset: i64,
    key: u64,
    value: u64,
    tombstone: bool,
    appended_ms: u64,
}

/// The model run: the writes' records, and which offsets each cleaning pass left.
struct Model {
    records: Vec<Record>,
    /// (time, offsets present after the pass), in time order.
    passes: Vec<(u64, BTreeSet<i64>)>,
}

/// When write `i` is invoked; it is appended 1 ms later (an indeterminate one maybe later
/// still) and completes 3 ms later.
fn invoked(i: usize) -> u64 {
    10 * i as u64
}

impl Model {
    /// The writes' records, and a correct cleaner's passes at `times`: each removes some of
    /// the superseded records at least `lag` ms old (`remove` decides which), and each key's
    /// latest record when it is a tombstone at least `retention` ms old, with everything of
    /// its key.
    fn run(writes: &[Write], times: &[u64], remove: &[bool], lag: u64, retention: u64) -> Self {
        let mut records = Vec::new();
        for (i, &(key, tombstone, outcome, delay)) in writes.iter().enumerate() {
            if outcome <= 7 {
                let late = if outcome == 7 { delay } else { 0 };
                records.push(Record {
                    offset: 0,
                    key,
                    value: i as u64 + 1,
                    tombstone,
                    appended_ms: invoked(i) + 1 + late,
                });
            }
        }
        // Offsets in append order.
        records.sort_by_key(|r| (r.appended_ms, r.value));
        for (offset, r) in records.iter_mut().enumerate() {
            r.offset = offset as i64;
        }
        let mut present: BTreeSet<i64> = records.iter().map(|r| r.offset).collect();
        let mut passes = Vec::new();
        let mut coin = remove.iter().cycle();
        for &at in times {
            let appended: Vec<&Record> = records.iter().filter(|r| r.appended_ms <= at).collect();
            let mut latest: BTreeMap<u64, &Record> = BTreeMap::new();
            for r in &appended {
                latest.insert(r.key, r);
            }
            for r in &appended {
                let superseded = latest[&r.key].offset > r.offset;
                if superseded && r.appended_ms + lag <= at && *coin.next().unwrap_or(&true) {
                    present.remove(&r.offset);
                }
            }
            for last in latest.values() {
                if last.tombstone
                    && last.appended_ms + retention <= at
                    && *coin.next().unwrap_or(&true)
                {
                    for r in appended.iter().filter(|r| r.key == last.key) {
                        present.remove(&r.offset);
                    }
                }
            }
            passes.push((at, present.clone()));
        }
        Self { records, passes }
    }

    /// When the final read ending at `end` ms began: `span` ms earlier, but after the last
    /// write.
    fn final_read_began(&self, end: u64, span: u64) -> u64 {
        let last = self.records.iter().map(|r| r.appended_ms).max();
        end.saturating_sub(span).max(last.unwrap_or(0)).min(end)
    }

    /// The final read, ending at `end` ms: it began `span` ms earlier (but after the last
    /// write) and reached the record at offset `o` at `o` ms after it began (or at `end`), as
    /// the cleaner's passes went on.
    fn final_read(&self, end: u64, span: u64) -> Vec<Record> {
        let begin = self.final_read_began(end, span);
        self.records
            .iter()
            .filter(|r| {
                let at = (begin + r.offset as u64).min(end);
                self.read(at, r.offset)
                    .first()
                    .is_some_and(|f| f.offset == r.offset)
            })
            .copied()
            .collect()
    }

    /// The records a read at `at` ms finds, from offset `from`: appended by then and left by
    /// every pass before.
    fn read(&self, at: u64, from: i64) -> Vec<Record> {
        let present = self.passes.iter().rev().find(|(t, _)| *t <= at);
        self.records
            .iter()
            .filter(|r| r.offset >= from && r.appended_ms <= at)
            .filter(|r| present.is_none_or(|(_, p)| p.contains(&r.offset)))
            .copied()
            .collect()
    }
}

/// The history of `writes` with a model run, readers polling at `reader_polls` (per reader,
/// poll times; those after `end` are left out: the readers stop before the final read), and
/// the final read `final_read` that ended at `end` ms, having begun `span` ms earlier (see
/// [`Model::final_read`]).
fn history(
    writes: &[Write],
    model: &Model,
    reader_polls: &[Vec<u64>],
    final_read: &[Record],
    (end, span): (u64, u64),
    compaction: Compaction,
) -> History {
    let mut h = History {
        compaction: Some(compaction),
        finished: true,
        final_read_ms: Some(end),
        final_read_began_ms: Some(model.final_read_began(end, span)),
        final_starts: BTreeMap::from([(0, 0)]),
        reads: BTreeMap::from([(0, final_read.iter().map(|r| (r.offset, r.value)).collect())]),
        ..History::default()
    };
    let offset_of: BTreeMap<u64, i64> = model.records.iter().map(|r| (r.value, r.offset)).collect();
    for (i, &(key, tombstone, outcome, _)) in writes.iter().enumerate() {
        let value = i as u64 + 1;
        let outcome = match outcome {
            0..=6 => Outcome::Ok {
                partition: 0,
                offset: offset_of[&value],
            },
            7 | 8 => Outcome::Info("timed out".into()),
            _ => Outcome::Fail("refused".into()),
        };
        // Not idempotent: a late write lands after later ones.
        let send = SendOp {
            producer: 0,
            kind: Delivery::AtLeastOnce,
            key,
            value,
            invoked_ms: invoked(i),
            outcome,
            completed_ms: invoked(i) + 3,
            op: None,
        };
        h.sends.insert(value, send);
        if tombstone {
            h.tombstones.insert(value);
        }
    }
    for (reader, times) in reader_polls.iter().enumerate() {
        let mut from = 0;
        let mut times: Vec<u64> = times.iter().copied().filter(|&t| t <= end).collect();
        times.sort_unstable();
        for at in times {
            let records = model.read(at, from);
            if let Some(last) = records.last() {
                from = last.offset + 1;
                h.polls.push(Poll {
                    reader,
                    invoked_ms: None,
                    at_ms: at,
                    records: records.iter().map(|r| (0, r.offset, r.value)).collect(),
                    resets: Vec::new(),
                    repositioned: false,
                });
            }
        }
    }
    h.polls.sort_by_key(|p| p.at_ms);
    h
}

prop_compose! {
    fn arb_run()(
        writes in proptest::collection::vec(
            (0u64..4, proptest::bool::weighted(0.3), 0u8..10, prop_oneof![Just(0u64), 0u64..120]),
            1..30,
        ),
        times in proptest::collection::btree_set(0u64..700, 0..8),
        remove in proptest::collection::vec(any::<bool>(), 1..40),
        lag in prop_oneof![Just(0u64), 0u64..40],
        retention in 1u64..300,
        reader_polls in proptest::collection::vec(proptest::collection::vec(0u64..450, 0..5), 0..3),
        end in 300u64..700,
        span in 0u64..60,
    ) -> (Vec<Write>, Vec<u64>, Vec<bool>, u64, u64, Vec<Vec<u64>>, u64, u64) {
        (writes, times.into_iter().collect(), remove, lag, retention, reader_polls, end, span)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_correct_cleaner_s_history_is_always_valid(run in arb_run()) {
        let (writes, times, remove, lag, retention, reader_polls, end, span) = run;
        let model = Model::run(&writes, &times, &remove, lag, retention);
        let compaction = Compaction { delete_retention_ms: retention, min_compaction_lag_ms: lag };
        let final_read = model.final_read(end, span);
        let h = history(&writes, &model, &reader_polls, &final_read, (end, span), compaction);
        let verdict = check(&h);
        prop_assert!(verdict.is_valid(), "{:?}\n{:?}", verdict.lines(), h);
    }

    #[test]
    fn a_cleaner_keeping_each_key_s_first_record_is_caught(run in arb_run()) {
        let (writes, times, remove, lag, retention, reader_polls, end, span) = run;
        let model = Model::run(&writes, &times, &remove, lag, retention);
        let compaction = Compaction { delete_retention_ms: retention, min_compaction_lag_ms: lag };
        // The final read finds each key's first record instead of its last (where the key
        // is still there at all).
        let correct = model.final_read(end, span);
        let mut buggy: Vec<Record> = Vec::new();
        for r in &correct {
            if !buggy.iter().any(|b| b.key == r.key) {
                let first = model.records.iter().find(|f| f.key == r.key).copied();
                buggy.push(first.unwrap_or(*r));
            }
        }
        buggy.sort_by_key(|r| r.offset);
        let h = history(&writes, &model, &reader_polls, &buggy, (end, span), compaction);
        // Shown (at least) wherever a kept first value has a later record of its key, the
        // key's last record is acknowledged (so known), a value or a tombstone younger than
        // delete.retention.ms when the final read ended, and no tombstone of the key has an
        // unknown outcome (which may have come after it and expired).
        let shows = buggy.iter().any(|b| {
            let Some(last) = model.records.iter().rev().find(|r| r.key == b.key) else {
                return false;
            };
            let i = last.value as usize - 1;
            !b.tombstone
                && last.offset > b.offset
                && writes[i].2 <= 6
                && (!last.tombstone || end < invoked(i) + retention)
                && !writes.iter().any(|w| w.0 == b.key && w.1 && (7..=8).contains(&w.2))
        });
        let verdict = check(&h);
        prop_assert!(
            !shows || verdict.classes().contains(&Anomaly::CompactionResurrected),
            "{:?}\n{:?}",
            verdict.lines(),
            h
        );
    }

    #[test]
    fn a_cleaner_dropping_tombstones_early_is_caught(run in arb_run()) {
        let (writes, times, remove, lag, retention, reader_polls, end, span) = run;
        let model = Model::run(&writes, &times, &remove, lag, retention);
        let compaction = Compaction { delete_retention_ms: retention, min_compaction_lag_ms: lag };
        // The final read lacks every key whose latest record is a tombstone, however young.
        let mut latest: BTreeMap<u64, Record> = BTreeMap::new();
        for r in &model.records {
            latest.insert(r.key, *r);
        }
        let dropped: BTreeSet<u64> =
            latest.values().filter(|r| r.tombstone).map(|r| r.key).collect();
        let buggy: Vec<Record> =
            model.final_read(end, span).into_iter().filter(|r| !dropped.contains(&r.key)).collect();
        let h = history(&writes, &model, &reader_polls, &buggy, (end, span), compaction);
        // Shown (at least) wherever such a tombstone was acknowledged and younger than
        // delete.retention.ms when the final read ended, and no tombstone of its key has an
        // unknown outcome (which may have come after it).
        let shows = latest.values().any(|t| {
            let i = t.value as usize - 1;
            t.tombstone
                && writes[i].2 <= 6
                && end < invoked(i) + retention
                && !writes.iter().any(|w| w.0 == t.key && w.1 && (7..=8).contains(&w.2))
        });
        let verdict = check(&h);
        prop_assert!(
            !shows || verdict.classes().contains(&Anomaly::CompactionTombstoneEarly),
            "{:?}\n{:?}",
            verdict.lines(),
            h
        );
    }
}
