//! The leader-epoch history of a partition on three in-memory nodes (KIP-320): built as its
//! log applies across leader changes, truncated with the log start, carried in snapshots and
//! checkpoints; OffsetForLeaderEpoch answered from it, and the client's current leader epoch
//! checked (fenced when older, unknown when newer).

mod common;

use common::*;
use oxbow_core::epoch_history::{EpochEnd, LeaderEpochError};
use oxbow_core::ids::Term;
use oxbow_core::io::{DeleteRecordsRequest, EpochEndRequest, FetchError, FetchRequest};

fn term(cluster: &Cluster, node: NodeId, group: GroupId) -> u64 {
    cluster.nodes[&node]
        .group_status(group)
        .expect("hosted")
        .term
        .0
}

/// Hands the partition's leadership to `to` and waits until it serves.
fn transfer(cluster: &mut Cluster, group: GroupId, to: NodeId) {
    let from = serving_leader(cluster, group);
    let handed = cluster.request(from, Request::TransferLeader { group, to });
    assert_eq!(handed, Response::TransferLeader(true));
    for _ in 0..40 {
        if cluster.nodes[&to]
            .group_status(group)
            .is_some_and(|s| s.serving)
        {
            return;
        }
        cluster.tick(1);
    }
    panic!("{to} does not lead after the transfer");
}

/// `node`'s history as `(epoch, start offset)` pairs.
fn history(cluster: &Cluster, node: NodeId, group: GroupId) -> Vec<(u64, i64)> {
    cluster.nodes[&node]
        .epoch_history(group)
        .expect("a partition")
        .epochs()
        .iter()
        .map(|(t, o)| (t.0, o.0))
        .collect()
}

fn epoch_end(
    cluster: &mut Cluster,
    node: NodeId,
    group: GroupId,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> Result<EpochEnd, FetchError> {
    let request = Request::EpochEnd(EpochEndRequest {
        group,
        current_leader_epoch,
        leader_epoch,
    });
    match cluster.request(node, request) {
        Response::EpochEnd(answer) => answer,
        other => panic!("{other:?}"),
    }
}

/// What Kafka's leader answers for `epoch` with this history (`(epoch, start)` pairs) and
/// high watermark: the largest epoch at or below it and the next epoch's start (the high
/// watermark for the latest); below the oldest, itself and the oldest's start; -1 and above
/// the latest, undefined.
fn kafka_answer(history: &[(u64, i64)], high_watermark: i64, epoch: i32) -> (i32, i64) {
    let latest = history.last().expect("epochs").0 as i32;
    if epoch < 0 || epoch > latest {
        return (-1, -1);
    }
    if epoch == latest {
        return (epoch, high_watermark);
    }
    let next = history
        .iter()
        .position(|(t, _)| *t as i32 > epoch)
        .expect("later epoch");
    let found = if next == 0 {
        epoch
    } else {
        history[next - 1].0 as i32
    };
    (found, history[next].1)
}

/// Asks `leader` for the end of every epoch from -1 to one past the latest, and checks each
/// answer against `history`.
fn check_answers(cluster: &mut Cluster, leader: NodeId, group: GroupId, history: &[(u64, i64)]) {
    let high_watermark = cluster.nodes[&leader]
        .group_status(group)
        .expect("hosted")
        .high_watermark
        .0;
    let current = term(cluster, leader, group) as i32;
    for epoch in -1..=current + 1 {
        let answer = epoch_end(cluster, leader, group, current, epoch).expect("answered");
        assert_eq!(
            (answer.leader_epoch, answer.end_offset),
            kafka_answer(history, high_watermark, epoch),
            "epoch {epoch} of {history:?}"
        );
    }
}

fn produce(cluster: &mut Cluster, leader: NodeId, group: GroupId, count: i32, at: i64) {
    assert_eq!(cluster.produce(leader, group, batch(count)), Offset(at));
}

#[test]
fn epochs_follow_leaders_and_survive_retention_snapshots_and_restarts() {
    let mut cluster = Cluster::with(|c| c.checkpoint_ticks = 5);
    let group = cluster.one_partition_topic("epochs");
    let first = serving_leader(&cluster, group);
    let others: Vec<NodeId> = NODES.iter().copied().filter(|n| *n != first).collect();
    let (second, third) = (others[0], others[1]);

    // Term t1: two batches of three.
    let t1 = term(&cluster, first, group);
    produce(&mut cluster, first, group, 3, 0);
    produce(&mut cluster, first, group, 3, 3);
    // Term t2 from offset 6.
    transfer(&mut cluster, group, second);
    let t2 = term(&cluster, second, group);
    assert_eq!(t2, t1 + 1, "a transfer is one election");
    produce(&mut cluster, second, group, 2, 6);
    cluster.tick(2);
    for node in NODES {
        assert_eq!(history(&cluster, node, group), vec![(t1, 0), (t2, 6)]);
    }
    // The first leader goes down; term t3 starts at offset 11 without it.
    let down = cluster.nodes.remove(&first).expect("running");
    produce(&mut cluster, second, group, 1, 8);
    produce(&mut cluster, second, group, 2, 9);
    transfer(&mut cluster, group, third);
    let t3 = term(&cluster, third, group);
    assert_eq!(t3, t2 + 1, "a transfer is one election");
    produce(&mut cluster, third, group, 4, 11);
    cluster.tick(2);
    let all = vec![(t1, 0), (t2, 6), (t3, 11)];
    for node in [second, third] {
        assert_eq!(history(&cluster, node, group), all, "node {node}");
    }
    check_answers(&mut cluster, third, group, &all);

    // The current leader epoch is checked before leadership: an older one is fenced, a newer
    // one unknown; with the current one, a follower is not the leader.
    let current = t3 as i32;
    for (node, epoch, expected) in [
        (
            third,
            current - 1,
            Err(FetchError::LeaderEpoch(LeaderEpochError::Fenced)),
        ),
        (
            third,
            current + 1,
            Err(FetchError::LeaderEpoch(LeaderEpochError::Unknown)),
        ),
        (
            second,
            current - 1,
            Err(FetchError::LeaderEpoch(LeaderEpochError::Fenced)),
        ),
        (
            second,
            current,
            Err(FetchError::NotLeader {
                leader: Some(third),
            }),
        ),
    ] {
        assert_eq!(
            epoch_end(&mut cluster, node, group, epoch, t2 as i32),
            expected
        );
        let fetch = Request::Fetch(FetchRequest {
            group,
            offset: Offset(0),
            max_bytes: 1 << 20,
            current_leader_epoch: epoch,
            read_committed: false,
        });
        match cluster.request(node, fetch) {
            Response::Fetch(answer) => {
                assert_eq!(
                    answer.map(|d| d.high_watermark),
                    expected.map(|_| Offset(15))
                )
            }
            other => panic!("{other:?}"),
        }
    }
    // Unchecked (-1), the leader answers.
    assert_eq!(
        epoch_end(&mut cluster, third, group, -1, t1 as i32),
        Ok(EpochEnd {
            leader_epoch: t1 as i32,
            end_offset: 6
        })
    );

    // DeleteRecords moves the log start into t2's epoch, inside its last batch (9-10): t1's
    // epoch goes, t2's starts at 10.
    let deleted = cluster.request(
        third,
        Request::DeleteRecords(DeleteRecordsRequest {
            group,
            offset: Some(Offset(10)),
            timeout_ms: 5_000,
        }),
    );
    assert_eq!(deleted, Response::DeleteRecords(Ok(Offset(10))));
    cluster.tick(10);
    let kept = vec![(t2, 10), (t3, 11)];
    for node in [second, third] {
        assert_eq!(history(&cluster, node, group), kept, "node {node}");
    }
    check_answers(&mut cluster, third, group, &kept);
    let status = cluster.nodes[&third].group_status(group).expect("hosted");
    assert_eq!(status.log_start_epoch, Some(Term(t2)));

    // The first leader comes back behind the compaction (its log ends at offset 8, the
    // leader's starts at the batch holding 10): it installs the leader's snapshot, whose
    // history has t2 start at the log start (the batch it applies again starts at 9).
    drop(down);
    cluster.restart(first);
    cluster.tick(40);
    assert!(
        cluster.has_snapshot(first, group, true),
        "it installed the leader's snapshot"
    );
    assert_eq!(history(&cluster, first, group), kept);

    // A follower restarts from its checkpoint, which covers every entry: its history comes
    // from there, not from entries applied again.
    cluster.tick(10);
    let durable = cluster.durable(second);
    let state = &durable.groups[&group];
    assert!(state.checkpoint.is_some(), "a checkpoint");
    assert!(
        state.entries.is_empty(),
        "no entry after it: {:?}",
        state.entries
    );
    cluster.restart(second);
    cluster.tick(10);
    assert_eq!(history(&cluster, second, group), kept);

    // Every node restarts: the next leader's term starts its epoch at the high watermark.
    for node in NODES {
        cluster.restart(node);
    }
    cluster.tick(40);
    let leader = serving_leader(&cluster, group);
    let t4 = term(&cluster, leader, group);
    assert!(t4 > t3);
    let after = vec![(t2, 10), (t3, 11), (t4, 15)];
    for node in NODES {
        assert_eq!(history(&cluster, node, group), after, "node {node}");
    }
    check_answers(&mut cluster, leader, group, &after);

    // A follower is down while a record goes in and DeleteRecords deletes every record: the
    // leader compacts its whole log, and the follower installs a snapshot with no entry after
    // it, so its history is only what the snapshot carries.
    let follower = *NODES.iter().find(|n| **n != leader).expect("three nodes");
    let down = cluster.nodes.remove(&follower).expect("running");
    produce(&mut cluster, leader, group, 1, 15);
    let deleted = cluster.request(
        leader,
        Request::DeleteRecords(DeleteRecordsRequest {
            group,
            offset: None,
            timeout_ms: 5_000,
        }),
    );
    assert_eq!(deleted, Response::DeleteRecords(Ok(Offset(16))));
    cluster.tick(10);
    drop(down);
    cluster.restart(follower);
    cluster.tick(40);
    let last_snapshot = cluster.disks[&follower]
        .iter()
        .rev()
        .find_map(|r| match r {
            WalRecord::Snapshot {
                group: g,
                snapshot,
                install: true,
            } if *g == group => Some(snapshot.get_metadata().index),
            _ => None,
        })
        .expect("it installed the leader's snapshot");
    let durable = cluster.replay(follower);
    assert!(
        durable.groups[&group]
            .entries
            .iter()
            .all(|e| e.index <= last_snapshot || e.data.is_empty()),
        "no record after the snapshot"
    );
    let only = vec![(t4, 16)];
    for node in NODES {
        assert_eq!(history(&cluster, node, group), only, "node {node}");
    }
    check_answers(&mut cluster, leader, group, &only);
}
