//! A node of the world: what outlives its crashes, its configuration, its drifting and
//! jumping clock, and the turmoil host that starts the real node runtime on every (re)start.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbow_core::io::TraceEvent;
use oxbow_core::time::{Instant, Now};
use oxbow_node::config::{
    Address, Config, FsyncPolicy, GroupsConfig, LogConfig, PeerConfig, TransactionsConfig,
};
use oxbow_node::producer_ids::MemoryStore;
use oxbow_node::runtime::env::{Clock, Environment, WriterMode};
use oxbow_node::runtime::RuntimeError;
use oxbow_node::storage::SharedSimDisk;
use slog::{Drain, Logger};

use super::trace::TraceDrain;
use super::{node_name, sim_ms, Trace, TurmoilNet, WorldOptions, EPOCH_MS, KAFKA_PORT, PEER_PORT};
use crate::checker::Checker;
use crate::cluster::Stats;

/// What outlives a node's crashes: its disk and producer-id reservation, and its start count.
#[derive(Clone)]
pub(super) struct NodeState {
    pub(super) index: usize,
    pub(super) config: Config,
    pub(super) disk: SharedSimDisk,
    pub(super) producer_ids: MemoryStore,
    pub(super) starts: Arc<AtomicU64>,
    /// How far the node's wall clock has jumped (ms); the driver moves it.
    pub(super) wall_jump_ms: Arc<AtomicI64>,
    /// The damage done to the node's disk, once the driver has done it.
    pub(super) damaged: Arc<Mutex<Option<String>>>,
    /// Starts the node refused because it found the damage.
    pub(super) refusals: Arc<AtomicU64>,
}
/// Node `index`'s host name and `port`.
fn host_port(index: usize, port: u16) -> Address {
    format!("{}:{port}", node_name(index))
        .parse()
        .expect("node names are host names")
}

pub(super) fn node_configs(options: &WorldOptions, addresses: &[IpAddr]) -> Vec<Config> {
    (0..options.nodes)
        .map(|i| {
            let drift = options.drift_ppm[i];
            // A fast clock ticks more often: the tick interval shrinks with the drift.
            let tick_ms = ((options.tick_ms as i64 * 1_000_000) / (1_000_000 + drift)).max(1);
            let config = Config {
                node_id: i as u64 + 1,
                data_dir: PathBuf::from(format!("/sim/{}", node_name(i))),
                kafka_listen: SocketAddr::new(addresses[i], KAFKA_PORT).into(),
                // Peers and clients reach a node by its turmoil host name, which turmoil's
                // DNS resolves at every dial (deterministically), as a real deployment's
                // names are.
                kafka_advertised: Some(host_port(i, KAFKA_PORT)),
                peer_listen: SocketAddr::new(addresses[i], PEER_PORT).into(),
                peers: (0..options.nodes)
                    .filter(|j| *j != i)
                    .map(|j| PeerConfig {
                        id: j as u64 + 1,
                        peer_address: host_port(j, PEER_PORT),
                        kafka_address: host_port(j, KAFKA_PORT),
                    })
                    .collect(),
                peer_secret: Some(format!("the simulated cluster of seed {}", options.seed)),
                peer_secret_file: None,
                fsync: FsyncPolicy::Always,
                tick_ms: tick_ms as u64,
                topics: Vec::new(),
                auto_create_topics: false,
                default_partitions: 1,
                default_replication_factor: None,
                offsets_topic_partitions: 4,
                // Every few changes and leader no-ops: the metadata log's snapshots are taken,
                // restored after crashes and sent to nodes behind them.
                metadata_snapshot_entries: 3,
                fetch_max_bytes: 57_671_680,
                max_incremental_fetch_session_cache_slots: 1_000,
                group_entry_bytes_max: 4 << 20,
                max_partitions: 100_000,
                max_partitions_per_node: 10_000,
                connections: Default::default(),
                producers: Default::default(),
                // No initial rebalance delay, as Kafka's test setups have it: the workload's
                // group forms at once (the core's tests cover the delay).
                groups: GroupsConfig {
                    initial_rebalance_delay_ms: 0,
                    ..GroupsConfig::default()
                },
                // Few coordinator partitions, and hanging transactions aborted within seconds.
                transactions: TransactionsConfig {
                    state_partitions: 2,
                    timeout_check_interval_ms: 1_000,
                    ..TransactionsConfig::default()
                },
                log: LogConfig {
                    cache_bytes: options.log_cache_bytes,
                    segment_bytes: options.segment_bytes,
                    retention_check_interval_ms: options.trimming.retention_check_ms,
                    cleaner_backoff_ms: options
                        .compaction
                        .map_or(LogConfig::default().cleaner_backoff_ms, |c| {
                            c.cleaner_backoff_ms
                        }),
                    ..LogConfig::default()
                },
            };
            config
                .validate()
                .expect("the simulator builds valid configurations");
            config
        })
        .collect()
}

/// A node's clock: its monotonic time runs at its own rate (drift); its wall clock also starts
/// off by an offset and jumps when the driver says so. Monotonic time never jumps.
fn node_clock(drift_ppm: i64, wall_offset_ms: i64, wall_jump_ms: Arc<AtomicI64>) -> Clock {
    Clock::from_fn(move || {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default().as_nanos() as i128;
        let local = elapsed + elapsed * i128::from(drift_ppm) / 1_000_000;
        Now {
            mono: Instant(local as u64),
            wall_ms: EPOCH_MS
                + wall_offset_ms
                + wall_jump_ms.load(Ordering::SeqCst)
                + (local / 1_000_000) as i64,
        }
    })
}

pub(super) fn add_node(
    sim: &mut turmoil::Sim<'_>,
    state: NodeState,
    options: &WorldOptions,
    trace: &Trace,
    cluster: &Arc<Mutex<(Checker, Stats)>>,
) {
    let name = node_name(state.index);
    let clock = node_clock(
        options.drift_ppm[state.index],
        options.wall_offset_ms[state.index],
        state.wall_jump_ms.clone(),
    );
    let seed = options.seed;
    let planted = options.planted;
    let sync_latency = Duration::from_micros(options.fsync_us);
    let trace = trace.clone();
    let cluster = cluster.clone();
    sim.host(name.as_str(), move || {
        let state = state.clone();
        let incarnation = state.starts.fetch_add(1, Ordering::SeqCst);
        // The cluster invariants, from every trace event of the core. A new incarnation's high
        // watermark starts again from what it recovered.
        cluster
            .lock()
            .expect("not poisoned")
            .0
            .node_started(state.index);
        let observer = {
            let cluster = cluster.clone();
            let index = state.index;
            Box::new(move |event: &TraceEvent| {
                let (checker, stats) = &mut *cluster.lock().expect("not poisoned");
                checker.trace(index, event, stats);
            })
        };
        let environment = Environment {
            network: TurmoilNet,
            disk: state.disk.clone(),
            writer: WriterMode::Task { sync_latency },
            producer_ids: Box::new(state.producer_ids.clone()),
            clock: clock.clone(),
            seed,
            incarnation,
            planted,
            observer: Some(observer),
            // Handshake nonces from the seed, a stream per node and start, so a run replays.
            nonces: Box::new(
                crate::rng::Stream::new(seed, &format!("nonces {} {incarnation}", state.index))
                    .into_rng(),
            ),
        };
        let logger = Logger::root(
            TraceDrain {
                trace: trace.clone(),
                host: node_name(state.index),
            }
            .fuse(),
            slog::o!(),
        );
        let config = state.config.clone();
        let damaged = state.damaged.lock().expect("not poisoned").clone();
        let trace = trace.clone();
        async move {
            // The shutdown signal never fires: a simulated node ends by crashing.
            let (_stop, shutdown) = tokio::sync::watch::channel(false);
            let name = node_name(state.index);
            let started =
                match oxbow_node::runtime::start(config, environment, shutdown, logger).await {
                    Ok(started) => started,
                    // The one right answer to a damaged disk: refuse, and stay down.
                    Err(RuntimeError::Storage(e)) if e.is_damage() && damaged.is_some() => {
                        trace.line(&format!("{:>7} {name} refused to start: {e}", sim_ms()));
                        state.refusals.fetch_add(1, Ordering::SeqCst);
                        return Ok(());
                    }
                    Err(e) => return Err(format!("{name} failed to start: {e}").into()),
                };
            if let Some(damage) = damaged {
                return Err(format!(
                    "{name} started on a damaged disk ({damage}): recovery did not notice"
                )
                .into());
            }
            match started.done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string().into()),
                Err(e) => Err(format!("the core task failed: {e}").into()),
            }
        }
    });
}
