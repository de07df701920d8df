//! A world's options: everything that shapes a run (the cluster, its faults, clocks and
//! workload), drawn from named streams of its seed, and how they print.

use std::fmt;

use oxbow_core::node::PlantedBugs;
use oxbow_jepsen::history::Delivery;
use oxbow_node::config::LogConfig;

use super::{TxnOptions, TOPIC};
use crate::rng::Stream;

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
    /// Size at which a partition's segment rolls (`log.segment_bytes`): small in half the
    /// seeds, so rolls, index files and the deletion of old segments happen.
    pub segment_bytes: u64,
    /// How the topic's log start offset moves: DeleteRecords calls and retention.
    pub trimming: Trimming,
    /// The transactional workload, if the seed has one.
    pub txn: Option<TxnOptions>,
    /// The topic's compaction, in a quarter of the seeds (the topic is then compact-only:
    /// no DeleteRecords, no retention).
    pub compaction: Option<CompactionOptions>,
}

/// A compacted topic (`cleanup.policy=compact`) with small segments that roll soon, cleaned
/// often: keys are overwritten many times and some sends are tombstones, so the cleaner runs
/// through the faults (crashes during its passes among them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionOptions {
    /// The topic's `segment.bytes`.
    pub segment_bytes: u64,
    /// The topic's `segment.ms` (the active segment rolls at the first retention check past
    /// it, so quiet partitions get closed segments too).
    pub segment_ms: u64,
    /// The topic's `min.cleanable.dirty.ratio`, in thousandths (low: a pass's emptied
    /// batches stay as frames, so the closed bytes hardly shrink, and the newest segment
    /// alone must be dirty enough).
    pub dirty_ratio_permille: u64,
    /// The topic's `delete.retention.ms`.
    pub delete_retention_ms: u64,
    /// The topic's `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: u64,
    /// The nodes' `log.cleaner_backoff_ms`.
    pub cleaner_backoff_ms: u64,
    /// The chance of a send being a tombstone (per million).
    pub tombstone_per_million: u64,
    /// How often reader 0 goes back to the log start, so that fresh reads from the start
    /// meet tombstones younger than `delete.retention.ms` (which must be there).
    pub rewind_every_ms: u64,
}

impl CompactionOptions {
    /// A quarter of the seeds' compaction, from a stream of its own (other seeds' options
    /// stay as they were).
    fn from_seed(seed: u64) -> Option<Self> {
        let mut rng = Stream::new(seed, "world-compaction");
        rng.chance(250_000).then(|| Self {
            segment_bytes: rng.between(1_024, 8_192),
            segment_ms: rng.between(500, 3_000),
            dirty_ratio_permille: rng.between(1, 50),
            delete_retention_ms: rng.between(1_000, 8_000),
            min_compaction_lag_ms: if rng.chance(500_000) {
                0
            } else {
                rng.between(200, 3_000)
            },
            cleaner_backoff_ms: rng.between(50, 500),
            tombstone_per_million: rng.between(20_000, 150_000),
            rewind_every_ms: rng.between(200, 1_000),
        })
    }

    /// The topic configuration it needs.
    pub fn topic_configs(&self) -> Vec<(String, String)> {
        vec![
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), self.segment_bytes.to_string()),
            ("segment.ms".to_string(), self.segment_ms.to_string()),
            (
                "min.cleanable.dirty.ratio".to_string(),
                format!("{:.3}", self.dirty_ratio_permille as f64 / 1_000.0),
            ),
            (
                "delete.retention.ms".to_string(),
                self.delete_retention_ms.to_string(),
            ),
            (
                "min.compaction.lag.ms".to_string(),
                self.min_compaction_lag_ms.to_string(),
            ),
        ]
    }
}

/// How a world's topic loses its oldest records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trimming {
    /// Time between a client's DeleteRecords calls (ms), or none.
    pub delete_records_every_ms: Option<(u64, u64)>,
    /// The topic's `retention.bytes`, or none (only with small segments: retention deletes
    /// whole closed segments).
    pub retention_bytes: Option<u64>,
    /// The topic's `retention.ms`, or none (compared with each leader's own wall clock).
    pub retention_ms: Option<u64>,
    /// The nodes' `log.retention_check_interval_ms`.
    pub retention_check_ms: u64,
}

impl Trimming {
    /// Whether retention may move the log start offset.
    pub fn retention(&self) -> bool {
        self.retention_bytes.is_some() || self.retention_ms.is_some()
    }

    /// The topic configuration it needs.
    pub fn topic_configs(&self) -> Vec<(String, String)> {
        let mut configs = Vec::new();
        if let Some(bytes) = self.retention_bytes {
            configs.push(("retention.bytes".to_string(), bytes.to_string()));
        }
        if let Some(ms) = self.retention_ms {
            configs.push(("retention.ms".to_string(), ms.to_string()));
        }
        configs
    }
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
        let segment_bytes = if memory.chance(500_000) {
            memory.between(2_048, 32_768)
        } else {
            LogConfig::default().segment_bytes
        };
        // Its own stream, so that drawing it shifts no other option of a seed.
        let mut trim = Stream::new(seed, "world-trim");
        let small_segments = segment_bytes < LogConfig::default().segment_bytes;
        let trimming = Trimming {
            delete_records_every_ms: trim
                .chance(500_000)
                .then(|| (trim.between(500, 2_000), trim.between(3_000, 8_000))),
            retention_bytes: (small_segments && trim.chance(500_000))
                .then(|| trim.between(4_096, 65_536)),
            retention_ms: (small_segments && trim.chance(300_000))
                .then(|| trim.between(3_000, 20_000)),
            retention_check_ms: trim.between(300, 2_000),
        };
        let compaction = CompactionOptions::from_seed(seed);
        let mut trimming = trimming;
        let mut keys = None;
        if compaction.is_some() {
            // A compact-only topic refuses DeleteRecords and has no retention; its segments
            // still roll at the retention checks (segment.ms).
            trimming.delete_records_every_ms = None;
            trimming.retention_bytes = None;
            trimming.retention_ms = None;
            // A small key space: every key is overwritten many times.
            let mut rng = Stream::new(seed, "world-compaction-keys");
            keys = Some(rng.between(2, 8));
        }
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
            keys: {
                let drawn = workload.between(1, 20);
                keys.unwrap_or(drawn)
            },
            planted,
            log_cache_bytes,
            segment_bytes,
            trimming,
            txn: TxnOptions::from_seed(seed),
            compaction,
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
            "  network: latency {:?} ms; disk: fsync {} us; log cache {} bytes; segments of {} bytes",
            self.latency_ms, self.fsync_us, self.log_cache_bytes, self.segment_bytes
        )?;
        writeln!(
            f,
            "  log start: DeleteRecords every {:?} ms, retention.bytes {:?}, retention.ms {:?} (checked every {} ms)",
            self.trimming.delete_records_every_ms,
            self.trimming.retention_bytes,
            self.trimming.retention_ms,
            self.trimming.retention_check_ms
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
            "  workload: producers {:?}, {} readers, a group of {} members (crashes every {:?} ms), a send every {:?} ms each, {} keys{}{}{}",
            self.producers,
            self.readers,
            self.group_members,
            self.member_crash_every_ms,
            self.send_every_ms,
            self.keys,
            match &self.compaction {
                Some(compaction) => format!("\n  compacted topic: {compaction:?}"),
                None => String::new(),
            },
            match &self.txn {
                Some(txn) => format!("\n  transactions: {txn:?}"),
                None => String::new(),
            },
            if self.planted == PlantedBugs::default() {
                String::new()
            } else {
                format!("\n  planted bug: {:?}", self.planted)
            }
        )
    }
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
