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
