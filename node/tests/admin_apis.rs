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

/// A CreateTopics v7 of one topic with a manual assignment (`num_partitions` and
/// `replication_factor` as given, -1 for "from the assignment"): its error code and message.
fn create_assigned(
    port: u16,
    topic: &str,
    assignment: &[&[i32]],
    partitions: i32,
    replication_factor: i16,
) -> (i16, Option<String>) {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic,
    };
    use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, CreateTopicsResponse};
    let mut creatable = CreatableTopic::default();
    creatable.name = name(topic);
    creatable.num_partitions = partitions;
    creatable.replication_factor = replication_factor;
    for (i, brokers) in assignment.iter().enumerate() {
        let mut a = CreatableReplicaAssignment::default();
        a.partition_index = i as i32;
        a.broker_ids = brokers.iter().map(|&b| BrokerId(b)).collect();
        creatable.assignments.push(a);
    }
    let mut request = CreateTopicsRequest::default();
    request.timeout_ms = 10_000;
    request.topics = vec![creatable];
    let response: CreateTopicsResponse = call(port, ApiKey::CreateTopics, 7, &request);
    let result = &response.topics[0];
    (
        result.error_code,
        result.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// A CreatePartitions v3 growing `topic` to `count` with the new partitions' replicas.
fn grow_assigned(
    port: u16,
    topic: &str,
    count: i32,
    assignment: &[&[i32]],
) -> (i16, Option<String>) {
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    use kafka_protocol::messages::{BrokerId, CreatePartitionsRequest, CreatePartitionsResponse};
    let mut t = CreatePartitionsTopic::default();
    t.name = name(topic);
    t.count = count;
    t.assignments = Some(
        assignment
            .iter()
            .map(|brokers| {
                let mut a = CreatePartitionsAssignment::default();
                a.broker_ids = brokers.iter().map(|&b| BrokerId(b)).collect();
                a
            })
            .collect(),
    );
    let mut request = CreatePartitionsRequest::default();
    request.timeout_ms = 10_000;
    request.topics = vec![t];
    let response: CreatePartitionsResponse = call(port, ApiKey::CreatePartitions, 3, &request);
    let result = &response.results[0];
    (
        result.error_code,
        result.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// Each partition's (replicas, leader) of `topic` from a Metadata v12 at `port`, once every
/// partition has a leader.
pub fn replicas_and_leaders(port: u16, topic: &str) -> Vec<(Vec<i32>, i32)> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    for _ in 0..100 {
        let mut t = MetadataRequestTopic::default();
        t.name = Some(name(topic));
        let mut request = MetadataRequest::default();
        request.topics = Some(vec![t]);
        let response: MetadataResponse = call(port, ApiKey::Metadata, 12, &request);
        let topic = &response.topics[0];
        let mut partitions: Vec<_> = topic
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                    p.leader_id.0,
                )
            })
            .collect();
        partitions.sort();
        if topic.error_code == 0 && partitions.iter().all(|(_, _, leader)| *leader > 0) {
            return partitions.into_iter().map(|(_, r, l)| (r, l)).collect();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{topic} has no leader for every partition");
}

const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_REQUEST: i16 = 42;

#[test]
fn a_manual_replica_assignment_is_checked_and_becomes_the_partitions_raft_voters() {
    let cluster = Cluster::start();
    let port = cluster.kafka[1];
    // Refusals, each with a message, and nothing created.
    for (assignment, partitions, rf, code) in [
        (&[&[1, 1][..]][..], -1, -1, INVALID_REPLICA_ASSIGNMENT),
        (&[&[1, 9][..]][..], -1, -1, INVALID_REPLICA_ASSIGNMENT),
        (
            &[&[1, 2][..], &[3][..]][..],
            -1,
            -1,
            INVALID_REPLICA_ASSIGNMENT,
        ),
        (&[&[][..]][..], -1, -1, INVALID_REPLICA_ASSIGNMENT),
        (&[&[1, 2][..]][..], 1, -1, INVALID_REQUEST),
        (&[&[1, 2][..]][..], -1, 2, INVALID_REQUEST),
    ] {
        let (error, message) = create_assigned(port, "refused", assignment, partitions, rf);
        assert_eq!(error, code, "{assignment:?}: {message:?}");
        assert!(message.is_some_and(|m| !m.is_empty()), "{assignment:?}");
    }
    // Each replication-factor-1 partition is led by the one broker named, unlike the round
    // robin (which starts at a node that depends on the group id, and goes up from there).
    let single: &[&[i32]] = &[&[3], &[3], &[1], &[2], &[2]];
    assert_eq!(create_assigned(port, "single", single, -1, -1), (0, None));
    let got = replicas_and_leaders(port, "single");
    let want: Vec<(Vec<i32>, i32)> = single.iter().map(|b| (b.to_vec(), b[0])).collect();
    assert_eq!(got, want);
    // Replicas as given, in order (the first is the preferred leader), on every node.
    let pairs: &[&[i32]] = &[&[3, 1], &[2, 3], &[1, 2]];
    assert_eq!(create_assigned(port, "pairs", pairs, -1, -1), (0, None));
    for p in &cluster.kafka {
        let got = replicas_and_leaders(*p, "pairs");
        for ((replicas, leader), want) in got.iter().zip(pairs) {
            assert_eq!(replicas, want);
            assert!(replicas.contains(leader));
        }
    }
    // CreatePartitions: one list per new partition, of the topic's replication factor.
    for (count, assignment) in [
        (5, &[&[1, 2][..]][..]),
        (4, &[&[1][..]][..]),
        (4, &[&[2, 2][..]][..]),
        (4, &[&[2, 8][..]][..]),
    ] {
        let (error, message) = grow_assigned(port, "pairs", count, assignment);
        assert_eq!(
            error, INVALID_REPLICA_ASSIGNMENT,
            "{assignment:?}: {message:?}"
        );
        assert!(message.is_some());
    }
    assert_eq!(grow_assigned(port, "single", 6, &[&[1]]), (0, None));
    let got = replicas_and_leaders(port, "single");
    assert_eq!(got.len(), 6);
    assert_eq!(got[5], (vec![1], 1));
}

/// The Kafka port of the coordinator of `group` (FindCoordinator v0, until it answers).
fn coordinator_port(cluster: &Cluster, group: &str) -> u16 {
    use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    for _ in 0..100 {
        let mut request = FindCoordinatorRequest::default();
        request.key = StrBytes::from_string(group.to_string());
        let response: FindCoordinatorResponse =
            call(cluster.kafka[0], ApiKey::FindCoordinator, 0, &request);
        if response.error_code == 0 {
            return cluster.kafka[response.node_id.0 as usize - 1];
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no coordinator for {group}");
}

/// An OffsetDelete v0 to the group's coordinator: the group's error and each partition's.
fn offset_delete(
    cluster: &Cluster,
    group: &str,
    partitions: &[(&str, i32)],
) -> (i16, Vec<(String, i32, i16)>) {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetDeleteRequest, OffsetDeleteResponse};
    let mut request = OffsetDeleteRequest::default();
    request.group_id = GroupId(StrBytes::from_string(group.to_string()));
    for (topic, partition) in partitions {
        let mut p = OffsetDeleteRequestPartition::default();
        p.partition_index = *partition;
        let mut t = OffsetDeleteRequestTopic::default();
        t.name = name(topic);
        t.partitions = vec![p];
        request.topics.push(t);
    }
    let port = coordinator_port(cluster, group);
    let response: OffsetDeleteResponse = call(port, ApiKey::OffsetDelete, 0, &request);
    let mut answers: Vec<(String, i32, i16)> = response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
        })
        .collect();
    answers.sort();
    (response.error_code, answers)
}

#[test]
fn offset_delete_removes_offsets_of_topics_the_group_does_not_subscribe_to() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    use std::time::Duration;
    let cluster = Cluster::start();
    let (error, _) = offset_delete(&cluster, "nobody", &[(TOPIC, 0)]);
    assert_eq!(error, 69, "GROUP_ID_NOT_FOUND");
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "g")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    member.subscribe(&[TOPIC]).expect("subscribe");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while member.assignment().map_or(0, |a| a.count()) == 0 {
        assert!(std::time::Instant::now() < deadline, "no assignment");
        member.poll(Duration::from_millis(100));
    }
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(TOPIC, 0, Offset::Offset(5))
        .expect("add");
    offsets
        .add_partition_offset(TOPIC, 1, Offset::Offset(6))
        .expect("add");
    offsets
        .add_partition_offset("elsewhere", 0, Offset::Offset(7))
        .expect("add");
    member
        .commit(&offsets, CommitMode::Sync)
        .expect("offset commit");
    let committed = |partitions: &[(&str, i32)]| -> Vec<i64> {
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .set("group.id", "g")
            .create()
            .expect("consumer");
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        let got = reader
            .committed_offsets(list, Duration::from_secs(10))
            .expect("offset fetch");
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .collect()
    };
    // A member subscribes to TOPIC: its offsets stay; "elsewhere"'s go.
    let (error, answers) = offset_delete(&cluster, "g", &[(TOPIC, 0), ("elsewhere", 0)]);
    assert_eq!(error, 0);
    assert_eq!(
        answers,
        vec![("e2e".to_string(), 0, 86), ("elsewhere".to_string(), 0, 0)]
    );
    let all = [(TOPIC, 0), (TOPIC, 1), ("elsewhere", 0)];
    assert_eq!(committed(&all), vec![5, 6, -1]);
    // Once the group is empty, any of its offsets may go.
    member.unsubscribe();
    drop(member);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (error, answers) = offset_delete(&cluster, "g", &[(TOPIC, 0)]);
        if answers == vec![("e2e".to_string(), 0, 0)] {
            assert_eq!(error, 0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{error} {answers:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(committed(&all), vec![-1, 6, -1]);
}

/// A DescribeLogDirs at `port` (all partitions, or those of `topics`): the response's one
/// directory as (path, total bytes, usable bytes, {(topic, partition): size}).
fn log_dirs(
    port: u16,
    version: i16,
    topics: Option<&[(&str, i32)]>,
) -> (
    String,
    i64,
    i64,
    std::collections::BTreeMap<(String, i32), i64>,
) {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
    let mut request = DescribeLogDirsRequest::default();
    request.topics = topics.map(|topics| {
        topics
            .iter()
            .map(|(topic, partition)| {
                let mut t = DescribableLogDirTopic::default();
                t.topic = name(topic);
                t.partitions = vec![*partition];
                t
            })
            .collect()
    });
    let response: DescribeLogDirsResponse = call(port, ApiKey::DescribeLogDirs, version, &request);
    assert_eq!(response.error_code, 0);
    assert_eq!(response.results.len(), 1, "one log dir");
    let dir = &response.results[0];
    assert_eq!(dir.error_code, 0);
    let mut sizes = std::collections::BTreeMap::new();
    for t in &dir.topics {
        for p in &t.partitions {
            assert_eq!(p.offset_lag, 0);
            assert!(!p.is_future_key);
            sizes.insert((t.name.0.to_string(), p.partition_index), p.partition_size);
        }
    }
    (
        dir.log_dir.to_string(),
        dir.total_bytes,
        dir.usable_bytes,
        sizes,
    )
}

#[test]
fn describe_log_dirs_lists_each_hosted_partition_with_its_bytes_on_disk() {
    let cluster = Cluster::start();
    // A replication-factor-1 topic on node 2 only.
    assert_eq!(
        create_assigned(cluster.kafka[0], "only-on-2", &[&[2]], -1, -1),
        (0, None)
    );
    replicas_and_leaders(cluster.kafka[0], "only-on-2");
    let before: Vec<_> = cluster
        .kafka
        .iter()
        .map(|p| log_dirs(*p, 4, None))
        .collect();
    for (i, (dir, total, usable, sizes)) in before.iter().enumerate() {
        assert!(dir.ends_with(&format!("node-{}", i + 1)), "{dir}");
        assert!(
            *total > 0 && *usable > 0 && usable <= total,
            "{total} {usable}"
        );
        let e2e: Vec<i32> = sizes
            .keys()
            .filter(|(t, _)| t == TOPIC)
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(
            e2e,
            (0..common::PARTITIONS).collect::<Vec<_>>(),
            "node {}",
            i + 1
        );
        assert_eq!(
            sizes.contains_key(&("only-on-2".to_string(), 0)),
            i == 1,
            "node {}",
            i + 1
        );
    }
    // 200 records of 1000 bytes to partition 0 grow its files on every replica by as much.
    let leader = cluster.leaders()[&0];
    let port = cluster.kafka[leader as usize - 1];
    let answer = common::produce_raw(
        port,
        batch(
            &records(200, 1000),
            kafka_protocol::records::Compression::None,
        )
        .freeze(),
    )
    .expect("answer");
    assert_eq!(answer.error_code, 0);
    let key = (TOPIC.to_string(), 0);
    for (i, port) in cluster.kafka.iter().enumerate() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, _, _, sizes) = log_dirs(*port, 4, None);
            if sizes[&key] >= before[i].3[&key] + 200_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {}: {sizes:?}",
                i + 1
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Asked for one partition, v1 (no sizes of the disk): only that one.
        let (_, total, usable, sizes) = log_dirs(*port, 1, Some(&[(TOPIC, 0)]));
        assert_eq!(sizes.keys().collect::<Vec<_>>(), vec![&key]);
        assert_eq!((total, usable), (-1, -1), "v1 has no disk sizes");
    }
}

/// An ElectLeaders v2 at `port` for `partitions`: each one's (topic, partition, error code).
fn elect(port: u16, election_type: i8, partitions: &[(&str, i32)]) -> Vec<(String, i32, i16)> {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
    let mut request = ElectLeadersRequest::default();
    request.election_type = election_type;
    request.timeout_ms = 5_000;
    request.topic_partitions = Some(
        partitions
            .iter()
            .map(|(topic, partition)| {
                let mut t = TopicPartitions::default();
                t.topic = name(topic);
                t.partitions = vec![*partition];
                t
            })
            .collect(),
    );
    let response: ElectLeadersResponse = call(port, ApiKey::ElectLeaders, 2, &request);
    assert_eq!(response.error_code, 0);
    let mut results: Vec<(String, i32, i16)> = response
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code))
        })
        .collect();
    results.sort();
    results
}

/// The leader of partition 0 of `topic` that `port` names once it is not `not`.
fn leader_other_than(port: u16, topic: &str, not: i32) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let leader = replicas_and_leaders(port, topic)[0].1;
        if leader != not {
            return leader;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic} is still led by {not}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn elect_leaders_hands_leadership_back_to_the_preferred_replica() {
    let mut cluster = Cluster::start();
    let port = cluster.kafka[0];
    assert_eq!(
        create_assigned(port, "moved", &[&[2, 1, 3]], -1, -1),
        (0, None)
    );
    replicas_and_leaders(port, "moved");
    // Node 2, the preferred replica, goes away: another leads, and a preferred election
    // cannot happen while it is down.
    cluster.kill9(1);
    leader_other_than(port, "moved", 2);
    assert_eq!(
        elect(port, 0, &[("moved", 0)]),
        vec![("moved".to_string(), 0, 80)],
        "PREFERRED_LEADER_NOT_AVAILABLE"
    );
    // Back, it follows; once it is in sync, a preferred election makes it lead again,
    // through a node that neither leads nor is to lead.
    cluster.start_node(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let leader = loop {
        let (leader, isr) = isr(port, "moved");
        if isr.contains(&2) && leader != 2 {
            break leader;
        }
        assert!(std::time::Instant::now() < deadline, "{leader} {isr:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let third = [1, 3].into_iter().find(|n| *n != leader).expect("one");
    let third = cluster.kafka[third as usize - 1];
    assert_eq!(
        elect(third, 0, &[("moved", 0), ("nothing", 0), (TOPIC, 99)]),
        vec![
            ("e2e".to_string(), 99, 3),
            ("moved".to_string(), 0, 0),
            ("nothing".to_string(), 0, 3)
        ]
    );
    for p in &cluster.kafka {
        assert_eq!(leader_other_than(*p, "moved", 0), 2);
    }
    // Nothing to do now: ELECTION_NOT_NEEDED, for a preferred or an unclean election.
    for election_type in [0, 1] {
        assert_eq!(
            elect(port, election_type, &[("moved", 0)]),
            vec![("moved".to_string(), 0, 84)]
        );
    }
}

/// Partition 0 of `topic`'s leader and in-sync replicas, from a Metadata v12 at `port`.
fn isr(port: u16, topic: &str) -> (i32, Vec<i32>) {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name(topic));
    let mut request = MetadataRequest::default();
    request.topics = Some(vec![t]);
    let response: MetadataResponse = call(port, ApiKey::Metadata, 12, &request);
    let p = &response.topics[0].partitions[0];
    (p.leader_id.0, p.isr_nodes.iter().map(|b| b.0).collect())
}
