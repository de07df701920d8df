//! `oxbow`: run a node, or a local three-node cluster for development.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oxbow_node::config::{Address, Config, FsyncPolicy, LogConfig, PeerConfig, TopicConfig};
use oxbow_node::runtime;
use slog::{error, info, o, Drain, Logger};
use tokio::sync::watch;

/// oxbow: a Kafka-compatible event log in which every partition is a Raft group.
#[derive(Parser)]
#[command(name = "oxbow", version)]
struct Cli {
    /// Log level: error, warning, info, debug or trace.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a cluster, configured by a TOML file (see docs/operations.md).
    Node {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Run a local three-node cluster in this process, for development. Ctrl-C stops it.
    Dev {
        /// Where the three nodes keep their data (one directory each).
        #[arg(long, default_value = "oxbow-dev-data")]
        data_dir: PathBuf,
        /// Kafka port of the first node; the others use the next two. Peer ports are 10,000 higher.
        #[arg(long, default_value_t = 9092)]
        port: u16,
        /// Topics to create if they do not exist, as NAME or NAME:PARTITIONS (repeatable).
        #[arg(long = "topic", default_values_t = ["events:3".to_string()])]
        topics: Vec<String>,
        /// Create unknown topics when a client asks for their metadata (1 partition, 3 replicas).
        #[arg(long)]
        auto_create_topics: bool,
    },
}

/// Command-line values that override the configuration file.
#[derive(clap::Args)]
struct Overrides {
    /// Overrides `node_id`.
    #[arg(long)]
    node_id: Option<u64>,
    /// Overrides `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides `kafka_listen` (`host:port`).
    #[arg(long)]
    kafka_listen: Option<Address>,
    /// Overrides `kafka_advertised` (`host:port`).
    #[arg(long)]
    kafka_advertised: Option<Address>,
    /// Overrides `peer_listen` (`host:port`).
    #[arg(long)]
    peer_listen: Option<Address>,
    /// Overrides `fsync`: always or never.
    #[arg(long, value_parser = parse_fsync)]
    fsync: Option<FsyncPolicy>,
}

impl Overrides {
    fn apply(&self, config: &mut Config) {
        if let Some(v) = self.node_id {
            config.node_id = v;
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.kafka_listen {
            config.kafka_listen = v.clone();
        }
        if let Some(v) = &self.kafka_advertised {
            config.kafka_advertised = Some(v.clone());
        }
        if let Some(v) = &self.peer_listen {
            config.peer_listen = v.clone();
        }
        if let Some(v) = self.fsync {
            config.fsync = v;
        }
    }
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    match s {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        other => Err(format!("fsync must be always or never, not {other:?}")),
    }
}

fn logger(level: &str) -> Result<Logger, String> {
    let level: slog::Level = level
        .parse()
        .map_err(|()| format!("unknown log level {level:?}"))?;
    let decorator = slog_term::TermDecorator::new().stderr().build();
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog_async::Async::new(drain)
        .chan_size(4_096)
        .build()
        .fuse();
    Ok(Logger::root(drain.filter_level(level).fuse(), o!()))
}

fn dev_configs(
    data_dir: &std::path::Path,
    port: u16,
    topics: &[String],
    auto_create_topics: bool,
) -> Result<Vec<Config>, String> {
    let topics: Vec<TopicConfig> = topics
        .iter()
        .map(|t| {
            let (name, partitions) = match t.split_once(':') {
                Some((n, p)) => (
                    n,
                    p.parse()
                        .map_err(|_| format!("--topic {t}: partitions must be a number"))?,
                ),
                None => (t.as_str(), 1),
            };
            Ok(TopicConfig {
                name: name.to_string(),
                partitions,
                replication_factor: 3,
            })
        })
        .collect::<Result<_, String>>()?;
    let address = |p: u16| Address::from(SocketAddr::from(([127, 0, 0, 1], p)));
    // The dev cluster's own peer secret, new each run: its peer ports take no one else.
    let secret: String = {
        use rand_core::RngCore as _;
        let mut bytes = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let port_of = |i: u16, base: u16| base.checked_add(i).ok_or("--port is too high".to_string());
    let mut configs = Vec::new();
    for i in 0..3u16 {
        let peers = (0..3u16)
            .filter(|j| *j != i)
            .map(|j| {
                Ok(PeerConfig {
                    id: u64::from(j) + 1,
                    peer_address: address(
                        port_of(j, port)?
                            .checked_add(10_000)
                            .ok_or("--port is too high")?,
                    ),
                    kafka_address: address(port_of(j, port)?),
                })
            })
            .collect::<Result<_, String>>()?;
        let config = Config {
            node_id: u64::from(i) + 1,
            data_dir: data_dir.join(format!("node-{}", i + 1)),
            kafka_listen: address(port_of(i, port)?),
            kafka_advertised: None,
            peer_listen: address(
                port_of(i, port)?
                    .checked_add(10_000)
                    .ok_or("--port is too high")?,
            ),
            peers,
            peer_secret: Some(secret.clone()),
            peer_secret_file: None,
            fsync: FsyncPolicy::Always,
            tick_ms: 100,
            topics: topics.clone(),
            auto_create_topics,
            default_partitions: 1,
            default_replication_factor: None,
            offsets_topic_partitions: 8,
            metadata_snapshot_entries: 1_000,
            fetch_max_bytes: 57_671_680,
            max_incremental_fetch_session_cache_slots: 1_000,
            group_entry_bytes_max: 4 << 20,
            max_partitions: 100_000,
            max_partitions_per_node: 10_000,
            connections: Default::default(),
            producers: Default::default(),
            groups: Default::default(),
            transactions: Default::default(),
            log: LogConfig::default(),
        };
        config.validate().map_err(|e| e.to_string())?;
        configs.push(config);
    }
    Ok(configs)
}

/// Starts one node (core, peers, Kafka listener) on the real network and disk; returns its end.
async fn start_node(
    config: Config,
    shutdown: watch::Receiver<bool>,
    logger: Logger,
) -> Result<runtime::Started, runtime::RuntimeError> {
    let environment = runtime::production(&config)?;
    runtime::start(config, environment, shutdown, logger).await
}

/// Says "ready" (a log line, and for `oxbow dev` a line on standard output) once the cluster
/// can serve: a controller is elected and every configured topic exists with a leader for
/// each partition. Before that, admin requests and produce would wait.
async fn announce_ready(
    core: runtime::CoreHandle,
    topics: Vec<String>,
    dev_bootstrap: Option<String>,
    logger: Logger,
) {
    use oxbow_core::metadata::METADATA_GROUP;
    let started = std::time::Instant::now();
    loop {
        let controller = core
            .leaders(vec![METADATA_GROUP])
            .await
            .and_then(|l| l.into_iter().next().flatten());
        let metadata = core.metadata();
        let groups: Option<Vec<_>> = topics
            .iter()
            .map(|name| {
                metadata
                    .topic(name)
                    .map(|t| t.partitions.iter().map(|p| p.group))
            })
            .try_fold(Vec::new(), |mut all, groups| {
                all.extend(groups?);
                Some(all)
            });
        if let (Some(_), Some(groups)) = (controller, groups) {
            let led = core.leaders(groups).await;
            if led.is_some_and(|l| l.iter().all(Option::is_some)) {
                let ms = started.elapsed().as_millis() as u64;
                info!(logger, "ready"; "after_ms" => ms);
                if let Some(bootstrap) = &dev_bootstrap {
                    println!("ready: serving on {bootstrap} ({ms} ms after start)");
                }
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn run(configs: Vec<Config>, dev: bool, logger: Logger) -> Result<(), String> {
    let (stop, shutdown) = watch::channel(false);
    let topics: Vec<String> = configs[0].topics.iter().map(|t| t.name.clone()).collect();
    let bootstrap: Vec<String> = configs.iter().map(|c| c.kafka_listen.to_string()).collect();
    let mut nodes = Vec::new();
    let mut first_core = None;
    for config in configs {
        let node_logger = logger.new(o!("node" => config.node_id));
        let started = start_node(config, shutdown.clone(), node_logger.clone())
            .await
            .map_err(|e| e.to_string())?;
        first_core.get_or_insert((started.core.clone(), node_logger));
        nodes.push(started.done);
    }
    if let Some((core, node_logger)) = first_core {
        let dev_bootstrap = dev.then(|| bootstrap.join(","));
        tokio::spawn(announce_ready(core, topics, dev_bootstrap, node_logger));
    }
    let mut set = tokio::task::JoinSet::new();
    for node in nodes {
        set.spawn(node);
    }
    let first_failure = async move {
        match set.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(e),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = wait_for_signal() => {
            info!(logger, "stopping");
            let _ = stop.send(true);
            // Let the writers finish what is queued.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            Ok(())
        }
        result = first_failure => {
            let _ = stop.send(true);
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("node task failed: {e}")),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logger = match logger(&cli.log_level) {
        Ok(logger) => logger,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let configs = match &cli.command {
        Command::Node { config, overrides } => {
            let text = match std::fs::read_to_string(config) {
                Ok(text) => text,
                Err(e) => {
                    error!(logger, "cannot read the configuration file"; "file" => %config.display(), "error" => %e);
                    return ExitCode::FAILURE;
                }
            };
            let parsed = Config::parse(&text).and_then(|mut parsed| {
                overrides.apply(&mut parsed);
                parsed.validate().map(|()| parsed)
            });
            match parsed {
                Ok(parsed) => vec![parsed],
                Err(e) => {
                    error!(logger, "{e}"; "file" => %config.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Dev {
            data_dir,
            port,
            topics,
            auto_create_topics,
        } => match dev_configs(data_dir, *port, topics, *auto_create_topics) {
            Ok(configs) => {
                println!("oxbow dev: 3 nodes, data in {}", data_dir.display());
                println!(
                    "bootstrap servers: 127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
                    port,
                    port + 1,
                    port + 2
                );
                println!("topics: {}", topics.join(", "));
                println!("try:  echo hello | kcat -P -b 127.0.0.1:{port} -t events   then   kcat -C -b 127.0.0.1:{port} -t events -e");
                configs
            }
            Err(e) => {
                error!(logger, "{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dev = matches!(cli.command, Command::Dev { .. });
    let result = runtime.block_on(run(configs, dev, logger.clone()));
    match result {
        Ok(()) => {
            info!(logger, "stopped");
            drop(logger);
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(logger, "{e}");
            drop(logger);
            ExitCode::FAILURE
        }
    }
}
