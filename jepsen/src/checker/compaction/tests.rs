//! Compacted topics: for each class, a history that must show it and one that must not; the
//! relaxed rules (holes, superseded writes gone); and the two planted cleaner bugs (keeping
//! the first record of each key, dropping a tombstone early) caught.

use std::collections::BTreeMap;

use crate::checker::{check, report_json, Anomaly};
use crate::history::{Compaction, Delivery, History, Outcome, Poll, SendOp};

/// delete.retention.ms of the histories here.
const RETENTION: u64 = 1_000;

/// Key A's values 1, 3, 5 at offsets 0, 2, 4; key B's 2, 4 at 1, 3 and its tombstone 6 at 5;
/// key C's 7 at 6. Value v is invoked at 10 v ms and acknowledged 5 ms later.
const WRITES: [(u64, u64, i64); 7] = [
    (1, 1, 0),
    (2, 2, 1),
    (1, 3, 2),
    (2, 4, 3),
    (1, 5, 4),
    (2, 6, 5),
    (3, 7, 6),
];
const A: u64 = 1;
const TOMBSTONE: u64 = 6;

fn send(key: u64, value: u64, outcome: Outcome) -> SendOp {
    SendOp {
        producer: 0,
        kind: Delivery::Idempotent,
        key,
        value,
        invoked_ms: 10 * value,
        outcome,
        completed_ms: 10 * value + 5,
        op: None,
    }
}

/// The log of [`WRITES`] in partition 0, compacted, with final read `reads` that ended at
/// `end` ms (and began then too).
fn compacted(reads: &[(i64, u64)], end: u64) -> History {
    let mut h = History {
        sends: WRITES
            .iter()
            .map(|&(key, value, offset)| {
                let outcome = Outcome::Ok {
                    partition: 0,
                    offset,
                };
                (value, send(key, value, outcome))
            })
            .collect(),
        reads: BTreeMap::from([(0, reads.to_vec())]),
        final_starts: BTreeMap::from([(0, 0)]),
        finished: true,
        compaction: Some(Compaction {
            delete_retention_ms: RETENTION,
            min_compaction_lag_ms: 0,
        }),
        final_read_ms: Some(end),
        final_read_began_ms: Some(end),
        ..History::default()
    };
    h.tombstones.insert(TOMBSTONE);
    h
}

/// The log a correct cleaner leaves before the tombstone expires: each key's latest.
const CLEANED: [(i64, u64); 3] = [(4, 5), (5, 6), (6, 7)];

fn poll(reader: usize, at_ms: u64, records: &[(i64, u64)]) -> Poll {
    Poll {
        reader,
        invoked_ms: None,
        at_ms,
        records: records.iter().map(|&(o, v)| (0, o, v)).collect(),
        resets: Vec::new(),
        repositioned: false,
    }
}

fn assert_valid(h: &History) {
    let verdict = check(h);
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
}

#[test]
fn a_correct_cleaner_s_log_is_valid_and_the_same_log_uncompacted_is_not() {
    let all: Vec<(i64, u64)> = WRITES.iter().map(|&(_, v, o)| (o, v)).collect();
    let verdict = check(&compacted(&all, 200));
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(verdict.compacted, 0);
    // Each key's latest, holes between: the superseded writes are compacted, not lost.
    let verdict = check(&compacted(&CLEANED, 200));
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(verdict.compacted, 4);
    // After delete.retention.ms the tombstone may go too.
    let verdict = check(&compacted(&[(4, 5), (6, 7)], 2_000));
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(verdict.compacted, 5);
    // A reader that read from the log start while the cleaner worked saw holes.
    let mut h = compacted(&CLEANED, 200);
    h.polls = vec![
        poll(0, 100, &[(0, 1), (1, 2), (4, 5)]),
        poll(0, 150, &[(5, 6), (6, 7)]),
    ];
    assert_valid(&h);
    // Without compaction, the same is lost writes and skips.
    h.compaction = None;
    let classes = check(&h).classes();
    assert!(classes.contains(&Anomaly::LostWrite), "{classes:?}");
    assert!(classes.contains(&Anomaly::PollSkip), "{classes:?}");
}

#[test]
fn a_missing_latest_value_is_compaction_lost_latest() {
    // Key A's latest, 5 at offset 4, is gone; nothing of A remains.
    let mut h = compacted(&[(5, 6), (6, 7)], 200);
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![Anomaly::CompactionLostLatest]);
    let example = &verdict.anomalies[&Anomaly::CompactionLostLatest].1[0];
    assert!(
        example.contains("key 1: its latest record, value 5 at 0@4 (acknowledged at 55 ms)"),
        "{example}"
    );
    assert_eq!(
        verdict.count(Anomaly::CompactionLostLatest),
        1,
        "once per key"
    );
    // An indeterminate tombstone of A no read returned may have deleted it, once it may
    // have expired.
    h.sends
        .insert(8, send(A, 8, Outcome::Info("timed out".into())));
    h.tombstones.insert(8);
    assert_eq!(check(&h).classes(), vec![Anomaly::CompactionLostLatest]);
    h.final_read_ms = Some(80 + RETENTION);
    h.reads.insert(0, vec![(6, 7)]); // key B's tombstone expired too
    assert_valid(&h);
    // One that definitely failed may not.
    h.sends
        .insert(8, send(A, 8, Outcome::Fail("refused".into())));
    assert_eq!(check(&h).classes(), vec![Anomaly::CompactionLostLatest]);
}

#[test]
fn a_value_of_an_indeterminate_send_may_be_the_latest() {
    // Value 8 of key A, sent with an unknown outcome, landed at 7: 5 is superseded.
    let mut h = compacted(&[(5, 6), (6, 7), (7, 8)], 200);
    h.sends
        .insert(8, send(A, 8, Outcome::Info("timed out".into())));
    let verdict = check(&h);
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(verdict.compacted, 5);
    // A reader polled it, and the final read lacks it: it was the latest, lost, and the
    // final read shows the value it superseded as the key's latest.
    h.reads.insert(0, CLEANED.to_vec());
    h.polls = vec![poll(0, 100, &[(7, 8)])];
    h.polls[0].repositioned = true;
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![
            Anomaly::CompactionLostLatest,
            Anomaly::CompactionResurrected
        ]
    );
    assert!(verdict.anomalies[&Anomaly::CompactionLostLatest].1[0]
        .contains("value 8 at 0@7 (polled by reader 0 at 100 ms)"));
    // Without compaction, a polled record the final read lacks is an inconsistent offset.
    h.compaction = None;
    assert!(check(&h).classes().contains(&Anomaly::InconsistentOffset));
}

#[test]
fn an_old_value_as_a_key_s_latest_is_compaction_resurrected() {
    // Key A: 3 remains as its latest while 5, written after it, is gone.
    let h = compacted(&[(2, 3), (5, 6), (6, 7)], 200);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![
            Anomaly::CompactionLostLatest,
            Anomaly::CompactionResurrected
        ]
    );
    let example = &verdict.anomalies[&Anomaly::CompactionResurrected].1[0];
    assert!(example.contains("key 1: the final read's latest is value 3 at 0@2, but value 5 was written after it at @4 (acknowledged at 55 ms)"), "{example}");
    // Key B: 4 remains while its tombstone, written after it, is gone within
    // delete.retention.ms.
    let h = compacted(&[(3, 4), (4, 5), (6, 7)], 200);
    assert_eq!(
        check(&h).classes(),
        vec![
            Anomaly::CompactionResurrected,
            Anomaly::CompactionTombstoneEarly
        ]
    );
    // Once the tombstone may have expired, a cleaner running during the final read may have
    // removed it and 4 after the read had passed 4: no resurrection.
    assert_valid(&compacted(&[(3, 4), (4, 5), (6, 7)], 2_000));
    // An older value beside the latest is no resurrection (the cleaner need not be done).
    assert_valid(&compacted(&[(2, 3), (3, 4), (4, 5), (5, 6), (6, 7)], 200));
    // An older tombstone as the key's latest is no resurrection either (what vanished after
    // it is the latest's question): key B's 6 at 5 below a later value 8 the read lacks.
    let mut h = compacted(&CLEANED, 200);
    let outcome = Outcome::Ok {
        partition: 0,
        offset: 7,
    };
    h.sends.insert(8, send(2, 8, outcome));
    assert_eq!(check(&h).classes(), vec![Anomaly::CompactionLostLatest]);
}

#[test]
fn a_tombstone_gone_before_delete_retention_is_compaction_tombstone_early() {
    // The final read ended at 200 ms; tombstone 6, written at 60 ms, must be there.
    let h = compacted(&[(4, 5), (6, 7)], 200);
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![Anomaly::CompactionTombstoneEarly]);
    let example = &verdict.anomalies[&Anomaly::CompactionTombstoneEarly].1[0];
    assert!(example.contains("tombstone 6 of key 2 at 0@5, written at 60 ms, is not in the final read, which ended at 200 ms"), "{example}");
    // 1 ms before delete.retention.ms had passed, still too early; at it, fine.
    assert!(!check(&compacted(&[(4, 5), (6, 7)], 60 + RETENTION - 1)).is_valid());
    assert_valid(&compacted(&[(4, 5), (6, 7)], 60 + RETENTION));
    // A later value of the key supersedes the tombstone: it may go at once.
    let mut h = compacted(&[(4, 5), (6, 7), (7, 8)], 200);
    let outcome = Outcome::Ok {
        partition: 0,
        offset: 7,
    };
    h.sends.insert(8, send(2, 8, outcome));
    assert_valid(&h);
    // Without the time the final read ended, tombstones cannot be judged.
    let mut h = compacted(&[(4, 5), (6, 7)], 200);
    h.final_read_ms = None;
    assert_valid(&h);
}

#[test]
fn a_reader_from_the_log_start_past_a_young_tombstone_must_see_it() {
    // The final read (after delete.retention.ms) need not hold it; a reader at 300 ms did.
    let mut h = compacted(&[(4, 5), (6, 7)], 2_000);
    h.polls = vec![poll(0, 300, &[(4, 5), (5, 6), (6, 7)])];
    assert_valid(&h);
    // A reader from the log start that passed offset 5 at 300 ms without it.
    h.polls.push(poll(1, 300, &[(4, 5), (6, 7)]));
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![Anomaly::CompactionTombstoneEarly]);
    let example = &verdict.anomalies[&Anomaly::CompactionTombstoneEarly].1[0];
    assert!(
        example.contains(
            "reader 1 read 0 from the log start past @5 (to @6 by 300 ms) without tombstone 6"
        ),
        "{example}"
    );
    // Passing it after delete.retention.ms is fine.
    h.polls[1].at_ms = 60 + RETENTION;
    assert_valid(&h);
    // A reader repositioned above it never passed it; reset to the log start, it did.
    h.polls[1].at_ms = 300;
    h.polls[1].repositioned = true;
    h.polls[1].records.remove(0);
    assert_valid(&h);
    h.polls[1].resets = vec![(0, 3)];
    h.polls[1].records.insert(0, (0, 4, 5));
    assert_eq!(check(&h).classes(), vec![Anomaly::CompactionTombstoneEarly]);
}

#[test]
fn skipping_a_record_the_final_read_holds_is_still_a_skip() {
    // Offsets 1 to 3 were cleaned; 5 (the tombstone) never was.
    let mut h = compacted(&[(0, 1), (4, 5), (5, 6), (6, 7)], 200);
    h.polls = vec![poll(0, 100, &[(0, 1), (4, 5)]), poll(0, 150, &[(6, 7)])];
    let classes = check(&h).classes();
    assert_eq!(
        classes,
        vec![Anomaly::PollSkip, Anomaly::CompactionTombstoneEarly]
    );
    h.polls = vec![poll(0, 100, &[(0, 1), (4, 5), (6, 7)])];
    let classes = check(&h).classes();
    assert_eq!(
        classes,
        vec![Anomaly::IntPollSkip, Anomaly::CompactionTombstoneEarly]
    );
    h.polls = vec![
        poll(0, 100, &[(0, 1), (4, 5)]),
        poll(0, 150, &[(5, 6), (6, 7)]),
    ];
    assert_valid(&h);
    // A poll after the final read began may have come after the cleaner removed what the
    // final read had already passed: its skip is not judged (the tombstone it passed still
    // is), nor when the history does not say when the final read began.
    h.polls = vec![poll(0, 100, &[(0, 1), (4, 5)]), poll(0, 150, &[(6, 7)])];
    h.final_read_began_ms = Some(120);
    assert_eq!(check(&h).classes(), vec![Anomaly::CompactionTombstoneEarly]);
    h.final_read_began_ms = None;
    assert_eq!(check(&h).classes(), vec![Anomaly::CompactionTombstoneEarly]);
}

/// Replicas clean on their own schedules (and by their own clocks): a reader served by one
/// that had cleaned may miss superseded records the final read, served by one that had not,
/// still holds. Only each key's latest in the final log is owed.
#[test]
fn skipping_a_superseded_record_the_final_read_still_holds_is_not_a_skip() {
    let all: Vec<(i64, u64)> = WRITES.iter().map(|&(_, v, o)| (o, v)).collect();
    let mut h = compacted(&all, 200);
    // Offsets 1 to 3 (B's 2 and 4, A's 3) are superseded by 4 (A's 5) and 5 (B's tombstone).
    h.polls = vec![
        poll(0, 100, &[(0, 1), (4, 5)]),
        poll(0, 150, &[(5, 6), (6, 7)]),
    ];
    assert_valid(&h);
    h.polls = vec![poll(0, 100, &[(0, 1), (4, 5), (5, 6), (6, 7)])];
    assert_valid(&h);
    // Skipping a key's latest (C's 7 at 6, after B's tombstone at 5) still is one.
    h.polls = vec![
        poll(0, 100, &[(0, 1), (4, 5)]),
        poll(0, 150, &[(5, 6)]),
        poll(0, 160, &[(7, 8)]),
    ];
    h.sends.insert(
        8,
        send(
            A,
            8,
            Outcome::Ok {
                partition: 0,
                offset: 7,
            },
        ),
    );
    h.reads.get_mut(&0).expect("read").push((7, 8));
    assert_eq!(check(&h).classes(), vec![Anomaly::PollSkip]);
}

#[test]
fn offsets_going_back_in_a_compacted_log_are_nonmonotonic_polls() {
    // compaction-offset-regress is the existing nonmonotonic-poll and int-nonmonotonic-poll:
    // a compacted log keeps its offsets, so their rules hold unchanged.
    let mut h = compacted(&CLEANED, 200);
    h.polls = vec![poll(0, 100, &[(4, 5), (5, 6)]), poll(0, 150, &[(4, 5)])];
    assert_eq!(check(&h).classes(), vec![Anomaly::NonmonotonicPoll]);
    h.polls = vec![poll(0, 100, &[(4, 5), (5, 6), (6, 7), (5, 6)])];
    assert_eq!(check(&h).classes(), vec![Anomaly::IntNonmonotonicPoll]);
    // The final read too must only go up.
    h.polls.clear();
    h.reads.insert(0, vec![(4, 5), (6, 7), (5, 6)]);
    assert_eq!(check(&h).classes(), vec![Anomaly::PollSkip]);
    // Holes alone are fine, as is a reset to the log start whose first record lies above it.
    let mut h = compacted(&CLEANED, 200);
    let mut reset = poll(0, 150, &CLEANED);
    reset.resets = vec![(0, 0)];
    h.polls = vec![reset];
    assert_valid(&h);
    h.compaction = None;
    assert!(check(&h).classes().contains(&Anomaly::LogStartWentBack));
}

#[test]
fn a_superseded_write_gone_within_min_compaction_lag_is_a_lost_write() {
    let mut h = compacted(&CLEANED, 200);
    h.compaction = Some(Compaction {
        delete_retention_ms: RETENTION,
        min_compaction_lag_ms: 150,
    });
    // Values 1 to 4, superseded, written at 10 to 40 ms, were gone by 200 ms: at least
    // 150 ms after each was written.
    assert_valid(&h);
    // Gone by 175 ms: 3 and 4 went within 150 ms of their writes (30 + 150, 40 + 150 > 175).
    h.final_read_ms = Some(175);
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![Anomaly::LostWrite]);
    assert_eq!(verdict.count(Anomaly::LostWrite), 2);
    assert!(verdict.anomalies[&Anomaly::LostWrite].1[0]
        .contains("within min.compaction.lag.ms (150 ms)"));
}

#[test]
fn an_acks_0_write_may_be_superseded_by_any_later_send_of_its_key() {
    let mut h = compacted(&CLEANED, 200);
    let mut acks_0 = send(
        A,
        9,
        Outcome::Ok {
            partition: 0,
            offset: -1,
        },
    );
    acks_0.invoked_ms = 45;
    h.sends.insert(9, acks_0.clone());
    // Value 5 of key A was acknowledged after it was invoked.
    let verdict = check(&h);
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(verdict.compacted, 5);
    // Alone in its key, it was the latest.
    acks_0.key = 9;
    h.sends.insert(9, acks_0);
    assert_eq!(check(&h).classes(), vec![Anomaly::CompactionLostLatest]);
}

#[test]
fn a_cleaner_that_keeps_the_first_record_of_each_key_is_caught() {
    // The planted bug: each key's first record kept instead of its last (key C has one).
    let h = compacted(&[(0, 1), (1, 2), (6, 7)], 200);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![
            Anomaly::CompactionLostLatest,
            Anomaly::CompactionResurrected,
            Anomaly::CompactionTombstoneEarly
        ],
        "{:?}",
        verdict.lines()
    );
    assert_eq!(
        verdict.count(Anomaly::CompactionResurrected),
        2,
        "keys A and B"
    );
    // The same history with the last record of each key kept is valid.
    assert_valid(&compacted(&CLEANED, 200));
}

#[test]
fn a_cleaner_that_drops_a_tombstone_early_is_caught() {
    // The planted bug: the tombstone dropped at the first cleaning, 100 ms after its write;
    // a reader from the log start at 300 ms, and the final read at 500 ms, lack it.
    let mut h = compacted(&[(4, 5), (6, 7)], 500);
    h.polls = vec![
        poll(0, 90, &[(0, 1), (1, 2), (2, 3)]),
        poll(0, 300, &[(4, 5), (6, 7)]),
    ];
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![Anomaly::CompactionTombstoneEarly]);
    assert_eq!(verdict.count(Anomaly::CompactionTombstoneEarly), 2);
    // Dropped with the value it deleted kept, it resurrects that value too.
    let h = compacted(&[(3, 4), (4, 5), (6, 7)], 500);
    assert_eq!(
        check(&h).classes(),
        vec![
            Anomaly::CompactionResurrected,
            Anomaly::CompactionTombstoneEarly
        ]
    );
    // The correct cleaner's history, the tombstone kept: valid.
    let mut h = compacted(&CLEANED, 500);
    h.polls = vec![
        poll(0, 90, &[(0, 1), (1, 2), (2, 3)]),
        poll(0, 300, &[(4, 5), (5, 6), (6, 7)]),
    ];
    assert_valid(&h);
}

#[test]
fn the_consumer_group_need_not_read_what_was_cleaned_before_it_came() {
    let mut h = compacted(&CLEANED, 200);
    h.group.ran = true;
    h.group.finished = true;
    let delivery = |offset: i64, value| crate::history::GroupDelivery {
        member: 0,
        generation: 1,
        partition: 0,
        offset,
        value,
    };
    h.group.deliveries = vec![delivery(4, 5), delivery(5, 6)];
    assert_eq!(check(&h).classes(), vec![Anomaly::NeverDeliveredToGroup]);
    h.group.deliveries.push(delivery(6, 7));
    assert_valid(&h);
}

#[test]
fn the_report_names_the_compaction_classes_and_counts_what_was_compacted() {
    let report = report_json(&check(&compacted(&[(0, 1), (1, 2), (6, 7)], 200)));
    let keys: Vec<&str> = report["anomalies"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| a["class"].as_str().expect("a key"))
        .collect();
    assert_eq!(
        keys,
        vec![
            "compaction-lost-latest",
            "compaction-resurrected",
            "compaction-tombstone-early"
        ]
    );
    // 3 and 4 were superseded; 5 and the tombstone were lost.
    assert_eq!(report["counts"]["compacted"], 2);
    assert_eq!(
        report_json(&check(&compacted(&CLEANED, 200)))["counts"]["compacted"],
        4
    );
}

#[test]
fn a_reset_to_below_where_the_final_read_began_is_judged_without_panicking() {
    // Found by the history files' random round trip: the reset's record lies below the final
    // read's start, so there is nothing between the two to look at.
    let mut h = compacted(&[(5, 6), (6, 7)], 2_000);
    h.final_starts.insert(0, 5);
    let mut reset = poll(0, 100, &[(4, 5)]);
    reset.resets = vec![(0, 0)];
    h.polls = vec![poll(0, 50, &[(0, 1)]), reset];
    let classes = check(&h).classes();
    assert!(!classes.contains(&Anomaly::LogStartWentBack), "{classes:?}");
    h.compaction = None;
    assert!(!check(&h).classes().contains(&Anomaly::LogStartWentBack));
}

#[test]
fn what_the_consumer_group_read_is_known_too() {
    // Value 8 of key A, sent with an unknown outcome, read by the group at 7, then gone.
    let mut h = compacted(&[(5, 6), (6, 7)], 200);
    h.sends
        .insert(8, send(A, 8, Outcome::Info("timed out".into())));
    h.group.ran = true;
    h.group.finished = true;
    h.group.deliveries = [(5, 6), (6, 7), (7, 8)]
        .into_iter()
        .map(|(offset, value)| crate::history::GroupDelivery {
            member: 1,
            generation: 2,
            partition: 0,
            offset,
            value,
        })
        .collect();
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![Anomaly::CompactionLostLatest]);
    assert!(verdict.anomalies[&Anomaly::CompactionLostLatest].1[0]
        .contains("value 8 at 0@7 (read by group member 1 in generation 2)"));
    h.reads.insert(0, vec![(5, 6), (6, 7), (7, 8)]);
    assert_valid(&h);
}
