//! timeline.svg: time on the x axis, one row per process (queue and groups: producers,
//! readers, group members; txn: transactional ids, output readers, offset fetches; then the
//! final read) with a mark per operation (ok, fail, info, pending; polls; offset commits;
//! transactions by outcome),
//! shaded bands for the faults, lines for the phases, and red marks for anomaly examples
//! whose time is known.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use oxbow_jepsen::checker::Verdict;
use oxbow_jepsen::history::{Delivery, History, Outcome};
use oxbow_jepsen::txn::{TxnHistory, TxnOutcome, TxnVerdict};

use crate::report::{Checked, Run};

const WIDTH: f64 = 1400.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 52.0;
const ROW: f64 = 22.0;

/// Colours of the marks.
const OK: &str = "#2a9d3a";
const FAIL: &str = "#e08a00";
const INFO: &str = "#8a8a8a";
const PENDING: &str = "#8e44ad";
const POLL: &str = "#3060c0";
const COMMIT: &str = "#20a0a0";
const ANOMALY: &str = "#d01010";
/// Colours of the fault bands.
const POWER: &str = "#c8a0e0";
const CLOCK: &str = "#a0e0d0";
const DISK: &str = "#d8c0a0";
const INIT: &str = "#101010";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The times (ms) an anomaly example names (`... at 1234 ms`).
fn times_in(example: &str) -> Vec<u64> {
    let words: Vec<&str> = example.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| w[0] == "at" && w[2].trim_end_matches([';', ',', ')']) == "ms")
        .filter_map(|w| w[1].parse().ok())
        .collect()
}

/// What a timeline shows beside the faults and the phases: the title, one labelled row per
/// process, the marks in them, whether the final read finished, and the anomaly examples.
struct Chart {
    title: String,
    labels: Vec<String>,
    /// (row, time, colour).
    marks: Vec<(usize, u64, &'static str)>,
    finished: bool,
    /// (class name, example).
    anomalies: Vec<(&'static str, String)>,
    legend: Vec<(&'static str, &'static str)>,
}

/// The timeline of a run of either workload.
pub fn timeline(checked: &Checked<'_>, run: &Run<'_>) -> String {
    match checked {
        Checked::Queue { history, verdict } => render(&queue_chart(history, verdict, run), run),
        Checked::Txn {
            history,
            verdict,
            caught_up,
            ..
        } => render(&txn_chart(history, verdict, *caught_up, run), run),
    }
}

/// The queue (and groups) workload's rows: producers, readers, group members.
fn queue_chart(history: &History, verdict: &Verdict, run: &Run<'_>) -> Chart {
    let producers = history
        .sends
        .values()
        .map(|s| s.producer + 1)
        .max()
        .unwrap_or(0)
        .max(run.args.producers);
    let readers = history
        .polls
        .iter()
        .map(|p| p.reader + 1)
        .max()
        .unwrap_or(0)
        .max(run.args.readers());
    // Group members: their offset commits (what they read carries no time).
    let members = history
        .group
        .commits
        .iter()
        .map(|c| c.member + 1)
        .max()
        .unwrap_or(0);
    let mut labels = Vec::new();
    for p in 0..producers {
        let kind = history
            .sends
            .values()
            .find(|s| s.producer == p)
            .map_or("", |s| match s.kind {
                Delivery::Idempotent => "idempotent",
                Delivery::AtLeastOnce => "at least once",
                Delivery::LeaderOnly => "acks=1",
            });
        labels.push(format!("p{p} {kind}"));
    }
    for r in 0..readers {
        labels.push(format!("r{r} reader"));
    }
    for m in 0..members {
        labels.push(format!("g{m} group member"));
    }
    let mut marks = Vec::new();
    for send in history.sends.values() {
        let (at, colour) = match send.outcome {
            Outcome::Ok { .. } => (send.completed_ms, OK),
            Outcome::Fail(_) => (send.completed_ms, FAIL),
            Outcome::Info(_) => (send.completed_ms, INFO),
            Outcome::Pending => (send.invoked_ms, PENDING),
        };
        marks.push((send.producer, at, colour));
    }
    for commit in &history.group.commits {
        marks.push((producers + readers + commit.member, commit.at_ms, COMMIT));
    }
    for poll in &history.polls {
        marks.push((producers + poll.reader, poll.at_ms, POLL));
    }
    Chart {
        title: format!(
            "oxbow-jepsen {}, nemesis {}, seed {}: {}{}",
            run.args.workload.name(),
            run.args.nemesis.name(),
            run.args.seed,
            if verdict.is_valid() {
                "valid"
            } else {
                "INVALID"
            },
            if history.finished { "" } else { ", NOT LIVE" }
        ),
        labels,
        marks,
        finished: history.finished,
        anomalies: verdict
            .anomalies
            .iter()
            .flat_map(|(class, (_, examples))| examples.iter().map(|e| (class.name(), e.clone())))
            .collect(),
        legend: vec![
            (OK, "ok"),
            (FAIL, "fail"),
            (INFO, "info"),
            (PENDING, "pending"),
            (POLL, "poll"),
            (COMMIT, "group commit"),
        ],
    }
}

/// The transactional workload's rows: one per transactional id (its attempts, by outcome,
/// and its instances' initializations), the output readers, the offset fetches.
fn txn_chart(history: &TxnHistory, verdict: &TxnVerdict, caught_up: bool, run: &Run<'_>) -> Chart {
    let ids: Vec<&str> = history
        .instances
        .values()
        .map(|i| i.transactional_id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let row_of = |id: &str| ids.iter().position(|i| *i == id).unwrap_or(0);
    let readers = history
        .polls
        .iter()
        .map(|p| p.reader + 1)
        .max()
        .unwrap_or(0)
        .max(run.args.readers());
    // The runner's transactional ids are TOPIC-out-tx-N: the row says tx-N.
    let mut labels: Vec<String> = ids
        .iter()
        .map(|id| format!("txn {}", id.rsplit_once("-out-").map_or(*id, |(_, n)| n)))
        .collect();
    for r in 0..readers {
        let isolation = if r % 2 == 0 {
            "committed"
        } else {
            "uncommitted"
        };
        labels.push(format!("r{r} read {isolation}"));
    }
    labels.push("offset fetches".into());
    let mut marks = Vec::new();
    for instance in history.instances.values() {
        marks.push((
            row_of(&instance.transactional_id),
            instance.init_completed_ms,
            INIT,
        ));
    }
    for (id, op) in &history.txns {
        let row = history
            .instances
            .get(&id.instance)
            .map_or(0, |i| row_of(&i.transactional_id));
        let colour = match op.outcome {
            TxnOutcome::Committed => OK,
            TxnOutcome::Aborted => FAIL,
            TxnOutcome::Indeterminate => INFO,
            TxnOutcome::Fenced => PENDING,
        };
        marks.push((row, op.completed_ms, colour));
    }
    for poll in &history.polls {
        marks.push((ids.len() + poll.reader, poll.at_ms, POLL));
    }
    for fetch in &history.offset_fetches {
        marks.push((ids.len() + readers, fetch.completed_ms, COMMIT));
    }
    let live = history.final_read.finished && caught_up;
    Chart {
        title: format!(
            "oxbow-jepsen txn, nemesis {}, seed {}: {}{}",
            run.args.nemesis.name(),
            run.args.seed,
            if verdict.is_valid() {
                "valid"
            } else {
                "INVALID"
            },
            if live { "" } else { ", NOT LIVE" }
        ),
        labels,
        marks,
        finished: live,
        anomalies: verdict
            .anomalies
            .iter()
            .flat_map(|(class, (_, examples))| examples.iter().map(|e| (class.name(), e.clone())))
            .collect(),
        legend: vec![
            (OK, "committed"),
            (FAIL, "aborted"),
            (INFO, "indeterminate"),
            (PENDING, "fenced"),
            (INIT, "new instance"),
            (POLL, "poll"),
            (COMMIT, "offset fetch"),
        ],
    }
}

/// Draws `chart` with the run's faults, phases and time axis.
fn render(chart: &Chart, run: &Run<'_>) -> String {
    let end = run.phases.end_ms.max(1) as f64;
    let x = |ms: u64| LEFT + (ms as f64 / end) * (WIDTH - LEFT - RIGHT);
    let rows = chart.labels.len() + 2;
    let height = TOP + rows as f64 * ROW + 70.0;
    let y = |row: usize| TOP + row as f64 * ROW;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="18" font-size="14">{}</text>"#,
        escape(&chart.title)
    );
    // Fault bands under everything.
    let bottom = y(rows);
    let mut label_end = [0.0f64; 2];
    for event in run.events {
        let start = x(event.start_ms);
        let (colour, width) = match event.kind.as_str() {
            "kill" => (
                "#f4b8b8",
                x(event.end_ms.unwrap_or(run.phases.healed_ms)) - start,
            ),
            "pause" => (
                "#b8c8f4",
                x(event.end_ms.unwrap_or(run.phases.healed_ms)) - start,
            ),
            "partition" => (
                "#f4e0a0",
                x(event.end_ms.unwrap_or(run.phases.healed_ms)) - start,
            ),
            "power" => (
                POWER,
                x(event.end_ms.unwrap_or(run.phases.healed_ms)) - start,
            ),
            "clock" => (
                CLOCK,
                x(event.end_ms.unwrap_or(run.phases.healed_ms)) - start,
            ),
            "disk" => (
                DISK,
                x(event.end_ms.unwrap_or(run.phases.healed_ms)) - start,
            ),
            _ => (ANOMALY, 2.0),
        };
        let _ = writeln!(
            svg,
            r#"<rect x="{start:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{colour}" opacity="0.6"><title>{}</title></rect>"#,
            width.max(1.0),
            bottom - TOP,
            escape(&format!(
                "{} node(s) {:?} from {} ms to {:?} ms {}",
                event.kind, event.nodes, event.start_ms, event.end_ms, event.detail
            ))
        );
        let label = match event.kind.as_str() {
            "partition" => event.detail.clone(),
            _ => format!("{} {:?}", event.kind, event.nodes),
        };
        // A label that would run into the previous one goes on the line above it.
        let line = usize::from(start < label_end[0]);
        let _ = writeln!(
            svg,
            r#"<text x="{start:.1}" y="{:.1}" font-size="9">{}</text>"#,
            TOP - 4.0 - 11.0 * line as f64,
            escape(&label)
        );
        label_end[line] = start + 5.0 * label.len() as f64;
    }
    // Rows and their labels.
    let labels = chart
        .labels
        .iter()
        .map(String::as_str)
        .chain(["final read", "anomalies"]);
    for (row, label) in labels.enumerate() {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#e0e0e0"/><text x="6" y="{:.1}">{}</text>"##,
            WIDTH - RIGHT,
            y(row) + ROW / 2.0,
            y(row) + ROW / 2.0,
            y(row) + ROW / 2.0 + 4.0,
            escape(label)
        );
    }
    // One mark per pixel column, row and colour.
    let marks: BTreeSet<(usize, i64, &str)> = chart
        .marks
        .iter()
        .map(|(row, at, colour)| (*row, x(*at) as i64, *colour))
        .collect();
    for (row, px, colour) in marks {
        // Failures and unknowns drawn over the oks of the same column: the row's upper half
        // for oks and polls, the lower half for the rest.
        let (top, h) = if [OK, POLL, COMMIT, INIT].contains(&colour) {
            (y(row) + 3.0, ROW / 2.0 - 3.0)
        } else {
            (y(row) + ROW / 2.0, ROW / 2.0 - 3.0)
        };
        let _ = writeln!(
            svg,
            r#"<rect x="{px}" y="{top:.1}" width="1" height="{h:.1}" fill="{colour}"/>"#
        );
    }
    let final_row = chart.labels.len();
    let _ = writeln!(
        svg,
        r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
        x(run.phases.final_read_start_ms),
        y(final_row) + 4.0,
        (x(run.phases.end_ms) - x(run.phases.final_read_start_ms)).max(1.0),
        ROW - 8.0,
        if chart.finished { OK } else { ANOMALY }
    );
    for (class, example) in &chart.anomalies {
        for at in times_in(example) {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{ANOMALY}"><title>{}</title></circle>"#,
                x(at),
                y(final_row + 1) + ROW / 2.0,
                escape(&format!("{class}: {example}"))
            );
        }
    }
    // Phases and the time axis.
    for (ms, label) in [
        (run.phases.faults_end_ms, "faults stop"),
        (run.phases.healed_ms, "healed"),
        (run.phases.final_read_start_ms, "final read"),
    ] {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{bottom:.1}" stroke="#404040" stroke-dasharray="4 3"><title>{label} at {ms} ms</title></line>"##,
            x(ms)
        );
    }
    let step = if end > 120_000.0 {
        30_000
    } else if end > 40_000.0 {
        10_000
    } else {
        5_000
    };
    let mut at = 0;
    while at as f64 <= end {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{bottom:.1}" y2="{1:.1}" stroke="#404040"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{3}s</text>"##,
            x(at),
            bottom + 5.0,
            bottom + 17.0,
            at / 1000
        );
        at += step;
    }
    let faults = [
        ("#f4b8b8", "kill"),
        ("#b8c8f4", "pause"),
        ("#f4e0a0", "partition"),
        (POWER, "power"),
        (CLOCK, "clock"),
        (DISK, "disk"),
        (ANOMALY, "anomaly / node exit"),
    ];
    // Each entry as wide as its label (about 6.5 px a character at this size).
    let mut lx = LEFT;
    for (colour, label) in chart.legend.iter().chain(faults.iter()) {
        let ly = bottom + 35.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{ly:.1}">{label}</text>"#,
            ly - 9.0,
            lx + 14.0
        );
        lx += 14.0 + 6.5 * label.len() as f64 + 16.0;
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_shows_operations_faults_and_anomalies() {
        use crate::cli::{Cli, Command};
        use crate::nemesis::Event;
        use crate::report::Phases;
        use clap::Parser;
        use oxbow_jepsen::history::SendOp;
        let Command::Test(args) = Cli::parse_from(["oxbow-jepsen", "test", "--out", "x"]).command
        else {
            unreachable!("a test command")
        };
        let mut history = History::default();
        for (value, outcome) in [
            (
                1,
                Outcome::Ok {
                    partition: 0,
                    offset: 0,
                },
            ),
            (2, Outcome::Info("timed out".into())),
        ] {
            history.sends.insert(
                value,
                SendOp {
                    producer: 0,
                    kind: Delivery::Idempotent,
                    key: 0,
                    value,
                    invoked_ms: 100 * value,
                    outcome,
                    completed_ms: 100 * value + 50,
                    op: None,
                },
            );
        }
        let verdict = oxbow_jepsen::checker::check(&history);
        let events = [
            Event {
                kind: "kill".into(),
                nodes: vec![1],
                start_ms: 100,
                end_ms: Some(200),
                detail: String::new(),
            },
            Event {
                kind: "partition".into(),
                nodes: vec![1, 2, 3],
                start_ms: 110,
                end_ms: Some(300),
                detail: "isolated [2] from [1, 3]".into(),
            },
        ];
        let run = Run {
            args: &args,
            target: "test",
            topic: "t",
            phases: Phases {
                started_ms: 0,
                faults_end_ms: 400,
                healed_ms: 410,
                final_read_start_ms: 420,
                end_ms: 500,
            },
            events: &events,
            member_crashes: 0,
        };
        let checked = Checked::Queue {
            history: &history,
            verdict: &verdict,
        };
        let svg = timeline(&checked, &run);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("kill [1]") && svg.contains("isolated [2] from [1, 3]"));
        // The legend writes every colour, so look for the marks themselves: x = LEFT + ms / 500
        // * (WIDTH - LEFT - RIGHT) in producer 0's row (y = TOP), the ok in its upper half and
        // the info in its lower half.
        assert!(svg.contains(&format!(
            r#"<rect x="505" y="55.0" width="1" height="8.0" fill="{OK}"/>"#
        )));
        assert!(svg.contains(&format!(
            r#"<rect x="755" y="63.0" width="1" height="8.0" fill="{INFO}"/>"#
        )));
        // The ok write was never read back: a lost write at 150 ms, a red mark in the
        // anomalies row (below the producers, the readers and the final read).
        let anomalies_row = args.producers.max(1) + args.readers() + 1;
        assert!(svg.contains(&format!(
            r#"<circle cx="505.0" cy="{:.1}" r="4" fill="{ANOMALY}"><title>lost acknowledged write: value 1 acknowledged at 0@0 at 150 ms</title></circle>"#,
            TOP + anomalies_row as f64 * ROW + ROW / 2.0
        )));
        assert_eq!(svg.matches("<circle").count(), 1);
        // Never finished: liveness, drawn in red; overlapping labels on two lines.
        assert!(svg.contains("NOT LIVE"));
        assert!(svg.contains(&format!("y=\"{:.1}\"", TOP - 15.0)));
    }

    #[test]
    fn a_txn_timeline_has_a_row_per_transactional_id_and_reader() {
        use crate::cli::{Cli, Command};
        use crate::report::Phases;
        use crate::workload::txn::TxnStats;
        use clap::Parser;
        use oxbow_jepsen::txn::{InputId, InstanceId, Isolation, TxnOp};
        let Command::Test(args) =
            Cli::parse_from(["oxbow-jepsen", "test", "--workload", "txn", "--out", "x"]).command
        else {
            unreachable!("a test command")
        };
        let mut history = TxnHistory::default();
        history.instance(InstanceId(0), "t-out-tx-0", 0, 10);
        history.instance(InstanceId(1), "t-out-tx-1", 0, 10);
        let op = TxnOp::new(100)
            .consume(0, 0, InputId(7))
            .produce(0, InputId(7), 0, 70)
            .send_offset(0, 1)
            .commit_sent(200)
            .ended(TxnOutcome::Committed, 250);
        history.txn(InstanceId(1), 0, op);
        history.poll(0, Isolation::ReadCommitted, 300, vec![(0, 0, 70)]);
        history.final_read.partitions.insert(0, vec![(0, 70)]);
        history.final_read.finished = true;
        history.final_read.completed_ms = 480;
        let verdict = oxbow_jepsen::txn::check(&history);
        assert!(verdict.is_valid(), "{verdict}");
        let run = Run {
            args: &args,
            target: "test",
            topic: "t",
            phases: Phases {
                started_ms: 0,
                faults_end_ms: 400,
                healed_ms: 410,
                final_read_start_ms: 420,
                end_ms: 500,
            },
            events: &[],
            member_crashes: 0,
        };
        let stats = TxnStats::default();
        let checked = Checked::Txn {
            history: &history,
            verdict: &verdict,
            stats: &stats,
            caught_up: true,
        };
        let svg = timeline(&checked, &run);
        assert!(
            svg.contains("oxbow-jepsen txn, nemesis none, seed 1: valid<"),
            "{svg}"
        );
        for label in [
            "txn tx-0",
            "txn tx-1",
            "r0 read committed",
            "r1 read uncommitted",
        ] {
            assert!(svg.contains(&format!(">{label}<")), "{label}: {svg}");
        }
        // The committed attempt of tx-1 (row 1) at 250 ms: x = LEFT + 250 / 500 * 1250.
        assert!(svg.contains(&format!(
            r#"<rect x="755" y="{:.1}" width="1" height="8.0" fill="{OK}"/>"#,
            TOP + ROW + 3.0
        )));
        // Caught up with a finished final read: live, drawn green.
        let not_live = Checked::Txn {
            history: &history,
            verdict: &verdict,
            stats: &stats,
            caught_up: false,
        };
        assert!(!svg.contains("NOT LIVE"));
        assert!(timeline(&not_live, &run).contains("NOT LIVE"));
    }

    #[test]
    fn anomaly_times_are_found() {
        assert_eq!(
            times_in("value 5 acknowledged at 0@3 at 1234 ms; x"),
            vec![1234]
        );
        assert_eq!(
            times_in("reader 1 jumped from 0@1 to @3 at 99 ms"),
            vec![99]
        );
        assert!(times_in("value 7").is_empty());
    }
}
