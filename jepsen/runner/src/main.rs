//! `oxbow-jepsen`: Jepsen-style tests of real Kafka-API clusters, and the checker as a tool.
//!
//! `check FILE` checks a recorded history; `test` runs a workload against an existing cluster
//! (`--bootstrap`) or a local cluster of real `oxbow node` processes it starts itself
//! (`--cluster local`), injects faults (nemeses), heals, reads everything back, checks the
//! history and writes a report. The modules each do one job: `cli` (the command line),
//! `check` (the `check` command), `history_file` (reading and writing history files),
//! `cluster` (the local cluster's processes), `faketime` (the nodes' wall clocks), `small_disk` (the nodes' small disks), `nemesis` (the fault schedule), `proxy` (the TCP proxy partitions cut), `workload` (the
//! queue workload's clients), `run` (the `test` command's phases), `report` (report.json and
//! summary.txt) and `svg` (the timeline).

mod check;
mod cli;
mod cluster;
mod faketime;
mod history_file;
mod nemesis;
mod proxy;
mod report;
mod rng;
mod run;
mod small_disk;
mod svg;
mod workload;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Check(args) => check::run(&args),
        cli::Command::Test(args) => run::run(*args),
    }
}
