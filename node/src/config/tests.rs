//! The configuration's parsing and checks.

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
fn the_sparse_index_bound_defaults_reaches_the_core_and_is_checked() {
    let config = Config::parse(GOOD).expect("valid");
    assert_eq!(config.log.index_points_max, 1_000_000);
    assert_eq!(
        crate::runtime::core_config(&config).index_points_max,
        1_000_000
    );
    let with = |line: &str| Config::parse(&format!("{GOOD}\n[log]\n{line}\n"));
    let config = with("index_points_max = 5000").expect("valid");
    assert_eq!(crate::runtime::core_config(&config).index_points_max, 5_000);
    // A checkpoint holds 24 bytes a point, in one storage frame of at most 64 MiB.
    for points in ["999", "2000001"] {
        let error = with(&format!("index_points_max = {points}")).expect_err("invalid");
        assert!(error.0.starts_with("log.index_points_max"), "{error}");
    }
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
    assert_eq!(
        (core.groups_max, config.groups.per_partition_max),
        (100_000, 100_000)
    );
    assert_eq!(
        (core.state_bytes_max, config.groups.state_bytes_max),
        (32 << 20, 32 << 20)
    );

    let text = format!(
        "{GOOD}\n        [groups]\n        min_session_timeout_ms = 1000\n        \
         max_session_timeout_ms = 60000\n        initial_rebalance_delay_ms = 0\n        \
         offsets_retention_minutes = 60\n        per_partition_max = 500\n        \
         state_bytes_max = 1048576\n"
    );
    let config = Config::parse(&text).expect("valid");
    let core = crate::runtime::core_config(&config).coordinator;
    assert_eq!(core.min_session_timeout_ms, 1_000);
    assert_eq!(core.max_session_timeout_ms, 60_000);
    assert_eq!(core.initial_rebalance_delay_ms, 0);
    assert_eq!(core.offsets_retention_ms, 3_600_000);
    assert_eq!(core.groups_max, 500);
    assert_eq!(core.state_bytes_max, 1 << 20);
}

#[test]
fn transaction_settings_have_defaults_reach_the_core_and_name_bad_fields() {
    let config = Config::parse(GOOD).expect("valid");
    let core = crate::runtime::core_config(&config).txn;
    assert_eq!(
        core.max_timeout_ms, 900_000,
        "Kafka's transaction.max.timeout.ms"
    );
    assert_eq!(core.transactional_ids_max, 100_000);
    assert_eq!(core.state_bytes_max, 32 << 20);
    assert_eq!(
        (core.check_interval_ms, core.id_expiration_ms),
        (10_000, 604_800_000),
        "Kafka's defaults"
    );
    assert_eq!(config.transactions.state_partitions, 8);

    let text = format!(
        "{GOOD}\n[transactions]\nstate_partitions = 3\nmax_timeout_ms = 60000\n\
         per_partition_max = 10\ntimeout_check_interval_ms = 500\nid_expiration_ms = 60000\n"
    );
    let config = Config::parse(&text).expect("valid");
    let core = crate::runtime::core_config(&config).txn;
    assert_eq!(
        (core.max_timeout_ms, core.transactional_ids_max),
        (60_000, 10)
    );
    assert_eq!(
        (core.check_interval_ms, core.id_expiration_ms),
        (500, 60_000)
    );
    assert_eq!(config.transactions.state_partitions, 3);

    let with = |line: &str| Config::parse(&format!("{GOOD}\n[transactions]\n{line}\n"));
    for (line, field) in [
        ("state_partitions = 0", "transactions.state_partitions"),
        ("max_timeout_ms = 0", "transactions.max_timeout_ms"),
        ("per_partition_max = 0", "transactions.per_partition_max"),
        ("state_bytes_max = 1000", "transactions.state_bytes_max"),
        ("state_bytes_max = 67108864", "transactions.state_bytes_max"),
        (
            "timeout_check_interval_ms = 0",
            "transactions.timeout_check_interval_ms",
        ),
        ("id_expiration_ms = 0", "transactions.id_expiration_ms"),
    ] {
        let error = with(line).expect_err("invalid");
        assert!(error.0.starts_with(field), "{error}");
    }
    let error =
        Config::parse(&GOOD.replace("[[peers]]", "transaction.max.timeout.ms = 5\n[[peers]]"))
            .expect_err("Kafka's name")
            .0;
    assert!(
        error.contains("`max_timeout_ms` in the [transactions] table"),
        "{error}"
    );
}

#[test]
fn bad_group_settings_name_the_field() {
    let with = |groups: &str| Config::parse(&format!("{GOOD}\n[groups]\n{groups}\n"));
    let error = with("min_session_timeout_ms = 0").expect_err("invalid");
    assert!(
        error.0.starts_with("groups.min_session_timeout_ms"),
        "{error}"
    );
    let error =
        with("min_session_timeout_ms = 10000\nmax_session_timeout_ms = 9000").expect_err("invalid");
    assert!(
        error.0.starts_with("groups.max_session_timeout_ms"),
        "{error}"
    );
    let error = with("offsets_retention_minutes = 0").expect_err("invalid");
    assert!(
        error.0.starts_with("groups.offsets_retention_minutes"),
        "{error}"
    );
    let error = with("per_partition_max = 0").expect_err("invalid");
    assert!(error.0.starts_with("groups.per_partition_max"), "{error}");
    // A snapshot is one storage frame of at most 64 MiB.
    for bytes in ["1048575", "50331649", "67108864"] {
        let error = with(&format!("state_bytes_max = {bytes}")).expect_err("invalid");
        assert!(error.0.starts_with("groups.state_bytes_max"), "{error}");
    }
    with("state_bytes_max = 50331648").expect("48 MiB is allowed");
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

#[test]
fn partition_limits_default_and_reach_the_core() {
    let config = Config::parse(GOOD).expect("valid");
    assert_eq!(
        (config.max_partitions, config.max_partitions_per_node),
        (100_000, 10_000)
    );
    let core = crate::runtime::core_config(&config);
    assert_eq!(core.partition_limits, PartitionLimits::DEFAULT);
    // Top-level keys go before the first table.
    let set = GOOD.replacen(
        "node_id = 1",
        "node_id = 1\n    max_partitions = 500\n    max_partitions_per_node = 200",
        1,
    );
    let core = crate::runtime::core_config(&Config::parse(&set).expect("valid"));
    assert_eq!(
        core.partition_limits,
        PartitionLimits {
            cluster: 500,
            per_node: 200
        }
    );
    for (bad, field) in [
        ("max_partitions = 0", "max_partitions:"),
        ("max_partitions = 1000001", "max_partitions:"),
        ("max_partitions_per_node = 0", "max_partitions_per_node:"),
    ] {
        let key = bad.split(" =").next().expect("a key");
        let text = set
            .lines()
            .map(|line| {
                if line.trim_start().starts_with(&format!("{key} =")) {
                    bad
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let error = Config::parse(&text).expect_err(bad);
        assert!(error.0.starts_with(field), "{bad}: {error}");
    }
}

#[test]
fn the_request_read_timeout_defaults_to_30_s_and_is_checked() {
    let config = Config::parse(GOOD).expect("valid");
    assert_eq!(config.connections.request_read_timeout_ms, 30_000);
    let with = |value: &str| {
        Config::parse(&format!(
            "{GOOD}\n[connections]\nrequest_read_timeout_ms = {value}\n"
        ))
    };
    let config = with("2000").expect("valid");
    assert_eq!(config.connections.request_read_timeout_ms, 2_000);
    for bad in ["999", "3600001"] {
        let error = with(bad).expect_err(bad);
        assert!(
            error.0.starts_with("connections.request_read_timeout_ms"),
            "{error}"
        );
    }
}

#[test]
fn the_response_write_timeout_defaults_to_30_s_and_is_checked() {
    let config = Config::parse(GOOD).expect("valid");
    assert_eq!(config.connections.response_write_timeout_ms, 30_000);
    let with = |value: &str| {
        Config::parse(&format!(
            "{GOOD}\n[connections]\nresponse_write_timeout_ms = {value}\n"
        ))
    };
    let config = with("2000").expect("valid");
    assert_eq!(config.connections.response_write_timeout_ms, 2_000);
    for bad in ["999", "3600001"] {
        let error = with(bad).expect_err(bad);
        assert!(
            error.0.starts_with("connections.response_write_timeout_ms"),
            "{error}"
        );
    }
}

#[test]
fn peer_handshakes_default_to_64_and_are_checked() {
    let config = Config::parse(GOOD).expect("valid");
    assert_eq!(config.connections.peer_handshakes_max, 64);
    let with = |value: &str| {
        Config::parse(&format!(
            "{GOOD}\n[connections]\npeer_handshakes_max = {value}\n"
        ))
    };
    assert_eq!(with("8").expect("valid").connections.peer_handshakes_max, 8);
    let error = with("0").expect_err("zero");
    assert!(
        error.0.starts_with("connections.peer_handshakes_max"),
        "{error}"
    );
}

#[test]
fn member_metadata_is_bounded_within_a_group_entry() {
    let config = Config::parse(GOOD).expect("valid");
    assert_eq!(config.groups.member_metadata_bytes_max, 1 << 20);
    let core = crate::runtime::core_config(&config).coordinator;
    assert_eq!(core.member_metadata_bytes_max, 1 << 20);
    let with = |value: &str| {
        Config::parse(&format!(
            "{GOOD}\n[groups]\nmember_metadata_bytes_max = {value}\n"
        ))
    };
    let core = crate::runtime::core_config(&with("65536").expect("valid")).coordinator;
    assert_eq!(core.member_metadata_bytes_max, 65_536);
    for bad in ["1023", "4194305"] {
        let error = with(bad).expect_err(bad);
        assert!(
            error.0.starts_with("groups.member_metadata_bytes_max"),
            "{error}"
        );
    }
}
