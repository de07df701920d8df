//! Tests of the transactional checker on hand-built histories: one clean run with every kind
//! of outcome, and each anomaly class planted into it.

use std::collections::BTreeMap;

use super::*;

const I0: InstanceId = InstanceId(0);
const I1: InstanceId = InstanceId(1);
const I2: InstanceId = InstanceId(2);
const I3: InstanceId = InstanceId(3);

/// Input `input`'s two output copies, `values[0]` to `partitions[0]` and `values[1]` to
/// `partitions[1]`.
fn outputs(op: TxnOp, input: u64, partitions: [i32; 2], values: [u64; 2]) -> TxnOp {
    op.produce(partitions[0], InputId(input), 0, values[0])
        .produce(partitions[1], InputId(input), 1, values[1])
}

/// A clean run. Instances i0 and i2 share transactional id `t-a` (i2, initialized at 100-101
/// ms, fences i0), i1 and i3 share `t-b` (i3 at 42-44 ms). Input partitions 0 and 1, output
/// partitions 0, 1 and 2. The attempts:
///
/// - i0#0 (A): inputs 1, 2; committed.
/// - i1#0 (B): input 3; aborted before its commit (an abortable error).
/// - i1#1 (C): input 3 again; commit sent, no answer; visible: it committed.
/// - i0#1 (D): input 4; commit sent, no answer; invisible: it did not commit.
/// - i1#2 (G): input 6; commit sent, then fenced (a retried EndTxn after i3's init);
///   visible: it committed.
/// - i0#2 (E): input 4 again; fenced before its commit.
/// - i2#0 (F): the new instance of `t-a` from the committed offsets: inputs 4 and 5;
///   committed.
///
/// The output partitions' logs (`m` a marker, `x` an aborted record):
///
/// ```text
/// p0: 0 A110, 1 A120, 2 m, 3 xD140, 4 G161, 5 m, 6 m, 7 xE142, 8 m, 9 F144, 10 F150, 11 m
/// p1: 0 A111, 1 m, 2 xB130, 3 m, 4 C132, 5 m, 6 xD141, 7 m, 8 xE143, 9 m, 10 F151, 11 m
/// p2: 0 A121, 1 m, 2 xB131, 3 m, 4 C133, 5 m, 6 G160, 7 m, 8 F145, 9 m
/// ```
fn clean() -> TxnHistory {
    let mut h = TxnHistory::default();
    h.instance(I0, "t-a", 0, 1);
    h.instance(I1, "t-b", 0, 1);
    h.instance(I3, "t-b", 42, 44);
    h.instance(I2, "t-a", 100, 101);
    let a = TxnOp::new(2)
        .consume(0, 0, InputId(1))
        .consume(0, 1, InputId(2));
    let a = outputs(a, 1, [0, 1], [110, 111]);
    let a = outputs(a, 2, [0, 2], [120, 121])
        .send_offset(0, 2)
        .commit_sent(10)
        .ended(TxnOutcome::Committed, 12);
    h.txn(I0, 0, a);
    let b = outputs(
        TxnOp::new(3).consume(1, 0, InputId(3)),
        3,
        [1, 2],
        [130, 131],
    )
    .ended(TxnOutcome::Aborted, 15);
    h.txn(I1, 0, b);
    let c = outputs(
        TxnOp::new(16).consume(1, 0, InputId(3)),
        3,
        [1, 2],
        [132, 133],
    )
    .send_offset(1, 1)
    .commit_sent(20)
    .ended(TxnOutcome::Indeterminate, 25);
    h.txn(I1, 1, c);
    let d = outputs(
        TxnOp::new(26).consume(0, 2, InputId(4)),
        4,
        [0, 1],
        [140, 141],
    )
    .send_offset(0, 3)
    .commit_sent(30)
    .ended(TxnOutcome::Indeterminate, 35);
    h.txn(I0, 1, d);
    let g = outputs(
        TxnOp::new(36).consume(1, 1, InputId(6)),
        6,
        [2, 0],
        [160, 161],
    )
    .send_offset(1, 2)
    .commit_sent(40)
    .ended(TxnOutcome::Fenced, 45);
    h.txn(I1, 2, g);
    let e = outputs(
        TxnOp::new(90).consume(0, 2, InputId(4)),
        4,
        [0, 1],
        [142, 143],
    )
    .ended(TxnOutcome::Fenced, 102);
    h.txn(I0, 2, e);
    let f = TxnOp::new(105)
        .consume(0, 2, InputId(4))
        .consume(0, 3, InputId(5));
    let f = outputs(f, 4, [0, 2], [144, 145]);
    let f = outputs(f, 5, [0, 1], [150, 151])
        .send_offset(0, 4)
        .commit_sent(110)
        .ended(TxnOutcome::Committed, 112);
    h.txn(I2, 0, f);

    h.polls.push(TxnPoll {
        reader: 0,
        isolation: Isolation::ReadCommitted,
        at_ms: 50,
        records: vec![
            (0, 0, 110),
            (0, 1, 120),
            (0, 4, 161),
            (1, 0, 111),
            (1, 4, 132),
            (2, 0, 121),
            (2, 4, 133),
            (2, 6, 160),
        ],
        bounds: BTreeMap::from([(
            0,
            Bounds {
                last_stable: Some(7),
                high_watermark: Some(7),
            },
        )]),
    });
    // read_uncommitted sees aborted records, and records of open transactions.
    h.poll(
        1,
        Isolation::ReadUncommitted,
        95,
        vec![(1, 2, 130), (1, 6, 141), (1, 8, 143)],
    );
    h.poll(
        0,
        Isolation::ReadCommitted,
        120,
        vec![(0, 9, 144), (0, 10, 150)],
    );
    h.offset_fetch(14, 15, &[(0, 2)]);
    h.offset_fetch(46, 47, &[(0, 2), (1, 2)]);
    h.offset_fetch(120, 121, &[(0, 4), (1, 2)]);
    h.final_read = FinalRead {
        partitions: BTreeMap::from([
            (0, vec![(0, 110), (1, 120), (4, 161), (9, 144), (10, 150)]),
            (1, vec![(0, 111), (4, 132), (10, 151)]),
            (2, vec![(0, 121), (4, 133), (6, 160), (8, 145)]),
        ]),
        completed_ms: 200,
        finished: true,
    };
    h
}

fn final_partition(h: &mut TxnHistory, partition: i32) -> &mut Vec<(i64, u64)> {
    h.final_read
        .partitions
        .get_mut(&partition)
        .expect("the partition is read")
}

#[test]
fn a_clean_run_with_every_outcome_is_valid() {
    let verdict = check(&clean());
    assert!(verdict.is_valid(), "{verdict}");
    assert_eq!(
        verdict.counts,
        TxnCounts {
            attempts: 7,
            committed: 2,
            aborted: 1,
            indeterminate: 2,
            fenced: 2,
            resolved_committed: 2,
            resolved_aborted: 2,
            unresolved: 0,
            inputs_once: 6,
            records_read: 12,
            uncommitted_reads_of_aborted: 3,
        }
    );
    assert_eq!(
        verdict.to_string(),
        "7 transactions: 2 committed, 1 aborted, 2 indeterminate, 2 fenced (of these 2 \
         committed, 2 did not, 0 undecided); 6 inputs exactly once; 12 records in the final \
         read; 3 aborted records read uncommitted; valid"
    );
}

#[test]
fn read_uncommitted_may_see_aborted_records_and_read_committed_may_not() {
    let mut h = clean();
    assert!(check(&h).is_valid());
    h.polls[1].isolation = Isolation::ReadCommitted;
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::AbortedRead],
        "{verdict}"
    );
    // B (aborted), D (indeterminate, invisible at the end), E (fenced before its commit).
    assert_eq!(verdict.count(TxnAnomaly::AbortedRead), 3);
    assert_eq!(verdict.counts.uncommitted_reads_of_aborted, 0);
}

#[test]
fn a_lost_committed_transaction_is_lost_output() {
    let mut h = clean();
    // F's records gone from the end, though a reader saw two of them and its commit was
    // acknowledged.
    final_partition(&mut h, 0).retain(|(_, v)| *v != 144 && *v != 150);
    final_partition(&mut h, 1).retain(|(_, v)| *v != 151);
    final_partition(&mut h, 2).retain(|(_, v)| *v != 145);
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![TxnAnomaly::LostOutput], "{verdict}");
    assert_eq!(verdict.count(TxnAnomaly::LostOutput), 2, "inputs 4 and 5");
    assert!(verdict.lines()[0].contains("input 4 of transaction i2#0"));
}

#[test]
fn a_partly_lost_committed_transaction_is_lost_and_torn() {
    let mut h = clean();
    final_partition(&mut h, 1).retain(|(_, v)| *v != 111);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::LostOutput, TxnAnomaly::TornTransaction],
        "{verdict}"
    );
}

#[test]
fn an_indeterminate_transaction_visible_on_one_partition_only_is_torn() {
    let mut h = clean();
    // C's marker on partition 2 went missing (or aborted there): 133 not visible.
    final_partition(&mut h, 2).retain(|(_, v)| *v != 133);
    h.polls[0].records.retain(|r| r.2 != 133);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::TornTransaction],
        "{verdict}"
    );
    assert!(verdict.lines()[0].contains("i1#1 (indeterminate)"));
}

#[test]
fn an_input_processed_by_two_committed_transactions_is_a_duplicate() {
    let mut h = clean();
    // D committed after all, though i2 was initialized and reprocessed input 4 in F.
    final_partition(&mut h, 0).insert(2, (3, 140));
    final_partition(&mut h, 1).insert(1, (6, 141));
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::DuplicateOutput],
        "{verdict}"
    );
    assert!(verdict.lines()[0].contains("input 4 processed by committed i0#1"));
}

#[test]
fn one_record_visible_twice_is_a_duplicate() {
    let mut h = clean();
    final_partition(&mut h, 0).push((12, 110));
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::DuplicateOutput],
        "{verdict}"
    );
}

#[test]
fn records_of_transactions_that_did_not_commit_are_aborted_reads() {
    // The last stable offset as the high watermark: E's record read while E was open; E was
    // then fenced before its commit.
    let mut h = clean();
    h.poll(2, Isolation::ReadCommitted, 95, vec![(1, 8, 143)]);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::AbortedRead],
        "{verdict}"
    );
    assert!(verdict.lines()[0].contains("i0#2 (fenced at 102 ms, commit never sent)"));

    // A skipped abort marker: B's record in the final read.
    let mut h = clean();
    final_partition(&mut h, 1).insert(1, (2, 130));
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::AbortedRead],
        "{verdict}"
    );
    assert!(verdict.lines()[0].contains("the final read read value 130"));

    // D's record seen during the run, though nothing of D is in the final read.
    let mut h = clean();
    h.poll(2, Isolation::ReadCommitted, 60, vec![(0, 3, 140)]);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::AbortedRead],
        "{verdict}"
    );
    assert!(verdict.lines()[0].contains("nothing of it in the final read"));
}

#[test]
fn reading_a_transaction_before_its_commit_was_sent_is_a_read_past_the_lso() {
    // F's own record returned at 105 ms; F sent its commit at 110 ms.
    let mut h = clean();
    h.poll(2, Isolation::ReadCommitted, 106, vec![(0, 9, 144)]);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::ReadPastLso],
        "{verdict}"
    );

    // A last stable offset reported past F's record on partition 2 (8) at 108 ms.
    let mut h = clean();
    h.polls.push(TxnPoll {
        reader: 2,
        isolation: Isolation::ReadCommitted,
        at_ms: 108,
        records: Vec::new(),
        bounds: BTreeMap::from([(
            2,
            Bounds {
                last_stable: Some(9),
                high_watermark: Some(9),
            },
        )]),
    });
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::ReadPastLso],
        "{verdict}"
    );
    assert!(verdict.lines()[0].contains("reported stable partition 2 up to 8"));

    // The same bound reported once F sent its commit is fine; above the high watermark not.
    h.polls[3].at_ms = 111;
    assert!(check(&h).is_valid());
    h.polls[3]
        .bounds
        .get_mut(&2)
        .expect("bounds")
        .high_watermark = Some(8);
    assert_eq!(check(&h).classes(), vec![TxnAnomaly::ReadPastLso]);
}

#[test]
fn a_read_committed_reader_may_read_past_records_of_undecided_aborts() {
    // At 95 ms E (open, later fenced) has records at p0@7 and p1@8; reading past them to 9
    // is not provably wrong, since a correct coordinator may have aborted E already.
    let mut h = clean();
    h.polls.push(TxnPoll {
        reader: 2,
        isolation: Isolation::ReadCommitted,
        at_ms: 95,
        records: Vec::new(),
        bounds: BTreeMap::from([(
            1,
            Bounds {
                last_stable: Some(10),
                high_watermark: Some(10),
            },
        )]),
    });
    let verdict = check(&h);
    assert!(verdict.is_valid(), "{verdict}");
}

#[test]
fn committed_offsets_move_only_with_their_transactions() {
    // D's offset (D did not commit).
    let mut h = clean();
    h.offset_fetch(60, 61, &[(0, 3)]);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::OffsetsWithoutTxn],
        "{verdict}"
    );
    assert!(verdict.lines()[0].contains("i0#1: indeterminate at 35 ms, nothing of it"));

    // G's offset before G sent its commit (at 40 ms); and an offset no one sent.
    let mut h = clean();
    h.offset_fetch(16, 17, &[(1, 2)]);
    h.offset_fetch(18, 19, &[(1, 7)]);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::OffsetsWithoutTxn],
        "{verdict}"
    );
    assert_eq!(verdict.count(TxnAnomaly::OffsetsWithoutTxn), 2);
}

#[test]
fn a_committed_offset_going_back_is_found_unless_its_transaction_may_have_committed_since() {
    // After 4 (F), 2 again: only A, acknowledged at 12 ms, sent 2.
    let mut h = clean();
    h.offset_fetch(130, 131, &[(0, 2)]);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::OffsetsBackwards],
        "{verdict}"
    );

    // Partition 1 at 2 (G) by 47 ms, then 1 (C): C's commit was indeterminate, and it may
    // have been decided late; not provably backwards.
    let mut h = clean();
    h.offset_fetch(50, 51, &[(1, 1)]);
    let verdict = check(&h);
    assert!(verdict.is_valid(), "{verdict}");
}

#[test]
fn a_zombie_instances_transaction_taking_effect_is_a_fenced_write() {
    // i0 began attempt 3 at 103 ms, after i2's init (100-101 ms) fenced it; its commit was
    // acknowledged and its record is visible.
    let mut h = clean();
    let zombie = outputs(
        TxnOp::new(103).consume(0, 4, InputId(7)),
        7,
        [1, 2],
        [170, 171],
    )
    .commit_sent(104)
    .ended(TxnOutcome::Committed, 106);
    h.txn(I0, 3, zombie);
    final_partition(&mut h, 1).push((12, 170));
    final_partition(&mut h, 2).push((10, 171));
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::FencedWriteVisible],
        "{verdict}"
    );
    assert!(verdict.lines()[0].contains("after i2 was initialized at 101 ms"));

    // Fenced after sending the commit, yet visible.
    let op = h.txns.get_mut(&TxnId {
        instance: I0,
        number: 3,
    });
    op.expect("the zombie").outcome = TxnOutcome::Fenced;
    assert_eq!(check(&h).classes(), vec![TxnAnomaly::FencedWriteVisible]);

    // The same attempt begun before i2's init answered is no zombie.
    let op = h.txns.get_mut(&TxnId {
        instance: I0,
        number: 3,
    });
    op.expect("the zombie").invoked_ms = 100;
    assert!(check(&h).is_valid());
}

#[test]
fn values_read_must_be_sent_there_and_agree_at_each_offset() {
    let mut h = clean();
    h.poll(
        1,
        Isolation::ReadUncommitted,
        150,
        vec![(1, 11, 999), (2, 9, 110)],
    );
    let verdict = check(&h);
    // 999 nobody sent; 110 was sent to partition 0, not 2.
    assert_eq!(verdict.classes(), vec![TxnAnomaly::Phantom], "{verdict}");
    assert_eq!(verdict.count(TxnAnomaly::Phantom), 2);

    let mut h = clean();
    h.poll(1, Isolation::ReadUncommitted, 150, vec![(0, 0, 120)]);
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![TxnAnomaly::InconsistentOffset],
        "{verdict}"
    );
}

#[test]
fn without_a_final_read_nothing_that_needs_it_is_judged() {
    let mut h = clean();
    h.final_read.finished = false;
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![TxnAnomaly::Unfinished], "{verdict}");
    // C, D and G undecided; E fenced before its commit, so not committed either way.
    assert_eq!(verdict.counts.unresolved, 3);

    let mut h = clean();
    h.final_read.partitions.remove(&2);
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![TxnAnomaly::Unfinished], "{verdict}");
}
