//! History files: a run's history.jsonl (either workload) in the format of `oxbow_jepsen::jsonl`
//! (docs/jepsen.md, "History files"), with the nemesis's faults woven in at their times as
//! `"process":"nemesis"` lines (kept for timelines, skipped by the checker's reader).

use std::io::Write;

use serde_json::{json, Value};

use crate::nemesis::Event;

/// The nemesis lines of `events`: each fault's start (`kill`, `pause`, `partition`, `power`,
/// `clock`, `disk`) and end (`restart`, `resume`, `heal`, `restart`, `clock-reset`,
/// `disk-drain`), and each node that exited on its own (`exit`), as `(time, line)`.
fn nemesis_lines(events: &[Event]) -> Vec<(u64, String)> {
    let mut lines = Vec::new();
    for event in events {
        let line = |f: &str, time: u64| {
            let mut object = json!({
                "type": "info",
                "f": f,
                "process": "nemesis",
                "time": time,
                "value": {"nodes": event.nodes},
            });
            if !event.detail.is_empty() {
                object["detail"] = Value::from(event.detail.clone());
            }
            (time, object.to_string())
        };
        lines.push(line(&event.kind, event.start_ms));
        let end = match event.kind.as_str() {
            "kill" | "power" => "restart",
            "pause" => "resume",
            "partition" => "heal",
            "clock" => "clock-reset",
            "disk" => "disk-drain",
            _ => continue,
        };
        if let Some(end_ms) = event.end_ms {
            lines.push(line(end, end_ms));
        }
    }
    lines.sort_by_key(|(time, _)| *time);
    lines
}

/// Writes `body` (a history file of either workload, as `oxbow_jepsen::jsonl` writes it) with
/// the nemesis's `events` woven in at their times.
pub fn weave(body: &[u8], events: &[Event], out: &mut impl Write) -> std::io::Result<()> {
    let text = std::str::from_utf8(body).map_err(std::io::Error::other)?;
    let mut nemesis = nemesis_lines(events).into_iter().peekable();
    for (i, line) in text.lines().enumerate() {
        // The header first; then before each timed line the faults up to its time, and the
        // rest before the first untimed line (the final read).
        if i > 0 {
            let time = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("time").and_then(Value::as_u64));
            while let Some((at, _)) = nemesis.peek() {
                if time.is_some_and(|t| t < *at) {
                    break;
                }
                let (_, fault) = nemesis.next().expect("peeked");
                writeln!(out, "{fault}")?;
            }
        }
        writeln!(out, "{line}")?;
    }
    for (_, fault) in nemesis {
        writeln!(out, "{fault}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_jepsen::history::{Delivery, History, Outcome, SendOp};

    #[test]
    fn faults_are_woven_in_and_skipped_by_the_reader() {
        let mut history = History::default();
        for (value, at) in [(1u64, 10u64), (2, 30)] {
            history.sends.insert(
                value,
                SendOp {
                    producer: 0,
                    kind: Delivery::Idempotent,
                    key: 0,
                    value,
                    invoked_ms: at,
                    outcome: Outcome::Ok {
                        partition: 0,
                        offset: value as i64 - 1,
                    },
                    completed_ms: at + 1,
                    op: None,
                },
            );
        }
        history.reads.insert(0, vec![(0, 1), (1, 2)]);
        history.final_starts.insert(0, 0);
        history.finished = true;
        let events = [Event {
            kind: "kill".into(),
            nodes: vec![2],
            start_ms: 20,
            end_ms: Some(25),
            detail: String::new(),
        }];
        let mut body = Vec::new();
        oxbow_jepsen::jsonl::write_history(&history, &mut body).expect("encoded");
        let mut out = Vec::new();
        weave(&body, &events, &mut out).expect("written");
        let text = String::from_utf8(out).expect("utf-8");
        let fs: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json");
                v["f"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        assert_eq!(
            &fs[..6],
            ["send", "send", "kill", "restart", "send", "send"],
            "{text}"
        );
        let read = oxbow_jepsen::jsonl::read_history(text.as_bytes()).expect("readable");
        assert_eq!(read, history);
    }
}
