//! A node's configuration: a TOML file, with command-line overrides, validated with errors that
//! name the bad field.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use oxbow_core::ids::NodeId;
use oxbow_core::metadata::{check_topic_name, PARTITIONS_PER_TOPIC_MAX};
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

/// A topic the node makes sure exists once the cluster is up: it asks the metadata group to
/// create it, and is content if a topic of that name exists (whatever its partitions).
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

fn default_partitions() -> u32 {
    1
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
    /// Topics to create at start-up if they do not exist.
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
    /// Whether a Metadata request for an unknown topic creates it (Kafka's
    /// `auto.create.topics.enable`); off by default.
    #[serde(default)]
    pub auto_create_topics: bool,
    /// Partitions of an automatically created topic (Kafka's `num.partitions`).
    #[serde(default = "default_partitions")]
    pub default_partitions: u32,
    /// Replicas per partition of an automatically created topic; defaults to min(3, nodes)
    /// (Kafka's `default.replication.factor`).
    #[serde(default)]
    pub default_replication_factor: Option<u32>,
    /// Partitions of the internal `__consumer_offsets` topic, created when the first client
    /// looks for a group coordinator (Kafka's `offsets.topic.num.partitions`). Fixed once
    /// created: group ids are hashed over them.
    #[serde(default = "default_offsets_topic_partitions")]
    pub offsets_topic_partitions: u32,
}

fn default_offsets_topic_partitions() -> u32 {
    8
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
            if let Err(why) = check_topic_name(&topic.name) {
                return Err(ConfigError(format!("topics: {why}")));
            }
            if !names.insert(&topic.name) {
                return Err(ConfigError(format!(
                    "topics: {:?} appears twice",
                    topic.name
                )));
            }
            if topic.partitions == 0 || topic.partitions > PARTITIONS_PER_TOPIC_MAX {
                return Err(ConfigError(format!(
                    "topics.{}.partitions: {} is outside 1..={PARTITIONS_PER_TOPIC_MAX}",
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
        if self.default_partitions == 0 || self.default_partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(ConfigError(format!(
                "default_partitions: {} is outside 1..={PARTITIONS_PER_TOPIC_MAX}",
                self.default_partitions
            )));
        }
        if self.offsets_topic_partitions == 0 || self.offsets_topic_partitions > 1_000 {
            return Err(ConfigError(format!(
                "offsets_topic_partitions: {} is outside 1..=1000",
                self.offsets_topic_partitions
            )));
        }
        if let Some(rf) = self.default_replication_factor {
            if rf == 0 || rf > nodes {
                return Err(ConfigError(format!(
                    "default_replication_factor: {rf} must be between 1 and the number of nodes ({nodes})"
                )));
            }
        }
        Ok(())
    }

    /// Replicas per partition of `__consumer_offsets`: min(3, nodes), as Kafka's
    /// `offsets.topic.replication.factor`.
    pub fn offsets_replication_factor(&self) -> u16 {
        self.all_nodes().len().min(3) as u16
    }

    /// Replicas per partition of an automatically created topic.
    pub fn auto_replication_factor(&self) -> u16 {
        let nodes = self.all_nodes().len() as u32;
        self.default_replication_factor.unwrap_or(nodes.min(3)) as u16
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
    fn parses_with_defaults() {
        let config = Config::parse(GOOD).expect("valid");
        assert_eq!(config.all_nodes(), vec![NodeId(1), NodeId(2)]);
        assert!(!config.auto_create_topics);
        assert_eq!(config.default_partitions, 1);
        assert_eq!(config.auto_replication_factor(), 2);
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
