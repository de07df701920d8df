//! What a run writes besides its history: report.json (the verdict, counts, phases and
//! nemesis events, for programs) and summary.txt (the same for people), for a queue (or
//! groups) run judged by `oxbow_jepsen::checker` or a txn run judged by
//! `oxbow_jepsen::txn::check`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use oxbow_jepsen::checker::Verdict;
use oxbow_jepsen::history::{Delivery, History, Outcome};
use oxbow_jepsen::txn::{TxnHistory, TxnVerdict};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::TestArgs;
use crate::nemesis::Event;
use crate::workload::txn::TxnStats;

/// A run's history and its verdict, of either kind.
pub enum Checked<'a> {
    /// The queue or groups workload.
    Queue {
        /// What the clients observed.
        history: &'a History,
        /// The checker's verdict.
        verdict: &'a Verdict,
    },
    /// The transactional workload.
    Txn {
        /// What the clients observed.
        history: &'a TxnHistory,
        /// The transactional checker's verdict.
        verdict: &'a TxnVerdict,
        /// The workload's counts (inputs written, instances).
        stats: &'a TxnStats,
        /// Whether the transformers caught up with every input after healing.
        caught_up: bool,
    },
}

impl Checked<'_> {
    /// Whether the checker found nothing wrong.
    pub fn valid(&self) -> bool {
        match self {
            Self::Queue { verdict, .. } => verdict.is_valid(),
            Self::Txn { verdict, .. } => verdict.is_valid(),
        }
    }

    /// Whether the run was live after healing: the final read caught up (and, for txn, the
    /// transformers caught up with the inputs).
    pub fn live(&self) -> bool {
        match self {
            Self::Queue { history, .. } => history.finished,
            Self::Txn {
                history, caught_up, ..
            } => history.final_read.finished && *caught_up,
        }
    }
}

/// When each phase of the run began (ms since the run started).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Phases {
    /// The workload started (the topic was ready).
    pub started_ms: u64,
    /// The faults stopped.
    pub faults_end_ms: u64,
    /// Every node was running again.
    pub healed_ms: u64,
    /// Every send had resolved; the final read began.
    pub final_read_start_ms: u64,
    /// The final read ended.
    pub end_ms: u64,
}

/// A run as the report describes it.
pub struct Run<'a> {
    /// The command line.
    pub args: &'a TestArgs,
    /// What was tested.
    pub target: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// Its phases.
    pub phases: Phases,
    /// The nemesis's events.
    pub events: &'a [Event],
    /// Group members that crashed (each replaced).
    pub member_crashes: u64,
}

/// The counts of a history, per outcome and per producer kind.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    /// Sends invoked.
    pub sent: u64,
    /// Acknowledged.
    pub ok: u64,
    /// Definitely failed.
    pub fail: u64,
    /// Indeterminate.
    pub info: u64,
    /// Never resolved.
    pub pending: u64,
    /// Sends of idempotent producers.
    pub idempotent: u64,
    /// Sends of non-idempotent (at-least-once) producers.
    pub at_least_once: u64,
    /// Polls during the run that returned records.
    pub polls: u64,
    /// Records those polls returned.
    pub polled_records: u64,
    /// Records of the final read.
    pub final_read_records: u64,
    /// Records the consumer group's members read.
    pub group_records: u64,
    /// The group's acknowledged offset commits.
    pub group_commits: u64,
}

/// Counts `history`.
pub fn counts(history: &History) -> Counts {
    let mut c = Counts::default();
    for send in history.sends.values() {
        c.sent += 1;
        match send.outcome {
            Outcome::Ok { .. } => c.ok += 1,
            Outcome::Fail(_) => c.fail += 1,
            Outcome::Info(_) => c.info += 1,
            Outcome::Pending => c.pending += 1,
        }
        match send.kind {
            Delivery::Idempotent => c.idempotent += 1,
            _ => c.at_least_once += 1,
        }
    }
    c.polls = history.polls.len() as u64;
    c.polled_records = history.polls.iter().map(|p| p.records.len() as u64).sum();
    c.final_read_records = history.reads.values().map(|r| r.len() as u64).sum();
    c.group_records = history.group.deliveries.len() as u64;
    c.group_commits = history.group.commits.len() as u64;
    c
}

/// report.json.
pub fn json(checked: &Checked<'_>, run: &Run<'_>) -> Value {
    let args = run.args;
    let mut report = json!({
        "valid": checked.valid(),
        "live": checked.live(),
        "workload": args.workload.name(),
        "nemesis": args.nemesis.name(),
        "seed": args.seed,
        "duration_ms": args.duration.as_millis() as u64,
        "target": run.target,
        "topic": run.topic,
        "partitions": args.partitions,
        "replication": args.replication,
        "readers": args.readers(),
        "rate": args.rate,
        "delivery_timeout_ms": args.delivery_timeout.as_millis() as u64,
        "planted_bugs": args.planted_bugs,
        "node_config": args.node_config,
        "phases": run.phases,
        "nemesis_events": run.events,
    });
    let more = match checked {
        Checked::Queue { history, verdict } => queue_json(history, verdict, run),
        Checked::Txn {
            history: _,
            verdict,
            stats,
            caught_up,
        } => txn_json(verdict, stats, *caught_up, args),
    };
    if let (Some(report), Value::Object(more)) = (report.as_object_mut(), more) {
        report.extend(more);
    }
    report
}

fn anomalies_json<'a>(
    anomalies: impl Iterator<Item = (&'static str, &'a (u64, Vec<String>))>,
) -> Vec<Value> {
    anomalies
        .map(|(class, (count, examples))| {
            json!({ "class": class, "count": count, "examples": examples })
        })
        .collect()
}

/// report.json's fields of a queue or groups run.
fn queue_json(history: &History, verdict: &Verdict, run: &Run<'_>) -> Value {
    let args = run.args;
    json!({
        "producers": args.producers,
        "group_members": args.group_members(),
        "group_member_crashes": run.member_crashes,
        "counts": counts(history),
        "checker": {
            "sent": verdict.sent,
            "acknowledged": verdict.acknowledged,
            "failed": verdict.failed,
            "indeterminate": verdict.indeterminate,
            "records_read": verdict.records_read,
        },
        "anomalies": anomalies_json(verdict.anomalies.iter().map(|(c, a)| (c.name(), a))),
        "checker_report": oxbow_jepsen::checker::report_json(verdict),
    })
}

/// report.json's fields of a txn run.
fn txn_json(verdict: &TxnVerdict, stats: &TxnStats, caught_up: bool, args: &TestArgs) -> Value {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let checker_report = oxbow_jepsen::checker::txn_report_json(verdict);
    json!({
        "transformers": args.transformers,
        "copies": args.copies,
        "abort_chance": args.abort_chance,
        "fence_chance": args.fence_chance,
        "transaction_timeout_ms": args.transaction_timeout.as_millis() as u64,
        "transformers_caught_up": caught_up,
        "inputs": {
            "sent": get(&stats.inputs_sent),
            "ok": get(&stats.inputs_ok),
            "failed": get(&stats.inputs_failed),
        },
        "instances": get(&stats.instances),
        // The checker's counts of attempts, as its own report gives them.
        "checker": checker_report["counts"].clone(),
        "anomalies": anomalies_json(verdict.anomalies.iter().map(|(c, a)| (c.name(), a))),
        "checker_report": checker_report,
    })
}

/// summary.txt (also printed at the end of a run).
pub fn summary(checked: &Checked<'_>, run: &Run<'_>) -> String {
    let args = run.args;
    let p = run.phases;
    let s = |ms: u64| ms as f64 / 1000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workload {}, nemesis {}, seed {}, {:?} of faults",
        args.workload.name(),
        args.nemesis.name(),
        args.seed,
        args.duration
    );
    let _ = writeln!(out, "target: {}; topic {}", run.target, run.topic);
    if !args.node_config.is_empty() {
        let _ = writeln!(out, "node configuration: {}", args.node_config.join("; "));
    }
    if let Some(bugs) = &args.planted_bugs {
        let _ = writeln!(
            out,
            "planted bugs: {bugs} (the nodes break on purpose: anomalies are expected)"
        );
    }
    let _ = writeln!(
        out,
        "phases: workload from {:.1}s, faults stopped {:.1}s, healed {:.1}s, final read {:.1}s to {:.1}s",
        s(p.started_ms),
        s(p.faults_end_ms),
        s(p.healed_ms),
        s(p.final_read_start_ms),
        s(p.end_ms)
    );
    match checked {
        Checked::Queue { history, .. } => {
            let c = counts(history);
            let _ = writeln!(
                out,
                "sends: {} ({} idempotent, {} at least once): ok {}, fail {}, info {}, pending {}",
                c.sent, c.idempotent, c.at_least_once, c.ok, c.fail, c.info, c.pending
            );
            let _ = writeln!(
                out,
                "reads: {} polls during the run ({} records); final read {} records; consumer group {} records, {} commits, {} member crashes",
                c.polls, c.polled_records, c.final_read_records, c.group_records, c.group_commits, run.member_crashes
            );
        }
        Checked::Txn {
            history,
            verdict,
            stats,
            ..
        } => {
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let c = &verdict.counts;
            let _ = writeln!(
                out,
                "inputs: {} sent ({} ok, {} failed or unknown, each written again as a new input)",
                get(&stats.inputs_sent),
                get(&stats.inputs_ok),
                get(&stats.inputs_failed)
            );
            let _ = writeln!(
                out,
                "transactions: {} attempts by {} instances of {} transactional ids: committed {}, aborted {}, indeterminate {}, fenced {} (of the last two: {} committed, {} did not, {} undecided); {} inputs exactly once",
                c.attempts,
                history.instances.len(),
                args.transformers,
                c.committed,
                c.aborted,
                c.indeterminate,
                c.fenced,
                c.resolved_committed,
                c.resolved_aborted,
                c.unresolved,
                c.inputs_once
            );
            let _ = writeln!(
                out,
                "reads: {} output polls ({} records), {} offset fetches; final read {} records; {} aborted records read uncommitted",
                history.polls.len(),
                history.polls.iter().map(|p| p.records.len()).sum::<usize>(),
                history.offset_fetches.len(),
                c.records_read,
                c.uncommitted_reads_of_aborted
            );
        }
    }
    let faults: Vec<&Event> = run.events.iter().filter(|e| e.kind != "exit").collect();
    let _ = writeln!(out, "faults: {}", faults.len());
    for e in &faults {
        let what = match e.kind.as_str() {
            "partition" => format!("partition: {}", e.detail),
            "power" => format!("power failure of node(s) {:?}: {}", e.nodes, e.detail),
            "clock" => format!("clock: {}", e.detail),
            "disk" => format!("disk: {}", e.detail),
            _ => format!("{} node(s) {:?}", e.kind, e.nodes),
        };
        let _ = writeln!(
            out,
            "  {:>7.1}s-{:>7.1}s {what}",
            s(e.start_ms),
            s(e.end_ms.unwrap_or(p.healed_ms)),
        );
    }
    for e in run.events.iter().filter(|e| e.kind == "exit") {
        let _ = writeln!(
            out,
            "node {:?} exited on its own at {:.1}s: {}",
            e.nodes,
            s(e.start_ms),
            e.detail
        );
    }
    let (liveness, lines, measures) = match checked {
        Checked::Queue { history, verdict } => (
            if history.finished {
                "the final read caught up with every acknowledged write after healing"
            } else {
                "NOT LIVE: the final read did not catch up before its deadline"
            },
            verdict.lines(),
            verdict.measures(),
        ),
        Checked::Txn {
            history,
            verdict,
            caught_up,
            ..
        } => (
            match (*caught_up, history.final_read.finished) {
                (true, true) => "the transformers caught up with every input and the final read reached the end of every output partition after healing",
                (false, _) => "NOT LIVE: the transformers' committed offsets did not reach the end of the input before the deadline",
                (true, false) => "NOT LIVE: the final read did not reach the end of the output before its deadline",
            },
            verdict.lines(),
            Vec::new(),
        ),
    };
    let _ = writeln!(out, "liveness: {liveness}");
    for line in measures {
        let _ = writeln!(out, "measured: {line}");
    }
    if checked.valid() {
        let _ = writeln!(out, "verdict: valid (no anomalies)");
    } else {
        let _ = writeln!(out, "verdict: INVALID");
        for line in lines {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
