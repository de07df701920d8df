//! End to end, the workloads beside queue: a txn run (consume-transform-produce with
//! transactions) and a groups run (the consumer group under member crashes) on a local
//! 3-node cluster of real `oxbow node` processes under the kill nemesis, each valid and live
//! after healing, its history checked again by `oxbow-jepsen check`, and no process left.
//!
//! The node binary is `OXBOW_BIN` when set, else this workspace's `oxbow` beside the runner's
//! binary (`cargo test --workspace` builds both).

mod common;

use std::path::{Path, PathBuf};

use common::{check, oxbow_binary, run_valid, scratch};

/// Runs `--workload workload --nemesis kill` for `duration` with `extra` options; asserts the
/// run was valid and live, killed a node, left every file and no process; returns the report
/// and the output directory.
fn run_workload(
    binary: &Path,
    workload: &str,
    duration: &str,
    seed: u64,
    extra: &[&str],
) -> (serde_json::Value, PathBuf) {
    let out = scratch(&format!("{workload}-{seed}"));
    let mut args: Vec<String> = [
        "--workload",
        workload,
        "--nemesis",
        "kill",
        "--duration",
        duration,
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--seed".to_string(), seed.to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let report = run_valid(binary, &args, "kill", &out);
    assert_eq!(report["workload"], workload, "{report}");
    (report, out)
}

#[test]
fn txn_and_groups_runs_under_kills_are_valid_and_live() {
    let binary = oxbow_binary();

    let (report, out) = run_workload(&binary, "txn", "15s", 4, &["--fault-gap", "2..4"]);
    // Live means the transformers' committed offsets reached the end of every input
    // partition: transactions committed, and the final read found their outputs.
    let checker = &report["checker"];
    assert!(checker["committed"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(
        checker["records_read"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    // Every acknowledged input processed exactly once (a failed send may have been written
    // too, and then it is processed as well).
    assert!(
        checker["inputs_once"].as_u64() >= report["inputs"]["ok"].as_u64(),
        "{report}"
    );
    let (_, text) = check(&out.join("history.jsonl"));
    assert!(text.contains("txn:"), "{text}");
    let _ = std::fs::remove_dir_all(&out);

    let (report, out) = run_workload(&binary, "groups", "12s", 5, &["--fault-gap", "1..3"]);
    assert_eq!(report["readers"], 0, "{report}");
    assert_eq!(report["group_members"], 4, "{report}");
    // The first crash comes 5..10 s after the group starts, within the 12 s of faults.
    assert!(
        report["group_member_crashes"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    let counts = &report["counts"];
    // Every acknowledged write delivered to the group (some more than once: a crashed
    // member's uncommitted reads are delivered again).
    assert!(
        counts["group_records"].as_u64() >= counts["ok"].as_u64(),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
