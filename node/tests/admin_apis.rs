//! The admin APIs tools call, and the checks Kafka makes on names, through raw requests to a
//! cluster of real `oxbow node` processes.

mod common;

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use common::{batch, call, records, Cluster, TOPIC};

const INVALID_TOPIC_EXCEPTION: i16 = 17;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A raw Produce v7 (acks=all) of one small batch to partition 0 of each topic: each answer's
/// error code, by topic.
fn produce_codes(port: u16, topics: &[&str]) -> Vec<(String, i16)> {
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    for topic in topics {
        let mut partition = PartitionProduceData::default();
        partition.index = 0;
        partition.records =
            Some(batch(&records(1, 10), kafka_protocol::records::Compression::None).freeze());
        let mut data = TopicProduceData::default();
        data.name = name(topic);
        data.partition_data = vec![partition];
        request.topic_data.push(data);
    }
    let response: ProduceResponse = call(port, ApiKey::Produce, 7, &request);
    response
        .responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(|p| (t.name.0.to_string(), p.error_code))
        })
        .collect()
}

#[test]
fn produce_to_an_invalid_or_internal_topic_name_answers_invalid_topic_exception() {
    let cluster = Cluster::start();
    let long = "x".repeat(250);
    let invalid = [
        "bad name!",
        "..",
        "a/b",
        long.as_str(),
        "__consumer_offsets",
    ];
    let mut topics = invalid.to_vec();
    topics.push(TOPIC);
    for port in &cluster.kafka {
        let codes = produce_codes(*port, &topics);
        for bad in invalid {
            let code = codes.iter().find(|(n, _)| n == bad).map(|(_, c)| *c);
            assert_eq!(
                code,
                Some(INVALID_TOPIC_EXCEPTION),
                "produce to {bad:?} on port {port}: {codes:?}"
            );
        }
        // A valid topic in the same request is served as ever (by its leader, or
        // NOT_LEADER_OR_FOLLOWER elsewhere: never the name's error).
        let good = codes.iter().find(|(n, _)| n == TOPIC).map(|(_, c)| *c);
        assert!(matches!(good, Some(0 | 6)), "{codes:?}");
    }
}
