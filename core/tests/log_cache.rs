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

/// The offsets of the records a fetch from `offset` serves (at most `max_bytes` of batches),
/// reading the files as the node runtime does when the core answers with a read.
fn fetched(cluster: &mut Cluster, leader: NodeId, group: GroupId, offset: i64) -> Vec<i64> {
    let answer = cluster.request(
        leader,
        Request::Fetch(FetchRequest {
            group,
            offset: Offset(offset),
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
    offsets(&data.batches, offset)
}

/// Batches enough for the sparse index of `small_cache` to pass a bound of three points a few
/// times over.
const MANY_BATCHES: i64 = 200;

/// A batch's timestamp: not in order, so that thinning must merge spans' largest timestamps.
fn stamp(i: i64) -> i64 {
    1_000 + i * 37 % 211
}

/// Every fetch from every offset, and every timestamp lookup, on the cluster whose index is
/// thinned and on the one whose is not.
fn same_answers(thinned: &mut Cluster, full: &mut Cluster, group: GroupId) {
    let (small, large) = (serving_leader(thinned, group), serving_leader(full, group));
    let total = MANY_BATCHES * i64::from(RECORDS_PER_BATCH);
    for offset in 0..total {
        let answer = fetched(thinned, small, group, offset);
        assert_eq!(answer.first(), Some(&offset), "a fetch from {offset}");
        assert_eq!(answer, fetched(full, large, group, offset), "from {offset}");
    }
    for timestamp in 990..=1_220 {
        assert_eq!(
            lookup(thinned, small, group, timestamp),
            lookup(full, large, group, timestamp),
            "the first record at {timestamp}"
        );
    }
}

/// Past `index_points_max` sparse points a partition thins them: every other one goes, its
/// span merged into the one before, and the interval doubles, so that neither the index nor a
/// checkpoint grows with the data kept. A fetch starts at the point at or below the offset it
/// wants and reads on, and a lookup reads the first span late enough, so both answer as they
/// would with every point: on the leader, and after a restart from a checkpoint of the thinned
/// index.
#[test]
fn a_thinned_sparse_index_answers_fetches_and_timestamp_lookups_as_before() {
    fn configure(config: &mut NodeConfig) {
        small_cache(config);
        config.checkpoint_bytes = 400;
        config.checkpoint_ticks = 3;
        // Batches of three records fit; a read from a point past its span's bytes stops short.
        config.batch_bytes_max = 256;
    }
    let mut thinned = Cluster::with(|config| {
        configure(config);
        config.index_points_max = 3;
    });
    let mut full = Cluster::with(configure);
    let group = thinned.one_partition_topic("t");
    assert_eq!(full.one_partition_topic("t"), group);
    for cluster in [&mut thinned, &mut full] {
        let leader = serving_leader(cluster, group);
        // The last few after the index was thinned, so that a checkpoint holds it thinned.
        for i in 0..MANY_BATCHES {
            produce(cluster, leader, group, stamp(i));
            if i == MANY_BATCHES - 10 {
                cluster.tick(5);
            }
        }
        cluster.tick(5);
    }
    let points = |cluster: &Cluster| -> Vec<usize> {
        (cluster.nodes.values())
            .map(|n| n.group_status(group).expect("hosted").sparse_index_points)
            .collect()
    };
    assert!(
        points(&thinned).iter().all(|p| (2..=3).contains(p)),
        "{:?}",
        points(&thinned)
    );
    assert!(points(&full).iter().all(|p| *p > 12), "{:?}", points(&full));
    same_answers(&mut thinned, &mut full, group);

    // A restart starts from a checkpoint of the thinned index, which serves the same.
    for node in NODES {
        thinned.restart(node);
    }
    thinned.tick(60);
    assert!(
        points(&thinned).iter().all(|p| (1..=3).contains(p)),
        "{:?}",
        points(&thinned)
    );
    same_answers(&mut thinned, &mut full, group);
    for node in thinned.nodes.values().chain(full.nodes.values()) {
        node.invariants();
    }
}

/// Entries the log cleaner rewrote on disk leave memory at once (`Node::evict_cleaned`), so a
/// fetch of them reads the cleaned files instead of serving the originals; entries after
/// them stay cached.
#[test]
fn cleaned_entries_leave_memory_and_fetches_of_them_read_the_files() {
    let mut cluster = Cluster::new();
    let group = cluster.one_partition_topic("t");
    let leader = serving_leader(&cluster, group);
    for i in 0..10 {
        produce(&mut cluster, leader, group, 1_000 + i);
    }
    cluster.tick(3);
    let fetch = |cluster: &mut Cluster, offset: i64| {
        let answer = cluster.request(
            leader,
            Request::Fetch(FetchRequest {
                group,
                offset: Offset(offset),
                max_bytes: 1 << 20,
                current_leader_epoch: -1,
                read_committed: false,
            }),
        );
        let Response::Fetch(Ok(data)) = answer else {
            panic!("{answer:?}")
        };
        data
    };
    assert!(fetch(&mut cluster, 0).read.is_none(), "all cached");

    // Entries up to the one holding offset 14 (the fifth batch) were cleaned.
    let disk = cluster.replay(leader);
    let fifth = disk.groups[&group]
        .entries
        .iter()
        .filter(|e| !e.data.is_empty())
        .nth(4)
        .expect("ten batches")
        .index;
    let before = cluster.nodes[&leader]
        .group_status(group)
        .expect("hosted")
        .sparse_index_points;
    let node = cluster.nodes.get_mut(&leader).expect("running");
    assert!(node.evict_cleaned(group, RaftIndex(fifth)) > 0);
    node.invariants();
    assert!(
        cluster.nodes[&leader]
            .group_status(group)
            .expect("hosted")
            .sparse_index_points
            > before,
        "the evicted batches are indexed for reads"
    );
    let old = fetch(&mut cluster, 0);
    let read = old
        .read
        .clone()
        .expect("cleaned records are read from disk");
    let batches = read.batches(cluster.read_disk(leader, &read));
    assert_eq!(offsets(&batches, 0)[..15], (0..15).collect::<Vec<_>>()[..]);
    assert!(
        fetch(&mut cluster, 15).read.is_none(),
        "later entries stay cached"
    );
    // An entry rewritten before this node applied and persisted it leaves memory once it
    // has: the leader's disk is stalled while the eleventh batch is appended.
    cluster.stall_writes(leader);
    cluster.submit(
        leader,
        Request::Produce(oxbow_core::io::ProduceRequest {
            group,
            acks: oxbow_core::io::Acks::All,
            batch: batch_at(RECORDS_PER_BATCH, 2_000),
            timeout_ms: 5_000,
            transactional_id: None,
        }),
    );
    cluster.settle();
    let last = cluster.replay(leader).groups[&group]
        .entries
        .last()
        .expect("appended")
        .index;
    let node = cluster.nodes.get_mut(&leader).expect("running");
    node.evict_cleaned(group, RaftIndex(last));
    cluster.release_writes(leader);
    assert!(
        fetch(&mut cluster, 30).read.is_none(),
        "not applied and persisted yet: still cached"
    );
    cluster.tick(3);
    let pending = fetch(&mut cluster, 30);
    assert!(
        pending.read.is_some(),
        "once applied and persisted, the rewritten entries leave memory"
    );
    // Asking again, or for a command log, frees nothing.
    let node = cluster.nodes.get_mut(&leader).expect("running");
    assert_eq!(node.evict_cleaned(group, RaftIndex(fifth)), 0);
    assert_eq!(node.evict_cleaned(METADATA_GROUP, RaftIndex(u64::MAX)), 0);
}
