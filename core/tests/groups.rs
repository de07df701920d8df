//! Consumer groups on three in-memory nodes: the coordinator partitions of `__consumer_offsets`,
//! the join/sync barrier, generation fencing, session expiry, offsets that survive a failover
//! of the coordinator, group deletion, and the coordinator's settings (the session timeout
//! range, the initial rebalance delay, offsets retention). Its bounds (on one entry, on groups,
//! on a member's metadata, on the bytes of a partition's state) are in `groups/limits.rs`.

mod common;
// A child of this crate's root, so its file is not a test crate of its own.
#[path = "groups/limits.rs"]
mod limits;

use bytes::Bytes;
use common::*;
use oxbow_core::coordinator::{
    partition_for, GroupError, GroupOp, GroupResponse, Heartbeat, JoinAnswer, JoinGroup,
    LeaveGroup, OffsetCommit, SyncGroup, OFFSETS_TOPIC,
};
use oxbow_core::ids::Generation;
use oxbow_core::io::GroupRequest;

const GROUP: &str = "readers";
const PARTITIONS: u32 = 2;

struct Groups {
    cluster: Cluster,
}

impl Groups {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tweak: fn(&mut NodeConfig)) -> Self {
        let mut cluster = Cluster::with(tweak);
        cluster.tick(40);
        let leader = cluster.metadata_leader().expect("a metadata leader");
        let created = cluster.admin(leader, create(OFFSETS_TOPIC, PARTITIONS, 3));
        assert!(
            matches!(created, Response::Admin(Ok(Some(_)))),
            "{created:?}"
        );
        cluster.tick(40);
        Self { cluster }
    }

    /// The coordinator partition's Raft group and the node serving it.
    fn coordinator(&self) -> (GroupId, NodeId) {
        self.serving_coordinator().expect("a serving coordinator")
    }

    fn serving_coordinator(&self) -> Option<(GroupId, NodeId)> {
        // From any node that knows the topic (a restarted one may not have caught up yet).
        let topic = self
            .cluster
            .nodes
            .values()
            .find_map(|node| node.metadata()?.topic(OFFSETS_TOPIC).cloned())
            .expect("created");
        let group = topic.partitions[partition_for(GROUP, topic.partitions.len())].group;
        self.cluster
            .nodes
            .iter()
            .find(|(_, n)| n.group_status(group).is_some_and(|s| s.serving))
            .map(|(id, _)| (group, *id))
    }

    fn submit(&mut self, op: GroupOp) -> RequestId {
        let (group, node) = self.coordinator();
        self.cluster
            .submit(node, Request::Group(GroupRequest { group, op }))
    }

    fn call(&mut self, op: GroupOp) -> GroupResponse {
        let id = self.submit(op);
        self.answer(id)
    }

    fn answer(&mut self, id: RequestId) -> GroupResponse {
        match self.cluster.answer(id) {
            Response::Group(response) => response,
            other => panic!("not a group answer: {other:?}"),
        }
    }

    /// Joins with the MEMBER_ID_REQUIRED round trip; returns the wait for the real answer.
    fn join(&mut self, member_id: &str) -> RequestId {
        let first = self.call(GroupOp::Join(join(member_id)));
        let member_id = match first {
            GroupResponse::Join(Err(GroupError::MemberIdRequired(id))) => id,
            other if member_id.is_empty() => panic!("expected MEMBER_ID_REQUIRED: {other:?}"),
            GroupResponse::Join(_) => return self.submit(GroupOp::Join(join(member_id))),
            other => panic!("{other:?}"),
        };
        self.submit(GroupOp::Join(join(&member_id)))
    }

    /// The answer to `id` if it has come (without ticking).
    fn answered(&mut self, id: RequestId) -> Option<GroupResponse> {
        self.cluster.settle();
        let at = self.cluster.replies.iter().position(|(_, i, _)| *i == id)?;
        match self.cluster.replies.remove(at).2 {
            Response::Group(response) => Some(response),
            other => panic!("not a group answer: {other:?}"),
        }
    }

    fn joined(&mut self, id: RequestId) -> JoinAnswer {
        match self.answer(id) {
            GroupResponse::Join(Ok(answer)) => answer,
            other => panic!("join failed: {other:?}"),
        }
    }

    fn sync(&mut self, answer: &JoinAnswer) -> RequestId {
        let assignments = answer
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.clone(),
                    Bytes::from(format!("for {}", m.member_id)),
                )
            })
            .collect();
        self.submit(GroupOp::Sync(SyncGroup {
            group_id: GROUP.into(),
            generation: answer.generation,
            member_id: answer.member_id.clone(),
            instance_id: None,
            assignments,
        }))
    }

    /// A new member of a group of its own: joined and synced.
    fn stable_member(&mut self) -> JoinAnswer {
        let wait = self.join("");
        let member = self.joined(wait);
        let wait = self.sync(&member);
        self.synced(wait);
        member
    }

    fn synced(&mut self, id: RequestId) -> Bytes {
        match self.answer(id) {
            GroupResponse::Sync(Ok(answer)) => answer.assignment,
            other => panic!("sync failed: {other:?}"),
        }
    }

    fn heartbeat(&mut self, answer: &JoinAnswer) -> Result<(), GroupError> {
        match self.call(GroupOp::Heartbeat(Heartbeat {
            group_id: GROUP.into(),
            generation: answer.generation,
            member_id: answer.member_id.clone(),
            instance_id: None,
        })) {
            GroupResponse::Heartbeat(result) => result,
            other => panic!("{other:?}"),
        }
    }

    fn commit(
        &mut self,
        generation: Generation,
        member_id: &str,
        offset: i64,
    ) -> Result<(), GroupError> {
        match self.call(GroupOp::OffsetCommit(OffsetCommit {
            group_id: GROUP.into(),
            generation,
            member_id: member_id.into(),
            instance_id: None,
            offsets: vec![("events".into(), 0, offset, -1, String::new())],
        })) {
            GroupResponse::OffsetCommit(result) => result,
            other => panic!("{other:?}"),
        }
    }

    fn committed(&mut self) -> Option<i64> {
        match self.call(GroupOp::OffsetFetch {
            group_id: GROUP.into(),
            partitions: Some(vec![("events".into(), 0)]),
            require_stable: false,
        }) {
            GroupResponse::OffsetFetch(Ok(offsets)) => offsets[0]
                .2
                .as_ref()
                .expect("stable")
                .as_ref()
                .map(|o| o.offset),
            other => panic!("{other:?}"),
        }
    }
}

fn join(member_id: &str) -> JoinGroup {
    JoinGroup {
        group_id: GROUP.into(),
        member_id: member_id.into(),
        instance_id: None,
        client_id: "test".into(),
        client_host: "/127.0.0.1".into(),
        protocol_type: "consumer".into(),
        protocols: vec![
            ("cooperative-sticky".into(), Bytes::from_static(b"sub")),
            ("range".into(), Bytes::from_static(b"sub")),
        ],
        session_timeout_ms: 6_000,
        rebalance_timeout_ms: 10_000,
        require_known_member_id: true,
    }
}

#[test]
fn members_join_rebalance_commit_and_survive_a_coordinator_failover() {
    let mut groups = Groups::new();

    // The first member joins alone, leads, and assigns.
    let wait = groups.join("");
    let a1 = groups.joined(wait);
    assert_eq!(a1.generation, Generation(1));
    assert_eq!(a1.leader, a1.member_id);
    assert_eq!(a1.protocol, "cooperative-sticky");
    assert_eq!(a1.members.len(), 1);
    let wait = groups.sync(&a1);
    assert_eq!(groups.synced(wait), format!("for {}", a1.member_id));
    assert_eq!(groups.heartbeat(&a1), Ok(()));

    // A second member's join starts a rebalance: the first learns it from its heartbeat,
    // joins again, and both get generation 2 from the barrier.
    let b_wait = groups.join("");
    assert_eq!(groups.heartbeat(&a1), Err(GroupError::RebalanceInProgress));
    assert_eq!(groups.commit(a1.generation, &a1.member_id, 5), Ok(()));
    let a_wait = groups.join(&a1.member_id);
    let a2 = groups.joined(a_wait);
    let b2 = groups.joined(b_wait);
    assert_eq!(
        (a2.generation, b2.generation),
        (Generation(2), Generation(2))
    );
    assert_eq!(a2.leader, a1.member_id, "the leader stays");
    assert_eq!(a2.members.len(), 2);
    assert!(b2.members.is_empty(), "only the leader sees the members");
    let b_sync = groups.sync(&b2);
    let a_sync = groups.sync(&a2);
    assert_eq!(groups.synced(a_sync), format!("for {}", a2.member_id));
    assert_eq!(groups.synced(b_sync), format!("for {}", b2.member_id));

    // Fencing: an old generation, an unknown member.
    assert_eq!(
        groups.commit(a1.generation, &a1.member_id, 6),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        groups.commit(a2.generation, "stranger", 6),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(groups.commit(b2.generation, &b2.member_id, 7), Ok(()));
    assert_eq!(groups.committed(), Some(7));

    // The second member stops heartbeating: its session expires and the first rebalances.
    let mut rebalancing = false;
    for _ in 0..12 {
        groups.cluster.tick(10);
        if groups.heartbeat(&a2) == Err(GroupError::RebalanceInProgress) {
            rebalancing = true;
            break;
        }
    }
    assert!(rebalancing, "the silent member's session expired");
    let a_wait = groups.join(&a2.member_id);
    let a3 = groups.joined(a_wait);
    assert_eq!(a3.generation, Generation(3));
    assert_eq!(a3.members.len(), 1);
    let a_sync = groups.sync(&a3);
    groups.synced(a_sync);

    // The coordinator's node restarts: another replica takes over with the offsets and the
    // generation, and the member carries on without rejoining.
    let (_, old) = groups.coordinator();
    groups.cluster.restart(old);
    let mut moved = false;
    for _ in 0..40 {
        groups.cluster.tick(5);
        let Some((_, now)) = groups.serving_coordinator() else {
            continue;
        };
        assert_eq!(groups.heartbeat(&a3), Ok(()));
        if now != old {
            moved = true;
            break;
        }
    }
    assert!(moved, "another node coordinates after the restart");
    assert_eq!(groups.committed(), Some(7));
    assert_eq!(groups.heartbeat(&a3), Ok(()));
    assert_eq!(groups.commit(a3.generation, &a3.member_id, 9), Ok(()));

    // The member leaves; the empty group can be deleted, and its offsets go with it.
    match groups.call(GroupOp::Delete {
        group_id: GROUP.into(),
    }) {
        GroupResponse::Delete(Err(GroupError::NonEmptyGroup)) => {}
        other => panic!("{other:?}"),
    }
    match groups.call(GroupOp::Leave(LeaveGroup {
        group_id: GROUP.into(),
        members: vec![(a3.member_id.clone(), None)],
    })) {
        GroupResponse::Leave(Ok(results)) => assert_eq!(results, vec![Ok(())]),
        other => panic!("{other:?}"),
    }
    groups.cluster.tick(2);
    match groups.call(GroupOp::Describe {
        group_id: GROUP.into(),
    }) {
        GroupResponse::Describe(Ok(d)) => assert_eq!(d.state, "Empty"),
        other => panic!("{other:?}"),
    }
    match groups.call(GroupOp::Delete {
        group_id: GROUP.into(),
    }) {
        GroupResponse::Delete(Ok(())) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(groups.committed(), None);
    match groups.call(GroupOp::Describe {
        group_id: GROUP.into(),
    }) {
        GroupResponse::Describe(Ok(d)) => assert_eq!(d.state, "Dead"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_offsets_topic_takes_no_records() {
    let mut groups = Groups::new();
    let (group, node) = groups.coordinator();
    let response = groups.cluster.request(
        node,
        Request::Fetch(oxbow_core::io::FetchRequest {
            group,
            offset: Offset(0),
            max_bytes: 1 << 20,
            current_leader_epoch: -1,
            read_committed: false,
        }),
    );
    assert_eq!(
        response,
        Response::Fetch(Err(oxbow_core::io::FetchError::UnknownTopicOrPartition))
    );
}

#[test]
fn a_restarted_static_member_takes_its_old_place_and_fences_the_old_id() {
    let mut groups = Groups::new();
    let static_join = |member_id: &str| {
        let mut join = join(member_id);
        join.instance_id = Some("instance-1".into());
        join
    };
    // A dynamic member leads; a static one (no MEMBER_ID_REQUIRED round trip) joins it.
    let wait = groups.join("");
    let leader = groups.joined(wait);
    let wait = groups.sync(&leader);
    groups.synced(wait);
    let first_wait = groups.submit(GroupOp::Join(static_join("")));
    let leader_wait = groups.submit(GroupOp::Join(join(&leader.member_id)));
    let first = groups.joined(first_wait);
    let leader2 = groups.joined(leader_wait);
    assert_eq!(first.generation, Generation(2));
    assert_eq!(leader2.leader, leader.member_id);
    let a = groups.sync(&leader2);
    let b = groups.sync(&first);
    groups.synced(a);
    groups.synced(b);
    let second = leader2;

    // The static instance restarts without its member id: it gets a new id and the current
    // generation, without a rebalance; the old id is fenced.
    let id = groups.submit(GroupOp::Join(static_join("")));
    let restarted = groups.joined(id);
    assert_ne!(restarted.member_id, first.member_id);
    assert_eq!(
        restarted.generation,
        Generation(2),
        "no rebalance for a static rejoin"
    );
    let heartbeat =
        |groups: &mut Groups, member_id: &str| match groups.call(GroupOp::Heartbeat(Heartbeat {
            group_id: GROUP.into(),
            generation: Generation(2),
            member_id: member_id.into(),
            instance_id: Some("instance-1".into()),
        })) {
            GroupResponse::Heartbeat(result) => result,
            other => panic!("{other:?}"),
        };
    assert_eq!(
        heartbeat(&mut groups, &first.member_id),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(heartbeat(&mut groups, &restarted.member_id), Ok(()));
    assert_eq!(groups.heartbeat(&second), Ok(()));
}

#[test]
fn a_join_outside_the_group_protocol_is_refused() {
    let mut groups = Groups::new();
    let id = groups.join("");
    groups.joined(id);
    let mut other = join("");
    other.protocols = vec![("roundrobin-only".into(), Bytes::new())];
    match groups.call(GroupOp::Join(other)) {
        GroupResponse::Join(Err(GroupError::InconsistentGroupProtocol)) => {}
        r => panic!("{r:?}"),
    }
    let mut short = join("");
    short.session_timeout_ms = 1_000;
    match groups.call(GroupOp::Join(short)) {
        GroupResponse::Join(Err(GroupError::InvalidSessionTimeout)) => {}
        r => panic!("{r:?}"),
    }
}

#[test]
fn the_offsets_log_compacts_and_a_replica_behind_it_catches_up_from_the_snapshot() {
    let mut groups = Groups {
        cluster: Cluster::with(|config| config.command_entries_max = 20),
    };
    groups.cluster.tick(40);
    let leader = groups.cluster.metadata_leader().expect("a metadata leader");
    let created = groups
        .cluster
        .admin(leader, create(OFFSETS_TOPIC, PARTITIONS, 3));
    assert!(matches!(created, Response::Admin(Ok(Some(_)))));
    groups.cluster.tick(40);
    let (group, coordinator) = groups.coordinator();

    // A follower stops (its messages are lost) while the log moves past two compactions.
    let behind = *NODES
        .iter()
        .find(|n| **n != coordinator)
        .expect("three nodes");
    let stopped = groups.cluster.nodes.remove(&behind).expect("running");
    for offset in 1..=60 {
        assert_eq!(groups.commit(Generation(-1), "", offset), Ok(()));
        groups.cluster.tick(1);
    }
    let held = |cluster: &Cluster, node: NodeId| {
        cluster.nodes[&node]
            .coordinator(group)
            .expect("hosted")
            .stored()
            .clone()
    };
    assert!(
        groups.cluster.has_snapshot(coordinator, group, false),
        "the coordinator's log was compacted"
    );
    drop(stopped);
    // It comes back from its disk: the leader has compacted what it lacks, so it gets the
    // snapshot, and ends with the same offsets.
    groups.cluster.restart(behind);
    groups.cluster.tick(30);
    assert_eq!(
        held(&groups.cluster, behind),
        held(&groups.cluster, coordinator)
    );
    assert!(
        groups.cluster.has_snapshot(behind, group, true),
        "the replica behind installed the leader's snapshot"
    );
    assert_eq!(groups.committed(), Some(60));

    // The leader restarts from its own snapshot and entries; another node serves the same.
    groups.cluster.restart(coordinator);
    groups.cluster.tick(60);
    assert_eq!(groups.committed(), Some(60));
    for node in NODES {
        assert_eq!(held(&groups.cluster, node), held(&groups.cluster, behind));
    }
}

fn join_with_session(member_id: &str, session_timeout_ms: i32) -> GroupOp {
    let mut join = join(member_id);
    join.session_timeout_ms = session_timeout_ms;
    GroupOp::Join(join)
}

#[test]
fn session_timeouts_outside_the_configured_range_are_refused() {
    // Kafka's defaults: 6 s to 30 minutes.
    let mut groups = Groups::new();
    for session in [1_000, 5_999, 1_800_001] {
        assert_eq!(
            groups.call(join_with_session("", session)),
            GroupResponse::Join(Err(GroupError::InvalidSessionTimeout)),
            "{session}"
        );
    }
    assert!(matches!(
        groups.call(join_with_session("", 6_000)),
        GroupResponse::Join(Err(GroupError::MemberIdRequired(_)))
    ));

    // A test cluster's lowered minimum (`group.min.session.timeout.ms=1000`) and a lowered
    // maximum.
    let mut groups = Groups::with(|config| {
        config.coordinator.min_session_timeout_ms = 1_000;
        config.coordinator.max_session_timeout_ms = 10_000;
        config.coordinator.initial_rebalance_delay_ms = 0;
    });
    for session in [999, 10_001] {
        assert_eq!(
            groups.call(join_with_session("", session)),
            GroupResponse::Join(Err(GroupError::InvalidSessionTimeout)),
            "{session}"
        );
    }
    let GroupResponse::Join(Err(GroupError::MemberIdRequired(member_id))) =
        groups.call(join_with_session("", 1_000))
    else {
        panic!("a 1 s session is within the configured range");
    };
    let wait = groups.submit(join_with_session(&member_id, 1_000));
    let member = groups.joined(wait);
    assert_eq!(member.generation, Generation(1));
    let wait = groups.sync(&member);
    groups.synced(wait);
    // The 1 s session is kept: two seconds without a heartbeat and the member is gone.
    assert_eq!(groups.heartbeat(&member), Ok(()));
    groups.cluster.tick(20);
    assert_eq!(groups.heartbeat(&member), Err(GroupError::UnknownMemberId));
}

#[test]
fn the_first_rebalance_of_an_empty_group_waits_the_initial_delay_for_more_members() {
    // Kafka's default delay, 3 s; the members' rebalance timeout is 10 s.
    let mut groups = Groups::new();
    let a = groups.join("");
    groups.cluster.tick(20);
    assert_eq!(groups.answered(a), None, "the delay has not run out");
    // A second member joins during the delay: once it runs out, the barrier waits another
    // delay, and both are in the first generation.
    let b = groups.join("");
    groups.cluster.tick(9);
    assert_eq!(groups.answered(a), None, "3 s have not passed");
    groups.cluster.tick(2);
    assert_eq!(groups.answered(a), None, "the delay was extended");
    groups.cluster.tick(28);
    assert_eq!(groups.answered(a), None, "6 s have not passed");
    groups.cluster.tick(3);
    let (a, b) = (groups.joined(a), groups.joined(b));
    assert_eq!((a.generation, b.generation), (Generation(1), Generation(1)));
    // The leader is told both members, the other none.
    let mut told = [a.members.len(), b.members.len()];
    told.sort();
    assert_eq!(told, [0, 2]);
    assert_eq!(a.leader, b.leader);

    // Without a delay, a lone member's join completes at once.
    let mut groups = Groups::with(|config| config.coordinator.initial_rebalance_delay_ms = 0);
    let a = groups.join("");
    let answer = groups.answered(a).expect("answered without a tick");
    let GroupResponse::Join(Ok(joined)) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(joined.generation, Generation(1));

    // The delay is for an empty group only: a member joining a stable group rebalances as
    // soon as everyone has rejoined.
    let mut groups = Groups::with(|config| config.coordinator.initial_rebalance_delay_ms = 2_000);
    let a = groups.join("");
    groups.cluster.tick(19);
    assert_eq!(groups.answered(a), None, "2 s have not passed");
    groups.cluster.tick(2);
    let a = groups.joined(a);
    let wait = groups.sync(&a);
    groups.synced(wait);
    let b = groups.join("");
    let a_again = groups.submit(GroupOp::Join(join(&a.member_id)));
    for id in [a_again, b] {
        let answer = groups
            .answered(id)
            .expect("no delay for a group with members");
        let GroupResponse::Join(Ok(joined)) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(joined.generation, Generation(2), "the second generation");
    }
}

#[test]
fn an_empty_groups_offsets_expire_after_the_retention_period() {
    let mut groups = Groups::with(|config| {
        config.coordinator.offsets_retention_ms = 5_000;
        config.coordinator.initial_rebalance_delay_ms = 0;
    });
    // A standalone consumer (generation -1) commits offsets, and again 3 s later: the period
    // counts from the last change.
    assert_eq!(groups.commit(Generation(-1), "", 3), Ok(()));
    groups.cluster.tick(30);
    assert_eq!(groups.commit(Generation(-1), "", 4), Ok(()));
    groups.cluster.tick(40);
    assert_eq!(
        groups.committed(),
        Some(4),
        "4 s after the last offset commit"
    );
    groups.cluster.tick(20);
    assert_eq!(
        groups.committed(),
        None,
        "expired 5 s after the last offset commit"
    );
    let GroupResponse::Describe(Ok(description)) = groups.call(GroupOp::Describe {
        group_id: GROUP.into(),
    }) else {
        panic!("describe");
    };
    assert_eq!(description.state, "Dead", "the group went with its offsets");

    // A group with a member keeps its offsets however long it lives.
    let member = groups.stable_member();
    assert_eq!(
        groups.commit(member.generation, &member.member_id, 9),
        Ok(())
    );
    for _ in 0..5 {
        groups.cluster.tick(20);
        assert_eq!(groups.heartbeat(&member), Ok(()));
    }
    assert_eq!(groups.committed(), Some(9), "10 s with a member");
    // Once it leaves, the period starts (from the group's last change: the empty
    // generation stored when it left).
    let left = groups.call(GroupOp::Leave(LeaveGroup {
        group_id: GROUP.into(),
        members: vec![(member.member_id.clone(), None)],
    }));
    assert!(matches!(left, GroupResponse::Leave(Ok(_))), "{left:?}");
    groups.cluster.tick(40);
    assert_eq!(groups.committed(), Some(9));
    groups.cluster.tick(20);
    assert_eq!(groups.committed(), None);
    for node in groups.cluster.nodes.values() {
        node.invariants();
    }
}

/// Lets `ticks` ticks of 100 ms pass on the wall clocks too (the test cluster's wall clock
/// stands still otherwise).
fn pass(groups: &mut Groups, ticks: usize) {
    for _ in 0..ticks {
        groups.cluster.now.wall_ms += 100;
        groups.cluster.tick(1);
    }
}

/// Restarts the coordinator's node and lets 100 ms ticks pass (on the wall clocks too) until
/// another node coordinates, within `limit_ms`; returns the time that took.
fn fail_over(groups: &mut Groups, limit_ms: usize) -> usize {
    let (_, old) = groups.coordinator();
    groups.cluster.restart(old);
    let mut waited_ms = 0;
    while groups
        .serving_coordinator()
        .is_none_or(|(_, now)| now == old)
    {
        assert!(
            waited_ms < limit_ms,
            "another node coordinates within {limit_ms} ms"
        );
        pass(groups, 1);
        waited_ms += 100;
    }
    waited_ms
}

/// A coordinator that takes a group over counts the group's offsets retention from its last
/// stored change (by the wall clocks), not from when it took over: otherwise every leader
/// change of a coordinator partition would restart the period, and one that changes leader
/// more often than the period never expires anything.
#[test]
fn a_new_coordinator_counts_offsets_retention_from_the_last_stored_change() {
    let mut groups = Groups::with(|config| {
        config.coordinator.offsets_retention_ms = 5_000;
        config.coordinator.initial_rebalance_delay_ms = 0;
    });
    assert_eq!(groups.commit(Generation(-1), "", 3), Ok(()));
    let mut elapsed_ms = 0;
    pass(&mut groups, 20);
    elapsed_ms += 2_000;
    // The coordinator's node restarts: another replica takes over.
    let (_, old) = groups.coordinator();
    groups.cluster.restart(old);
    let mut moved = false;
    while elapsed_ms < 4_500 {
        pass(&mut groups, 1);
        elapsed_ms += 100;
        if groups
            .serving_coordinator()
            .is_some_and(|(_, now)| now != old)
        {
            moved = true;
            break;
        }
    }
    assert!(moved, "another node coordinates within 4.5 s of the commit");
    pass(&mut groups, (4_500 - elapsed_ms) / 100);
    assert_eq!(groups.committed(), Some(3), "4.5 s after the offset commit");
    pass(&mut groups, 7);
    assert_eq!(
        groups.committed(),
        None,
        "expired 5 s after the offset commit, though its coordinator took over later"
    );

    // A membership carries its time too: a group that became empty keeps its offsets for
    // the period from then, across a leader change.
    let member = groups.stable_member();
    assert_eq!(
        groups.commit(member.generation, &member.member_id, 9),
        Ok(())
    );
    for _ in 0..4 {
        pass(&mut groups, 20);
        assert_eq!(groups.heartbeat(&member), Ok(()));
    }
    let left = groups.call(GroupOp::Leave(LeaveGroup {
        group_id: GROUP.into(),
        members: vec![(member.member_id.clone(), None)],
    }));
    assert!(matches!(left, GroupResponse::Leave(Ok(_))), "{left:?}");
    // 8 s after the last offset commit, but just after the group became empty.
    pass(&mut groups, 1);
    let waited_ms = 100 + fail_over(&mut groups, 4_400);
    assert_eq!(
        groups.committed(),
        Some(9),
        "the group was empty for {waited_ms} ms"
    );
    pass(&mut groups, (5_200 - waited_ms) / 100);
    assert_eq!(
        groups.committed(),
        None,
        "expired 5 s after it became empty"
    );
    for node in groups.cluster.nodes.values() {
        node.invariants();
    }
}

/// A group that had members when its coordinator failed over has not been empty: its offsets
/// retention starts when it becomes empty, however long its stored state had been unchanged.
#[test]
fn a_group_that_empties_after_a_failover_keeps_its_offsets_for_the_period() {
    let mut groups = Groups::with(|config| {
        config.coordinator.offsets_retention_ms = 5_000;
        config.coordinator.initial_rebalance_delay_ms = 0;
    });
    let member = groups.stable_member();
    assert_eq!(
        groups.commit(member.generation, &member.member_id, 4),
        Ok(())
    );
    // 8 s of heartbeats: nothing stored changes.
    for _ in 0..8 {
        pass(&mut groups, 10);
        assert_eq!(groups.heartbeat(&member), Ok(()));
    }
    fail_over(&mut groups, 5_000);
    assert_eq!(groups.heartbeat(&member), Ok(()), "the member carries on");
    // It stops: its session (6 s, counted from the takeover) expires and the group becomes
    // empty in the same tick that looks for expired offsets.
    pass(&mut groups, 70);
    assert_eq!(groups.committed(), Some(4), "empty for at most a second");
    pass(&mut groups, 30);
    assert_eq!(groups.committed(), Some(4), "empty for at most 4 s");
    pass(&mut groups, 30);
    assert_eq!(groups.committed(), None, "empty for more than 5 s");
}

/// Found by `oxbow-jepsen test --workload txn --nemesis pause` (seed 82): a member that joins and
/// never syncs leaves an empty group whose generation 2 is proposed in the tick that expires the
/// member. Forgetting the live group in that same tick made the next member count from 0 again,
/// and storing its generation 1 after 2 broke "a group's stored generation never goes back" on
/// every replica, at every restart.
#[test]
fn a_group_emptied_before_its_first_sync_keeps_counting_generations() {
    let mut groups = Groups::new();
    let wait = groups.join("");
    let first = groups.joined(wait);
    assert_eq!(first.generation, Generation(1));
    // It never syncs nor heartbeats: its session expires and the group empties at generation 2.
    for _ in 0..20 {
        groups.cluster.tick(10);
    }
    let wait = groups.join("");
    let second = groups.joined(wait);
    assert_eq!(
        second.generation,
        Generation(3),
        "counts on from the stored 2"
    );
    let wait = groups.sync(&second);
    groups.synced(wait);
    for _ in 0..5 {
        groups.cluster.tick(10);
    }
    assert_eq!(groups.heartbeat(&second), Ok(()));
}
