//! The metadata state machine: applying, refusing and encoding commands and state.

use super::*;

/// The limits an entry carries in these tests: the defaults.
const L: PartitionLimits = PartitionLimits::DEFAULT;

fn create(name: &str, partitions: u32, rf: u16) -> MetadataCommand {
    MetadataCommand::CreateTopic(CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
        assignment: Vec::new(),
    })
}

/// Found by the `decoders` fuzz target: decoding asserted the state's invariants, so a
/// snapshot breaking one (here a topic without partitions) panicked instead of being refused.
#[test]
fn a_state_breaking_an_invariant_is_refused() {
    let mut state = MetadataState::new(vec![NodeId(1)]);
    state
        .apply(RaftIndex(1), Term(1), &create("a", 1, 1), L)
        .expect("a");
    state
        .topics
        .get_mut("a")
        .expect("created")
        .partitions
        .clear();
    state.partitions = 0;
    assert_eq!(
        MetadataState::decode(&state.encode()),
        Err(DecodeError("a topic has partitions"))
    );
}

#[test]
fn the_state_encodes_and_decodes_whole() {
    let mut state = MetadataState::new(vec![NodeId(3), NodeId(1), NodeId(2)]);
    let mut with_config = create("b", 2, 3);
    if let MetadataCommand::CreateTopic(c) = &mut with_config {
        c.configs
            .insert("message.timestamp.type".into(), "LogAppendTime".into());
    }
    state
        .apply(RaftIndex(1), Term(1), &create("a", 3, 2), L)
        .expect("a");
    state
        .apply(RaftIndex(2), Term(1), &with_config, L)
        .expect("b");
    state
        .apply(
            RaftIndex(4),
            Term(2),
            &MetadataCommand::DeleteTopic { name: "a".into() },
            L,
        )
        .expect("deleted");
    state.apply_noop(RaftIndex(5));
    let decoded = MetadataState::decode(&state.encode()).expect("decodes");
    assert_eq!(decoded, state);
    assert_eq!(decoded.applied(), RaftIndex(5));
    let bytes = state.encode();
    for cut in 0..bytes.len() {
        assert!(MetadataState::decode(&bytes[..cut]).is_err());
    }
}

#[test]
fn topic_configs_change_at_run_time_where_they_can() {
    let mut state = MetadataState::new(vec![NodeId(1)]);
    let mut create_with = create("t", 1, 1);
    if let MetadataCommand::CreateTopic(c) = &mut create_with {
        c.configs
            .insert("message.timestamp.type".into(), "LogAppendTime".into());
    }
    state
        .apply(RaftIndex(1), Term(1), &create_with, L)
        .expect("created");
    let alter =
        |set: &[(&str, &str)], remove: &[&str], replace| MetadataCommand::AlterTopicConfigs {
            name: "t".into(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remove: remove.iter().map(|k| k.to_string()).collect(),
            replace,
        };
    let configs = |state: &MetadataState| state.topic("t").expect("exists").configs.clone();
    let set = alter(
        &[("retention.ms", "60000"), ("retention.bytes", "1024")],
        &[],
        false,
    );
    assert_eq!(MetadataCommand::decode(&set.encode()), Ok(set.clone()));
    state.apply(RaftIndex(2), Term(1), &set, L).expect("set");
    assert_eq!(
        configs(&state).get("retention.ms").map(String::as_str),
        Some("60000")
    );
    state
        .apply(
            RaftIndex(3),
            Term(1),
            &alter(&[], &["retention.bytes"], false),
            L,
        )
        .expect("removed");
    assert!(!configs(&state).contains_key("retention.bytes"));
    // AlterConfigs replaces what can change, and may name the rest as it is.
    let replace = alter(
        &[
            ("retention.bytes", "2048"),
            ("message.timestamp.type", "LogAppendTime"),
        ],
        &[],
        true,
    );
    assert_eq!(
        MetadataCommand::decode(&replace.encode()),
        Ok(replace.clone())
    );
    state
        .apply(RaftIndex(4), Term(1), &replace, L)
        .expect("replaced");
    let now = configs(&state);
    assert!(!now.contains_key("retention.ms"));
    assert_eq!(now.get("retention.bytes").map(String::as_str), Some("2048"));
    assert_eq!(
        now.get("message.timestamp.type").map(String::as_str),
        Some("LogAppendTime")
    );
    // What the partitions read when they start cannot change; bad values are refused.
    for refused in [
        alter(&[("message.timestamp.type", "CreateTime")], &[], false),
        alter(&[], &["message.timestamp.type"], false),
        alter(&[("retention.ms", "soon")], &[], false),
    ] {
        assert!(matches!(
            state.check(&refused, L),
            Err(AdminError::InvalidConfig(_))
        ));
    }
    let unknown = MetadataCommand::AlterTopicConfigs {
        name: "nope".into(),
        set: BTreeMap::new(),
        remove: Vec::new(),
        replace: false,
    };
    assert_eq!(state.check(&unknown, L), Err(AdminError::UnknownTopic));
}

/// A topic is created compacted or switched to it at run time; its cleanup policy and
/// compaction settings are replicated like any override (in commands and in snapshots), and
/// Kafka's check of the two lags holds at creation and at every change, against the set the
/// change leaves.
#[test]
fn compaction_is_set_at_creation_and_at_run_time() {
    let mut state = MetadataState::new(vec![NodeId(1)]);
    let with = |name: &str, configs: &[(&str, &str)]| {
        MetadataCommand::CreateTopic(CreateTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: 1,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            assignment: Vec::new(),
        })
    };
    let lags = with(
        "bad",
        &[
            ("min.compaction.lag.ms", "60000"),
            ("max.compaction.lag.ms", "1000"),
        ],
    );
    assert_eq!(
        state.check(&lags, L),
        Err(AdminError::InvalidConfig(
            "conflict topic config setting min.compaction.lag.ms (60000) > max.compaction.lag.ms (1000)".into()
        ))
    );
    let table = with(
        "table",
        &[
            ("cleanup.policy", "compact"),
            ("max.compaction.lag.ms", "1000"),
        ],
    );
    state
        .apply(RaftIndex(1), Term(1), &table, L)
        .expect("created");
    state
        .apply(RaftIndex(2), Term(1), &create("events", 1, 1), L)
        .expect("created");
    let cleanup = |state: &MetadataState, name: &str| state.topic(name).expect("exists").cleanup();
    assert_eq!(
        cleanup(&state, "table"),
        Cleanup {
            delete: false,
            compact: true
        }
    );
    assert_eq!(cleanup(&state, "events"), Cleanup::DELETE);
    let alter =
        |name: &str, set: &[(&str, &str)], remove: &[&str]| MetadataCommand::AlterTopicConfigs {
            name: name.into(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remove: remove.iter().map(|k| k.to_string()).collect(),
            replace: false,
        };
    // The minimum may not pass the maximum the topic has, nor the maximum the minimum.
    for refused in [
        alter("table", &[("min.compaction.lag.ms", "2000")], &[]),
        alter(
            "table",
            &[
                ("min.compaction.lag.ms", "5"),
                ("max.compaction.lag.ms", "4"),
            ],
            &[],
        ),
        alter("table", &[("cleanup.policy", "")], &[]),
    ] {
        assert!(
            matches!(state.check(&refused, L), Err(AdminError::InvalidConfig(_))),
            "{refused:?}"
        );
    }
    // Raising both together, or the maximum going back to its default, is fine.
    let raise = alter(
        "table",
        &[
            ("min.compaction.lag.ms", "2000"),
            ("max.compaction.lag.ms", "3000"),
        ],
        &[],
    );
    state
        .apply(RaftIndex(3), Term(1), &raise, L)
        .expect("raised");
    let switch = alter(
        "events",
        &[
            ("cleanup.policy", "delete,compact"),
            ("delete.retention.ms", "0"),
        ],
        &[],
    );
    assert_eq!(
        MetadataCommand::decode(&switch.encode()),
        Ok(switch.clone())
    );
    state
        .apply(RaftIndex(4), Term(1), &switch, L)
        .expect("switched");
    assert_eq!(
        cleanup(&state, "events"),
        Cleanup {
            delete: true,
            compact: true
        }
    );
    state
        .apply(
            RaftIndex(5),
            Term(1),
            &alter("table", &[], &["max.compaction.lag.ms", "cleanup.policy"]),
            L,
        )
        .expect("back to the defaults");
    assert_eq!(cleanup(&state, "table"), Cleanup::DELETE);
    assert_eq!(
        state
            .topic("table")
            .expect("exists")
            .config("max.compaction.lag.ms"),
        Some("9223372036854775807")
    );
    // A snapshot carries them, and one from before they existed (no such keys) reads as
    // the defaults: the configs are one map, encoded whole.
    let decoded = MetadataState::decode(&state.encode()).expect("decodes");
    assert_eq!(decoded, state);
    assert_eq!(
        decoded
            .topic("events")
            .expect("exists")
            .config("delete.retention.ms"),
        Some("0")
    );
}

#[test]
fn create_grow_delete() {
    let mut state = MetadataState::new(vec![NodeId(3), NodeId(1), NodeId(2)]);
    let change = state
        .apply(RaftIndex(1), Term(1), &create("a", 3, 2), L)
        .expect("created");
    let MetadataChange::TopicCreated { id, .. } = change else {
        panic!("{change:?}")
    };
    let topic = state.topic("a").expect("exists");
    assert_eq!(topic.id, id);
    let groups: Vec<u64> = topic.partitions.iter().map(|p| p.group.0).collect();
    assert_eq!(groups, vec![1, 2, 3]);
    // Every node leads (is first replica of) one partition.
    let firsts: std::collections::BTreeSet<NodeId> =
        topic.partitions.iter().map(|p| p.replicas[0]).collect();
    assert_eq!(firsts.len(), 3);
    assert_eq!(
        state.apply(RaftIndex(2), Term(1), &create("a", 1, 1), L),
        Err(AdminError::TopicAlreadyExists)
    );
    let grow = MetadataCommand::CreatePartitions {
        name: "a".into(),
        count: 5,
        assignment: Vec::new(),
    };
    assert_eq!(
        state.apply(RaftIndex(3), Term(2), &grow, L),
        Ok(MetadataChange::PartitionsCreated {
            name: "a".into(),
            from: 3
        })
    );
    assert_eq!(state.topic("a").expect("exists").partitions.len(), 5);
    assert_eq!(state.topic("a").expect("exists").id, id, "ids are stable");
    let second = state
        .apply(RaftIndex(4), Term(2), &create("b", 1, 3), L)
        .expect("created");
    assert!(matches!(second, MetadataChange::TopicCreated { id: other, .. } if other != id));
    let deleted = state
        .apply(
            RaftIndex(5),
            Term(2),
            &MetadataCommand::DeleteTopic { name: "a".into() },
            L,
        )
        .expect("deleted");
    assert!(matches!(deleted, MetadataChange::TopicDeleted(t) if t.partitions.len() == 5));
    assert!(state.topic("a").is_none());
    // Group ids are never reused.
    let third = state.apply(RaftIndex(6), Term(2), &create("a", 1, 1), L);
    assert!(third.is_ok());
    assert_eq!(
        state.topic("a").expect("exists").partitions[0].group,
        GroupId(7)
    );
    state.invariants();
}

#[test]
fn refusals_name_the_problem() {
    let state = MetadataState::new(vec![NodeId(1), NodeId(2)]);
    assert!(matches!(
        state.check(&create("bad name", 1, 1), L),
        Err(AdminError::InvalidTopic(_))
    ));
    assert!(matches!(
        state.check(&create("a", 0, 1), L),
        Err(AdminError::InvalidPartitions(_))
    ));
    assert!(matches!(
        state.check(&create("a", 1, 3), L),
        Err(AdminError::InvalidReplicationFactor(m)) if m.contains("number of nodes (2)")
    ));
    let with_config = |key: &str, value: &str| {
        MetadataCommand::CreateTopic(CreateTopic {
            name: "a".into(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::from([(key.to_string(), value.to_string())]),
            assignment: Vec::new(),
        })
    };
    assert!(matches!(
        state.check(&with_config("min.insync.replicas", "2"), L),
        Err(AdminError::InvalidConfig(m)) if m.contains("min.insync.replicas")
    ));
    assert!(matches!(
        state.check(&with_config("segment.ms", "0"), L),
        Err(AdminError::InvalidConfig(m)) if m.contains("segment.ms")
    ));
    assert!(state.check(&with_config("segment.ms", "1000"), L).is_ok());
    assert!(matches!(
        state.check(&with_config("retention.ms", "-2"), L),
        Err(AdminError::InvalidConfig(m)) if m.contains("retention.ms")
    ));
    assert!(matches!(
        state.check(&with_config("retention.bytes", "lots"), L),
        Err(AdminError::InvalidConfig(m)) if m.contains("retention.bytes")
    ));
    assert_eq!(state.check(&with_config("retention.ms", "-1"), L), Ok(()));
    assert_eq!(
        state.check(&with_config("retention.bytes", "1048576"), L),
        Ok(())
    );
    assert_eq!(
        state.check(&MetadataCommand::DeleteTopic { name: "x".into() }, L),
        Err(AdminError::UnknownTopic)
    );
}

#[test]
fn commands_round_trip_and_junk_is_refused() {
    let mut configs = BTreeMap::new();
    configs.insert(
        "message.timestamp.type".to_string(),
        "LogAppendTime".to_string(),
    );
    let commands = [
        MetadataCommand::CreateTopic(CreateTopic {
            name: "t".into(),
            partitions: 7,
            replication_factor: 3,
            configs,
            assignment: Vec::new(),
        }),
        MetadataCommand::DeleteTopic { name: "t".into() },
        MetadataCommand::CreatePartitions {
            name: "t".into(),
            count: 9,
            assignment: Vec::new(),
        },
    ];
    for command in commands {
        let bytes = command.encode();
        assert_eq!(MetadataCommand::decode(&bytes), Ok(command));
        for cut in 0..bytes.len() {
            assert!(MetadataCommand::decode(&bytes[..cut]).is_err());
        }
    }
}

fn nodes(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().map(|&i| NodeId(i)).collect()
}

#[test]
fn a_manual_assignment_is_checked_kept_and_encoded_while_older_entries_still_decode() {
    let mut state = MetadataState::new(nodes(&[1, 2, 3]));
    let assigned = |assignment: Vec<Vec<NodeId>>| {
        MetadataCommand::CreateTopic(CreateTopic {
            name: "t".into(),
            partitions: assignment.len() as u32,
            replication_factor: assignment.first().map_or(0, |a| a.len() as u16),
            configs: BTreeMap::new(),
            assignment,
        })
    };
    // Refused as Kafka refuses them, with INVALID_REPLICA_ASSIGNMENT.
    for bad in [
        vec![nodes(&[1, 1])],
        vec![nodes(&[1, 4])],
        vec![nodes(&[1, 2]), nodes(&[3])],
    ] {
        let error = state.check(&assigned(bad.clone()), L).expect_err("refused");
        assert_eq!(error.kafka_code(), 39, "{bad:?}: {error:?}");
        assert!(error.message().is_some());
    }
    let create = assigned(vec![nodes(&[3, 1]), nodes(&[2, 3])]);
    let bytes = create.encode();
    assert_eq!(MetadataCommand::decode(&bytes), Ok(create.clone()));
    for cut in 0..bytes.len() {
        assert!(MetadataCommand::decode(&bytes[..cut]).is_err());
    }
    state
        .apply(RaftIndex(1), Term(1), &create, L)
        .expect("applies");
    let replicas = |state: &MetadataState| -> Vec<Vec<NodeId>> {
        state
            .topic("t")
            .expect("exists")
            .partitions
            .iter()
            .map(|p| p.replicas.clone())
            .collect()
    };
    assert_eq!(replicas(&state), vec![nodes(&[3, 1]), nodes(&[2, 3])]);
    // Growing with an assignment: one list per new partition, of the topic's replication factor.
    let grow = |count, assignment| MetadataCommand::CreatePartitions {
        name: "t".into(),
        count,
        assignment,
    };
    for bad in [
        grow(4, vec![nodes(&[1, 2])]),
        grow(3, vec![nodes(&[1])]),
        grow(3, vec![nodes(&[2, 2])]),
        grow(3, vec![nodes(&[2, 7])]),
    ] {
        assert_eq!(
            state.check(&bad, L).map_err(|e| e.kafka_code()),
            Err(39),
            "{bad:?}"
        );
    }
    let good = grow(3, vec![nodes(&[1, 2])]);
    assert_eq!(MetadataCommand::decode(&good.encode()), Ok(good.clone()));
    state
        .apply(RaftIndex(2), Term(1), &good, L)
        .expect("applies");
    assert_eq!(
        replicas(&state),
        vec![nodes(&[3, 1]), nodes(&[2, 3]), nodes(&[1, 2])]
    );
    // The snapshot keeps the replicas as assigned.
    assert_eq!(MetadataState::decode(&state.encode()), Ok(state.clone()));
    // Entries written before assignments existed decode as before (version 1, kind 3: a
    // CreatePartitions of "t" to 9), and a command without one encodes the same bytes.
    let old = [1u8, 3, 1, 0, 0, 0, b't', 9, 0, 0, 0];
    let decoded = MetadataCommand::decode(&old).expect("old entry decodes");
    assert_eq!(decoded, grow(9, Vec::new()));
    assert_eq!(decoded.encode(), old);
}

#[test]
fn entries_carry_the_partition_limits_and_older_entries_apply_as_they_did() {
    let origin = Origin {
        node: NodeId(2),
        token: 7,
    };
    let limits = PartitionLimits {
        cluster: 12,
        per_node: 3,
    };
    for origin in [None, Some(origin)] {
        let bytes = encode_entry(&create("t", 2, 1), origin, limits);
        let entry = decode_entry(&bytes).expect("decodes");
        assert_eq!(
            entry,
            Entry {
                command: create("t", 2, 1),
                origin,
                limits
            }
        );
        for cut in 0..bytes.len() {
            assert!(decode_entry(&bytes[..cut]).is_err());
        }
        // Only creations carry limits; other entries are written as before.
        let delete = MetadataCommand::DeleteTopic { name: "t".into() };
        let bytes = encode_entry(&delete, origin, limits);
        assert!(bytes.ends_with(&delete.encode()));
        assert_eq!(
            bytes.len(),
            delete.encode().len() + 17 * usize::from(origin.is_some())
        );
        assert_eq!(
            decode_entry(&bytes).expect("decodes").limits,
            PartitionLimits::UNCARRIED
        );
    }
    // An entry written before entries carried limits (a bare command) is checked against the
    // limits of that time: 100,000 partitions in the cluster, none per node.
    let old = create("t", 2, 1).encode();
    let entry = decode_entry(&old).expect("decodes");
    assert_eq!(entry.limits, PartitionLimits::UNCARRIED);
    let mut state = MetadataState::new(nodes(&[1]));
    for (index, name) in [(1, "a"), (2, "b")] {
        let command = create(name, 10_000, 1);
        state
            .apply(RaftIndex(index), Term(1), &command, entry.limits)
            .expect("past the default limit per node, as before");
    }
    assert_eq!(state.replicas_on(NodeId(1)), 20_000);
    // Applying checks the limits the entry carries, not a node's.
    let error = state
        .apply(RaftIndex(3), Term(1), &create("c", 1, 1), limits)
        .expect_err("refused");
    assert_eq!(
        error.message().expect("a message"),
        "the cluster holds 20000 partitions; 1 more would pass its limit of 12 (max_partitions)"
    );
    state.invariants();
    assert_eq!(MetadataState::decode(&state.encode()), Ok(state.clone()));
}

/// Found by the `decoders` fuzz target: limits written before a command that creates no
/// partitions decoded, and encoding that entry again dropped them. `encode_entry` never
/// writes such an entry, so decoding refuses it.
#[test]
fn limits_with_a_command_that_creates_no_partitions_are_refused() {
    let delete = MetadataCommand::DeleteTopic { name: "a".into() };
    let mut bytes = encode_entry(&create("a", 1, 1), None, PartitionLimits::DEFAULT);
    let command_at = bytes.len() - create("a", 1, 1).encode().len();
    bytes.truncate(command_at);
    bytes.extend_from_slice(&delete.encode());
    assert_eq!(
        decode_entry(&bytes),
        Err(DecodeError(
            "partition limits with a command that creates none"
        ))
    );
    let plain = encode_entry(&delete, None, PartitionLimits::DEFAULT);
    assert_eq!(decode_entry(&plain).expect("decodes").command, delete);
}
