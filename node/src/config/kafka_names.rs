//! Kafka's names for the settings oxbow has: a key written under one is refused with what
//! oxbow calls it.

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
    (
        "transaction.state.log.num.partitions",
        "transactions",
        "state_partitions",
    ),
    (
        "transaction.max.timeout.ms",
        "transactions",
        "max_timeout_ms",
    ),
    (
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "transactions",
        "timeout_check_interval_ms",
    ),
    (
        "transactional.id.expiration.ms",
        "transactions",
        "id_expiration_ms",
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
    (
        "log.cleaner.dedupe.buffer.size",
        "log",
        "cleaner_dedupe_buffer_bytes",
    ),
    (
        "log.cleaner.io.max.bytes.per.second",
        "log",
        "cleaner_io_bytes_per_second",
    ),
    ("log.cleaner.backoff.ms", "log", "cleaner_backoff_ms"),
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
pub(super) fn kafka_name_hint(text: &str) -> Option<String> {
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
