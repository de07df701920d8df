//! A node's configuration: a TOML file, with command-line overrides, validated with errors that
//! name the bad field.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use oxbow_core::ids::{GroupId, NodeId};
use serde::Deserialize;

/// When the disk writer fsyncs.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncPolicy {
    /// Every write that raft needs durable is fsynced before it is reported done (group commit).
    #[default]
    Always,
    /// Never fsync (tests on throwaway data only): a power loss loses acknowledged records.
    Never,
}

/// Another node of the cluster.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node id.
    pub id: u64,
    /// Where it listens for peers.
    pub peer_address: SocketAddr,
    /// Where Kafka clients reach it.
    pub kafka_address: SocketAddr,
}

/// A topic, created at start-up (until the metadata group makes topics dynamic).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Its name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Replicas per partition (at most the number of nodes).
    #[serde(default = "default_replication_factor")]
    pub replication_factor: u32,
}

fn default_replication_factor() -> u32 {
    3
}

fn default_tick_ms() -> u64 {
    100
}

/// The whole configuration of one node.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id (not 0).
    pub node_id: u64,
    /// Where its data lives.
    pub data_dir: PathBuf,
    /// Where it listens for Kafka clients.
    pub kafka_listen: SocketAddr,
    /// The address it tells clients to use; defaults to `kafka_listen`.
    #[serde(default)]
    pub kafka_advertised: Option<SocketAddr>,
    /// Where it listens for peers.
    pub peer_listen: SocketAddr,
    /// The other nodes.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// When to fsync.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Raft tick interval.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Topics.
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
}

/// A configuration mistake, naming the field.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where one partition lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPlacement {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Its Raft group.
    pub group: GroupId,
    /// Its replicas.
    pub replicas: Vec<NodeId>,
}

impl Config {
    /// Parses TOML text and validates it.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError("node_id: must not be 0".into()));
        }
        let mut ids = BTreeSet::from([self.node_id]);
        for peer in &self.peers {
            if !ids.insert(peer.id) {
                return Err(ConfigError(format!(
                    "peers: node id {} appears twice (or is this node's own)",
                    peer.id
                )));
            }
            if peer.id == 0 {
                return Err(ConfigError("peers: a peer id must not be 0".into()));
            }
        }
        if self.tick_ms == 0 || self.tick_ms > 10_000 {
            return Err(ConfigError(format!(
                "tick_ms: {} is outside 1..=10000",
                self.tick_ms
            )));
        }
        let nodes = ids.len() as u32;
        let mut names = BTreeSet::new();
        for topic in &self.topics {
            if topic.name.is_empty()
                || topic.name.len() > 249
                || !topic
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(ConfigError(format!(
                    "topics: name {:?} must be 1-249 characters of [a-zA-Z0-9._-]",
                    topic.name
                )));
            }
            if !names.insert(&topic.name) {
                return Err(ConfigError(format!(
                    "topics: {:?} appears twice",
                    topic.name
                )));
            }
            if topic.partitions == 0 || topic.partitions > 10_000 {
                return Err(ConfigError(format!(
                    "topics.{}.partitions: {} is outside 1..=10000",
                    topic.name, topic.partitions
                )));
            }
            if topic.replication_factor == 0 || topic.replication_factor > nodes {
                return Err(ConfigError(format!(
                    "topics.{}.replication_factor: {} must be between 1 and the number of nodes ({nodes})",
                    topic.name, topic.replication_factor
                )));
            }
        }
        Ok(())
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        NodeId(self.node_id)
    }

    /// Every node id, sorted.
    pub fn all_nodes(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .peers
            .iter()
            .map(|p| NodeId(p.id))
            .chain([self.node()])
            .collect();
        ids.sort();
        ids
    }

    /// The Kafka address of a node.
    pub fn kafka_address(&self, node: NodeId) -> Option<SocketAddr> {
        if node == self.node() {
            Some(self.kafka_advertised.unwrap_or(self.kafka_listen))
        } else {
            self.peers
                .iter()
                .find(|p| p.id == node.0)
                .map(|p| p.kafka_address)
        }
    }

    /// Where every partition lives: replicas are assigned round-robin over the sorted node ids,
    /// so every node computes the same placement from the same topic list.
    pub fn placements(&self) -> Vec<PartitionPlacement> {
        let nodes = self.all_nodes();
        let mut out = Vec::new();
        for topic in &self.topics {
            let topic_hash = fnv(topic.name.as_bytes());
            for partition in 0..topic.partitions {
                let replicas = (0..topic.replication_factor as usize)
                    .map(|i| nodes[(partition as usize + i) % nodes.len()])
                    .collect();
                out.push(PartitionPlacement {
                    topic: topic.name.clone(),
                    partition,
                    group: GroupId((topic_hash & !0xffff_ffff) | u64::from(partition)),
                    replicas,
                });
            }
        }
        out
    }
}

/// FNV-1a, for stable ids derived from names.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        node_id = 1
        data_dir = "/tmp/x"
        kafka_listen = "127.0.0.1:9092"
        peer_listen = "127.0.0.1:19092"
        [[peers]]
        id = 2
        peer_address = "127.0.0.1:19093"
        kafka_address = "127.0.0.1:9093"
        [[topics]]
        name = "events"
        partitions = 3
        replication_factor = 2
    "#;

    #[test]
    fn parses_and_places_partitions_round_robin() {
        let config = Config::parse(GOOD).expect("valid");
        let placements = config.placements();
        assert_eq!(placements.len(), 3);
        assert_eq!(placements[1].replicas, vec![NodeId(2), NodeId(1)]);
        assert_ne!(placements[0].group, placements[1].group);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = GOOD.replace("replication_factor = 2", "replication_factor = 5");
        let error = Config::parse(&bad).expect_err("invalid");
        assert!(
            error.0.contains("topics.events.replication_factor"),
            "{error}"
        );
        let bad = GOOD.replace("node_id = 1", "node_id = 0");
        assert!(Config::parse(&bad)
            .expect_err("invalid")
            .0
            .starts_with("node_id"));
        let bad = GOOD.replace("partitions = 3", "partitions = 3\n        colour = 1");
        assert!(Config::parse(&bad)
            .expect_err("invalid")
            .0
            .contains("colour"));
    }
}
