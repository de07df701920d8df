//! Writes the seed corpora of the fuzz targets (`tests/fuzz/corpus/<target>/seed-*`): what
//! real clients and a real cluster write, so that the fuzzer starts from inputs that get far.
//!
//!     cargo run --release --manifest-path tests/fuzz/Cargo.toml --example seed-corpora [-- DIR]
//!
//! The Kafka requests are the ones the Kafka clients send (kafka-protocol's encoding of each
//! API oxbow serves, at the versions librdkafka and the Java client use); the log's commands,
//! states and segment files come from a real three-node cluster of cores (`cluster.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use oxbow_core::coordinator::{Command, CommittedOffset, GroupMeta, StoredMember, StoredState};
use oxbow_core::epoch_history::EpochHistory;
use oxbow_core::ids::{Generation, Offset, ProducerEpoch, ProducerId as CoreProducerId};
use oxbow_core::metadata::{decode_entry, encode_entry, Entry, Origin, PartitionLimits};
use oxbow_core::producer::ProducerTable;
use oxbow_core::snapshot::SnapshotData;
use oxbow_core::txn::{TxnCommand, TxnMeta, TxnState, TxnStored};
use oxbow_fuzz::requests::body;
use oxbow_fuzz::seeds::{batch_with, CODECS};

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut written = 0;
    let mut write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
        written += 1;
    };
    for (name, bytes) in batch_seeds() {
        write("batch", &name, &bytes);
    }
    let saved = oxbow_fuzz::cluster::Cluster::build();
    for (name, bytes) in decoder_seeds(&saved) {
        write("decoders", &name, &bytes);
    }
    for (name, bytes) in segment_seeds(&saved) {
        write("segments", &name, &bytes);
    }
    for (name, bytes) in peer_seeds(&saved) {
        write("peer_frame", &name, &bytes);
    }
    for (name, bytes) in kafka_seeds() {
        write("kafka_request", &name, &bytes);
    }
    println!("wrote {written} seeds under {}", root.display());
}

fn batch_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, codec) in CODECS.iter().enumerate() {
        for (producer, kind) in [(-1, "plain"), (7, "idempotent")] {
            let batch = batch_with(5, 1_000, *codec, producer);
            for (flags, lookup) in [(1u8, 1_002i64), (3, 0)] {
                let mut input = vec![flags];
                input.extend_from_slice(&lookup.to_be_bytes());
                input.extend_from_slice(&batch);
                out.push((format!("codec{i}-{kind}-{flags}"), input));
            }
        }
    }
    out
}

fn decoder_seeds(saved: &oxbow_fuzz::cluster::Saved) -> Vec<(String, Vec<u8>)> {
    let member = StoredMember {
        member_id: "rdkafka-1".into(),
        instance_id: Some("static-1".into()),
        client_id: "rdkafka".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 45_000,
        rebalance_timeout_ms: 300_000,
        subscription: Bytes::from_static(b"\0\x01\0\0\0\x01\0\x05fuzz"),
        assignment: Bytes::from_static(b"\0\x01\0\0\0\x01\0\x05fuzz\0\0\0\x01\0\0\0\0"),
    };
    let commands = [
        Command::Offsets {
            group_id: "g".into(),
            offsets: vec![(
                "fuzz".into(),
                0,
                CommittedOffset {
                    offset: 42,
                    leader_epoch: 3,
                    metadata: "m".into(),
                    commit_time_ms: 1_700_000_000_000,
                },
            )],
        },
        Command::Group {
            group_id: "g".into(),
            meta: GroupMeta {
                generation: Generation(4),
                protocol_type: "consumer".into(),
                protocol: "range".into(),
                leader: "rdkafka-1".into(),
                members: vec![member],
                state_time_ms: 1_700_000_000_500,
            },
        },
        Command::Delete {
            group_id: "g".into(),
        },
    ];
    let mut out = Vec::new();
    let mut state = StoredState::default();
    for (i, command) in commands.iter().enumerate() {
        out.push((
            format!("coordinator-command-{i}"),
            [&[0u8][..], &command.encode()].concat(),
        ));
        if let Command::Offsets { group_id, offsets } = command {
            let group = state.groups.entry(group_id.clone()).or_default();
            for (topic, partition, offset) in offsets {
                group
                    .offsets
                    .insert((topic.clone(), *partition), offset.clone());
            }
        }
        if let Command::Group { group_id, meta } = command {
            state.groups.entry(group_id.clone()).or_default().meta = Some(meta.clone());
        }
    }
    out.push((
        "coordinator-state".into(),
        [&[1u8][..], &state.encode()].concat(),
    ));
    // A transaction coordinator's command and state.
    let meta = TxnMeta {
        producer_id: CoreProducerId((1 << 62) | 3),
        epoch: ProducerEpoch(2),
        last: Some((CoreProducerId((1 << 62) | 3), ProducerEpoch(1))),
        timeout_ms: 60_000,
        state: TxnState::Ongoing,
        partitions: vec![("orders".into(), 0), ("orders".into(), 3)],
        start_ms: 1_700_000_000_000,
        updated_ms: 1_700_000_000_100,
    };
    let command = TxnCommand::Put {
        transactional_id: "t".into(),
        meta: meta.clone(),
    };
    out.push((
        "txn-command".into(),
        [&[6u8][..], &command.encode()].concat(),
    ));
    let txn_state = TxnStored {
        ids: [("t".to_string(), meta)].into_iter().collect(),
        next_counter: 4,
    };
    out.push((
        "txn-state".into(),
        [&[7u8][..], &txn_state.encode()].concat(),
    ));
    // The metadata log's entries, and its state, from the cluster.
    let cluster = oxbow_fuzz::cluster::Cluster::restart(saved, 1);
    let mut entries = 0;
    for entry in saved.entries(oxbow_core::metadata::METADATA_GROUP) {
        if let Ok(Entry { command, .. }) = decode_entry(&entry.data) {
            let forwarded = encode_entry(
                &command,
                Some(Origin {
                    node: oxbow_core::ids::NodeId(2),
                    token: 77,
                }),
                PartitionLimits::DEFAULT,
            );
            out.push((
                format!("metadata-entry-{entries}"),
                [&[2u8][..], &entry.data].concat(),
            ));
            out.push((
                format!("metadata-forwarded-{entries}"),
                [&[2u8][..], &forwarded].concat(),
            ));
            out.push((
                format!("metadata-command-{entries}"),
                [&[3u8][..], &command.encode()].concat(),
            ));
            entries += 1;
        }
    }
    assert!(entries > 0, "the cluster's metadata log has entries");
    let metadata = cluster.nodes[&oxbow_core::ids::NodeId(1)]
        .metadata()
        .expect("metadata")
        .encode();
    out.push(("metadata-state".into(), [&[4u8][..], &metadata].concat()));
    let snapshot = SnapshotData {
        log_start_offset: Offset(6),
        next_offset: Offset(3),
        producers: ProducerTable::new(),
        producers_index: 9,
        epochs: {
            let mut epochs = EpochHistory::new();
            epochs.on_entry(oxbow_core::ids::Term(2), Offset(3));
            epochs
        },
    };
    out.push(("snapshot".into(), [&[5u8][..], &snapshot.encode()].concat()));
    out
}

/// The cluster's own segment files, as `segments` inputs (raw, so every frame is as written),
/// one input per group's files.
fn segment_seeds(saved: &oxbow_fuzz::cluster::Saved) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (node, files) in saved.files() {
        let mut by_group: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for (name, bytes) in files {
            by_group
                .entry(name[..21].to_string())
                .or_default()
                .push((name, bytes));
        }
        for (group, files) in by_group {
            // The target's file names: group 0 or 1, its first segment (the cluster's groups
            // have one segment each) or index file.
            let mut chunks = Vec::new();
            for (name, bytes) in &files {
                let file: u8 = match (
                    group.as_str() == "g00000000000000000000",
                    name.ends_with(".idx"),
                ) {
                    (true, false) => 0,
                    (false, false) => 2,
                    (_, true) => 4,
                };
                for piece in bytes.chunks(u16::MAX as usize - 1) {
                    chunks.push([&[file][..], piece].concat());
                }
            }
            for flags in [0u8, 1] {
                let mut input = vec![flags];
                input.extend(oxbow_fuzz::join_chunks(chunks.iter().map(Vec::as_slice)));
                out.push((format!("node{}-{group}-{flags}", node.0), input));
            }
        }
    }
    out
}

/// The messages the cluster's nodes send each other, as peer frame payloads.
fn peer_seeds(saved: &oxbow_fuzz::cluster::Saved) -> Vec<(String, Vec<u8>)> {
    let mut cluster = oxbow_fuzz::cluster::Cluster::restart(saved, 1);
    let sent = cluster.record_sends(30);
    sent.into_iter()
        .enumerate()
        .map(|(i, (from, payload))| {
            let choice = u8::from(from.0 == 3) | (3 << 1);
            (format!("sent-{i}"), [&[choice][..], &payload].concat())
        })
        .collect()
}

fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

fn kafka_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    let mut one = |name: &str, request: Vec<u8>| out.push((name.to_string(), vec![request]));
    one(
        "api-versions",
        body(ApiKey::ApiVersions, 3, 1, &{
            let mut r = ApiVersionsRequest::default();
            r.client_software_name = s("librdkafka");
            r.client_software_version = s("2.11.1");
            r
        }),
    );
    for version in [1i16, 9, 12] {
        one(
            &format!("metadata-v{version}"),
            body(ApiKey::Metadata, version, 2, &{
                let mut t = metadata_request::MetadataRequestTopic::default();
                t.name = Some(topic("fuzz"));
                let mut r = MetadataRequest::default();
                r.topics = Some(vec![t]);
                r.allow_auto_topic_creation = true;
                r
            }),
        );
    }
    for (i, codec) in CODECS.iter().enumerate() {
        for (version, producer) in [(3i16, -1i64), (7, -1), (9, 0)] {
            let mut p = produce_request::PartitionProduceData::default();
            p.index = (i % 2) as i32;
            p.records = Some(batch_with(3, 1_700_000_000_000, *codec, producer));
            let mut t = produce_request::TopicProduceData::default();
            t.name = topic("fuzz");
            t.partition_data = vec![p];
            let mut r = ProduceRequest::default();
            r.acks = -1;
            r.timeout_ms = 1_000;
            r.topic_data = vec![t];
            one(
                &format!("produce-v{version}-codec{i}-{producer}"),
                body(ApiKey::Produce, version, 3, &r),
            );
        }
    }
    one(
        "init-producer-id",
        body(ApiKey::InitProducerId, 4, 4, &{
            let mut r = InitProducerIdRequest::default();
            r.transaction_timeout_ms = 60_000;
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
            r
        }),
    );
    one(
        "init-producer-id-transactional",
        body(ApiKey::InitProducerId, 4, 4, &{
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = Some(TransactionalId(s("t")));
            r.transaction_timeout_ms = 60_000;
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
            r
        }),
    );
    for version in [4i16, 11, 12] {
        one(
            &format!("fetch-v{version}"),
            body(ApiKey::Fetch, version, 5, &{
                let mut p = fetch_request::FetchPartition::default();
                p.partition = 0;
                p.fetch_offset = 0;
                p.partition_max_bytes = 1 << 20;
                p.current_leader_epoch = -1;
                let mut t = fetch_request::FetchTopic::default();
                t.topic = topic("fuzz");
                t.partitions = vec![p];
                let mut r = FetchRequest::default();
                r.replica_id = BrokerId(-1);
                r.max_wait_ms = 10;
                r.min_bytes = 1;
                r.max_bytes = 1 << 20;
                r.session_epoch = if version >= 7 { 0 } else { -1 };
                r.topics = vec![t];
                r
            }),
        );
    }
    for (version, timestamp) in [(1i16, -2i64), (5, -1), (7, 1_700_000_000_001)] {
        one(
            &format!("list-offsets-v{version}-{timestamp}"),
            body(ApiKey::ListOffsets, version, 6, &{
                let mut p = list_offsets_request::ListOffsetsPartition::default();
                p.partition_index = 0;
                p.timestamp = timestamp;
                p.current_leader_epoch = -1;
                let mut t = list_offsets_request::ListOffsetsTopic::default();
                t.name = topic("fuzz");
                t.partitions = vec![p];
                let mut r = ListOffsetsRequest::default();
                r.replica_id = BrokerId(-1);
                r.topics = vec![t];
                r
            }),
        );
    }
    one(
        "offset-for-leader-epoch",
        body(ApiKey::OffsetForLeaderEpoch, 4, 18, &{
            let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
            p.partition = 0;
            p.current_leader_epoch = 1;
            p.leader_epoch = 1;
            let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
            t.topic = topic("fuzz");
            t.partitions = vec![p];
            let mut r = OffsetForLeaderEpochRequest::default();
            r.replica_id = BrokerId(-1);
            r.topics = vec![t];
            r
        }),
    );
    one(
        "create-topics",
        body(ApiKey::CreateTopics, 7, 7, &{
            let mut t = create_topics_request::CreatableTopic::default();
            t.name = topic("made");
            t.num_partitions = 3;
            t.replication_factor = 1;
            let mut c = create_topics_request::CreatableTopicConfig::default();
            c.name = s("retention.ms");
            c.value = Some(s("60000"));
            t.configs = vec![c];
            let mut r = CreateTopicsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 1_000;
            r
        }),
    );
    one(
        "create-partitions",
        body(ApiKey::CreatePartitions, 3, 8, &{
            let mut t = create_partitions_request::CreatePartitionsTopic::default();
            t.name = topic("fuzz");
            t.count = 3;
            let mut r = CreatePartitionsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 1_000;
            r
        }),
    );
    one(
        "delete-topics",
        body(ApiKey::DeleteTopics, 4, 9, &{
            let mut r = DeleteTopicsRequest::default();
            r.topic_names = vec![topic("made")];
            r.timeout_ms = 1_000;
            r
        }),
    );
    one(
        "delete-records",
        body(ApiKey::DeleteRecords, 2, 10, &{
            let mut p = delete_records_request::DeleteRecordsPartition::default();
            p.partition_index = 1;
            p.offset = 1;
            let mut t = delete_records_request::DeleteRecordsTopic::default();
            t.name = topic("fuzz");
            t.partitions = vec![p];
            let mut r = DeleteRecordsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 1_000;
            r
        }),
    );
    one(
        "describe-configs",
        body(ApiKey::DescribeConfigs, 4, 11, &{
            let mut t = describe_configs_request::DescribeConfigsResource::default();
            t.resource_type = 2;
            t.resource_name = s("fuzz");
            let mut b = describe_configs_request::DescribeConfigsResource::default();
            b.resource_type = 4;
            b.resource_name = s("1");
            let mut r = DescribeConfigsRequest::default();
            r.resources = vec![t, b];
            r
        }),
    );
    one(
        "describe-cluster",
        body(
            ApiKey::DescribeCluster,
            0,
            12,
            &DescribeClusterRequest::default(),
        ),
    );
    one(
        "find-coordinator",
        body(ApiKey::FindCoordinator, 4, 13, &{
            let mut r = FindCoordinatorRequest::default();
            r.coordinator_keys = vec![s("g")];
            r
        }),
    );
    one(
        "describe-log-dirs",
        body(
            ApiKey::DescribeLogDirs,
            4,
            14,
            &DescribeLogDirsRequest::default(),
        ),
    );
    one(
        "list-groups",
        body(ApiKey::ListGroups, 4, 15, &ListGroupsRequest::default()),
    );
    one(
        "find-coordinator-transaction",
        body(ApiKey::FindCoordinator, 4, 13, &{
            let mut r = FindCoordinatorRequest::default();
            r.key_type = 1;
            r.coordinator_keys = vec![s("t")];
            r
        }),
    );
    one(
        "describe-transactions",
        body(ApiKey::DescribeTransactions, 0, 17, &{
            let mut r = DescribeTransactionsRequest::default();
            r.transactional_ids = vec![TransactionalId(s("t"))];
            r
        }),
    );
    one(
        "list-transactions",
        body(ApiKey::ListTransactions, 1, 18, &{
            let mut r = ListTransactionsRequest::default();
            r.state_filters = vec![s("Ongoing"), s("Nonsense")];
            r.duration_filter = 1_000;
            r
        }),
    );
    one(
        "describe-groups",
        body(ApiKey::DescribeGroups, 5, 16, &{
            let mut r = DescribeGroupsRequest::default();
            r.groups = vec![kafka_protocol::messages::GroupId(s("g"))];
            r
        }),
    );
    one(
        "offset-fetch",
        body(ApiKey::OffsetFetch, 7, 17, &{
            let mut r = OffsetFetchRequest::default();
            r.group_id = kafka_protocol::messages::GroupId(s("g"));
            r.topics = None;
            r
        }),
    );
    // A consumer group member's life, on one connection.
    let join = body(ApiKey::JoinGroup, 7, 20, &{
        let mut p = join_group_request::JoinGroupRequestProtocol::default();
        p.name = s("range");
        p.metadata = Bytes::from_static(b"\0\x01\0\0\0\x01\0\x04fuzz\xff\xff\xff\xff");
        let mut r = JoinGroupRequest::default();
        r.group_id = kafka_protocol::messages::GroupId(s("g"));
        r.session_timeout_ms = 10_000;
        r.rebalance_timeout_ms = 10_000;
        r.member_id = s("");
        r.protocol_type = s("consumer");
        r.protocols = vec![p];
        r
    });
    let sync = body(ApiKey::SyncGroup, 5, 21, &{
        let mut r = SyncGroupRequest::default();
        r.group_id = kafka_protocol::messages::GroupId(s("g"));
        r.generation_id = 1;
        r.member_id = s("member");
        r.protocol_type = Some(s("consumer"));
        r.protocol_name = Some(s("range"));
        r
    });
    let heartbeat = body(ApiKey::Heartbeat, 4, 22, &{
        let mut r = HeartbeatRequest::default();
        r.group_id = kafka_protocol::messages::GroupId(s("g"));
        r.generation_id = 1;
        r.member_id = s("member");
        r
    });
    let commit = body(ApiKey::OffsetCommit, 8, 23, &{
        let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = 2;
        p.committed_leader_epoch = -1;
        let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
        t.name = topic("fuzz");
        t.partitions = vec![p];
        let mut r = OffsetCommitRequest::default();
        r.group_id = kafka_protocol::messages::GroupId(s("g"));
        r.generation_id_or_member_epoch = -1;
        r.member_id = s("");
        r.topics = vec![t];
        r
    });
    let leave = body(ApiKey::LeaveGroup, 4, 24, &{
        let mut m = leave_group_request::MemberIdentity::default();
        m.member_id = s("member");
        let mut r = LeaveGroupRequest::default();
        r.group_id = kafka_protocol::messages::GroupId(s("g"));
        r.members = vec![m];
        r
    });
    let delete = body(ApiKey::DeleteGroups, 2, 25, &{
        let mut r = DeleteGroupsRequest::default();
        r.groups_names = vec![kafka_protocol::messages::GroupId(s("g"))];
        r
    });
    let offset_delete = body(ApiKey::OffsetDelete, 0, 26, &{
        let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
        p.partition_index = 0;
        let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
        t.name = topic("fuzz");
        t.partitions = vec![p];
        let mut r = OffsetDeleteRequest::default();
        r.group_id = kafka_protocol::messages::GroupId(s("g"));
        r.topics = vec![t];
        r
    });
    out.push((
        "group-life".into(),
        vec![join, sync, heartbeat, commit, offset_delete, leave, delete],
    ));
    out.into_iter()
        .map(|(name, requests)| {
            (
                name,
                oxbow_fuzz::join_chunks(requests.iter().map(Vec::as_slice)),
            )
        })
        .collect()
}
