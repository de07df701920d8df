//! The EDN reader on every syntax Jepsen's histories use, and Jepsen Kafka histories read into
//! a `History` and checked.

use super::parse::{Edn, Parser};
use super::*;
use crate::checker::{check, Anomaly, Cycle};

fn all(text: &str) -> Result<Vec<Edn>, FormatError> {
    let mut parser = Parser::new(text);
    let mut out = Vec::new();
    while let Some((_, e)) = parser.next_element()? {
        out.push(e);
    }
    Ok(out)
}

#[test]
fn the_reader_knows_the_syntax_jepsen_writes() {
    let text = r#"; a comment
{:a 1, :b [2 -3 4N 1.5 ##Inf] :c (nil true false) :d #{:x} :e "q\"\n\u00e9" :f \a :g \newline}
#jepsen.history.Op{:f :send} #_ (discarded 1 2) sym/bol #object[java.lang.Exception 0x1 "boom"]"#;
    let elements = all(text).expect("valid EDN");
    assert_eq!(elements.len(), 4);
    let map = &elements[0];
    assert_eq!(map.get("a"), Some(&Edn::Int(1)));
    assert_eq!(
        map.get("b"),
        Some(&Edn::Vector(vec![
            Edn::Int(2),
            Edn::Int(-3),
            Edn::Int(4),
            Edn::Number("1.5".into()),
            Edn::Number("##Inf".into())
        ]))
    );
    assert_eq!(
        map.get("c"),
        Some(&Edn::List(vec![
            Edn::Nil,
            Edn::Bool(true),
            Edn::Bool(false)
        ]))
    );
    assert_eq!(
        map.get("d"),
        Some(&Edn::Set(vec![Edn::Keyword("x".into())]))
    );
    assert_eq!(map.get("e"), Some(&Edn::Str("q\"\né".into())));
    assert_eq!(map.get("f"), Some(&Edn::Char('a')));
    assert_eq!(map.get("g"), Some(&Edn::Char('\n')));
    assert_eq!(elements[1].get("f").and_then(Edn::as_keyword), Some("send"));
    assert_eq!(elements[2], Edn::Symbol("sym/bol".into()));
    assert_eq!(
        elements[3].to_string(),
        "#object [java.lang.Exception 0x1 \"boom\"]"
    );
}

#[test]
fn malformed_edn_is_refused_with_its_line() {
    for (text, line, what) in [
        ("{:a 1}\n{:a [1 2}", 2, "where ']'"),
        ("{:a 1}\n\n(1 2", 3, "before ')'"),
        ("{:a}", 1, "odd"),
        ("\"open", 1, "string"),
        ("1 2 )", 1, "unexpected ')'"),
    ] {
        let e = all(text).expect_err(text);
        assert_eq!(e.line, line, "{text}: {e}");
        assert!(e.message.contains(what), "{text}: {e}");
    }
}

/// Two sends to key 0 in one operation, an indeterminate send to key 1, an aborted
/// transaction, an assignment and a poll of everything, a nemesis between them.
const HISTORY: &str = r#"{:index 0 :type :invoke :f :assign :value [0 1] :process 2 :time 1000000}
{:index 1 :type :ok :f :assign :value [0 1] :process 2 :time 2000000}
#jepsen.history.Op{:index 2, :time 3000000, :type :invoke, :process 0, :f :send, :value [[:send 0 1] [:send 0 2]]}
{:type :info :process :nemesis :f :start-partition :value [:isolated {"n1" #{"n2" "n3"}}] :time 3500000}
{:type :invoke, :f :send, :value [[:send 1 1]], :process 1, :time 4000000}
{:type :ok, :f :send, :value [[:send 0 [0 1]] [:send 0 [1 2]]], :process 0, :time 5000000}
{:type :info, :f :send, :value [[:send 1 1]], :process 1, :time 6000000, :error [:timeout "no answer"]}
{:type :invoke :f :poll :value [[:poll]] :process 2 :time 7000000}
{:type :ok :f :poll :value [[:poll {0 [[0 1] [1 2]], 1 [[0 1]]}]] :process 2 :time 8000000 :poll-ms 1000}
{:type :invoke :f :poll :value [[:poll]] :process 2 :time 8500000}
{:type :ok :f :poll :value [[:poll {}]] :process 2 :time 8600000}
{:type :invoke :f :txn :value [[:send 0 3] [:poll]] :process 3 :time 9000000}
{:type :fail :f :txn :value [[:send 0 3] [:poll]] :process 3 :time 10000000 :error :aborted}
"#;

#[test]
fn a_jepsen_kafka_history_reads_into_a_history() {
    let h = read_edn(HISTORY.as_bytes(), Delivery::Idempotent).expect("valid");
    // Value 1 went to keys 0 and 1: values become key << 32 | value.
    let v = |key: u64, value: u64| key << 32 | value;
    assert_eq!(
        h.sends.keys().copied().collect::<Vec<_>>(),
        vec![v(0, 1), v(0, 2), v(0, 3), v(1, 1)]
    );
    let first = &h.sends[&v(0, 1)];
    assert_eq!(
        (
            first.producer,
            first.invoked_ms,
            first.completed_ms,
            &first.outcome
        ),
        (
            0,
            3,
            5,
            &Outcome::Ok {
                partition: 0,
                offset: 0
            }
        )
    );
    assert!(first.op.is_some() && first.op == h.sends[&v(0, 2)].op);
    assert_eq!(
        h.sends[&v(1, 1)].outcome,
        Outcome::Info("[:timeout \"no answer\"]".into())
    );
    assert_eq!(h.sends[&v(0, 3)].outcome, Outcome::Fail(":aborted".into()));
    // The aborted transaction is an operation of its one send.
    let txn = h.sends[&v(0, 3)].op.expect("a transaction's send names it");
    assert_eq!(
        h.operations[&txn],
        Operation {
            process: 3,
            txn: true,
            invoked_ms: 9,
            completed_ms: 10,
            completion: Completion::Fail,
            polls: Vec::new(),
        }
    );
    // The send of two values is an operation too, not a transaction.
    let send = &h.operations[&first.op.expect("an operation")];
    assert_eq!((send.txn, send.completion), (false, Completion::Ok));
    assert_eq!(h.operations.len(), 2);
    assert_eq!(h.polls.len(), 2);
    assert_eq!((h.polls[1].at_ms, h.polls[1].records.len()), (8, 0));
    let poll = &h.polls[0];
    assert_eq!(
        (poll.reader, poll.invoked_ms, poll.at_ms, poll.repositioned),
        (2, Some(7), 8, true)
    );
    assert_eq!(
        poll.records,
        vec![(0, 0, v(0, 1)), (0, 1, v(0, 2)), (1, 0, v(1, 1))]
    );
    assert_eq!(
        h.reads,
        BTreeMap::from([
            (0, vec![(0, v(0, 1)), (1, v(0, 2))]),
            (1, vec![(0, v(1, 1))])
        ])
    );
    assert!(h.finished && h.sparse_offsets);
    let verdict = check(&h);
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
}

#[test]
fn anomalies_in_a_jepsen_history_are_found() {
    // The aborted transaction's value read; an acknowledged send never read; a poll going
    // back within itself; values unique across keys, so kept as they are.
    let text = r#"{:type :invoke :f :txn :value [[:send 0 3]] :process 3 :time 1000000}
{:type :fail :f :txn :value [[:send 0 3]] :process 3 :time 2000000}
{:type :invoke :f :send :value [[:send 1 4]] :process 1 :time 3000000}
{:type :ok :f :send :value [[:send 1 [0 4]]] :process 1 :time 4000000}
{:type :invoke :f :send :value [[:send 0 5]] :process 1 :time 5000000}
{:type :ok :f :send :value [[:send 0 [1 5]]] :process 1 :time 6000000}
{:type :invoke :f :poll :value [[:poll]] :process 2 :time 7000000}
{:type :ok :f :poll :value [[:poll {0 [[0 3] [1 5] [0 3]]}]] :process 2 :time 8000000}
"#;
    let h = read_edn(text.as_bytes(), Delivery::Idempotent).expect("valid");
    assert!(h.sends.contains_key(&3) && h.sends.contains_key(&4));
    let found = check(&h).classes();
    assert_eq!(
        found,
        vec![
            Anomaly::LostWrite,
            Anomaly::ReadOfFailedSend,
            Anomaly::IntNonmonotonicPoll
        ]
    );
}

#[test]
fn transactions_of_a_jepsen_history_are_judged_for_cycles_and_own_reads() {
    // Jepsen's g0-test as transactions: T1 and T2 write x and y in opposite orders (allowed,
    // measured); T3 and T4 each polled the other's write (G1c with wr edges alone: invalid);
    // T5 polled its own write (precommitted read); T6 polled everything T1 and T2 wrote.
    let text = r#"{:type :invoke :f :txn :value [[:send 0 1] [:send 1 11]] :process 0 :time 1000000}
{:type :invoke :f :txn :value [[:send 0 2] [:send 1 12]] :process 1 :time 1000000}
{:type :ok :f :txn :value [[:send 0 [0 1]] [:send 1 [1 11]]] :process 0 :time 2000000}
{:type :ok :f :txn :value [[:send 0 [1 2]] [:send 1 [0 12]]] :process 1 :time 2000000}
{:type :invoke :f :txn :value [[:send 2 3] [:poll]] :process 2 :time 3000000}
{:type :invoke :f :txn :value [[:send 3 4] [:poll]] :process 3 :time 3000000}
{:type :ok :f :txn :value [[:send 2 [0 3]] [:poll {3 [[0 4]]}]] :process 2 :time 4000000}
{:type :ok :f :txn :value [[:send 3 [0 4]] [:poll {2 [[0 3]]}]] :process 3 :time 4000000}
{:type :invoke :f :txn :value [[:send 4 5] [:poll]] :process 4 :time 5000000}
{:type :ok :f :txn :value [[:send 4 [0 5]] [:poll {4 [[0 5]]}]] :process 4 :time 6000000}
{:type :invoke :f :txn :value [[:poll] [:poll]] :process 5 :time 7000000}
{:type :ok :f :txn :value [[:poll {0 [[0 1] [1 2]]}] [:poll {1 [[0 12] [1 11]]}]] :process 5 :time 8000000}
"#;
    let h = read_edn(text.as_bytes(), Delivery::Idempotent).expect("valid");
    assert_eq!(h.operations.len(), 6);
    assert!(h
        .operations
        .values()
        .all(|op| op.txn && op.completion == Completion::Ok));
    assert_eq!(
        h.operations
            .values()
            .map(|op| op.polls.len())
            .sum::<usize>(),
        4
    );
    let verdict = check(&h);
    assert_eq!(
        verdict.classes(),
        vec![Anomaly::PrecommittedRead, Anomaly::WriteReadCycle]
    );
    let found: Vec<(Cycle, u64)> = verdict.cycles.iter().map(|(c, (n, _))| (*c, *n)).collect();
    assert_eq!(found, vec![(Cycle::G0, 1), (Cycle::G1c, 1)]);
    assert!(
        verdict.anomalies[&Anomaly::PrecommittedRead].1[0].contains("polled its own 5 at 4@0"),
        "{:?}",
        verdict.lines()
    );
    // Without T3, T4 and T5, only the measured G0 is left.
    let valid: String = text
        .lines()
        .filter(|l| {
            [2, 3, 4]
                .iter()
                .all(|p| !l.contains(&format!(":process {p} ")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let verdict = check(&read_edn(valid.as_bytes(), Delivery::Idempotent).expect("valid"));
    assert!(verdict.is_valid(), "{:?}", verdict.lines());
    let found: Vec<Cycle> = verdict.cycles.keys().copied().collect();
    assert_eq!(found, vec![Cycle::G0]);
}

#[test]
fn a_malformed_operation_is_refused_with_its_line() {
    let e = read_edn(
        "{:type :invoke :f :send :process 0 :value [[:send 0 1]]}\n{:type :ok :f :send :process 0 :value [[:send :k [0 1]]]}".as_bytes(),
        Delivery::Idempotent,
    )
    .expect_err("a key must be an integer");
    assert_eq!(e.line, 2, "{e}");
    let e =
        read_edn("{:f :send :process 0}".as_bytes(), Delivery::Idempotent).expect_err("no type");
    assert!(e.message.contains(":type"), "{e}");
    // An invocation never completed is a send of unknown outcome.
    let h = read_edn(
        "{:type :invoke :f :send :process 0 :value [[:send 0 1]] :time 0}".as_bytes(),
        Delivery::AtLeastOnce,
    )
    .expect("valid");
    assert_eq!(h.sends[&1].outcome, Outcome::Info("never completed".into()));
    assert_eq!(h.sends[&1].kind, Delivery::AtLeastOnce);
}
