//! Verdicts as JSON (a runner's `report.json`) and as readable lines of what was measured
//! beside the anomalies; each class's stable key (Jepsen's name where Jepsen has the class).

use serde_json::{json, Value};

use super::{Anomaly, Verdict};
use crate::txn::{TxnAnomaly, TxnVerdict};

impl Anomaly {
    /// The class's stable key in reports: Jepsen's name where Jepsen has the class.
    pub fn key(self) -> &'static str {
        match self {
            Self::LostWrite => "lost-write",
            Self::OffsetMismatch => "offset-mismatch",
            Self::Duplicate => "duplicate",
            Self::ReadOfFailedSend => "G1a",
            Self::Phantom => "phantom",
            Self::UnresolvedSend => "unresolved-send",
            Self::NonmonotonicSend => "nonmonotonic-send",
            Self::InconsistentOffset => "inconsistent-offsets",
            Self::PollSkip => "poll-skip",
            Self::NonmonotonicPoll => "nonmonotonic-poll",
            Self::IntPollSkip => "int-poll-skip",
            Self::IntNonmonotonicPoll => "int-nonmonotonic-poll",
            Self::IntNonmonotonicSend => "int-nonmonotonic-send",
            Self::Liveness => "liveness",
            Self::CommittedOffsetBackwards => "committed-offset-backwards",
            Self::GroupDoubleDelivery => "group-double-delivery",
            Self::NeverDeliveredToGroup => "never-delivered-to-group",
            Self::GroupLiveness => "group-liveness",
            Self::LogStartWentBack => "log-start-went-back",
            Self::LogStartUnasked => "log-start-unasked",
            Self::PrecommittedRead => "precommitted-read",
            Self::WriteReadCycle => "G1c-wr",
            Self::CompactionLostLatest => "compaction-lost-latest",
            Self::CompactionResurrected => "compaction-resurrected",
            Self::CompactionTombstoneEarly => "compaction-tombstone-early",
        }
    }
}

impl TxnAnomaly {
    /// The class's stable key in reports: Jepsen's name where Jepsen has the class.
    pub fn key(self) -> &'static str {
        match self {
            Self::LostOutput => "lost-write",
            Self::DuplicateOutput => "duplicate-output",
            Self::AbortedRead => "G1a",
            Self::TornTransaction => "torn-transaction",
            Self::ReadPastLso => "read-past-lso",
            Self::OffsetsWithoutTxn => "offsets-without-txn",
            Self::OffsetsBackwards => "offsets-backwards",
            Self::FencedWriteVisible => "fenced-write-visible",
            Self::Phantom => "phantom",
            Self::InconsistentOffset => "inconsistent-offsets",
            Self::Unfinished => "unfinished",
        }
    }
}

/// A distribution (times → how many) as a JSON object with string keys.
fn distribution(counts: &std::collections::BTreeMap<u64, u64>) -> Value {
    Value::Object(
        counts
            .iter()
            .map(|(times, n)| (times.to_string(), json!(n)))
            .collect(),
    )
}

fn anomalies<'a, K: 'a>(
    found: impl Iterator<Item = (&'a K, &'a (u64, Vec<String>))>,
    key: impl Fn(&K) -> (&'static str, &'static str),
) -> Value {
    Value::Array(
        found
            .map(|(class, (count, examples))| {
                let (key, name) = key(class);
                json!({"class": key, "name": name, "count": count, "examples": examples})
            })
            .collect(),
    )
}

/// The queue checker's verdict as JSON: validity, each anomaly class (key, name, count,
/// examples), the counts of sends and reads, and the measured figures.
pub fn report_json(verdict: &Verdict) -> Value {
    let lag = &verdict.realtime_lag;
    json!({
        "workload": "queue",
        "valid": verdict.is_valid(),
        "anomalies": anomalies(verdict.anomalies.iter(), |c: &Anomaly| (c.key(), c.name())),
        "counts": {
            "sent": verdict.sent,
            "acknowledged": verdict.acknowledged,
            "failed": verdict.failed,
            "indeterminate": verdict.indeterminate,
            "records_read": verdict.records_read,
            "lost_leader_only": verdict.lost_leader_only,
            "trimmed": verdict.trimmed,
            "compacted": verdict.compacted,
        },
        "int_send_skip": {
            "count": verdict.int_send_skips,
            "examples": verdict.int_send_skip_examples,
        },
        "consume_counts": {
            "readers": distribution(&verdict.reader_consume_counts),
            "group": distribution(&verdict.group_consume_counts),
        },
        "cycles": Value::Array(
            verdict
                .cycles
                .iter()
                .map(|(class, (count, examples))| {
                    json!({"class": class.key(), "name": class.name(), "count": count, "examples": examples})
                })
                .collect(),
        ),
        "realtime_lag_ms": {
            "samples": lag.samples,
            "max": lag.max_ms,
            "p50": lag.p50_ms,
            "p99": lag.p99_ms,
            "worst": lag.worst,
        },
    })
}

/// The transactional checker's verdict as JSON: validity, each anomaly class (key, name,
/// count, examples) and the counts of outcomes.
pub fn txn_report_json(verdict: &TxnVerdict) -> Value {
    let c = &verdict.counts;
    json!({
        "workload": "txn",
        "valid": verdict.is_valid(),
        "anomalies": anomalies(verdict.anomalies.iter(), |c: &TxnAnomaly| (c.key(), c.name())),
        "counts": {
            "attempts": c.attempts,
            "committed": c.committed,
            "aborted": c.aborted,
            "indeterminate": c.indeterminate,
            "fenced": c.fenced,
            "resolved_committed": c.resolved_committed,
            "resolved_aborted": c.resolved_aborted,
            "unresolved": c.unresolved,
            "inputs_once": c.inputs_once,
            "records_read": c.records_read,
            "uncommitted_reads_of_aborted": c.uncommitted_reads_of_aborted,
        },
    })
}

impl Verdict {
    /// What was measured beside the anomalies, one readable line each: int-send-skips,
    /// consume counts, realtime lag (nothing for figures with no samples).
    pub fn measures(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.int_send_skips > 0 {
            lines.push(format!(
                "int-send-skip (allowed): {} (e.g. {})",
                self.int_send_skips,
                self.int_send_skip_examples.join("; ")
            ));
        }
        let shown = |counts: &std::collections::BTreeMap<u64, u64>| {
            counts
                .iter()
                .map(|(times, n)| format!("{n}×{times}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.reader_consume_counts.is_empty() {
            lines.push(format!(
                "reader consume counts (pairs × times read): {}",
                shown(&self.reader_consume_counts)
            ));
        }
        if !self.group_consume_counts.is_empty() {
            lines.push(format!(
                "group consume counts (values × times read): {}",
                shown(&self.group_consume_counts)
            ));
        }
        for (class, (count, examples)) in &self.cycles {
            lines.push(format!(
                "{} cycles ({}, allowed): {count} (e.g. {})",
                class.key(),
                class.name(),
                examples.join("; ")
            ));
        }
        let lag = &self.realtime_lag;
        if lag.samples > 0 {
            lines.push(format!(
                "realtime lag: max {} ms, p50 {} ms, p99 {} ms over {} samples{}",
                lag.max_ms,
                lag.p50_ms,
                lag.p99_ms,
                lag.samples,
                lag.worst
                    .as_ref()
                    .map_or(String::new(), |w| format!(" (max: {w})"))
            ));
        }
        lines
    }
}
