//! End-to-end: incremental fetch sessions (KIP-227) with raw Fetch v11 requests against real
//! `oxbow node` processes.

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

mod common;
use common::{batch, call, produce_raw, records, Cluster, TOPIC};

fn request(session_id: i32, epoch: i32, partitions: &[(i32, i64)], forget: &[i32]) -> FetchRequest {
    let mut request = FetchRequest::default();
    request.replica_id = kafka_protocol::messages::BrokerId(-1);
    request.max_wait_ms = 0;
    request.min_bytes = 1;
    request.max_bytes = 1 << 20;
    request.session_id = session_id;
    request.session_epoch = epoch;
    if !partitions.is_empty() {
        let mut topic = FetchTopic::default();
        topic.topic = TopicName(StrBytes::from_static_str(TOPIC));
        for (partition, offset) in partitions {
            let mut p = FetchPartition::default();
            p.partition = *partition;
            p.fetch_offset = *offset;
            p.partition_max_bytes = 1 << 20;
            topic.partitions.push(p);
        }
        request.topics = vec![topic];
    }
    if !forget.is_empty() {
        let mut forgotten = ForgottenTopic::default();
        forgotten.topic = TopicName(StrBytes::from_static_str(TOPIC));
        forgotten.partitions = forget.to_vec();
        request.forgotten_topics_data = vec![forgotten];
    }
    request
}

/// The partitions an answer holds: (index, high watermark, record bytes).
fn answered(response: &FetchResponse) -> Vec<(i32, i64, usize)> {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            assert_eq!(p.error_code, 0, "{p:?}");
            let bytes = p.records.as_ref().map_or(0, |r| r.len());
            (p.partition_index, p.high_watermark, bytes)
        })
        .collect()
}

#[test]
fn incremental_fetch_sessions_carry_only_what_changed() {
    let cluster = Cluster::start_with("max_incremental_fetch_session_cache_slots = 1\n");
    let leader = cluster.leaders()[&0];
    let port = cluster.kafka[(leader - 1) as usize];
    let fetch = |r: FetchRequest| -> FetchResponse { call(port, ApiKey::Fetch, 11, &r) };

    // A full fetch at epoch 0 opens a session and answers every partition named.
    let full = fetch(request(0, 0, &[(0, 0)], &[]));
    assert_eq!(full.error_code, 0);
    let session = full.session_id;
    assert!(session > 0, "a session: {full:?}");
    assert_eq!(answered(&full), vec![(0, 0, 0)]);

    // Nothing new: an incremental fetch answers no partition.
    let quiet = fetch(request(session, 1, &[], &[]));
    assert_eq!((quiet.error_code, quiet.session_id), (0, session));
    assert_eq!(answered(&quiet), vec![]);

    // Records arrive: the next incremental answer has the partition, with them.
    // (A stored batch keeps its length: the leader's stamps overwrite header fields.)
    let first = batch(&records(3, 10), Compression::None).freeze();
    let produced = produce_raw(port, first.clone()).expect("answered");
    assert_eq!(produced.error_code, 0);
    let fresh = fetch(request(session, 2, &[], &[]));
    assert_eq!(answered(&fresh), vec![(0, 3, first.len())]);
    // The client moves to offset 3: nothing more to say.
    let caught_up = fetch(request(session, 3, &[(0, 3)], &[]));
    assert_eq!(answered(&caught_up), vec![]);

    // A repeated epoch and an unknown session are refused as Kafka refuses them.
    assert_eq!(
        fetch(request(session, 3, &[], &[])).error_code,
        71,
        "INVALID_FETCH_SESSION_EPOCH"
    );
    assert_eq!(
        fetch(request(session ^ 0x40, 4, &[], &[])).error_code,
        70,
        "FETCH_SESSION_ID_NOT_FOUND"
    );

    // The cache holds one session, in use: another client gets none and fetches in full.
    let other = fetch(request(0, 0, &[(0, 0)], &[]));
    assert_eq!(other.session_id, 0);
    assert_eq!(answered(&other), vec![(0, 3, first.len())]);

    // A forgotten partition is not answered any more, even when it has new records.
    let forgot = fetch(request(session, 4, &[], &[0]));
    assert_eq!(answered(&forgot), vec![]);
    let second = batch(&records(2, 10), Compression::None).freeze();
    let produced = produce_raw(port, second.clone()).expect("answered");
    assert_eq!(produced.error_code, 0);
    assert_eq!(answered(&fetch(request(session, 5, &[], &[]))), vec![]);

    // Epoch -1 closes the session (a full fetch without one); it is gone after.
    let closing = fetch(request(session, -1, &[(0, 3)], &[]));
    assert_eq!(closing.session_id, 0);
    assert_eq!(answered(&closing), vec![(0, 5, second.len())]);
    assert_eq!(fetch(request(session, 6, &[], &[])).error_code, 70);
    // Its slot is free again.
    assert!(fetch(request(0, 0, &[(0, 0)], &[])).session_id > 0);
}
