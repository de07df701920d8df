//! The queue workload's lines: sends, polls, DeleteRecords calls, the consumer group's reads
//! and offset commits, and the final read.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use super::{in_time_order, write_header, write_line, FormatError, Header, Kind, Lines, Timed};
use crate::history::{
    Compaction, Completion, Delivery, GroupCommit, GroupDelivery, History, Operation, Outcome,
    Poll, SendOp, TrimOp,
};

/// `f` of each line kind.
const SEND: &str = "send";
const POLL: &str = "poll";
const OPERATION: &str = "operation";
const TRIM: &str = "delete-records";
const OFFSET_COMMIT: &str = "offset-commit";
const GROUP_POLL: &str = "group-poll";
const GROUP: &str = "group";
const GROUP_LOG_START: &str = "group-log-start";
const FINAL_READ: &str = "final-read";
const FINAL_READ_END: &str = "final-read-end";

/// A producer's promise, as written.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum DeliveryName {
    Idempotent,
    AtLeastOnce,
    LeaderOnly,
}

impl From<Delivery> for DeliveryName {
    fn from(d: Delivery) -> Self {
        match d {
            Delivery::Idempotent => Self::Idempotent,
            Delivery::AtLeastOnce => Self::AtLeastOnce,
            Delivery::LeaderOnly => Self::LeaderOnly,
        }
    }
}

impl From<DeliveryName> for Delivery {
    fn from(d: DeliveryName) -> Self {
        match d {
            DeliveryName::Idempotent => Self::Idempotent,
            DeliveryName::AtLeastOnce => Self::AtLeastOnce,
            DeliveryName::LeaderOnly => Self::LeaderOnly,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SendValue {
    key: u64,
    value: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
}

/// `send`: invoked with the key, the value, the producer's promise, its operation and whether
/// it is a tombstone; completed `ok` with the partition and offset, `fail` (definitely not
/// written) or `info` (maybe) with the error.
#[derive(Debug, Serialize, Deserialize)]
struct SendLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    process: usize,
    time: u64,
    value: SendValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivery: Option<DeliveryName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<u64>,
    /// On the invocation: the record's value is null (its `value` is still its id).
    #[serde(default, skip_serializing_if = "super::is_false")]
    tombstone: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `poll`: optionally invoked; `ok` with the records as `[partition, offset, value]`, the
/// resets as `[partition, position left]`, and whether the reader was repositioned.
#[derive(Debug, Serialize, Deserialize)]
struct PollLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    process: usize,
    time: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    value: Vec<(i32, i64, u64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    resets: Vec<(i32, i64)>,
    #[serde(default, skip_serializing_if = "super::is_false")]
    repositioned: bool,
    /// The operation the poll was part of (on the completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<u64>,
}

/// `operation`: an operation of several sends and polls (its sends and polls carry its `op`),
/// invoked with whether it is a transaction; `ok` (committed, acknowledged), `fail` (aborted)
/// or `info` (unknown).
#[derive(Debug, Serialize, Deserialize)]
struct OperationLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    process: usize,
    time: u64,
    op: u64,
    #[serde(default, skip_serializing_if = "super::is_false")]
    txn: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct TrimValue {
    partition: i32,
    /// `null`: the high watermark (Kafka's -1).
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    low_watermark: Option<i64>,
}

/// `delete-records`: invoked with the partition and offset; `ok` with the log start offset it
/// answered, or `fail`/`info`.
#[derive(Debug, Serialize, Deserialize)]
struct TrimLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    time: u64,
    value: TrimValue,
}

#[derive(Debug, Serialize, Deserialize)]
struct PartitionOffset {
    partition: i32,
    offset: i64,
}

/// `offset-commit`: an acknowledged offset commit of a group member.
#[derive(Debug, Serialize, Deserialize)]
struct OffsetCommitLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    process: usize,
    time: u64,
    generation: i32,
    value: PartitionOffset,
}

/// `group-poll`: records a member read in a generation (no time recorded).
#[derive(Debug, Serialize, Deserialize)]
struct GroupPollLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    process: usize,
    generation: i32,
    value: Vec<(i32, i64, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GroupValue {
    ran: bool,
    finished: bool,
}

/// `group`: whether a consumer group ran and caught up.
#[derive(Debug, Serialize, Deserialize)]
struct GroupLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    value: GroupValue,
}

/// `group-log-start`: a partition's log start offset seen while waiting for the group.
#[derive(Debug, Serialize, Deserialize)]
struct GroupLogStartLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    partition: i32,
    value: i64,
}

/// `final-read`: one partition of the final read: where it began and `[offset, value]` read.
#[derive(Debug, Serialize, Deserialize)]
struct FinalReadLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    partition: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Vec<(i64, u64)>>,
}

/// `final-read-end`: the final read finished, at `time` when known, having begun at `began`
/// when known.
#[derive(Debug, Serialize, Deserialize)]
struct EndLine {
    #[serde(rename = "type")]
    kind: Kind,
    f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    began: Option<u64>,
}

/// A timed line of the queue workload.
enum Line<'h> {
    Send(SendLine),
    Poll(PollLine),
    Trim(TrimLine),
    Operation(OperationLine),
    OffsetCommit(&'h GroupCommit),
}

/// Writes `history` as a history file (`"workload":"queue"`).
pub fn write_history(history: &History, out: &mut impl Write) -> io::Result<()> {
    write_header(
        out,
        "queue",
        history.retention,
        history.sparse_offsets,
        history.compaction,
    )?;
    let mut timed: Vec<Timed<Line<'_>>> = Vec::new();
    for send in history.sends.values() {
        let invoke = SendLine {
            kind: Kind::Invoke,
            f: SEND.into(),
            process: send.producer,
            time: send.invoked_ms,
            value: SendValue {
                key: send.key,
                value: send.value,
                partition: None,
                offset: None,
            },
            delivery: Some(send.kind.into()),
            op: send.op,
            tombstone: history.is_tombstone(send.value),
            error: None,
        };
        timed.push(Timed {
            time: send.invoked_ms,
            phase: 0,
            line: Line::Send(invoke),
        });
        let (kind, partition, offset, error) = match &send.outcome {
            Outcome::Pending => continue,
            Outcome::Ok { partition, offset } => (Kind::Ok, Some(*partition), Some(*offset), None),
            Outcome::Fail(why) => (Kind::Fail, None, None, Some(why.clone())),
            Outcome::Info(why) => (Kind::Info, None, None, Some(why.clone())),
        };
        let completion = SendLine {
            kind,
            f: SEND.into(),
            process: send.producer,
            time: send.completed_ms,
            value: SendValue {
                key: send.key,
                value: send.value,
                partition,
                offset,
            },
            delivery: None,
            op: None,
            tombstone: false,
            error,
        };
        timed.push(Timed {
            time: send.completed_ms.max(send.invoked_ms),
            phase: 1,
            line: Line::Send(completion),
        });
    }
    let mut owner: BTreeMap<usize, u64> = BTreeMap::new();
    for (&id, op) in &history.operations {
        owner.extend(op.polls.iter().map(|&i| (i, id)));
        let line = |kind, time, txn| OperationLine {
            kind,
            f: OPERATION.into(),
            process: op.process,
            time,
            op: id,
            txn,
        };
        timed.push(Timed {
            time: op.invoked_ms,
            phase: 0,
            line: Line::Operation(line(Kind::Invoke, op.invoked_ms, op.txn)),
        });
        let kind = match op.completion {
            Completion::Pending => continue,
            Completion::Ok => Kind::Ok,
            Completion::Fail => Kind::Fail,
            Completion::Info => Kind::Info,
        };
        timed.push(Timed {
            // After its sends' and polls' completions of the same millisecond.
            time: op.completed_ms.max(op.invoked_ms),
            phase: 2,
            line: Line::Operation(line(kind, op.completed_ms, false)),
        });
    }
    for (index, poll) in history.polls.iter().enumerate() {
        if let Some(invoked) = poll.invoked_ms {
            timed.push(Timed {
                time: invoked,
                phase: 0,
                line: Line::Poll(PollLine {
                    kind: Kind::Invoke,
                    f: POLL.into(),
                    process: poll.reader,
                    time: invoked,
                    value: Vec::new(),
                    resets: Vec::new(),
                    repositioned: false,
                    op: None,
                }),
            });
        }
        timed.push(Timed {
            time: poll.at_ms.max(poll.invoked_ms.unwrap_or(0)),
            phase: 1,
            line: Line::Poll(PollLine {
                kind: Kind::Ok,
                f: POLL.into(),
                process: poll.reader,
                time: poll.at_ms,
                value: poll.records.clone(),
                resets: poll.resets.clone(),
                repositioned: poll.repositioned,
                op: owner.get(&index).copied(),
            }),
        });
    }
    for trim in &history.trims {
        let value = |low_watermark| TrimValue {
            partition: trim.partition,
            offset: trim.offset,
            low_watermark,
        };
        timed.push(Timed {
            time: trim.invoked_ms,
            phase: 0,
            line: Line::Trim(TrimLine {
                kind: Kind::Invoke,
                f: TRIM.into(),
                time: trim.invoked_ms,
                value: value(None),
            }),
        });
        timed.push(Timed {
            time: trim.completed_ms.max(trim.invoked_ms),
            phase: 1,
            line: Line::Trim(TrimLine {
                kind: if trim.low_watermark.is_some() {
                    Kind::Ok
                } else {
                    Kind::Info
                },
                f: TRIM.into(),
                time: trim.completed_ms,
                value: value(trim.low_watermark),
            }),
        });
    }
    for commit in &history.group.commits {
        timed.push(Timed {
            time: commit.at_ms,
            phase: 1,
            line: Line::OffsetCommit(commit),
        });
    }
    in_time_order(&mut timed);
    for event in timed {
        match event.line {
            Line::Send(line) => write_line(out, &line)?,
            Line::Poll(line) => write_line(out, &line)?,
            Line::Trim(line) => write_line(out, &line)?,
            Line::Operation(line) => write_line(out, &line)?,
            Line::OffsetCommit(c) => write_line(
                out,
                &OffsetCommitLine {
                    kind: Kind::Ok,
                    f: OFFSET_COMMIT.into(),
                    process: c.member,
                    time: c.at_ms,
                    generation: c.generation,
                    value: PartitionOffset {
                        partition: c.partition,
                        offset: c.offset,
                    },
                },
            )?,
        }
    }
    // The group's reads, consecutive ones of one member and generation on one line.
    let deliveries = &history.group.deliveries;
    let mut i = 0;
    while i < deliveries.len() {
        let (member, generation) = (deliveries[i].member, deliveries[i].generation);
        let mut line = GroupPollLine {
            kind: Kind::Ok,
            f: GROUP_POLL.into(),
            process: member,
            generation,
            value: Vec::new(),
        };
        while let Some(d) = deliveries
            .get(i)
            .filter(|d| d.member == member && d.generation == generation)
        {
            line.value.push((d.partition, d.offset, d.value));
            i += 1;
        }
        write_line(out, &line)?;
    }
    for (&partition, &offset) in &history.group_starts {
        write_line(
            out,
            &GroupLogStartLine {
                kind: Kind::Ok,
                f: GROUP_LOG_START.into(),
                partition,
                value: offset,
            },
        )?;
    }
    if history.group.ran || history.group.finished {
        write_line(
            out,
            &GroupLine {
                kind: Kind::Ok,
                f: GROUP.into(),
                value: GroupValue {
                    ran: history.group.ran,
                    finished: history.group.finished,
                },
            },
        )?;
    }
    let partitions: std::collections::BTreeSet<i32> = history
        .reads
        .keys()
        .chain(history.final_starts.keys())
        .copied()
        .collect();
    for partition in partitions {
        write_line(
            out,
            &FinalReadLine {
                kind: Kind::Ok,
                f: FINAL_READ.into(),
                partition,
                start: history.final_starts.get(&partition).copied(),
                value: history.reads.get(&partition).cloned(),
            },
        )?;
    }
    if history.finished {
        write_line(
            out,
            &EndLine {
                kind: Kind::Ok,
                f: FINAL_READ_END.into(),
                time: history.final_read_ms,
                began: history.final_read_began_ms,
            },
        )?;
    }
    Ok(())
}

/// Reads a history file of the queue workload (its header must say `"workload":"queue"`).
pub fn read_history(input: impl BufRead) -> Result<History, FormatError> {
    let mut lines = Lines::new(input);
    let header = lines.header()?;
    if header.workload != "queue" {
        return Err(FormatError::new(
            1,
            format!(
                "workload {:?}: this is not a queue history",
                header.workload
            ),
        ));
    }
    read_body(&header, lines)
}

/// Reads the lines after the header.
pub(crate) fn read_body(
    header: &Header,
    mut lines: Lines<impl BufRead>,
) -> Result<History, FormatError> {
    let mut history = History {
        retention: header.retention,
        sparse_offsets: header.sparse_offsets,
        compaction: header.compaction.as_ref().map(|c| Compaction {
            delete_retention_ms: c.delete_retention_ms,
            min_compaction_lag_ms: c.min_compaction_lag_ms,
        }),
        ..History::default()
    };
    // Open polls per reader, open DeleteRecords calls per (partition, offset): invocation times.
    let mut open_polls: BTreeMap<usize, VecDeque<u64>> = BTreeMap::new();
    let mut open_trims: BTreeMap<(i32, Option<i64>), VecDeque<u64>> = BTreeMap::new();
    // Polls of operations: (line, poll index, operation), joined once every line is read.
    let mut poll_ops: Vec<(usize, usize, u64)> = Vec::new();
    while let Some(event) = lines.next_event()? {
        let f = event.f.clone();
        match f.as_str() {
            SEND => {
                let kind = event.kind;
                let number = event.number;
                let line: SendLine = event.parse()?;
                let error = |m: &str| FormatError::new(number, format!("send: {m}"));
                if kind == Kind::Invoke {
                    let delivery = line
                        .delivery
                        .ok_or_else(|| error("an invocation needs \"delivery\""))?;
                    let op = SendOp {
                        producer: line.process,
                        kind: delivery.into(),
                        key: line.value.key,
                        value: line.value.value,
                        invoked_ms: line.time,
                        outcome: Outcome::Pending,
                        completed_ms: 0,
                        op: line.op,
                    };
                    if history.sends.insert(op.value, op).is_some() {
                        return Err(error(&format!(
                            "value {} sent twice (values are unique in a run)",
                            line.value.value
                        )));
                    }
                    if line.tombstone {
                        history.tombstones.insert(line.value.value);
                    }
                    continue;
                }
                let Some(send) = history
                    .sends
                    .get_mut(&line.value.value)
                    .filter(|s| s.outcome == Outcome::Pending)
                else {
                    return Err(error(&format!(
                        "value {} completes no open invocation",
                        line.value.value
                    )));
                };
                if send.producer != line.process || send.key != line.value.key {
                    return Err(error(&format!(
                        "value {} completes an invocation of another process or key",
                        line.value.value
                    )));
                }
                let why = || line.error.clone().unwrap_or_default();
                send.outcome = match kind {
                    Kind::Ok => match (line.value.partition, line.value.offset) {
                        (Some(partition), Some(offset)) => Outcome::Ok { partition, offset },
                        _ => return Err(error("ok needs value.partition and value.offset")),
                    },
                    Kind::Fail => Outcome::Fail(why()),
                    _ => Outcome::Info(why()),
                };
                send.completed_ms = line.time;
            }
            POLL => {
                let kind = event.kind;
                let number = event.number;
                let line: PollLine = event.parse()?;
                let open = open_polls.entry(line.process).or_default();
                match kind {
                    Kind::Invoke => open.push_back(line.time),
                    Kind::Ok => {
                        if let Some(id) = line.op {
                            poll_ops.push((number, history.polls.len(), id));
                        }
                        history.polls.push(Poll {
                            reader: line.process,
                            invoked_ms: open.pop_front(),
                            at_ms: line.time,
                            records: line.value,
                            resets: line.resets,
                            repositioned: line.repositioned,
                        });
                    }
                    // A failed poll returned nothing: it only closes its invocation.
                    Kind::Fail | Kind::Info => {
                        if open.pop_front().is_none() {
                            return Err(FormatError::new(
                                number,
                                "poll: a failed poll completes no open invocation",
                            ));
                        }
                    }
                }
            }
            OPERATION => {
                let kind = event.kind;
                let number = event.number;
                let line: OperationLine = event.parse()?;
                let error = |m: String| FormatError::new(number, format!("operation: {m}"));
                if kind == Kind::Invoke {
                    let op = Operation {
                        process: line.process,
                        txn: line.txn,
                        invoked_ms: line.time,
                        ..Operation::default()
                    };
                    if history.operations.insert(line.op, op).is_some() {
                        return Err(error(format!("operation {} invoked twice", line.op)));
                    }
                    continue;
                }
                let Some(op) = history
                    .operations
                    .get_mut(&line.op)
                    .filter(|op| op.completion == Completion::Pending)
                else {
                    return Err(error(format!("{} completes no open invocation", line.op)));
                };
                if op.process != line.process {
                    return Err(error(format!(
                        "{} completes an invocation of another process",
                        line.op
                    )));
                }
                op.completion = match kind {
                    Kind::Ok => Completion::Ok,
                    Kind::Fail => Completion::Fail,
                    _ => Completion::Info,
                };
                op.completed_ms = line.time;
            }
            TRIM => {
                let kind = event.kind;
                let number = event.number;
                let line: TrimLine = event.parse()?;
                let v = line.value;
                let open = open_trims.entry((v.partition, v.offset)).or_default();
                if kind == Kind::Invoke {
                    open.push_back(line.time);
                    continue;
                }
                let Some(invoked_ms) = open.pop_front() else {
                    return Err(FormatError::new(
                        number,
                        "delete-records: completes no open invocation of that partition and offset",
                    ));
                };
                let low_watermark = match kind {
                    Kind::Ok => Some(v.low_watermark.ok_or_else(|| {
                        FormatError::new(number, "delete-records ok: needs value.low_watermark")
                    })?),
                    _ => None,
                };
                history.trims.push(TrimOp {
                    partition: v.partition,
                    offset: v.offset,
                    invoked_ms,
                    completed_ms: line.time,
                    low_watermark,
                });
            }
            OFFSET_COMMIT => {
                let line: OffsetCommitLine = event.parse()?;
                history.group.commits.push(GroupCommit {
                    member: line.process,
                    generation: line.generation,
                    partition: line.value.partition,
                    offset: line.value.offset,
                    at_ms: line.time,
                });
            }
            GROUP_POLL => {
                let line: GroupPollLine = event.parse()?;
                history.group.deliveries.extend(line.value.into_iter().map(
                    |(partition, offset, value)| GroupDelivery {
                        member: line.process,
                        generation: line.generation,
                        partition,
                        offset,
                        value,
                    },
                ));
            }
            GROUP => {
                let line: GroupLine = event.parse()?;
                history.group.ran = line.value.ran;
                history.group.finished = line.value.finished;
            }
            GROUP_LOG_START => {
                let line: GroupLogStartLine = event.parse()?;
                history.group_starts.insert(line.partition, line.value);
            }
            FINAL_READ => {
                let line: FinalReadLine = event.parse()?;
                if let Some(start) = line.start {
                    history.final_starts.insert(line.partition, start);
                }
                if let Some(reads) = line.value {
                    history
                        .reads
                        .entry(line.partition)
                        .or_default()
                        .extend(reads);
                }
            }
            FINAL_READ_END => {
                if event.kind != Kind::Ok {
                    return Err(event.error("only ok says the final read finished"));
                }
                let line: EndLine = event.parse()?;
                history.final_read_ms = line.time;
                history.final_read_began_ms = line.began;
                history.finished = true;
            }
            other => {
                return Err(event.error(format!("unknown f {other:?} in a queue history")));
            }
        }
    }
    for (number, index, id) in poll_ops {
        let Some(op) = history.operations.get_mut(&id) else {
            return Err(FormatError::new(
                number,
                format!("poll: operation {id} is never invoked"),
            ));
        };
        op.polls.push(index);
    }
    Ok(history)
}
