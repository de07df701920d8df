//! Jepsen's own Kafka histories: `history.edn` of `jepsen.tests.kafka` (the queue workload
//! Jepsen ran against Kafka, Redpanda and Bufstream), read into a [`History`] so that the
//! checker can judge it.
//!
//! Each element is an operation: `{:type :invoke|:ok|:fail|:info, :f :send|:poll|:txn|...,
//! :value ..., :process p, :time ns}` (possibly tagged, `#jepsen.history.Op{...}`). A
//! completion completes its process's open invocation (a Jepsen process runs one operation at
//! a time); operations of the nemesis (a non-integer process) are skipped. Mapping:
//!
//! - Jepsen's keys are partitions (each key is one topic-partition in Jepsen).
//! - `:send` and `:txn` micro-operations `[:send k v]` (completed `[:send k [offset v]]`) are
//!   sends of value `v` by the process, with the promise given to [`read_edn`]; `:ok` is
//!   acknowledged (offset `nil`: -1), `:fail` failed (a transaction aborted), `:info`
//!   unknown, and an invocation never completed unknown too. A `:txn` operation, and a
//!   `:send` of several values, is an [`Operation`] (a transaction for `:txn`, with its
//!   completion), whose id its sends carry in [`SendOp::op`] and whose polls it lists.
//! - `:poll` micro-operations `[:poll {k [[offset v] ...]}]` of completed `:poll` and `:txn`
//!   operations are polls of the process, invoked and returned at the operation's times (empty
//!   ones too, for realtime lag).
//! - `:assign`, `:subscribe` and `:crash` reposition the process's consumer: its next poll may
//!   begin anywhere ([`Poll::repositioned`]); a subscribed consumer's polls all may (a
//!   rebalance can move it at any time, so Jepsen allows its poll-skips too).
//! - There is no separate final read: Jepsen's final polls are polls. The final read is every
//!   record any poll returned, per partition by offset (the first value seen at each), so an
//!   acknowledged value no poll returned is a lost write (Jepsen's `unseen`), and offsets may
//!   have holes (`sparse_offsets`).
//! - Values are unique per key in Jepsen's workload; when some value was sent to two keys,
//!   every value becomes `key << 32 | value` to stay unique in the run.
//! - Times are Jepsen's nanoseconds, divided into milliseconds.

mod parse;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use crate::history::{Completion, Delivery, History, Operation, Outcome, Poll, SendOp};
use crate::jsonl::FormatError;
use parse::{Edn, Parser};

/// A Jepsen operation's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One operation element, as read.
struct Op {
    line: usize,
    kind: Type,
    f: String,
    process: i64,
    time_ms: u64,
    value: Edn,
    error: Option<Edn>,
}

/// A send before values are made unique: key and Jepsen's value.
struct RawSend {
    line: usize,
    producer: usize,
    key: i64,
    value: i64,
    invoked_ms: u64,
    outcome: Outcome,
    completed_ms: u64,
    op: Option<u64>,
}

/// A poll before values are made unique: (key, offset, Jepsen's value).
struct RawPoll {
    line: usize,
    reader: usize,
    invoked_ms: u64,
    at_ms: u64,
    records: Vec<(i64, i64, i64)>,
    repositioned: bool,
    op: Option<u64>,
}

fn op_of(line: usize, element: &Edn) -> Result<Option<Op>, FormatError> {
    let error = |m: String| FormatError::new(line, m);
    let Some(kind) = element.get("type").and_then(Edn::as_keyword) else {
        return Err(error(format!("an operation needs :type, got {element}")));
    };
    let kind = match kind {
        "invoke" => Type::Invoke,
        "ok" => Type::Ok,
        "fail" => Type::Fail,
        "info" => Type::Info,
        other => {
            return Err(error(format!(
                ":type :{other} is none of invoke, ok, fail, info"
            )))
        }
    };
    let Some(process) = element.get("process").and_then(Edn::as_int) else {
        return Ok(None); // the nemesis, or another non-client process
    };
    let f = match element.get("f").map(Edn::untagged) {
        Some(Edn::Keyword(f)) | Some(Edn::Symbol(f)) | Some(Edn::Str(f)) => f.clone(),
        _ => return Err(error("an operation needs :f".into())),
    };
    let time_ms = element
        .get("time")
        .and_then(Edn::as_int)
        .map_or(0, |ns| ns.max(0) as u64 / 1_000_000);
    Ok(Some(Op {
        line,
        kind,
        f,
        process,
        time_ms,
        value: element.get("value").cloned().unwrap_or(Edn::Nil),
        error: element.get("error").cloned(),
    }))
}

/// The micro-operations of an operation's value: `[[:send k v] [:poll ...] ...]`.
fn micro_ops(value: &Edn) -> &[Edn] {
    value.as_seq().unwrap_or(&[])
}

/// Reads `history.edn` of Jepsen's Kafka test into a [`History`]; every producer is taken to
/// promise `delivery` (Jepsen's `--safe` runs are idempotent).
pub fn read_edn(mut input: impl Read, delivery: Delivery) -> Result<History, FormatError> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|e| FormatError::new(1, format!("cannot read: {e}")))?;
    let mut parser = Parser::new(&text);
    let mut open: BTreeMap<i64, Op> = BTreeMap::new();
    let mut pairs: Vec<(Op, Option<Op>)> = Vec::new();
    while let Some((line, element)) = parser.next_element()? {
        let Some(op) = op_of(line, &element)? else {
            continue;
        };
        if op.kind == Type::Invoke {
            if let Some(previous) = open.insert(op.process, op) {
                pairs.push((previous, None)); // never completed: unknown
            }
            continue;
        }
        let invocation = open.remove(&op.process);
        match invocation {
            Some(invocation) => pairs.push((invocation, Some(op))),
            // A completion without its invocation: taken as invoked when it completed.
            None => pairs.push((
                Op {
                    kind: Type::Invoke,
                    value: Edn::Nil,
                    error: None,
                    f: op.f.clone(),
                    ..op
                },
                Some(op),
            )),
        }
    }
    pairs.extend(open.into_values().map(|op| (op, None)));
    pairs.sort_by_key(|(invocation, _)| invocation.line);

    let mut sends: Vec<RawSend> = Vec::new();
    let mut polls: Vec<RawPoll> = Vec::new();
    let mut operations: BTreeMap<u64, Operation> = BTreeMap::new();
    // Consumers to reposition before their next poll; consumers that subscribed.
    let mut reposition: BTreeSet<i64> = BTreeSet::new();
    let mut subscribed: BTreeSet<i64> = BTreeSet::new();
    for (number, (invocation, completion)) in pairs.iter().enumerate() {
        let process = invocation.process;
        let bad = |line: usize, m: String| FormatError::new(line, m);
        match invocation.f.as_str() {
            "send" | "txn" | "poll" => {}
            "assign" | "subscribe" | "crash" => {
                reposition.insert(process);
                if invocation.f == "subscribe" {
                    subscribed.insert(process);
                } else {
                    subscribed.remove(&process);
                }
                continue;
            }
            _ => continue,
        }
        let producer = usize::try_from(process)
            .map_err(|_| bad(invocation.line, format!("process {process} below 0")))?;
        let (kind, completed_ms, line, why) = match &completion {
            None => (
                Type::Info,
                invocation.time_ms,
                invocation.line,
                "never completed".to_string(),
            ),
            Some(c) => (
                c.kind,
                c.time_ms,
                c.line,
                c.error
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
            ),
        };
        // What the sends and polls were: the completion's value when it says more.
        let completed_value = completion.as_ref().map(|c| &c.value);
        let micro = completed_value
            .map(micro_ops)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| micro_ops(&invocation.value));
        let n_sends = micro
            .iter()
            .filter(|m| {
                m.as_seq().and_then(|s| s.first()).and_then(Edn::as_keyword) == Some("send")
            })
            .count();
        // A transaction, or a send of several values, is an operation its sends and polls
        // name.
        let op = (invocation.f == "txn" || n_sends > 1).then_some(number as u64);
        if let Some(id) = op {
            operations.insert(
                id,
                Operation {
                    process: producer,
                    txn: invocation.f == "txn",
                    invoked_ms: invocation.time_ms,
                    completed_ms,
                    completion: match kind {
                        Type::Ok => Completion::Ok,
                        Type::Fail => Completion::Fail,
                        _ => Completion::Info,
                    },
                    polls: Vec::new(),
                },
            );
        }
        let mut records = Vec::new();
        let mut polled = false;
        for m in micro {
            let Some(parts) = m.as_seq() else {
                return Err(bad(
                    line,
                    format!("a micro-operation must be a vector, got {m}"),
                ));
            };
            match parts.first().and_then(Edn::as_keyword) {
                Some("send") => {
                    let (key, sent) = match parts {
                        [_, k, sent] => (k.as_int(), sent),
                        _ => (None, &Edn::Nil),
                    };
                    let Some(key) = key else {
                        return Err(bad(
                            line,
                            format!("a send must be [:send key value], got {m}"),
                        ));
                    };
                    let (offset, value) = match sent.as_seq() {
                        Some([offset, value]) => (offset.as_int(), value.as_int()),
                        _ => (None, sent.as_int()),
                    };
                    let Some(value) = value else {
                        return Err(bad(
                            line,
                            format!("a send's value must be an integer, got {m}"),
                        ));
                    };
                    let outcome = match kind {
                        Type::Ok => Outcome::Ok {
                            partition: partition_of(key, line)?,
                            offset: offset.unwrap_or(-1),
                        },
                        Type::Fail => Outcome::Fail(why.clone()),
                        _ => Outcome::Info(why.clone()),
                    };
                    sends.push(RawSend {
                        line,
                        producer,
                        key,
                        value,
                        invoked_ms: invocation.time_ms,
                        outcome,
                        completed_ms,
                        op,
                    });
                }
                Some("poll") => {
                    let Some(Edn::Map(read)) = parts.get(1).map(Edn::untagged) else {
                        continue; // not completed
                    };
                    polled = true;
                    for (k, pairs) in read {
                        let Some(key) = k.as_int() else {
                            return Err(bad(
                                line,
                                format!("a polled key must be an integer, got {k}"),
                            ));
                        };
                        for pair in pairs.as_seq().unwrap_or(&[]) {
                            let record = match pair.as_seq() {
                                Some([offset, value]) => offset.as_int().zip(value.as_int()),
                                _ => None,
                            };
                            let Some((o, v)) = record else {
                                return Err(bad(
                                    line,
                                    format!("a polled record must be [offset value], got {pair}"),
                                ));
                            };
                            records.push((key, o, v));
                        }
                    }
                }
                _ => {}
            }
        }
        if polled {
            // An empty poll too: a consumer stuck behind shows in the realtime lag. The
            // repositioning holds until a poll returns records.
            let repositioned = if records.is_empty() {
                reposition.contains(&process)
            } else {
                reposition.remove(&process)
            };
            polls.push(RawPoll {
                line,
                reader: producer,
                invoked_ms: invocation.time_ms,
                at_ms: completed_ms,
                records,
                repositioned: repositioned || subscribed.contains(&process),
                op,
            });
        }
    }
    build(sends, polls, operations, delivery)
}

fn partition_of(key: i64, line: usize) -> Result<i32, FormatError> {
    i32::try_from(key).map_err(|_| FormatError::new(line, format!("key {key} is no partition")))
}

/// Makes values unique, and the final read of every polled record.
fn build(
    sends: Vec<RawSend>,
    polls: Vec<RawPoll>,
    operations: BTreeMap<u64, Operation>,
    delivery: Delivery,
) -> Result<History, FormatError> {
    let mut keys_of: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for s in &sends {
        keys_of.entry(s.value).or_default().insert(s.key);
    }
    for p in &polls {
        for &(k, _, v) in &p.records {
            keys_of.entry(v).or_default().insert(k);
        }
    }
    let per_key = keys_of.values().any(|keys| keys.len() > 1);
    let unique = |key: i64, value: i64, line: usize| -> Result<u64, FormatError> {
        let fits = |x: i64| (0..1 << 31).contains(&x);
        match (per_key, u64::try_from(value)) {
            (false, Ok(v)) => Ok(v),
            (true, Ok(v)) if fits(key) && fits(value) => Ok((key as u64) << 32 | v),
            _ => Err(FormatError::new(
                line,
                format!("value {value} of key {key} cannot be made unique"),
            )),
        }
    };
    let mut history = History {
        finished: true,
        sparse_offsets: true,
        operations,
        ..History::default()
    };
    for s in sends {
        let value = unique(s.key, s.value, s.line)?;
        let send = SendOp {
            producer: s.producer,
            kind: delivery,
            key: s.key as u64,
            value,
            invoked_ms: s.invoked_ms,
            outcome: s.outcome,
            completed_ms: s.completed_ms,
            op: s.op,
        };
        if history.sends.insert(value, send).is_some() {
            return Err(FormatError::new(
                s.line,
                format!("value {} of key {} sent twice", s.value, s.key),
            ));
        }
    }
    let mut final_log: BTreeMap<i32, BTreeMap<i64, u64>> = BTreeMap::new();
    for p in polls {
        let mut records = Vec::with_capacity(p.records.len());
        for (k, o, v) in p.records {
            let partition = partition_of(k, p.line)?;
            let value = unique(k, v, p.line)?;
            final_log
                .entry(partition)
                .or_default()
                .entry(o)
                .or_insert(value);
            records.push((partition, o, value));
        }
        if let Some(op) = p.op.and_then(|id| history.operations.get_mut(&id)) {
            op.polls.push(history.polls.len());
        }
        history.polls.push(Poll {
            reader: p.reader,
            invoked_ms: Some(p.invoked_ms),
            at_ms: p.at_ms,
            records,
            resets: Vec::new(),
            repositioned: p.repositioned,
        });
    }
    history.reads = final_log
        .into_iter()
        .map(|(p, log)| (p, log.into_iter().collect()))
        .collect();
    Ok(history)
}
