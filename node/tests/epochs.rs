//! End-to-end: leader epochs (KIP-320) against real `oxbow node` processes. Raw requests
//! check the fencing of Fetch, ListOffsets and OffsetForLeaderEpoch by `current_leader_epoch`
//! and OffsetForLeaderEpoch's answers across a leader change; librdkafka validates its
//! position with OffsetForLeaderEpoch when the leader changes, and goes on consuming.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

mod common;
use common::{batch, call, produce_raw, records, Cluster, TOPIC};

const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 76;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Partition 0's leader and leader epoch, from a Metadata v12 at `port`, once it has one
/// other than `not`.
fn leader_and_epoch(port: u16, not: i32) -> (i32, i32) {
    for _ in 0..100 {
        let mut topic = MetadataRequestTopic::default();
        topic.name = Some(name(TOPIC));
        let mut request = MetadataRequest::default();
        request.topics = Some(vec![topic]);
        let response: MetadataResponse = call(port, ApiKey::Metadata, 12, &request);
        let partition = response.topics[0]
            .partitions
            .iter()
            .find(|p| p.partition_index == 0)
            .expect("partition 0");
        if partition.error_code == 0 && partition.leader_id.0 > 0 && partition.leader_id.0 != not {
            return (partition.leader_id.0, partition.leader_epoch);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("partition 0 has no leader");
}

/// OffsetForLeaderEpoch for partition 0 of `topic`: (error, leader epoch, end offset).
fn epoch_end(port: u16, version: i16, topic: &str, current: i32, epoch: i32) -> (i16, i32, i64) {
    let mut partition = OffsetForLeaderPartition::default();
    partition.partition = 0;
    partition.current_leader_epoch = current;
    partition.leader_epoch = epoch;
    let mut t = OffsetForLeaderTopic::default();
    t.topic = name(topic);
    t.partitions = vec![partition];
    let mut request = OffsetForLeaderEpochRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = vec![t];
    let response: OffsetForLeaderEpochResponse =
        call(port, ApiKey::OffsetForLeaderEpoch, version, &request);
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.partition, 0);
    (p.error_code, p.leader_epoch, p.end_offset)
}

/// ListOffsets for partition 0 at `timestamp`: (error, offset, leader epoch).
fn list_offset(port: u16, version: i16, current: i32, timestamp: i64) -> (i16, i64, i32) {
    let mut partition = ListOffsetsPartition::default();
    partition.partition_index = 0;
    partition.current_leader_epoch = current;
    partition.timestamp = timestamp;
    let mut topic = ListOffsetsTopic::default();
    topic.name = name(TOPIC);
    topic.partitions = vec![partition];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = vec![topic];
    let response: ListOffsetsResponse = call(port, ApiKey::ListOffsets, version, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset, p.leader_epoch)
}

/// Fetch of partition 0 from offset 0: (error, high watermark).
fn fetch(port: u16, version: i16, current: i32) -> (i16, i64) {
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.current_leader_epoch = current;
    partition.fetch_offset = 0;
    partition.partition_max_bytes = 1 << 20;
    let mut topic = FetchTopic::default();
    topic.topic = name(TOPIC);
    topic.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(-1);
    request.max_wait_ms = 0;
    request.min_bytes = 1;
    request.max_bytes = 1 << 20;
    request.topics = vec![topic];
    let response: FetchResponse = call(port, ApiKey::Fetch, version, &request);
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.high_watermark)
}

#[test]
fn current_leader_epochs_are_fenced_and_epochs_end_where_the_next_begins() {
    let mut cluster = Cluster::start();
    let (leader, epoch) = leader_and_epoch(cluster.kafka[0], -1);
    assert!(epoch >= 1, "the leader epoch is the Raft term");
    let port = cluster.kafka[(leader - 1) as usize];
    let follower = cluster.kafka[leader as usize % 3];
    let produced = produce_raw(port, batch(&records(3, 10), Compression::None).freeze());
    assert_eq!(
        produced.map(|p| (p.error_code, p.base_offset)),
        Some((0, 0))
    );

    // OffsetForLeaderEpoch: the current epoch ends at the high watermark; an older one (no
    // record was written in it) gets itself and the current epoch's start, a newer one is
    // undefined. Fenced, unknown, not the leader, unknown topic.
    for version in 2..=4 {
        assert_eq!(epoch_end(port, version, TOPIC, epoch, epoch), (0, epoch, 3));
        assert_eq!(epoch_end(port, version, TOPIC, -1, epoch), (0, epoch, 3));
        assert_eq!(
            epoch_end(port, version, TOPIC, epoch, epoch - 1),
            (0, epoch - 1, 0)
        );
        assert_eq!(
            epoch_end(port, version, TOPIC, epoch, epoch + 1),
            (0, -1, -1)
        );
        assert_eq!(epoch_end(port, version, TOPIC, epoch, -1), (0, -1, -1));
        assert_eq!(
            epoch_end(port, version, TOPIC, epoch - 1, epoch),
            (FENCED_LEADER_EPOCH, -1, -1)
        );
        assert_eq!(
            epoch_end(port, version, TOPIC, epoch + 1, epoch),
            (UNKNOWN_LEADER_EPOCH, -1, -1)
        );
        assert_eq!(
            epoch_end(follower, version, TOPIC, epoch, epoch),
            (NOT_LEADER_OR_FOLLOWER, -1, -1)
        );
        assert_eq!(
            epoch_end(port, version, "no-such-topic", epoch, epoch),
            (UNKNOWN_TOPIC_OR_PARTITION, -1, -1)
        );
    }

    // ListOffsets v4+: the epoch is checked, and the offset's epoch answered.
    for version in 4..=5 {
        assert_eq!(list_offset(port, version, epoch, -1), (0, 3, epoch));
        assert_eq!(list_offset(port, version, epoch, -2), (0, 0, epoch));
        assert_eq!(
            list_offset(port, version, -1, 1_700_000_000_001),
            (0, 1, epoch)
        );
        assert_eq!(
            list_offset(port, version, epoch - 1, -1),
            (FENCED_LEADER_EPOCH, -1, -1)
        );
        assert_eq!(
            list_offset(port, version, epoch + 1, -1),
            (UNKNOWN_LEADER_EPOCH, -1, -1)
        );
        // A follower checks the epoch too (it knows the term) before saying it does not lead.
        assert_eq!(
            list_offset(follower, version, epoch - 1, -1),
            (FENCED_LEADER_EPOCH, -1, -1)
        );
        assert_eq!(
            list_offset(follower, version, epoch, -1),
            (NOT_LEADER_OR_FOLLOWER, -1, -1)
        );
    }
    // Before v4 there is no current epoch to check, nor an epoch in the answer.
    assert_eq!(list_offset(port, 3, -1, -1), (0, 3, -1));

    // Fetch v9+ likewise.
    for version in 9..=11 {
        assert_eq!(fetch(port, version, epoch), (0, 3));
        assert_eq!(fetch(port, version, -1), (0, 3));
        assert_eq!(fetch(port, version, epoch - 1), (FENCED_LEADER_EPOCH, -1));
        assert_eq!(fetch(port, version, epoch + 1), (UNKNOWN_LEADER_EPOCH, -1));
    }
    assert_eq!(fetch(port, 8, -1), (0, 3));

    // The leader dies: a new one leads in a later epoch, and a client with the old epoch is
    // fenced there. The old epoch ends where the new one begins, at offset 3.
    cluster.kill9((leader - 1) as usize);
    let alive = cluster.kafka[leader as usize % 3];
    let (next, later) = leader_and_epoch(alive, leader);
    assert!(later > epoch);
    let port = cluster.kafka[(next - 1) as usize];
    let produced = produce_raw(port, batch(&records(2, 10), Compression::None).freeze());
    assert_eq!(
        produced.map(|p| (p.error_code, p.base_offset)),
        Some((0, 3))
    );
    assert_eq!(epoch_end(port, 4, TOPIC, later, epoch), (0, epoch, 3));
    assert_eq!(epoch_end(port, 4, TOPIC, later, later), (0, later, 5));
    assert_eq!(
        epoch_end(port, 4, TOPIC, epoch, epoch),
        (FENCED_LEADER_EPOCH, -1, -1)
    );
    assert_eq!(fetch(port, 11, epoch), (FENCED_LEADER_EPOCH, -1));
    assert_eq!(list_offset(port, 5, later, -2), (0, 0, epoch));
    assert_eq!(list_offset(port, 5, later, -1), (0, 5, later));
}

/// librdkafka's debug log lines.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl ClientContext for Log {
    fn log(&self, _: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("{fac} {message}"));
    }
}

impl ConsumerContext for Log {}

impl Log {
    fn any(&self, text: &str) -> bool {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(text))
    }
}

/// Polls until `count` records of partition 0 arrived; their offsets.
fn consume(consumer: &BaseConsumer<Log>, count: usize) -> Vec<i64> {
    let mut offsets = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while offsets.len() < count {
        assert!(Instant::now() < deadline, "consumed only {offsets:?}");
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            offsets.push(message.offset());
        }
    }
    offsets
}

#[test]
fn librdkafka_validates_its_position_with_offset_for_leader_epoch_after_a_leader_change() {
    let mut cluster = Cluster::start();
    let (leader, epoch) = leader_and_epoch(cluster.kafka[0], -1);
    let port = cluster.kafka[(leader - 1) as usize];
    let produced = produce_raw(port, batch(&records(10, 10), Compression::None).freeze());
    assert_eq!(
        produced.map(|p| (p.error_code, p.base_offset)),
        Some((0, 0))
    );

    let log = Log::default();
    let consumer: BaseConsumer<Log> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "epochs")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "500")
        .set("debug", "fetch,topic")
        .set_log_level(RDKafkaLogLevel::Debug)
        .create_with_context(log.clone())
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("assign");
    consumer.assign(&assignment).expect("assign");
    assert_eq!(consume(&consumer, 10), (0..10).collect::<Vec<_>>());

    // The leader dies. librdkafka learns the new leader and its epoch, and checks that its
    // position (offset 10, read in the old epoch) is not past where the old epoch ends.
    cluster.kill9((leader - 1) as usize);
    let alive = cluster.kafka[leader as usize % 3];
    let (next, later) = leader_and_epoch(alive, leader);
    assert!(later > epoch);
    let port = cluster.kafka[(next - 1) as usize];
    let produced = produce_raw(port, batch(&records(5, 10), Compression::None).freeze());
    assert_eq!(
        produced.map(|p| (p.error_code, p.base_offset)),
        Some((0, 10))
    );
    assert_eq!(consume(&consumer, 5), (10..15).collect::<Vec<_>>());
    // The broker answered the old epoch's end: offset 10, where the new epoch starts.
    let validated = format!(
        "offset and epoch validation succeeded: broker end offset 10 (offset leader epoch {epoch})"
    );
    assert!(
        log.any(&validated),
        "librdkafka did not validate its position: {:?}",
        log.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l.contains("VALID"))
            .collect::<Vec<_>>()
    );
}
