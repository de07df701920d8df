//! What a world run found: its numbers, and the report the driver hands back.

use super::WorldOptions;

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
    /// DeleteRecords calls acknowledged.
    pub trims: u64,
    /// Acknowledged records below the final read's log start offset (allowed: gone by
    /// DeleteRecords or retention).
    pub trimmed: u64,
    /// Compacted topic: acknowledged records the cleaner removed (superseded values, expired
    /// tombstones; allowed).
    pub compacted: u64,
    /// Transaction attempts of the transactional workload.
    pub txn_attempts: u64,
    /// Of them, committed (acknowledged, or visible in the final read).
    pub txn_committed: u64,
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
