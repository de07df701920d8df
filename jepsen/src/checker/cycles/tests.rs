//! Each cycle class and the precommitted read: a history that must show it and one that must
//! not (Jepsen's own cases from `jepsen/test/jepsen/tests/kafka_test.clj` among them), and a
//! history of 10^5 transactions in one component.

use crate::checker::order::Orders;
use crate::checker::{check, Anomaly, Cycle, Verdict};
use crate::history::{Completion, Delivery, History, Operation, Outcome, Poll, SendOp};

/// Builds histories of operations: every send acknowledged, the final read every record.
#[derive(Default)]
struct Builder {
    h: History,
}

impl Builder {
    /// Operation `id` of process `id`: sends `sends` ((partition, offset, value)), then one
    /// poll returning `polled` (none if empty), ending with `completion`.
    fn op(
        &mut self,
        id: u64,
        txn: bool,
        sends: &[(i32, i64, u64)],
        polled: &[(i32, i64, u64)],
        completion: Completion,
    ) -> &mut Self {
        let process = id as usize;
        let t = 10 * id;
        let mut op = Operation {
            process,
            txn,
            invoked_ms: t,
            completed_ms: t + 5,
            completion,
            polls: Vec::new(),
        };
        for &(partition, offset, value) in sends {
            self.send(process, Some(id), partition, offset, value, t);
            if completion != Completion::Ok {
                self.h.sends.get_mut(&value).expect("sent").outcome = match completion {
                    Completion::Fail => Outcome::Fail("aborted".into()),
                    _ => Outcome::Info("unknown".into()),
                };
            }
        }
        if !polled.is_empty() {
            op.polls.push(self.h.polls.len());
            self.poll(process, t + 2, polled);
        }
        self.h.operations.insert(id, op);
        self
    }

    /// A send of its own (or of operation `op`) by `producer`, acknowledged at
    /// `partition`@`offset`, in the final read.
    fn send(
        &mut self,
        producer: usize,
        op: Option<u64>,
        partition: i32,
        offset: i64,
        value: u64,
        t: u64,
    ) -> &mut Self {
        self.h.sends.insert(
            value,
            SendOp {
                producer,
                kind: Delivery::Idempotent,
                key: partition as u64,
                value,
                invoked_ms: t,
                outcome: Outcome::Ok { partition, offset },
                completed_ms: t + 1,
                op,
            },
        );
        self.h
            .reads
            .entry(partition)
            .or_default()
            .push((offset, value));
        self
    }

    /// A poll of `reader` (repositioned: these histories judge cycles, not positions).
    fn poll(&mut self, reader: usize, at_ms: u64, records: &[(i32, i64, u64)]) -> &mut Self {
        self.h.polls.push(Poll {
            reader,
            invoked_ms: Some(at_ms),
            at_ms: at_ms + 1,
            records: records.to_vec(),
            resets: Vec::new(),
            repositioned: true,
        });
        self
    }

    fn check(&mut self) -> Verdict {
        for reads in self.h.reads.values_mut() {
            reads.sort_unstable();
        }
        self.h.finished = true;
        self.h.sparse_offsets = true;
        check(&self.h)
    }
}

const OK: Completion = Completion::Ok;

fn cycles(verdict: &Verdict) -> Vec<(Cycle, u64)> {
    verdict.cycles.iter().map(|(c, (n, _))| (*c, *n)).collect()
}

#[test]
fn two_transactions_writing_two_partitions_in_opposite_orders_are_g0() {
    // Jepsen's g0-test: T1 before T2 in x, T2 before T1 in y.
    let mut b = Builder::default();
    b.op(1, true, &[(0, 0, 1), (1, 1, 2)], &[], OK)
        .op(2, true, &[(0, 1, 3), (1, 0, 4)], &[], OK);
    let verdict = b.check();
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(cycles(&verdict), vec![(Cycle::G0, 1)]);
    let example = &verdict.cycles[&Cycle::G0].1[0];
    assert!(
        example.contains("ww, partition 0: 1 then 3")
            && example.contains("ww, partition 1: 4 then 2"),
        "{example}"
    );
    assert!(verdict
        .measures()
        .iter()
        .any(|l| l.starts_with("G0 cycles")));
    // The same order in both partitions: no cycle.
    let mut b = Builder::default();
    b.op(1, true, &[(0, 0, 1), (1, 0, 2)], &[], OK)
        .op(2, true, &[(0, 1, 3), (1, 1, 4)], &[], OK);
    assert!(b.check().cycles.is_empty());
    // An aborted T2 is no vertex (and its records, read, are the aborted read G1a).
    let mut b = Builder::default();
    b.op(1, true, &[(0, 0, 1), (1, 1, 2)], &[], OK).op(
        2,
        true,
        &[(0, 1, 3), (1, 0, 4)],
        &[],
        Completion::Fail,
    );
    let verdict = b.check();
    assert!(verdict.cycles.is_empty());
    assert_eq!(verdict.classes(), vec![Anomaly::ReadOfFailedSend]);
}

#[test]
fn a_write_after_a_read_closing_back_through_ww_is_g1c_and_allowed() {
    // Jepsen's g1c-ww-wr-test: T2 read T1's x, T2's y came before T1's.
    let mut b = Builder::default();
    b.op(1, true, &[(0, 0, 1), (1, 2, 3)], &[], OK)
        .op(2, true, &[(1, 1, 2)], &[(0, 0, 1)], OK);
    let verdict = b.check();
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(cycles(&verdict), vec![(Cycle::G1c, 1)]);
    // T2's y after T1's: T1 precedes T2 both ways, no cycle.
    let mut b = Builder::default();
    b.op(1, true, &[(0, 0, 1), (1, 1, 3)], &[], OK)
        .op(2, true, &[(1, 2, 2)], &[(0, 0, 1)], OK);
    assert!(b.check().cycles.is_empty());
}

#[test]
fn transactions_reading_each_others_writes_are_a_write_read_cycle() {
    // Jepsen's g1c-pure-wr-test: T1 read T2's y and T2 read T1's x.
    let mut b = Builder::default();
    b.op(1, true, &[(0, 0, 1)], &[(1, 0, 2)], OK)
        .op(2, true, &[(1, 0, 2)], &[(0, 0, 1)], OK);
    let verdict = b.check();
    assert_eq!(verdict.classes(), vec![Anomaly::WriteReadCycle]);
    let example = &verdict.anomalies[&Anomaly::WriteReadCycle].1[0];
    assert!(example.starts_with("transaction "), "{example}");
    assert_eq!(example.matches("-[wr, partition").count(), 2, "{example}");
    assert_eq!(cycles(&verdict), vec![(Cycle::G1c, 1)]);
    // Only one of them read the other: no cycle.
    let mut b = Builder::default();
    b.op(1, true, &[(0, 0, 1)], &[(1, 0, 2)], OK)
        .op(2, true, &[(1, 0, 2)], &[], OK);
    let verdict = b.check();
    assert!(verdict.is_valid() && verdict.cycles.is_empty());
    // Operations that are not transactions may (no atomic visibility): measured only.
    let mut b = Builder::default();
    b.op(1, false, &[(0, 0, 1)], &[(1, 0, 2)], OK)
        .op(2, false, &[(1, 0, 2)], &[(0, 0, 1)], OK);
    let verdict = b.check();
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(cycles(&verdict), vec![(Cycle::G1c, 1)]);
}

#[test]
fn seeing_one_of_a_transactions_writes_but_not_the_other_is_g_single() {
    // x: 1 (a send of its own), then T2's 2; y: T2's 3. T1 read x up to 1 and y's 3.
    let mut b = Builder::default();
    b.send(9, None, 0, 0, 1, 1)
        .op(1, true, &[], &[(0, 0, 1), (1, 0, 3)], OK)
        .op(2, true, &[(0, 1, 2), (1, 0, 3)], &[], OK);
    let verdict = b.check();
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(cycles(&verdict), vec![(Cycle::GSingle, 1)]);
    let example = &verdict.cycles[&Cycle::GSingle].1[0];
    assert!(
        example.contains("rw, partition 0: read up to 1, 2 next"),
        "{example}"
    );
    // T1 read x up to T2's 2: nothing unseen.
    let mut b = Builder::default();
    b.send(9, None, 0, 0, 1, 1)
        .op(1, true, &[], &[(0, 0, 1), (0, 1, 2), (1, 0, 3)], OK)
        .op(2, true, &[(0, 1, 2), (1, 0, 3)], &[], OK);
    assert!(b.check().cycles.is_empty());
}

#[test]
fn two_transactions_each_missing_the_others_write_are_g2() {
    // Write skew: T1 read x up to 1 and wrote y's 4; T2 read y up to 3 and wrote x's 2.
    let mut b = Builder::default();
    b.send(8, None, 0, 0, 1, 1)
        .send(9, None, 1, 0, 3, 1)
        .op(1, true, &[(1, 1, 4)], &[(0, 0, 1)], OK)
        .op(2, true, &[(0, 1, 2)], &[(1, 0, 3)], OK);
    let verdict = b.check();
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(cycles(&verdict), vec![(Cycle::G2, 1)]);
    assert_eq!(verdict.cycles[&Cycle::G2].1[0].matches("-[rw,").count(), 2);
    // T2 read y up to T1's 4: only T1 missed a write.
    let mut b = Builder::default();
    b.send(8, None, 0, 0, 1, 1)
        .send(9, None, 1, 0, 3, 1)
        .op(1, true, &[(1, 1, 4)], &[(0, 0, 1)], OK)
        .op(2, true, &[(0, 1, 2)], &[(1, 0, 3), (1, 1, 4)], OK);
    assert!(b.check().cycles.is_empty());
}

#[test]
fn a_transaction_polling_its_own_write_is_a_precommitted_read() {
    // Jepsen's precommitted-read-test.
    let mut b = Builder::default();
    b.op(1, true, &[(0, 0, 1)], &[(0, 0, 1)], OK);
    let verdict = b.check();
    assert_eq!(verdict.classes(), vec![Anomaly::PrecommittedRead]);
    assert_eq!(
        verdict.anomalies[&Anomaly::PrecommittedRead].1,
        vec!["transaction 1 (process 1) polled its own 1 at 0@0".to_string()]
    );
    // Reading another transaction's write is fine; so is an operation that is no
    // transaction reading its own acknowledged write.
    let mut b = Builder::default();
    b.op(1, true, &[(0, 0, 1)], &[], OK)
        .op(2, true, &[(0, 1, 2)], &[(0, 0, 1)], OK)
        .op(3, false, &[(1, 0, 3)], &[(1, 0, 3)], OK);
    let verdict = b.check();
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
}

#[test]
fn a_hundred_thousand_transactions_in_one_component_are_searched() {
    // Transaction i writes partition 0 at offset i and partition 1 at offset n - 1 - i, and
    // polls the previous one's record of partition 0: one component of every transaction.
    let n = 100_000u64;
    let mut b = Builder::default();
    for i in 0..n {
        let polled = if i > 0 {
            vec![(0, i as i64 - 1, 2 * (i - 1))]
        } else {
            vec![]
        };
        b.op(
            i,
            true,
            &[(0, i as i64, 2 * i), (1, (n - 1 - i) as i64, 2 * i + 1)],
            &polled,
            OK,
        );
    }
    b.check();
    let started = std::time::Instant::now();
    let mut verdict = Verdict::default();
    super::check_cycles(&b.h, &Orders::of(&b.h), &mut verdict);
    eprintln!("searched {n} transactions in {:?}", started.elapsed());
    assert_eq!(cycles(&verdict), vec![(Cycle::G0, 1), (Cycle::G1c, 1)]);
    let started = std::time::Instant::now();
    let verdict = b.check();
    eprintln!("checked {n} transactions in {:?}", started.elapsed());
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    assert_eq!(cycles(&verdict), vec![(Cycle::G0, 1), (Cycle::G1c, 1)]);
}
