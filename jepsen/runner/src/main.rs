//! `oxbow-jepsen`: Jepsen-style tests of real Kafka-API clusters, and the checker as a tool.
//!
//! `check FILE` checks a recorded history. The modules each do one job: `cli` (the command
//! line) and `check` (the `check` command).

mod check;
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Check(args) => check::run(&args),
    }
}
