//! A run's options, all derived from its seed and printed at the start, so a seed alone
//! reproduces a run and a reader can see what the run did.

use std::fmt;

use oxbow_core::node::PlantedBugs;

use crate::rng::Stream;

/// What kind of producer a client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// Non-idempotent, acks=all; never retries a value (a failure moves on to a new one).
    PlainAll,
    /// Non-idempotent, acks=1.
    PlainLeader,
    /// Idempotent, acks=all; retries the same batch (same sequence) until it is acknowledged.
    Idempotent,
}

/// Everything that shapes a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The seed everything below came from.
    pub seed: u64,
    /// Nodes in the cluster (all vote in every group).
    pub nodes: usize,
    /// Raft groups (partitions).
    pub groups: u64,
    /// Simulated time with faults, then simulated time healed.
    pub safety_ms: u64,
    /// Simulated time after healing in which everything must converge.
    pub liveness_ms: u64,
    /// Raft tick interval.
    pub tick_ms: u64,
    /// One-way network latency range (µs).
    pub latency_us: (u64, u64),
    /// Chance that a packet is dropped, per million.
    pub drop_per_million: u64,
    /// Chance that a packet is delivered twice, per million.
    pub duplicate_per_million: u64,
    /// Disk write latency range (µs); writes complete in order.
    pub disk_latency_us: (u64, u64),
    /// Time between crashes (ms), or none.
    pub crash_every_ms: Option<(u64, u64)>,
    /// How long a crashed node stays down (ms).
    pub down_ms: (u64, u64),
    /// Whether a crash may keep a torn prefix of unsynced bytes.
    pub tear: bool,
    /// Time between partitions (ms), or none.
    pub partition_every_ms: Option<(u64, u64)>,
    /// How long a partition lasts (ms).
    pub partition_ms: (u64, u64),
    /// Largest clock-rate error of a node, parts per million (either way).
    pub drift_ppm_max: u64,
    /// Applied entries kept before compaction into a snapshot.
    pub retain_entries_max: u64,
    /// Bytes of partition entries a node holds in memory; the rest is read from its disk.
    pub log_cache_bytes: u64,
    /// Producer clients.
    pub clients: Vec<ClientKind>,
    /// Pause between a client's requests (ms).
    pub produce_pause_ms: (u64, u64),
    /// Planted bugs.
    pub planted: PlantedBugs,
}

impl Options {
    /// The options of `seed`, with a safety phase of `safety_ms`.
    pub fn from_seed(seed: u64, safety_ms: u64, planted: PlantedBugs) -> Self {
        let mut r = Stream::new(seed, "options");
        let latency_max = r.between(500, 15_000);
        let disk_max = r.between(100, 4_000);
        let groups = r.between(1, 3);
        // Client i writes to group i % groups; the first client of every group acks with all,
        // so that every group can show progress after healing.
        let clients = (0..groups + r.between(0, 2))
            .map(|i| match r.below(3) {
                0 => ClientKind::PlainAll,
                1 if i >= groups => ClientKind::PlainLeader,
                1 => ClientKind::PlainAll,
                _ => ClientKind::Idempotent,
            })
            .collect();
        Self {
            seed,
            nodes: 3,
            groups,
            safety_ms,
            liveness_ms: 8_000,
            tick_ms: 10,
            latency_us: (100, latency_max),
            drop_per_million: r.between(0, 50_000),
            duplicate_per_million: r.between(0, 20_000),
            disk_latency_us: (50, disk_max),
            crash_every_ms: (r.below(4) != 0).then(|| {
                let low = r.between(200, 1_500);
                (low, low * 2)
            }),
            down_ms: (50, r.between(100, 1_500)),
            tear: r.below(2) == 0,
            partition_every_ms: (r.below(4) != 0).then(|| {
                let low = r.between(200, 1_500);
                (low, low * 2)
            }),
            partition_ms: (100, r.between(200, 2_000)),
            drift_ppm_max: r.between(0, 50_000),
            retain_entries_max: if r.below(3) == 0 {
                r.between(10, 80)
            } else {
                1_000_000
            },
            clients,
            produce_pause_ms: (1, r.between(2, 30)),
            planted,
            // Drawn last, so the earlier draws of a seed stay what they were.
            log_cache_bytes: if r.below(2) == 0 {
                r.between(1_000, 30_000)
            } else {
                128 << 20
            },
        }
    }
}

impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}", self.seed)?;
        writeln!(
            f,
            "  cluster: {} nodes, {} groups, tick {} ms",
            self.nodes, self.groups, self.tick_ms
        )?;
        writeln!(
            f,
            "  phases: {} ms with faults, then {} ms healed",
            self.safety_ms, self.liveness_ms
        )?;
        writeln!(
            f,
            "  network: latency {}..{} µs, drop {}/M, duplicate {}/M",
            self.latency_us.0, self.latency_us.1, self.drop_per_million, self.duplicate_per_million
        )?;
        writeln!(
            f,
            "  disk: latency {}..{} µs, torn writes {}",
            self.disk_latency_us.0, self.disk_latency_us.1, self.tear
        )?;
        writeln!(
            f,
            "  crashes: every {:?} ms, down {:?} ms",
            self.crash_every_ms, self.down_ms
        )?;
        writeln!(
            f,
            "  partitions: every {:?} ms, lasting {:?} ms",
            self.partition_every_ms, self.partition_ms
        )?;
        writeln!(f, "  clocks: drift up to ±{} ppm", self.drift_ppm_max)?;
        writeln!(f, "  retention: {} entries", self.retain_entries_max)?;
        writeln!(f, "  log cache: {} bytes", self.log_cache_bytes)?;
        writeln!(
            f,
            "  clients: {:?}, pause {:?} ms",
            self.clients, self.produce_pause_ms
        )?;
        write!(f, "  planted bugs: {:?}", self.planted)
    }
}
