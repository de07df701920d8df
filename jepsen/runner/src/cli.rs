//! The command line: `oxbow-jepsen check FILE` and `oxbow-jepsen test ...`, with `--help` on
//! every command.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Run a workload against a cluster under faults, heal, read everything back, check the
    /// history and write a report to --out: exits 0 when valid, 1 when anomalies were found,
    /// 2 when the run could not be carried out.
    Test(Box<TestArgs>),
}

/// `check`'s arguments.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The history file: DIR/history.jsonl of a `test` run (JSON Lines, see docs/jepsen.md),
    /// or a `history.edn` of Jepsen's own Kafka test (a name ending in `.edn`).
    pub file: PathBuf,
    /// For an EDN history: what every producer promised (Jepsen's `--safe` runs are
    /// idempotent; its other runs at least once).
    #[arg(long, value_enum, default_value = "idempotent")]
    pub delivery: EdnDelivery,
}

/// What the producers of a Jepsen EDN history promised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EdnDelivery {
    /// Idempotent acks=all producers: no loss, no duplicate, no reordering.
    Idempotent,
    /// acks=all without idempotence: duplicates allowed.
    AtLeastOnce,
}

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Jepsen's Kafka queue workload: idempotent and non-idempotent acks=all producers of
    /// unique values, assigned readers polling during the run, and a final read after healing.
    Queue,
    /// The queue workload's consumer group as the focus: the producers, no assigned readers,
    /// more group members (4) crashing now and then, and the final read; judged above all for
    /// the group's classes (committed offsets going back, double delivery, never delivered,
    /// group liveness).
    Groups,
    /// Consume-transform-produce with Kafka transactions: a producer fills an input topic;
    /// transformers (a read_committed group member and a transactional producer each) copy
    /// every input to several output partitions and commit the group's offsets in the same
    /// transaction, aborting some on purpose and replaced by new instances (fencing the old)
    /// after fatal errors; output readers of both isolation levels, OffsetFetch samples, and
    /// a read_committed final read after healing.
    Txn,
}

impl Workload {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Groups => "groups",
            Self::Txn => "txn",
        }
    }
}

/// Where the cluster comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterKind {
    /// Start real `oxbow node` processes from --binary on 127.0.0.1, data under --out.
    Local,
}

/// The fault injectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NemesisKind {
    /// No faults.
    None,
    /// SIGKILL a random node (now and then a majority) and restart it a few seconds later.
    Kill,
    /// SIGSTOP a random node (now and then a majority) and SIGCONT it a few seconds later.
    Pause,
    /// Cut links between nodes through the runner's TCP proxy: isolate a node (or a
    /// minority), a bridge (two sides that each reach one node), or one way (a node's bytes
    /// do not reach the others, or theirs do not reach it); healed a few seconds later.
    Partition,
    /// Power failure: SIGKILL a random node (now and then a majority), drop every write its
    /// data directory (a lazyfs FUSE mount) holds unsynced, and restart it a few seconds later.
    Power,
    /// Jump a random node's wall clock (libfaketime) by seconds to minutes either way, or
    /// strobe it back and forth every 100 ms; set right a few seconds later.
    Clock,
    /// Fill a random node's data file system (a tmpfs of the run's) below its disk reserve,
    /// so it refuses produce (now and then to the last byte), and empty it a few seconds later.
    Disk,
    /// Kills, pauses, partitions, power failures, clock jumps and full disks, mixed.
    All,
}

impl NemesisKind {
    /// Whether it cuts links (so the cluster's links go through the proxy).
    pub fn partitions(self) -> bool {
        matches!(self, Self::Partition | Self::All)
    }

    /// Whether it moves clocks (so each node runs under libfaketime).
    pub fn clock(self) -> bool {
        matches!(self, Self::Clock | Self::All)
    }

    /// Whether it fills disks (so each node's data lives on a small tmpfs).
    pub fn disk(self) -> bool {
        matches!(self, Self::Disk | Self::All)
    }

    /// Whether it cuts power (so each node's data directory is a lazyfs mount).
    pub fn power(self) -> bool {
        matches!(self, Self::Power | Self::All)
    }

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Partition => "partition",
            Self::Power => "power",
            Self::Clock => "clock",
            Self::Disk => "disk",
            Self::All => "all",
        }
    }
}

/// `test`'s arguments.
#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    /// The workload.
    #[arg(long, value_enum, default_value = "queue")]
    pub workload: Workload,
    /// How long the workload runs under faults (`60s`, `2m`, `500ms`; a bare number is
    /// seconds); healing and the final read come after.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The seed of every random choice of the workload and the nemesis schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The directory for history.jsonl, report.json, summary.txt, timeline.svg (and the local
    /// cluster's nodes); created if missing.
    #[arg(long)]
    pub out: PathBuf,
    /// An existing cluster's Kafka addresses (`host:port,...`); only `--nemesis none` is
    /// possible there.
    #[arg(long, conflicts_with = "cluster")]
    pub bootstrap: Option<String>,
    /// Start a cluster of real `oxbow node` processes instead.
    #[arg(long, value_enum, requires = "binary")]
    pub cluster: Option<ClusterKind>,
    /// The `oxbow` binary for `--cluster local` (for example target/release/oxbow).
    #[arg(long, env = "OXBOW_BIN")]
    pub binary: Option<PathBuf>,
    /// Bugs planted on purpose in every node of the local cluster (`NAME,...`, passed as
    /// OXBOW_PLANTED_BUGS; names in docs/simulation.md), to see the checker catch them: needs a
    /// binary built with `cargo build --release -p oxbow-node --features planted-bugs`.
    #[arg(long, requires = "cluster")]
    pub planted_bugs: Option<String>,
    /// A top-level line for every node's configuration file (repeatable), for example
    /// `--node-config 'fsync = "never"'` to see the power nemesis catch a cluster that never
    /// fsyncs; keys are those of `oxbow node`'s configuration (docs/operations.md).
    #[arg(long, requires = "cluster")]
    pub node_config: Vec<String>,
    /// Nodes of the local cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// The fault injector.
    #[arg(long, value_enum, default_value = "none")]
    pub nemesis: NemesisKind,
    /// Seconds between faults, as `LOW..HIGH` (each gap drawn from it).
    #[arg(long, default_value = "2..6", value_parser = parse_range)]
    pub fault_gap: (u64, u64),
    /// Seconds a fault lasts before it heals, as `LOW..HIGH`.
    #[arg(long, default_value = "2..6", value_parser = parse_range)]
    pub fault_length: (u64, u64),
    /// The topic (default: `jepsen-WORKLOAD-SEED-TIME`, new for every run); the txn workload
    /// uses TOPIC-in and TOPIC-out.
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of the topic (txn: of the input topic and of the output topic each).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Replication factor of the topic (at most the number of nodes).
    #[arg(long, default_value_t = 3)]
    pub replication: i16,
    /// Producers (queue, groups); even ones are idempotent (acks=all), odd ones are not
    /// (acks=all). txn has one idempotent producer of inputs.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Readers polling every partition (assigned) during the run [default: 2; groups: 0];
    /// txn: readers of the output topic, even ones read_committed, odd ones read_uncommitted.
    #[arg(long)]
    pub readers: Option<usize>,
    /// Members of a consumer group subscribed to the topic (Jepsen's `subscribe`), polling
    /// and committing during the run and after healing, until they have read every
    /// acknowledged write (0: none) [default: 2; groups: 4; not used by txn].
    #[arg(long)]
    pub group_members: Option<usize>,
    /// Seconds between crashes of a group member (dropped without leaving; a new member takes
    /// its place), as `LOW..HIGH`, while the faults last; `0` for none [default: 10..20;
    /// groups: 5..10].
    #[arg(long, value_parser = parse_range)]
    pub member_crash_every: Option<(u64, u64)>,
    /// Sends per second, all producers together (txn: inputs written per second).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Keys the producers draw from (queue, groups).
    #[arg(long, default_value_t = 32)]
    pub keys: u64,
    /// How long a send may take, retries included, before the producer gives it up (a short
    /// one turns faults into indeterminate sends and new producer epochs, which tests more).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,
    /// How long the final read after healing may take before the run counts as not live
    /// (txn: also how long the transformers may take to catch up with the inputs).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub final_read_timeout: Duration,
    /// txn: transformers, each with its own transactional id, all members of one consumer
    /// group over the input topic.
    #[arg(long, default_value_t = 2)]
    pub transformers: usize,
    /// txn: outputs per input, each to its own output partition (when there are enough).
    #[arg(long, default_value_t = 2)]
    pub copies: u32,
    /// txn: the chance (0 to 1) that a transformer aborts a transaction on purpose.
    #[arg(long, default_value_t = 0.1, value_parser = parse_chance)]
    pub abort_chance: f64,
    /// txn: the chance (0 to 1), per transaction while the faults last, that a new instance
    /// of the transformer's transactional id fences the running one, which then tries one
    /// more transaction (a zombie's, which must fail).
    #[arg(long, default_value_t = 0.02, value_parser = parse_chance)]
    pub fence_chance: f64,
    /// txn: the transactional producers' transaction timeout (after it the coordinator aborts
    /// an open transaction); an attempt that takes longer than it and the delivery timeout
    /// together is given up as indeterminate and its instance replaced.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub transaction_timeout: Duration,
}

impl TestArgs {
    /// `--readers`, or the workload's default.
    pub fn readers(&self) -> usize {
        self.readers.unwrap_or(match self.workload {
            Workload::Groups => 0,
            Workload::Queue | Workload::Txn => 2,
        })
    }

    /// `--group-members`, or the workload's default.
    pub fn group_members(&self) -> usize {
        self.group_members.unwrap_or(match self.workload {
            Workload::Groups => 4,
            Workload::Queue => 2,
            Workload::Txn => 0,
        })
    }

    /// `--member-crash-every`, or the workload's default; `None` for no crashes.
    pub fn member_crash_every(&self) -> Option<(u64, u64)> {
        let every = self.member_crash_every.unwrap_or(match self.workload {
            Workload::Groups => (5, 10),
            Workload::Queue | Workload::Txn => (10, 20),
        });
        (every != (0, 0)).then_some(every)
    }
}

/// A probability from 0 to 1.
fn parse_chance(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "`{text}` is not a chance: write a number from 0 to 1, such as 0.1"
        )),
    }
}

/// `60s`, `2m`, `500ms`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write it as 60s, 2m, 500ms or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        _ => Err(format!(
            "`{text}` has an unknown unit `{unit}`: use ms, s, m or h"
        )),
    }
}

/// `LOW..HIGH` (or a single number) of seconds.
fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let bad = || format!("`{text}` is not a range of seconds: write it as 2..6 or 3");
    match text.split_once("..") {
        Some((low, high)) => {
            let low: u64 = low.trim().parse().map_err(|_| bad())?;
            let high: u64 = high.trim().parse().map_err(|_| bad())?;
            if high < low {
                return Err(bad());
            }
            Ok((low, high))
        }
        None => {
            let n: u64 = text.trim().parse().map_err(|_| bad())?;
            Ok((n, n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("7 days").is_err());
        assert_eq!(parse_range("2..6"), Ok((2, 6)));
        assert!(parse_range("6..2").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
