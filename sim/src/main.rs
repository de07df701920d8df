//! `oxbow-sim`: run, sweep and replay seeded simulations of an oxbow cluster.

// The wall clock is read only to report the simulator's speed; it never enters a simulation.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::process::ExitCode;
use std::time::Instant as WallInstant;

use clap::{Parser, Subcommand};
use oxbow_core::node::PlantedBugs;
use oxbow_sim::cluster::{run, Report};
use oxbow_sim::options::Options;
use oxbow_sim::world::{run_world, Output, WorldOptions, WorldReport};

/// Deterministic simulation of an oxbow cluster: the same seed gives the same run, bit for bit.
#[derive(Parser)]
#[command(name = "oxbow-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one seed: print its options, progress, the trace hash and the verdict.
    Run {
        /// The seed.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Run a range of seeds (A..B, B excluded) and print every failing seed with its replay command.
    Sweep {
        /// Seeds, as A..B.
        #[arg(long, value_parser = parse_range)]
        seeds: (u64, u64),
        #[command(flatten)]
        common: Common,
    },
    /// Run a seed again and fail unless its trace hash is the expected one.
    Replay {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// The trace hash a previous run printed (hex).
        #[arg(long, value_parser = parse_hex)]
        expect_hash: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
}

/// Which simulation runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum World {
    /// The discrete-event simulation of the cores (fast; deep raft coverage).
    Cores,
    /// The turmoil world: the real node runtime and the real client over simulated TCP.
    Turmoil,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Which simulation: the cores' discrete-event simulation, or the turmoil world.
    #[arg(long, value_enum, default_value = "cores")]
    world: World,
    /// Simulated milliseconds of the fault phase (a healed phase follows).
    #[arg(long, default_value_t = 10_000)]
    safety_ms: u64,
    /// Print the trace (turmoil world: every node's log lines, faults and client operations)
    /// to standard error while running.
    #[arg(long)]
    trace: bool,
    /// Break the system on purpose, to see the checker catch it: early-persisted-messages,
    /// skip-sequence-check, fetch-above-hwm, ack-before-fsync (turmoil world only),
    /// keep-torn-tail, assignment-to-all (turmoil world only: the group coordinator gives
    /// every member the leader's assignment), serve-stale-frames (reading back from the files
    /// takes a frame a new leader replaced), delete-live-segments (compaction deletes
    /// segments holding records above the log start), local-log-start (turmoil world:
    /// DeleteRecords moves the leader's log start without its Raft log), clean-keep-first
    /// (turmoil world, compacted seeds: the log cleaner keeps each key's first record, not
    /// its last) or clean-drop-tombstones (turmoil world, compacted seeds: the cleaner drops
    /// tombstones before delete.retention.ms); transactional bugs: skip-marker, lso-is-hw,
    /// accept-fenced-epoch.
    #[arg(long, value_parser = parse_bug)]
    plant_bug: Option<PlantedBugs>,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or("expected A..B, for example 0..200")?;
    let a: u64 = a.parse().map_err(|e| format!("bad start {a:?}: {e}"))?;
    let b: u64 = b.parse().map_err(|e| format!("bad end {b:?}: {e}"))?;
    if a >= b {
        return Err("the range A..B must not be empty".into());
    }
    Ok((a, b))
}

fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|e| format!("expected a hex hash: {e}"))
}

/// Parses a planted bug's name.
fn parse_bug(s: &str) -> Result<PlantedBugs, String> {
    PlantedBugs::parse(s)
}

fn bug_flag(common: &Common) -> String {
    let world = match common.world {
        World::Cores => "",
        World::Turmoil => " --world turmoil",
    };
    let bug = match common.plant_bug {
        Some(bugs) => bugs
            .names()
            .iter()
            .map(|name| format!(" --plant-bug {name}"))
            .collect(),
        None => String::new(),
    };
    format!("{world}{bug}")
}

/// What any world's run reports.
struct Summary {
    stats: String,
    simulated_ms: u64,
    trace_hash: u64,
    violations: Vec<String>,
}

impl From<Report> for Summary {
    fn from(report: Report) -> Self {
        Self {
            stats: format!(
                "{} events, {} produced, {} acknowledged, {} crashes ({} bytes lost, {} tails cut), \
                 {} elections, {} snapshots installed, {} records read during the run ({} disk reads), \
                 {} records verified, {} quiet partition ticks",
                report.stats.events,
                report.stats.produced,
                report.stats.acknowledged,
                report.stats.crashes,
                report.stats.bytes_lost,
                report.stats.tails_cut,
                report.stats.elections,
                report.stats.snapshots_installed,
                report.stats.records_read,
                report.stats.disk_reads,
                report.stats.records_verified,
                report.stats.quiet_ticks
            ),
            simulated_ms: report.options.safety_ms + report.options.liveness_ms,
            trace_hash: report.trace_hash,
            violations: report.violations,
        }
    }
}

impl From<WorldReport> for Summary {
    fn from(report: WorldReport) -> Self {
        let s = &report.stats;
        Self {
            stats: format!(
                "{} sends ({} acknowledged, {} failed, {} indeterminate), {} crashes ({} disks \
                 damaged), {} elections, {} partitions, {} clock jumps, {} records read back, {} acknowledged acks=1 writes lost (allowed), \
                 {} records read by the group ({} offsets committed), {} DeleteRecords acknowledged, \
                 {} acknowledged records below the log start (allowed), {} acknowledged records compacted away (allowed), \
                 {} transactions ({} committed)",
                s.sent,
                s.acknowledged,
                s.failed,
                s.indeterminate,
                s.crashes,
                s.damaged,
                s.elections,
                s.partitions,
                s.clock_jumps,
                s.records_read,
                s.lost_leader_only,
                s.group_deliveries,
                s.group_commits,
                s.trims,
                s.trimmed,
                s.compacted,
                s.txn_attempts,
                s.txn_committed
            ),
            simulated_ms: s.simulated_ms,
            trace_hash: report.trace_hash,
            violations: report.violations,
        }
    }
}

fn describe(seed: u64, common: &Common) -> String {
    let bugs = common.plant_bug.unwrap_or_default();
    match common.world {
        World::Cores => Options::from_seed(seed, common.safety_ms, bugs).to_string(),
        World::Turmoil => WorldOptions::from_seed(seed, common.safety_ms, bugs).to_string(),
    }
}

thread_local! {
    /// The first panic of the current run: inside turmoil, a task's panic is re-raised as
    /// "a spawned task panicked", which says nothing of the cause.
    static FIRST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Panics print nothing (the verdict reports them); the first one of a run is kept.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        FIRST_PANIC.with(|first| {
            first.borrow_mut().get_or_insert_with(|| info.to_string());
        });
    }));
}

/// Runs a seed, turning a panic inside the system into a failed report.
fn run_seed(seed: u64, common: &Common, progress: bool) -> Result<Summary, String> {
    FIRST_PANIC.with(|first| first.borrow_mut().take());
    let bugs = common.plant_bug.unwrap_or_default();
    let world = common.world;
    let safety_ms = common.safety_ms;
    let output = match (common.trace, progress) {
        (true, _) => Output::Trace,
        (false, true) => Output::Progress,
        (false, false) => Output::Quiet,
    };
    std::panic::catch_unwind(move || match world {
        World::Cores => Summary::from(run(Options::from_seed(seed, safety_ms, bugs))),
        World::Turmoil => Summary::from(run_world(
            WorldOptions::from_seed(seed, safety_ms, bugs),
            output,
        )),
    })
    .map_err(|panic| {
        FIRST_PANIC
            .with(|first| first.borrow_mut().take())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

fn print_report(report: &Summary, wall: f64) {
    let simulated = report.simulated_ms as f64 / 1000.0;
    println!("stats: {}", report.stats);
    println!(
        "speed: {simulated:.1} simulated s in {wall:.2} wall s ({:.0}x real time)",
        simulated / wall.max(1e-9)
    );
    println!("trace hash: {:016x}", report.trace_hash);
    if report.violations.is_empty() {
        println!("verdict: PASS");
    } else {
        println!("verdict: FAIL");
        for v in &report.violations {
            println!("  {v}");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { seed, common }
        | Command::Replay {
            seed,
            common,
            expect_hash: None,
        } => {
            println!("{}", describe(seed, &common));
            quiet_panics();
            let start = WallInstant::now();
            match run_seed(seed, &common, true) {
                Ok(report) => {
                    print_report(&report, start.elapsed().as_secs_f64());
                    if report.violations.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(panic) => {
                    println!("verdict: FAIL (the system panicked: {panic})");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replay {
            seed,
            common,
            expect_hash: Some(expected),
        } => {
            quiet_panics();
            match run_seed(seed, &common, false) {
                Ok(report) if report.trace_hash == expected => {
                    println!("seed {seed}: trace hash {expected:016x} reproduced");
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    println!("seed {seed}: trace hash {:016x}, expected {expected:016x}: the run diverged", report.trace_hash);
                    ExitCode::FAILURE
                }
                Err(panic) => {
                    println!("seed {seed}: the system panicked: {panic}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Sweep {
            seeds: (first, end),
            common,
        } => {
            quiet_panics();
            let start = WallInstant::now();
            let mut failed = Vec::new();
            for seed in first..end {
                let verdict = match run_seed(seed, &common, false) {
                    Ok(report) if report.violations.is_empty() => None,
                    Ok(report) => Some(report.violations[0].clone()),
                    Err(panic) => Some(format!("panic: {panic}")),
                };
                if let Some(why) = verdict {
                    println!("FAIL seed {seed}: {why}");
                    println!("  replay: cargo run --release -p oxbow-sim -- run --seed {seed} --safety-ms {}{}", common.safety_ms, bug_flag(&common));
                    failed.push(seed);
                }
                let done = seed - first + 1;
                if done % 50 == 0 || seed + 1 == end {
                    eprintln!(
                        "progress: {done}/{} seeds, {} failed, {:.1} s",
                        end - first,
                        failed.len(),
                        start.elapsed().as_secs_f64()
                    );
                }
            }
            println!(
                "{} passed, {} failed",
                (end - first) as usize - failed.len(),
                failed.len()
            );
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
