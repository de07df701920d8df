//! The group coordinator's bounds, with the helpers of `groups.rs`: the largest entry (one
//! offset commit, one membership), the groups one partition holds, a member's metadata.

use super::*;
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
