//! The metadata group on three in-memory nodes: admin changes are proposed to its leader, every
//! node applies them and starts or stops exactly its partition groups, leaders are gossiped,
//! and a restarted node rebuilds its groups from its disk by replaying the metadata log.

mod common;

use common::*;

#[test]
fn topics_start_and_stop_partition_groups_on_their_replicas() {
    let mut cluster = Cluster::new();
    cluster.tick(40);
    let leader = cluster.metadata_leader().expect("a metadata leader");
    let follower = *NODES.iter().find(|n| **n != leader).expect("three nodes");

    // A follower refuses and names the controller.
    let refused = cluster.admin(follower, create("events", 3, 2));
    assert_eq!(
        refused,
        Response::Admin(Err(AdminError::NotController {
            leader: Some(leader)
        }))
    );
    let created = cluster.admin(leader, create("events", 3, 2));
    let Response::Admin(Ok(Some(MetadataChange::TopicCreated { id, .. }))) = created else {
        panic!("{created:?}")
    };
    assert_eq!(
        cluster.admin(leader, create("events", 1, 1)),
        Response::Admin(Err(AdminError::TopicAlreadyExists))
    );
    cluster.tick(40);
    for node in cluster.nodes.values() {
        let topic = node
            .metadata()
            .expect("runs")
            .topic("events")
            .expect("applied");
        assert_eq!(topic.id, id, "every node has the same topic id");
    }
    cluster.check_placement("events");

    // Every partition has a leader, and gossip lets every node name it.
    let topic = cluster.nodes[&leader]
        .metadata()
        .expect("runs")
        .topic("events")
        .expect("exists")
        .clone();
    for partition in &topic.partitions {
        let serving: Vec<NodeId> = cluster
            .nodes
            .iter()
            .filter(|(_, n)| n.group_status(partition.group).is_some_and(|s| s.serving))
            .map(|(id, _)| *id)
            .collect();
        let statuses: Vec<_> = cluster
            .nodes
            .values()
            .map(|n| n.group_status(partition.group))
            .collect();
        assert_eq!(
            serving.len(),
            1,
            "group {} {:?} {statuses:?}",
            partition.group,
            partition.replicas
        );
        for node in cluster.nodes.values() {
            assert_eq!(
                node.leader(partition.group).map(|(n, _)| n),
                Some(serving[0])
            );
        }
    }

    // Growing the topic starts the new partitions' groups.
    let grown = cluster.admin(
        leader,
        MetadataCommand::CreatePartitions {
            name: "events".into(),
            count: 5,
            assignment: Vec::new(),
        },
    );
    assert!(
        matches!(
            grown,
            Response::Admin(Ok(Some(MetadataChange::PartitionsCreated { from: 3, .. })))
        ),
        "{grown:?}"
    );
    cluster.tick(40);
    cluster.check_placement("events");

    // A restarted node replays the metadata log and resumes exactly its groups.
    let victim = NODES[2];
    cluster.restart(victim);
    cluster.tick(40);
    assert_eq!(cluster.nodes[&victim].parked_groups().count(), 0);
    cluster.check_placement("events");

    // Deleting the topic stops its groups everywhere and removes them from the disks.
    let deleted = cluster.admin(
        cluster.metadata_leader().expect("leader"),
        MetadataCommand::DeleteTopic {
            name: "events".into(),
        },
    );
    assert!(
        matches!(
            deleted,
            Response::Admin(Ok(Some(MetadataChange::TopicDeleted(_))))
        ),
        "{deleted:?}"
    );
    cluster.tick(20);
    for (id, node) in &cluster.nodes {
        assert!(node.metadata().expect("runs").topic("events").is_none());
        for partition in &topic.partitions {
            assert!(node.group_status(partition.group).is_none());
        }
        let durable = cluster.durable(*id);
        assert_eq!(
            durable.groups.keys().copied().collect::<Vec<_>>(),
            vec![METADATA_GROUP],
            "node {id} keeps only the metadata group on disk"
        );
    }
    cluster.restart(victim);
    cluster.tick(20);
    for partition in &topic.partitions {
        assert!(cluster.nodes[&victim]
            .group_status(partition.group)
            .is_none());
    }
}

#[test]
fn the_metadata_log_is_compacted_and_a_restart_restores_from_its_snapshot() {
    let mut cluster = Cluster::with(|config| config.metadata_entries_max = 4);
    cluster.tick(40);
    // Topics come and go: the log grows by an entry each time, and is compacted every four.
    for round in 0..6 {
        let leader = cluster.metadata_leader().expect("a metadata leader");
        let name = format!("passing-{round}");
        assert!(matches!(
            cluster.admin(leader, create(&name, 2, 2)),
            Response::Admin(Ok(Some(MetadataChange::TopicCreated { .. })))
        ));
        cluster.tick(10);
        let leader = cluster.metadata_leader().expect("a metadata leader");
        assert!(matches!(
            cluster.admin(leader, MetadataCommand::DeleteTopic { name }),
            Response::Admin(Ok(Some(MetadataChange::TopicDeleted(_))))
        ));
        cluster.tick(10);
    }
    let leader = cluster.metadata_leader().expect("a metadata leader");
    assert!(matches!(
        cluster.admin(leader, create("kept", 3, 2)),
        Response::Admin(Ok(Some(MetadataChange::TopicCreated { .. })))
    ));
    cluster.tick(20);
    let before = cluster.nodes[&NODES[0]].metadata().expect("runs").clone();
    for node in NODES {
        let durable = cluster.durable(node);
        let metadata = &durable.groups[&METADATA_GROUP];
        assert!(
            metadata.snapshot.get_metadata().index > 0,
            "node {node}: the metadata log was compacted"
        );
        assert!(
            metadata.entries.len() < 8,
            "node {node}: {} metadata entries held",
            metadata.entries.len()
        );
    }
    // A restart rebuilds the same metadata from the snapshot and what follows it, and hosts
    // exactly its partitions of the topic that is left.
    for victim in NODES {
        cluster.restart(victim);
        cluster.tick(40);
        let node = &cluster.nodes[&victim];
        assert_eq!(node.parked_groups().count(), 0, "node {victim}");
        assert_eq!(
            node.metadata().expect("runs").topics(),
            before.topics(),
            "node {victim}"
        );
        cluster.check_placement("kept");
    }
    // New topics still get new groups on every node.
    let leader = cluster.metadata_leader().expect("a metadata leader");
    assert!(matches!(
        cluster.admin(leader, create("later", 2, 3)),
        Response::Admin(Ok(Some(MetadataChange::TopicCreated { .. })))
    ));
    cluster.tick(20);
    cluster.check_placement("later");
    for node in cluster.nodes.values() {
        node.invariants();
    }
}

#[test]
fn a_node_behind_the_metadata_snapshot_installs_it_and_forgets_deleted_partitions() {
    let mut cluster = Cluster::with(|config| config.metadata_entries_max = 4);
    cluster.tick(40);
    let leader = cluster.metadata_leader().expect("a metadata leader");
    let Response::Admin(Ok(Some(MetadataChange::TopicCreated { .. }))) =
        cluster.admin(leader, create("doomed", 3, 3))
    else {
        panic!("not created")
    };
    cluster.tick(20);
    let doomed = cluster.nodes[&leader]
        .metadata()
        .expect("runs")
        .topic("doomed")
        .expect("exists")
        .clone();
    // A node stops (its messages are lost) while the topic is deleted and the log moves
    // past several compactions.
    let behind = *NODES.iter().find(|n| **n != leader).expect("three nodes");
    let stopped = cluster.nodes.remove(&behind).expect("running");
    let leader = cluster.metadata_leader().expect("a metadata leader");
    assert!(matches!(
        cluster.admin(
            leader,
            MetadataCommand::DeleteTopic {
                name: "doomed".into()
            }
        ),
        Response::Admin(Ok(Some(MetadataChange::TopicDeleted(_))))
    ));
    for round in 0..6 {
        let leader = cluster.metadata_leader().expect("a metadata leader");
        let _ = cluster.admin(leader, create(&format!("t{round}"), 1, 2));
        cluster.tick(5);
    }
    drop(stopped);
    assert!(
        doomed
            .partitions
            .iter()
            .any(|p| cluster.durable(behind).groups.contains_key(&p.group)),
        "its disk still holds some of the deleted topic's partitions: {:?} of {:?}",
        cluster.durable(behind).groups.keys().collect::<Vec<_>>(),
        doomed.partitions
    );
    // It comes back from its disk; the leader has compacted what it lacks, so it gets the
    // snapshot, which no longer names the deleted topic: its partitions are removed.
    cluster.restart(behind);
    cluster.tick(60);
    assert!(
        cluster.disks[&behind].iter().any(|r| matches!(
            r,
            WalRecord::Snapshot { group, install: true, .. } if *group == METADATA_GROUP
        )),
        "it installed the leader's metadata snapshot"
    );
    let leader = cluster.metadata_leader().expect("a metadata leader");
    assert_eq!(
        cluster.nodes[&behind].metadata().expect("runs").topics(),
        cluster.nodes[&leader].metadata().expect("runs").topics()
    );
    assert_eq!(cluster.nodes[&behind].parked_groups().count(), 0);
    let durable = cluster.durable(behind);
    for partition in &doomed.partitions {
        assert!(!durable.groups.contains_key(&partition.group));
        assert!(cluster.nodes[&behind]
            .group_status(partition.group)
            .is_none());
    }
    for round in 0..6 {
        cluster.check_placement(&format!("t{round}"));
    }
}

/// An admin request to a node that does not lead the metadata group, with `Forward::Await`,
/// is handed to the leader and answered with its outcome once applied there (as Kafka's
/// brokers forward to the controller); with `Forward::No` it is refused, naming the leader.
#[test]
fn a_follower_forwards_admin_requests_and_answers_their_outcome() {
    let mut cluster = Cluster::new();
    cluster.tick(40);
    let controller = cluster.metadata_leader().expect("a controller");
    let follower = *NODES.iter().find(|n| **n != controller).expect("three");
    let send = |cluster: &mut Cluster, command, forward, validate_only| {
        cluster.request(
            follower,
            Request::Admin(AdminRequest {
                command,
                validate_only,
                forward,
                timeout_ms: 5_000,
            }),
        )
    };
    let refused = send(&mut cluster, create("direct", 1, 3), Forward::No, false);
    assert!(
        matches!(
            refused,
            Response::Admin(Err(AdminError::NotController { leader: Some(l) })) if l == controller
        ),
        "{refused:?}"
    );
    let created = send(
        &mut cluster,
        create("forwarded", 2, 3),
        Forward::Await,
        false,
    );
    let Response::Admin(Ok(Some(MetadataChange::TopicCreated { name, .. }))) = created else {
        panic!("{created:?}");
    };
    assert_eq!(name, "forwarded");
    // Answered once applied on the follower itself: what it serves already shows the topic.
    let topic = cluster.nodes[&follower]
        .metadata()
        .expect("runs")
        .topic("forwarded")
        .expect("applied before the answer")
        .clone();
    assert_eq!(topic.partitions.len(), 2);
    // The leader's refusal comes back as such.
    let again = send(
        &mut cluster,
        create("forwarded", 2, 3),
        Forward::Await,
        false,
    );
    assert!(
        matches!(again, Response::Admin(Err(AdminError::TopicAlreadyExists))),
        "{again:?}"
    );
    // A validation is checked against the follower's applied metadata: no entry is written.
    let applied = cluster.nodes[&follower].metadata().expect("runs").applied();
    let checked = send(
        &mut cluster,
        create("forwarded", 2, 3),
        Forward::Await,
        true,
    );
    assert!(
        matches!(
            checked,
            Response::Admin(Err(AdminError::TopicAlreadyExists))
        ),
        "{checked:?}"
    );
    let fine = send(
        &mut cluster,
        create("only-checked", 1, 3),
        Forward::Await,
        true,
    );
    assert!(matches!(fine, Response::Admin(Ok(None))), "{fine:?}");
    cluster.tick(5);
    let after = cluster.nodes[&follower].metadata().expect("runs");
    assert!(after.topic("only-checked").is_none());
    assert_eq!(after.applied(), applied, "a validation writes nothing");
    let deleted = send(
        &mut cluster,
        MetadataCommand::DeleteTopic {
            name: "forwarded".into(),
        },
        Forward::Await,
        false,
    );
    assert!(
        matches!(
            deleted,
            Response::Admin(Ok(Some(MetadataChange::TopicDeleted { .. })))
        ),
        "{deleted:?}"
    );
    for node in cluster.nodes.values() {
        node.invariants();
    }
}

/// The partition limits are the node's configured ones (`max_partitions`,
/// `max_partitions_per_node`): a creation or growth past either is refused with
/// INVALID_PARTITIONS and a message that names the limit and its key; by the controller
/// before anything is written, and, when a follower forwards it, by every node alike as it
/// applies the entry, which carries the limits of the node that took the request.
#[test]
fn creations_past_the_configured_partition_limits_are_refused() {
    let mut cluster = Cluster::with(|config| {
        config.partition_limits = PartitionLimits {
            cluster: 10,
            per_node: 5,
        }
    });
    cluster.tick(40);
    let leader = cluster.metadata_leader().expect("a metadata leader");
    let refused_with = |answer: Response| match answer {
        Response::Admin(Err(error)) => {
            assert_eq!(error.kafka_code(), 37, "INVALID_PARTITIONS: {error:?}");
            error.message().expect("a message")
        }
        other => panic!("not refused: {other:?}"),
    };
    // Four partitions on every node: four replicas each.
    assert!(matches!(
        cluster.admin(leader, create("a", 4, 3)),
        Response::Admin(Ok(Some(_)))
    ));
    let applied = cluster.nodes[&leader].metadata().expect("runs").applied();
    // Seven more would make eleven partitions in the cluster.
    let message = refused_with(cluster.admin(leader, create("big", 7, 1)));
    assert_eq!(
        message,
        "the cluster holds 4 partitions; 7 more would pass its limit of 10 (max_partitions)"
    );
    // Two more replicas on every node would make six on each.
    let message = refused_with(cluster.admin(leader, create("c", 2, 3)));
    assert!(
        message.ends_with(
            "hosts 4 partition replicas; 2 more would pass the limit of 5 per node \
             (max_partitions_per_node)"
        ),
        "{message}"
    );
    let grow = MetadataCommand::CreatePartitions {
        name: "a".into(),
        count: 6,
        assignment: Vec::new(),
    };
    let message = refused_with(cluster.admin(leader, grow));
    assert!(message.contains("(max_partitions_per_node)"), "{message}");
    // The controller refused them all without a log entry.
    assert_eq!(
        cluster.nodes[&leader].metadata().expect("runs").applied(),
        applied
    );
    // Within both limits: one more replica on each node, seven partitions.
    assert!(matches!(
        cluster.admin(leader, create("d", 3, 1)),
        Response::Admin(Ok(Some(_)))
    ));
    for node in NODES {
        let metadata = cluster.nodes[&node].metadata().expect("runs");
        assert_eq!(metadata.replicas_on(node), 5);
        assert_eq!(metadata.partition_count(), 7);
    }
    // Forwarded by a follower: written, and refused by every node as it applies the entry.
    let applied = cluster.nodes[&leader].metadata().expect("runs").applied();
    let follower = *NODES.iter().find(|n| **n != leader).expect("three nodes");
    let forwarded = cluster.request(
        follower,
        Request::Admin(AdminRequest {
            command: create("e", 1, 1),
            validate_only: false,
            forward: Forward::Await,
            timeout_ms: 5_000,
        }),
    );
    let message = refused_with(forwarded);
    assert!(message.contains("(max_partitions_per_node)"), "{message}");
    cluster.tick(5);
    for node in cluster.nodes.values() {
        let metadata = node.metadata().expect("runs");
        assert!(metadata.applied() > applied);
        assert!(metadata.topic("e").is_none());
        assert_eq!(metadata.partition_count(), 7);
        node.invariants();
    }
}

/// A restarted node knows the leaders again (`leaders_settled`, which gates its serving of
/// clients) only once it has heard every peer and a leader of each partition it hosts;
/// until then it would show those partitions as leaderless.
#[test]
fn a_restarted_node_settles_once_it_knows_every_hosted_partitions_leader() {
    let mut cluster = Cluster::new();
    let group = cluster.one_partition_topic("events");
    cluster.tick(20);
    for node in cluster.nodes.values() {
        assert!(node.leaders_settled());
    }
    let victim = *NODES
        .iter()
        .find(|n| cluster.nodes[n].leader(group).map(|(l, _)| l) != Some(**n))
        .expect("a follower");
    cluster.restart(victim);
    assert!(
        !cluster.nodes[&victim].leaders_settled(),
        "nothing heard yet"
    );
    let mut ticks = 0;
    while !cluster.nodes[&victim].leaders_settled() {
        cluster.tick(1);
        ticks += 1;
        assert!(ticks < 20, "a restarted node settles within 2 s");
    }
    assert!(cluster.nodes[&victim].leader(group).is_some());
}
