//! Three cores replicating in-process over a shuffled, lossy, partitioned network, with crashes
//! that lose unsynced writes and tear the last frame. Each schedule is checked for: one leader
//! per term, identical applied prefixes, committed entries never lost, monotonic high
//! watermarks, acknowledged writes read back where they were acknowledged, no duplicates, and
//! convergence after healing.

use oxbow_core::node::PlantedBugs;
use oxbow_sim::cluster::{run, Report};
use oxbow_sim::options::Options;

/// Schedules run by `thousand_schedules_with_crashes_have_no_violation`.
const SCHEDULES: u64 = 1_000;

fn options(seed: u64) -> Options {
    let mut options = Options::from_seed(seed, 4_000, PlantedBugs::default());
    // Every schedule crashes nodes, at least once in its fault phase.
    options.crash_every_ms = Some((200, 1_200));
    options
}

/// Runs seeds on both cores; returns the reports in seed order.
fn run_all(seeds: std::ops::Range<u64>, make: fn(u64) -> Options) -> Vec<Report> {
    let seeds: Vec<u64> = seeds.collect();
    let mut reports: Vec<Report> = std::thread::scope(|scope| {
        let handles: Vec<_> = seeds
            .chunks(seeds.len().div_ceil(2))
            .map(|chunk| {
                scope.spawn(move || chunk.iter().map(|s| run(make(*s))).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("no panic"))
            .collect()
    });
    reports.sort_by_key(|r| r.options.seed);
    reports
}

#[test]
fn thousand_schedules_with_crashes_have_no_violation() {
    let reports = run_all(0..SCHEDULES, options);
    let mut failures = Vec::new();
    let (mut crashes, mut cuts, mut snapshots, mut acknowledged) = (0, 0, 0, 0);
    for report in &reports {
        assert!(
            report.stats.crashes >= 1,
            "seed {} crashed nothing",
            report.options.seed
        );
        crashes += report.stats.crashes;
        cuts += report.stats.tails_cut;
        snapshots += report.stats.snapshots_installed;
        acknowledged += report.stats.acknowledged;
        if !report.violations.is_empty() {
            failures.push(format!(
                "seed {}: {:?}\n  replay: cargo run -p oxbow-sim -- run --seed {} --safety-ms 4000",
                report.options.seed, report.violations, report.options.seed
            ));
        }
    }
    println!("{SCHEDULES} schedules: {crashes} crashes, {cuts} torn tails cut, {snapshots} snapshots installed, {acknowledged} writes acknowledged");
    assert!(
        failures.is_empty(),
        "{} schedules failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The schedules must exercise what they claim to.
    assert!(cuts > 0, "no crash tore a frame");
    assert!(snapshots > 0, "no follower installed a snapshot");
    assert!(acknowledged > 100 * SCHEDULES, "too little was written");
}

#[test]
fn the_same_seed_gives_the_same_trace_twice_in_one_process() {
    for seed in [1, 2, 3, 4] {
        let first = run(options(seed));
        let second = run(options(seed));
        assert_eq!(
            first.trace_hash, second.trace_hash,
            "seed {seed} diverged in-process"
        );
        assert!(first.stats.events > 1_000);
    }
    assert_ne!(
        run(options(1)).trace_hash,
        run(options(2)).trace_hash,
        "different seeds, different runs"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace_in_a_fresh_process() {
    let seed = 11;
    let hash = run(Options::from_seed(seed, 4_000, PlantedBugs::default())).trace_hash;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxbow-sim"))
        .args([
            "replay",
            "--seed",
            &seed.to_string(),
            "--safety-ms",
            "4000",
            "--expect-hash",
            &format!("{hash:016x}"),
        ])
        .output()
        .expect("run oxbow-sim");
    assert!(
        output.status.success(),
        "fresh process diverged: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}
