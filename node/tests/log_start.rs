//! End-to-end: a partition's log start offset, with rdkafka (librdkafka) against real
//! `oxbow node` processes. DeleteRecords moves it through the partition's Raft log; every
//! replica then reports it, fetches below it are out of range, and consumers reset past it.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

mod common;
use common::{Cluster, TOPIC};

/// An idempotent acks=all producer that sends at once (a batch per flush).
fn unbatched_producer(cluster: &Cluster) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

/// A runtime for the admin client's futures, the client, and options with a 10 s timeout.
fn admin_client(
    bootstrap: &str,
) -> (
    tokio::runtime::Runtime,
    AdminClient<DefaultClientContext>,
    AdminOptions,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    (runtime, admin, options)
}

/// Produces `count` records to partition 0, acknowledged by every replica.
fn produce(cluster: &Cluster, count: usize) {
    let producer = unbatched_producer(cluster);
    for i in 0..count {
        let value = format!("value-{i}");
        // One record per flush: a batch each, so the log start can fall between batches.
        producer
            .send(BaseRecord::to(TOPIC).partition(0).key("k").payload(&value))
            .map_err(|(e, _)| e)
            .expect("send");
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
}

/// The first record a fresh consumer reads from partition 0 starting at `start`, with
/// `auto.offset.reset = earliest`.
fn first_offset_read(cluster: &Cluster, start: Offset) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "log-start")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, start)
        .expect("assign");
    consumer.assign(&assignment).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            return message.offset();
        }
    }
    panic!(
        "nothing read within 30 s; logs in {}",
        cluster.dir.path().display()
    );
}

/// ListOffsets earliest of partition 0. Retried for a while: a node that has just restarted
/// names no leader for a partition until it hears from the leader or its gossip (issue 15
/// makes nodes tell each other of leadership changes at once).
fn low_watermark(cluster: &Cluster) -> i64 {
    let mut last = None;
    for attempt in 0..50 {
        // A new client each time: librdkafka keeps a partition it found without a leader.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .create()
            .expect("consumer");
        match consumer.fetch_watermarks(TOPIC, 0, Duration::from_secs(10)) {
            Ok((low, _)) => return low,
            Err(e) => last = Some((attempt, e)),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no watermarks: {last:?}");
}

#[test]
fn delete_records_moves_the_log_start_and_consumers_reset_past_it() {
    let mut cluster = Cluster::start();
    cluster.wait_for_leaders();
    produce(&cluster, 100);
    assert_eq!(low_watermark(&cluster), 0);
    let bootstrap = cluster.bootstrap();
    let (runtime, first_admin, options) = admin_client(&bootstrap);
    let delete = |offset: Offset| {
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(TOPIC, 0, offset).expect("add");
        // After a leader change librdkafka's admin client sends to the leader it knew, which
        // answers NOT_LEADER_OR_FOLLOWER, and keeps its metadata: each try is a new client.
        for _ in 0..50 {
            let (_, admin, _) = admin_client(&bootstrap);
            let result = runtime
                .block_on(admin.delete_records(&offsets, &options))
                .expect("delete records");
            let partition = result.find_partition(TOPIC, 0).expect("partition");
            match partition.error() {
                Ok(()) => return partition.offset(),
                Err(e)
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NotLeaderForPartition) =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("delete records: {e}"),
            }
        }
        panic!("no leader took the delete");
    };
    assert_eq!(delete(Offset::Offset(40)), Offset::Offset(40));
    assert_eq!(
        low_watermark(&cluster),
        40,
        "ListOffsets earliest answers it"
    );
    // Below the log start a consumer resets per auto.offset.reset (earliest: the log start).
    assert_eq!(first_offset_read(&cluster, Offset::Offset(10)), 40);
    assert_eq!(first_offset_read(&cluster, Offset::Beginning), 40);
    // It never moves back, and above the high watermark is out of range.
    assert_eq!(delete(Offset::Offset(20)), Offset::Offset(40));
    let mut past = TopicPartitionList::new();
    past.add_partition_offset(TOPIC, 0, Offset::Offset(1_000))
        .expect("add");
    let result = runtime
        .block_on(first_admin.delete_records(&past, &options))
        .expect("delete records");
    assert_eq!(
        result
            .find_partition(TOPIC, 0)
            .expect("partition")
            .error()
            .err()
            .map(|e| e.rdkafka_error_code()),
        Some(Some(RDKafkaErrorCode::OffsetOutOfRange))
    );
    // Every replica applied it: after the leader's node restarts, whoever leads answers it.
    let leader = cluster.leaders()[&0];
    cluster.stop(leader as usize - 1);
    cluster.start_node(leader as usize - 1);
    cluster.wait_for_leaders();
    assert_eq!(low_watermark(&cluster), 40);
    // To the end (Kafka's -1): nothing is left to read until new records come.
    assert_eq!(delete(Offset::End), Offset::Offset(100));
    produce(&cluster, 1);
    assert_eq!(first_offset_read(&cluster, Offset::Beginning), 100);
    // Produce answers the log start offset too, as Kafka does (v5 and later).
    assert_eq!(produce_answer(&cluster), (0, 101, 100));
}

/// A raw Produce v7 of one record to partition 0 at its leader: (error code, base offset,
/// log start offset) of the answer.
fn produce_answer(cluster: &Cluster) -> (i16, i64, i64) {
    let one = common::batch(
        &common::records(1, 3),
        kafka_protocol::records::Compression::None,
    );
    let leader = cluster.leaders()[&0];
    let p =
        common::produce_raw(cluster.kafka[(leader - 1) as usize], one.freeze()).expect("answered");
    (p.error_code, p.base_offset, p.log_start_offset)
}

/// ListOffsets earliest of partition 0 of `topic` (retried while leaders settle).
fn low_watermark_of(cluster: &Cluster, topic: &str) -> i64 {
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

/// Segment files per Raft group in node `i`'s data directory (`g<group>-<number>.seg`).
fn segment_files(cluster: &Cluster, i: usize) -> BTreeMap<u64, usize> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(cluster.dir.path().join(format!("node-{i}"))).expect("dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some((group, _)) = name
            .strip_prefix('g')
            .and_then(|rest| rest.strip_suffix(".seg"))
            .and_then(|stem| stem.split_once('-'))
        {
            *files.entry(group.parse().expect("group id")).or_default() += 1;
        }
    }
    files
}

#[test]
fn retention_by_time_and_by_size_deletes_files_while_an_unlimited_topic_keeps_all() {
    use rdkafka::admin::{AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};

    let mut cluster =
        Cluster::start_with("[log]\nsegment_bytes = 2048\nretention_check_interval_ms = 300\n");
    cluster.wait_for_leaders();
    let (runtime, admin, options) = admin_client(&cluster.bootstrap());
    let created = runtime
        .block_on(
            admin.create_topics(
                &[
                    NewTopic::new("by-time", 1, TopicReplication::Fixed(3))
                        .set("retention.ms", "3000"),
                    NewTopic::new("by-size", 1, TopicReplication::Fixed(3))
                        .set("retention.bytes", "8192"),
                    NewTopic::new("forever", 1, TopicReplication::Fixed(3))
                        .set("retention.ms", "-1"),
                    NewTopic::new("bad-retention", 1, TopicReplication::Fixed(3))
                        .set("retention.ms", "-2"),
                ],
                &options,
            ),
        )
        .expect("create topics");
    assert!(created[..3].iter().all(Result::is_ok), "{created:?}");
    assert!(
        matches!(&created[3], Err((_, RDKafkaErrorCode::InvalidConfig))),
        "{created:?}"
    );
    // DescribeConfigs: the topic's own values, and the broker's default where it has none.
    let described = runtime
        .block_on(admin.describe_configs(
            &[
                ResourceSpecifier::Topic("by-time"),
                ResourceSpecifier::Topic(TOPIC),
            ],
            &options,
        ))
        .expect("describe configs");
    let value = |i: usize, key: &str| {
        let entry = described[i]
            .as_ref()
            .expect("configs")
            .entries
            .iter()
            .find(|e| e.name == key)
            .expect("listed");
        (entry.value.clone().unwrap_or_default(), entry.is_default)
    };
    assert_eq!(value(0, "retention.ms"), ("3000".to_string(), false));
    assert_eq!(value(1, "retention.ms"), ("604800000".to_string(), true));
    assert_eq!(value(1, "retention.bytes"), ("-1".to_string(), true));

    let producer = unbatched_producer(&cluster);
    let value = vec![b'r'; 100];
    for _ in 0..150 {
        for topic in ["by-time", "by-size", "forever"] {
            producer
                .send(BaseRecord::to(topic).partition(0).key("k").payload(&value))
                .map_err(|(e, _)| e)
                .expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
    // By time: 3 s after the records were written, every closed segment is past retention;
    // by size: the oldest segments go until the log is within 8 KiB (plus a segment).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while low_watermark_of(&cluster, "by-time") == 0 || low_watermark_of(&cluster, "by-size") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention moved no log start within 30 s; logs in {}",
            cluster.dir.path().display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let by_time = low_watermark_of(&cluster, "by-time");
    let by_size = low_watermark_of(&cluster, "by-size");
    assert!(by_time > 100, "by-time kept from {by_time} of 150");
    assert!(
        (50..150).contains(&by_size),
        "by-size kept from {by_size} of 150 (each record takes about 170 bytes on disk)"
    );
    assert_eq!(
        low_watermark_of(&cluster, "forever"),
        0,
        "no retention, no deletion"
    );
    // Every replica deleted the files below the log start: the three topics created last
    // have the highest Raft group ids, in the order they were created.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for node in 1..=3 {
        loop {
            let files = segment_files(&cluster, node);
            let newest: Vec<usize> = files.values().rev().take(3).rev().copied().collect();
            let [by_time, by_size, forever] = newest[..] else {
                panic!("node {node}: {files:?}")
            };
            // 150 records of about 170 bytes each fill about 13 segments of 2 KiB.
            assert!(
                forever >= 12,
                "node {node}: the unlimited topic keeps every file: {files:?}"
            );
            if by_time <= 3 && by_size <= 7 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {node} kept files: {files:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Retention changes at run time (AlterConfigs, sent to any node): the unlimited topic's
    // records are older than a second by now, so all of them go (its active segment rolls
    // first, as Kafka's does) and the log start moves to the end.
    let altered = runtime
        .block_on(admin.alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("forever")).set("retention.ms", "1000")],
            &options,
        ))
        .expect("alter configs");
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while low_watermark_of(&cluster, "forever") < 150 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention.ms changed at run time did not empty the topic (log start {})",
            low_watermark_of(&cluster, "forever")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let described = runtime
        .block_on(admin.describe_configs(&[ResourceSpecifier::Topic("forever")], &options))
        .expect("describe configs");
    let retention = described[0]
        .as_ref()
        .expect("configs")
        .get("retention.ms")
        .expect("listed");
    assert_eq!(retention.value.as_deref(), Some("1000"));
    // Unlimited again, and one more record: a consumer from the beginning starts at the log
    // start, where that record is.
    let altered = runtime
        .block_on(admin.alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("forever")).set("retention.ms", "-1")],
            &options,
        ))
        .expect("alter configs");
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    producer
        .send(
            BaseRecord::to("forever")
                .partition(0)
                .key("k")
                .payload(&value),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "retention")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("forever", 0, Offset::Beginning)
        .expect("assign");
    consumer.assign(&assignment).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < deadline, "nothing read");
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let start = low_watermark_of(&cluster, "forever");
            assert_eq!(
                (message.offset(), start),
                (150, 150),
                "reading from the beginning starts at the log start"
            );
            break;
        }
    }
}

#[test]
fn a_topic_sets_its_own_segment_size() {
    use rdkafka::admin::{NewTopic, TopicReplication};

    // Kafka Streams creates its repartition topics with their own segment.bytes.
    let mut cluster = Cluster::start();
    cluster.wait_for_leaders();
    let (runtime, admin, options) = admin_client(&cluster.bootstrap());
    let created = runtime
        .block_on(
            admin.create_topics(
                &[
                    NewTopic::new("tiny-segments", 1, TopicReplication::Fixed(3))
                        .set("segment.bytes", "1024"),
                    NewTopic::new("default-segments", 1, TopicReplication::Fixed(3)),
                ],
                &options,
            ),
        )
        .expect("create topics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let producer = unbatched_producer(&cluster);
    let value = vec![b's'; 100];
    for _ in 0..40 {
        for topic in ["tiny-segments", "default-segments"] {
            producer
                .send(BaseRecord::to(topic).partition(0).key("k").payload(&value))
                .map_err(|(e, _)| e)
                .expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
    // The two topics created last have the highest Raft group ids, in order.
    for node in 1..=3 {
        let files = segment_files(&cluster, node);
        let newest: Vec<usize> = files.values().rev().take(2).rev().copied().collect();
        assert!(
            newest[0] >= 4 && newest[1] == 1,
            "node {node}: 40 records of about 170 bytes fill several 1 KiB segments and part of \
             one 64 MiB segment: {files:?}"
        );
    }
}
