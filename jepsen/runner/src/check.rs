//! The `check` command: reads a history file (queue or transactional, as its header says; or
//! Jepsen's own `history.edn`), checks it, and prints the verdict: one line per anomaly class,
//! then `valid` or `INVALID`.

use std::io::BufReader;
use std::process::ExitCode;

use oxbow_jepsen::history::Delivery;
use oxbow_jepsen::jsonl::{read_any, AnyHistory};

use crate::cli::{CheckArgs, EdnDelivery};

/// Checks `args.file`: exit 0 valid, 1 anomalies, 2 unreadable.
pub fn run(args: &CheckArgs) -> ExitCode {
    let path = &args.file;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!(
                "oxbow-jepsen check: cannot open {}: {e}; pass a history file such as DIR/history.jsonl of a test run",
                path.display()
            );
            return ExitCode::from(2);
        }
    };
    let edn = path.extension().is_some_and(|e| e == "edn");
    let read = if edn {
        let delivery = match args.delivery {
            EdnDelivery::Idempotent => Delivery::Idempotent,
            EdnDelivery::AtLeastOnce => Delivery::AtLeastOnce,
        };
        oxbow_jepsen::edn::read_edn(BufReader::new(file), delivery).map(AnyHistory::Queue)
    } else {
        read_any(BufReader::new(file))
    };
    let history = match read {
        Ok(history) => history,
        Err(e) if edn => {
            eprintln!(
                "oxbow-jepsen check: {} is not a Jepsen Kafka history: {e} (what is read is in docs/jepsen.md, \"Jepsen's own histories\")",
                path.display()
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!(
                "oxbow-jepsen check: {} is not a history file: {e} (the format is in docs/jepsen.md, \"History files\"; name a Jepsen EDN history *.edn)",
                path.display()
            );
            return ExitCode::from(2);
        }
    };
    let (valid, lines, counts) = match &history {
        AnyHistory::Queue(history) => {
            let verdict = oxbow_jepsen::checker::check(history);
            let counts = format!(
                "queue: {} sends ({} acknowledged, {} failed, {} indeterminate), {} records in the final read{}",
                verdict.sent,
                verdict.acknowledged,
                verdict.failed,
                verdict.indeterminate,
                verdict.records_read,
                if history.finished { "" } else { " (never finished)" }
            );
            let mut lines = verdict.lines();
            lines.extend(
                verdict
                    .measures()
                    .into_iter()
                    .map(|m| format!("measured: {m}")),
            );
            (verdict.is_valid(), lines, counts)
        }
        AnyHistory::Txn(history) => {
            let verdict = oxbow_jepsen::txn::check(history);
            let counts = format!("txn: {:?}", verdict.counts);
            (verdict.is_valid(), verdict.lines(), counts)
        }
    };
    println!("{}: {counts}", path.display());
    for line in &lines {
        println!("  {line}");
    }
    if valid {
        println!("valid");
        ExitCode::SUCCESS
    } else {
        println!("INVALID");
        ExitCode::from(1)
    }
}
