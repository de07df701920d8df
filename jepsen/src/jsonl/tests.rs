//! History files: what is written reads back the same and checks to the same verdict, every
//! field included; malformed files are refused with the line and the reason.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::checker::check;
use crate::history::{
    Compaction, Completion, Delivery, GroupCommit, GroupDelivery, GroupHistory, Operation, Outcome,
    Poll, SendOp, TrimOp,
};
use crate::txn::{self, InputId, InstanceId, Isolation, TxnOp, TxnOutcome};

fn written(history: &History) -> String {
    let mut out = Vec::new();
    write_history(history, &mut out).expect("writes to memory");
    String::from_utf8(out).expect("JSON is UTF-8")
}

fn written_txn(history: &TxnHistory) -> String {
    let mut out = Vec::new();
    write_txn_history(history, &mut out).expect("writes to memory");
    String::from_utf8(out).expect("JSON is UTF-8")
}

fn send(
    producer: usize,
    value: u64,
    invoked_ms: u64,
    outcome: Outcome,
    completed_ms: u64,
) -> SendOp {
    SendOp {
        producer,
        kind: Delivery::Idempotent,
        key: value % 3,
        value,
        invoked_ms,
        outcome,
        completed_ms,
        op: None,
    }
}

/// A queue history that uses every field.
fn full_history() -> History {
    let mut sends = vec![
        send(
            0,
            1,
            1,
            Outcome::Ok {
                partition: 0,
                offset: 0,
            },
            3,
        ),
        send(
            0,
            2,
            2,
            Outcome::Ok {
                partition: 1,
                offset: 0,
            },
            3,
        ),
        send(1, 3, 2, Outcome::Fail("refused".into()), 4),
        send(1, 4, 5, Outcome::Info("timed out".into()), 9),
        send(2, 5, 6, Outcome::Pending, 0),
        send(
            2,
            6,
            6,
            Outcome::Ok {
                partition: 0,
                offset: -1,
            },
            7,
        ),
    ];
    sends[1].kind = Delivery::AtLeastOnce;
    sends[3].kind = Delivery::LeaderOnly;
    sends[4].op = Some(7);
    sends[5].op = Some(7);
    History {
        group: GroupHistory {
            ran: true,
            deliveries: vec![
                GroupDelivery {
                    member: 0,
                    generation: 1,
                    partition: 0,
                    offset: 0,
                    value: 1,
                },
                GroupDelivery {
                    member: 0,
                    generation: 1,
                    partition: 1,
                    offset: 0,
                    value: 2,
                },
                GroupDelivery {
                    member: 1,
                    generation: 2,
                    partition: 0,
                    offset: 0,
                    value: 1,
                },
                GroupDelivery {
                    member: 0,
                    generation: 1,
                    partition: 0,
                    offset: 1,
                    value: 6,
                },
            ],
            commits: vec![
                GroupCommit {
                    member: 0,
                    generation: 1,
                    partition: 0,
                    offset: 1,
                    at_ms: 4,
                },
                GroupCommit {
                    member: 1,
                    generation: 2,
                    partition: 0,
                    offset: 1,
                    at_ms: 8,
                },
            ],
            finished: true,
        },
        sends: sends.into_iter().map(|s| (s.value, s)).collect(),
        polls: vec![
            Poll {
                reader: 3,
                invoked_ms: Some(2),
                at_ms: 4,
                records: vec![(0, 0, 1), (1, 0, 2)],
                resets: Vec::new(),
                repositioned: false,
            },
            Poll {
                reader: 4,
                invoked_ms: None,
                at_ms: 5,
                records: Vec::new(),
                resets: vec![(0, 0)],
                repositioned: true,
            },
            Poll {
                reader: 3,
                invoked_ms: Some(4),
                at_ms: 8,
                records: vec![(0, 1, 6)],
                resets: vec![(1, 3)],
                repositioned: false,
            },
        ],
        reads: BTreeMap::from([(0, vec![(0, 1), (1, 6)]), (1, vec![(0, 2)])]),
        final_starts: BTreeMap::from([(0, 0), (1, 0), (2, 5)]),
        group_starts: BTreeMap::from([(0, 0)]),
        trims: vec![
            TrimOp {
                partition: 2,
                offset: Some(5),
                invoked_ms: 3,
                completed_ms: 5,
                low_watermark: Some(5),
            },
            TrimOp {
                partition: 1,
                offset: None,
                invoked_ms: 6,
                completed_ms: 9,
                low_watermark: None,
            },
        ],
        // Operation 7 (the sends of value 5 and 6) never completed; operation 8 is reader 3's
        // second poll.
        operations: BTreeMap::from([
            (
                7,
                Operation {
                    process: 2,
                    txn: true,
                    invoked_ms: 6,
                    ..Operation::default()
                },
            ),
            (
                8,
                Operation {
                    process: 3,
                    txn: false,
                    invoked_ms: 4,
                    completed_ms: 8,
                    completion: Completion::Ok,
                    polls: vec![2],
                },
            ),
        ]),
        retention: true,
        finished: true,
        sparse_offsets: true,
        ..History::default()
    }
}

/// A transactional history that uses every field.
fn full_txn_history() -> TxnHistory {
    let mut h = TxnHistory::default();
    h.instance(InstanceId(0), "t-0", 0, 1);
    h.instance(InstanceId(1), "t-0", 10, 12);
    let committed = TxnOp::new(2)
        .consume(0, 3, InputId(7))
        .consume(1, 0, InputId(8))
        .produce(0, InputId(7), 0, 700)
        .produce(1, InputId(7), 1, 701)
        .produce(0, InputId(8), 0, 800)
        .send_offset(0, 4)
        .send_offset(1, 1)
        .commit_sent(5)
        .ended(TxnOutcome::Committed, 6);
    h.txn(InstanceId(0), 0, committed);
    h.txn(
        InstanceId(0),
        1,
        TxnOp::new(7)
            .produce(0, InputId(9), 0, 900)
            .ended(TxnOutcome::Aborted, 8),
    );
    h.txn(
        InstanceId(0),
        2,
        TxnOp::new(9)
            .produce(1, InputId(9), 0, 901)
            .commit_sent(11)
            .ended(TxnOutcome::Fenced, 13),
    );
    h.txn(
        InstanceId(0),
        3,
        TxnOp::new(9).ended(TxnOutcome::Fenced, 13),
    );
    h.txn(InstanceId(1), 0, TxnOp::new(14).commit_sent(15));
    h.poll(
        5,
        Isolation::ReadCommitted,
        7,
        vec![(0, 0, 700), (1, 0, 701)],
    );
    h.poll(6, Isolation::ReadUncommitted, 8, vec![(0, 2, 900)]);
    h.polls[1].bounds.insert(
        0,
        txn::Bounds {
            last_stable: Some(2),
            high_watermark: Some(3),
        },
    );
    h.polls[1].bounds.insert(
        1,
        txn::Bounds {
            last_stable: None,
            high_watermark: Some(1),
        },
    );
    h.offset_fetch(7, 8, &[(0, 4), (1, 1)]);
    h.offset_fetch(9, 9, &[]);
    h.final_read.partitions.insert(0, vec![(0, 700), (1, 800)]);
    h.final_read.partitions.insert(1, vec![(0, 701)]);
    h.final_read.partitions.insert(2, Vec::new());
    h.final_read.finished = true;
    h.final_read.completed_ms = 20;
    h
}

fn same_verdict(a: &History, b: &History) {
    assert_eq!(format!("{:?}", check(a)), format!("{:?}", check(b)));
}

#[test]
fn a_queue_history_reads_back_the_same() {
    for h in [History::default(), full_history()] {
        let text = written(&h);
        let back = read_history(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, h, "{text}");
        same_verdict(&back, &h);
        assert_eq!(read_any(text.as_bytes()), Ok(AnyHistory::Queue(h)));
    }
}

#[test]
fn the_full_queue_history_is_checked_as_written() {
    // Not a clean history: the checker finds the same things in the copy.
    let h = full_history();
    let verdict = check(&h);
    assert!(!verdict.is_valid());
    let back = read_history(written(&h).as_bytes()).expect("reads");
    assert_eq!(check(&back).lines(), verdict.lines());
}

#[test]
fn a_txn_history_reads_back_the_same() {
    for h in [TxnHistory::default(), full_txn_history()] {
        let text = written_txn(&h);
        let back = read_txn_history(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, h, "{text}");
        assert_eq!(
            format!("{:?}", txn::check(&back)),
            format!("{:?}", txn::check(&h))
        );
        assert_eq!(read_any(text.as_bytes()), Ok(AnyHistory::Txn(h)));
    }
}

#[test]
fn lines_are_in_time_order_with_the_header_first() {
    let text = written(&full_history());
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            r#"{"format":"oxbow-jepsen","version":1,"workload":"queue","retention":true,"sparse_offsets":true}"#
        )
    );
    let times: Vec<u64> = lines
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("time")?
                .as_u64()
        })
        .collect();
    assert!(times.len() > 10);
    assert_eq!(times.len(), 25, "every timed line of the full history");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(text.contains(
        r#"{"type":"invoke","f":"send","process":2,"time":6,"value":{"key":2,"value":5},"delivery":"idempotent","op":7}"#
    ), "{text}");
    for line in [
        r#"{"type":"invoke","f":"operation","process":2,"time":6,"op":7,"txn":true}"#,
        r#"{"type":"ok","f":"poll","process":3,"time":8,"value":[[0,1,6]],"resets":[[1,3]],"op":8}"#,
        r#"{"type":"ok","f":"operation","process":3,"time":8,"op":8}"#,
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

#[test]
fn a_compacted_history_says_so_in_its_header_its_tombstones_and_its_end() {
    let ok = |offset| Outcome::Ok {
        partition: 0,
        offset,
    };
    let mut h = History {
        sends: [send(0, 1, 1, ok(0), 2), send(0, 4, 3, ok(1), 5)]
            .into_iter()
            .map(|s| (s.value, s))
            .collect(),
        reads: BTreeMap::from([(0, vec![(1, 4)])]),
        final_starts: BTreeMap::from([(0, 0)]),
        finished: true,
        compaction: Some(Compaction {
            delete_retention_ms: 500,
            min_compaction_lag_ms: 0,
        }),
        final_read_ms: Some(30),
        final_read_began_ms: Some(20),
        ..History::default()
    };
    h.tombstones.insert(4);
    let text = written(&h);
    for line in [
        r#"{"format":"oxbow-jepsen","version":1,"workload":"queue","compaction":{"delete_retention_ms":500,"min_compaction_lag_ms":0}}"#,
        r#"{"type":"invoke","f":"send","process":0,"time":3,"value":{"key":1,"value":4},"delivery":"idempotent","tombstone":true}"#,
        r#"{"type":"invoke","f":"send","process":0,"time":1,"value":{"key":1,"value":1},"delivery":"idempotent"}"#,
        r#"{"type":"ok","f":"final-read-end","time":30,"began":20}"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    assert_eq!(read_history(text.as_bytes()), Ok(h.clone()));
    // The lag may be left out; files without these fields read as before.
    let short = text.replace(r#","min_compaction_lag_ms":0"#, "");
    assert_eq!(read_history(short.as_bytes()), Ok(h.clone()));
    let old = r#"{"format":"oxbow-jepsen","version":1,"workload":"queue"}
{"type":"ok","f":"final-read-end"}
"#;
    let back = read_history(old.as_bytes()).expect("an old file");
    assert_eq!(
        (
            back.compaction,
            back.final_read_ms,
            back.final_read_began_ms
        ),
        (None, None, None)
    );
    assert!(back.tombstones.is_empty() && back.finished);
}

#[test]
fn faults_and_blank_lines_are_skipped() {
    let mut text = written(&full_history());
    text.insert_str(
        text.find('\n').expect("a header") + 1,
        "\n{\"type\":\"info\",\"f\":\"kill\",\"process\":\"nemesis\",\"time\":3,\"value\":[\"n1\"]}\n\n",
    );
    assert_eq!(read_history(text.as_bytes()), Ok(full_history()));
}

fn error_of(text: &str) -> FormatError {
    read_any(text.as_bytes()).expect_err("must be refused")
}

#[test]
fn malformed_files_are_refused_with_the_line_and_the_reason() {
    let header = r#"{"format":"oxbow-jepsen","version":1,"workload":"queue"}"#;
    let e = error_of("");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("header"), "{e}");
    let e = error_of(r#"{"format":"oxbow-jepsen","version":2,"workload":"queue"}"#);
    assert!(e.message.contains("version 2"), "{e}");
    let e = error_of(r#"{"format":"oxbow-jepsen","version":1,"workload":"bank"}"#);
    assert!(e.message.contains("bank"), "{e}");
    let e = error_of(&format!("{header}\n\n{{\"type\":\"ok\",\"f\":\"send\""));
    assert_eq!(
        (e.line, e.message.starts_with("not JSON")),
        (3, true),
        "{e}"
    );
    let e = error_of(&format!(
        "{header}\n{{\"type\":\"ok\",\"f\":\"send\",\"process\":0,\"time\":3,\"value\":{{\"key\":1,\"value\":9,\"partition\":0,\"offset\":0}}}}"
    ));
    assert_eq!(e.line, 2);
    assert!(e.message.contains("no open invocation"), "{e}");
    let e = error_of(&format!(
        "{header}\n{{\"type\":\"invoke\",\"f\":\"send\",\"process\":0,\"time\":3,\"value\":{{\"key\":1}},\"delivery\":\"idempotent\"}}"
    ));
    assert_eq!(e.line, 2);
    assert!(e.message.contains("value"), "{e}");
    let e = error_of(&format!("{header}\n{{\"type\":\"ok\",\"f\":\"transfer\"}}"));
    assert!(e.message.contains("unknown f"), "{e}");
    let e = error_of(&format!("{header}\n{{\"type\":\"done\",\"f\":\"poll\"}}"));
    assert!(e.message.contains("type"), "{e}");
    assert_eq!(e.to_string(), format!("line 2: {}", e.message));
    // One kind read as the other.
    let txn_file = written_txn(&TxnHistory::default());
    assert!(read_history(txn_file.as_bytes()).is_err());
    assert!(read_txn_history(header.as_bytes()).is_err());
}

prop_compose! {
    fn arb_send()(
        producer in 0usize..4,
        kind in prop_oneof![Just(Delivery::Idempotent), Just(Delivery::AtLeastOnce), Just(Delivery::LeaderOnly)],
        key in 0u64..5,
        invoked_ms in 0u64..100,
        took in 0u64..20,
        outcome in 0u8..4,
        partition in 0i32..3,
        offset in -1i64..50,
        op in proptest::option::of(0u64..3),
    ) -> SendOp {
        let outcome = match outcome {
            0 => Outcome::Pending,
            1 => Outcome::Ok { partition, offset },
            2 => Outcome::Fail(format!("error {offset}")),
            _ => Outcome::Info("\"quoted\"\n".into()),
        };
        let completed_ms = if outcome == Outcome::Pending { 0 } else { invoked_ms + took };
        SendOp { producer, kind, key, value: 0, invoked_ms, outcome, completed_ms, op }
    }
}

prop_compose! {
    fn arb_history()(
        sends in proptest::collection::vec(arb_send(), 0..20),
        polls in proptest::collection::vec(
            (0usize..3, proptest::option::of(0u64..10), 0u64..100,
             proptest::collection::vec((0i32..3, 0i64..50, 0u64..40), 0..5),
             proptest::collection::vec((0i32..3, 0i64..50), 0..2)),
            0..8),
        trims in proptest::collection::vec(
            (0i32..3, proptest::option::of(0i64..50), 0u64..100, 0u64..10, proptest::option::of(0i64..50)),
            0..4),
        deliveries in proptest::collection::vec((0usize..3, 0i32..3, 0i32..3, 0i64..50, 0u64..40), 0..8),
        commits in proptest::collection::vec((0usize..3, 0i32..3, 0i32..3, 0i64..50, 0u64..100), 0..5),
        reads in proptest::collection::btree_map(0i32..3, proptest::collection::vec((0i64..50, 0u64..40), 0..5), 0..3),
        final_starts in proptest::collection::btree_map(0i32..4, 0i64..10, 0..3),
        group_starts in proptest::collection::btree_map(0i32..4, 0i64..10, 0..3),
        flags in proptest::array::uniform4(any::<bool>()),
        operations in proptest::collection::btree_map(
            0u64..3,
            (0usize..3, any::<bool>(), 0u64..100, 0u64..10, 0u8..4),
            0..3),
        poll_ops in proptest::collection::vec(proptest::option::of(0u64..3), 8),
    ) -> History {
        let sends = sends.into_iter().enumerate().map(|(i, mut s)| {
            s.value = i as u64 * 7 + 1;
            (s.value, s)
        }).collect();
        // Each reader's polls one after the other, in the order they returned.
        let mut polls: Vec<(Poll, Option<u64>)> = polls.into_iter().zip(poll_ops).map(|((reader, took, at_ms, records, resets), op)| (Poll {
            reader,
            invoked_ms: took.map(|t| at_ms.saturating_sub(t)),
            at_ms,
            records,
            resets,
            repositioned: false,
        }, op)).collect();
        polls.sort_by_key(|p| p.0.at_ms);
        let mut operations: BTreeMap<u64, Operation> = operations.into_iter().map(|(id, (process, txn, invoked_ms, took, completion))| {
            let completion = [Completion::Pending, Completion::Ok, Completion::Fail, Completion::Info][completion as usize];
            let completed_ms = if completion == Completion::Pending { 0 } else { invoked_ms + took };
            (id, Operation { process, txn, invoked_ms, completed_ms, completion, polls: Vec::new() })
        }).collect();
        for (index, (_, op)) in polls.iter().enumerate() {
            if let Some(op) = op.and_then(|id| operations.get_mut(&id)) {
                op.polls.push(index);
            }
        }
        let mut polls: Vec<Poll> = polls.into_iter().map(|(p, _)| p).collect();
        let mut last: BTreeMap<usize, u64> = BTreeMap::new();
        for p in &mut polls {
            let free = last.get(&p.reader).map_or(0, |l| l + 1);
            p.invoked_ms = p.invoked_ms.map(|i| i.max(free)).filter(|&i| i <= p.at_ms);
            last.insert(p.reader, p.at_ms);
        }
        let mut trims: Vec<TrimOp> = trims.into_iter().map(|(partition, offset, invoked_ms, took, low_watermark)| TrimOp {
            partition, offset, invoked_ms, completed_ms: invoked_ms + took, low_watermark,
        }).collect();
        // One call at a time (the reader pairs equal calls first in, first out).
        trims.sort_by_key(|t| t.invoked_ms);
        let mut free = 0;
        for t in &mut trims {
            let took = t.completed_ms - t.invoked_ms;
            t.invoked_ms = t.invoked_ms.max(free);
            t.completed_ms = t.invoked_ms + took;
            free = t.completed_ms + 1;
        }
        let mut commits: Vec<GroupCommit> = commits.into_iter().map(|(member, generation, partition, offset, at_ms)| GroupCommit {
            member, generation, partition, offset, at_ms,
        }).collect();
        commits.sort_by_key(|c| c.at_ms);
        History {
            group: GroupHistory {
                ran: flags[0],
                deliveries: deliveries.into_iter().map(|(member, generation, partition, offset, value)| GroupDelivery {
                    member, generation, partition, offset, value,
                }).collect(),
                commits,
                finished: flags[1],
            },
            sends,
            polls,
            reads,
            final_starts,
            group_starts,
            trims,
            operations,
            retention: flags[2],
            finished: flags[3],
            sparse_offsets: flags[0] && flags[3],
            ..History::default()
        }
    }
}

prop_compose! {
    /// A history of any kind above, of a compacted topic: some sends tombstones, and the time
    /// the final read ended when it finished.
    fn arb_compacted_history()(
        h in arb_history(),
        delete_retention_ms in 0u64..10_000,
        min_compaction_lag_ms in 0u64..100,
        tombstones in proptest::collection::vec(any::<bool>(), 20),
        end in 0u64..200,
        took in proptest::option::of(0u64..50),
    ) -> History {
        let mut h = h;
        h.compaction = Some(Compaction { delete_retention_ms, min_compaction_lag_ms });
        h.tombstones = h.sends.keys().zip(tombstones).filter(|(_, t)| *t).map(|(v, _)| *v).collect();
        h.final_read_ms = h.finished.then_some(end);
        h.final_read_began_ms = took.filter(|_| h.finished).map(|t| end.saturating_sub(t));
        h
    }
}

proptest! {
    #[test]
    fn any_queue_history_in_time_order_reads_back_the_same(h in arb_history()) {
        let text = written(&h);
        let back = read_history(text.as_bytes());
        prop_assert_eq!(back.as_ref(), Ok(&h), "{}", text);
        let back = back.expect("checked");
        prop_assert_eq!(format!("{:?}", check(&back)), format!("{:?}", check(&h)));
    }

    #[test]
    fn any_compacted_history_in_time_order_reads_back_the_same(h in arb_compacted_history()) {
        let text = written(&h);
        let back = read_history(text.as_bytes());
        prop_assert_eq!(back.as_ref(), Ok(&h), "{}", text);
        let back = back.expect("checked");
        prop_assert_eq!(format!("{:?}", check(&back)), format!("{:?}", check(&h)));
    }
}

prop_compose! {
    fn arb_txn_op()(
        invoked_ms in 0u64..100,
        took in 0u64..20,
        consumed in proptest::collection::vec((0i32..3, 0i64..50, 0u64..30), 0..3),
        produced in proptest::collection::vec((0i32..3, 0u64..30, 0u32..2, 0u64..1000), 0..3),
        offsets in proptest::collection::btree_map(0i32..3, 0i64..50, 0..3),
        commit_sent in proptest::option::of(0u64..20),
        outcome in 0u8..4,
    ) -> TxnOp {
        let mut op = TxnOp::new(invoked_ms);
        for (partition, offset, input) in consumed {
            op = op.consume(partition, offset, InputId(input));
        }
        for (partition, input, copy, value) in produced {
            op = op.produce(partition, InputId(input), copy, value);
        }
        op.offsets = offsets;
        op.commit_sent_ms = commit_sent.map(|d| invoked_ms + d);
        let outcome = match outcome {
            0 => TxnOutcome::Committed,
            1 => TxnOutcome::Aborted,
            2 => TxnOutcome::Indeterminate,
            _ => TxnOutcome::Fenced,
        };
        op.ended(outcome, invoked_ms + took)
    }
}

prop_compose! {
    fn arb_txn_history()(
        instances in proptest::collection::vec((0u64..50, 0u64..5, 0u8..2), 0..4),
        txns in proptest::collection::vec((0u32..4, arb_txn_op()), 0..8),
        polls in proptest::collection::vec(
            (0usize..3, any::<bool>(), 0u64..100,
             proptest::collection::vec((0i32..3, 0i64..50, 0u64..1000), 0..4),
             proptest::collection::btree_map(0i32..3, (proptest::option::of(0i64..50), proptest::option::of(0i64..50)), 0..2)),
            0..5),
        fetches in proptest::collection::vec(
            (0u64..10, 0u64..5, proptest::collection::btree_map(0i32..3, 0i64..50, 0..3)),
            0..4),
        partitions in proptest::collection::btree_map(0i32..3, proptest::collection::vec((0i64..50, 0u64..1000), 0..4), 0..3),
        final_ms in 0u64..200,
        finished in any::<bool>(),
    ) -> TxnHistory {
        let mut h = TxnHistory::default();
        for (i, (invoked, took, id)) in instances.into_iter().enumerate() {
            h.instance(InstanceId(i as u32), &format!("t-{id}"), invoked, invoked + took);
        }
        for (number, (instance, op)) in txns.into_iter().enumerate() {
            h.txn(InstanceId(instance), number as u32, op);
        }
        for (reader, committed, at_ms, records, bounds) in polls {
            let isolation = if committed { Isolation::ReadCommitted } else { Isolation::ReadUncommitted };
            h.poll(reader, isolation, at_ms, records);
            h.polls.last_mut().expect("just added").bounds = bounds
                .into_iter()
                .map(|(p, (last_stable, high_watermark))| (p, txn::Bounds { last_stable, high_watermark }))
                .collect();
        }
        h.polls.sort_by_key(|p| p.at_ms);
        // One OffsetFetch after the other.
        let mut free = 0;
        for (gap, took, offsets) in fetches {
            let invoked = free + gap;
            h.offset_fetches.push(txn::OffsetFetch { invoked_ms: invoked, completed_ms: invoked + took, offsets });
            free = invoked + took;
        }
        h.final_read.partitions = partitions;
        h.final_read.completed_ms = final_ms;
        h.final_read.finished = finished;
        h
    }
}

proptest! {
    #[test]
    fn any_txn_history_in_time_order_reads_back_the_same(h in arb_txn_history()) {
        let text = written_txn(&h);
        let back = read_txn_history(text.as_bytes());
        prop_assert_eq!(back.as_ref(), Ok(&h), "{}", text);
        let back = back.expect("checked");
        prop_assert_eq!(format!("{:?}", txn::check(&back)), format!("{:?}", txn::check(&h)));
    }
}

#[test]
fn an_operation_gathers_its_sends_and_polls_and_old_files_need_none() {
    let header = r#"{"format":"oxbow-jepsen","version":1,"workload":"queue"}"#;
    // The lines of docs/jepsen.md, with a send of the operation.
    let lines = [
        r#"{"type":"invoke","f":"operation","process":2,"time":6,"op":7,"txn":true}"#,
        r#"{"type":"invoke","f":"send","process":2,"time":6,"value":{"key":1,"value":9},"delivery":"idempotent","op":7}"#,
        r#"{"type":"ok","f":"send","process":2,"time":7,"value":{"key":1,"value":9,"partition":1,"offset":0}}"#,
        r#"{"type":"ok","f":"poll","process":2,"time":7,"value":[[1,0,9]],"op":7}"#,
        r#"{"type":"ok","f":"operation","process":2,"time":8,"op":7}"#,
    ];
    let final_read = r#"{"type":"ok","f":"final-read","partition":1,"start":0,"value":[[0,9]]}
{"type":"ok","f":"final-read-end"}"#;
    let text = format!("{header}\n{}\n{final_read}", lines.join("\n"));
    let h = read_history(text.as_bytes()).expect("valid");
    assert_eq!(
        h.operations,
        BTreeMap::from([(
            7,
            Operation {
                process: 2,
                txn: true,
                invoked_ms: 6,
                completed_ms: 8,
                completion: Completion::Ok,
                polls: vec![0],
            }
        )])
    );
    assert_eq!(h.sends[&9].op, Some(7));
    // Its own write, polled before it committed.
    assert_eq!(
        check(&h).classes(),
        vec![crate::checker::Anomaly::PrecommittedRead]
    );
    // Without the operation lines, the poll names an operation never invoked.
    let without: Vec<&str> = lines[1..4].to_vec();
    let e = error_of(&format!("{header}\n{}", without.join("\n")));
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("operation 7 is never invoked"), "{e}");
    // Without them and the poll's op (a file from before operations): sends alone.
    let old = format!(
        "{header}\n{}\n{}\n{}",
        lines[1],
        lines[2],
        lines[3].replace(",\"op\":7", "")
    );
    let h = read_history(old.as_bytes()).expect("valid");
    assert!(h.operations.is_empty());
    assert_eq!(h.sends[&9].op, Some(7));
    // A completion of another process, or twice.
    let e = error_of(&format!(
        "{header}\n{}\n{}",
        lines[0],
        lines[4].replace("\"process\":2", "\"process\":3")
    ));
    assert!(e.message.contains("another process"), "{e}");
    let e = error_of(&format!(
        "{header}\n{}\n{}\n{}",
        lines[0], lines[4], lines[4]
    ));
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("no open invocation"), "{e}");
}
