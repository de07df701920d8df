//! How many partitions a cluster and each of its nodes may hold.
//!
//! The limits are node configuration (`max_partitions`, `max_partitions_per_node`), but
//! applying a metadata entry must give the same result on every replica, whatever each is
//! configured with. So the node that takes an admin request writes its limits into the entry
//! (see `command::encode_entry`), and applying checks the entry's limits: a creation is
//! refused the same way everywhere, also when a node that is not the controller forwarded it.

use std::collections::BTreeMap;

use crate::ids::NodeId;

use super::{AdminError, MetadataState};

/// The most partitions a cluster may be configured to hold: the ceiling of both limits,
/// whatever an entry carries, and a sanity bound when decoding the metadata's snapshots.
pub const PARTITIONS_CEILING: usize = 1_000_000;

/// Bounds on the partitions a creation (CreateTopics, CreatePartitions) must stay within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionLimits {
    /// Most partitions in the cluster (the `max_partitions` setting).
    pub cluster: usize,
    /// Most partition replicas one node hosts (the `max_partitions_per_node` setting).
    pub per_node: usize,
}

impl PartitionLimits {
    /// The defaults: 100,000 partitions in the cluster, 10,000 replicas per node.
    pub const DEFAULT: Self = Self {
        cluster: 100_000,
        per_node: 10_000,
    };

    /// What an entry that carries no limits is checked against: those written before entries
    /// carried them were checked against a fixed 100,000 partitions in the cluster and nothing
    /// per node, and replaying them must give what applying them gave.
    pub const UNCARRIED: Self = Self {
        cluster: 100_000,
        per_node: PARTITIONS_CEILING,
    };

    /// Both limits at most [`PARTITIONS_CEILING`] (an entry's limits are the proposing node's).
    fn capped(self) -> Self {
        Self {
            cluster: self.cluster.min(PARTITIONS_CEILING),
            per_node: self.per_node.min(PARTITIONS_CEILING),
        }
    }
}

impl Default for PartitionLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl MetadataState {
    /// Checks that adding `new` partitions, with these replicas, keeps the cluster and every
    /// node within `limits`.
    pub(super) fn check_partition_limits(
        &self,
        new: &[Vec<NodeId>],
        limits: PartitionLimits,
    ) -> Result<(), AdminError> {
        let limits = limits.capped();
        if self.partition_count() + new.len() > limits.cluster {
            return Err(AdminError::InvalidPartitions(format!(
                "the cluster holds {} partitions; {} more would pass its limit of {} \
                 (max_partitions)",
                self.partition_count(),
                new.len(),
                limits.cluster
            )));
        }
        let mut added: BTreeMap<NodeId, usize> = BTreeMap::new();
        for replica in new.iter().flatten() {
            *added.entry(*replica).or_default() += 1;
        }
        for (node, more) in added {
            let hosted = self.replicas_on(node);
            if hosted + more > limits.per_node {
                return Err(AdminError::InvalidPartitions(format!(
                    "node {} hosts {hosted} partition replicas; {more} more would pass the limit \
                     of {} per node (max_partitions_per_node)",
                    node.0, limits.per_node
                )));
            }
        }
        Ok(())
    }
}
