//! A node's configuration: a TOML file, with command-line overrides, validated with errors that
//! name the bad field.

use std::collections::BTreeSet;
use std::path::PathBuf;

use oxbow_core::ids::NodeId;
use oxbow_core::metadata::{
    check_topic_name, PartitionLimits, TopicMeta, PARTITIONS_CEILING, PARTITIONS_PER_TOPIC_MAX,
};
use serde::Deserialize;

pub use crate::address::Address;
use crate::producer_ids::NODE_ID_MAX;
use crate::storage::RetentionPolicy;

mod kafka_names;
mod tables;
#[cfg(test)]
mod tests;

use kafka_names::kafka_name_hint;
pub use kafka_names::KAFKA_NAMES;
pub use tables::{ConnectionsConfig, GroupsConfig, LogConfig, ProducersConfig, TransactionsConfig};

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
    /// Where it listens for peers: `host:port`, the host a name (resolved at each dial) or an
    /// IP address.
    pub peer_address: Address,
    /// Where Kafka clients reach it (its advertised address), given to clients as it is
    /// written: a host name stays a host name.
    pub kafka_address: Address,
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
    /// This node's id (Kafka's `node.id`): 0 to 4194303 (producer ids hold it in 22 bits).
    pub node_id: u64,
    /// Where its data lives.
    pub data_dir: PathBuf,
    /// Where it listens for Kafka clients: `host:port`, as Kafka's `listeners`; a host name
    /// is resolved when the port is bound, and `0.0.0.0` listens on every interface.
    pub kafka_listen: Address,
    /// The address it tells clients to use (Kafka's `advertised.listeners`), given to them as
    /// written, host name and all; defaults to `kafka_listen`.
    #[serde(default)]
    pub kafka_advertised: Option<Address>,
    /// Where it listens for peers: `host:port`, as `kafka_listen`.
    pub peer_listen: Address,
    /// The other nodes.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// The cluster's peer secret, the same on every node: peer links prove they know it (an
    /// HMAC challenge-response) before anything they send is believed. Required when there
    /// are peers, unless `peer_secret_file` names a file holding it; at least 16 bytes.
    #[serde(default)]
    pub peer_secret: Option<String>,
    /// A file holding the peer secret (surrounding whitespace ignored), instead of
    /// `peer_secret` in this file.
    #[serde(default)]
    pub peer_secret_file: Option<PathBuf>,
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
    /// Entries the metadata log holds before it is compacted into a snapshot of the applied
    /// metadata (topics, partitions, replicas), so that neither its size nor a restart's replay
    /// grows with the cluster's history.
    #[serde(default = "default_metadata_snapshot_entries")]
    pub metadata_snapshot_entries: u64,
    /// Most bytes of record batches in one Fetch response, whatever the request asks (Kafka's
    /// broker `fetch.max.bytes`, 55 MiB); one batch larger than it is still served whole.
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: usize,
    /// Incremental fetch sessions (KIP-227) a node keeps at once (Kafka's
    /// `max.incremental.fetch.session.cache.slots`); past it a new session takes the place of
    /// one idle for two minutes, or the client fetches without one. 0 turns sessions off.
    #[serde(default = "default_fetch_session_slots")]
    pub max_incremental_fetch_session_cache_slots: usize,
    /// Largest log entry a group coordinator writes: one OffsetCommit's offsets
    /// (INVALID_COMMIT_OFFSET_SIZE past it) or a group's membership, every member's metadata
    /// and assignment (UNKNOWN_SERVER_ERROR to the SyncGroup past it), as Kafka's
    /// `message.max.bytes` bounds its `__consumer_offsets` records (1 MiB there; 4 MiB here).
    #[serde(default = "default_group_entry_bytes_max")]
    pub group_entry_bytes_max: usize,
    /// Most partitions in the cluster: a CreateTopics or CreatePartitions that would pass it is
    /// refused with INVALID_PARTITIONS. Checked against the limits of the node that takes the
    /// request, so every node should have the same value.
    #[serde(default = "default_max_partitions")]
    pub max_partitions: usize,
    /// Most partition replicas one node hosts (Redpanda's `topic_partitions_per_shard`, per
    /// node): a creation that would place more on any node is refused with
    /// INVALID_PARTITIONS. Every node should have the same value.
    #[serde(default = "default_max_partitions_per_node")]
    pub max_partitions_per_node: usize,
    /// Partition logs: segments and the broker's retention defaults (the `[log]` table).
    #[serde(default)]
    pub log: LogConfig,
    /// Limits on Kafka client connections (the `[connections]` table).
    #[serde(default)]
    pub connections: ConnectionsConfig,
    /// Idempotent producers' state per partition (the `[producers]` table).
    #[serde(default)]
    pub producers: ProducersConfig,
    /// The group coordinators' settings (the `[groups]` table).
    #[serde(default)]
    pub groups: GroupsConfig,
    /// The transaction coordinators' settings (the `[transactions]` table).
    #[serde(default)]
    pub transactions: TransactionsConfig,
}

fn default_metadata_snapshot_entries() -> u64 {
    1_000
}

fn default_fetch_session_slots() -> usize {
    1_000
}

fn default_fetch_max_bytes() -> usize {
    57_671_680
}

fn default_group_entry_bytes_max() -> usize {
    4 << 20
}

fn default_max_partitions() -> usize {
    PartitionLimits::DEFAULT.cluster
}

fn default_max_partitions_per_node() -> usize {
    PartitionLimits::DEFAULT.per_node
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

fn check_secret(secret: &[u8], field: &str) -> Result<(), ConfigError> {
    let min = crate::runtime::peer::handshake::SECRET_MIN;
    if secret.len() < min {
        return Err(ConfigError(format!(
            "{field}: the peer secret has {} bytes; it needs at least {min} \
             (for example from `openssl rand -hex 32`)",
            secret.len()
        )));
    }
    Ok(())
}

impl Config {
    /// The peer secret, read from `peer_secret_file` if that is where it is; `None` if there
    /// is none (a node without peers).
    pub fn peer_secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        if let Some(secret) = &self.peer_secret {
            return Ok(Some(secret.as_bytes().to_vec()));
        }
        let Some(file) = &self.peer_secret_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigError(format!(
                "peer_secret_file: cannot read {}: {e}",
                file.display()
            ))
        })?;
        let secret = text.trim().as_bytes().to_vec();
        check_secret(&secret, "peer_secret_file")?;
        Ok(Some(secret))
    }

    /// Parses TOML text and validates it. A key under Kafka's name is refused with the name
    /// oxbow gives it.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)
            .map_err(|e| ConfigError(kafka_name_hint(text).unwrap_or_else(|| e.to_string())))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id > NODE_ID_MAX {
            return Err(ConfigError(format!(
                "node_id: {} is past {NODE_ID_MAX} (producer ids hold the node id in 22 bits)",
                self.node_id,
            )));
        }
        let mut ids = BTreeSet::from([self.node_id]);
        for peer in &self.peers {
            if !ids.insert(peer.id) {
                return Err(ConfigError(format!(
                    "peers: node id {} appears twice (or is this node's own)",
                    peer.id
                )));
            }
            if peer.id > NODE_ID_MAX {
                return Err(ConfigError(format!(
                    "peers: node id {} is past {NODE_ID_MAX} (producer ids hold the node id in \
                     22 bits)",
                    peer.id,
                )));
            }
            for (field, address) in [
                ("peer_address", &peer.peer_address),
                ("kafka_address", &peer.kafka_address),
            ] {
                if address.port() == 0 {
                    return Err(ConfigError(format!(
                        "peers.{field} of node {}: {address} has port 0",
                        peer.id
                    )));
                }
            }
        }
        if let Some(advertised) = &self.kafka_advertised {
            if advertised.port() == 0 {
                return Err(ConfigError(format!(
                    "kafka_advertised: {advertised} has port 0"
                )));
            }
        }
        match (&self.peer_secret, &self.peer_secret_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "peer_secret and peer_secret_file: give one of them, not both".into(),
                ))
            }
            (None, None) if !self.peers.is_empty() => {
                return Err(ConfigError(
                    "peer_secret: required when there are peers (peer links are authenticated \
                     with it); put the same secret of at least 16 bytes in every node's \
                     configuration, for example from `openssl rand -hex 32`, or name a file \
                     holding it with peer_secret_file"
                        .into(),
                ))
            }
            (Some(secret), None) => check_secret(secret.as_bytes(), "peer_secret")?,
            _ => {}
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
        self.log.validate()?;
        self.connections.validate()?;
        self.producers.validate()?;
        self.groups.validate()?;
        self.transactions.validate()?;
        if !(1 << 16..=32 << 20).contains(&self.group_entry_bytes_max) {
            return Err(ConfigError(format!(
                "group_entry_bytes_max: {} is outside 65536..=33554432",
                self.group_entry_bytes_max
            )));
        }
        for (field, value) in [
            ("max_partitions", self.max_partitions),
            ("max_partitions_per_node", self.max_partitions_per_node),
        ] {
            if !(1..=PARTITIONS_CEILING).contains(&value) {
                return Err(ConfigError(format!(
                    "{field}: {value} is outside 1..={PARTITIONS_CEILING}"
                )));
            }
        }
        if self.groups.member_metadata_bytes_max > self.group_entry_bytes_max {
            return Err(ConfigError(format!(
                "groups.member_metadata_bytes_max: {} is over group_entry_bytes_max ({}): a \
                 group's membership, every member's metadata, is stored in one entry",
                self.groups.member_metadata_bytes_max, self.group_entry_bytes_max
            )));
        }
        if self.max_incremental_fetch_session_cache_slots > 100_000 {
            return Err(ConfigError(format!(
                "max_incremental_fetch_session_cache_slots: {} is over 100000",
                self.max_incremental_fetch_session_cache_slots
            )));
        }
        if self.fetch_max_bytes < 1024 {
            return Err(ConfigError(format!(
                "fetch_max_bytes: {} is under 1024",
                self.fetch_max_bytes
            )));
        }
        if self.metadata_snapshot_entries == 0 {
            return Err(ConfigError(
                "metadata_snapshot_entries: must be at least 1".into(),
            ));
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

    /// A topic configuration's value here: the topic's override, else this node's default
    /// (its `[log]` settings for retention, Kafka's for the rest); and whether it is a default.
    pub fn topic_value(&self, topic: &TopicMeta, key: &str) -> (String, bool) {
        if let Some(value) = topic.configs.get(key) {
            return (value.clone(), false);
        }
        // Kafka creates its internal topics compacted: so do they read (they are command
        // logs, compacted into their coordinators' state).
        if key == "cleanup.policy" && oxbow_core::metadata::is_internal(&topic.name) {
            return ("compact".into(), false);
        }
        let value = match key {
            "retention.ms" => self.log.default_retention_ms().to_string(),
            "retention.bytes" => self.log.retention_bytes.to_string(),
            "segment.bytes" => self.log.segment_bytes.to_string(),
            "segment.ms" => self.log.segment_ms.to_string(),
            _ => topic.config(key).expect("a supported key").to_string(),
        };
        (value, true)
    }

    /// What a topic's partitions keep.
    pub fn retention(&self, topic: &TopicMeta) -> RetentionPolicy {
        let number = |key| {
            self.topic_value(topic, key)
                .0
                .parse::<i64>()
                .expect("checked when the topic was created")
        };
        RetentionPolicy {
            retention_ms: number("retention.ms"),
            retention_bytes: number("retention.bytes"),
            segment_ms: number("segment.ms"),
            log_end: None,
        }
    }

    /// The partition limits this node writes into the creations it takes.
    pub fn partition_limits(&self) -> PartitionLimits {
        PartitionLimits {
            cluster: self.max_partitions,
            per_node: self.max_partitions_per_node,
        }
    }

    /// Replicas per partition of the internal topics `__consumer_offsets` and
    /// `__transaction_state`: min(3, nodes), as Kafka's `offsets.topic.replication.factor`
    /// and `transaction.state.log.replication.factor`.
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

    /// The Kafka address of a node, as clients are told it.
    pub fn kafka_address(&self, node: NodeId) -> Option<&Address> {
        if node == self.node() {
            Some(self.kafka_advertised.as_ref().unwrap_or(&self.kafka_listen))
        } else {
            self.peers
                .iter()
                .find(|p| p.id == node.0)
                .map(|p| &p.kafka_address)
        }
    }
}
