//! End-to-end: compacted topics as Kafka's clients see them, with rdkafka (librdkafka)
//! against real `oxbow node` processes. Topics are created with exactly the configurations
//! Kafka Connect, Kafka Streams and Schema Registry send (each taken from its source, cited
//! where it is used), DescribeConfigs answers the checks those clients make, a record without
//! a key is refused on a compacted topic, DeleteRecords on a compact-only one, and a topic
//! switches from `delete` to `compact` at run time, and the log cleaner leaves a consumer
//! reading from the start each key's latest value at its own offset.

use std::time::Duration;

use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

mod common;
use common::{call, Cluster};

/// A topic to create: its name, partitions and configuration overrides.
type TopicSpec<'a> = (&'a str, i32, &'a [(&'a str, &'a str)]);

struct Admin {
    runtime: tokio::runtime::Runtime,
    admin: AdminClient<DefaultClientContext>,
    options: AdminOptions,
}

impl Admin {
    fn new(cluster: &Cluster) -> Self {
        Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            admin: ClientConfig::new()
                .set("bootstrap.servers", cluster.bootstrap())
                .create()
                .expect("admin client"),
            options: AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        }
    }

    /// Creates topics of `(name, partitions, configs)`, three replicas each; every creation
    /// must succeed.
    fn create(&self, topics: &[TopicSpec<'_>]) {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, partitions, configs)| {
                configs.iter().fold(
                    NewTopic::new(name, *partitions, TopicReplication::Fixed(3)),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        let created = self
            .runtime
            .block_on(self.admin.create_topics(&new, &self.options))
            .expect("create topics");
        assert!(created.iter().all(Result::is_ok), "{created:?}");
    }

    /// A topic's configuration value as DescribeConfigs answers it, and whether it is the
    /// default.
    /// [`Admin::described`], asked again (up to 10 s) until it is `expected`: a change goes
    /// through the metadata log, and the broker that answers may not have applied it yet (as
    /// a KRaft broker may lag its controller). Returns what was last described.
    fn described_as(&self, topic: &str, key: &str, expected: (&str, bool)) -> (String, bool) {
        let mut described = self.described(topic, key);
        for _ in 0..100 {
            if (described.0.as_str(), described.1) == expected {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            described = self.described(topic, key);
        }
        described
    }

    fn described(&self, topic: &str, key: &str) -> (String, bool) {
        let described = self
            .runtime
            .block_on(
                self.admin
                    .describe_configs(&[ResourceSpecifier::Topic(topic)], &self.options),
            )
            .expect("describe configs");
        let resource = described[0].as_ref().expect("described");
        let entry = resource
            .get(key)
            .unwrap_or_else(|| panic!("{topic}: no {key}"));
        (entry.value.clone().unwrap_or_default(), entry.is_default)
    }

    /// DeleteRecords of partition 0 up to `offset`: the error code, if any.
    fn delete_records(&self, topic: &str, offset: i64) -> Option<RDKafkaErrorCode> {
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(topic, 0, Offset::Offset(offset))
            .expect("add");
        let result = self
            .runtime
            .block_on(self.admin.delete_records(&offsets, &self.options))
            .expect("delete records");
        let partition = result.find_partition(topic, 0).expect("partition");
        partition.error().err().and_then(|e| e.rdkafka_error_code())
    }
}

/// Connect's `TopicAdmin.verifyTopicCleanupPolicyOnlyCompact`
/// (connect/runtime/src/main/java/org/apache/kafka/connect/util/TopicAdmin.java): the
/// described `cleanup.policy`, split on commas, trimmed and lowercased, must be `{compact}`.
fn only_compact(policy: &str) -> bool {
    let policies: std::collections::BTreeSet<String> =
        policy.split(',').map(|p| p.trim().to_lowercase()).collect();
    policies == std::collections::BTreeSet::from(["compact".to_string()])
}

/// Sends one record to partition 0 (acks=all, not idempotent: a refusal fails just it).
fn send(cluster: &Cluster, topic: &str, key: Option<&str>) -> Result<(), KafkaError> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut record = FutureRecord::<str, str>::to(topic)
        .partition(0)
        .payload("v");
    if let Some(key) = key {
        record = record.key(key);
    }
    runtime
        .block_on(producer.send(record, Duration::from_secs(30)))
        .map(|_| ())
        .map_err(|(e, _)| e)
}

fn refused_as_invalid_record(sent: Result<(), KafkaError>) -> bool {
    matches!(
        sent,
        Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::InvalidRecord
        ))
    )
}

#[test]
fn connect_streams_and_schema_registry_topics_are_created_and_described_as_compacted() {
    let mut cluster = Cluster::start();
    cluster.wait_for_leaders();
    let admin = Admin::new(&cluster);
    // Kafka Connect (apache/kafka@1eb7644): KafkaConfigBackingStore, KafkaOffsetBackingStore
    // and KafkaStatusBackingStore (connect/runtime/src/main/java/org/apache/kafka/connect/
    // storage/) each define their topic with `TopicAdmin.defineTopic(topic).config(user)
    // .compacted()`, which puts `cleanup.policy=compact` (TopicAdmin.NewTopicBuilder), with
    // 1, `offset.storage.partitions` (25) and `status.storage.partitions` (5) partitions.
    // Kafka Streams (streams/src/main/java/org/apache/kafka/streams/processor/internals/):
    // every internal topic gets `message.timestamp.type=CreateTime`
    // (InternalTopicConfig.INTERNAL_TOPIC_DEFAULT_OVERRIDES); a key-value store's changelog
    // `cleanup.policy=compact` (UnwindowedUnversionedChangelogTopicConfig); a versioned
    // store's also `min.compaction.lag.ms` = its history retention + 1 day
    // (VersionedChangelogTopicConfig); a window store's `cleanup.policy=compact,delete` and
    // `retention.ms` = its retention + `windowstore.changelog.additional.retention.ms` (1 day)
    // (WindowedChangelogTopicConfig); a repartition topic `cleanup.policy=delete`,
    // `segment.bytes=52428800`, `retention.ms=-1` (RepartitionTopicConfig).
    // Schema Registry (confluentinc/schema-registry@794611b,
    // core/src/main/java/io/confluent/kafka/schemaregistry/storage/KafkaStore.java,
    // `createSchemaTopic`): `_schemas` with 1 partition and `cleanup.policy=compact`.
    let compact: &[(&str, &str)] = &[("cleanup.policy", "compact")];
    let topics: &[TopicSpec<'_>] = &[
        ("connect-configs", 1, compact),
        ("connect-offsets", 25, compact),
        ("connect-status", 5, compact),
        (
            "app-kv-store-changelog",
            1,
            &[
                ("message.timestamp.type", "CreateTime"),
                ("cleanup.policy", "compact"),
            ],
        ),
        (
            "app-versioned-store-changelog",
            1,
            &[
                ("message.timestamp.type", "CreateTime"),
                ("cleanup.policy", "compact"),
                ("min.compaction.lag.ms", "172800000"),
            ],
        ),
        (
            "app-window-store-changelog",
            1,
            &[
                ("message.timestamp.type", "CreateTime"),
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "172800000"),
            ],
        ),
        (
            "app-repartition",
            1,
            &[
                ("message.timestamp.type", "CreateTime"),
                ("cleanup.policy", "delete"),
                ("segment.bytes", "52428800"),
                ("retention.ms", "-1"),
            ],
        ),
        ("_schemas", 1, compact),
    ];
    admin.create(topics);
    // DescribeConfigs echoes every value as set (source: the topic's own), and the checks the
    // clients make hold: Connect's and Schema Registry's (`KafkaStore.verifySchemaTopic`
    // compares the policy with "compact") that the policy is compact alone.
    for (name, _, configs) in topics {
        for (key, value) in *configs {
            assert_eq!(
                admin.described(name, key),
                (value.to_string(), false),
                "{name}: {key}"
            );
        }
    }
    for name in [
        "connect-configs",
        "connect-offsets",
        "connect-status",
        "_schemas",
    ] {
        let (policy, _) = admin.described(name, "cleanup.policy");
        assert!(only_compact(&policy), "{name}: {policy}");
    }
    assert!(!only_compact(
        &admin
            .described("app-window-store-changelog", "cleanup.policy")
            .0
    ));
    // The compaction keys not set read as Kafka's defaults.
    for (key, default) in [
        ("min.cleanable.dirty.ratio", "0.5"),
        ("min.compaction.lag.ms", "0"),
        ("max.compaction.lag.ms", "9223372036854775807"),
        ("delete.retention.ms", "86400000"),
    ] {
        assert_eq!(
            admin.described("_schemas", key),
            (default.to_string(), true),
            "{key}"
        );
    }
    // Kafka's check that the minimum compaction lag is not above the maximum.
    let refused = admin
        .runtime
        .block_on(
            admin.admin.create_topics(
                &[NewTopic::new("lags", 1, TopicReplication::Fixed(3))
                    .set("cleanup.policy", "compact")
                    .set("min.compaction.lag.ms", "60000")
                    .set("max.compaction.lag.ms", "1000")],
                &admin.options,
            ),
        )
        .expect("create topics");
    assert!(
        matches!(&refused[0], Err((_, RDKafkaErrorCode::InvalidConfig))),
        "{refused:?}"
    );

    // Produce: a keyless record is refused on both compacted policies (Kafka's
    // `LogValidator.validateKey`), taken with a key, and taken without one where the policy
    // is delete.
    for topic in ["_schemas", "app-window-store-changelog"] {
        let sent = send(&cluster, topic, None);
        assert!(refused_as_invalid_record(sent.clone()), "{topic}: {sent:?}");
        send(&cluster, topic, Some("k")).unwrap_or_else(|e| panic!("{topic}: {e}"));
    }
    send(&cluster, "app-repartition", None).expect("a delete topic takes keyless records");

    // DeleteRecords: refused where the policy lacks delete (Kafka's
    // `Partition.deleteRecordsOnLeader`), taken on compact,delete and delete topics.
    assert_eq!(
        admin.delete_records("_schemas", 1),
        Some(RDKafkaErrorCode::PolicyViolation)
    );
    assert_eq!(admin.delete_records("app-window-store-changelog", 1), None);
    assert_eq!(admin.delete_records("app-repartition", 1), None);
}

/// IncrementalAlterConfigs of one topic's `cleanup.policy` (operation 0 SET, 2 APPEND,
/// 3 SUBTRACT), sent to node `port`: the error code.
fn alter_policy(port: u16, topic: &str, operation: i8, value: &str) -> i16 {
    let mut config = AlterableConfig::default();
    config.name = StrBytes::from_static_str("cleanup.policy");
    config.config_operation = operation;
    config.value = Some(StrBytes::from_string(value.to_string()));
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_string(topic.to_string());
    resource.configs = vec![config];
    let mut request = IncrementalAlterConfigsRequest::default();
    request.resources = vec![resource];
    let response: IncrementalAlterConfigsResponse =
        call(port, ApiKey::IncrementalAlterConfigs, 1, &request);
    response.responses[0].error_code
}

#[test]
fn a_topic_switches_from_delete_to_compact_at_run_time() {
    let mut cluster = Cluster::start();
    cluster.wait_for_leaders();
    let admin = Admin::new(&cluster);
    admin.create(&[("table", 1, &[])]);
    assert_eq!(
        admin.described_as("table", "cleanup.policy", ("delete", true)),
        ("delete".to_string(), true)
    );
    send(&cluster, "table", None).expect("a delete topic takes keyless records");
    let port = cluster.kafka[0];
    assert_eq!(alter_policy(port, "table", 0, "compact"), 0);
    assert_eq!(
        admin.described_as("table", "cleanup.policy", ("compact", false)),
        ("compact".to_string(), false)
    );
    // The leader checks keys once it has applied the change (through the metadata log).
    let mut sent = send(&cluster, "table", None);
    for _ in 0..100 {
        if refused_as_invalid_record(sent.clone()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        sent = send(&cluster, "table", None);
    }
    assert!(refused_as_invalid_record(sent.clone()), "{sent:?}");
    send(&cluster, "table", Some("k")).expect("keyed");
    assert_eq!(
        admin.delete_records("table", 1),
        Some(RDKafkaErrorCode::PolicyViolation)
    );
    // cleanup.policy is a list: APPEND adds delete, SUBTRACT takes compact away again.
    assert_eq!(alter_policy(port, "table", 2, "delete"), 0);
    assert_eq!(
        admin.described_as("table", "cleanup.policy", ("compact,delete", false)),
        ("compact,delete".to_string(), false)
    );
    // The leader takes DeleteRecords once it has applied the change.
    let mut trimmed = admin.delete_records("table", 1);
    for _ in 0..100 {
        if trimmed.is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        trimmed = admin.delete_records("table", 1);
    }
    assert_eq!(trimmed, None);
    assert_eq!(alter_policy(port, "table", 3, "compact"), 0);
    assert_eq!(
        admin.described_as("table", "cleanup.policy", ("delete", false)),
        ("delete".to_string(), false)
    );
    let mut sent = send(&cluster, "table", None);
    for _ in 0..100 {
        if sent.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        sent = send(&cluster, "table", None);
    }
    sent.expect("delete again: keyless records taken");
    // Neither an unknown policy nor none at all is taken (INVALID_CONFIG), and nothing changes.
    assert_eq!(alter_policy(port, "table", 0, "compress"), 40);
    assert_eq!(alter_policy(port, "table", 3, "delete"), 40);
    assert_eq!(
        admin.described_as("table", "cleanup.policy", ("delete", false)),
        ("delete".to_string(), false)
    );
}

/// Partition 0's low watermark (log start offset), as a consumer asks for it.
fn low_watermark(cluster: &Cluster, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    for _ in 0..50 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .create()
            .expect("consumer");
        if let Ok((low, _)) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
            return low;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no watermarks for {topic}");
}

#[test]
fn retention_deletes_from_compact_delete_topics_and_never_from_compact_only_ones() {
    let mut cluster =
        Cluster::start_with("[log]\nsegment_bytes = 2048\nretention_check_interval_ms = 300\n");
    cluster.wait_for_leaders();
    let admin = Admin::new(&cluster);
    admin.create(&[
        (
            "kept",
            1,
            &[("cleanup.policy", "compact"), ("retention.ms", "1000")],
        ),
        (
            "trimmed",
            1,
            &[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "1000"),
            ],
        ),
    ]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let value = vec![b'r'; 100];
    for i in 0..100 {
        for topic in ["kept", "trimmed"] {
            let key = format!("k{}", i % 10);
            let record = FutureRecord::to(topic)
                .partition(0)
                .key(&key)
                .payload(&value);
            runtime
                .block_on(producer.send(record, Duration::from_secs(30)))
                .map_err(|(e, _)| e)
                .expect("send");
        }
    }
    // The same records, the same age, the same retention: the rounds that move the
    // compact,delete topic's log start look at the compact one too, and leave it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while low_watermark(&cluster, "trimmed") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention moved no log start of the compact,delete topic within 30 s"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        low_watermark(&cluster, "kept"),
        0,
        "a compact-only topic keeps its records"
    );
}

/// Every record of partition 0 of `topic` from the start up to its high watermark, as a
/// consumer reads them: (offset, key, value).
fn read_all(cluster: &Cluster, topic: &str) -> Vec<(i64, String, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("add");
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.last().is_none_or(|(o, _, _)| *o + 1 < high) {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {high}",
            out.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            // A node down (a test stops one) is a transport error to skip, not a record.
            let Ok(message) = message else {
                continue;
            };
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            out.push((
                message.offset(),
                text(message.key()),
                text(message.payload()),
            ));
        }
    }
    out
}

/// A compacted topic with small segments and many updates over few keys: the log cleaner
/// (every 200 ms here) leaves a consumer reading from the start fewer records, in offset
/// order, each the one produced at its offset, and every key's latest value.
#[test]
fn the_log_cleaner_leaves_each_keys_latest_value_at_its_offset() {
    // A small entry cache: a fetch of entries still in memory is served the batches as they
    // were appended (cleaning changes the files), so reads go to the cleaned files here.
    let mut cluster = Cluster::start_with(
        "[log]\nsegment_bytes = 2048\ncleaner_backoff_ms = 200\ncache_bytes = 4096\n",
    );
    cluster.wait_for_leaders();
    let admin = Admin::new(&cluster);
    admin.create(&[(
        "cleaned",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    )]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let count = 300;
    for i in 0..count {
        let (key, value) = (format!("k{}", i % 5), format!("v{i}-{}", "x".repeat(40)));
        let record = FutureRecord::to("cleaned")
            .partition(0)
            .key(&key)
            .payload(&value);
        let delivered = runtime
            .block_on(producer.send(record, Duration::from_secs(30)))
            .map_err(|(e, _)| e)
            .expect("send");
        assert_eq!(
            delivered.offset, i,
            "one producer, one record a send: offset i is record i"
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let read = loop {
        let read = read_all(&cluster, "cleaned");
        if read.len() < count as usize / 2 {
            break read;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cleaner left {} of {count} records within 60 s",
            read.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(read.windows(2).all(|w| w[0].0 < w[1].0), "offsets in order");
    for (offset, key, value) in &read {
        assert_eq!(key, &format!("k{}", offset % 5));
        assert!(
            value.starts_with(&format!("v{offset}-")),
            "{offset}: {value}"
        );
    }
    for k in 0..5 {
        let latest = (0..count).rev().find(|i| i % 5 == k).expect("a record");
        assert!(
            read.iter().any(|(offset, _, _)| *offset == latest),
            "the latest record of k{k} (offset {latest}) is read"
        );
    }
}

/// A follower that was down while the leader cleaned catches up from the leader's cleaned
/// files: its own log then holds every offset, each key's latest value at its offset, and
/// only records that were produced there (read from its files after it stops).
#[test]
fn a_follower_behind_the_cleaned_part_catches_up_with_cleaned_entries() {
    use oxbow_core::batch::Batch;
    use oxbow_node::storage::{FsDisk, SegmentLog, SegmentLogOptions};
    let mut cluster = Cluster::start_with(
        "[log]\nsegment_bytes = 2048\ncleaner_backoff_ms = 200\ncache_bytes = 4096\n",
    );
    cluster.wait_for_leaders();
    let admin = Admin::new(&cluster);
    admin.create(&[(
        "cleaned",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    )]);
    cluster.stop(2);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let count = 300i64;
    for i in 0..count {
        let (key, value) = (format!("k{}", i % 5), format!("v{i}-{}", "x".repeat(40)));
        let record = FutureRecord::to("cleaned")
            .partition(0)
            .key(&key)
            .payload(&value);
        let delivered = runtime
            .block_on(producer.send(record, Duration::from_secs(30)))
            .map_err(|(e, _)| e)
            .expect("send");
        assert_eq!(delivered.offset, i);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read_all(&cluster, "cleaned").len() >= count as usize / 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the leader did not clean"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The follower comes back and catches up; then its own files are read.
    let data = cluster.dir.path().join("node-3");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let records = loop {
        cluster.start_node(2);
        std::thread::sleep(Duration::from_secs(2));
        cluster.stop(2);
        let disk = FsDisk::open(&data).expect("data dir");
        let (mut log, state, _) =
            SegmentLog::open(disk, SegmentLogOptions::default()).expect("open");
        // The partition's group: the one whose batches hold our keys.
        let mut records = Vec::new();
        let mut next = None;
        for (id, group) in &state.groups {
            let first = group.snapshot.get_metadata().index + 1;
            let entries = log
                .read_entries(*id, first, u64::MAX, u64::MAX)
                .expect("read");
            let batches: Vec<Batch> = entries
                .iter()
                .filter(|e| e.data.len() >= 61 && e.data[16] == 2)
                .map(|e| Batch::trusted(e.data.clone()))
                .collect();
            let ours: Vec<_> = batches
                .iter()
                .filter(|b| b.record_count() > 0)
                .flat_map(|b| {
                    kafka_protocol::records::RecordBatchDecoder::decode(&mut b.bytes().clone())
                        .expect("decode")
                        .records
                })
                .filter(|r| r.key.as_ref().is_some_and(|k| k.starts_with(b"k")))
                .map(|r| (r.offset, r.value.expect("a value")))
                .collect();
            if !ours.is_empty() {
                // Offsets are contiguous batch to batch, from the first to the last.
                for pair in batches.windows(2) {
                    assert_eq!(pair[0].next_offset(), pair[1].base_offset());
                }
                next = batches.last().map(|b| b.next_offset().0);
                records = ours;
            }
        }
        if next == Some(count) {
            break records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower did not catch up: {next:?}"
        );
    };
    assert!(
        records.len() < count as usize / 2,
        "{} records",
        records.len()
    );
    for (offset, value) in &records {
        assert!(value.starts_with(format!("v{offset}-").as_bytes()));
    }
    for k in 0..5 {
        let latest = (0..count).rev().find(|i| i % 5 == k).expect("a record");
        assert!(
            records.iter().any(|(o, _)| *o == latest),
            "k{k}'s latest at {latest}"
        );
    }
    cluster.start_node(2);
}
