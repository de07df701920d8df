//! The turmoil world: the real node runtime (`oxbow_node::runtime::start`, the same code as
//! `oxbow node`) on 3 to 5 simulated hosts, and the real client (`oxbow-client`) on a client
//! host, over turmoil's TCP, with simulated disks and per-node clocks.
//!
//! The driver steps turmoil one millisecond at a time and injects faults between steps:
//! crashes that lose unsynced bytes (and may tear the last frame), damage to a crashed node's
//! synced bytes (which it must detect and refuse to start on), and network partitions.
//! Partitions hold a link's segments and deliver them when it heals, as TCP's retransmission
//! would; turmoil's dropping partitions would wedge its TCP streams, which have no retransmit.
//! A safety phase with faults is followed by a healed liveness phase, in which every send must
//! resolve and every acknowledged record must be read back.
//!
//! Everything observable goes into the trace hash: every log record of every node at info level
//! and above (with its simulated time), every fault, and every client operation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use oxbow_client::{
    Acks, Admin, Client, ClientConfig, Consumer, ConsumerConfig, GroupConfig, GroupConsumer,
    NewTopic, Producer, ProducerConfig, ProducerRecord, SendError, WallClock,
};
use oxbow_core::io::TraceEvent;
use oxbow_core::node::PlantedBugs;
use oxbow_core::time::{Instant, Now};
use oxbow_node::config::{Config, FsyncPolicy, LogConfig, PeerConfig};
use oxbow_node::producer_ids::MemoryStore;
use oxbow_node::runtime::env::{Clock, Environment, Network, WriterMode};
use oxbow_node::runtime::RuntimeError;
use oxbow_node::storage::{is_last_segment, provably_synced, Disk as _, SharedSimDisk, SimDisk};
use slog::{Drain, Logger, KV as _};

use oxbow_jepsen::history::{Delivery, GroupCommit, GroupDelivery, History, Outcome, Poll, SendOp};

use crate::checker::Checker;
use crate::cluster::Stats;
use crate::rng::Stream;

/// The simulated wall clock starts at 2026-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_767_225_600_000;
const KAFKA_PORT: u16 = 9092;
const TICK_MS: u64 = 1;
const PEER_PORT: u16 = 19092;
/// The host the workload's clients run on.
const CLIENT: &str = "client";
/// The topic the workload writes.
pub const TOPIC: &str = "sim";

/// Everything that shapes a world run, derived from its seed.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// The seed.
    pub seed: u64,
    /// Nodes (3 to 5).
    pub nodes: usize,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Replicas per partition.
    pub replication: i16,
    /// Simulated time with faults (ms).
    pub safety_ms: u64,
    /// Simulated time after healing in which everything must resolve (ms).
    pub liveness_ms: u64,
    /// Raft tick (ms), before each node's drift.
    pub tick_ms: u64,
    /// One-way network latency (ms).
    pub latency_ms: (u64, u64),
    /// How long an fsync takes (µs of simulated time).
    pub fsync_us: u64,
    /// Time between crashes (ms), or none.
    pub crash_every_ms: Option<(u64, u64)>,
    /// How long a crashed node stays down (ms).
    pub down_ms: (u64, u64),
    /// Whether a crash may keep a torn prefix of unsynced bytes.
    pub tear: bool,
    /// The crash (counting from 1) whose node also has a synced byte of its disk damaged, or
    /// none. That node must refuse to start, and stays down.
    pub damage_at_crash: Option<u64>,
    /// Time between partitions (ms), or none.
    pub partition_every_ms: Option<(u64, u64)>,
    /// How long a partition lasts (ms).
    pub partition_ms: (u64, u64),
    /// Each node's clock-rate error (parts per million; applied to its ticks and clocks).
    pub drift_ppm: Vec<i64>,
    /// Each node's wall-clock offset (ms).
    pub wall_offset_ms: Vec<i64>,
    /// Time between jumps of some node's wall clock (ms), or none.
    pub jump_every_ms: Option<(u64, u64)>,
    /// The producers.
    pub producers: Vec<Delivery>,
    /// Readers polling every partition during the run.
    pub readers: usize,
    /// Members of the consumer group reading the topic (committing after every poll).
    pub group_members: usize,
    /// Time between crashes of a group member (its task dies without leaving; a new member
    /// takes its place), or none.
    pub member_crash_every_ms: Option<(u64, u64)>,
    /// Pause between one producer's sends (ms).
    pub send_every_ms: (u64, u64),
    /// Distinct keys.
    pub keys: u64,
    /// Bugs planted in every node's core.
    pub planted: PlantedBugs,
    /// Bytes of partition entries a node holds in memory (`log.cache_bytes`); older ones are
    /// read from its disk.
    pub log_cache_bytes: u64,
}

impl WorldOptions {
    /// The options of `seed`.
    pub fn from_seed(seed: u64, safety_ms: u64, planted: PlantedBugs) -> Self {
        let mut shape = Stream::new(seed, "world-shape");
        let nodes = shape.between(3, 5) as usize;
        let mut clocks = Stream::new(seed, "world-clocks");
        let drift_ppm = (0..nodes)
            .map(|_| clocks.between(0, 40_000) as i64 - 20_000)
            .collect();
        let wall_offset_ms = (0..nodes)
            .map(|_| clocks.between(0, 2_000) as i64 - 1_000)
            .collect();
        let jump_every_ms = clocks
            .chance(500_000)
            .then(|| (clocks.between(2_000, 5_000), clocks.between(8_000, 15_000)));
        let mut faults = Stream::new(seed, "world-faults");
        let crash_every_ms = faults
            .chance(800_000)
            .then(|| (faults.between(1_000, 3_000), faults.between(4_000, 8_000)));
        let partition_every_ms = faults
            .chance(800_000)
            .then(|| (faults.between(1_000, 3_000), faults.between(4_000, 8_000)));
        let mut damage = Stream::new(seed, "world-damage");
        let damage_at_crash =
            (crash_every_ms.is_some() && damage.chance(300_000)).then(|| damage.between(1, 3));
        let mut group = Stream::new(seed, "world-group");
        let group_members = group.between(2, 3) as usize;
        let member_crash_every_ms = group
            .chance(600_000)
            .then(|| (group.between(2_000, 5_000), group.between(6_000, 12_000)));
        let mut memory = Stream::new(seed, "world-memory");
        let log_cache_bytes = if memory.chance(500_000) {
            memory.between(4_096, 32_768)
        } else {
            LogConfig::default().cache_bytes
        };
        let mut workload = Stream::new(seed, "world-workload");
        let producers = (0..workload.between(1, 3))
            .map(|_| match workload.below(4) {
                0 => Delivery::AtLeastOnce,
                1 => Delivery::LeaderOnly,
                _ => Delivery::Idempotent,
            })
            .collect();
        Self {
            seed,
            nodes,
            partitions: shape.between(1, 4) as i32,
            replication: nodes.min(3) as i16,
            safety_ms,
            liveness_ms: 30_000,
            tick_ms: 20,
            latency_ms: (1, shape.between(2, 10)),
            fsync_us: shape.between(100, 3_000),
            crash_every_ms,
            down_ms: (500, faults.between(1_000, 5_000)),
            tear: faults.chance(500_000),
            damage_at_crash,
            partition_every_ms,
            partition_ms: (500, faults.between(1_000, 6_000)),
            drift_ppm,
            wall_offset_ms,
            jump_every_ms,
            producers,
            readers: workload.between(1, 2) as usize,
            group_members,
            member_crash_every_ms,
            send_every_ms: (1, workload.between(5, 30)),
            keys: workload.between(1, 20),
            planted,
            log_cache_bytes,
        }
    }
}

impl fmt::Display for WorldOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} (turmoil world)", self.seed)?;
        writeln!(
            f,
            "  cluster: {} nodes, topic {TOPIC:?} with {} partitions x {} replicas, tick {} ms",
            self.nodes, self.partitions, self.replication, self.tick_ms
        )?;
        writeln!(
            f,
            "  phases: {} ms with faults, then {} ms healed",
            self.safety_ms, self.liveness_ms
        )?;
        writeln!(
            f,
            "  network: latency {:?} ms; disk: fsync {} us; log cache {} bytes",
            self.latency_ms, self.fsync_us, self.log_cache_bytes
        )?;
        writeln!(
            f,
            "  faults: crashes every {:?} ms (down {:?} ms, torn tails {}, disk damage at crash {:?}), partitions every {:?} ms (for {:?} ms)",
            self.crash_every_ms,
            self.down_ms,
            self.tear,
            self.damage_at_crash,
            self.partition_every_ms,
            self.partition_ms
        )?;
        writeln!(
            f,
            "  clocks: drift {:?} ppm, wall offsets {:?} ms, wall-clock jumps every {:?} ms",
            self.drift_ppm, self.wall_offset_ms, self.jump_every_ms
        )?;
        write!(
            f,
            "  workload: producers {:?}, {} readers, a group of {} members (crashes every {:?} ms), a send every {:?} ms each, {} keys{}",
            self.producers,
            self.readers,
            self.group_members,
            self.member_crash_every_ms,
            self.send_every_ms,
            self.keys,
            if self.planted == PlantedBugs::default() {
                String::new()
            } else {
                format!("\n  planted bug: {:?}", self.planted)
            }
        )
    }
}

/// A running FNV-1a hash of everything observable, shared by every host.
#[derive(Clone, Debug, Default)]
pub struct Trace(Arc<Mutex<TraceState>>);

#[derive(Debug)]
struct TraceState {
    hash: u64,
    print: bool,
}

impl Default for TraceState {
    fn default() -> Self {
        Self {
            hash: 0xcbf2_9ce4_8422_2325,
            print: false,
        }
    }
}

impl Trace {
    fn new(print: bool) -> Self {
        Self(Arc::new(Mutex::new(TraceState {
            print,
            ..TraceState::default()
        })))
    }

    /// Adds a line (simulated time first) to the hash, and prints it if asked to.
    pub fn line(&self, line: &str) {
        let mut state = self.0.lock().expect("not poisoned");
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            state.hash ^= u64::from(b);
            state.hash = state.hash.wrapping_mul(0x0100_0000_01b3);
        }
        if state.print {
            eprintln!("{line}");
        }
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.0.lock().expect("not poisoned").hash
    }
}

fn sim_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

/// A slog drain that feeds every record at info level and above into the trace. (Lower levels
/// are compiled out of release builds, and the hash must not depend on the build.)
struct TraceDrain {
    trace: Trace,
    host: String,
}

struct LineSerializer<'a>(&'a mut String);

impl slog::Serializer for LineSerializer<'_> {
    fn emit_arguments(&mut self, key: slog::Key, value: &fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl Drain for TraceDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        if !record.level().is_at_least(slog::Level::Info) {
            return Ok(());
        }
        let mut line = format!(
            "{:>7} {} {} {}",
            sim_ms(),
            self.host,
            record.level().as_short_str(),
            record.msg()
        );
        let mut serializer = LineSerializer(&mut line);
        let _ = record.kv().serialize(record, &mut serializer);
        let _ = values.serialize(record, &mut serializer);
        self.trace.line(&line);
        Ok(())
    }
}

/// Turmoil's TCP as the node runtime's network. Turmoil listens only on the unspecified
/// address, so a bind to the host's own address binds its port there.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilNet;

impl Network for TurmoilNet {
    type Listener = turmoil::net::TcpListener;
    type Read = turmoil::net::tcp::OwnedReadHalf;
    type Write = turmoil::net::tcp::OwnedWriteHalf;

    async fn bind(&self, address: SocketAddr) -> io::Result<Self::Listener> {
        let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), address.port());
        turmoil::net::TcpListener::bind(any).await
    }

    async fn accept(
        listener: &Self::Listener,
    ) -> io::Result<(Self::Read, Self::Write, SocketAddr)> {
        let (stream, remote) = listener.accept().await?;
        let (read, write) = stream.into_split();
        Ok((read, write, remote))
    }

    async fn connect(&self, address: SocketAddr) -> io::Result<(Self::Read, Self::Write)> {
        Ok(turmoil::net::TcpStream::connect(address)
            .await?
            .into_split())
    }
}

/// Turmoil's TCP as the client's transport.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilConnector;

impl oxbow_client::transport::Connector for TurmoilConnector {
    fn connect(&self, address: &str) -> oxbow_client::transport::Connecting {
        let address = address.to_string();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(address.as_str()).await?;
            Ok(Box::new(stream) as Box<dyn oxbow_client::transport::Stream>)
        })
    }
}

/// What outlives a node's crashes: its disk and producer-id reservation, and its start count.
#[derive(Clone)]
struct NodeState {
    index: usize,
    config: Config,
    disk: SharedSimDisk,
    producer_ids: MemoryStore,
    starts: Arc<AtomicU64>,
    /// How far the node's wall clock has jumped (ms); the driver moves it.
    wall_jump_ms: Arc<AtomicI64>,
    /// The damage done to the node's disk, once the driver has done it.
    damaged: Arc<Mutex<Option<String>>>,
    /// Starts the node refused because it found the damage.
    refusals: Arc<AtomicU64>,
}

fn node_name(index: usize) -> String {
    format!("n{}", index + 1)
}

/// A world run's numbers.
#[derive(Clone, Debug, Default)]
pub struct WorldStats {
    /// Simulated milliseconds run.
    pub simulated_ms: u64,
    /// Sends invoked.
    pub sent: u64,
    /// Sends acknowledged.
    pub acknowledged: u64,
    /// Sends that definitely failed.
    pub failed: u64,
    /// Sends whose outcome is unknown.
    pub indeterminate: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Nodes whose disk was damaged (each refused to start from then on).
    pub damaged: u64,
    /// Leaders elected (in any partition, the metadata group and the offsets topic's included),
    /// as the cluster checker saw them.
    pub elections: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Wall-clock jumps injected.
    pub clock_jumps: u64,
    /// Records read back.
    pub records_read: u64,
    /// Acknowledged acks=1 writes that were lost (allowed: the leader failed before replicating).
    pub lost_leader_only: u64,
    /// Records the consumer group's members read (rereads after rebalances included).
    pub group_deliveries: u64,
    /// Offset commits the group's members had acknowledged.
    pub group_commits: u64,
}

/// What a world run found.
#[derive(Debug)]
pub struct WorldReport {
    /// The options.
    pub options: WorldOptions,
    /// The trace hash.
    pub trace_hash: u64,
    /// Anomalies and failures; empty when the run passed.
    pub violations: Vec<String>,
    /// Numbers.
    pub stats: WorldStats,
}

fn node_configs(options: &WorldOptions, addresses: &[IpAddr]) -> Vec<Config> {
    (0..options.nodes)
        .map(|i| {
            let drift = options.drift_ppm[i];
            // A fast clock ticks more often: the tick interval shrinks with the drift.
            let tick_ms = ((options.tick_ms as i64 * 1_000_000) / (1_000_000 + drift)).max(1);
            let config = Config {
                node_id: i as u64 + 1,
                data_dir: PathBuf::from(format!("/sim/{}", node_name(i))),
                kafka_listen: SocketAddr::new(addresses[i], KAFKA_PORT),
                kafka_advertised: None,
                peer_listen: SocketAddr::new(addresses[i], PEER_PORT),
                peers: (0..options.nodes)
                    .filter(|j| *j != i)
                    .map(|j| PeerConfig {
                        id: j as u64 + 1,
                        peer_address: SocketAddr::new(addresses[j], PEER_PORT),
                        kafka_address: SocketAddr::new(addresses[j], KAFKA_PORT),
                    })
                    .collect(),
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
                log: LogConfig {
                    cache_bytes: options.log_cache_bytes,
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

fn add_node(
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

/// Ends a partition: held links deliver what they held; one-way cuts are repaired.
fn heal(sim: &mut turmoil::Sim<'_>, names: &[String], held: &mut Vec<(usize, usize, bool)>) {
    for (a, b, oneway) in held.drain(..) {
        if oneway {
            sim.repair_oneway(names[a].as_str(), names[b].as_str());
        } else {
            sim.release(names[a].as_str(), names[b].as_str());
        }
    }
}

/// What a run prints to standard error as it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Nothing.
    Quiet,
    /// A line every 10 simulated seconds.
    Progress,
    /// Every trace line (and the progress).
    Trace,
}

/// Runs one world.
pub fn run_world(options: WorldOptions, output: Output) -> WorldReport {
    let trace = Trace::new(output == Output::Trace);
    let mut sim = turmoil::Builder::new()
        .rng_seed(options.seed)
        .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS as u64))
        .tick_duration(Duration::from_millis(TICK_MS))
        .simulation_duration(Duration::from_millis(
            options.safety_ms + options.liveness_ms + 60_000,
        ))
        .min_message_latency(Duration::from_millis(options.latency_ms.0))
        .max_message_latency(Duration::from_millis(options.latency_ms.1))
        .tcp_capacity(1 << 20)
        .build();
    let names: Vec<String> = (0..options.nodes).map(node_name).collect();
    let addresses: Vec<IpAddr> = names.iter().map(|n| sim.lookup(n.as_str())).collect();
    let configs = node_configs(&options, &addresses);
    let states: Vec<NodeState> = configs
        .into_iter()
        .enumerate()
        .map(|(index, config)| NodeState {
            index,
            config,
            disk: SharedSimDisk::new(),
            producer_ids: MemoryStore::default(),
            starts: Arc::new(AtomicU64::new(0)),
            wall_jump_ms: Arc::new(AtomicI64::new(0)),
            damaged: Arc::new(Mutex::new(None)),
            refusals: Arc::new(AtomicU64::new(0)),
        })
        .collect();
    let cluster = Arc::new(Mutex::new((Checker::default(), Stats::default())));
    for state in &states {
        add_node(&mut sim, state.clone(), &options, &trace, &cluster);
    }
    let history = Arc::new(Mutex::new(History::default()));
    let bootstrap = addresses
        .iter()
        .map(|a| SocketAddr::new(*a, KAFKA_PORT).to_string())
        .collect::<Vec<_>>()
        .join(",");
    {
        let options = options.clone();
        let history = history.clone();
        let trace = trace.clone();
        sim.client(CLIENT, async move {
            workload(options, bootstrap, history, trace)
                .await
                .map_err(Into::into)
        });
    }

    let mut stats = WorldStats::default();
    let mut violations = Vec::new();
    let mut faults = Stream::new(options.seed, "world-fault-schedule");
    let mut tear_rng = Stream::new(options.seed, "world-tears");
    let mut next_crash = options.crash_every_ms.map(|(a, b)| faults.between(a, b));
    let mut next_partition = options
        .partition_every_ms
        .map(|(a, b)| faults.between(a, b));
    let mut jumps = Stream::new(options.seed, "world-clock-jumps");
    let mut next_jump = options.jump_every_ms.map(|(a, b)| jumps.between(a, b));
    let mut down: BTreeMap<usize, u64> = BTreeMap::new();
    // Nodes whose disk the driver damaged: down for good.
    let mut failed: BTreeSet<usize> = BTreeSet::new();
    let mut damage_rng = Stream::new(options.seed, "world-damage-where");
    // Links cut by the current partition: (from, to, one way only).
    let mut held: Vec<(usize, usize, bool)> = Vec::new();
    let mut one_way = Stream::new(options.seed, "world-one-way");
    let mut client_cut = Stream::new(options.seed, "world-client-partitions");
    // The hosts a partition can cut, by index: the nodes, then the client.
    let hosts: Vec<String> = names.iter().cloned().chain([CLIENT.to_string()]).collect();
    let client = options.nodes;
    let mut heal_partition_at = 0u64;
    let mut healed = false;
    let end = options.safety_ms + options.liveness_ms;
    loop {
        let done = match sim.step() {
            Ok(done) => done,
            Err(e) => {
                violations.push(format!("the simulation failed: {e}"));
                break;
            }
        };
        let now = sim.elapsed().as_millis() as u64;
        if output != Output::Quiet && now.is_multiple_of(10_000) {
            eprintln!(
                "progress: {now} of at most {} simulated ms ({} sends so far)",
                options.safety_ms + options.liveness_ms,
                history.lock().expect("not poisoned").sends.len()
            );
        }
        if done {
            break;
        }
        if now >= end {
            violations.push(format!(
                "liveness: the workload did not finish within {} ms of healing",
                options.liveness_ms
            ));
            break;
        }
        // Restarts and partition ends that are due.
        let due: Vec<usize> = down
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            down.remove(&i);
            trace.line(&format!("{now:>7} driver restart {}", names[i]));
            sim.bounce(names[i].as_str());
        }
        if !held.is_empty() && heal_partition_at <= now {
            heal(&mut sim, &hosts, &mut held);
            trace.line(&format!("{now:>7} driver heal partition"));
        }
        if now >= options.safety_ms {
            if !healed {
                healed = true;
                heal(&mut sim, &hosts, &mut held);
                for (i, _) in std::mem::take(&mut down) {
                    sim.bounce(names[i].as_str());
                }
                trace.line(&format!("{now:>7} driver heal everything"));
            }
            continue;
        }
        if next_crash.is_some_and(|at| at <= now) {
            let (a, b) = options.crash_every_ms.expect("scheduled");
            next_crash = Some(now + faults.between(a, b));
            // Keep a majority up, so the cluster can make progress.
            let out: BTreeSet<usize> = down.keys().chain(&failed).copied().collect();
            if out.len() < (options.nodes - 1) / 2 {
                let up: Vec<usize> = (0..options.nodes).filter(|i| !out.contains(i)).collect();
                let victim = up[faults.below(up.len() as u64) as usize];
                sim.crash(names[victim].as_str());
                let lost = states[victim]
                    .disk
                    .with(|d| d.crash(tear_rng.rng(), options.tear));
                let back = now + faults.between(options.down_ms.0, options.down_ms.1);
                down.insert(victim, back);
                stats.crashes += 1;
                trace.line(&format!(
                    "{now:>7} driver crash {} (lost {lost} unsynced bytes), back at {back}",
                    names[victim]
                ));
                if options
                    .damage_at_crash
                    .is_some_and(|k| stats.crashes >= k && failed.is_empty())
                {
                    let damage = states[victim]
                        .disk
                        .with(|d| damage_synced_byte(d, &mut damage_rng));
                    if let Some(damage) = damage {
                        trace.line(&format!(
                            "{now:>7} driver damages {}'s disk: {damage}",
                            names[victim]
                        ));
                        *states[victim].damaged.lock().expect("not poisoned") = Some(damage);
                        failed.insert(victim);
                        stats.damaged += 1;
                    }
                }
            }
        }
        if next_jump.is_some_and(|at| at <= now) {
            let (a, b) = options.jump_every_ms.expect("scheduled");
            next_jump = Some(now + jumps.between(a, b));
            let node = jumps.below(options.nodes as u64) as usize;
            // Up to ten minutes either way, as NTP stepping a bad clock might.
            let by = jumps.between(0, 1_200_000) as i64 - 600_000;
            states[node].wall_jump_ms.fetch_add(by, Ordering::SeqCst);
            stats.clock_jumps += 1;
            trace.line(&format!(
                "{now:>7} driver wall clock of {} jumps by {by} ms",
                names[node]
            ));
        }
        if next_partition.is_some_and(|at| at <= now) {
            let (a, b) = options.partition_every_ms.expect("scheduled");
            next_partition = Some(now + faults.between(a, b));
            if held.is_empty() {
                // One node alone, or a minority against a majority.
                let mut order: Vec<usize> = (0..options.nodes).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, faults.below(i as u64 + 1) as usize);
                }
                let minority = if faults.chance(500_000) {
                    1
                } else {
                    1 + faults.below(((options.nodes - 1) / 2) as u64) as usize
                };
                let (side, rest) = order.split_at(minority);
                // A third of the partitions are one way: the side's messages to the rest are
                // lost (turmoil drops them mid-stream), while the rest still reach the side.
                let oneway = one_way.chance(333_333);
                // A third of the two-way partitions also cut the client off with the minority:
                // it reaches only nodes that may have lost their leadership, as a client in the
                // wrong data centre does.
                let with_client = !oneway && client_cut.chance(333_333);
                if with_client {
                    for y in rest {
                        sim.hold(CLIENT, names[*y].as_str());
                        held.push((client, *y, false));
                    }
                }
                for x in side {
                    for y in rest {
                        if oneway {
                            sim.partition_oneway(names[*x].as_str(), names[*y].as_str());
                        } else {
                            sim.hold(names[*x].as_str(), names[*y].as_str());
                        }
                        held.push((*x, *y, oneway));
                    }
                }
                heal_partition_at =
                    now + faults.between(options.partition_ms.0, options.partition_ms.1);
                stats.partitions += 1;
                let side: Vec<&str> = side.iter().map(|i| names[*i].as_str()).collect();
                trace.line(&format!(
                    "{now:>7} driver partition {side:?}{} from the rest{} until {heal_partition_at}",
                    if with_client { " and the client" } else { "" },
                    if oneway { " (one way)" } else { "" }
                ));
            }
        }
    }
    stats.simulated_ms = sim.elapsed().as_millis() as u64;
    drop(sim);
    {
        let (checker, cluster_stats) = &mut *cluster.lock().expect("not poisoned");
        checker.finish();
        violations.append(&mut checker.violations);
        stats.elections = cluster_stats.elections;
    }
    for i in &failed {
        if states[*i].refusals.load(Ordering::SeqCst) == 0 {
            violations.push(format!(
                "{}'s disk was damaged, but it never refused to start",
                names[*i]
            ));
        }
    }
    let history = std::mem::take(&mut *history.lock().expect("not poisoned"));
    stats.group_deliveries = history.group.deliveries.len() as u64;
    stats.group_commits = history.group.commits.len() as u64;
    let verdict = oxbow_jepsen::checker::check(&history);
    stats.sent = verdict.sent;
    stats.acknowledged = verdict.acknowledged;
    stats.failed = verdict.failed;
    stats.indeterminate = verdict.indeterminate;
    stats.records_read = verdict.records_read;
    stats.lost_leader_only = verdict.lost_leader_only;
    violations.extend(verdict.lines());
    WorldReport {
        trace_hash: trace.hash(),
        options,
        violations,
        stats,
    }
}

/// Flips one byte the node's recovery can prove was synced (the storage's own
/// `provably_synced`). Returns what was done, or `None` if no byte is provably synced yet.
fn damage_synced_byte(disk: &mut SimDisk, rng: &mut Stream) -> Option<String> {
    let names = disk.list().expect("a simulated disk lists");
    let mut candidates = Vec::new();
    for name in &names {
        let bytes = disk.read(name).expect("a listed file reads");
        let below = provably_synced(&bytes, 0, is_last_segment(&names, name));
        if below > 0 {
            candidates.push((name.clone(), below));
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (name, below) = &candidates[rng.below(candidates.len() as u64) as usize];
    let position = rng.below(*below) as usize;
    assert!(disk.corrupt(name, position), "the byte exists");
    Some(format!("byte {position} of {name} flipped"))
}

fn client_config(bootstrap: String) -> ClientConfig {
    let mut config = ClientConfig::new(&bootstrap);
    config.connector = Arc::new(TurmoilConnector);
    config.request_timeout = Duration::from_secs(5);
    config.wall_clock = WallClock::from_fn(|| EPOCH_MS + sim_ms() as i64);
    config
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The client host: creates the topic, runs the producers through the safety phase, waits for
/// every send to resolve, then reads every partition back.
async fn workload(
    options: WorldOptions,
    bootstrap: String,
    history: Arc<Mutex<History>>,
    trace: Trace,
) -> Result<(), String> {
    let client = Client::new(client_config(bootstrap.clone())).map_err(|e| e.to_string())?;
    let admin = Admin::new(client.clone());
    loop {
        let topic = NewTopic::new(TOPIC, options.partitions, options.replication);
        match admin.create_topics(&[topic]).await {
            Ok(answers) => match &answers[0] {
                Ok(()) => break,
                Err(oxbow_client::Error::Broker { code, .. })
                    if *code == oxbow_client::error::codes::TOPIC_ALREADY_EXISTS =>
                {
                    break
                }
                Err(e) => trace.line(&format!("{:>7} client create topic: {e}", sim_ms())),
            },
            Err(e) => trace.line(&format!("{:>7} client create topic: {e}", sim_ms())),
        }
        sleep_ms(200).await;
    }
    trace.line(&format!("{:>7} client topic created", sim_ms()));
    let stop_readers = Arc::new(AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..options.readers {
        readers.spawn(read_during_run(
            reader,
            options.clone(),
            bootstrap.clone(),
            history.clone(),
            trace.clone(),
            stop_readers.clone(),
        ));
    }
    let stop_group = Arc::new(AtomicBool::new(false));
    let group = tokio::spawn(run_group(
        options.clone(),
        bootstrap.clone(),
        history.clone(),
        trace.clone(),
        stop_group.clone(),
    ));
    let mut producers = tokio::task::JoinSet::new();
    for (index, kind) in options.producers.iter().enumerate() {
        producers.spawn(produce(
            index,
            *kind,
            options.clone(),
            client.clone(),
            history.clone(),
            trace.clone(),
        ));
    }
    while let Some(result) = producers.join_next().await {
        result.map_err(|e| format!("a producer task failed: {e}"))??;
    }
    stop_readers.store(true, Ordering::SeqCst);
    while let Some(result) = readers.join_next().await {
        result.map_err(|e| format!("a reader task failed: {e}"))?;
    }
    // Every send has resolved; the cluster is healed. Read everything back.
    while sim_ms() < options.safety_ms {
        sleep_ms(100).await;
    }
    let acknowledged: BTreeMap<i32, i64> = {
        let history = history.lock().expect("not poisoned");
        let mut highest = BTreeMap::new();
        // acks=1 writes may be lost, offsets and all: only acks=all ones must be read.
        for send in history.sends.values() {
            if send.kind == Delivery::LeaderOnly {
                continue;
            }
            if let Outcome::Ok { partition, offset } = send.outcome {
                let entry = highest.entry(partition).or_insert(-1);
                *entry = (*entry).max(offset);
            }
        }
        highest
    };
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    let partitions: Vec<(&str, i32)> = (0..options.partitions).map(|p| (TOPIC, p)).collect();
    consumer.assign(&partitions);
    let mut quiet_since = sim_ms();
    loop {
        let records = match consumer.poll(Duration::from_millis(500)).await {
            Ok(records) => records,
            Err(e) => {
                trace.line(&format!("{:>7} client poll: {e}", sim_ms()));
                sleep_ms(100).await;
                continue;
            }
        };
        if !records.is_empty() {
            quiet_since = sim_ms();
        }
        {
            let mut history = history.lock().expect("not poisoned");
            for record in &records {
                let value = value_of(record);
                trace.line(&format!(
                    "{:>7} client read {}@{} = {value}",
                    sim_ms(),
                    record.partition,
                    record.offset
                ));
                history
                    .reads
                    .entry(record.partition)
                    .or_default()
                    .push((record.offset, value));
            }
        }
        let caught_up = acknowledged.iter().all(|(p, highest)| {
            consumer
                .position(TOPIC, *p)
                .is_some_and(|position| position > *highest)
        });
        // Caught up with every acknowledged write, and nothing new for a while: done.
        if caught_up && sim_ms() - quiet_since >= 2_000 {
            break;
        }
    }
    history.lock().expect("not poisoned").finished = true;
    trace.line(&format!("{:>7} client final read done", sim_ms()));
    // The group must read every acknowledged write too (it may be slower: rebalances).
    loop {
        let caught_up = {
            let history = history.lock().expect("not poisoned");
            let delivered: BTreeSet<u64> =
                history.group.deliveries.iter().map(|d| d.value).collect();
            history.sends.values().all(|s| {
                s.kind == Delivery::LeaderOnly
                    || !matches!(s.outcome, Outcome::Ok { .. })
                    || delivered.contains(&s.value)
            })
        };
        if caught_up {
            break;
        }
        sleep_ms(200).await;
    }
    stop_group.store(true, Ordering::SeqCst);
    group
        .await
        .map_err(|e| format!("the group task failed: {e}"))?;
    history.lock().expect("not poisoned").group.finished = true;
    trace.line(&format!("{:>7} client done", sim_ms()));
    Ok(())
}

/// The consumer group: its members, and (when the options say so) crashes of members, each
/// replaced by a new one.
async fn run_group(
    options: WorldOptions,
    bootstrap: String,
    history: Arc<Mutex<History>>,
    trace: Trace,
    stop: Arc<AtomicBool>,
) {
    history.lock().expect("not poisoned").group.ran = true;
    let mut crashes = Stream::new(options.seed, "world-group-crashes");
    let start = |member: usize| {
        tokio::spawn(group_member(
            member,
            bootstrap.clone(),
            history.clone(),
            trace.clone(),
        ))
    };
    let mut members: Vec<(usize, tokio::task::JoinHandle<()>)> =
        (0..options.group_members).map(|m| (m, start(m))).collect();
    let mut next_member = options.group_members;
    let mut next_crash = options
        .member_crash_every_ms
        .map(|(low, high)| sim_ms() + crashes.between(low, high));
    while !stop.load(Ordering::SeqCst) {
        sleep_ms(100).await;
        let Some(at) = next_crash else { continue };
        if sim_ms() < at || sim_ms() >= options.safety_ms {
            continue;
        }
        let (victim, task) = members.remove(crashes.below(members.len() as u64) as usize);
        task.abort();
        trace.line(&format!("{:>7} client member m{victim} crashed", sim_ms()));
        members.push((next_member, start(next_member)));
        next_member += 1;
        let (low, high) = options.member_crash_every_ms.expect("crashes scheduled");
        next_crash = Some(sim_ms() + crashes.between(low, high));
    }
    for (_, task) in members {
        task.abort();
    }
}

/// One member of the consumer group: polls, records what it read with its generation,
/// commits after every poll that read something, and records what was committed.
async fn group_member(
    member: usize,
    bootstrap: String,
    history: Arc<Mutex<History>>,
    trace: Trace,
) {
    let Ok(client) = Client::new(client_config(bootstrap)) else {
        return;
    };
    let mut config = GroupConfig::new("sim-group");
    config.session_timeout_ms = 6_000;
    config.rebalance_timeout_ms = 10_000;
    config.heartbeat_interval = Duration::from_millis(500);
    let mut consumer = GroupConsumer::new(client, config, &[TOPIC]);
    let mut last_generation = None;
    loop {
        let records = match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => records,
            Err(e) => {
                trace.line(&format!("{:>7} client m{member} poll: {e}", sim_ms()));
                sleep_ms(100).await;
                continue;
            }
        };
        let generation = consumer.generation();
        if generation != last_generation {
            trace.line(&format!(
                "{:>7} client m{member} generation {generation:?} assignment {:?}",
                sim_ms(),
                consumer.assignment()
            ));
            last_generation = generation;
        }
        let Some(generation) = generation.filter(|_| !records.is_empty()) else {
            continue;
        };
        history
            .lock()
            .expect("not poisoned")
            .group
            .deliveries
            .extend(records.iter().map(|r| GroupDelivery {
                member,
                generation,
                partition: r.partition,
                offset: r.offset,
                value: value_of(r),
            }));
        match consumer.commit().await {
            Ok(committed) => {
                let at_ms = sim_ms();
                history.lock().expect("not poisoned").group.commits.extend(
                    committed
                        .into_iter()
                        .map(|(_, partition, offset)| GroupCommit {
                            member,
                            generation,
                            partition,
                            offset,
                            at_ms,
                        }),
                );
            }
            Err(e) => trace.line(&format!("{:>7} client m{member} commit: {e}", sim_ms())),
        }
    }
}

fn value_of(record: &oxbow_client::ConsumerRecord) -> u64 {
    record
        .value
        .as_ref()
        .and_then(|v| v.get(..8))
        .map_or(u64::MAX, |v| {
            u64::from_be_bytes(v.try_into().expect("8 bytes"))
        })
}

/// A reader polling every partition from the start while the producers run and faults hit.
async fn read_during_run(
    reader: usize,
    options: WorldOptions,
    bootstrap: String,
    history: Arc<Mutex<History>>,
    trace: Trace,
    stop: Arc<AtomicBool>,
) {
    let Ok(client) = Client::new(client_config(bootstrap)) else {
        return;
    };
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    let partitions: Vec<(&str, i32)> = (0..options.partitions).map(|p| (TOPIC, p)).collect();
    consumer.assign(&partitions);
    while !stop.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) if !records.is_empty() => {
                let records: Vec<(i32, i64, u64)> = records
                    .iter()
                    .map(|r| (r.partition, r.offset, value_of(r)))
                    .collect();
                let at_ms = sim_ms();
                trace.line(&format!(
                    "{at_ms:>7} client r{reader} polled {} records, first {:?}",
                    records.len(),
                    records.first()
                ));
                history.lock().expect("not poisoned").polls.push(Poll {
                    reader,
                    at_ms,
                    records,
                });
            }
            Ok(_) => {}
            Err(e) => {
                trace.line(&format!("{:>7} client r{reader} poll: {e}", sim_ms()));
                sleep_ms(100).await;
            }
        }
    }
}

async fn produce(
    index: usize,
    kind: Delivery,
    options: WorldOptions,
    client: Client,
    history: Arc<Mutex<History>>,
    trace: Trace,
) -> Result<(), String> {
    let config = ProducerConfig {
        acks: if kind == Delivery::LeaderOnly {
            Acks::Leader
        } else {
            Acks::All
        },
        idempotent: kind == Delivery::Idempotent,
        linger: Duration::from_millis(2),
        delivery_timeout: Duration::from_secs(20),
        request_timeout_ms: 5_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config).map_err(|e| e.to_string())?;
    let mut rng = Stream::new(options.seed, &format!("world-producer-{index}"));
    let mut deliveries = tokio::task::JoinSet::new();
    let mut sequence = 0u64;
    while sim_ms() < options.safety_ms {
        let value = ((index as u64) << 40) | sequence;
        sequence += 1;
        let key = rng.below(options.keys);
        let invoked_ms = sim_ms();
        history.lock().expect("not poisoned").sends.insert(
            value,
            SendOp {
                producer: index,
                kind,
                key,
                value,
                invoked_ms,
                outcome: Outcome::Pending,
                completed_ms: 0,
            },
        );
        trace.line(&format!(
            "{invoked_ms:>7} client p{index} send {value} key {key}"
        ));
        let mut payload = value.to_be_bytes().to_vec();
        payload.extend_from_slice(&[b'x'; 24]);
        let record = ProducerRecord {
            topic: TOPIC.into(),
            partition: None,
            key: Some(Bytes::from(format!("key-{key}"))),
            value: Some(Bytes::from(payload)),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        let queued = producer.send(record).await;
        let history = history.clone();
        let trace = trace.clone();
        deliveries.spawn(async move {
            let outcome = match queued {
                Err(e) => Outcome::Fail(e.to_string()),
                Ok(delivery) => match delivery.await {
                    Ok(delivered) => Outcome::Ok {
                        partition: delivered.partition,
                        offset: delivered.offset,
                    },
                    Err(SendError::NotWritten(e)) => Outcome::Fail(e.to_string()),
                    Err(SendError::MaybeWritten(e)) => Outcome::Info(e.to_string()),
                },
            };
            let now = sim_ms();
            trace.line(&format!("{now:>7} client p{index} {value} -> {outcome:?}"));
            let mut history = history.lock().expect("not poisoned");
            let send = history.sends.get_mut(&value).expect("invoked");
            send.outcome = outcome;
            send.completed_ms = now;
        });
        sleep_ms(rng.between(options.send_every_ms.0, options.send_every_ms.1)).await;
    }
    producer.flush().await;
    while let Some(result) = deliveries.join_next().await {
        result.map_err(|e| format!("a delivery task failed: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_from_the_seed() {
        let a = WorldOptions::from_seed(7, 10_000, PlantedBugs::default());
        let b = WorldOptions::from_seed(7, 10_000, PlantedBugs::default());
        assert_eq!(a.to_string(), b.to_string());
        assert!((3..=5).contains(&a.nodes));
    }
}
