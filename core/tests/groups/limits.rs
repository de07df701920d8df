//! The group coordinator's bounds, with the helpers of `groups.rs`: the largest entry (one
//! offset commit, one membership), the groups one partition holds, a member's metadata, and
//! the bytes of a partition's stored state (its snapshot, one storage frame).

use super::*;
use oxbow_core::coordinator::StoredState;
use oxbow_core::io::TraceEvent;

#[test]
fn commits_and_memberships_larger_than_an_entry_may_be_are_refused() {
    let mut groups = Groups::with(|config| config.group_entry_bytes_max = 64 << 10);
    let wait = groups.join("");
    let member = groups.joined(wait);
    // An assignment of 100 KiB: the membership cannot be stored (Kafka: UNKNOWN_SERVER_ERROR).
    let too_large = groups.submit(GroupOp::Sync(SyncGroup {
        group_id: GROUP.into(),
        generation: member.generation,
        member_id: member.member_id.clone(),
        instance_id: None,
        assignments: vec![(member.member_id.clone(), Bytes::from(vec![1u8; 100 << 10]))],
    }));
    let too_large_logged = |warnings: Vec<String>| {
        warnings
            .iter()
            .filter(|w| w.starts_with("the group's membership is too large to store"))
            .count()
    };
    assert_eq!(too_large_logged(warnings()), 0);
    assert_eq!(
        groups.answer(too_large),
        GroupResponse::Sync(Err(GroupError::GroupTooLarge))
    );
    assert_eq!(GroupError::GroupTooLarge.kafka_code(), -1);
    assert_eq!(too_large_logged(warnings()), 1, "logged: {:?}", warnings());
    // A smaller one is stored.
    let wait = groups.sync(&member);
    assert_eq!(groups.synced(wait), format!("for {}", member.member_id));
    // 2,000 partitions of a long topic name in one commit: INVALID_COMMIT_OFFSET_SIZE.
    let topic = "t".repeat(200);
    let offsets = (0..2_000)
        .map(|p| (topic.clone(), p, 1, -1, String::new()))
        .collect();
    let answer = groups.call(GroupOp::OffsetCommit(OffsetCommit {
        group_id: GROUP.into(),
        generation: member.generation,
        member_id: member.member_id.clone(),
        instance_id: None,
        offsets,
    }));
    assert_eq!(
        answer,
        GroupResponse::OffsetCommit(Err(GroupError::CommitTooLarge))
    );
    assert_eq!(GroupError::CommitTooLarge.kafka_code(), 28);
    assert_eq!(
        groups.commit(member.generation, &member.member_id, 5),
        Ok(())
    );
    assert_eq!(groups.committed(), Some(5));
    for node in groups.cluster.nodes.values() {
        node.invariants();
    }
}

/// Group ids other than `GROUP` that the same coordinator partition serves.
fn neighbours(count: usize) -> Vec<String> {
    let home = partition_for(GROUP, PARTITIONS as usize);
    (0..)
        .map(|i| format!("neighbour-{i}"))
        .filter(|g| partition_for(g, PARTITIONS as usize) == home)
        .take(count)
        .collect()
}

#[test]
fn a_coordinator_full_of_groups_refuses_new_ones_and_says_so_once() {
    let mut groups = Groups::with(|config| config.coordinator.groups_max = 2);
    let commit = |groups: &mut Groups, group_id: &str| match groups.call(GroupOp::OffsetCommit(
        OffsetCommit {
            group_id: group_id.into(),
            generation: Generation(-1),
            member_id: String::new(),
            instance_id: None,
            offsets: vec![("events".into(), 0, 1, -1, String::new())],
        },
    )) {
        GroupResponse::OffsetCommit(result) => result,
        other => panic!("{other:?}"),
    };
    let full = |groups: &Groups| {
        groups
            .cluster
            .traces
            .iter()
            .filter(|(_, e)| matches!(e, TraceEvent::CoordinatorGroupsFull { .. }))
            .count()
    };
    let [a, b, c] = <[String; 3]>::try_from(neighbours(3)).expect("three");
    assert_eq!(commit(&mut groups, &a), Ok(()));
    assert_eq!(commit(&mut groups, &b), Ok(()));
    assert_eq!(full(&groups), 0);
    // A third group: refused (retriable), by OffsetCommit and by JoinGroup alike, and traced
    // (so logged) once, not per refusal.
    assert_eq!(
        commit(&mut groups, &c),
        Err(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(GroupError::CoordinatorNotAvailable.kafka_code(), 15);
    let mut join_c = join("");
    join_c.group_id = c.clone();
    assert_eq!(
        groups.call(GroupOp::Join(join_c.clone())),
        GroupResponse::Join(Err(GroupError::CoordinatorNotAvailable))
    );
    let (group, node) = groups.coordinator();
    assert_eq!(
        groups
            .cluster
            .traces
            .iter()
            .filter(|(_, e)| matches!(e, TraceEvent::CoordinatorGroupsFull { .. }))
            .collect::<Vec<_>>(),
        vec![&(
            node,
            TraceEvent::CoordinatorGroupsFull {
                group,
                groups: 2,
                limit: 2
            }
        )]
    );
    // Deleting a group makes room, which is traced once too, and the third group gets in.
    let deleted = groups.call(GroupOp::Delete {
        group_id: a.clone(),
    });
    assert_eq!(deleted, GroupResponse::Delete(Ok(())));
    groups.cluster.tick(2);
    let room: Vec<_> = groups
        .cluster
        .traces
        .iter()
        .filter(|(_, e)| matches!(e, TraceEvent::CoordinatorGroupsHaveRoom { .. }))
        .collect();
    assert_eq!(
        room,
        vec![&(
            node,
            TraceEvent::CoordinatorGroupsHaveRoom {
                group,
                groups: 1,
                limit: 2
            }
        )]
    );
    assert_eq!(commit(&mut groups, &c), Ok(()));
    assert_eq!(full(&groups), 1);
    // Full again: traced again.
    assert_eq!(
        commit(&mut groups, &a),
        Err(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(full(&groups), 2);
    for node in groups.cluster.nodes.values() {
        node.invariants();
    }
}

#[test]
fn a_join_with_more_member_metadata_than_kept_is_refused_and_logged() {
    let mut groups = Groups::with(|config| config.coordinator.member_metadata_bytes_max = 4_096);
    let refusals = || {
        warnings()
            .iter()
            .filter(|w| w.starts_with("refused a JoinGroup: the member's metadata is too large"))
            .count()
    };
    // Two assignors with a subscription of 2,100 bytes each, plus the client id and host: past
    // 4,096 bytes. Refused before anything is kept: the group does not come to exist.
    let mut big = join("");
    big.protocols = vec![
        ("cooperative-sticky".into(), Bytes::from(vec![7u8; 2_100])),
        ("range".into(), Bytes::from(vec![7u8; 2_100])),
    ];
    assert!(big.metadata_bytes() > 4_096);
    assert_eq!(
        groups.call(GroupOp::Join(big.clone())),
        GroupResponse::Join(Err(GroupError::MemberMetadataTooLarge))
    );
    assert_eq!(GroupError::MemberMetadataTooLarge.kafka_code(), 42);
    assert_eq!(refusals(), 1);
    let GroupResponse::Describe(Ok(description)) = groups.call(GroupOp::Describe {
        group_id: GROUP.into(),
    }) else {
        panic!("describe");
    };
    assert_eq!(description.state, "Dead");
    // Within the limit, a member joins; rejoining with too much metadata is refused too, and
    // the member keeps what it had.
    let member = groups.stable_member();
    big.member_id = member.member_id.clone();
    assert_eq!(
        groups.call(GroupOp::Join(big)),
        GroupResponse::Join(Err(GroupError::MemberMetadataTooLarge))
    );
    assert_eq!(refusals(), 2);
    assert_eq!(groups.heartbeat(&member), Ok(()), "still stable");
    let GroupResponse::Describe(Ok(description)) = groups.call(GroupOp::Describe {
        group_id: GROUP.into(),
    }) else {
        panic!("describe");
    };
    assert_eq!(description.members.len(), 1);
    assert_eq!(description.members[0].metadata, Bytes::from_static(b"sub"));
}

/// A standalone consumer's commit of `offsets` (topic, partition, offset) for `group_id`.
fn commit_for(
    groups: &mut Groups,
    group_id: &str,
    offsets: &[(String, i32, i64)],
) -> Result<(), GroupError> {
    let offsets = offsets
        .iter()
        .map(|(topic, partition, offset)| (topic.clone(), *partition, *offset, -1, String::new()))
        .collect();
    match groups.call(GroupOp::OffsetCommit(OffsetCommit {
        group_id: group_id.into(),
        generation: Generation(-1),
        member_id: String::new(),
        instance_id: None,
        offsets,
    })) {
        GroupResponse::OffsetCommit(result) => result,
        other => panic!("{other:?}"),
    }
}

/// The bytes of the coordinator partition's state as each node counts it, after checking the
/// count against the encoded state's length.
fn state_bytes(groups: &Groups) -> Vec<usize> {
    let (group, _) = groups.coordinator();
    groups
        .cluster
        .nodes
        .values()
        .map(|node| {
            let coordinator = node.coordinator(group).expect("a replica of the partition");
            let bytes = coordinator.stored_bytes();
            assert_eq!(bytes, coordinator.stored().encode().len());
            bytes
        })
        .collect()
}

/// A `__consumer_offsets` partition's state is its snapshot, written as one storage frame: a
/// client committing offsets for made-up partitions could grow it past the frame and stop the
/// disk writer of every replica. Past `state_bytes_max` a commit that would grow it gets
/// INVALID_COMMIT_OFFSET_SIZE, a new group COORDINATOR_NOT_AVAILABLE and a membership
/// UNKNOWN_SERVER_ERROR, logged once; what is stored stays within the bound on every replica,
/// counting commits proposed and not yet applied, and a new leader counts the same bytes.
#[test]
fn what_would_grow_a_partitions_state_past_its_bound_is_refused() {
    const MAX: usize = 8_192;
    let mut groups = Groups::with(|config| {
        config.coordinator.state_bytes_max = MAX;
        config.coordinator.initial_rebalance_delay_ms = 0;
    });
    let full_logged = || {
        warnings()
            .iter()
            .filter(|w| w.starts_with("group coordinator state full"))
            .count()
    };
    assert_eq!(state_bytes(&groups), vec![StoredState::HEADER_BYTES; 3]);
    // Commits of ten made-up partitions of a topic with a 100-byte name: 1,320 bytes each
    // (32 an offset, plus its topic's name), after the state's 5 and the group's 21.
    let made_up = |i: usize| -> Vec<(String, i32, i64)> {
        (0..10).map(|p| (format!("{i:0>100}"), p, 1)).collect()
    };
    let mut taken = 0;
    let refused = loop {
        match commit_for(&mut groups, GROUP, &made_up(taken)) {
            Ok(()) => taken += 1,
            Err(error) => break error,
        }
        assert!(taken < 20, "the bound holds commits back");
    };
    assert_eq!(refused, GroupError::CommitTooLarge);
    assert_eq!(GroupError::CommitTooLarge.kafka_code(), 28);
    assert_eq!(taken, 6, "(8,192 - 26) / 1,320 commits fit");
    assert_eq!(full_logged(), 1);
    assert_eq!(
        commit_for(&mut groups, GROUP, &made_up(taken)),
        Err(GroupError::CommitTooLarge)
    );
    assert_eq!(full_logged(), 1, "logged once, not per refusal");
    // Nothing of the refused commits is stored.
    let GroupResponse::OffsetFetch(Ok(stored)) = groups.call(GroupOp::OffsetFetch {
        group_id: GROUP.into(),
        partitions: None,
        require_stable: false,
    }) else {
        panic!("fetch");
    };
    assert_eq!(stored.len(), 60);
    groups.cluster.tick(2);
    assert_eq!(state_bytes(&groups), vec![26 + 6 * 1_320; 3]);
    // Offsets already stored still move: that grows nothing.
    let mut again = made_up(0);
    again.iter_mut().for_each(|o| o.2 = 2);
    assert_eq!(commit_for(&mut groups, GROUP, &again), Ok(()));

    // What the leader proposed and has not applied counts: two commits of four new
    // partitions (33 bytes each) fit the 246 bytes left one at a time, not both.
    let four = |first: i32| -> Vec<(String, i32, i64)> {
        (first..first + 4)
            .map(|p| ("t".to_string(), p, 1))
            .collect()
    };
    let commit_op = |offsets: Vec<(String, i32, i64)>| {
        GroupOp::OffsetCommit(OffsetCommit {
            group_id: GROUP.into(),
            generation: Generation(-1),
            member_id: String::new(),
            instance_id: None,
            offsets: offsets
                .into_iter()
                .map(|(t, p, o)| (t, p, o, -1, String::new()))
                .collect(),
        })
    };
    let first = groups.submit(commit_op(four(0)));
    let second = groups.submit(commit_op(four(4)));
    assert_eq!(groups.answer(first), GroupResponse::OffsetCommit(Ok(())));
    assert_eq!(
        groups.answer(second),
        GroupResponse::OffsetCommit(Err(GroupError::CommitTooLarge))
    );
    // Taking the first logged that there is room again, so this refusal is logged anew.
    assert_eq!(full_logged(), 2);
    // Filled to the last bytes, one partition at a time.
    let mut partition = 100;
    while commit_for(&mut groups, GROUP, &[("t".to_string(), partition, 1)]).is_ok() {
        partition += 1;
    }
    assert_eq!(full_logged(), 3);
    groups.cluster.tick(2);
    let bytes = state_bytes(&groups);
    assert!(bytes[0] <= MAX && bytes[0] + 33 > MAX, "{bytes:?}");
    assert!(bytes.iter().all(|b| *b == bytes[0]), "{bytes:?}");

    // A new group takes at least its header (14 bytes and its id): COORDINATOR_NOT_AVAILABLE,
    // as past the limit on groups, for an offset commit and a JoinGroup alike.
    let home = partition_for(GROUP, PARTITIONS as usize);
    let new_group = (0..)
        .map(|i| format!("a-new-group-{i:0>20}"))
        .find(|g| partition_for(g, PARTITIONS as usize) == home)
        .expect("a group of the same partition");
    assert_eq!(
        commit_for(&mut groups, &new_group, &[("t".to_string(), 0, 1)]),
        Err(GroupError::CoordinatorNotAvailable)
    );
    let mut join_new = join("");
    join_new.group_id = new_group.clone();
    assert_eq!(
        groups.call(GroupOp::Join(join_new)),
        GroupResponse::Join(Err(GroupError::CoordinatorNotAvailable))
    );
    // A membership (a member joins the group that has the offsets): the leader's SyncGroup
    // gets UNKNOWN_SERVER_ERROR, as for a membership larger than an entry may be.
    let wait = groups.join("");
    let member = groups.joined(wait);
    let wait = groups.sync(&member);
    assert_eq!(
        groups.answer(wait),
        GroupResponse::Sync(Err(GroupError::GroupTooLarge))
    );
    assert_eq!(full_logged(), 3, "still the same refusal");
    assert!(!warnings()
        .iter()
        .any(|w| w.starts_with("the group's membership is too large to store")));

    // A new leader counts the same bytes from the log, and refuses the same way.
    let before = state_bytes(&groups)[0];
    fail_over(&mut groups, 5_000);
    groups.cluster.tick(10);
    assert_eq!(state_bytes(&groups), vec![before; 3]);
    assert_eq!(
        commit_for(&mut groups, GROUP, &made_up(taken)),
        Err(GroupError::CommitTooLarge)
    );
    assert_eq!(commit_for(&mut groups, GROUP, &made_up(0)), Ok(()));
    assert_eq!(state_bytes(&groups), vec![before; 3]);
    for node in groups.cluster.nodes.values() {
        node.invariants();
    }
}
