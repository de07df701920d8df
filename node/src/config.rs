//! A node's configuration: a TOML file, with command-line overrides, validated with errors that
//! name the bad field.

use std::collections::BTreeSet;
use std::path::PathBuf;

use oxbow_core::coordinator::CoordinatorConfig;
use oxbow_core::ids::NodeId;
use oxbow_core::metadata::{check_topic_name, TopicMeta, PARTITIONS_PER_TOPIC_MAX};
use serde::Deserialize;

pub use crate::address::Address;
use crate::producer_ids::NODE_ID_MAX;
use crate::storage::RetentionPolicy;

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
}

/// The state each partition keeps of idempotent producers (their epochs and last five
/// batches, for duplicate detection).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProducersConfig {
    /// A producer that has not written to a partition for this long is forgotten there
    /// (Kafka's `producer.id.expiration.ms`, 1 day); a retry after that is taken as new.
    pub expiration_ms: u64,
    /// Producers a partition remembers at most: while its table holds this many that have not
    /// expired, the leader refuses producer ids it does not know with POLICY_VIOLATION (and
    /// logs it once), rather than forget a producer that may still retry.
    pub per_partition_max: usize,
}

impl Default for ProducersConfig {
    fn default() -> Self {
        Self {
            expiration_ms: oxbow_core::producer::EXPIRATION_MS_DEFAULT,
            per_partition_max: 10_000,
        }
    }
}

impl ProducersConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.expiration_ms == 0 || self.expiration_ms > i64::MAX as u64 {
            return Err(ConfigError(format!(
                "producers.expiration_ms: {} is outside 1..={}",
                self.expiration_ms,
                i64::MAX
            )));
        }
        if !(1..=1_000_000).contains(&self.per_partition_max) {
            return Err(ConfigError(format!(
                "producers.per_partition_max: {} is outside 1..=1000000",
                self.per_partition_max
            )));
        }
        Ok(())
    }
}

/// The group coordinators' settings, under Kafka's broker setting names.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Shortest session timeout a consumer may ask for (Kafka's
    /// `group.min.session.timeout.ms`, 6 s); shorter ones are refused with
    /// INVALID_SESSION_TIMEOUT. Test setups often lower it to 1000.
    pub min_session_timeout_ms: i32,
    /// Longest session timeout a consumer may ask for (Kafka's
    /// `group.max.session.timeout.ms`, 30 minutes).
    pub max_session_timeout_ms: i32,
    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`, 3 s); each member joining meanwhile extends it by
    /// as much, up to the rebalance timeout. Test setups set 0.
    pub initial_rebalance_delay_ms: u64,
    /// A group without members is deleted with its committed offsets once nothing changed
    /// in it for this long (Kafka's `offsets.retention.minutes`, 7 days).
    pub offsets_retention_minutes: u64,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        let core = CoordinatorConfig::default();
        Self {
            min_session_timeout_ms: core.min_session_timeout_ms,
            max_session_timeout_ms: core.max_session_timeout_ms,
            initial_rebalance_delay_ms: core.initial_rebalance_delay_ms,
            offsets_retention_minutes: core.offsets_retention_ms / 60_000,
        }
    }
}

impl GroupsConfig {
    /// The core's coordinator settings.
    pub fn coordinator(&self) -> CoordinatorConfig {
        CoordinatorConfig {
            min_session_timeout_ms: self.min_session_timeout_ms,
            max_session_timeout_ms: self.max_session_timeout_ms,
            initial_rebalance_delay_ms: self.initial_rebalance_delay_ms,
            offsets_retention_ms: self.offsets_retention_minutes.saturating_mul(60_000),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.min_session_timeout_ms < 1 {
            return Err(ConfigError(format!(
                "groups.min_session_timeout_ms: {} is under 1",
                self.min_session_timeout_ms
            )));
        }
        if self.max_session_timeout_ms < self.min_session_timeout_ms {
            return Err(ConfigError(format!(
                "groups.max_session_timeout_ms: {} is under min_session_timeout_ms ({})",
                self.max_session_timeout_ms, self.min_session_timeout_ms
            )));
        }
        if self.initial_rebalance_delay_ms > i32::MAX as u64 {
            return Err(ConfigError(format!(
                "groups.initial_rebalance_delay_ms: {} is over {}",
                self.initial_rebalance_delay_ms,
                i32::MAX
            )));
        }
        if self.offsets_retention_minutes < 1 {
            return Err(ConfigError(
                "groups.offsets_retention_minutes: must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Limits on Kafka client connections, under Kafka's broker setting names.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// Client connections open at once (Kafka's `max.connections`); past it a new
    /// connection is closed at once, with a log line.
    pub max_connections: usize,
    /// Client connections open at once from one IP address (Kafka's
    /// `max.connections.per.ip`).
    pub max_connections_per_ip: usize,
    /// A connection that sends no request for this long is closed (Kafka's
    /// `connections.max.idle.ms`, 10 minutes).
    pub connections_max_idle_ms: u64,
    /// Bytes of requests read and not yet answered, across the node's connections (Kafka's
    /// `queued.max.request.bytes`); past it the node stops reading requests until answers go
    /// out. At least the largest request (100 MiB).
    pub queued_max_request_bytes: u64,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            connections_max_idle_ms: 600_000,
            queued_max_request_bytes: 512 << 20,
        }
    }
}

impl ConnectionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(ConfigError(
                "connections.max_connections and max_connections_per_ip must be at least 1".into(),
            ));
        }
        if self.connections_max_idle_ms < 1_000 {
            return Err(ConfigError(format!(
                "connections.connections_max_idle_ms: {} is under 1000",
                self.connections_max_idle_ms
            )));
        }
        if self.queued_max_request_bytes < crate::kafka::REQUEST_MAX as u64 {
            return Err(ConfigError(format!(
                "connections.queued_max_request_bytes: {} is under the largest request ({} bytes)",
                self.queued_max_request_bytes,
                crate::kafka::REQUEST_MAX
            )));
        }
        Ok(())
    }
}

/// How partitions' logs are kept: Kafka's `log.*` broker settings. A topic's own
/// `retention.ms` and `retention.bytes` override the retention defaults.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Records are kept this long by default (Kafka's `log.retention.hours`, 168); -1 keeps
    /// them forever.
    pub retention_hours: i64,
    /// Overrides `retention_hours` in milliseconds (Kafka's `log.retention.ms`).
    pub retention_ms: Option<i64>,
    /// A partition's log is cut to this many bytes by default (Kafka's
    /// `log.retention.bytes`); -1, the default, for no limit.
    pub retention_bytes: i64,
    /// A segment file rolls at this size (Kafka's `log.segment.bytes`; 64 MiB here, where
    /// Kafka has 1 GiB: recovery after a crash reads each partition's last segment).
    pub segment_bytes: u64,
    /// A partition's active segment rolls once its first batch is this old, so that time-based
    /// retention reaches partitions that get little data (Kafka's `log.roll.ms`; 7 days).
    pub segment_ms: i64,
    /// How often retention is checked (Kafka's `log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// Bytes of partition log entries the node holds in memory, across its partitions
    /// (recent entries, those not yet applied, and those read back for a follower); older
    /// records are read from the segment files. Entries not yet applied are held whatever
    /// this says.
    pub cache_bytes: u64,
    /// Files (segments, index files) the node keeps open at once; the least recently used is
    /// closed to open another.
    pub open_files_max: usize,
    /// Produce is refused (KAFKA_STORAGE_ERROR, retriable) while the data directory's file
    /// system has less free space than this, so that acknowledged data, replication, retention
    /// and restarts keep room (Redpanda's `storage_min_free_bytes`). 0 turns it off.
    pub disk_reserve_bytes: u64,
    /// Most bytes a produced batch's compressed records may inflate to: each batch's records
    /// are checked against its header at produce, and one inflating past this is refused
    /// (MESSAGE_TOO_LARGE), as a zip bomb would be.
    pub decompressed_batch_bytes_max: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            retention_hours: 168,
            retention_ms: None,
            retention_bytes: -1,
            segment_bytes: 64 << 20,
            segment_ms: 604_800_000,
            retention_check_interval_ms: 300_000,
            cache_bytes: 128 << 20,
            open_files_max: crate::storage::disk::OPEN_FILES_MAX,
            disk_reserve_bytes: 1 << 30,
            decompressed_batch_bytes_max: 64 << 20,
        }
    }
}

impl LogConfig {
    /// The broker's default `retention.ms`.
    pub fn default_retention_ms(&self) -> i64 {
        self.retention_ms.unwrap_or(if self.retention_hours < 0 {
            -1
        } else {
            self.retention_hours.saturating_mul(3_600_000)
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.retention_hours < -1 || self.retention_ms.is_some_and(|ms| ms < -1) {
            return Err(ConfigError(
                "log.retention_hours, log.retention_ms: -1 (forever) or more".into(),
            ));
        }
        if self.retention_bytes < -1 {
            return Err(ConfigError(
                "log.retention_bytes: -1 (no limit) or more".into(),
            ));
        }
        if self.segment_bytes < 1024 || self.segment_bytes > 1 << 30 {
            return Err(ConfigError(format!(
                "log.segment_bytes: {} is outside 1024..=1073741824",
                self.segment_bytes
            )));
        }
        if self.decompressed_batch_bytes_max < 1 << 20
            || self.decompressed_batch_bytes_max > 1 << 30
        {
            return Err(ConfigError(format!(
                "log.decompressed_batch_bytes_max: {} is outside 1048576..=1073741824",
                self.decompressed_batch_bytes_max
            )));
        }
        if self.cache_bytes < 4_096 {
            return Err(ConfigError(format!(
                "log.cache_bytes: {} is under 4096",
                self.cache_bytes
            )));
        }
        if self.segment_ms < 1 {
            return Err(ConfigError(format!(
                "log.segment_ms: {} is under 1",
                self.segment_ms
            )));
        }
        if self.open_files_max < 16 {
            return Err(ConfigError(format!(
                "log.open_files_max: {} is under 16",
                self.open_files_max
            )));
        }
        if self.retention_check_interval_ms == 0 {
            return Err(ConfigError(
                "log.retention_check_interval_ms: must be at least 1".into(),
            ));
        }
        Ok(())
    }
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

fn default_offsets_topic_partitions() -> u32 {
    8
}

/// Kafka's broker settings that oxbow has, and where it keeps them: (Kafka's name, oxbow's
/// table or `""` for the top level, oxbow's key).
pub const KAFKA_NAMES: &[(&str, &str, &str)] = &[
    ("broker.id", "", "node_id"),
    ("node.id", "", "node_id"),
    ("log.dirs", "", "data_dir"),
    ("log.dir", "", "data_dir"),
    ("listeners", "", "kafka_listen"),
    ("advertised.listeners", "", "kafka_advertised"),
    ("auto.create.topics.enable", "", "auto_create_topics"),
    ("num.partitions", "", "default_partitions"),
    (
        "default.replication.factor",
        "",
        "default_replication_factor",
    ),
    (
        "offsets.topic.num.partitions",
        "",
        "offsets_topic_partitions",
    ),
    ("fetch.max.bytes", "", "fetch_max_bytes"),
    (
        "group.min.session.timeout.ms",
        "groups",
        "min_session_timeout_ms",
    ),
    (
        "group.max.session.timeout.ms",
        "groups",
        "max_session_timeout_ms",
    ),
    (
        "group.initial.rebalance.delay.ms",
        "groups",
        "initial_rebalance_delay_ms",
    ),
    (
        "offsets.retention.minutes",
        "groups",
        "offsets_retention_minutes",
    ),
    ("log.retention.hours", "log", "retention_hours"),
    ("log.retention.ms", "log", "retention_ms"),
    ("log.retention.bytes", "log", "retention_bytes"),
    ("log.segment.bytes", "log", "segment_bytes"),
    ("log.roll.ms", "log", "segment_ms"),
    (
        "log.retention.check.interval.ms",
        "log",
        "retention_check_interval_ms",
    ),
    ("max.connections", "connections", "max_connections"),
    (
        "max.connections.per.ip",
        "connections",
        "max_connections_per_ip",
    ),
    (
        "connections.max.idle.ms",
        "connections",
        "connections_max_idle_ms",
    ),
    (
        "queued.max.request.bytes",
        "connections",
        "queued_max_request_bytes",
    ),
];

/// If the text uses one of Kafka's names for a setting (as `a.b.c = ...`, a TOML dotted key,
/// or `"a.b.c" = ...`, at the top level or inside a table), the error that says what oxbow
/// calls it.
fn kafka_name_hint(text: &str) -> Option<String> {
    fn leaves(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        out.push(prefix.to_string());
        if let toml::Value::Table(table) = value {
            for (key, value) in table {
                leaves(&format!("{prefix}.{key}"), value, out);
            }
        }
    }
    fn find(table: &toml::Table) -> Option<String> {
        for (key, value) in table {
            let mut names = Vec::new();
            leaves(key, value, &mut names);
            for name in &names {
                if let Some((kafka, table, key)) = KAFKA_NAMES.iter().find(|k| k.0 == name) {
                    let oxbow = if table.is_empty() {
                        format!("the top-level key `{key}`")
                    } else {
                        format!("`{key}` in the [{table}] table")
                    };
                    return Some(format!(
                        "unknown key `{kafka}`: that is Kafka's name for the setting; \
                         oxbow's is {oxbow} (docs/operations.md lists every key)"
                    ));
                }
            }
            if let toml::Value::Table(inner) = value {
                if let Some(hint) = find(inner) {
                    return Some(hint);
                }
            }
            if let toml::Value::Array(items) = value {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        if let Some(hint) = find(inner) {
                            return Some(hint);
                        }
                    }
                }
            }
        }
        None
    }
    find(&text.parse::<toml::Table>().ok()?)
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
        if !(1 << 16..=32 << 20).contains(&self.group_entry_bytes_max) {
            return Err(ConfigError(format!(
                "group_entry_bytes_max: {} is outside 65536..=33554432",
                self.group_entry_bytes_max
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        node_id = 1
        data_dir = "/tmp/x"
        kafka_listen = "127.0.0.1:9092"
        peer_listen = "127.0.0.1:19092"
        peer_secret = "sixteen bytes at least"
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
    fn producer_limits_default_to_kafka_expiry_and_are_checked() {
        let config = Config::parse(GOOD).expect("valid");
        assert_eq!(config.producers.expiration_ms, 86_400_000);
        assert_eq!(config.producers.per_partition_max, 10_000);
        let core = crate::runtime::core_config(&config);
        assert_eq!(
            (core.producer_expiration_ms, core.producers_max),
            (86_400_000, 10_000)
        );
        let set = format!("{GOOD}\n        [producers]\n        expiration_ms = 60000\n        per_partition_max = 50\n");
        let config = Config::parse(&set).expect("valid");
        let core = crate::runtime::core_config(&config);
        assert_eq!(
            (core.producer_expiration_ms, core.producers_max),
            (60_000, 50)
        );
        let bad = set.replace("per_partition_max = 50", "per_partition_max = 0");
        let error = Config::parse(&bad).expect_err("invalid");
        assert!(
            error.0.starts_with("producers.per_partition_max"),
            "{error}"
        );
        let bad = set.replace("expiration_ms = 60000", "expiration_ms = 0");
        let error = Config::parse(&bad).expect_err("invalid");
        assert!(error.0.starts_with("producers.expiration_ms"), "{error}");
    }

    #[test]
    fn group_settings_have_kafkas_defaults_and_reach_the_core() {
        let config = Config::parse(GOOD).expect("valid");
        let core = crate::runtime::core_config(&config).coordinator;
        assert_eq!(core.min_session_timeout_ms, 6_000);
        assert_eq!(core.max_session_timeout_ms, 1_800_000);
        assert_eq!(core.initial_rebalance_delay_ms, 3_000);
        assert_eq!(core.offsets_retention_ms, 7 * 24 * 3_600_000);
        assert_eq!(config.groups.offsets_retention_minutes, 10_080);

        let text = format!(
            "{GOOD}\n        [groups]\n        min_session_timeout_ms = 1000\n        \
             max_session_timeout_ms = 60000\n        initial_rebalance_delay_ms = 0\n        \
             offsets_retention_minutes = 60\n"
        );
        let config = Config::parse(&text).expect("valid");
        let core = crate::runtime::core_config(&config).coordinator;
        assert_eq!(core.min_session_timeout_ms, 1_000);
        assert_eq!(core.max_session_timeout_ms, 60_000);
        assert_eq!(core.initial_rebalance_delay_ms, 0);
        assert_eq!(core.offsets_retention_ms, 3_600_000);
    }

    #[test]
    fn bad_group_settings_name_the_field() {
        let with = |groups: &str| Config::parse(&format!("{GOOD}\n[groups]\n{groups}\n"));
        let error = with("min_session_timeout_ms = 0").expect_err("invalid");
        assert!(
            error.0.starts_with("groups.min_session_timeout_ms"),
            "{error}"
        );
        let error = with("min_session_timeout_ms = 10000\nmax_session_timeout_ms = 9000")
            .expect_err("invalid");
        assert!(
            error.0.starts_with("groups.max_session_timeout_ms"),
            "{error}"
        );
        let error = with("offsets_retention_minutes = 0").expect_err("invalid");
        assert!(
            error.0.starts_with("groups.offsets_retention_minutes"),
            "{error}"
        );
        let error = with("session_timeout_ms = 1000").expect_err("invalid");
        assert!(error.0.contains("session_timeout_ms"), "{error}");
        assert!(
            error.0.contains("min_session_timeout_ms"),
            "lists the keys: {error}"
        );
    }

    #[test]
    fn kafkas_names_are_refused_with_oxbows() {
        let top = |line: &str| {
            Config::parse(&GOOD.replace("[[peers]]", &format!("{line}\n[[peers]]")))
                .expect_err("Kafka's names are not oxbow's")
                .0
        };
        // A dotted key, as a Kafka properties file has it, and a quoted one.
        for line in [
            "group.min.session.timeout.ms = 1000",
            "\"group.min.session.timeout.ms\" = 1000",
        ] {
            let error = top(line);
            assert_eq!(
                error,
                "unknown key `group.min.session.timeout.ms`: that is Kafka's name for the \
                 setting; oxbow's is `min_session_timeout_ms` in the [groups] table \
                 (docs/operations.md lists every key)"
            );
        }
        assert!(top("auto.create.topics.enable = true")
            .contains("oxbow's is the top-level key `auto_create_topics`"));
        assert!(top("offsets.retention.minutes = 5")
            .contains("`offsets_retention_minutes` in the [groups] table"));
        // Inside a table too.
        let error = Config::parse(&format!("{GOOD}\n[log]\nsegment.bytes = 1048576\n"))
            .expect_err("invalid")
            .0;
        assert!(error.contains("`log.segment.bytes`"), "{error}");
        assert!(
            error.contains("`segment_bytes` in the [log] table"),
            "{error}"
        );
        let error = Config::parse(&format!(
            "{GOOD}\n[groups]\n\"group.initial.rebalance.delay.ms\" = 0\n"
        ))
        .expect_err("invalid")
        .0;
        assert!(
            error.contains("`initial_rebalance_delay_ms` in the [groups]"),
            "{error}"
        );
        // Other unknown keys keep the parser's message, which names the key.
        let error = top("min.insync.replicas = 2");
        assert!(error.contains("unknown field `min`"), "{error}");
    }

    #[test]
    fn errors_name_the_field() {
        let bad = GOOD.replace("replication_factor = 2", "replication_factor = 5");
        let error = Config::parse(&bad).expect_err("invalid");
        assert!(
            error.0.contains("topics.events.replication_factor"),
            "{error}"
        );
        let bad = GOOD.replace("node_id = 1", "node_id = 4194304");
        assert!(Config::parse(&bad)
            .expect_err("invalid")
            .0
            .starts_with("node_id: 4194304 is past 4194303"));
        let bad = GOOD.replace("peer_secret = \"sixteen bytes at least\"", "");
        assert!(Config::parse(&bad)
            .expect_err("invalid")
            .0
            .starts_with("peer_secret: required"));
        let bad = GOOD.replace("sixteen bytes at least", "short");
        assert!(Config::parse(&bad)
            .expect_err("invalid")
            .0
            .contains("needs at least 16"));
        let bad = GOOD.replace("partitions = 3", "partitions = 3\n        colour = 1");
        assert!(Config::parse(&bad)
            .expect_err("invalid")
            .0
            .contains("colour"));
    }

    /// Kafka counts node ids from 0 (`node.id=0`), and so may a configuration.
    #[test]
    fn node_ids_start_at_zero() {
        let text = GOOD
            .replace("node_id = 1", "node_id = 0")
            .replace("id = 2", "id = 1");
        let config = Config::parse(&text).expect("valid");
        assert_eq!(config.all_nodes(), vec![NodeId(0), NodeId(1)]);
        let bad = GOOD.replace("id = 2", "id = 4294967296");
        let error = Config::parse(&bad).expect_err("invalid").0;
        assert!(
            error.starts_with("peers: node id 4294967296 is past"),
            "{error}"
        );
    }

    /// Addresses are `host:port` with a host name or an IP literal (as Kafka's `listeners` and
    /// `advertised.listeners`), and clients are told the advertised host as written.
    #[test]
    fn addresses_take_host_names() {
        let text = GOOD
            .replace("kafka_listen = \"127.0.0.1:9092\"", "kafka_listen = \"0.0.0.0:9092\"\n        kafka_advertised = \"broker-1.example.com:9092\"")
            .replace("peer_listen = \"127.0.0.1:19092\"", "peer_listen = \"localhost:19092\"")
            .replace("\"127.0.0.1:19093\"", "\"oxbow-2.oxbow.default.svc:19093\"")
            .replace("\"127.0.0.1:9093\"", "\"[::1]:9093\"");
        let config = Config::parse(&text).expect("valid");
        assert_eq!(config.kafka_listen.to_string(), "0.0.0.0:9092");
        assert_eq!(config.peer_listen.host(), "localhost");
        assert_eq!(
            config.kafka_address(NodeId(1)).map(ToString::to_string),
            Some("broker-1.example.com:9092".to_string())
        );
        assert_eq!(
            config.kafka_address(NodeId(2)).map(ToString::to_string),
            Some("[::1]:9093".to_string())
        );
        assert_eq!(
            config.peers[0].peer_address.host(),
            "oxbow-2.oxbow.default.svc"
        );
        assert_eq!(config.peers[0].peer_address.port(), 19093);
        // Without an advertised address, clients are told the listen address.
        let config = Config::parse(GOOD).expect("valid");
        assert_eq!(
            config.kafka_address(NodeId(1)).map(ToString::to_string),
            Some("127.0.0.1:9092".to_string())
        );

        for (from, to, names) in [
            ("\"127.0.0.1:19093\"", "\"oxbow-2\"", "the port is missing"),
            ("\"127.0.0.1:9093\"", "\":9093\"", "the host is missing"),
            (
                "\"127.0.0.1:9092\"",
                "\"local host:9092\"",
                "neither an IP address nor a host name",
            ),
            (
                "\"127.0.0.1:19093\"",
                "\"oxbow-2:0\"",
                "peers.peer_address of node 2",
            ),
        ] {
            let bad = GOOD.replace(from, to);
            let error = Config::parse(&bad).expect_err(to).0;
            assert!(error.contains(names), "{to}: {error}");
        }
    }
}
