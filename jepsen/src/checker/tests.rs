//! The checker's tests: a clean history, each anomaly class planted, and log start offsets.

use super::*;
use crate::history::{GroupCommit, GroupDelivery, GroupHistory, Poll, SendOp, TrimOp};

fn send(value: u64, kind: Delivery, outcome: Outcome) -> SendOp {
    SendOp {
        producer: 0,
        kind,
        key: 0,
        value,
        invoked_ms: 0,
        outcome,
        completed_ms: 1,
        op: None,
    }
}

fn ok(partition: i32, offset: i64) -> Outcome {
    Outcome::Ok { partition, offset }
}

fn history(sends: Vec<SendOp>, reads: Vec<(i64, u64)>) -> History {
    History {
        sends: sends.into_iter().map(|s| (s.value, s)).collect(),
        polls: Vec::new(),
        reads: BTreeMap::from([(0, reads)]),
        finished: true,
        ..History::default()
    }
}

fn delivery(member: usize, generation: i32, offset: i64, value: u64) -> GroupDelivery {
    GroupDelivery {
        member,
        generation,
        partition: 0,
        offset,
        value,
    }
}

fn commit(member: usize, generation: i32, offset: i64, at_ms: u64) -> GroupCommit {
    GroupCommit {
        member,
        generation,
        partition: 0,
        offset,
        at_ms,
    }
}

#[test]
fn group_anomalies_are_found() {
    let sends = vec![
        send(1, Delivery::Idempotent, ok(0, 0)),
        send(2, Delivery::Idempotent, ok(0, 1)),
        send(3, Delivery::LeaderOnly, ok(0, 2)),
    ];
    let mut h = history(sends, vec![(0, 1), (1, 2), (2, 3)]);
    h.group = GroupHistory {
        ran: true,
        // Rereading after a rebalance is fine; two members in one generation are not.
        deliveries: vec![
            delivery(0, 1, 0, 1),
            delivery(1, 2, 0, 1),
            delivery(2, 2, 0, 1),
        ],
        commits: vec![
            commit(0, 1, 1, 10),
            commit(1, 2, 0, 20),
            commit(1, 2, 1, 30),
        ],
        finished: true,
    };
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![
            Anomaly::CommittedOffsetBackwards,
            Anomaly::GroupDoubleDelivery,
            Anomaly::NeverDeliveredToGroup
        ],
        "{:?}",
        verdict.lines()
    );
    assert_eq!(
        verdict.anomalies[&Anomaly::NeverDeliveredToGroup].0,
        1,
        "acks=1 may be lost"
    );
    h.group.finished = false;
    assert!(check(&h).classes().contains(&Anomaly::GroupLiveness));
}

#[test]
fn a_clean_history_is_valid() {
    let h = history(
        vec![
            send(1, Delivery::Idempotent, ok(0, 0)),
            send(2, Delivery::Idempotent, ok(0, 1)),
            send(3, Delivery::AtLeastOnce, Outcome::Info("timeout".into())),
        ],
        vec![(0, 1), (1, 2)],
    );
    let verdict = check(&h);
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!((verdict.acknowledged, verdict.indeterminate), (2, 1));
}

#[test]
fn an_acks_1_write_may_survive_only_as_an_earlier_attempt() {
    // Acknowledged at 1 by a leader that then lost it; the first attempt (no answer,
    // retried) survived at 0. Found by the turmoil world, seed 20.
    let h = history(vec![send(7, Delivery::LeaderOnly, ok(0, 1))], vec![(0, 7)]);
    let verdict = check(&h);
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(verdict.lost_leader_only, 1);
    let h = history(vec![send(7, Delivery::AtLeastOnce, ok(0, 1))], vec![(0, 7)]);
    assert_eq!(check(&h).classes(), vec![Anomaly::OffsetMismatch]);
}

#[test]
fn each_anomaly_is_named() {
    let h = history(
        vec![
            send(1, Delivery::Idempotent, ok(0, 0)),
            send(2, Delivery::Idempotent, ok(0, 5)),
            send(3, Delivery::AtLeastOnce, ok(0, 9)),
            send(4, Delivery::Idempotent, Outcome::Fail("refused".into())),
            send(5, Delivery::LeaderOnly, ok(0, 7)),
            send(6, Delivery::Idempotent, Outcome::Pending),
        ],
        // 2 read twice and below 1; 4 failed yet read; 99 nobody sent; 3 never read.
        vec![(0, 2), (1, 1), (2, 2), (3, 4), (4, 99)],
    );
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![
            Anomaly::LostWrite,
            Anomaly::OffsetMismatch,
            Anomaly::Duplicate,
            Anomaly::ReadOfFailedSend,
            Anomaly::Phantom,
            Anomaly::UnresolvedSend,
            Anomaly::NonmonotonicSend,
        ]
    );
    assert_eq!(
        verdict.lost_leader_only, 1,
        "a lost acks=1 write is allowed"
    );
    assert_eq!(verdict.count(Anomaly::OffsetMismatch), 2);
}

#[test]
fn reads_during_the_run_must_agree_with_the_final_log_and_move_forward() {
    let mut h = history(
        vec![
            send(1, Delivery::Idempotent, ok(0, 0)),
            send(2, Delivery::Idempotent, ok(0, 1)),
        ],
        vec![(0, 1), (1, 2)],
    );
    h.polls = vec![
        Poll {
            invoked_ms: None,
            reader: 0,
            at_ms: 5,
            records: vec![(0, 0, 1), (0, 1, 7)],
            resets: Vec::new(),
            repositioned: false,
        },
        Poll {
            invoked_ms: None,
            reader: 0,
            at_ms: 6,
            records: vec![(0, 0, 1)],
            resets: Vec::new(),
            repositioned: false,
        },
        Poll {
            invoked_ms: None,
            reader: 1,
            at_ms: 6,
            records: vec![(0, 1, 2)],
            resets: Vec::new(),
            repositioned: false,
        },
    ];
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![
            Anomaly::InconsistentOffset,
            Anomaly::PollSkip,
            Anomaly::NonmonotonicPoll
        ]
    );
    h.finished = false;
    assert!(check(&h).anomalies.contains_key(&Anomaly::Liveness));
}

fn trim(offset: Option<i64>, low_watermark: Option<i64>) -> TrimOp {
    TrimOp {
        partition: 0,
        offset,
        invoked_ms: 1,
        completed_ms: 2,
        low_watermark,
    }
}

#[test]
fn records_below_the_log_start_may_be_gone_and_only_there() {
    // Four writes; DeleteRecords moved the log start to 2; a reader read 0, was reset from
    // 1 (below the log start) to 2, and the final read holds 2 and 3.
    let sends = vec![
        send(1, Delivery::Idempotent, ok(0, 0)),
        send(2, Delivery::Idempotent, ok(0, 1)),
        send(3, Delivery::Idempotent, ok(0, 2)),
        send(4, Delivery::Idempotent, ok(0, 3)),
    ];
    let mut h = history(sends, vec![(2, 3), (3, 4)]);
    h.final_starts = BTreeMap::from([(0, 2)]);
    h.trims = vec![trim(Some(2), Some(2))];
    h.polls = vec![
        Poll {
            invoked_ms: None,
            reader: 0,
            at_ms: 1,
            records: vec![(0, 0, 1)],
            resets: Vec::new(),
            repositioned: false,
        },
        Poll {
            invoked_ms: None,
            reader: 0,
            at_ms: 3,
            records: vec![(0, 2, 3)],
            resets: vec![(0, 1)],
            repositioned: false,
        },
    ];
    let verdict = check(&h);
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(verdict.trimmed, 2);

    // The same jump without a reset is a skip.
    let mut skipped = h.polls.clone();
    skipped[1].resets.clear();
    let mut g = history(h.sends.values().cloned().collect(), vec![(2, 3), (3, 4)]);
    g.final_starts = h.final_starts.clone();
    g.trims = h.trims.clone();
    g.polls = skipped;
    assert_eq!(check(&g).classes(), vec![Anomaly::PollSkip]);

    // The final read began below the acknowledged log start: it went back.
    let mut back = history(
        h.sends.values().cloned().collect(),
        vec![(1, 2), (2, 3), (3, 4)],
    );
    back.final_starts = BTreeMap::from([(0, 1)]);
    back.trims = h.trims.clone();
    back.polls = h.polls.clone();
    assert_eq!(
        check(&back).classes(),
        vec![Anomaly::LogStartWentBack],
        "{:?}",
        check(&back).lines()
    );

    // Records gone above every offset DeleteRecords asked for: unasked, unless retention
    // may have moved it.
    let mut unasked = history(h.sends.values().cloned().collect(), vec![(3, 4)]);
    unasked.final_starts = BTreeMap::from([(0, 3)]);
    unasked.trims = vec![trim(Some(2), Some(2))];
    assert_eq!(check(&unasked).classes(), vec![Anomaly::LogStartUnasked]);
    unasked.retention = true;
    assert!(check(&unasked).is_valid());
    // A call whose outcome is unknown may have moved it as far as it asked (-1: the end).
    unasked.retention = false;
    unasked.trims.push(trim(None, None));
    assert!(check(&unasked).is_valid());
}
