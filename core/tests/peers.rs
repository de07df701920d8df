//! What the core does with peer messages that only a broken or hostile peer would send.

mod common;

use common::*;
use oxbow_core::io::{GroupMessage, Input};
use oxbow_core::raft::eraftpb::{Message, MessageType};

/// A term past i32::MAX could never be served as a Kafka leader epoch (every stored batch
/// carries its term as one). A message carrying one is dropped: the partition keeps its
/// leader and term, and produce still works.
#[test]
fn a_term_past_a_leader_epoch_is_dropped() {
    let mut cluster = Cluster::new();
    let group = cluster.one_partition_topic("events");
    let leader = serving_leader(&cluster, group);
    let term = cluster.nodes[&leader].leader(group).expect("led").1;
    let follower = *NODES.iter().find(|n| **n != leader).expect("a follower");
    for (msg_type, huge) in [
        (MessageType::MsgHeartbeat, 1u64 << 31),
        (MessageType::MsgRequestVote, u64::MAX),
    ] {
        let message = Message {
            msg_type,
            from: follower.raft_id().0,
            to: leader.raft_id().0,
            term: huge,
            log_term: huge,
            index: 1 << 40,
            commit: 1 << 40,
            ..Message::default()
        };
        cluster.inputs.push_back((
            leader,
            Input::Peer {
                from: follower,
                messages: vec![GroupMessage { group, message }],
            },
        ));
        cluster.settle();
    }
    cluster.tick(30);
    assert_eq!(serving_leader(&cluster, group), leader);
    assert_eq!(cluster.nodes[&leader].leader(group).expect("led").1, term);
    assert_eq!(cluster.produce(leader, group, batch(2)), Offset(0));
}

/// raft-rs appends an append's entries as they come; entries that do not continue the log
/// one index at a time (found by the `peer_frame` fuzz target: a gap) reached the log store's
/// assertion and took the node down. They are dropped: the follower keeps its log, and the
/// partition goes on.
#[test]
fn append_entries_that_do_not_continue_the_log_are_dropped() {
    let mut cluster = Cluster::new();
    let group = cluster.one_partition_topic("events");
    let leader = serving_leader(&cluster, group);
    assert_eq!(cluster.produce(leader, group, batch(1)), Offset(0));
    let term = cluster.nodes[&leader].leader(group).expect("led").1;
    let follower = *NODES.iter().find(|n| **n != leader).expect("a follower");
    let last = |cluster: &Cluster| {
        cluster.replay(follower).groups[&group]
            .entries
            .last()
            .expect("entries")
            .index
    };
    let before = last(&cluster);
    let entry = |index: u64, term: u64| Entry {
        index,
        term,
        ..Default::default()
    };
    for entries in [
        vec![entry(before + 1, term.0), entry(before + 3, term.0)], // a gap
        vec![entry(before + 1, term.0), entry(before + 1, term.0)], // twice
        vec![entry(before + 1, term.0 + 1)],                        // past the sender's term
    ] {
        let message = Message {
            msg_type: MessageType::MsgAppend,
            from: leader.raft_id().0,
            to: follower.raft_id().0,
            term: term.0,
            log_term: term.0,
            index: before,
            entries: entries.into(),
            ..Message::default()
        };
        cluster.inputs.push_back((
            follower,
            Input::Peer {
                from: leader,
                messages: vec![GroupMessage { group, message }],
            },
        ));
        cluster.settle();
        assert_eq!(last(&cluster), before, "the follower's log is as it was");
    }
    cluster.tick(10);
    assert_eq!(serving_leader(&cluster, group), leader);
    assert_eq!(cluster.produce(leader, group, batch(2)), Offset(1));
}

/// raft-rs forwards some messages it receives to the leader it knows and keeps their sender
/// (found by the `peer_frame` fuzz target): a follower passed them on as another node's, and
/// the receiver, whose transport refuses such a message, asserted. A forwarded proposal (a
/// node with a stale leader hint forwards an admin change here) now leaves as this node's and
/// still applies; a forwarded read index, which names its sender as the one to answer, is
/// dropped.
#[test]
fn messages_forwarded_for_another_node_leave_as_this_nodes_or_not_at_all() {
    let mut cluster = Cluster::new();
    cluster.tick(40);
    let leader = cluster.metadata_leader().expect("a controller");
    let mut others = NODES.iter().copied().filter(|n| *n != leader);
    let (follower, third) = (others.next().expect("two"), others.next().expect("two"));
    let proposal = oxbow_core::metadata::encode_entry(
        &create("forwarded", 1, 3),
        None,
        PartitionLimits::DEFAULT,
    );
    for (msg_type, entries) in [
        (MessageType::MsgReadIndex, Vec::new()),
        (
            MessageType::MsgPropose,
            vec![Entry {
                data: proposal.into(),
                ..Entry::default()
            }],
        ),
    ] {
        let message = Message {
            msg_type,
            from: third.raft_id().0,
            to: follower.raft_id().0,
            entries: entries.into(),
            ..Message::default()
        };
        cluster.inputs.push_back((
            follower,
            Input::Peer {
                from: third,
                messages: vec![GroupMessage {
                    group: METADATA_GROUP,
                    message,
                }],
            },
        ));
        cluster.settle();
    }
    cluster.tick(5);
    let created = cluster.nodes[&leader]
        .metadata()
        .expect("runs")
        .topic("forwarded")
        .map(|t| t.partitions.len());
    assert_eq!(created, Some(1), "the forwarded proposal applied");
}
