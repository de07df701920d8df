//! The configuration's tables: `[log]`, `[connections]`, `[producers]`, `[groups]` and
//! `[transactions]`, each
//! with its defaults (Kafka's, under Kafka's names where Kafka has them) and its checks.

use oxbow_core::coordinator::CoordinatorConfig;
use oxbow_core::txn::TxnConfig;
use serde::Deserialize;

use super::ConfigError;

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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
    /// Groups one `__consumer_offsets` partition holds at most (with members, committed
    /// offsets or a stored generation): past it a new group's JoinGroup or OffsetCommit is
    /// refused with COORDINATOR_NOT_AVAILABLE, logged once until there is room again. Kafka
    /// has no such limit.
    pub per_partition_max: usize,
    /// Most bytes the coordinator keeps of one member: its assignors' metadata (the
    /// subscription), client id and host. A larger JoinGroup is refused with INVALID_REQUEST
    /// and logged. At most `group_entry_bytes_max`, since a membership is stored whole.
    pub member_metadata_bytes_max: usize,
    /// Bytes one `__consumer_offsets` partition's state takes at most, encoded (every group's
    /// offsets and latest membership: the partition's snapshot, written as one storage frame
    /// of at most 64 MiB). What would grow it past this is refused: a new group with
    /// COORDINATOR_NOT_AVAILABLE, an offset commit with INVALID_COMMIT_OFFSET_SIZE, a
    /// membership with UNKNOWN_SERVER_ERROR; logged once. 32 MiB by default.
    pub state_bytes_max: usize,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        let core = CoordinatorConfig::default();
        Self {
            min_session_timeout_ms: core.min_session_timeout_ms,
            max_session_timeout_ms: core.max_session_timeout_ms,
            initial_rebalance_delay_ms: core.initial_rebalance_delay_ms,
            offsets_retention_minutes: core.offsets_retention_ms / 60_000,
            per_partition_max: core.groups_max,
            member_metadata_bytes_max: core.member_metadata_bytes_max,
            state_bytes_max: core.state_bytes_max,
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
            groups_max: self.per_partition_max,
            member_metadata_bytes_max: self.member_metadata_bytes_max,
            state_bytes_max: self.state_bytes_max,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        if self.member_metadata_bytes_max < 1_024 {
            return Err(ConfigError(format!(
                "groups.member_metadata_bytes_max: {} is under 1024",
                self.member_metadata_bytes_max
            )));
        }
        if !(1..=1_000_000).contains(&self.per_partition_max) {
            return Err(ConfigError(format!(
                "groups.per_partition_max: {} is outside 1..=1000000",
                self.per_partition_max
            )));
        }
        if self.offsets_retention_minutes < 1 {
            return Err(ConfigError(
                "groups.offsets_retention_minutes: must be at least 1".into(),
            ));
        }
        if !((1 << 20)..=(48 << 20)).contains(&self.state_bytes_max) {
            return Err(ConfigError(format!(
                "groups.state_bytes_max: {} is outside 1 MiB..=48 MiB (a snapshot is one \
                 storage frame of at most 64 MiB)",
                self.state_bytes_max
            )));
        }
        Ok(())
    }
}

/// The transaction coordinators' settings, under Kafka's broker setting names.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionsConfig {
    /// Partitions of the internal `__transaction_state` topic, created when the first client
    /// looks for a transaction coordinator (Kafka's `transaction.state.log.num.partitions`;
    /// 8, as oxbow's `offsets_topic_partitions`, where Kafka has 50: a coordinator partition
    /// never goes quiet, so each costs a little CPU at idle). Fixed once created:
    /// transactional ids are hashed over them.
    pub state_partitions: u32,
    /// Longest `transaction.timeout.ms` a producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`, 15 minutes); InitProducerId asking for more is refused
    /// with INVALID_TRANSACTION_TIMEOUT.
    pub max_timeout_ms: u32,
    /// Transactional ids one `__transaction_state` partition holds at most: past it an
    /// InitProducerId for a new one is refused with COORDINATOR_NOT_AVAILABLE, logged once
    /// until there is room again. Kafka has no such limit.
    pub per_partition_max: usize,
    /// Bytes one `__transaction_state` partition's state takes at most, encoded (it is the
    /// partition's snapshot, written as one storage frame of at most 64 MiB): a new
    /// transactional id that would pass it is refused the same way. 32 MiB by default.
    pub state_bytes_max: usize,
    /// How often a coordinator looks for transactions open past their timeout, to abort them,
    /// and for expired ids (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s).
    pub timeout_check_interval_ms: u64,
    /// A transactional id with no request for this long and no open transaction is removed
    /// (Kafka's `transactional.id.expiration.ms`, 7 days).
    pub id_expiration_ms: u64,
}

impl Default for TransactionsConfig {
    fn default() -> Self {
        let core = TxnConfig::default();
        Self {
            state_partitions: 8,
            max_timeout_ms: core.max_timeout_ms,
            per_partition_max: core.transactional_ids_max,
            state_bytes_max: core.state_bytes_max,
            timeout_check_interval_ms: core.check_interval_ms,
            id_expiration_ms: core.id_expiration_ms as u64,
        }
    }
}

impl TransactionsConfig {
    /// The core's transaction coordinator settings.
    pub fn coordinator(&self) -> TxnConfig {
        TxnConfig {
            max_timeout_ms: self.max_timeout_ms,
            transactional_ids_max: self.per_partition_max,
            state_bytes_max: self.state_bytes_max,
            check_interval_ms: self.timeout_check_interval_ms,
            id_expiration_ms: self.id_expiration_ms as i64,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1_000).contains(&self.state_partitions) {
            return Err(ConfigError(format!(
                "transactions.state_partitions: {} is outside 1..=1000",
                self.state_partitions
            )));
        }
        if !(1..=i32::MAX as u32).contains(&self.max_timeout_ms) {
            return Err(ConfigError(format!(
                "transactions.max_timeout_ms: {} is outside 1..={}",
                self.max_timeout_ms,
                i32::MAX
            )));
        }
        if !(1..=1_000_000).contains(&self.per_partition_max) {
            return Err(ConfigError(format!(
                "transactions.per_partition_max: {} is outside 1..=1000000",
                self.per_partition_max
            )));
        }
        if !((1 << 20)..=(48 << 20)).contains(&self.state_bytes_max) {
            return Err(ConfigError(format!(
                "transactions.state_bytes_max: {} is outside 1 MiB..=48 MiB (a snapshot is one \
                 storage frame of at most 64 MiB)",
                self.state_bytes_max
            )));
        }
        if !(1..=3_600_000).contains(&self.timeout_check_interval_ms) {
            return Err(ConfigError(format!(
                "transactions.timeout_check_interval_ms: {} is outside 1..=3600000",
                self.timeout_check_interval_ms
            )));
        }
        if !(1..=i64::MAX as u64).contains(&self.id_expiration_ms) {
            return Err(ConfigError(format!(
                "transactions.id_expiration_ms: {} is outside 1..={}",
                self.id_expiration_ms,
                i64::MAX
            )));
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
    /// Once a request's size is read and its bytes are counted against
    /// `queued_max_request_bytes`, the rest of it must arrive within this long, or the
    /// connection is closed (logged) and the bytes freed. 30 s, the time Kafka's clients
    /// (`request.timeout.ms`) give a whole request before they give up on it.
    pub request_read_timeout_ms: u64,
    /// An answer must be written to its client in full within this long once its writing
    /// starts, or the connection is closed (logged) and the bytes of the requests it holds
    /// freed: a client that stops reading must not keep them counted against
    /// `queued_max_request_bytes`. 30 s, as `request_read_timeout_ms`: Kafka's clients
    /// (`request.timeout.ms`) give up on a request whose answer takes longer to arrive.
    pub response_write_timeout_ms: u64,
    /// Connections to the peer port that are still in their handshake, at once; past it a
    /// new one is closed at once, with a log line (the 1st, 10th, 100th...). A cluster's
    /// peers dial one connection each at a time, so 64 leaves room for a cluster of dozens.
    pub peer_handshakes_max: usize,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            connections_max_idle_ms: 600_000,
            queued_max_request_bytes: 512 << 20,
            request_read_timeout_ms: 30_000,
            response_write_timeout_ms: 30_000,
            peer_handshakes_max: 64,
        }
    }
}

impl ConnectionsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        if !(1_000..=3_600_000).contains(&self.request_read_timeout_ms) {
            return Err(ConfigError(format!(
                "connections.request_read_timeout_ms: {} is outside 1000..=3600000",
                self.request_read_timeout_ms
            )));
        }
        if !(1_000..=3_600_000).contains(&self.response_write_timeout_ms) {
            return Err(ConfigError(format!(
                "connections.response_write_timeout_ms: {} is outside 1000..=3600000",
                self.response_write_timeout_ms
            )));
        }
        if self.peer_handshakes_max == 0 {
            return Err(ConfigError(
                "connections.peer_handshakes_max must be at least 1".into(),
            ));
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
    /// Most points of one partition's sparse offset and time index (a point per MiB of
    /// records no longer in memory, 24 bytes each in every checkpoint, which is one storage
    /// frame of at most 64 MiB). Past it every other point goes, its span merged into the one
    /// before: reads of old records then start up to twice as far before what they want.
    pub index_points_max: usize,
    /// Memory of the log cleaner's offset map (Kafka's `log.cleaner.dedupe.buffer.size`):
    /// 24 bytes a key, so 32 MiB maps about 1.2 million keys in one pass; a partition with
    /// more dirty keys is cleaned in several passes.
    pub cleaner_dedupe_buffer_bytes: u64,
    /// Bytes a second the log cleaner reads and writes at most, across the node (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`), so that produce latency holds while it runs.
    pub cleaner_io_bytes_per_second: u64,
    /// How long the log cleaner waits before looking again when no compacted partition
    /// needs cleaning (Kafka's `log.cleaner.backoff.ms`).
    pub cleaner_backoff_ms: u64,
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
            index_points_max: 1_000_000,
            cleaner_dedupe_buffer_bytes: oxbow_core::clean::DEDUPE_BUFFER_BYTES_DEFAULT as u64,
            cleaner_io_bytes_per_second: 32 << 20,
            cleaner_backoff_ms: 15_000,
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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        if !((1 << 20)..=(4 << 30)).contains(&self.cleaner_dedupe_buffer_bytes) {
            return Err(ConfigError(format!(
                "log.cleaner_dedupe_buffer_bytes: {} is outside 1048576..=4294967296",
                self.cleaner_dedupe_buffer_bytes
            )));
        }
        if self.cleaner_io_bytes_per_second < 1 << 20 {
            return Err(ConfigError(format!(
                "log.cleaner_io_bytes_per_second: {} is under 1048576",
                self.cleaner_io_bytes_per_second
            )));
        }
        if self.cleaner_backoff_ms == 0 {
            return Err(ConfigError(
                "log.cleaner_backoff_ms: must be at least 1".into(),
            ));
        }
        if !(1_000..=2_000_000).contains(&self.index_points_max) {
            return Err(ConfigError(format!(
                "log.index_points_max: {} is outside 1000..=2000000 (a checkpoint holds 24 \
                 bytes a point in one storage frame of at most 64 MiB)",
                self.index_points_max
            )));
        }
        Ok(())
    }
}
