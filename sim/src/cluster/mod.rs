//! A discrete-event simulation of a cluster of cores: the nodes' `Node`s over simulated disks
//! (the real segment log on `SimDisk`) and a simulated network, driven by one event queue in
//! simulated time. Everything random comes from named streams of the seed, so a seed replays
//! exactly.
//!
//! This file holds the cluster's state and builds it; its children each do one job:
//! `events` (the event loop, the clocks and the network), `faults` (starting, crashing and
//! partitioning nodes), `clients` (the producing clients and the readers), `admin` (the admin
//! workload) and `verify` (convergence and the final read-back).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use oxbow_core::ids::{GroupId, IoSeq, Offset, RaftIndex, RequestId};
use oxbow_core::io::GroupMessage;
use oxbow_core::node::Node;
use oxbow_core::raft::eraftpb::Entry;
use oxbow_node::storage::{SegmentLog, SimDisk};

use crate::checker::Checker;
use crate::options::{ClientKind, Options};
use crate::rng::Stream;

mod admin;
mod clients;
mod events;
mod faults;
mod verify;

const EPOCH_MS: i64 = 1_700_000_000_000;
const REQUEST_TIMEOUT_MS: u32 = 2_000;

#[derive(Debug)]
enum Event {
    Tick {
        node: usize,
        incarnation: u64,
    },
    Deliver {
        to: usize,
        from: usize,
        messages: Vec<GroupMessage>,
    },
    WriteDone {
        node: usize,
        incarnation: u64,
        seq: IoSeq,
        sync: bool,
    },
    EntriesRead {
        node: usize,
        incarnation: u64,
        group: GroupId,
        low: RaftIndex,
        entries: Vec<Entry>,
    },
    ClientSend {
        client: usize,
    },
    Admin,
    Read {
        group: GroupId,
    },
    Crash,
    Restart {
        node: usize,
    },
    Partition,
    Heal,
    Liveness,
}

struct Running {
    node: Node,
    log: SegmentLog<SimDisk>,
    disk_free_at: u64,
}

struct Slot {
    incarnation: u64,
    running: Option<Running>,
    disk: Option<SimDisk>,
    drift_ppm: i64,
    mono_offset_us: u64,
    wall_offset_ms: i64,
}

struct InFlight {
    request: RequestId,
    node: usize,
    value: String,
    crc: u32,
}

struct Client {
    kind: ClientKind,
    group: GroupId,
    producer_id: i64,
    sequence: i32,
    counter: u64,
    in_flight: Option<InFlight>,
    leader_guess: usize,
    /// The batch an idempotent client keeps retrying until it is acknowledged.
    retry: Option<(Bytes, String, u32)>,
}

/// The admin workload: create the topic the clients write to (its partitions are groups
/// 1..=groups, the first the metadata numbers), then create and delete a scratch topic, each
/// step retried until its outcome is known.
struct AdminScript {
    step: usize,
    in_flight: Option<(RequestId, usize)>,
    guess: usize,
}

/// The scratch topic's partitions.
const SCRATCH_PARTITIONS: u32 = 2;

/// What a run found.
#[derive(Debug)]
pub struct Report {
    /// The options the run used.
    pub options: Options,
    /// Rolling hash of every event: equal hashes mean identical runs.
    pub trace_hash: u64,
    /// Everything the checker found wrong; empty when the run passed.
    pub violations: Vec<String>,
    /// Counters for people.
    pub stats: Stats,
}

/// Counters of a run.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Events processed.
    pub events: u64,
    /// Produce requests sent.
    pub produced: u64,
    /// Produce requests acknowledged.
    pub acknowledged: u64,
    /// Crashes.
    pub crashes: u64,
    /// Bytes lost by crashes (unsynced).
    pub bytes_lost: u64,
    /// Recoveries that cut a torn or corrupt tail.
    pub tails_cut: u64,
    /// Snapshots installed by followers.
    pub snapshots_installed: u64,
    /// Leaders elected.
    pub elections: u64,
    /// Records read back at the end.
    pub records_verified: u64,
    /// Records the readers read during the run.
    pub records_read: u64,
    /// Reads of entries evicted from memory: for followers behind, and old fetches.
    pub disk_reads: u64,
    /// Ticks of partition replicas that were quiet (not ticked: `core/src/partition/quiesce.rs`),
    /// summed over every node's ticks.
    pub quiet_ticks: u64,
}

/// The simulated cluster.
pub struct Cluster {
    options: Options,
    now_us: u64,
    event_seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    slots: Vec<Slot>,
    clients: Vec<Client>,
    requests: BTreeMap<RequestId, usize>,
    next_request: u64,
    blocked: BTreeSet<(usize, usize)>,
    liveness: bool,
    net: Stream,
    disk: Stream,
    faults: Stream,
    workload: Stream,
    checker: Checker,
    stats: Stats,
    logger: slog::Logger,
    hash: u64,
    /// Groups that had an acks=all produce acknowledged after healing.
    live_acks: BTreeSet<GroupId>,
    admin: AdminScript,
    admin_rng: Stream,
    /// Per group, a reader's next offset and the node it asks.
    readers: BTreeMap<GroupId, (Offset, usize)>,
    /// Reads waiting for an answer: request to (group, node asked).
    reads: BTreeMap<RequestId, (GroupId, usize)>,
    read_rng: Stream,
}

impl Cluster {
    /// Builds the cluster of `options`, every node fresh.
    pub fn new(options: Options) -> Self {
        let mut clocks = Stream::new(options.seed, "clocks");
        let slots = (0..options.nodes)
            .map(|_| {
                let drift = clocks.below(2 * options.drift_ppm_max + 1) as i64
                    - options.drift_ppm_max as i64;
                Slot {
                    incarnation: 0,
                    running: None,
                    disk: Some(SimDisk::new()),
                    drift_ppm: drift,
                    mono_offset_us: clocks.below(1_000_000_000),
                    wall_offset_ms: clocks.below(10_000) as i64 - 5_000,
                }
            })
            .collect();
        let mut workload = Stream::new(options.seed, "workload");
        let clients = options
            .clients
            .iter()
            .enumerate()
            .map(|(i, kind)| Client {
                kind: *kind,
                group: GroupId(1 + i as u64 % options.groups),
                producer_id: 1000 + i as i64,
                sequence: 0,
                counter: 0,
                in_flight: None,
                leader_guess: workload.below(options.nodes as u64) as usize,
                retry: None,
            })
            .collect();
        let mut cluster = Self {
            net: Stream::new(options.seed, "network"),
            disk: Stream::new(options.seed, "disk"),
            faults: Stream::new(options.seed, "faults"),
            workload,
            checker: Checker::default(),
            stats: Stats::default(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            now_us: 0,
            event_seq: 0,
            events: BTreeMap::new(),
            slots,
            clients,
            requests: BTreeMap::new(),
            next_request: 0,
            blocked: BTreeSet::new(),
            liveness: false,
            hash: 0xcbf2_9ce4_8422_2325,
            live_acks: BTreeSet::new(),
            admin: AdminScript {
                step: 0,
                in_flight: None,
                guess: 0,
            },
            admin_rng: Stream::new(options.seed, "admin"),
            readers: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_rng: Stream::new(options.seed, "reads"),
            options,
        };
        for g in 1..=cluster.options.groups {
            let group = GroupId(g);
            cluster.readers.insert(group, (Offset(0), 0));
            let at = cluster.read_rng.between(1_000, 50_000);
            cluster.schedule(at, Event::Read { group });
        }
        let at = cluster.admin_rng.between(1_000, 50_000);
        cluster.schedule(at, Event::Admin);
        for node in 0..cluster.options.nodes {
            cluster.start(node);
        }
        for client in 0..cluster.clients.len() {
            let at = cluster.workload.between(1_000, 50_000);
            cluster.schedule(at, Event::ClientSend { client });
        }
        if let Some((low, high)) = cluster.options.crash_every_ms {
            let at = cluster.faults.between(low, high) * 1_000;
            cluster.schedule(at, Event::Crash);
        }
        if let Some((low, high)) = cluster.options.partition_every_ms {
            let at = cluster.faults.between(low, high) * 1_000;
            cluster.schedule(at, Event::Partition);
        }
        cluster.schedule(cluster.options.safety_ms * 1_000, Event::Liveness);
        cluster
    }
}

/// Runs one seed.
pub fn run(options: Options) -> Report {
    Cluster::new(options).run()
}
