//! The transactional workload's lines: producer instances' initialization, transaction
//! attempts, the output readers' polls, the group's OffsetFetch answers and the final read.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use super::{in_time_order, write_header, write_line, FormatError, Kind, Lines, Timed};
use crate::txn::{
    Bounds, InputId, InputRecord, Instance, InstanceId, Isolation, OffsetFetch, OutputRecord,
    TxnHistory, TxnId, TxnOp, TxnOutcome, TxnPoll,
};

const INIT: &str = "init-producer-id";
const TXN: &str = "txn";
const POLL: &str = "poll";
const OFFSET_FETCH: &str = "offset-fetch";
const FINAL_READ: &str = "final-read";
const FINAL_READ_END: &str = "final-read-end";

#[derive(Debug, Serialize, Deserialize)]
struct InitValue {
    transactional_id: String,
}

/// `init-producer-id`: an instance (`process`) initialized with its transactional id.
#[derive(Debug, Serialize, Deserialize)]
struct InitLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    process: u32,
    time: u64,
    value: InitValue,
}

#[derive(Debug, Serialize, Deserialize)]
struct TxnValue {
    number: u32,
    /// `[partition, offset, input]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    consumed: Vec<(i32, i64, u64)>,
    /// `[partition, input, copy, value]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    produced: Vec<(i32, u64, u32, u64)>,
    /// `[input partition, next offset]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    offsets: Vec<(i32, i64)>,
    /// When EndTxn(commit) was first sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    commit_sent: Option<u64>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OutcomeName {
    Committed,
    Aborted,
    Indeterminate,
    Fenced,
}

/// `txn`: an attempt of an instance (`process`): invoked with its number; completed with what
/// it consumed, produced and sent as offsets, and its outcome.
#[derive(Debug, Serialize, Deserialize)]
struct TxnLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    process: u32,
    time: u64,
    value: TxnValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<OutcomeName>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum IsolationName {
    ReadCommitted,
    ReadUncommitted,
}

/// `poll`: a reader's poll of the output topic.
#[derive(Debug, Serialize, Deserialize)]
struct PollLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    process: usize,
    time: u64,
    isolation: IsolationName,
    #[serde(default)]
    value: Vec<(i32, i64, u64)>,
    /// `[partition, last stable offset, high watermark]`, either `null` if not reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    bounds: Vec<(i32, Option<i64>, Option<i64>)>,
}

/// `offset-fetch`: the group's committed offsets, `[partition, offset]`.
#[derive(Debug, Serialize, Deserialize)]
struct FetchLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    time: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    value: Vec<(i32, i64)>,
}

/// `final-read`: one output partition of the final read, `[offset, value]`.
#[derive(Debug, Serialize, Deserialize)]
struct FinalReadLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    partition: i32,
    value: Vec<(i64, u64)>,
}

/// `final-read-end`: `ok` when the final read finished, `info` when not; when it ended.
#[derive(Debug, Serialize, Deserialize)]
struct EndLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    time: u64,
}

enum Line {
    Init(InitLine),
    Txn(TxnLine),
    Poll(PollLine),
    Fetch(FetchLine),
}

/// Writes `history` as a history file (`"workload":"txn"`).
pub fn write_txn_history(history: &TxnHistory, out: &mut impl Write) -> io::Result<()> {
    write_header(out, "txn", false, false, None)?;
    let mut timed: Vec<Timed<Line>> = Vec::new();
    for (id, instance) in &history.instances {
        for (kind, time, phase) in [
            (Kind::Invoke, instance.init_invoked_ms, 0),
            (Kind::Ok, instance.init_completed_ms, 1),
        ] {
            timed.push(Timed {
                // A completion never before its invocation (the invocation's own time is it).
                time: time.max(instance.init_invoked_ms),
                phase,
                line: Line::Init(InitLine {
                    kind,
                    f: INIT.into(),
                    process: id.0,
                    time,
                    value: InitValue {
                        transactional_id: instance.transactional_id.clone(),
                    },
                }),
            });
        }
    }
    for (id, op) in &history.txns {
        timed.push(Timed {
            time: op.invoked_ms,
            phase: 0,
            line: Line::Txn(TxnLine {
                kind: Kind::Invoke,
                f: TXN.into(),
                process: id.instance.0,
                time: op.invoked_ms,
                value: TxnValue {
                    number: id.number,
                    consumed: Vec::new(),
                    produced: Vec::new(),
                    offsets: Vec::new(),
                    commit_sent: None,
                },
                outcome: None,
            }),
        });
        let (kind, outcome) = match op.outcome {
            TxnOutcome::Committed => (Kind::Ok, OutcomeName::Committed),
            TxnOutcome::Aborted => (Kind::Fail, OutcomeName::Aborted),
            TxnOutcome::Indeterminate => (Kind::Info, OutcomeName::Indeterminate),
            // Fenced before its commit was sent, it cannot have committed.
            TxnOutcome::Fenced if op.commit_sent_ms.is_none() => (Kind::Fail, OutcomeName::Fenced),
            TxnOutcome::Fenced => (Kind::Info, OutcomeName::Fenced),
        };
        timed.push(Timed {
            time: op.completed_ms.max(op.invoked_ms),
            phase: 1,
            line: Line::Txn(TxnLine {
                kind,
                f: TXN.into(),
                process: id.instance.0,
                time: op.completed_ms,
                value: TxnValue {
                    number: id.number,
                    consumed: op
                        .consumed
                        .iter()
                        .map(|c| (c.partition, c.offset, c.input.0))
                        .collect(),
                    produced: op
                        .produced
                        .iter()
                        .map(|p| (p.partition, p.input.0, p.copy, p.value))
                        .collect(),
                    offsets: op.offsets.iter().map(|(&p, &o)| (p, o)).collect(),
                    commit_sent: op.commit_sent_ms,
                },
                outcome: Some(outcome),
            }),
        });
    }
    for poll in &history.polls {
        timed.push(Timed {
            time: poll.at_ms,
            phase: 1,
            line: Line::Poll(PollLine {
                kind: Kind::Ok,
                f: POLL.into(),
                process: poll.reader,
                time: poll.at_ms,
                isolation: match poll.isolation {
                    Isolation::ReadCommitted => IsolationName::ReadCommitted,
                    Isolation::ReadUncommitted => IsolationName::ReadUncommitted,
                },
                value: poll.records.clone(),
                bounds: poll
                    .bounds
                    .iter()
                    .map(|(&p, b)| (p, b.last_stable, b.high_watermark))
                    .collect(),
            }),
        });
    }
    for fetch in &history.offset_fetches {
        timed.push(Timed {
            time: fetch.invoked_ms,
            phase: 0,
            line: Line::Fetch(FetchLine {
                kind: Kind::Invoke,
                f: OFFSET_FETCH.into(),
                time: fetch.invoked_ms,
                value: Vec::new(),
            }),
        });
        timed.push(Timed {
            time: fetch.completed_ms.max(fetch.invoked_ms),
            phase: 1,
            line: Line::Fetch(FetchLine {
                kind: Kind::Ok,
                f: OFFSET_FETCH.into(),
                time: fetch.completed_ms,
                value: fetch.offsets.iter().map(|(&p, &o)| (p, o)).collect(),
            }),
        });
    }
    in_time_order(&mut timed);
    for event in timed {
        match event.line {
            Line::Init(line) => write_line(out, &line)?,
            Line::Txn(line) => write_line(out, &line)?,
            Line::Poll(line) => write_line(out, &line)?,
            Line::Fetch(line) => write_line(out, &line)?,
        }
    }
    let read = &history.final_read;
    for (&partition, records) in &read.partitions {
        write_line(
            out,
            &FinalReadLine {
                kind: Kind::Ok,
                f: FINAL_READ.into(),
                partition,
                value: records.clone(),
            },
        )?;
    }
    if read.finished || read.completed_ms != 0 {
        write_line(
            out,
            &EndLine {
                kind: if read.finished { Kind::Ok } else { Kind::Info },
                f: FINAL_READ_END.into(),
                time: read.completed_ms,
            },
        )?;
    }
    Ok(())
}

/// Reads a history file of the transactional workload (its header must say
/// `"workload":"txn"`).
pub fn read_txn_history(input: impl BufRead) -> Result<TxnHistory, FormatError> {
    let mut lines = Lines::new(input);
    let header = lines.header()?;
    if header.workload != "txn" {
        return Err(FormatError::new(
            1,
            format!(
                "workload {:?}: this is not a transactional history",
                header.workload
            ),
        ));
    }
    read_body(lines)
}

/// Reads the lines after the header.
pub(crate) fn read_body(mut lines: Lines<impl BufRead>) -> Result<TxnHistory, FormatError> {
    let mut history = TxnHistory::default();
    let mut open_inits: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    let mut open_txns: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut open_fetches: VecDeque<u64> = VecDeque::new();
    while let Some(event) = lines.next_event()? {
        let (kind, number) = (event.kind, event.number);
        let error = |m: String| FormatError::new(number, m);
        let f = event.f.clone();
        match f.as_str() {
            INIT => {
                let line: InitLine = event.parse()?;
                if kind == Kind::Invoke {
                    open_inits.insert(line.process, (line.value.transactional_id, line.time));
                    continue;
                }
                let Some((transactional_id, invoked)) = open_inits.remove(&line.process) else {
                    return Err(error(format!(
                        "init-producer-id: instance {} completes no open invocation",
                        line.process
                    )));
                };
                if kind != Kind::Ok {
                    // An instance exists only once initialized.
                    continue;
                }
                history.instances.insert(
                    InstanceId(line.process),
                    Instance {
                        transactional_id,
                        init_invoked_ms: invoked,
                        init_completed_ms: line.time,
                    },
                );
            }
            TXN => {
                let line: TxnLine = event.parse()?;
                let key = (line.process, line.value.number);
                if kind == Kind::Invoke {
                    open_txns.insert(key, line.time);
                    continue;
                }
                let Some(invoked_ms) = open_txns.remove(&key) else {
                    return Err(error(format!(
                        "txn: attempt {}#{} completes no open invocation",
                        key.0, key.1
                    )));
                };
                let outcome = match line.outcome {
                    Some(OutcomeName::Committed) => TxnOutcome::Committed,
                    Some(OutcomeName::Aborted) => TxnOutcome::Aborted,
                    Some(OutcomeName::Indeterminate) => TxnOutcome::Indeterminate,
                    Some(OutcomeName::Fenced) => TxnOutcome::Fenced,
                    None => match kind {
                        Kind::Ok => TxnOutcome::Committed,
                        Kind::Fail => TxnOutcome::Aborted,
                        _ => TxnOutcome::Indeterminate,
                    },
                };
                let v = line.value;
                history.txns.insert(
                    TxnId {
                        instance: InstanceId(line.process),
                        number: v.number,
                    },
                    TxnOp {
                        invoked_ms,
                        consumed: v
                            .consumed
                            .into_iter()
                            .map(|(partition, offset, input)| InputRecord {
                                partition,
                                offset,
                                input: InputId(input),
                            })
                            .collect(),
                        produced: v
                            .produced
                            .into_iter()
                            .map(|(partition, input, copy, value)| OutputRecord {
                                partition,
                                input: InputId(input),
                                copy,
                                value,
                            })
                            .collect(),
                        offsets: v.offsets.into_iter().collect(),
                        commit_sent_ms: v.commit_sent,
                        outcome,
                        completed_ms: line.time,
                    },
                );
            }
            POLL => {
                let line: PollLine = event.parse()?;
                if kind != Kind::Ok {
                    continue; // invocations and failed polls: nothing read
                }
                history.polls.push(TxnPoll {
                    reader: line.process,
                    isolation: match line.isolation {
                        IsolationName::ReadCommitted => Isolation::ReadCommitted,
                        IsolationName::ReadUncommitted => Isolation::ReadUncommitted,
                    },
                    at_ms: line.time,
                    records: line.value,
                    bounds: line
                        .bounds
                        .into_iter()
                        .map(|(p, last_stable, high_watermark)| {
                            (
                                p,
                                Bounds {
                                    last_stable,
                                    high_watermark,
                                },
                            )
                        })
                        .collect(),
                });
            }
            OFFSET_FETCH => {
                let line: FetchLine = event.parse()?;
                if kind == Kind::Invoke {
                    open_fetches.push_back(line.time);
                    continue;
                }
                let Some(invoked_ms) = open_fetches.pop_front() else {
                    return Err(error("offset-fetch: completes no open invocation".into()));
                };
                if kind == Kind::Ok {
                    history.offset_fetches.push(OffsetFetch {
                        invoked_ms,
                        completed_ms: line.time,
                        offsets: line.value.into_iter().collect(),
                    });
                }
            }
            FINAL_READ => {
                let line: FinalReadLine = event.parse()?;
                history
                    .final_read
                    .partitions
                    .entry(line.partition)
                    .or_default()
                    .extend(line.value);
            }
            FINAL_READ_END => {
                let line: EndLine = event.parse()?;
                history.final_read.finished = kind == Kind::Ok;
                history.final_read.completed_ms = line.time;
            }
            other => {
                return Err(error(format!(
                    "unknown f {other:?} in a transactional history"
                )));
            }
        }
    }
    Ok(history)
}
