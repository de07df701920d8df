//! Memory holds a bounded suffix of each partition's log: older entries are read from disk for
//! a follower that is behind (raft-rs's asynchronous entry fetch), and a fetch or timestamp
//! lookup of old records answers with a read of the files for the driver to do.

mod common;

use common::*;
use kafka_protocol::records::RecordBatchDecoder;
use oxbow_core::ids::{Offset, RaftIndex};
use oxbow_core::io::{
    DeleteRecordsRequest, FetchRequest, FindTimestampRequest, FoundBatch, Output,
};

/// Budgets small enough that a few dozen batches overflow them.
fn small_cache(config: &mut NodeConfig) {
    config.log_cache_bytes = 3_000;
    config.offset_index_interval_bytes = 500;
    config.catch_up_read_bytes = 1_000;
}

const BATCHES: i64 = 60;
const RECORDS_PER_BATCH: i32 = 3;

fn produce(cluster: &mut Cluster, leader: NodeId, group: GroupId, timestamp: i64) {
    cluster.produce(leader, group, batch_at(RECORDS_PER_BATCH, timestamp));
}

/// Offsets of the records in `batches` at or after `from`.
fn offsets(batches: &[Bytes], from: i64) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            RecordBatchDecoder::decode(&mut b.clone())
                .expect("decodes")
                .records
        })
        .map(|r| r.offset)
        .filter(|o| *o >= from)
        .collect()
}

#[test]
fn a_follower_behind_the_cache_catches_up_from_disk_and_old_fetches_read_the_files() {
    let mut cluster = Cluster::with(small_cache);
    let group = cluster.one_partition_topic("t");
    let leader = serving_leader(&cluster, group);
    let behind = *NODES.iter().find(|n| **n != leader).expect("three nodes");
    let stopped = cluster.nodes.remove(&behind).expect("running");
    for i in 0..BATCHES {
        produce(&mut cluster, leader, group, 1_000 + i);
    }
    cluster.tick(3);
    drop(stopped);
    // Everything it missed is beyond the leader's cache: raft-rs asks for reads.
    cluster.restart(behind);
    let mut reads = 0;
    for _ in 0..200 {
        cluster.tick(1);
        reads += cluster.reads_served;
        cluster.reads_served = 0;
        if cluster.nodes[&behind]
            .group_status(group)
            .expect("hosted")
            .high_watermark
            == Offset(BATCHES * i64::from(RECORDS_PER_BATCH))
        {
            break;
        }
    }
    let status = cluster.nodes[&behind].group_status(group).expect("hosted");
    assert_eq!(
        status.high_watermark,
        Offset(BATCHES * i64::from(RECORDS_PER_BATCH))
    );
    assert!(
        reads > 1,
        "the leader fed the follower from disk ({reads} reads)"
    );
    // Its log is the leader's, entry for entry.
    let entries = |node: NodeId| cluster.durable(node).groups[&group].entries.clone();
    let (theirs, ours) = (entries(leader), entries(behind));
    assert_eq!(theirs.len(), ours.len());
    assert!(theirs
        .iter()
        .zip(&ours)
        .all(|(a, b)| a.index == b.index && a.term == b.term && a.data == b.data));

    // A consumer from offset 0: the leader no longer holds those batches and answers with a
    // read of its files; what that read serves is every record, in order.
    let mut out = Vec::new();
    let node = cluster.nodes.get_mut(&leader).expect("running");
    node.handle(
        cluster.now,
        Input::Request {
            id: RequestId(u64::MAX),
            request: Request::Fetch(FetchRequest {
                group,
                offset: Offset(7),
                max_bytes: 1 << 20,
                current_leader_epoch: -1,
                read_committed: false,
            }),
        },
        &mut out,
    );
    let Some(Output::Reply {
        response: Response::Fetch(Ok(data)),
        ..
    }) = out.pop()
    else {
        panic!("a fetch answers at once")
    };
    let read = data.read.clone().expect("old records are read from disk");
    assert!(data.batches.is_empty());
    let batches = read.batches(cluster.read_disk(leader, &read));
    let total = BATCHES * i64::from(RECORDS_PER_BATCH);
    assert_eq!(offsets(&batches, 7), (7..total).collect::<Vec<_>>());

    // The time index finds the first batch stamped at or after a time, on disk too.
    let mut out = Vec::new();
    let node = cluster.nodes.get_mut(&leader).expect("running");
    node.handle(
        cluster.now,
        Input::Request {
            id: RequestId(u64::MAX - 1),
            request: Request::FindTimestamp(FindTimestampRequest {
                group,
                timestamp: 1_005,
                after: RaftIndex(0),
            }),
        },
        &mut out,
    );
    let Some(Output::Reply {
        response: Response::FindTimestamp(Ok(found)),
        ..
    }) = out.pop()
    else {
        panic!("a lookup answers at once")
    };
    let FoundBatch::OnDisk(read) = found else {
        panic!("batch 5 is on disk, not {found:?}")
    };
    let batch = read
        .first_at(cluster.read_disk(leader, &read), 1_005)
        .expect("found");
    assert_eq!(offsets(&[batch], 0), vec![15, 16, 17]);
    for node in cluster.nodes.values() {
        node.invariants();
    }
}

#[test]
fn a_restart_starts_applying_after_the_latest_checkpoint() {
    let mut cluster = Cluster::with(|config| {
        small_cache(config);
        config.checkpoint_bytes = 400;
        config.checkpoint_ticks = 3;
    });
    let group = cluster.one_partition_topic("t");
    let leader = serving_leader(&cluster, group);
    for i in 0..BATCHES {
        produce(&mut cluster, leader, group, 1_000 + i);
    }
    cluster.tick(5);
    let total = Offset(BATCHES * i64::from(RECORDS_PER_BATCH));
    // Every replica checkpointed: what a restart reads into memory is the tail after it.
    for node in NODES {
        let durable = cluster.durable(node);
        let state = &durable.groups[&group];
        let checkpoint = state.checkpoint.as_ref().expect("a checkpoint");
        assert!(
            checkpoint.index > 40,
            "checkpointed near the end: {}",
            checkpoint.index
        );
        assert!(
            state.entries.len() < 10,
            "{} entries after it",
            state.entries.len()
        );
        assert!(!state.terms.is_empty());
    }
    for node in NODES {
        cluster.restart(node);
    }
    cluster.tick(60);
    let leader = serving_leader(&cluster, group);
    for node in NODES {
        let status = cluster.nodes[&node].group_status(group).expect("hosted");
        assert_eq!(status.high_watermark, total, "node {node}");
    }
    // The new leader serves every record: the old ones from its files.
    let mut next = 0;
    while next < total.0 {
        let answer = cluster.request(
            leader,
            Request::Fetch(FetchRequest {
                group,
                offset: Offset(next),
                max_bytes: 200,
                current_leader_epoch: -1,
                read_committed: false,
            }),
        );
        let Response::Fetch(Ok(mut data)) = answer else {
            panic!("{answer:?}")
        };
        if let Some(read) = data.read.take() {
            data.batches = read.batches(cluster.read_disk(leader, &read));
        }
        let got = offsets(&data.batches, next);
        assert!(!got.is_empty(), "records from {next}");
        assert_eq!(got, (next..next + got.len() as i64).collect::<Vec<_>>());
        next += got.len() as i64;
    }
    // Producing goes on at the right offset.
    produce(&mut cluster, leader, group, 5_000);
    cluster.tick(3);
    let status = cluster.nodes[&leader].group_status(group).expect("hosted");
    assert_eq!(
        status.high_watermark,
        Offset(total.0 + i64::from(RECORDS_PER_BATCH))
    );
    for node in cluster.nodes.values() {
        node.invariants();
    }
}

/// The first record at or after `timestamp`, looked up as the node runtime does: the core
/// names a batch in memory or a read of the files; a read holding no batch late enough is
/// followed by a lookup after it.
fn lookup(cluster: &mut Cluster, leader: NodeId, group: GroupId, timestamp: i64) -> Option<i64> {
    let mut after = RaftIndex(0);
    for _ in 0..BATCHES {
        let answer = cluster.request(
            leader,
            Request::FindTimestamp(FindTimestampRequest {
                group,
                timestamp,
                after,
            }),
        );
        let Response::FindTimestamp(Ok(found)) = answer else {
            panic!("{answer:?}");
        };
        let batch = match found {
            FoundBatch::None => return None,
            FoundBatch::Batch(batch) => batch,
            FoundBatch::OnDisk(read) => {
                match read.first_at(cluster.read_disk(leader, &read), timestamp) {
                    Some(batch) => batch,
                    None => {
                        assert!(read.to > after);
                        after = read.to;
                        continue;
                    }
                }
            }
        };
        return offsets(&[batch], 0).first().copied();
    }
    panic!("the lookup never ended");
}

#[test]
fn a_timestamp_lookup_looks_past_a_span_whose_late_batch_was_deleted() {
    let mut cluster = Cluster::with(small_cache);
    let group = cluster.one_partition_topic("t");
    let leader = serving_leader(&cluster, group);
    // The first batch is stamped late; so is batch 40, far on, in another span on disk.
    produce(&mut cluster, leader, group, 5_000);
    for i in 1..BATCHES {
        produce(
            &mut cluster,
            leader,
            group,
            if i == 40 { 4_500 } else { 1_000 + i },
        );
    }
    cluster.tick(3);
    assert_eq!(lookup(&mut cluster, leader, group, 4_400), Some(0));
    // The first batch goes below the log start; its span's latest timestamp is still 5,000.
    let answer = cluster.request(
        leader,
        Request::DeleteRecords(DeleteRecordsRequest {
            group,
            offset: Some(Offset(i64::from(RECORDS_PER_BATCH))),
            timeout_ms: 5_000,
        }),
    );
    assert!(
        matches!(answer, Response::DeleteRecords(Ok(_))),
        "{answer:?}"
    );
    cluster.tick(3);
    assert_eq!(
        lookup(&mut cluster, leader, group, 4_400),
        Some(40 * i64::from(RECORDS_PER_BATCH))
    );
    assert_eq!(lookup(&mut cluster, leader, group, 6_000), None);
    for node in cluster.nodes.values() {
        node.invariants();
    }
}
