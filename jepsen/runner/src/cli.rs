//! The command line: `oxbow-jepsen check FILE`, with `--help` on every command.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Jepsen-style tests of Kafka-API clusters (oxbow's own, or any other), and the checker as a
/// tool.
#[derive(Parser, Debug)]
#[command(name = "oxbow-jepsen", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a recorded history file (JSONL, see docs/jepsen.md): prints the verdict; exits 0
    /// when valid, 1 when anomalies were found, 2 when the file cannot be read.
    Check(CheckArgs),
}

/// `check`'s arguments.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The history file (for example DIR/history.jsonl of a `test` run).
    pub file: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
