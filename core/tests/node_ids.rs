//! Node ids as Kafka counts them, from 0: raft-rs reserves 0, so the core maps node ids to Raft
//! ids inside itself, and everything outside it (leaders, replicas, the ISR, the peers a
//! message goes to) keeps node ids.

mod common;

use common::*;
use oxbow_core::ids::RaftId;

const FROM_ZERO: [NodeId; 3] = [NodeId(0), NodeId(1), NodeId(2)];

/// Produces two records through the group's leader; the offset they were acknowledged at.
fn produce(cluster: &mut Cluster, group: GroupId) -> Offset {
    let leader = serving_leader(cluster, group);
    cluster.produce(leader, group, batch(2))
}

/// Three nodes 0, 1 and 2: the metadata group and a topic's partitions elect leaders, node 0
/// among them, produce is replicated to all three, and node 0 comes back after a restart.
#[test]
fn a_cluster_of_nodes_from_zero_elects_replicates_and_restarts() {
    let mut cluster = Cluster::with_ids(&FROM_ZERO, |_| {});
    cluster.tick(40);
    let controller = cluster.metadata_leader().expect("a controller");
    let created = cluster.admin(controller, create("events", 3, 3));
    assert!(
        matches!(created, Response::Admin(Ok(Some(_)))),
        "{created:?}"
    );
    cluster.tick(40);
    cluster.check_placement("events");
    let topic = cluster.nodes[&NodeId(0)]
        .metadata()
        .expect("runs")
        .topic("events")
        .expect("created")
        .clone();
    let groups: Vec<GroupId> = topic.partitions.iter().map(|p| p.group).collect();
    // Replicas go round robin from a node: each node is some partition's preferred leader,
    // and the first replica campaigns at once.
    let mut leaders: Vec<NodeId> = groups
        .iter()
        .map(|g| serving_leader(&cluster, *g))
        .collect();
    leaders.sort();
    assert_eq!(leaders, FROM_ZERO.to_vec(), "each node leads a partition");
    for partition in &topic.partitions {
        let mut replicas = partition.replicas.clone();
        replicas.sort();
        assert_eq!(replicas, FROM_ZERO.to_vec());
    }

    for group in &groups {
        produce(&mut cluster, *group);
    }
    cluster.tick(10);
    // Every node names each partition's leader with node ids, and the leaders count all
    // three nodes in sync (node 0 included: its acknowledgements are routed back to it).
    for (id, node) in &cluster.nodes {
        for group in &groups {
            let (leader, _) = node.leader(*group).expect("a known leader");
            assert_eq!(leader, serving_leader(&cluster, *group), "node {id}");
            assert_eq!(
                node.in_sync(*group).expect("known"),
                FROM_ZERO.to_vec(),
                "node {id}, group {group}"
            );
        }
    }
    // The vote a node keeps on its disk is the Raft id of the node it voted for: node 0's is
    // not raft-rs's "none".
    let zero_led = groups
        .iter()
        .copied()
        .find(|g| serving_leader(&cluster, *g) == NodeId(0))
        .expect("node 0 leads a partition");
    let vote = cluster.durable(NodeId(0)).groups[&zero_led].hard_state.vote;
    assert_eq!(RaftId(vote).node(), Some(NodeId(0)));

    cluster.restart(NodeId(0));
    cluster.tick(40);
    cluster.check_placement("events");
    for group in &groups {
        produce(&mut cluster, *group);
    }
    cluster.tick(10);
    for group in &groups {
        assert_eq!(
            cluster.nodes[&NodeId(0)].in_sync(*group).expect("known"),
            FROM_ZERO.to_vec()
        );
    }
}

/// Nodes 1 and up keep their node id as their Raft id, as before node 0 was allowed: the
/// votes and voters that data directories of earlier versions hold name the same nodes.
#[test]
fn nodes_from_one_keep_the_raft_ids_earlier_versions_stored() {
    let mut cluster = Cluster::new();
    let group = cluster.one_partition_topic("events");
    let leader = serving_leader(&cluster, group);
    // A leader voted for itself.
    let durable = cluster.durable(leader);
    assert_eq!(durable.groups[&group].hard_state.vote, leader.0);
    produce(&mut cluster, group);
}
