//! The turmoil world: the real node runtime and the real client under faults. A sweep of 200
//! seeds of 30 simulated seconds of faults each must pass; every planted bug must be caught
//! within such a sweep; a seed must give the same trace hash twice in one process, beside
//! another run in the same process, and again in a fresh process.

use oxbow_core::node::PlantedBugs;
use oxbow_sim::world::{run_world, Output, WorldOptions, WorldReport};

const SAFETY_MS: u64 = 30_000;
const SEEDS: u64 = 200;

fn run(seed: u64, bug: PlantedBugs) -> Result<WorldReport, String> {
    let options = WorldOptions::from_seed(seed, SAFETY_MS, bug);
    std::panic::catch_unwind(|| run_world(options, Output::Quiet)).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

/// What a sweep counted over its passing seeds.
#[derive(Default)]
struct Counts {
    /// DeleteRecords calls acknowledged.
    trims: std::sync::atomic::AtomicU64,
    /// Acknowledged records found below the log start.
    trimmed: std::sync::atomic::AtomicU64,
    /// Acknowledged records the cleaner removed from compacted topics.
    compacted: std::sync::atomic::AtomicU64,
    /// Transactions committed.
    committed: std::sync::atomic::AtomicU64,
}

/// Runs `seeds` on two threads (the machine's cores); returns each seed's failure, if any,
/// and what the passing seeds counted.
fn sweep(seeds: std::ops::Range<u64>, bug: PlantedBugs) -> (Vec<(u64, String)>, Counts) {
    let all: Vec<u64> = seeds.collect();
    let counts = Counts::default();
    let mut failures: Vec<(u64, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [0, 1]
            .into_iter()
            .map(|half| {
                let mine: Vec<u64> = all.iter().copied().skip(half).step_by(2).collect();
                let counts = &counts;
                scope.spawn(move || {
                    mine.into_iter()
                        .filter_map(|seed| match run(seed, bug) {
                            Ok(report) if report.violations.is_empty() => {
                                use std::sync::atomic::Ordering::Relaxed;
                                counts.trims.fetch_add(report.stats.trims, Relaxed);
                                counts.trimmed.fetch_add(report.stats.trimmed, Relaxed);
                                counts.compacted.fetch_add(report.stats.compacted, Relaxed);
                                counts
                                    .committed
                                    .fetch_add(report.stats.txn_committed, Relaxed);
                                None
                            }
                            Ok(report) => Some((seed, report.violations.join("; "))),
                            Err(panic) => Some((seed, format!("panic: {panic}"))),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("sweep thread"))
            .collect()
    });
    failures.sort();
    (failures, counts)
}

#[test]
fn two_hundred_seeds_of_thirty_faulty_seconds_pass() {
    std::panic::set_hook(Box::new(|_| {}));
    let (failures, counts) = sweep(0..SEEDS, PlantedBugs::default());
    let (trims, trimmed, compacted, committed) = (
        counts.trims.into_inner(),
        counts.trimmed.into_inner(),
        counts.compacted.into_inner(),
        counts.committed.into_inner(),
    );
    let _ = std::panic::take_hook();
    let report: Vec<String> = failures
        .iter()
        .take(5)
        .map(|(seed, why)| {
            format!(
                "seed {seed}: {why}\n  replay: cargo run --release -p oxbow-sim -- run --world turmoil --seed {seed} --safety-ms {SAFETY_MS} --trace"
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {SEEDS} seeds failed:\n{}",
        failures.len(),
        report.join("\n")
    );
    // The log start offsets moved: DeleteRecords was acknowledged and retention deleted.
    assert!(
        trims > 100 && trimmed > 10_000,
        "{trims} DeleteRecords acknowledged, {trimmed} acknowledged records below the log start"
    );
    // The transactional workload ran, in about half the seeds.
    assert!(committed > 300, "{committed} transactions committed");
    // The compacted topics (a quarter of the seeds) were cleaned: superseded records went.
    assert!(
        compacted > 1_000,
        "{compacted} acknowledged records compacted away"
    );
}

/// Runs seeds in order until `bug` is caught; fails if 200 seeds pass.
fn assert_caught(name: &str, bug: PlantedBugs) {
    assert_caught_as(name, bug, |_| true);
}

/// Runs seeds in order until `bug` is caught with a violation `shows` accepts; fails if 200
/// seeds pass.
fn assert_caught_as(name: &str, bug: PlantedBugs, shows: fn(&str) -> bool) {
    std::panic::set_hook(Box::new(|_| {}));
    let caught = (0..SEEDS).find(|seed| match run(*seed, bug) {
        Ok(report) => report.violations.iter().any(|v| shows(v)),
        Err(panic) => shows(&format!("panic: {panic}")),
    });
    let _ = std::panic::take_hook();
    println!("{name}: first caught at seed {caught:?}");
    assert!(
        caught.is_some(),
        "the planted bug {name} went unnoticed in {SEEDS} seeds of the turmoil world"
    );
}

#[test]
fn planted_bugs_are_caught_in_the_world() {
    assert_caught(
        "early-persisted-messages",
        PlantedBugs {
            early_persisted_messages: true,
            ..PlantedBugs::default()
        },
    );
    assert_caught(
        "skip-sequence-check",
        PlantedBugs {
            skip_sequence_check: true,
            ..PlantedBugs::default()
        },
    );
    assert_caught(
        "fetch-above-hwm",
        PlantedBugs {
            fetch_above_hwm: true,
            ..PlantedBugs::default()
        },
    );
    assert_caught(
        "ack-before-fsync",
        PlantedBugs {
            ack_before_fsync: true,
            ..PlantedBugs::default()
        },
    );
    assert_caught(
        "keep-torn-tail",
        PlantedBugs {
            keep_torn_tail: true,
            ..PlantedBugs::default()
        },
    );
    assert_caught(
        "assignment-to-all",
        PlantedBugs {
            assignment_to_all: true,
            ..PlantedBugs::default()
        },
    );
    assert_caught(
        "serve-stale-frames",
        PlantedBugs {
            serve_stale_frames: true,
            ..PlantedBugs::default()
        },
    );
    assert_caught(
        "delete-live-segments",
        PlantedBugs {
            delete_live_segments: true,
            ..PlantedBugs::default()
        },
    );
    assert_caught(
        "local-log-start",
        PlantedBugs {
            local_log_start: true,
            ..PlantedBugs::default()
        },
    );
}

/// The transactional bugs must be caught by the transactional checker.
#[test]
fn planted_transaction_bugs_are_caught_by_the_transactional_checker() {
    let transactional = |v: &str| v.starts_with("transactions: ");
    assert_caught_as(
        "skip-marker",
        PlantedBugs {
            skip_marker: true,
            ..PlantedBugs::default()
        },
        transactional,
    );
    assert_caught_as(
        "lso-is-hw",
        PlantedBugs {
            lso_is_hw: true,
            ..PlantedBugs::default()
        },
        transactional,
    );
    assert_caught_as(
        "accept-fenced-epoch",
        PlantedBugs {
            accept_fenced_epoch: true,
            ..PlantedBugs::default()
        },
        transactional,
    );
}

/// A compacted seed (its cleaners run on every node) gives the same trace alone and while
/// another seed runs on another thread of the same process, as the sweep runs them: no state
/// is shared between runs in one process.
#[test]
fn a_compacted_seed_replays_beside_another_run() {
    let seed = 2;
    assert!(
        WorldOptions::from_seed(seed, SAFETY_MS, PlantedBugs::default())
            .compaction
            .is_some(),
        "seed {seed} is compacted"
    );
    let alone = run(seed, PlantedBugs::default()).expect("runs");
    assert!(alone.violations.is_empty(), "{:?}", alone.violations);
    assert!(alone.stats.compacted > 0, "the cleaner removed records");
    let (beside, _) = std::thread::scope(|scope| {
        let other = scope.spawn(|| run(131, PlantedBugs::default()));
        let this = scope.spawn(|| run(seed, PlantedBugs::default()));
        (
            this.join().expect("thread").expect("runs"),
            other.join().expect("thread").expect("runs"),
        )
    });
    assert_eq!(
        alone.trace_hash, beside.trace_hash,
        "seed {seed} diverged when another run shared the process"
    );
}

#[test]
fn a_world_seed_replays_bit_for_bit() {
    let seed = 3;
    let first = run(seed, PlantedBugs::default()).expect("runs");
    let second = run(seed, PlantedBugs::default()).expect("runs");
    assert!(first.violations.is_empty(), "{:?}", first.violations);
    assert!(
        first.stats.sent > 100,
        "the workload ran ({} sends)",
        first.stats.sent
    );
    assert_eq!(
        first.trace_hash, second.trace_hash,
        "two runs of seed {seed} in one process diverged"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxbow-sim"))
        .args([
            "replay",
            "--world",
            "turmoil",
            "--seed",
            &seed.to_string(),
            "--safety-ms",
            &SAFETY_MS.to_string(),
            "--expect-hash",
            &format!("{:016x}", first.trace_hash),
        ])
        .output()
        .expect("run oxbow-sim");
    assert!(
        output.status.success(),
        "a fresh process diverged: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let other = run(seed + 1, PlantedBugs::default()).expect("runs");
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "another seed gives another trace (the hash sees the run)"
    );
}

#[test]
fn a_damaged_disk_is_refused_and_the_cluster_checker_watches_every_node() {
    // The first seeds whose options damage a disk, until one did (a crash before anything was
    // provably synced damages nothing).
    let report = (0..SEEDS)
        .filter(|seed| {
            WorldOptions::from_seed(*seed, SAFETY_MS, PlantedBugs::default())
                .damage_at_crash
                .is_some()
        })
        .take(5)
        .map(|seed| run(seed, PlantedBugs::default()).expect("runs"))
        .find(|report| report.stats.damaged > 0)
        .expect("one of the first five seeds with disk damage damages a disk");
    assert!(
        report.violations.is_empty(),
        "seed {}: {:?}",
        report.options.seed,
        report.violations
    );
    assert_eq!(report.stats.damaged, 1, "one node at most");
    assert!(
        report.stats.elections >= 2,
        "the cluster checker saw the elections of every group ({})",
        report.stats.elections
    );
}
