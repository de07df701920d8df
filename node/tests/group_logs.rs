//! One log per Raft group: each group's own files, their deletion, removal, retention, and
//! group commits that touch only the groups they wrote to.

use std::collections::BTreeMap;

use bytes::Bytes;
use oxbow_core::ids::GroupId;
use oxbow_core::io::WalRecord;
use oxbow_core::raft::eraftpb::Entry;
use oxbow_node::storage::frame::{self, Frame};
use oxbow_node::storage::{Disk, FsDisk, SegmentLog, SegmentLogOptions, SimDisk};

mod common;
use common::wal::{entry, hard_state, snapshot};

#[test]
fn each_group_has_files_of_its_own_and_compacting_one_deletes_only_its_segments() {
    // Kafka's retention is per partition: one topic's short retention must not depend on
    // another's data sharing its files.
    let options = SegmentLogOptions {
        segment_bytes_max: 300,
        ..SegmentLogOptions::default()
    };
    let (mut log, _, _) = SegmentLog::open(SimDisk::new(), options).expect("open");
    for i in 1..=20 {
        log.append(&[
            WalRecord::Entries {
                group: GroupId(1),
                entries: vec![entry(i, 1, 1, 50)],
            },
            WalRecord::Entries {
                group: GroupId(2),
                entries: vec![entry(i, 1, 2, 50)],
            },
        ])
        .expect("append");
    }
    log.sync().expect("sync");
    let files = |log: &SegmentLog<SimDisk>, group: u64| {
        let prefix = format!("g{group:020}-");
        log.disk()
            .list()
            .expect("list")
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .count()
    };
    let (before1, before2) = (files(&log, 1), files(&log, 2));
    assert!(before1 > 3 && before1 == before2, "{before1} {before2}");
    log.append(&[WalRecord::Snapshot {
        group: GroupId(1),
        snapshot: snapshot(18, 1),
        install: false,
    }])
    .expect("append");
    // A roll of group 1 writes the header that lets its old segments go.
    for i in 21..=30 {
        log.append(&[WalRecord::Entries {
            group: GroupId(1),
            entries: vec![entry(i, 1, 1, 50)],
        }])
        .expect("append");
    }
    log.sync().expect("sync");
    assert!(
        files(&log, 1) < before1,
        "group 1's compacted segments are deleted"
    );
    assert_eq!(files(&log, 2), before2, "group 2 keeps every segment");
    let (_, recovered, report) = SegmentLog::open(log.into_disk(), options).expect("recover");
    assert!(report.cuts.is_empty());
    assert_eq!(
        recovered.groups[&GroupId(1)].snapshot.get_metadata().index,
        18
    );
    assert_eq!(
        recovered.groups[&GroupId(1)]
            .entries
            .first()
            .map(|e| e.index),
        Some(19)
    );
    assert_eq!(recovered.groups[&GroupId(2)].entries.len(), 20);
}

#[test]
fn a_crash_tears_each_group_on_its_own_and_recovery_cuts_each() {
    let options = SegmentLogOptions::default();
    let (mut log, _, _) = SegmentLog::open(SimDisk::new(), options).expect("open");
    let both = |i: u64| {
        [1, 2].map(|g| WalRecord::Entries {
            group: GroupId(g),
            entries: vec![entry(i, 1, g as u8, 40)],
        })
    };
    log.append(&both(1)).expect("append");
    log.sync().expect("sync");
    log.append(&both(2)).expect("append");
    let mut disk = log.into_disk();
    // Half of each group's unsynced frame survives the crash: two torn tails.
    for name in disk.list().expect("list") {
        let len = disk.len(&name).expect("exists");
        let keep = disk.synced_len(&name).expect("exists") + 10;
        assert!(len > keep);
        disk.truncate(&name, keep as u64).expect("tear");
    }
    let (_, recovered, report) = SegmentLog::open(disk, options).expect("recover");
    assert_eq!(report.cuts.len(), 2, "{report:?}");
    for g in [1, 2] {
        assert_eq!(recovered.groups[&GroupId(g)].entries.len(), 1);
    }
}

#[test]
fn removing_a_group_deletes_its_files_and_nothing_else() {
    let options = SegmentLogOptions {
        segment_bytes_max: 200,
        ..SegmentLogOptions::default()
    };
    let (mut log, _, _) = SegmentLog::open(SimDisk::new(), options).expect("open");
    for i in 1..=10 {
        log.append(&[1, 2].map(|g| WalRecord::Entries {
            group: GroupId(g),
            entries: vec![entry(i, 1, 1, 50)],
        }))
        .expect("append");
    }
    log.sync().expect("sync");
    log.append(&[WalRecord::RemoveGroup { group: GroupId(1) }])
        .expect("remove");
    // The files go after the next sync, which makes the deletion's commit durable first.
    let segments = |log: &SegmentLog<SimDisk>| {
        let names = log.disk().list().expect("list");
        names.iter().filter(|n| n.ends_with(".seg")).count()
    };
    assert_eq!(segments(&log), log.segment_count() + 5);
    log.sync().expect("sync");
    let names = log.disk().list().expect("list");
    assert!(
        names.iter().all(|n| n.starts_with(&format!("g{:020}-", 2))),
        "{names:?}"
    );
    let (_, recovered, _) = SegmentLog::open(log.into_disk(), options).expect("recover");
    assert_eq!(
        recovered.groups.keys().copied().collect::<Vec<_>>(),
        vec![GroupId(2)]
    );
}

#[test]
fn a_directory_of_the_old_single_log_layout_is_refused_with_what_to_do() {
    let mut disk = SimDisk::new();
    let mut bytes = Vec::new();
    frame::encode(&Frame::HardState(GroupId(0), hard_state(1, 0)), &mut bytes);
    disk.append("00000000000000000000.seg", &bytes)
        .expect("append");
    let error = SegmentLog::open(disk, SegmentLogOptions::default())
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(message.contains("00000000000000000000.seg"), "{message}");
    assert!(
        message.contains("empty data directories"),
        "says what to do: {message}"
    );
}

#[test]
fn real_files_of_several_groups_sync_together_and_survive_reopen() {
    // The real disk syncs a group commit's files in parallel.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = SegmentLogOptions::default();
    let (mut log, _, _) =
        SegmentLog::open(FsDisk::open(dir.path()).expect("dir"), options).expect("open");
    let records: Vec<WalRecord> = (1..=4)
        .map(|g| WalRecord::Entries {
            group: GroupId(g),
            entries: (1..=3).map(|i| entry(i, 1, g as u8, 64)).collect(),
        })
        .collect();
    log.append(&records).expect("append");
    log.sync().expect("sync");
    drop(log);
    let (_, recovered, report) =
        SegmentLog::open(FsDisk::open(dir.path()).expect("dir"), options).expect("recover");
    assert!(report.cuts.is_empty());
    assert_eq!(report.segments, 4);
    for g in 1..=4 {
        assert_eq!(recovered.groups[&GroupId(g)].entries.len(), 3);
    }
}

#[test]
fn a_snapshot_past_every_entry_lets_every_old_segment_go() {
    // DeleteRecords up to the high watermark: the snapshot covers the active segment too, so
    // the sync rolls, and the sync after it (the new header durable) deletes the rest.
    let options = SegmentLogOptions::default();
    let (mut log, _, _) = SegmentLog::open(SimDisk::new(), options).expect("open");
    log.append(&[WalRecord::Entries {
        group: GroupId(1),
        entries: (1..=10).map(|i| entry(i, 1, 1, 100)).collect(),
    }])
    .expect("append");
    log.sync().expect("sync");
    assert_eq!(log.segment_count(), 1);
    log.append(&[WalRecord::Snapshot {
        group: GroupId(1),
        snapshot: snapshot(10, 1),
        install: false,
    }])
    .expect("append");
    log.sync().expect("sync");
    assert_eq!(log.segment_count(), 2, "rolled");
    log.sync().expect("sync");
    assert_eq!(log.segment_count(), 1, "the covered segment is deleted");
    let (_, recovered, _) = SegmentLog::open(log.into_disk(), options).expect("recover");
    let g = &recovered.groups[&GroupId(1)];
    assert_eq!(g.snapshot.get_metadata().index, 10);
    assert!(g.entries.is_empty());
}

/// An entry holding a RecordBatch v2 header of `count` records from `base`, with records up
/// to `max_timestamp`, padded to `len` bytes (the storage reads only the header).
fn batch_entry(index: u64, base: i64, count: i32, max_timestamp: i64, len: usize) -> Entry {
    let mut data = vec![0u8; len.max(61)];
    data[0..8].copy_from_slice(&base.to_be_bytes());
    data[16] = 2;
    data[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    data[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    Entry {
        index,
        term: 1,
        data: Bytes::from(data),
        ..Entry::default()
    }
}

#[test]
fn retention_keeps_the_active_segment_and_moves_to_a_kept_batch() {
    use oxbow_node::storage::RetentionPolicy;
    let options = SegmentLogOptions {
        segment_bytes_max: 1_000,
        ..SegmentLogOptions::default()
    };
    let (mut log, _, _) = SegmentLog::open(SimDisk::new(), options).expect("open");
    // Twenty batches of ten records, 300 bytes each, written at 1000, 1100, ... ms: about
    // three to a segment.
    for i in 0..20u64 {
        log.append(&[WalRecord::Entries {
            group: GroupId(1),
            entries: vec![batch_entry(
                i + 1,
                i as i64 * 10,
                10,
                1_000 + i as i64 * 100,
                300,
            )],
        }])
        .expect("append");
    }
    let segments = log.segment_count();
    assert!(segments >= 5, "{segments}");
    let mut at = |policy: RetentionPolicy, now_ms: i64| {
        let policies = BTreeMap::from([(GroupId(1), policy)]);
        log.retention(&policies, now_ms)
            .expect("retention")
            .first()
            .map(|(_, offset)| offset.0)
    };
    let forever = RetentionPolicy {
        retention_ms: -1,
        retention_bytes: -1,
        segment_ms: i64::MAX,
        log_end: None,
    };
    assert_eq!(at(forever, i64::MAX), None, "no limits, nothing goes");
    let by_time = |ms| RetentionPolicy {
        retention_ms: ms,
        ..forever
    };
    assert_eq!(at(by_time(10_000), 3_000), None, "nothing is that old");
    // At 1_550 ms with 300 ms retention, batches older than 1_250 ms may go: only segments
    // whose every batch is (the first holds those of 1_000 to 1_200 ms); the log start is the
    // first offset of the oldest segment kept.
    let start = at(by_time(300), 1_550).expect("some segments expired");
    assert!(start == 30, "{start}");
    assert_eq!(
        at(by_time(300), 1_450),
        None,
        "the first segment holds a batch of 1_200 ms"
    );
    // Everything expired: all but the active segment go (whole segments, never the last).
    let start = at(by_time(0), i64::MAX).expect("expired");
    assert!((150..200).contains(&start), "{start}");
    // By size: the log is cut to the newest segments that hold 2 000 bytes at least.
    let start = at(
        RetentionPolicy {
            retention_bytes: 2_000,
            ..forever
        },
        0,
    )
    .expect("over the size");
    let kept_batches = (200 - start) / 10;
    assert!(
        (6..=10).contains(&kept_batches),
        "{kept_batches} batches of 300 bytes kept for 2000"
    );
    // segment.ms: the active segment (first batch at 2_800 ms) rolls once that old, and then
    // time-based retention takes every older segment; the rolled one, the newest holding
    // records, stays until a record follows it (the storage never moves the log start past
    // a batch it has not seen begin).
    let segments = log.segment_count();
    let rolling = RetentionPolicy {
        retention_ms: 500,
        segment_ms: 1_000,
        ..forever
    };
    let policies = BTreeMap::from([(GroupId(1), rolling)]);
    let young = log.retention(&policies, 3_000).expect("retention");
    assert_eq!(log.segment_count(), segments, "not yet old: {young:?}");
    let start = log.retention(&policies, 4_000).expect("retention");
    assert_eq!(
        log.segment_count(),
        segments + 1,
        "the old active segment rolled"
    );
    assert_eq!(start, vec![(GroupId(1), oxbow_core::ids::Offset(180))]);
    // Told the log end by the leader, retention takes the newest batches too once they have
    // expired: the active segment rolls, and the log start moves to the end (Kafka empties a
    // topic whose records all expired).
    let segments = log.segment_count();
    let leading = RetentionPolicy {
        retention_ms: 500,
        log_end: Some(oxbow_core::ids::Offset(200)),
        ..forever
    };
    let policies = BTreeMap::from([(GroupId(1), leading)]);
    let start = log.retention(&policies, 4_000).expect("retention");
    assert_eq!(start, vec![(GroupId(1), oxbow_core::ids::Offset(200))]);
    assert_eq!(log.segment_count(), segments, "nothing left to roll");
    log.append(&[WalRecord::Entries {
        group: GroupId(1),
        entries: vec![batch_entry(21, 200, 10, 3_900, 300)],
    }])
    .expect("append");
    let young = log.retention(&policies, 4_000).expect("retention");
    assert_eq!(log.segment_count(), segments, "a young batch: no roll");
    assert_eq!(
        young,
        vec![(GroupId(1), oxbow_core::ids::Offset(200))],
        "up to the young batch"
    );
    let policies = BTreeMap::from([(
        GroupId(1),
        RetentionPolicy {
            log_end: Some(oxbow_core::ids::Offset(210)),
            ..leading
        },
    )]);
    let start = log.retention(&policies, 4_500).expect("retention");
    assert_eq!(
        log.segment_count(),
        segments + 1,
        "the expired active segment rolled"
    );
    assert_eq!(start, vec![(GroupId(1), oxbow_core::ids::Offset(210))]);
}

#[test]
fn a_group_commit_leaves_idle_groups_alone() {
    // One fsync per file a round wrote to: an idle partition's file is neither synced again
    // nor given another marker (which would fill idle partitions with markers).
    let options = SegmentLogOptions::default();
    let (mut log, _, _) = SegmentLog::open(SimDisk::new(), options).expect("open");
    log.append(&[1, 2].map(|g| WalRecord::Entries {
        group: GroupId(g),
        entries: vec![entry(1, 1, 1, 40)],
    }))
    .expect("append");
    log.sync().expect("sync");
    let idle = format!("g{:020}-{:020}.seg", 2, 0);
    let idle_len = log.disk().len(&idle).expect("exists");
    for i in 2..10 {
        log.append(&[WalRecord::Entries {
            group: GroupId(1),
            entries: vec![entry(i, 1, 1, 40)],
        }])
        .expect("append");
        log.sync().expect("sync");
    }
    assert_eq!(
        log.disk().len(&idle),
        Some(idle_len),
        "nothing written to the idle group"
    );
    let (_, recovered, report) = SegmentLog::open(log.into_disk(), options).expect("recover");
    assert!(report.cuts.is_empty());
    assert_eq!(recovered.groups[&GroupId(1)].entries.len(), 9);
    assert_eq!(recovered.groups[&GroupId(2)].entries.len(), 1);
}

#[test]
fn a_commit_index_alone_is_not_fsynced() {
    // raft-rs needs a new term or vote durable before it acts on it, a commit index not: a
    // group commit that gives a group only that leaves its file unsynced (one fsync less per
    // round for every partition whose followers just acknowledged).
    let options = SegmentLogOptions::default();
    let (mut log, _, _) = SegmentLog::open(SimDisk::new(), options).expect("open");
    let hard_state_of = |group: u64, commit: u64, must_sync: bool| WalRecord::HardState {
        group: GroupId(group),
        hard_state: hard_state(1, commit),
        must_sync,
    };
    log.append(&[
        WalRecord::Entries {
            group: GroupId(1),
            entries: vec![entry(1, 1, 1, 40)],
        },
        hard_state_of(2, 0, true),
    ])
    .expect("append");
    log.sync().expect("sync");
    let file = |g: u64| format!("g{g:020}-{:020}.seg", 0);
    let synced_2 = log.disk().synced_len(&file(2)).expect("exists");
    log.append(&[
        WalRecord::Entries {
            group: GroupId(1),
            entries: vec![entry(2, 1, 1, 40)],
        },
        hard_state_of(2, 1, false),
    ])
    .expect("append");
    log.sync().expect("sync");
    assert_eq!(
        log.disk().synced_len(&file(2)),
        Some(synced_2),
        "group 2 got only a commit index: not fsynced"
    );
    assert_eq!(
        log.disk().synced_len(&file(1)),
        log.disk().len(&file(1)).map(|len| len - 25),
        "group 1 got an entry: fsynced up to its new marker"
    );
    // A hard state that must be durable is.
    log.append(&[hard_state_of(2, 1, true)]).expect("append");
    log.sync().expect("sync");
    assert!(log.disk().synced_len(&file(2)) > Some(synced_2));
}

#[test]
fn entries_read_back_skip_overwritten_frames_and_cross_segments() {
    // The read path for a follower behind the cache and for old fetches: each entry comes
    // from the frame the index names, so a suffix a new leader replaced is never served.
    let options = SegmentLogOptions {
        segment_bytes_max: 700,
        ..SegmentLogOptions::default()
    };
    let (mut log, _, _) = SegmentLog::open(SimDisk::new(), options).expect("open");
    let group = GroupId(4);
    log.append(&[WalRecord::Entries {
        group,
        entries: (1..=30).map(|i| entry(i, 1, i as u8, 60)).collect(),
    }])
    .expect("append");
    // A new leader replaces 21..=30 with its own 21..=25 (term 2, other contents).
    log.append(&[WalRecord::Entries {
        group,
        entries: (21..=25).map(|i| entry(i, 2, 200 + i as u8, 60)).collect(),
    }])
    .expect("append");
    log.sync().expect("sync");
    assert!(log.segment_count() > 2, "several segments");
    let expected = |i: u64| {
        if i <= 20 {
            (1, i as u8)
        } else {
            (2, 200 + i as u8)
        }
    };
    // In pieces of about 150 bytes, as a catching-up follower reads.
    let mut next = 1;
    let mut reads = 0;
    while next <= 25 {
        let entries = log.read_entries(group, next, 25, 150).expect("read");
        assert!(!entries.is_empty(), "at least one entry from {next}");
        assert!(
            entries.len() <= 3,
            "{} entries for 150 bytes",
            entries.len()
        );
        for e in &entries {
            assert_eq!(e.index, next);
            assert_eq!((e.term, e.data[0]), expected(next), "entry {next}");
            next += 1;
        }
        reads += 1;
    }
    assert!(reads >= 9);
    // All at once, and past the end: only what the log holds.
    let all = log.read_entries(group, 1, 40, u64::MAX).expect("read");
    assert_eq!(all.len(), 25);
    assert_eq!(
        log.read_entries(group, 26, 40, 1 << 20).expect("read"),
        vec![]
    );
    assert_eq!(
        log.read_entries(GroupId(9), 1, 5, 1 << 20).expect("read"),
        vec![]
    );
    // And after a restart, from the recovered index.
    let disk = log.into_disk();
    let (mut log, _, _) = SegmentLog::open(disk, options).expect("reopen");
    let all = log.read_entries(group, 1, 25, u64::MAX).expect("read");
    assert!(all.iter().all(|e| (e.term, e.data[0]) == expected(e.index)));
    assert_eq!(all.len(), 25);
}

#[test]
fn recovery_reads_back_only_the_entries_after_the_latest_checkpoint() {
    let options = SegmentLogOptions {
        segment_bytes_max: 600,
        ..SegmentLogOptions::default()
    };
    let (mut log, _, _) = SegmentLog::open(SimDisk::new(), options).expect("open");
    let group = GroupId(5);
    let checkpoint = |index: u64, term: u64| WalRecord::Checkpoint {
        group,
        checkpoint: oxbow_core::io::Checkpoint {
            index,
            term,
            data: Bytes::from(vec![7; 10]),
        },
    };
    log.append(&[WalRecord::Entries {
        group,
        entries: (1..=10).map(|i| entry(i, 1, 1, 40)).collect(),
    }])
    .expect("append");
    log.append(&[WalRecord::Entries {
        group,
        entries: (11..=30).map(|i| entry(i, 2, 2, 40)).collect(),
    }])
    .expect("append");
    log.append(&[checkpoint(12, 2), checkpoint(25, 2)])
        .expect("append");
    log.append(&[WalRecord::Entries {
        group,
        entries: (31..=33).map(|i| entry(i, 2, 3, 40)).collect(),
    }])
    .expect("append");
    log.sync().expect("sync");
    let disk = log.into_disk();
    let (log, state, _) = SegmentLog::open(disk, options).expect("reopen");
    let recovered = &state.groups[&group];
    assert_eq!(recovered.checkpoint.as_ref().map(|c| c.index), Some(25));
    assert_eq!(recovered.terms, vec![(1, 1), (11, 2)]);
    assert_eq!(
        recovered
            .entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        (26..=33).collect::<Vec<_>>()
    );
    // A snapshot past the checkpoint makes it stale: recovery reads every entry after the
    // snapshot again. The segments the snapshot covers go, the checkpoint with them.
    let mut log = log;
    log.append(&[WalRecord::Snapshot {
        group,
        snapshot: snapshot(28, 2),
        install: false,
    }])
    .expect("append");
    log.sync().expect("sync");
    let disk = log.into_disk();
    let (_, state, _) = SegmentLog::open(disk, options).expect("reopen");
    let recovered = &state.groups[&group];
    assert_eq!(recovered.checkpoint, None);
    assert!(recovered.terms.is_empty());
    assert_eq!(
        recovered
            .entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        (29..=33).collect::<Vec<_>>()
    );
}

#[test]
fn recovery_starts_from_the_newest_index_file_and_reads_only_the_segments_after_it() {
    // Restart time must not grow with the data kept: each roll saves the group's structure
    // (terms, sparse index, snapshot, checkpoint) in an index file, and recovery reads only
    // the segments after the newest one. It must recover exactly what a full scan does.
    let options = SegmentLogOptions {
        segment_bytes_max: 2_000,
        ..SegmentLogOptions::default()
    };
    let (mut log, _, _) = SegmentLog::open(SimDisk::new(), options).expect("open");
    let group = GroupId(6);
    let mut term = 1;
    let mut last = 0;
    for round in 0..60u64 {
        // Every fifth round a new leader replaces the last two entries.
        let first = if round % 5 == 4 {
            term += 1;
            last - 1
        } else {
            last + 1
        };
        let entries: Vec<_> = (first..first + 4)
            .map(|i| entry(i, term, (i % 200) as u8, 90))
            .collect();
        last = first + 3;
        log.append(&[WalRecord::Entries { group, entries }])
            .expect("append");
        if round == 30 {
            log.append(&[WalRecord::Snapshot {
                group,
                snapshot: snapshot(40, 1),
                install: false,
            }])
            .expect("compact");
        }
        if round % 7 == 0 {
            log.sync().expect("sync");
        }
    }
    log.sync().expect("sync");
    let disk = log.into_disk();
    let indexes = disk
        .list()
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".idx"))
        .collect::<Vec<_>>();
    assert_eq!(
        indexes.len(),
        1,
        "only the newest index file stays: {indexes:?}"
    );
    let (mut fast, with_index, fast_report) =
        SegmentLog::open(disk.clone(), options).expect("recover");
    let mut scanned = disk.clone();
    scanned.remove(&indexes[0]).expect("remove");
    let (_, full, full_report) = SegmentLog::open(scanned, options).expect("recover");
    assert_eq!(with_index.groups[&group].entries.len() as u64, last - 40);
    assert_eq!(
        format!("{:?}", with_index.groups[&group]),
        format!("{:?}", full.groups[&group])
    );
    assert!(
        fast_report.frames * 3 < full_report.frames,
        "{} frames read against {}",
        fast_report.frames,
        full_report.frames
    );
    // Every entry still reads back, across the segments the index covers.
    let all = fast.read_entries(group, 41, last, u64::MAX).expect("read");
    assert_eq!(all.len() as u64, last - 40);
    assert!(all
        .windows(2)
        .all(|p| p[1].index == p[0].index + 1 && p[0].term <= p[1].term));
    // A torn index file is ignored: recovery reads every segment instead.
    let mut torn = disk.clone();
    let len = torn.len(&indexes[0]).expect("exists");
    torn.truncate(&indexes[0], (len / 2) as u64).expect("tear");
    let (_, again, report) = SegmentLog::open(torn, options).expect("recover");
    assert_eq!(report.frames, full_report.frames);
    assert_eq!(
        format!("{:?}", again.groups[&group]),
        format!("{:?}", full.groups[&group])
    );
}

#[test]
fn a_real_disk_keeps_at_most_its_open_files_and_reopens_the_others() {
    // Open file handles are bounded whatever the number of segments.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut disk = FsDisk::with_open_files_max(dir.path(), 2).expect("open");
    let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        disk.append(name, &[i as u8; 10]).expect("append");
        assert!(disk.open_files() <= 2);
    }
    disk.sync_all(&names[..3]).expect("sync");
    disk.sync_all(&names[3..]).expect("sync");
    for (i, name) in names.iter().enumerate() {
        disk.append(name, &[i as u8; 5]).expect("append again");
        assert_eq!(disk.read(name).expect("read"), vec![i as u8; 15]);
        assert_eq!(disk.size(name).expect("size"), 15);
        assert!(disk.open_files() <= 2);
    }
}
