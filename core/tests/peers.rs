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
