//! End-to-end: real `oxbow node` processes on 127.0.0.1, driven by rdkafka (librdkafka), the
//! client most Kafka users run. Each test starts its own three-node cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

mod common;
use common::{call, raw_request, request_frame, Cluster, PARTITIONS, TOPIC};

/// Acknowledged records: (partition, offset) -> value.
type Acked = Arc<Mutex<BTreeMap<(i32, i64), String>>>;

struct Recorder {
    acked: Acked,
    failed: Arc<Mutex<u64>>,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                let value = String::from_utf8_lossy(message.payload().expect("value")).into_owned();
                let previous = self
                    .acked
                    .lock()
                    .expect("lock")
                    .insert((message.partition(), message.offset()), value);
                assert!(previous.is_none(), "two records acknowledged at one offset");
            }
            Err(_) => *self.failed.lock().expect("lock") += 1,
        }
    }
}

fn producer(cluster: &Cluster) -> (BaseProducer<Recorder>, Acked, Arc<Mutex<u64>>) {
    let acked = Acked::default();
    let failed = Arc::new(Mutex::new(0));
    let producer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(Recorder {
            acked: acked.clone(),
            failed: failed.clone(),
        })
        .expect("producer");
    (producer, acked, failed)
}

fn send(producer: &BaseProducer<Recorder>, i: u64) {
    let key = format!("key-{i}");
    let value = format!("value-{i}");
    loop {
        match producer.send(BaseRecord::to(TOPIC).key(&key).payload(&value)) {
            Ok(()) => return,
            Err((_, _)) => {
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}

/// Reads every partition from the beginning to its end.
fn consume_all(cluster: &Cluster) -> BTreeMap<(i32, i64), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "e2e-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = BTreeMap::new();
    let mut finished = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while finished.len() < PARTITIONS as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "consuming took too long; {} records so far",
            records.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let value = String::from_utf8_lossy(message.payload().expect("value")).into_owned();
                let previous = records.insert((message.partition(), message.offset()), value);
                assert!(previous.is_none(), "offset read twice");
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                finished.insert(p);
            }
            Some(Err(_)) | None => {}
        }
    }
    records
}

/// Every partition's offsets are dense from 0, values are unique, and every acknowledged
/// record is where it was acknowledged.
fn check(read: &BTreeMap<(i32, i64), String>, acked: &BTreeMap<(i32, i64), String>) {
    for p in 0..PARTITIONS {
        let offsets: Vec<i64> = read
            .keys()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        assert!(
            offsets.iter().enumerate().all(|(i, o)| *o == i as i64),
            "partition {p}: offsets not dense"
        );
    }
    let mut values = std::collections::BTreeSet::new();
    for value in read.values() {
        assert!(values.insert(value), "duplicate record {value}");
    }
    for (at, value) in acked {
        assert_eq!(
            read.get(at),
            Some(value),
            "acknowledged record {value} is not at {at:?}"
        );
    }
}

#[test]
fn hundred_thousand_idempotent_records_come_back_in_order_and_exactly_once() {
    let cluster = Cluster::start();
    let (producer, acked, failed) = producer(&cluster);
    const N: u64 = 100_000;
    for i in 0..N {
        send(&producer, i);
        if i % 1_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    assert_eq!(*failed.lock().expect("lock"), 0, "deliveries failed");
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len() as u64, N);
    let read = consume_all(&cluster);
    assert_eq!(read.len() as u64, N, "nothing extra, nothing missing");
    check(&read, &acked);
    // Per key, records are in send order (the default partitioner keeps a key on one partition).
    let mut last: BTreeMap<i32, u64> = BTreeMap::new();
    for ((p, _), value) in &read {
        let i: u64 = value.trim_start_matches("value-").parse().expect("number");
        if let Some(previous) = last.insert(*p, i) {
            assert!(previous < i, "partition {p}: {previous} read before {i}");
        }
    }
}

#[test]
fn killing_a_leader_mid_stream_loses_no_acknowledged_record() {
    let mut cluster = Cluster::start();
    let (producer, acked, failed) = producer(&cluster);
    let victim = (cluster.leaders()[&0] - 1) as usize;
    for i in 0..20_000u64 {
        send(&producer, i);
        producer.poll(Duration::ZERO);
        if i == 5_000 {
            producer.flush(Duration::from_secs(60)).expect("flush");
            cluster.kill9(victim);
            // While partition 0's leader is replaced, every other node shows the topic with
            // its partitions (partition 0 as LEADER_NOT_AVAILABLE, leader -1, until the new
            // leader is known), never as a topic just created.
            for node in (0..3).filter(|n| *n != victim) {
                let answer = metadata_v12(cluster.kafka[node], &[TOPIC]);
                let topic = &answer.topics[0];
                assert_eq!(topic.error_code, 0, "node {}: {answer:?}", node + 1);
                assert_eq!(topic.partitions.len(), PARTITIONS as usize);
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("producing resumes after the re-election");
    assert_eq!(
        *failed.lock().expect("lock"),
        0,
        "an idempotent producer retries through the failover"
    );
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len(), 20_000, "every record acknowledged, once");
    check(&consume_all(&cluster), &acked);
    cluster.start_node(victim);
    cluster.wait_for_leaders();
    check(&consume_all(&cluster), &acked);
}

/// Bytes of the files in a directory, recursively.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_follower_that_was_down_catches_up_from_the_leaders_files() {
    // Memory holds 64 KiB of entries per node: what the follower missed is read back from the
    // leaders' segment files (raft-rs's asynchronous entry fetch), not from memory.
    let mut cluster = Cluster::start_with("[log]\ncache_bytes = 65536\n");
    cluster.kill9(2);
    cluster.wait_for_leaders();
    let (producer, acked, failed) = producer(&cluster);
    for i in 0..30_000u64 {
        send(&producer, i);
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    assert_eq!(*failed.lock().expect("lock"), 0);
    let acked = acked.lock().expect("lock").clone();
    let root = cluster.dir.path().to_path_buf();
    let dir = |n: usize| root.join(format!("node-{n}"));
    let target = dir_bytes(&dir(1));
    let before = dir_bytes(&dir(3));
    assert!(before * 2 < target, "node 3 missed most of the data");
    cluster.start_node(2);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while dir_bytes(&dir(3)) * 100 < target * 95 {
        assert!(
            std::time::Instant::now() < deadline,
            "node 3 holds {} of {target} bytes after 90 s",
            dir_bytes(&dir(3))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // With node 1 gone, nodes 2 and 3 serve every record (node 3 leads some partitions).
    cluster.kill9(0);
    cluster.wait_for_leaders();
    check(&consume_all(&cluster), &acked);
}

/// Records the error code of every failed delivery.
struct Failures(Arc<Mutex<Vec<rdkafka::types::RDKafkaErrorCode>>>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((rdkafka::error::KafkaError::MessageProduction(code), _)) = result {
            self.0.lock().expect("lock").push(*code);
        }
    }
}

#[test]
fn below_the_disk_reserve_produce_is_refused_and_resumes_once_space_returns() {
    // A reserve larger than any disk: every node is below it from the start.
    let reserve = "[log]\ndisk_reserve_bytes = 1000000000000000000\n";
    let mut cluster = Cluster::start_with(reserve);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let refused: BaseProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "3000")
        .create_with_context(Failures(failures.clone()))
        .expect("producer");
    for i in 0..10 {
        refused
            .send(BaseRecord::to(TOPIC).key(&format!("k{i}")).payload("v"))
            .expect("queued");
    }
    let _ = refused.flush(Duration::from_secs(30));
    let failures = failures.lock().expect("lock").clone();
    assert_eq!(failures.len(), 10, "every record fails: {failures:?}");
    // Retriable: librdkafka retried until its timeout, and reports the broker's error.
    assert!(
        failures.iter().all(|code| matches!(
            code,
            rdkafka::types::RDKafkaErrorCode::KafkaStorageError
                | rdkafka::types::RDKafkaErrorCode::MessageTimedOut
        )),
        "{failures:?}"
    );
    let log = std::fs::read_to_string(cluster.dir.path().join("node-1.log")).expect("log");
    assert!(
        log.contains("below the disk reserve") && log.contains("node-1"),
        "the refusal is logged with the directory"
    );
    // Reads go on.
    assert!(consume_all(&cluster).is_empty());
    // Space comes back (here: the reserve is lowered) and producing resumes.
    for i in 0..3 {
        cluster.stop(i);
        let config = cluster.config(i);
        let text = std::fs::read_to_string(&config).expect("config");
        std::fs::write(&config, text.replace(reserve, "")).expect("config");
        cluster.start_node(i);
    }
    cluster.wait_for_leaders();
    let (producer, acked, failed) = producer(&cluster);
    for i in 0..100u64 {
        send(&producer, i);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    assert_eq!(*failed.lock().expect("lock"), 0);
    check(&consume_all(&cluster), &acked.lock().expect("lock"));
}

#[test]
fn restarting_every_node_keeps_every_acknowledged_record() {
    let mut cluster = Cluster::start();
    let (producer, acked, failed) = producer(&cluster);
    for i in 0..10_000u64 {
        send(&producer, i);
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    assert_eq!(*failed.lock().expect("lock"), 0);
    drop(producer);
    let acked = acked.lock().expect("lock").clone();
    // A clean stop of all three, then a crash of all three: both keep acknowledged records.
    for i in 0..3 {
        cluster.stop(i);
    }
    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.wait_for_leaders();
    check(&consume_all(&cluster), &acked);
    for i in 0..3 {
        cluster.kill9(i);
    }
    for i in 0..3 {
        cluster.start_node(i);
    }
    // From its first answer (it serves once it has applied the metadata log it recovered), a
    // restarted node shows the topics it had with their partitions (those without a known
    // leader yet as LEADER_NOT_AVAILABLE, leader -1, as Kafka shows an existing partition
    // without a leader), never the topic as unknown or as just created: clients such as
    // kafka-python and librdkafka take that for a topic without partitions.
    let port = cluster.kafka[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "node 1 never listened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let first = metadata_v12(port, &[TOPIC]);
    assert!(!first.topics[0].topic_id.is_nil(), "{first:?}");
    assert_eq!(first.topics[0].error_code, 0, "{first:?}");
    assert_eq!(first.topics[0].partitions.len(), PARTITIONS as usize);
    for partition in &first.topics[0].partitions {
        let led = partition.error_code == 0 && partition.leader_id.0 >= 0;
        let not_yet = partition.error_code == 5 && partition.leader_id.0 == -1;
        assert!(led || not_yet, "{partition:?}");
    }
    cluster.wait_for_leaders();
    let read = consume_all(&cluster);
    assert_eq!(read.len(), acked.len());
    check(&read, &acked);
}

#[test]
fn bad_input_closes_only_that_connection_and_touches_no_data() {
    let mut cluster = Cluster::start();
    let (producer, acked, _) = producer(&cluster);
    for i in 0..200 {
        send(&producer, i);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    let acked = acked.lock().expect("lock").clone();
    let before = consume_all(&cluster);
    check(&before, &acked);
    let port = cluster.kafka[0];

    // A frame size far over the limit, an unknown API key, an unsupported version: closed.
    assert_eq!(raw_request(port, &i32::MAX.to_be_bytes()), None);
    assert_eq!(raw_request(port, &request_frame(999, 0, &[1, 2, 3])), None);
    assert_eq!(
        raw_request(port, &request_frame(3, 42, &[])),
        None,
        "Metadata v42"
    );
    assert_eq!(
        raw_request(port, &request_frame(0, 3, &[0xff; 5])),
        None,
        "a truncated Produce body"
    );
    // ApiVersions newer than ours: answered in v0 with UNSUPPORTED_VERSION (35).
    let answer = raw_request(port, &request_frame(18, 9, &[])).expect("answered");
    assert_eq!(&answer[0..4], &7i32.to_be_bytes(), "correlation id");
    assert_eq!(i16::from_be_bytes([answer[4], answer[5]]), 35);

    // A produce whose batch fails its CRC: CORRUPT_MESSAGE (2), nothing stored.
    let mut batch = common::batch(
        &common::records(1, 7),
        kafka_protocol::records::Compression::None,
    );
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    let leader = cluster.leaders()[&0];
    let answer = common::produce_raw(cluster.kafka[(leader - 1) as usize], batch.freeze())
        .expect("a bad batch is answered, not a closed connection");
    assert_eq!(answer.error_code, 2, "CORRUPT_MESSAGE");

    // Junk on the peer port: closed, nothing else happens.
    {
        use std::io::Write;
        let peer_port = {
            let text = std::fs::read_to_string(cluster.config(0)).expect("config");
            let line = text
                .lines()
                .find(|l| l.starts_with("peer_listen"))
                .expect("peer_listen")
                .to_string();
            line.rsplit(':')
                .next()
                .expect("port")
                .trim_end_matches('"')
                .parse::<u16>()
                .expect("port")
        };
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", peer_port)).expect("connect");
        let _ = stream.write_all(
            b"OXBW\x01\x00\x02\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00",
        );
    }

    cluster.assert_all_alive(Duration::from_millis(300), "bad input");
    let after = consume_all(&cluster);
    assert_eq!(after, before, "bad input touched stored data");
}

#[test]
fn offsets_for_times_finds_the_first_record_at_or_after_a_timestamp() {
    // 4 KiB of entry cache: the batches looked up are on disk by then, found through the
    // sparse time index and read back from the segment files.
    let cluster = Cluster::start_with("[log]\ncache_bytes = 4096\n");
    let (producer, _, failed) = producer(&cluster);
    const BASE: i64 = 1_700_000_000_000;
    for i in 0..100i64 {
        let value = format!("timed-{i}-{}", "x".repeat(200));
        let record = BaseRecord::to(TOPIC)
            .partition(0)
            .payload(&value)
            .key("k")
            .timestamp(BASE + 1_000 * i);
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    assert_eq!(*failed.lock().expect("lock"), 0);
    // A few ticks: the cache is trimmed every tick.
    std::thread::sleep(Duration::from_millis(500));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "times")
        .create()
        .expect("consumer");
    let lookup = |timestamp: i64| {
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset(TOPIC, 0, Offset::Offset(timestamp))
            .expect("add");
        let answer = consumer
            .offsets_for_times(query, Duration::from_secs(10))
            .expect("offsets_for_times");
        answer.find_partition(TOPIC, 0).expect("partition").offset()
    };
    // Records are batched by the producer: a timestamp inside a batch finds the exact record.
    assert_eq!(lookup(BASE + 50_500), Offset::Offset(51));
    assert_eq!(lookup(BASE + 50_000), Offset::Offset(50));
    assert_eq!(lookup(0), Offset::Offset(0));
    assert_eq!(lookup(BASE + 1_000_000), Offset::End, "no record that late");
}

#[test]
fn librdkafka_gzip_and_snappy_batches_are_stored_read_and_looked_into() {
    let cluster = Cluster::start();
    const BASE: i64 = 1_700_000_000_000;
    for (partition, compression) in [(1, "gzip"), (2, "snappy")] {
        let acked = Acked::default();
        let failed = Arc::new(Mutex::new(0));
        let producer: BaseProducer<Recorder> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "50")
            .set("compression.type", compression)
            .create_with_context(Recorder {
                acked: acked.clone(),
                failed: failed.clone(),
            })
            .expect("producer");
        for i in 0..100i64 {
            let value = format!("{compression}-{i:03}-{}", "x".repeat(200));
            let record = BaseRecord::to(TOPIC)
                .partition(partition)
                .payload(&value)
                .key("k")
                .timestamp(BASE + 1_000 * i);
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
        producer.flush(Duration::from_secs(60)).expect("flush");
        assert_eq!(*failed.lock().expect("lock"), 0, "{compression}");
        assert_eq!(acked.lock().expect("lock").len(), 100, "{compression}");
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "times")
        .create()
        .expect("consumer");
    let lookup = |partition: i32, timestamp: i64| {
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset(TOPIC, partition, Offset::Offset(timestamp))
            .expect("add");
        let answer = consumer
            .offsets_for_times(query, Duration::from_secs(10))
            .expect("offsets_for_times");
        answer
            .find_partition(TOPIC, partition)
            .expect("partition")
            .offset()
    };
    for partition in [1, 2] {
        // The records went out in a few batches: a timestamp inside one finds the record.
        assert_eq!(lookup(partition, BASE + 50_500), Offset::Offset(51));
        assert_eq!(lookup(partition, BASE + 77_000), Offset::Offset(77));
        assert_eq!(lookup(partition, BASE + 1_000_000), Offset::End);
    }
    let read = consume_all(&cluster);
    for (partition, compression) in [(1, "gzip"), (2, "snappy")] {
        let values: Vec<&String> = read
            .range((partition, 0)..(partition + 1, 0))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(values.len(), 100, "{compression}");
        for (i, value) in values.iter().enumerate() {
            assert!(
                value.starts_with(&format!("{compression}-{i:03}-")),
                "{value}"
            );
        }
    }
}

/// Partition leaders of `topic` as the node on `port` alone reports them (-1: none).
fn leaders_from(port: u16, topic: &str) -> Vec<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .create()
        .expect("consumer");
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return Vec::new();
    };
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.leader()))
        .collect()
}

/// Waits until every node names a leader for each of the topic's `partitions`.
fn wait_for_topic(cluster: &Cluster, topic: &str, partitions: usize) {
    for _ in 0..200 {
        let ready = cluster.kafka.iter().all(|port| {
            let leaders = leaders_from(*port, topic);
            leaders.len() == partitions && leaders.iter().all(|l| *l > 0)
        });
        if ready {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "topic {topic}: not every node names {partitions} leaders; logs in {}",
        cluster.dir.path().display()
    );
}

#[test]
fn admin_api_creates_grows_describes_and_deletes_topics() {
    use rdkafka::admin::{
        AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
    };
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;

    let mut cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = runtime
        .block_on(
            admin.create_topics(
                &[
                    NewTopic::new("one-replica", 3, TopicReplication::Fixed(1)),
                    NewTopic::new("two-replicas", 2, TopicReplication::Fixed(2))
                        .set("message.timestamp.type", "LogAppendTime"),
                    NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1)),
                    NewTopic::new("too-many-replicas", 1, TopicReplication::Fixed(4)),
                    NewTopic::new("unsupported-config", 1, TopicReplication::Fixed(1))
                        .set("min.insync.replicas", "2"),
                ],
                &options,
            ),
        )
        .expect("create topics");
    let codes: Vec<Option<RDKafkaErrorCode>> = created
        .iter()
        .map(|r| r.as_ref().err().map(|(_, code)| *code))
        .collect();
    assert_eq!(
        codes,
        vec![
            None,
            None,
            Some(RDKafkaErrorCode::TopicAlreadyExists),
            Some(RDKafkaErrorCode::InvalidReplicationFactor),
            Some(RDKafkaErrorCode::InvalidConfig),
        ]
    );

    // With fewer replicas than nodes, every node still names every leader (gossip), and
    // records go in and come back out through any bootstrap node.
    wait_for_topic(&cluster, "one-replica", 3);
    wait_for_topic(&cluster, "two-replicas", 2);
    let producer: BaseProducer = ClientConfig::new()
        .set(
            "bootstrap.servers",
            format!("127.0.0.1:{}", cluster.kafka[0]),
        )
        .set("acks", "all")
        .create()
        .expect("producer");
    for p in 0..3 {
        for i in 0..10 {
            let value = format!("p{p}-{i}");
            producer
                .send(
                    BaseRecord::<(), String>::to("one-replica")
                        .partition(p)
                        .payload(&value),
                )
                .expect("queue");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let consumer: BaseConsumer = ClientConfig::new()
        .set(
            "bootstrap.servers",
            format!("127.0.0.1:{}", cluster.kafka[2]),
        )
        .set("group.id", "admin-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..3 {
        assignment
            .add_partition_offset("one-replica", p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut read = Vec::new();
    let mut finished = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while finished.len() < 3 && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                read.push(String::from_utf8_lossy(m.payload().expect("value")).into_owned())
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                finished.insert(p);
            }
            _ => {}
        }
    }
    read.sort();
    let mut expected: Vec<String> = (0..3)
        .flat_map(|p| (0..10).map(move |i| format!("p{p}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(read, expected);

    // Growing a topic.
    let grown = runtime
        .block_on(admin.create_partitions(&[NewPartitions::new("one-replica", 5)], &options))
        .expect("create partitions");
    assert!(grown.iter().all(|r| r.is_ok()), "{grown:?}");
    wait_for_topic(&cluster, "one-replica", 5);
    let shrink = runtime
        .block_on(admin.create_partitions(&[NewPartitions::new("one-replica", 2)], &options))
        .expect("create partitions");
    assert!(
        matches!(&shrink[0], Err((_, RDKafkaErrorCode::InvalidPartitions))),
        "{shrink:?}"
    );

    // Configurations.
    let described = runtime
        .block_on(admin.describe_configs(
            &[
                ResourceSpecifier::Topic("two-replicas"),
                ResourceSpecifier::Broker(1),
            ],
            &options,
        ))
        .expect("describe configs");
    let topic = described[0].as_ref().expect("topic configs");
    let timestamps = topic
        .entries
        .iter()
        .find(|e| e.name == "message.timestamp.type")
        .expect("listed");
    assert_eq!(timestamps.value.as_deref(), Some("LogAppendTime"));
    assert!(!timestamps.is_default);
    let broker = described[1].as_ref().expect("broker configs");
    assert!(broker
        .entries
        .iter()
        .any(|e| e.name == "auto.create.topics.enable" && e.value.as_deref() == Some("false")));

    // Deleting, then a restart: the deletion holds and the other topics come back.
    let deleted = runtime
        .block_on(admin.delete_topics(&["one-replica", "never-existed"], &options))
        .expect("delete topics");
    assert!(deleted[0].is_ok(), "{deleted:?}");
    assert!(
        matches!(
            &deleted[1],
            Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))
        ),
        "{deleted:?}"
    );
    cluster.stop(0);
    cluster.start_node(0);
    wait_for_topic(&cluster, "two-replicas", 2);
    for port in &cluster.kafka {
        assert!(leaders_from(*port, "one-replica").is_empty());
    }
}

fn metadata_v12(port: u16, topics: &[&str]) -> kafka_protocol::messages::MetadataResponse {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{ApiKey, MetadataRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut request = MetadataRequest::default();
    request.allow_auto_topic_creation = true;
    request.topics = Some(
        topics
            .iter()
            .map(|t| {
                let mut topic = MetadataRequestTopic::default();
                topic.name = Some(TopicName(StrBytes::from_string(t.to_string())));
                topic
            })
            .collect(),
    );
    call(port, ApiKey::Metadata, 12, &request)
}

#[test]
fn metadata_has_stable_topic_ids_and_auto_creation_is_off_unless_configured() {
    use kafka_protocol::messages::{ApiKey, DescribeClusterRequest, DescribeClusterResponse};

    let cluster = Cluster::start();
    let answers: Vec<_> = cluster
        .kafka
        .iter()
        .map(|port| metadata_v12(*port, &[TOPIC, "not-there"]))
        .collect();
    let id = answers[0].topics[0].topic_id;
    assert!(!id.is_nil());
    for answer in &answers {
        assert_eq!(
            answer.topics[0].topic_id, id,
            "every node has the same topic id"
        );
        assert_eq!(answer.topics[0].partitions.len(), PARTITIONS as usize);
        assert_eq!(answer.topics[1].error_code, 3, "unknown, and not created");
        assert!((1..=3).contains(&answer.controller_id.0));
    }
    let cluster_answer: DescribeClusterResponse = call(
        cluster.kafka[1],
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default(),
    );
    assert_eq!(cluster_answer.error_code, 0);
    assert_eq!(cluster_answer.brokers.len(), 3);
    assert!((1..=3).contains(&cluster_answer.controller_id.0));
    drop(cluster);

    let cluster = Cluster::start_with("auto_create_topics = true\ndefault_partitions = 2\n");
    let first = metadata_v12(cluster.kafka[2], &["made-on-demand"]);
    assert_eq!(
        first.topics[0].error_code, 5,
        "LEADER_NOT_AVAILABLE while it is created"
    );
    wait_for_topic(&cluster, "made-on-demand", 2);
}
