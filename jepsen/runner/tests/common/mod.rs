//! What the end-to-end tests share: the runner binary, scratch directories, the node binary
//! to test, running `oxbow-jepsen check`, and making sure a run left no process behind.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The runner binary Cargo built for these tests.
pub const RUNNER: &str = env!("CARGO_BIN_EXE_oxbow-jepsen");

/// A fresh scratch directory named `name` (and this process).
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("oxbow-jepsen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Runs `oxbow-jepsen check` on `path`: its exit code and what it printed.
pub fn check(path: &Path) -> (Option<i32>, String) {
    let output = Command::new(RUNNER)
        .arg("check")
        .arg(path)
        .output()
        .expect("oxbow-jepsen runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

/// The oxbow binary to test: `OXBOW_BIN`, or this workspace's beside the runner (which
/// `cargo test --workspace` builds; building it from here would rebuild the core without the
/// simulator's features).
pub fn oxbow_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OXBOW_BIN") {
        return PathBuf::from(path);
    }
    let beside = Path::new(RUNNER).with_file_name("oxbow");
    assert!(
        beside.exists(),
        "no oxbow binary at {}: set OXBOW_BIN, or `cargo build -p oxbow-node` first",
        beside.display()
    );
    beside
}

/// Asserts that no process whose command line names `out` (the run's nodes) is running.
pub fn assert_nothing_left(out: &Path) {
    let left = Command::new("pgrep")
        .args(["-f", &out.display().to_string()])
        .output()
        .expect("pgrep runs");
    assert!(
        left.stdout.is_empty(),
        "processes left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// Runs `oxbow-jepsen test --cluster local --binary BINARY ARGS --out OUT`; asserts the run
/// was valid and live (exit 0, and so says report.json), that a `fault` happened, that it left
/// its files, that its history checks valid again, and that no process of it is left running.
/// Returns the report.
pub fn run_valid(binary: &Path, args: &[String], fault: &str, out: &Path) -> serde_json::Value {
    let output = Command::new(RUNNER)
        .args(["test", "--cluster", "local", "--binary"])
        .arg(binary)
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("oxbow-jepsen runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    println!("{text}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?} was not valid and live: {text}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
            .expect("JSON");
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["live"], true, "{report}");
    let faults = report["nemesis_events"].as_array().expect("events");
    assert!(
        faults.iter().any(|e| e["kind"] == fault),
        "no {fault} fault happened: {report}"
    );
    for file in ["history.jsonl", "summary.txt", "timeline.svg"] {
        assert!(out.join(file).is_file(), "{file} is missing");
    }
    let (code, text) = check(&out.join("history.jsonl"));
    assert_eq!(code, Some(0), "{text}");
    assert_nothing_left(out);
    report
}
