//! A partition's log start offset on three in-memory nodes: DeleteRecords moves it through the
//! partition's Raft log, and a replica that was down while it moved gets it in a snapshot.

mod common;

use common::*;
use oxbow_core::ids::Offset;
use oxbow_core::io::DeleteRecordsRequest;

/// A partition whose follower `behind` (returned stopped, with the partition and its leader)
/// is down while five batches of two records go in and the log start moves to `log_start`:
/// the leader compacts the batches below it away.
fn follower_behind_a_compaction(
    cluster: &mut Cluster,
    log_start: i64,
) -> (GroupId, NodeId, NodeId, Node) {
    let group = cluster.one_partition_topic("t");
    let leader = serving_leader(cluster, group);
    let behind = *NODES.iter().find(|n| **n != leader).expect("three nodes");
    let stopped = cluster.nodes.remove(&behind).expect("running");
    for i in 0..5 {
        assert_eq!(cluster.produce(leader, group, batch(2)), Offset(2 * i));
    }
    let answer = cluster.request(
        leader,
        Request::DeleteRecords(DeleteRecordsRequest {
            group,
            offset: Some(Offset(log_start)),
            timeout_ms: 5_000,
        }),
    );
    assert_eq!(answer, Response::DeleteRecords(Ok(Offset(log_start))));
    cluster.tick(5);
    assert!(
        cluster.has_snapshot(leader, group, false),
        "the leader compacted below the log start"
    );
    (group, leader, behind, stopped)
}

#[test]
fn a_replica_behind_a_log_start_inside_a_batch_installs_it_and_catches_up() {
    let mut cluster = Cluster::new();
    // The log start moves into the third batch: the first two are compacted away.
    let (group, _leader, behind, stopped) = follower_behind_a_compaction(&mut cluster, 5);
    drop(stopped);
    // It comes back behind the leader's snapshot, whose log start (5) is above the offset
    // after its index (4): every invariant holds on every input as it installs and catches up.
    cluster.restart(behind);
    cluster.tick(40);
    assert!(
        cluster.has_snapshot(behind, group, true),
        "it installed the leader's snapshot"
    );
    let status = cluster.nodes[&behind].group_status(group).expect("hosted");
    assert_eq!(
        (status.log_start_offset, status.high_watermark),
        (Offset(5), Offset(10))
    );
    // And again from its own disk.
    cluster.restart(behind);
    cluster.tick(40);
    let status = cluster.nodes[&behind].group_status(group).expect("hosted");
    assert_eq!(
        (status.log_start_offset, status.high_watermark),
        (Offset(5), Offset(10))
    );
}

/// A follower behind a compacted log installs the leader's snapshot, and its disk stalls
/// before the snapshot is written; then the leader goes. Its election timeout passes while
/// the write is still out: the campaign must wait for the write (raft-rs counts the snapshot
/// applied only once it is persisted, and a campaign reads the entries after what it counts
/// applied, which the snapshot replaced), then the partition elects a leader and serves.
#[test]
fn a_follower_installing_a_snapshot_on_a_stalled_disk_campaigns_after_the_write() {
    let mut cluster = Cluster::new();
    let (group, leader, behind, stopped) = follower_behind_a_compaction(&mut cluster, 10);
    cluster.nodes.insert(behind, stopped);
    cluster.stall_writes(behind);
    cluster.tick(10);
    assert!(
        cluster.has_snapshot(behind, group, true),
        "the follower was sent the leader's snapshot"
    );
    cluster.nodes.remove(&leader).expect("running");
    cluster.tick(80);
    cluster.release_writes(behind);
    cluster.tick(80);
    let new_leader = serving_leader(&cluster, group);
    assert_ne!(new_leader, leader);
    assert_eq!(cluster.produce(new_leader, group, batch(1)), Offset(10));
}
