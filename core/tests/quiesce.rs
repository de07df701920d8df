//! Idle partitions quiesce (stop ticking) and wake for work or when their leader goes: a
//! node's idle cost follows its active partitions, and no partition is left without a leader.

mod common;

use common::*;

const PARTITIONS: usize = 6;

/// A cluster with a topic of `PARTITIONS` partitions on all three nodes; its groups.
fn cluster_with_topic(tweak: fn(&mut NodeConfig)) -> (Cluster, Vec<GroupId>) {
    let mut cluster = Cluster::with(tweak);
    cluster.tick(40);
    let controller = cluster.metadata_leader().expect("a controller");
    let created = cluster.admin(controller, create("idle", PARTITIONS as u32, 3));
    assert!(
        matches!(created, Response::Admin(Ok(Some(_)))),
        "{created:?}"
    );
    cluster.tick(40);
    let groups = cluster.nodes[&controller]
        .metadata()
        .expect("runs")
        .topic("idle")
        .expect("created")
        .partitions
        .iter()
        .map(|p| p.group)
        .collect();
    (cluster, groups)
}

/// `cluster_with_topic`, settled until every partition replica is quiet on every node (never
/// the metadata group: a command log).
fn quiet_cluster() -> (Cluster, Vec<GroupId>) {
    let (mut cluster, groups) = cluster_with_topic(|_| {});
    cluster.tick(20);
    assert_eq!(quiet(&cluster), vec![PARTITIONS; 3]);
    (cluster, groups)
}

/// Raft messages sent so far in `groups`.
fn sent(cluster: &Cluster, groups: &[GroupId]) -> u64 {
    groups.iter().filter_map(|g| cluster.sent.get(g)).sum()
}

fn quiet(cluster: &Cluster) -> Vec<usize> {
    cluster.nodes.values().map(Node::quiet_groups).collect()
}

/// Every partition has a serving leader among the running nodes, which takes a produce.
fn each_partition_serves(cluster: &mut Cluster, groups: &[GroupId]) {
    for group in groups {
        let leader = serving_leader(cluster, *group);
        cluster.produce(leader, *group, batch(2));
    }
}

#[test]
fn idle_partitions_quiesce_and_wake_for_work() {
    let (mut cluster, groups) = quiet_cluster();
    let (traces, messages) = (cluster.traces.len(), sent(&cluster, &groups));
    assert!(messages > 0);
    cluster.tick(100);
    assert_eq!(
        quiet(&cluster),
        vec![PARTITIONS; 3],
        "quiet groups stay quiet"
    );
    assert_eq!(
        cluster.traces.len(),
        traces,
        "nothing happens in quiet groups"
    );
    assert_eq!(
        sent(&cluster, &groups),
        messages,
        "no heartbeat in 100 ticks"
    );

    // A produce wakes its partition, is answered, and the partition quiesces again, with
    // no election on the way (a follower that refused to quiesce would campaign).
    let leader = serving_leader(&cluster, groups[0]);
    let term = cluster.nodes[&leader].leader(groups[0]).expect("led").1;
    let offset = cluster.produce(leader, groups[0], batch(3));
    assert_eq!(offset, Offset(0));
    assert_eq!(cluster.nodes[&leader].quiet_groups(), PARTITIONS - 1);
    cluster.tick(20);
    assert_eq!(quiet(&cluster), vec![PARTITIONS; 3]);
    assert_eq!(
        cluster.nodes[&leader].leader(groups[0]),
        Some((leader, term))
    );
    // The records are there on every replica.
    for node in cluster.nodes.values() {
        let status = node.group_status(groups[0]).expect("hosted");
        assert_eq!(status.high_watermark, Offset(3));
    }
    each_partition_serves(&mut cluster, &groups);
}

#[test]
fn without_quiescence_no_partition_is_quiet() {
    let (mut cluster, groups) = cluster_with_topic(|c| c.quiesce = false);
    let messages = sent(&cluster, &groups);
    cluster.tick(100);
    assert_eq!(quiet(&cluster), vec![0; 3]);
    // Each of the 6 leaders heartbeats its 2 followers every 2 ticks, and each answers.
    let heartbeats = sent(&cluster, &groups) - messages;
    assert_eq!(heartbeats, (PARTITIONS * 2 * 2 * 100 / 2) as u64);
    each_partition_serves(&mut cluster, &groups);
}

/// The leader's node stops: its peers stop hearing it, wake the quiet partitions it led and
/// elect new leaders. When it comes back, everything quiesces again.
#[test]
fn quiet_partitions_of_a_node_that_stops_elect_new_leaders() {
    let (mut cluster, groups) = quiet_cluster();
    let leader = serving_leader(&cluster, groups[0]);
    let led: Vec<GroupId> = groups
        .iter()
        .copied()
        .filter(|g| serving_leader(&cluster, *g) == leader)
        .collect();
    cluster.nodes.remove(&leader);
    cluster.tick(60);
    for group in &led {
        assert_ne!(serving_leader(&cluster, *group), leader);
    }
    // Every partition's leader, quiet or not before, leaves the stopped node out of its ISR.
    let running: Vec<NodeId> = NODES.iter().copied().filter(|n| *n != leader).collect();
    for group in &groups {
        let serving = serving_leader(&cluster, *group);
        let in_sync = cluster.nodes[&serving].in_sync(*group).expect("led");
        assert_eq!(in_sync, running, "group {group}");
    }
    each_partition_serves(&mut cluster, &groups);

    cluster.restart(leader);
    cluster.tick(120);
    assert_eq!(quiet(&cluster), vec![PARTITIONS; 3]);
    for node in cluster.nodes.values() {
        for group in &groups {
            let status = node.group_status(*group).expect("hosted");
            assert_eq!(status.high_watermark, Offset(2), "group {group}");
        }
    }
}

/// The leader's node restarts before its peers notice its silence: its gossip no longer
/// claims the partitions it led, so their quiet followers wake and elect a leader.
#[test]
fn a_leader_that_restarts_at_once_leaves_no_partition_without_a_leader() {
    let (mut cluster, groups) = quiet_cluster();
    let leader = serving_leader(&cluster, groups[0]);
    cluster.restart(leader);
    cluster.tick(60);
    each_partition_serves(&mut cluster, &groups);
    cluster.tick(40);
    assert_eq!(quiet(&cluster), vec![PARTITIONS; 3]);
}
