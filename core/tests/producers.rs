//! Idempotent producers on three in-memory nodes while a client opens producer ids by the
//! thousand (issue 16): the state of a producer that is still writing is never pushed out, so its
//! retry stays a duplicate, on this leader and on the next.
//!
//! `a_flood_of_new_producer_ids_never_turns_a_live_retry_into_a_duplicate` uses only what the
//! core had before producer state expired by time (`NodeConfig::producers_max`), so that it runs,
//! and fails, against the code that evicted the least recently used producer.

mod common;

use common::*;
use oxbow_core::ids::{Offset, Sequence};
use oxbow_core::io::{ProduceAck, ProduceError};

fn acked_at(response: &Response) -> Offset {
    match response {
        Response::Produce(Ok(ProduceAck { base_offset, .. })) => *base_offset,
        other => panic!("not acknowledged: {other:?}"),
    }
}

/// Kafka's POLICY_VIOLATION: what a producer id gets when the partition's table is full.
const POLICY_VIOLATION: i16 = 44;

#[test]
fn a_flood_of_new_producer_ids_never_turns_a_live_retry_into_a_duplicate() {
    const LIMIT: usize = 8;
    // Small entry retention: the table also travels in snapshots.
    let mut cluster = Cluster::with(|c| {
        c.producers_max = LIMIT;
        c.retain_entries_max = Some(6);
    });
    let group = cluster.one_partition_topic("churn");
    let first = serving_leader(&cluster, group);
    let others: Vec<NodeId> = NODES.iter().copied().filter(|n| *n != first).collect();
    let (behind, third) = (others[0], others[1]);
    let live = 7_000;
    let original = acked_at(&cluster.produce_answer(first, group, idempotent_batch(live, 0, 2)));
    let mut written = 2;
    // One replica is down through the flood, and will catch up from a snapshot.
    let stopped = cluster.nodes.remove(&behind).expect("running");
    let (mut admitted, mut refused) = (0, 0);
    for round in 0..4 {
        for k in 0..LIMIT as i64 {
            let churn = 10_000 + round * 100 + k;
            match cluster.produce_answer(first, group, idempotent_batch(churn, 0, 1)) {
                Response::Produce(Ok(_)) => {
                    admitted += 1;
                    written += 1;
                }
                Response::Produce(Err(error)) => {
                    assert_eq!(error.kafka_code(), POLICY_VIOLATION, "{error:?}");
                    assert!(!error.is_indeterminate(), "a refusal writes nothing");
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        // The live producer did not hear back and sends its batch again: a duplicate, answered
        // with the original offset and not written again.
        let retry = cluster.produce_answer(first, group, idempotent_batch(live, 0, 2));
        assert_eq!(
            acked_at(&retry),
            original,
            "round {round}: the retry was written again"
        );
        // Plain batches between: more entries, so the log is compacted past the replica down.
        for _ in 0..3 {
            acked_at(&cluster.produce_answer(first, group, batch(1)));
            written += 1;
        }
    }
    assert_eq!(
        admitted,
        LIMIT - 1,
        "the table holds the live producer and 7 others"
    );
    assert_eq!(refused, 4 * LIMIT - admitted);
    let high_watermark = |cluster: &Cluster, node: NodeId| {
        cluster.nodes[&node]
            .group_status(group)
            .expect("hosted")
            .high_watermark
    };
    assert_eq!(high_watermark(&cluster, first), Offset(written));
    assert!(cluster.has_snapshot(first, group, false), "compacted");

    // The replica that was down installs the leader's snapshot and catches up.
    drop(stopped);
    cluster.restart(behind);
    cluster.tick(40);
    assert!(cluster.has_snapshot(behind, group, true), "installed");
    // It becomes the leader: the third replica misses an entry, then the first goes away.
    let third_down = cluster.nodes.remove(&third).expect("running");
    acked_at(&cluster.produce_answer(first, group, batch(1)));
    written += 1;
    drop(third_down);
    let first_down = cluster.nodes.remove(&first).expect("running");
    cluster.restart(third);
    cluster.tick(40);
    assert_eq!(serving_leader(&cluster, group), behind);

    // Its table came in the snapshot: the live producer's retry is still a duplicate, its next
    // batch follows in sequence, a gap is refused, and the table is still full.
    let retry = cluster.produce_answer(behind, group, idempotent_batch(live, 0, 2));
    assert_eq!(
        acked_at(&retry),
        original,
        "the retry was written again after failover"
    );
    let gap = cluster.produce_answer(behind, group, idempotent_batch(live, 5, 1));
    // The retry was the live producer's sequences 0-1: 2 is next, 5 a gap.
    assert_eq!(
        gap,
        Response::Produce(Err(ProduceError::OutOfOrderSequence {
            expected: Sequence(2),
            received: Sequence(5),
        }))
    );
    acked_at(&cluster.produce_answer(behind, group, idempotent_batch(live, 2, 1)));
    written += 1;
    match cluster.produce_answer(behind, group, idempotent_batch(99_999, 0, 1)) {
        Response::Produce(Err(error)) => assert_eq!(error.kafka_code(), POLICY_VIOLATION),
        other => panic!("a new producer id got in: {other:?}"),
    }
    drop(first_down);
    cluster.restart(first);
    cluster.tick(40);
    for node in NODES {
        assert_eq!(
            high_watermark(&cluster, node),
            Offset(written),
            "node {node}"
        );
    }
}

#[test]
fn producers_expire_a_day_after_their_last_write_on_every_replica() {
    let mut cluster = Cluster::with(|c| c.producers_max = 2);
    let group = cluster.one_partition_topic("expiry");
    let first = serving_leader(&cluster, group);
    acked_at(&cluster.produce_answer(first, group, idempotent_batch(1, 0, 1)));
    acked_at(&cluster.produce_answer(first, group, idempotent_batch(2, 0, 1)));
    // Producer 1 writes again an hour later; producer 3 finds the table full.
    cluster.now.wall_ms += 3_600_000;
    acked_at(&cluster.produce_answer(first, group, idempotent_batch(1, 1, 1)));
    let full = cluster.produce_answer(first, group, idempotent_batch(3, 0, 1));
    assert!(
        matches!(full, Response::Produce(Err(ProduceError::TooManyProducers))),
        "{full:?}"
    );
    // A day after producer 2's last write (and not yet a day after producer 1's), producer 3
    // gets its place: the leader's clock, stamped on the entry, expired producer 2 there.
    cluster.now.wall_ms += 86_400_000 - 3_600_000;
    acked_at(&cluster.produce_answer(first, group, idempotent_batch(3, 0, 1)));
    let retry = cluster.produce_answer(first, group, idempotent_batch(1, 1, 1));
    assert!(
        matches!(&retry, Response::Produce(Ok(ProduceAck { base_offset, .. })) if *base_offset == Offset(2)),
        "producer 1 is remembered: {retry:?}"
    );
    // Every replica expired the same producer at the same entry: on the next leader, producer
    // 2 is unknown (and finds the table full) while producer 1's retry is still a duplicate,
    // whatever that leader's own clock says (a day behind here).
    let stopped = cluster.nodes.remove(&first).expect("running");
    cluster.now.wall_ms -= 86_400_000;
    cluster.tick(40);
    let next = serving_leader(&cluster, group);
    assert_ne!(next, first);
    let retry = cluster.produce_answer(next, group, idempotent_batch(1, 1, 1));
    assert_eq!(acked_at(&retry), Offset(2));
    let gone = cluster.produce_answer(next, group, idempotent_batch(2, 0, 1));
    assert!(
        matches!(gone, Response::Produce(Err(ProduceError::TooManyProducers))),
        "{gone:?}"
    );
    drop(stopped);
    cluster.restart(first);
    cluster.tick(40);
    let high_watermarks: Vec<Offset> = NODES
        .iter()
        .map(|n| {
            cluster.nodes[n]
                .group_status(group)
                .expect("hosted")
                .high_watermark
        })
        .collect();
    assert_eq!(high_watermarks, vec![Offset(4); 3]);
}

/// No partition is in a transaction until AddPartitionsToTxn is served, so a transactional
/// batch is refused with INVALID_TXN_STATE and nothing is written: its markers could never
/// come.
#[test]
fn a_transactional_batch_is_refused_while_no_partition_is_in_a_transaction() {
    let mut cluster = Cluster::new();
    let group = cluster.one_partition_topic("txn");
    let leader = serving_leader(&cluster, group);
    let first = acked_at(&cluster.produce_answer(leader, group, idempotent_batch(7, 0, 1)));
    let refused = cluster.produce_answer(leader, group, transactional_batch(8, 0, 3));
    assert!(
        matches!(
            refused,
            Response::Produce(Err(ProduceError::InvalidTxnState))
        ),
        "{refused:?}"
    );
    assert_eq!(ProduceError::InvalidTxnState.kafka_code(), 48);
    // Nothing was written: the next batch follows the first.
    let next = acked_at(&cluster.produce_answer(leader, group, idempotent_batch(7, 1, 1)));
    assert_eq!(next, Offset(first.0 + 1));
}
