//! End to end: `oxbow-jepsen check` judges crafted history files (exit 1 on an invalid one),
//! and `oxbow-jepsen test --cluster local` runs real `oxbow node` processes under the kill,
//! pause and partition nemeses and finds the runs valid and live after healing, with no process left behind.
//! The power, clock and disk nemeses need root, /dev/fuse and libfaketime (Debian's `faketime`).
//! The kill and partition runs last 30 s each: issue 18's short run, which CI (`.ci/run`, through
//! `cargo test --workspace`) runs.
//!
//! The node binary is `OXBOW_BIN` when set, else this workspace's `oxbow` beside the runner's
//! binary (`cargo test --workspace` builds both).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{check, oxbow_binary, run_valid, scratch, RUNNER};

use oxbow_jepsen::history::{Delivery, History, Outcome, SendOp};

fn send(value: u64, offset: i64) -> SendOp {
    SendOp {
        producer: 0,
        kind: Delivery::Idempotent,
        key: 0,
        value,
        invoked_ms: value * 10,
        outcome: Outcome::Ok {
            partition: 0,
            offset,
        },
        completed_ms: value * 10 + 5,
        op: None,
    }
}

/// Three acknowledged sends; the final read holds `read` of them.
fn history_file(dir: &Path, name: &str, read: &[(i64, u64)]) -> PathBuf {
    let mut history = History::default();
    for (value, offset) in [(1, 0), (2, 1), (3, 2)] {
        history.sends.insert(value, send(value, offset));
    }
    history.reads.insert(0, read.to_vec());
    history.final_starts.insert(0, 0);
    history.finished = true;
    let path = dir.join(name);
    let mut out = Vec::new();
    oxbow_jepsen::jsonl::write_history(&history, &mut out).expect("encoded");
    std::fs::write(&path, out).expect("written");
    path
}

#[test]
fn check_exits_by_the_verdict() {
    let dir = scratch("check");
    let valid = history_file(&dir, "valid.jsonl", &[(0, 1), (1, 2), (2, 3)]);
    let (code, text) = check(&valid);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("valid"), "{text}");
    // Value 2 was acknowledged at offset 1 and is never read: a lost write.
    let lost = history_file(&dir, "lost.jsonl", &[(0, 1), (1, 3)]);
    let (code, text) = check(&lost);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("INVALID"), "{text}");
    assert!(text.contains("lost acknowledged write"), "{text}");
    let garbage = dir.join("garbage.jsonl");
    std::fs::write(&garbage, "this is not a history\n").expect("written");
    let (code, text) = check(&garbage);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("line 1"), "{text}");
    let (code, _) = check(&dir.join("missing.jsonl"));
    assert_eq!(code, Some(2));
}

/// `check` reads Jepsen's own `history.edn` (by its name): an acknowledged send that no poll
/// returned is a lost write; `--delivery at-least-once` still holds it to that.
#[test]
fn check_reads_jepsen_edn_histories() {
    let dir = scratch("check-edn");
    let history = r#"{:index 0 :type :invoke :f :assign :value [0] :process 1 :time 1000000}
{:index 1 :type :ok :f :assign :value [0] :process 1 :time 2000000}
{:type :invoke, :f :send, :value [[:send 0 1] [:send 0 2]], :process 0, :time 3000000}
{:type :ok, :f :send, :value [[:send 0 [0 1]] [:send 0 [1 2]]], :process 0, :time 4000000}
{:type :invoke :f :poll :value [[:poll]] :process 1 :time 5000000}
"#;
    let valid = dir.join("valid.edn");
    let read_both =
        "{:type :ok :f :poll :value [[:poll {0 [[0 1] [1 2]]}]] :process 1 :time 6000000}\n";
    std::fs::write(&valid, format!("{history}{read_both}")).expect("written");
    let (code, text) = check(&valid);
    assert_eq!(code, Some(0), "{text}");
    let lost = dir.join("lost.edn");
    let read_one = "{:type :ok :f :poll :value [[:poll {0 [[0 1]]}]] :process 1 :time 6000000}\n";
    std::fs::write(&lost, format!("{history}{read_one}")).expect("written");
    let (code, text) = check(&lost);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("lost acknowledged write"), "{text}");
    let output = Command::new(RUNNER)
        .args(["check", "--delivery", "at-least-once"])
        .arg(&lost)
        .output()
        .expect("oxbow-jepsen runs");
    assert_eq!(output.status.code(), Some(1));
    // A JSON Lines history named .edn is refused as EDN, with what to read.
    let wrong = dir.join("wrong.edn");
    std::fs::write(&wrong, "{\"format\":\"oxbow-jepsen\"}\n").expect("written");
    let (code, text) = check(&wrong);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("Jepsen's own histories"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_test(binary: &Path, nemesis: &str, seed: u64) {
    run_test_for(binary, nemesis, seed, 12);
}

/// A run of `nemesis` lasting `seconds` of faults that must be valid and live.
fn run_test_for(binary: &Path, nemesis: &str, seed: u64, seconds: u64) {
    let out = scratch(&format!("{nemesis}-{seed}"));
    let args = [
        "--nemesis".to_string(),
        nemesis.to_string(),
        "--duration".to_string(),
        format!("{seconds}s"),
        "--seed".to_string(),
        seed.to_string(),
        "--fault-gap".to_string(),
        "1..3".to_string(),
        "--fault-length".to_string(),
        "2..4".to_string(),
    ];
    let report = run_valid(binary, &args, nemesis, &out);
    assert!(
        report["counts"]["ok"].as_u64().unwrap_or(0) > 100,
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Issue 18's short run (2 × 30 s, kill and partition), and a 12 s pause run. One test, so
/// the clusters run one after another rather than side by side on the machine's cores.
#[test]
fn kill_pause_and_partition_runs_are_valid_and_live() {
    let binary = oxbow_binary();
    run_test_for(&binary, "kill", 1, 30);
    run_test(&binary, "pause", 2);
    run_test_for(&binary, "partition", 3, 30);
}

/// No lazyfs or tmpfs mount of the run at `out` is left.
fn assert_no_mounts(out: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let out = out.display().to_string();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&out)).collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

/// The nemeses that need root and more of the machine: `power` (lazyfs mounts, FUSE),
/// `clock` (libfaketime, Debian's `faketime`) and `disk` (tmpfs mounts).
#[test]
fn power_clock_and_disk_runs_are_valid_and_live() {
    let binary = oxbow_binary();
    for (nemesis, seed) in [("power", 4), ("clock", 5), ("disk", 6)] {
        run_test(&binary, nemesis, seed);
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "oxbow-jepsen-{nemesis}-{seed}-{}",
            std::process::id()
        ));
        assert_no_mounts(&out);
    }
}

/// A node that refuses `--planted-bugs` (a normal build, or a name no build knows) stops the
/// run at once with the node's own words, and leaves nothing running.
#[test]
fn a_refused_planted_bug_stops_the_run_with_the_reason() {
    let binary = oxbow_binary();
    let out = scratch("planted-refused");
    let output = Command::new(RUNNER)
        .args(["test", "--cluster", "local", "--binary"])
        .arg(&binary)
        .args(["--planted-bugs", "no-such-bug", "--duration", "5s", "--out"])
        .arg(&out)
        .output()
        .expect("oxbow-jepsen runs");
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("exited at start"), "{text}");
    assert!(text.contains("OXBOW_PLANTED_BUGS"), "{text}");
    let left = Command::new("pgrep")
        .args(["-f", &out.display().to_string()])
        .output()
        .expect("pgrep runs");
    assert!(left.stdout.is_empty(), "processes left running");
    let _ = std::fs::remove_dir_all(&out);
}
