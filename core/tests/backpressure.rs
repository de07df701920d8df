//! Limits a leader reaches while it still leads answer as backpressure, not as a lost
//! leadership (which sends clients to refresh metadata and come straight back).

mod common;

use common::*;
use oxbow_core::io::{Acks, ProduceError, ProduceRequest};

/// Raft's uncommitted-size limit: with both followers down nothing commits, and once the
/// uncommitted batches pass the limit a produce is refused with `Backpressure`
/// (REQUEST_TIMED_OUT, retriable), while the node still leads.
#[test]
fn the_uncommitted_size_limit_answers_backpressure() {
    let mut cluster = Cluster::with(|c| {
        c.max_size_per_msg = 1_024;
        c.max_uncommitted_size = 4_096;
    });
    let group = cluster.one_partition_topic("t");
    let leader = serving_leader(&cluster, group);
    for node in NODES.iter().filter(|n| **n != leader) {
        cluster.nodes.remove(node);
    }
    let mut refused = None;
    for i in 0..20 {
        let id = cluster.submit(
            leader,
            Request::Produce(ProduceRequest {
                group,
                acks: Acks::All,
                batch: batch(20),
                timeout_ms: 60_000,
                transactional_id: None,
            }),
        );
        cluster.settle();
        if let Some((_, _, response)) = cluster.replies.iter().find(|(_, r, _)| *r == id) {
            refused = Some((i, response.clone()));
            break;
        }
    }
    let (i, response) = refused.expect("the limit is reached within 20 batches");
    // raft-rs counts an entry's data, the batch as sent (stamping keeps its length), and
    // refuses the entry that would take the uncommitted bytes past the limit.
    assert_eq!(
        i,
        4_096 / batch(20).len(),
        "the batches under the limit are taken"
    );
    assert!(
        matches!(response, Response::Produce(Err(ProduceError::Backpressure))),
        "{response:?}"
    );
    assert!(
        cluster.nodes[&leader]
            .group_status(group)
            .expect("hosted")
            .serving,
        "still leading"
    );
}
