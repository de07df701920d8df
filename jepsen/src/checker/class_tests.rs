//! Jepsen's intra-operation classes, the measured figures and reads from a log start above 0:
//! for each, a history that must show it and one that must not.

use super::*;
use crate::history::{GroupDelivery, GroupHistory, Poll, SendOp};

fn send(producer: usize, value: u64, invoked_ms: u64, at: Option<(i64, u64)>) -> SendOp {
    SendOp {
        producer,
        kind: Delivery::Idempotent,
        key: 0,
        value,
        invoked_ms,
        outcome: at.map_or(Outcome::Info("timed out".into()), |(offset, _)| {
            Outcome::Ok {
                partition: 0,
                offset,
            }
        }),
        completed_ms: at.map_or(invoked_ms + 1, |(_, completed)| completed),
        op: None,
    }
}

/// Values 1..=n acknowledged at offsets 0..n of partition 0 (value v at v - 1, acknowledged
/// at 10 v ms), all in the final read.
fn log_of(n: u64) -> History {
    History {
        sends: (1..=n)
            .map(|v| (v, send(0, v, 10 * v - 5, Some((v as i64 - 1, 10 * v)))))
            .collect(),
        reads: BTreeMap::from([(0, (1..=n).map(|v| (v as i64 - 1, v)).collect())]),
        finished: true,
        ..History::default()
    }
}

fn poll(reader: usize, at_ms: u64, offsets: &[i64], h: &History) -> Poll {
    let value_at = |o: i64| {
        h.reads[&0]
            .iter()
            .find(|(offset, _)| *offset == o)
            .map_or(999, |(_, v)| *v)
    };
    Poll {
        reader,
        invoked_ms: None,
        at_ms,
        records: offsets.iter().map(|&o| (0, o, value_at(o))).collect(),
        resets: Vec::new(),
        repositioned: false,
    }
}

#[test]
fn a_skip_within_a_poll_is_int_poll_skip() {
    let mut h = log_of(4);
    h.polls = vec![poll(0, 50, &[0, 2, 3], &h)];
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![Anomaly::IntPollSkip]);
    assert!(verdict.anomalies[&Anomaly::IntPollSkip].1[0].contains("skipping 1 records"));
    h.polls = vec![poll(0, 50, &[0, 1, 2, 3], &h)];
    assert!(check(&h).is_valid(), "{:?}", check(&h).lines());
    // Between polls it stays a poll skip.
    h.polls = vec![poll(0, 50, &[0, 1], &h), poll(0, 60, &[3], &h)];
    assert_eq!(check(&h).classes(), vec![Anomaly::PollSkip]);
}

#[test]
fn a_hole_no_record_is_known_in_is_no_skip() {
    // A transaction marker at offset 1: nothing was ever acknowledged, polled or read there,
    // so 0 then 2 is the next record in the partition's order (the dense index).
    let mut h = log_of(3);
    h.sends.remove(&2);
    h.reads.insert(0, vec![(0, 1), (2, 3)]);
    h.polls = vec![
        poll(0, 50, &[0, 2], &h),
        poll(1, 50, &[0], &h),
        poll(1, 60, &[2], &h),
    ];
    let verdict = check(&h);
    assert!(!verdict.anomalies.contains_key(&Anomaly::IntPollSkip));
    assert_eq!(verdict.classes(), vec![Anomaly::PollSkip]);
    // Only the final read, which expects consecutive offsets, counts the hole.
    let (count, examples) = &verdict.anomalies[&Anomaly::PollSkip];
    assert_eq!((*count, examples[0].starts_with("final read")), (1, true));
    // Once a send was acknowledged there, the hole is a skipped record.
    h.sends.insert(2, send(0, 2, 15, Some((1, 20))));
    assert!(check(&h).classes().contains(&Anomaly::IntPollSkip));
    assert_eq!(
        check(&h).classes(),
        vec![Anomaly::LostWrite, Anomaly::PollSkip, Anomaly::IntPollSkip]
    );
}

#[test]
fn going_back_within_a_poll_is_int_nonmonotonic_poll() {
    let mut h = log_of(3);
    h.polls = vec![poll(0, 50, &[0, 1, 0, 1, 2], &h)];
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![Anomaly::IntNonmonotonicPoll]);
    assert_eq!(verdict.count(Anomaly::IntNonmonotonicPoll), 1);
    // A repeat is going back too.
    h.polls = vec![poll(0, 50, &[0, 1, 1, 2], &h)];
    assert_eq!(check(&h).classes(), vec![Anomaly::IntNonmonotonicPoll]);
    // Other partitions between records of one are no step back.
    h.reads.insert(1, vec![(0, 7)]);
    h.sends.insert(7, {
        let mut s = send(1, 7, 1, Some((0, 2)));
        s.outcome = Outcome::Ok {
            partition: 1,
            offset: 0,
        };
        s
    });
    h.polls = vec![Poll {
        records: vec![(0, 0, 1), (1, 0, 7), (0, 1, 2), (0, 2, 3)],
        ..poll(0, 50, &[], &h)
    }];
    assert!(check(&h).is_valid(), "{:?}", check(&h).lines());
}

/// Values 1 and 2 sent by producer 0 in that order, read at offsets `at1` and `at2`, with
/// producer 1's value 3 at the remaining offset of 0..3.
fn two_sends(op: Option<u64>, at1: i64, at2: i64) -> History {
    let other = 3 - at1 - at2;
    let mut sends = vec![
        send(0, 1, 1, Some((at1, 5))),
        send(0, 2, 2, Some((at2, 5))),
        send(1, 3, 1, Some((other, 5))),
    ];
    sends[0].op = op;
    sends[1].op = op;
    let mut reads = vec![(at1, 1), (at2, 2), (other, 3)];
    reads.sort();
    History {
        sends: sends.into_iter().map(|s| (s.value, s)).collect(),
        reads: BTreeMap::from([(0, reads)]),
        finished: true,
        ..History::default()
    }
}

#[test]
fn a_repositioned_reader_may_begin_anywhere() {
    let mut h = log_of(4);
    h.polls = vec![
        poll(0, 50, &[0, 1], &h),
        poll(0, 60, &[3], &h),
        poll(0, 70, &[0, 2], &h),
    ];
    assert_eq!(
        check(&h).classes(),
        vec![
            Anomaly::PollSkip,
            Anomaly::NonmonotonicPoll,
            Anomaly::IntPollSkip
        ]
    );
    // Assigned anew before the second and third polls: only the skip within a poll remains.
    h.polls[1].repositioned = true;
    h.polls[2].repositioned = true;
    assert_eq!(check(&h).classes(), vec![Anomaly::IntPollSkip]);
}

#[test]
fn with_sparse_offsets_the_final_read_need_only_go_up() {
    let mut h = log_of(3);
    h.sends.remove(&2);
    h.reads.insert(0, vec![(0, 1), (2, 3)]);
    assert_eq!(check(&h).classes(), vec![Anomaly::PollSkip]);
    h.sparse_offsets = true;
    assert!(check(&h).is_valid(), "{:?}", check(&h).lines());
    h.reads.insert(0, vec![(2, 3), (0, 1)]);
    assert_eq!(check(&h).classes(), vec![Anomaly::PollSkip]);
}

#[test]
fn an_acknowledgement_without_an_offset_needs_only_the_read() {
    let mut h = log_of(2);
    h.sends.get_mut(&2).expect("sent").outcome = Outcome::Ok {
        partition: 0,
        offset: -1,
    };
    assert!(check(&h).is_valid(), "{:?}", check(&h).lines());
    h.reads.insert(0, vec![(0, 1)]);
    assert_eq!(check(&h).classes(), vec![Anomaly::LostWrite]);
}

#[test]
fn sends_of_one_operation_out_of_order_are_int_nonmonotonic_send() {
    let verdict = check(&two_sends(Some(9), 1, 0));
    assert_eq!(verdict.classes(), vec![Anomaly::IntNonmonotonicSend]);
    assert!(verdict.anomalies[&Anomaly::IntNonmonotonicSend].1[0].contains("operation 9"));
    // Each send its own operation: the same reordering is a nonmonotonic send.
    assert_eq!(
        check(&two_sends(None, 1, 0)).classes(),
        vec![Anomaly::NonmonotonicSend]
    );
    // In order: nothing.
    let verdict = check(&two_sends(Some(9), 0, 1));
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(verdict.int_send_skips, 0);
}

#[test]
fn another_writer_between_sends_of_one_operation_is_an_allowed_int_send_skip() {
    let verdict = check(&two_sends(Some(9), 0, 2));
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(verdict.int_send_skips, 1);
    assert!(verdict.int_send_skip_examples[0].contains("1 records between"));
    assert!(verdict.measures()[0].starts_with("int-send-skip (allowed): 1"));
    // Not within one operation: no such figure.
    assert_eq!(check(&two_sends(None, 0, 2)).int_send_skips, 0);
}

#[test]
fn consume_counts_say_how_often_each_value_was_read() {
    let mut h = log_of(3);
    h.polls = vec![poll(0, 50, &[0, 1, 2], &h), poll(1, 50, &[0, 1, 2], &h)];
    let verdict = check(&h);
    assert_eq!(verdict.reader_consume_counts, BTreeMap::from([(1, 6)]));
    assert!(verdict.group_consume_counts.is_empty());
    // Reader 0 reads 1 again (a nonmonotonic poll); the group reads 1 in two generations (a
    // rebalance, allowed).
    h.polls.push(poll(0, 70, &[0], &h));
    let delivery = |member, generation, offset: i64| GroupDelivery {
        member,
        generation,
        partition: 0,
        offset,
        value: offset as u64 + 1,
    };
    h.group = GroupHistory {
        ran: true,
        deliveries: vec![
            delivery(0, 1, 0),
            delivery(1, 2, 0),
            delivery(1, 2, 1),
            delivery(1, 2, 2),
        ],
        commits: Vec::new(),
        finished: true,
    };
    let verdict = check(&h);
    assert_eq!(verdict.classes(), vec![Anomaly::NonmonotonicPoll]);
    assert_eq!(
        verdict.reader_consume_counts,
        BTreeMap::from([(1, 5), (2, 1)])
    );
    assert_eq!(
        verdict.group_consume_counts,
        BTreeMap::from([(1, 2), (2, 1)])
    );
    let measures = verdict.measures().join("\n");
    assert!(
        measures.contains("group consume counts (values × times read): 2×1, 1×2"),
        "{measures}"
    );
}

#[test]
fn realtime_lag_is_how_long_the_polled_value_had_not_been_the_tail() {
    // Value 2 was acknowledged at 20 ms; a poll invoked at 50 ms returned only value 1, which
    // had stopped being the tail 30 ms before. A poll at 60 ms returned 2, still the tail.
    let mut h = log_of(2);
    h.polls = vec![
        Poll {
            invoked_ms: Some(50),
            ..poll(0, 55, &[0], &h)
        },
        poll(0, 60, &[1], &h),
    ];
    let lag = check(&h).realtime_lag;
    assert_eq!(
        (lag.samples, lag.max_ms, lag.p50_ms, lag.p99_ms),
        (2, 30, 0, 30)
    );
    assert_eq!(lag.worst.as_deref(), Some("reader 0 at 55 ms, partition 0"));
    // Without the invocation, measured from the return.
    h.polls[0].invoked_ms = None;
    assert_eq!(check(&h).realtime_lag.max_ms, 35);
    // Polled before value 2 was known written: no lag.
    h.polls[0].at_ms = 15;
    let lag = check(&h).realtime_lag;
    assert_eq!((lag.samples, lag.max_ms, lag.worst), (2, 0, None));
    assert_eq!(check(&History::default()).realtime_lag, Lag::default());
}

#[test]
fn realtime_lag_counts_from_the_first_later_record_known_and_follows_the_reader() {
    // Value 2's acknowledgement came late (100 ms), value 3's early (30 ms): by 30 ms, value 1
    // was no longer the tail.
    let mut h = log_of(3);
    h.sends.get_mut(&2).expect("sent").completed_ms = 100;
    h.polls = vec![Poll {
        invoked_ms: Some(50),
        ..poll(0, 55, &[0], &h)
    }];
    assert_eq!(check(&h).realtime_lag.max_ms, 20);
    // A later poll returning only another partition's record still measures partition 0,
    // where the reader is stuck; another reader's polls do not.
    h.reads.insert(1, vec![(0, 7)]);
    h.polls.push(Poll {
        records: vec![(1, 0, 7)],
        ..poll(1, 80, &[], &h)
    });
    h.polls.push(Poll {
        records: vec![(1, 0, 7)],
        ..poll(0, 90, &[], &h)
    });
    let lag = check(&h).realtime_lag;
    assert_eq!((lag.samples, lag.max_ms), (4, 60));
    assert_eq!(lag.worst.as_deref(), Some("reader 0 at 90 ms, partition 0"));
    // Repositioned, the reader no longer holds a place in partition 0.
    h.polls[2].repositioned = true;
    let lag = check(&h).realtime_lag;
    assert_eq!((lag.samples, lag.max_ms), (3, 20));
}

#[test]
fn reads_may_begin_at_a_log_start_above_zero() {
    // Retention moved the log start to 2: values 1 and 2 are gone. A reader that polled 1,
    // was reset from 1 to 2, and the final read from 2, are fine; so is a reader whose first
    // poll was reset to the log start.
    let mut h = log_of(4);
    h.retention = true;
    h.final_starts = BTreeMap::from([(0, 2)]);
    h.reads.insert(0, vec![(2, 3), (3, 4)]);
    let mut reset_poll = poll(0, 60, &[2, 3], &h);
    reset_poll.resets = vec![(0, 1)];
    h.polls = vec![
        Poll {
            records: vec![(0, 0, 1)],
            ..poll(0, 30, &[], &h)
        },
        reset_poll.clone(),
        Poll {
            reader: 1,
            resets: vec![(0, 0)],
            repositioned: false,
            ..reset_poll.clone()
        },
    ];
    let verdict = check(&h);
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(verdict.trimmed, 2);
    // A first poll above the log start's neighbours without a reset skipped them.
    h.polls[2].resets.clear();
    assert_eq!(check(&h).classes(), vec![Anomaly::PollSkip]);
    // An acknowledged write at or above the log start must still be read.
    h.polls.clear();
    h.reads.insert(0, vec![(2, 3)]);
    assert_eq!(check(&h).classes(), vec![Anomaly::LostWrite]);
    // Without retention or DeleteRecords, the log start may not move at all.
    h.reads.insert(0, vec![(2, 3), (3, 4)]);
    h.retention = false;
    assert_eq!(check(&h).classes(), vec![Anomaly::LogStartUnasked]);
}

#[test]
fn the_json_report_has_every_class_and_figure() {
    let mut h = two_sends(Some(9), 1, 0);
    h.polls = vec![Poll {
        records: vec![(0, 0, 2), (0, 1, 1), (0, 0, 2)],
        ..poll(3, 50, &[], &h)
    }];
    let verdict = check(&h);
    let report = report_json(&verdict);
    assert_eq!(report["valid"], false);
    let keys: Vec<&str> = report["anomalies"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| a["class"].as_str().expect("a key"))
        .collect();
    assert_eq!(keys, vec!["int-nonmonotonic-poll", "int-nonmonotonic-send"]);
    assert_eq!(report["anomalies"][0]["count"], 1);
    assert_eq!(report["counts"]["acknowledged"], 3);
    assert_eq!(report["consume_counts"]["readers"]["2"], 1);
    assert_eq!(report["realtime_lag_ms"]["samples"], 1);
    let clean = report_json(&check(&log_of(1)));
    assert_eq!(clean["valid"], true);
    assert_eq!(clean["anomalies"], serde_json::json!([]));
    let txn = txn_report_json(&crate::txn::check(&crate::txn::TxnHistory::default()));
    assert_eq!(txn["workload"], "txn");
}
