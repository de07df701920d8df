//! History files: a run's history as JSON Lines, one object per line, in Jepsen's spirit.
//!
//! The first line is a header naming the format, its version and the workload, which decides
//! the history's kind: `{"format":"oxbow-jepsen","version":1,"workload":"queue"}` for a
//! [`History`], `"workload":"txn"` for a [`TxnHistory`]. Every other line is one event of an
//! operation: `type` (`invoke`, then `ok`, `fail` or `info`), `f` (what the operation does),
//! `process` (who did it, where known), `time` (milliseconds on the run's one clock, where
//! known) and `value`, with a few extra fields per `f`. An operation with an invocation and a
//! completion takes two lines: the completion completes the oldest open invocation of the same
//! `f` and process (a send: of the same value; `delete-records`: of the same request). Lines
//! whose `process` is `"nemesis"` are faults, kept for timelines and skipped by the readers;
//! blank lines are skipped too. `docs/jepsen.md` ("History files") lists every line kind with
//! an example.
//!
//! [`write_history`] and [`write_txn_history`] write the timed events in time order (an
//! invocation before completions of the same millisecond), then the final read;
//! [`read_history`], [`read_txn_history`] and [`read_any`] read them back, so that reading
//! what was written gives the same history whenever its lists were in time order (as
//! recorded).

mod queue;
#[cfg(test)]
mod tests;
mod txn;

use std::fmt;
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::history::{Compaction, History};
use crate::txn::TxnHistory;

pub use queue::{read_history, write_history};
pub use txn::{read_txn_history, write_txn_history};

/// The `format` of the header line.
pub const FORMAT: &str = "oxbow-jepsen";
/// The format's version this crate writes and reads.
pub const VERSION: u32 = 1;

/// A history file's content: either kind of history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyHistory {
    /// The queue workload's (`"workload":"queue"`).
    Queue(History),
    /// The transactional workload's (`"workload":"txn"`).
    Txn(TxnHistory),
}

/// Why a history file could not be read: the line (1-based) and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError {
    /// The line (1-based; the line after the last for a file that ends too soon).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl FormatError {
    pub(crate) fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for FormatError {}

/// Reads a history file of either kind, as its header says.
pub fn read_any(input: impl BufRead) -> Result<AnyHistory, FormatError> {
    let mut lines = Lines::new(input);
    let header = lines.header()?;
    match header.workload.as_str() {
        "queue" => queue::read_body(&header, lines).map(AnyHistory::Queue),
        "txn" => txn::read_body(lines).map(AnyHistory::Txn),
        other => Err(FormatError::new(
            1,
            format!("unknown workload {other:?} (expected \"queue\" or \"txn\")"),
        )),
    }
}

/// The header line.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    pub format: String,
    pub version: u32,
    pub workload: String,
    /// Queue workload: whether the topic has retention.
    #[serde(default, skip_serializing_if = "is_false")]
    pub retention: bool,
    /// Queue workload: whether offsets may have holes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sparse_offsets: bool,
    /// Queue workload: the compacted topic's settings, when it is compacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionHeader>,
}

/// A compacted topic's settings in the header: `{"delete_retention_ms":N,
/// "min_compaction_lag_ms":N}` (the lag may be left out: 0).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CompactionHeader {
    pub delete_retention_ms: u64,
    #[serde(default)]
    pub min_compaction_lag_ms: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An event's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// The lines of a history file after its header: each parsed, with its number.
pub(crate) struct Lines<R> {
    input: R,
    number: usize,
    buffer: String,
}

/// One event line: its number, `f`, `type` and the whole object.
pub(crate) struct Event {
    pub number: usize,
    pub f: String,
    pub kind: Kind,
    pub object: serde_json::Value,
}

impl Event {
    /// The line as `T`, or an error naming the line and the event.
    pub fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, FormatError> {
        let (number, f, kind) = (self.number, self.f, self.kind);
        serde_json::from_value(self.object)
            .map_err(|e| FormatError::new(number, format!("{f} {}: {e}", kind_name(kind))))
    }

    /// An error at this line.
    pub fn error(&self, message: impl fmt::Display) -> FormatError {
        FormatError::new(
            self.number,
            format!("{} {}: {message}", self.f, kind_name(self.kind)),
        )
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Invoke => "invoke",
        Kind::Ok => "ok",
        Kind::Fail => "fail",
        Kind::Info => "info",
    }
}

impl<R: BufRead> Lines<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            number: 0,
            buffer: String::new(),
        }
    }

    /// The next non-blank line, parsed as a JSON object, or `None` at the end.
    fn next_object(&mut self) -> Result<Option<serde_json::Value>, FormatError> {
        loop {
            self.buffer.clear();
            self.number += 1;
            let read = self
                .input
                .read_line(&mut self.buffer)
                .map_err(|e| FormatError::new(self.number, format!("cannot read: {e}")))?;
            if read == 0 {
                return Ok(None);
            }
            if self.buffer.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(&self.buffer)
                .map_err(|e| FormatError::new(self.number, format!("not JSON: {e}")))?;
            if !value.is_object() {
                return Err(FormatError::new(self.number, "not a JSON object"));
            }
            return Ok(Some(value));
        }
    }

    /// The header, checked.
    pub fn header(&mut self) -> Result<Header, FormatError> {
        let Some(object) = self.next_object()? else {
            return Err(FormatError::new(
                self.number,
                "empty file: expected the header line",
            ));
        };
        let header: Header = serde_json::from_value(object)
            .map_err(|e| FormatError::new(self.number, format!("not a header: {e}")))?;
        if header.format != FORMAT {
            return Err(FormatError::new(
                self.number,
                format!("format {:?}, expected {FORMAT:?}", header.format),
            ));
        }
        if header.version != VERSION {
            return Err(FormatError::new(
                self.number,
                format!(
                    "version {}, this reader knows version {VERSION}",
                    header.version
                ),
            ));
        }
        Ok(header)
    }

    /// The next event that is not a fault, or `None` at the end.
    pub fn next_event(&mut self) -> Result<Option<Event>, FormatError> {
        while let Some(object) = self.next_object()? {
            if object.get("process").and_then(|p| p.as_str()) == Some("nemesis") {
                continue;
            }
            let f = match object.get("f").and_then(|f| f.as_str()) {
                Some(f) => f.to_owned(),
                None => return Err(FormatError::new(self.number, "no string field \"f\"")),
            };
            let kind = match object.get("type").cloned().map(serde_json::from_value) {
                Some(Ok(kind)) => kind,
                _ => {
                    return Err(FormatError::new(
                        self.number,
                        format!("{f}: \"type\" must be one of invoke, ok, fail, info"),
                    ))
                }
            };
            return Ok(Some(Event {
                number: self.number,
                f,
                kind,
                object,
            }));
        }
        Ok(None)
    }
}

/// Writes the header for `workload`.
pub(crate) fn write_header(
    out: &mut impl Write,
    workload: &str,
    retention: bool,
    sparse_offsets: bool,
    compaction: Option<Compaction>,
) -> io::Result<()> {
    write_line(
        out,
        &Header {
            format: FORMAT.into(),
            version: VERSION,
            workload: workload.into(),
            retention,
            sparse_offsets,
            compaction: compaction.map(|c| CompactionHeader {
                delete_retention_ms: c.delete_retention_ms,
                min_compaction_lag_ms: c.min_compaction_lag_ms,
            }),
        },
    )
}

/// Writes `line` as one line of JSON.
pub(crate) fn write_line(out: &mut impl Write, line: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, line).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// A timed event to write: its sort key (time, then invocations first), then the order it was
/// made in, which keeps each list's order among equal keys.
pub(crate) struct Timed<T> {
    pub time: u64,
    pub phase: u8,
    pub line: T,
}

/// Sorts `events` by time, invocations before completions of the same millisecond, keeping
/// their order otherwise.
pub(crate) fn in_time_order<T>(events: &mut [Timed<T>]) {
    events.sort_by_key(|e| (e.time, e.phase));
}
