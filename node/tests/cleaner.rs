//! The log cleaner's pass over a partition's segments: a log of many updates over few keys
//! shrinks, reads back with each key's latest record at its own offset and every Raft entry
//! at its index and term, survives a restart (through the rewritten index file) and a crash
//! at any step of the swap (torn files included), and leaves uncommitted entries alone; and
//! on a real cluster, a compacted topic written in transactions (some aborted) is cleaned to
//! each key's latest committed value for read_committed and read_uncommitted consumers alike.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as Ts,
};
use oxbow_core::batch::{Batch, TimestampType};
use oxbow_core::clean::OffsetMap;
use oxbow_core::ids::{GroupId, Offset, Term};
use oxbow_core::io::WalRecord;
use oxbow_core::raft::eraftpb::Entry;
use oxbow_node::storage::{
    is_last_segment, CleanOptions, CleanPass, Disk, SegmentLog, SegmentLogOptions, SimDisk,
};
use rand_chacha::rand_core::SeedableRng;

mod common;
use common::wal::hard_state;

const GROUP: GroupId = GroupId(7);

/// One record: key and value (`None`: a tombstone).
type Update = (u8, Option<u32>);

/// A stored batch of `updates` at `base`, gzip or not.
fn batch(base: i64, updates: &[Update], gzip: bool) -> Batch {
    let records: Vec<Record> = updates
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 5,
            producer_epoch: 0,
            timestamp_type: Ts::Creation,
            offset: i as i64,
            sequence: base as i32 + i as i32,
            timestamp: 1_000 + base + i as i64,
            key: Some(Bytes::from(format!("key-{key}"))),
            value: value.map(|v| Bytes::from(format!("value-{v}-{}", "x".repeat(60)))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: if gzip {
            Compression::Gzip
        } else {
            Compression::None
        },
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
    Batch::parse(buf.freeze(), 1 << 20, 1 << 20, true)
        .expect("valid")
        .stamp(Offset(base), Term(1), TimestampType::CreateTime, 0)
}

/// The entries of a partition's log: a leader no-op at index 1, then `batches` batches of
/// four updates each over six keys (every seventh update a tombstone).
fn entries(batches: u64) -> Vec<Entry> {
    entries_over(batches, 6)
}

/// As [`entries`], over `keys` keys (at most 256).
fn entries_over(batches: u64, keys: u64) -> Vec<Entry> {
    let mut out = vec![Entry {
        index: 1,
        term: 1,
        ..Entry::default()
    }];
    let mut next = 0i64;
    for b in 0..batches {
        let updates: Vec<Update> = (0..4u64)
            .map(|i| {
                let n = b * 4 + i;
                ((n * 5 % keys) as u8, (n % 7 != 6).then_some(n as u32))
            })
            .collect();
        let batch = batch(next, &updates, b % 2 == 1);
        next = batch.next_offset().0;
        out.push(Entry {
            index: b + 2,
            term: 1,
            data: batch.into_bytes(),
            ..Entry::default()
        });
    }
    out
}

fn options() -> SegmentLogOptions {
    SegmentLogOptions {
        segment_bytes_max: 4 << 10,
        ..SegmentLogOptions::default()
    }
}

/// A log on `disk` holding `entries`, committed up to `commit`, synced.
fn written<D: Disk>(disk: D, entries: &[Entry], commit: u64) -> SegmentLog<D> {
    let (mut log, _, _) = SegmentLog::open(disk, options()).expect("open");
    for chunk in entries.chunks(5) {
        log.append(&[WalRecord::Entries {
            group: GROUP,
            entries: chunk.to_vec(),
        }])
        .expect("append");
        log.sync().expect("sync");
    }
    log.append(&[WalRecord::HardState {
        group: GROUP,
        hard_state: hard_state(1, commit),
        must_sync: true,
    }])
    .expect("append");
    log.sync().expect("sync");
    log
}

fn clean_options(now_ms: i64) -> CleanOptions {
    CleanOptions {
        upper: Offset(i64::MAX),
        now_ms,
        delete_retention_ms: 1_000,
        decompressed_max: 1 << 20,
        txns_max: 64,
    }
}

/// Every record of `entries`: offset to (key, value).
fn records(entries: &[Entry]) -> BTreeMap<i64, (Bytes, Option<Bytes>)> {
    let mut out = BTreeMap::new();
    for entry in entries.iter().filter(|e| !e.data.is_empty()) {
        let batch = Batch::trusted(entry.data.clone());
        if batch.record_count() == 0 {
            continue;
        }
        for r in RecordBatchDecoder::decode(&mut entry.data.clone())
            .expect("decode")
            .records
        {
            out.insert(r.offset, (r.key.expect("keyed"), r.value));
        }
    }
    out
}

/// The entries read back are the original's Raft entries (index, term, type, context, the
/// batch's offsets and producer fields), each batch a stored one, and their records a subset
/// of the original's holding each key's latest record (a tombstone may be gone only if
/// `tombstones_may_go`).
fn check_read_back(original: &[Entry], read: &[Entry], tombstones_may_go: bool) {
    assert_eq!(read.len(), original.len(), "every entry stays");
    for (a, b) in original.iter().zip(read) {
        assert_eq!(
            (a.index, a.term, a.entry_type, &a.context),
            (b.index, b.term, b.entry_type, &b.context)
        );
        if a.data.is_empty() {
            assert!(b.data.is_empty());
            continue;
        }
        let (a, b) = (
            Batch::trusted(a.data.clone()),
            Batch::trusted(b.data.clone()),
        );
        assert_eq!(
            (a.base_offset(), a.next_offset()),
            (b.base_offset(), b.next_offset())
        );
        assert_eq!(
            (a.producer_id(), a.producer_epoch(), a.base_sequence()),
            (b.producer_id(), b.producer_epoch(), b.base_sequence())
        );
    }
    let (all, kept) = (records(original), records(read));
    for (offset, record) in &kept {
        assert_eq!(
            all.get(offset),
            Some(record),
            "a kept record is the original's"
        );
    }
    let mut latest = BTreeMap::new();
    for (offset, (key, value)) in &all {
        latest.insert(key.clone(), (*offset, value.clone()));
    }
    for (key, (offset, value)) in latest {
        if value.is_none() && tombstones_may_go {
            continue;
        }
        assert_eq!(
            kept.get(&offset),
            Some(&(key, value)),
            "the latest record of a key stays"
        );
    }
}

fn read_all<D: Disk>(log: &mut SegmentLog<D>, last: u64) -> Vec<Entry> {
    log.read_entries(GROUP, 1, last, u64::MAX).expect("read")
}

#[test]
fn a_pass_shrinks_the_log_and_keeps_each_keys_latest_record() {
    let original = entries(200);
    let last = original.len() as u64;
    let mut log = written(SimDisk::new(), &original, last);
    let before = log.group_bytes()[&GROUP];
    let mut map = OffsetMap::new(1 << 20);
    let report = log
        .clean(GROUP, &mut map, &clean_options(0))
        .expect("clean")
        .expect("something to clean");
    let after = log.group_bytes()[&GROUP];
    assert!(report.segments_rewritten > 3, "{report:?}");
    assert!(after * 2 < before, "{before} bytes became {after}");
    assert_eq!(
        log.clean_offset(GROUP).expect("checkpoint"),
        report.clean_to
    );
    let first_clean_to = report.clean_to;
    let read = read_all(&mut log, last);
    check_read_back(&original, &read, false);
    for from in 1..=last {
        let some = log.read_entries(GROUP, from, from + 2, 0).expect("read");
        assert_eq!(some[0], read[from as usize - 1]);
    }
    // Below where it cleaned, only each key's latest record is left.
    let kept = records(&read);
    let below: Vec<_> = kept.range(..report.clean_to.0).collect();
    let mut keys: Vec<_> = below.iter().map(|(_, (k, _))| k.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        below.len(),
        "one record per key below the clean offset"
    );
    // A restart reads the same, through the index file written again.
    let disk = log.into_disk();
    assert!(disk
        .list()
        .expect("list")
        .iter()
        .any(|n| n.ends_with(".idx")));
    let (mut reopened, state, report) = SegmentLog::open(disk, options()).expect("recover");
    assert!(report.cuts.is_empty());
    assert!(
        report.frames < last / 4,
        "recovery started from the index file: {report:?}"
    );
    assert_eq!(
        state.groups[&GROUP].entries, read,
        "recovery reads the cleaned log"
    );
    assert_eq!(read_all(&mut reopened, last), read);
    // Reads from anywhere start at the sparse index's points, moved with their frames.
    for from in 1..=last {
        let some = reopened
            .read_entries(GROUP, from, from + 2, 0)
            .expect("read");
        assert_eq!(some[0], read[from as usize - 1]);
    }
    // The checkpoint tells when the kept tombstones may go (the pass's time plus
    // delete.retention.ms), for the scheduler to come back then.
    let lags = BTreeMap::from([(GROUP, 0)]);
    let stats = reopened.clean_stats(&lags, 0).expect("stats")[&GROUP];
    assert_eq!(stats.delete_horizon_ms, Some(1_000), "{stats:?}");
    assert_eq!(stats.clean_offset, first_clean_to);
    // Later, past the tombstones' horizon: they go too, and the log shrinks again.
    let later = reopened
        .clean(GROUP, &mut map, &clean_options(10_000))
        .expect("clean")
        .expect("a pass");
    assert!(later.records_dropped > 0, "{later:?}");
    let read = read_all(&mut reopened, last);
    check_read_back(&original, &read, true);
    assert!(records(&read)
        .values()
        .take_while(|_| true)
        .any(|(_, v)| v.is_some()));
    let tombstones_below = records(&read)
        .range(..later.clean_to.0)
        .filter(|(_, (_, v))| v.is_none())
        .count();
    assert_eq!(
        tombstones_below, 0,
        "tombstones past their horizon are gone"
    );
    let stats = reopened.clean_stats(&lags, 10_000).expect("stats")[&GROUP];
    assert_eq!(
        stats.delete_horizon_ms, None,
        "no tombstone left to wait for"
    );
}

#[test]
fn entries_above_the_commit_index_and_the_upper_offset_are_left_alone() {
    let original = entries(120);
    let last = original.len() as u64;
    let commit = 60;
    let mut log = written(SimDisk::new(), &original, commit);
    let mut map = OffsetMap::new(1 << 20);
    let mut options = clean_options(0);
    options.upper = Batch::trusted(original[40].data.clone()).base_offset();
    log.clean(GROUP, &mut map, &options)
        .expect("clean")
        .expect("a pass");
    let read = read_all(&mut log, last);
    check_read_back(&original, &read, false);
    for (a, b) in original.iter().zip(&read).skip(40) {
        assert_eq!(a.data, b.data, "entry {} is past the upper offset", a.index);
    }
    // The upper offset lifted: still nothing past the commit index.
    log.clean(GROUP, &mut map, &clean_options(0))
        .expect("clean")
        .expect("a pass");
    let read = read_all(&mut log, last);
    check_read_back(&original, &read, false);
    for (a, b) in original.iter().zip(&read).skip(commit as usize) {
        assert_eq!(a.data, b.data, "entry {} is not committed", a.index);
    }
    assert!(original
        .iter()
        .zip(&read)
        .take(40)
        .any(|(a, b)| a.data != b.data));
}

#[test]
fn a_small_map_cleans_in_several_passes() {
    let original = entries_over(200, 97);
    let last = original.len() as u64;
    let mut log = written(SimDisk::new(), &original, last);
    // Room for about 40 records: each pass maps about ten batches.
    let mut map = OffsetMap::new(45 * oxbow_core::clean::SLOT_BYTES);
    let mut offsets = Vec::new();
    while let Some(report) = log
        .clean(GROUP, &mut map, &clean_options(0))
        .expect("clean")
    {
        if offsets.last() == Some(&report.clean_to) {
            break;
        }
        offsets.push(report.clean_to);
        check_read_back(&original, &read_all(&mut log, last), false);
        assert!(offsets.len() < 100);
    }
    assert!(offsets.len() > 5, "{offsets:?}");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
}

/// A transactional batch of producer `producer` holding `updates` at `base`.
fn txn_batch(base: i64, producer: i64, updates: &[Update]) -> Batch {
    let mut records = Vec::new();
    for (i, (key, value)) in updates.iter().enumerate() {
        records.push(Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer,
            producer_epoch: 0,
            timestamp_type: Ts::Creation,
            offset: i as i64,
            sequence: base as i32 + i as i32,
            timestamp: 1_000 + base + i as i64,
            key: Some(Bytes::from(format!("key-{key}"))),
            value: value.map(|v| Bytes::from(format!("value-{v}-{}", "x".repeat(60)))),
            headers: Default::default(),
        });
    }
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
    Batch::parse(buf.freeze(), 1 << 20, 1 << 20, true)
        .expect("valid")
        .stamp(Offset(base), Term(1), TimestampType::CreateTime, 0)
}

/// Adds `batch` to `batches`, `next` moved past it.
fn push(batches: &mut Vec<Batch>, next: &mut i64, batch: Batch) {
    *next = batch.next_offset().0;
    batches.push(batch);
}

/// A log of transactions over six keys, two producers interleaved, every third one aborted
/// (a transaction's marker often in a later segment than its first batch), then a
/// transaction still open, and plain batches after it. Gives the entries, each committed
/// (or plain) record's offset, and the open transaction's first offset.
fn txn_entries() -> (Vec<Entry>, Vec<i64>, Offset) {
    let mut datas = Vec::new();
    let mut committed = Vec::new();
    let mut next = 0i64;
    for round in 0..30u32 {
        let commit = round % 3 != 1;
        let producer = 100 + i64::from(round % 2);
        for half in 0..2u32 {
            let updates: Vec<Update> = (0..3u32)
                .map(|i| (((round * 6 + half * 3 + i) % 6) as u8, Some(round * 10 + i)))
                .collect();
            if commit {
                committed.extend(next..next + 3);
            }
            let batch = txn_batch(next, producer, &updates);
            push(&mut datas, &mut next, batch);
        }
        let marker = oxbow_core::batch::Marker {
            producer_id: oxbow_core::ids::ProducerId(producer),
            epoch: oxbow_core::ids::ProducerEpoch(0),
            commit,
            coordinator_epoch: 0,
        }
        .batch(1_000)
        .stamp(Offset(next), Term(1), TimestampType::CreateTime, 0);
        push(&mut datas, &mut next, marker);
    }
    let open = Offset(next);
    let open_batch = txn_batch(next, 100, &[(0, Some(999))]);
    push(&mut datas, &mut next, open_batch);
    // Past the last stable offset, enough for the segments before to be closed.
    for i in 0..60 {
        let plain = batch(next, &[(1, Some(900 + i))], false);
        push(&mut datas, &mut next, plain);
    }
    let mut entries = vec![Entry {
        index: 1,
        term: 1,
        ..Entry::default()
    }];
    for (i, batch) in datas.into_iter().enumerate() {
        entries.push(Entry {
            index: i as u64 + 2,
            term: 1,
            data: batch.into_bytes(),
            ..Entry::default()
        });
    }
    (entries, committed, open)
}

/// Over segments: below the last stable offset (the open transaction's first offset), the
/// records left are each key's latest committed one (aborted ones emptied, superseded
/// committed ones thinned), a COMMIT marker whose transaction lost every record goes past its
/// horizon and an ABORT marker stays; the open transaction and what follows stay as they
/// are, even with the bound lifted, as long as its marker is not in the log.
#[test]
fn transactions_below_the_last_stable_offset_are_cleaned_and_the_open_one_is_not() {
    let (original, committed, open) = txn_entries();
    let last = original.len() as u64;
    let mut log = written(SimDisk::new(), &original, last);
    let before = log.group_bytes()[&GROUP];
    let mut map = OffsetMap::new(1 << 20);
    let mut options = clean_options(0);
    options.upper = open;
    log.clean(GROUP, &mut map, &options)
        .expect("clean")
        .expect("a pass");
    // Past the COMMIT markers' horizon, and with the bound lifted.
    log.clean(GROUP, &mut map, &clean_options(10_000))
        .expect("clean")
        .expect("a pass");
    let read = read_all(&mut log, last);
    assert!(log.group_bytes()[&GROUP] < before);
    assert_eq!(read.len(), original.len(), "every entry stays");
    let markers: Vec<i64> = original
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| Batch::trusted(e.data.clone()))
        .filter(|b| b.is_control())
        .map(|b| b.base_offset().0)
        .collect();
    let data_only = |mut records: BTreeMap<i64, _>| {
        records.retain(|o, _| !markers.contains(o));
        records
    };
    let (all, kept) = (data_only(records(&original)), data_only(records(&read)));
    let mut latest = BTreeMap::new();
    for offset in &committed {
        latest.insert(all[offset].0.clone(), *offset);
    }
    let mut want: Vec<i64> = latest.values().copied().collect();
    want.extend(all.keys().filter(|o| **o >= open.0));
    want.sort_unstable();
    assert_eq!(kept.keys().copied().collect::<Vec<_>>(), want);
    let (mut commits_gone, mut aborts) = (0, 0);
    for (a, b) in original.iter().zip(&read).skip(1) {
        let (a, b) = (
            Batch::trusted(a.data.clone()),
            Batch::trusted(b.data.clone()),
        );
        assert_eq!(
            (a.base_offset(), a.next_offset(), a.producer_id()),
            (b.base_offset(), b.next_offset(), b.producer_id())
        );
        if a.base_offset() >= open {
            assert_eq!(a.bytes(), b.bytes(), "past the last stable offset");
        }
        match a.marker() {
            Some(marker) if marker.commit => {
                let left = kept
                    .range(..a.base_offset().0)
                    .any(|(o, _)| committed.contains(o) && *o >= a.base_offset().0 - 6);
                if b.record_count() == 0 {
                    commits_gone += 1;
                    assert!(!left, "a marker went with a record of its transaction left");
                }
            }
            Some(_) => {
                aborts += 1;
                assert_eq!(a.bytes(), b.bytes(), "an ABORT marker stays");
            }
            None => {}
        }
    }
    assert_eq!(aborts, 10);
    assert!(commits_gone > 10, "{commits_gone} COMMIT markers went");
}

/// A disk that fails every operation after a budget (shared, to be set once the log is
/// open): a crash at that point of the pass.
struct Failing {
    disk: SimDisk,
    budget: Rc<Cell<u64>>,
}

impl Failing {
    fn spend(&mut self) -> io::Result<()> {
        if self.budget.get() == 0 {
            return Err(io::Error::other("crashed"));
        }
        self.budget.set(self.budget.get() - 1);
        Ok(())
    }
}

impl Disk for Failing {
    fn list(&self) -> io::Result<Vec<String>> {
        self.disk.list()
    }
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        self.spend()?;
        self.disk.read(name)
    }
    fn read_at(&mut self, name: &str, position: u64, len: usize) -> io::Result<Vec<u8>> {
        self.spend()?;
        self.disk.read_at(name, position, len)
    }
    fn size(&mut self, name: &str) -> io::Result<u64> {
        self.spend()?;
        self.disk.size(name)
    }
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.spend()?;
        self.disk.append(name, bytes)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.spend()?;
        self.disk.sync(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.spend()?;
        self.disk.truncate(name, len)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.spend()?;
        self.disk.remove(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.spend()?;
        self.disk.rename(from, to)
    }
}

#[test]
fn a_crash_at_any_step_of_a_pass_recovers_a_valid_log() {
    let original = entries(60);
    let last = original.len() as u64;
    let base = written(SimDisk::new(), &original, last).into_disk();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut budget = 0;
    loop {
        let spend = Rc::new(Cell::new(u64::MAX));
        let disk = Failing {
            disk: base.clone(),
            budget: spend.clone(),
        };
        let (mut log, _, _) = SegmentLog::open(disk, options()).expect("open");
        let mut map = OffsetMap::new(1 << 20);
        spend.set(budget);
        let finished = log.clean(GROUP, &mut map, &clean_options(0)).is_ok();
        let mut disk = log.into_disk().disk;
        spend.set(u64::MAX);
        for tear in [false, true] {
            let mut crashed = disk.clone();
            crashed.crash(&mut rng, tear);
            let names = crashed.list().expect("list");
            let (mut recovered, state, report) =
                SegmentLog::open(crashed, options()).expect("a crash mid-pass recovers");
            // A torn crash may cut the active segment's unsynced `Synced` marker; the closed
            // segments a pass rewrites are never cut.
            assert!(
                report
                    .cuts
                    .iter()
                    .all(|(file, _, _)| is_last_segment(&names, file)),
                "{report:?}"
            );
            assert!(
                recovered
                    .disk()
                    .list()
                    .expect("list")
                    .iter()
                    .all(|n| !n.ends_with(".cleaning") && !n.ends_with(".tmp")),
                "half-written files are gone"
            );
            check_read_back(&original, &state.groups[&GROUP].entries, false);
            check_read_back(&original, &read_all(&mut recovered, last), false);
            // A pass after the restart finishes the job.
            recovered
                .clean(GROUP, &mut map, &clean_options(0))
                .expect("clean after recovery");
            check_read_back(&original, &read_all(&mut recovered, last), false);
        }
        disk.crash(&mut rng, false);
        if finished {
            break;
        }
        budget += 1;
        assert!(budget < 10_000);
    }
    assert!(budget > 10, "the pass took {budget} operations");
}

/// On a real directory: the swap renames over a file the log has open, and reads after it
/// see the new file (no handle of the old one is kept), before and after a restart.
#[test]
fn on_a_real_directory_reads_see_the_swapped_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = entries(150);
    let last = original.len() as u64;
    let disk = oxbow_node::storage::FsDisk::open(dir.path()).expect("open dir");
    let mut log = written(disk, &original, last);
    // Reads before the pass open the segments' files.
    assert_eq!(read_all(&mut log, last), original);
    let mut map = OffsetMap::new(1 << 20);
    let report = log
        .clean(GROUP, &mut map, &clean_options(0))
        .expect("clean")
        .expect("a pass");
    assert!(report.bytes_after < report.bytes_before);
    let read = read_all(&mut log, last);
    check_read_back(&original, &read, false);
    drop(log);
    let disk = oxbow_node::storage::FsDisk::open(dir.path()).expect("open dir");
    let (mut reopened, _, report) = SegmentLog::open(disk, options()).expect("recover");
    assert!(report.cuts.is_empty());
    assert_eq!(read_all(&mut reopened, last), read);
}

/// A pass run a step at a time while the log takes writes (and rolls, writing index files)
/// between steps: the log reads back valid, before and after a restart.
#[test]
fn a_pass_in_steps_between_writes_leaves_a_valid_log() {
    let all = entries(240);
    let (first, later) = all.split_at(140);
    let last = all.len() as u64;
    let mut log = written(SimDisk::new(), first, first.len() as u64);
    let mut pass = CleanPass::new(GROUP, clean_options(0), OffsetMap::new(1 << 20));
    let mut more = later.chunks(4);
    let mut steps = 0;
    let report = loop {
        let step = log.clean_step(&mut pass).expect("step");
        steps += 1;
        if let Some(report) = step.finished {
            break report.expect("something was cleanable");
        }
        if let Some(chunk) = more.next() {
            log.append(&[WalRecord::Entries {
                group: GROUP,
                entries: chunk.to_vec(),
            }])
            .expect("append");
            log.sync().expect("sync");
        }
    };
    for chunk in more {
        log.append(&[WalRecord::Entries {
            group: GROUP,
            entries: chunk.to_vec(),
        }])
        .expect("append");
    }
    log.sync().expect("sync");
    assert!(
        steps > 4 && report.segments_rewritten > 2,
        "{steps} steps: {report:?}"
    );
    let read = read_all(&mut log, last);
    check_read_back(&all, &read, false);
    let (mut reopened, state, _) = SegmentLog::open(log.into_disk(), options()).expect("recover");
    assert_eq!(state.groups[&GROUP].entries, read);
    for from in 1..=last {
        let some = reopened.read_entries(GROUP, from, from, 0).expect("read");
        assert_eq!(some[0], read[from as usize - 1]);
    }
}

/// A rewritten segment ends with a `Synced` marker at its end: should it become the group's
/// last segment (its successor lost), damage inside it is still told from a torn tail.
#[test]
fn damage_in_a_rewritten_segment_left_last_is_refused_not_cut() {
    let original = entries(120);
    let mut log = written(SimDisk::new(), &original, original.len() as u64);
    let mut map = OffsetMap::new(1 << 20);
    log.clean(GROUP, &mut map, &clean_options(0))
        .expect("clean")
        .expect("a pass");
    let mut disk = log.into_disk();
    let names = disk.list().expect("list");
    let segments: Vec<&String> = names.iter().filter(|n| n.ends_with(".seg")).collect();
    // Every segment after the first rewritten one goes, with the index files: the rewritten
    // one is last.
    let rewritten = segments[1].clone();
    for name in names
        .iter()
        .filter(|n| n.ends_with(".idx") || (n.ends_with(".seg") && **n > rewritten))
    {
        disk.remove(name).expect("remove");
    }
    let len = disk.len(&rewritten).expect("exists");
    assert!(disk.corrupt(&rewritten, len / 2));
    match SegmentLog::open(disk, options()) {
        Err(error) => assert!(error.is_damage(), "{error}"),
        Ok((_, _, report)) => panic!("damage cut as a torn tail: {report:?}"),
    }
}

/// The bytes of each group's segment files in a node's data directory, by the group's part
/// of their names, and whether any of them holds `needle`.
fn segment_bytes(dir: &std::path::Path, needle: &[u8]) -> BTreeMap<String, (u64, bool)> {
    let mut groups: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    for file in std::fs::read_dir(dir).expect("data dir").flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        let Some((group, _)) = name.strip_suffix(".seg").and_then(|n| n.split_once('-')) else {
            continue;
        };
        let bytes = std::fs::read(file.path()).unwrap_or_default();
        let holds = bytes.windows(needle.len()).any(|w| w == needle);
        let entry = groups.entry(group.to_string()).or_default();
        entry.0 += bytes.len() as u64;
        entry.1 |= holds;
    }
    groups
}

/// Every record of partition 0 of `topic` a consumer at `isolation` reads from the start,
/// (key, value) in offset order: it polls until nothing more comes for two seconds.
fn consume(bootstrap: &str, topic: &str, isolation: &str) -> Vec<(String, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .expect("add");
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < std::time::Duration::from_secs(2) {
        assert!(std::time::Instant::now() < deadline, "reading took 30 s");
        if let Some(Ok(message)) = consumer.poll(std::time::Duration::from_millis(200)) {
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            out.push((text(message.key()), text(message.payload())));
            quiet_since = std::time::Instant::now();
        }
    }
    out
}

/// A compacted topic written by the Rust client's transactional producer over many small
/// segments, a third of its transactions aborted: the log cleaner (every 200 ms here) leaves
/// a read_committed and a read_uncommitted consumer from the start exactly each key's latest
/// committed value (no aborted value, which read_uncommitted would otherwise see, and no
/// superseded one), and the partition's files shrink.
#[test]
fn a_transactional_compacted_topic_is_cleaned_to_each_keys_latest_committed_value() {
    use oxbow_client::{
        Client, ClientConfig, ProducerConfig, ProducerRecord, TransactionalProducer,
    };
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use std::time::{Duration, Instant};
    const TOPIC: &str = "txn-cleaned";
    // A small entry cache: fetches read the cleaned files, not the batches as appended.
    let cluster = common::Cluster::start_with(
        "[log]\nsegment_bytes = 2048\ncleaner_backoff_ms = 200\ncache_bytes = 4096\n",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(3))
        .set("cleanup.policy", "compact")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", "1000")
        // Rolled once a second, so the last transactions reach closed segments too.
        .set("segment.ms", "1000");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let created = runtime
        .block_on(admin.create_topics([&topic], &options))
        .expect("create");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let client = Client::new(ClientConfig::new(&cluster.bootstrap())).expect("client");
    let config = ProducerConfig {
        transactional_id: Some("txn-cleaned".into()),
        ..ProducerConfig::default()
    };
    let producer = TransactionalProducer::new(client, config).expect("producer");
    runtime
        .block_on(producer.init_transactions())
        .expect("init_transactions");
    let mut latest = BTreeMap::new();
    let (mut aborted, mut written) = (Vec::new(), 0usize);
    // 30 transactions of 6 updates over 5 keys, every third aborted; a last one of its own
    // key, so that every earlier entry is below a Raft commit index made durable with it.
    for round in 0..31 {
        let commit = round % 3 != 1;
        let updates: Vec<(String, String)> = if round == 30 {
            vec![("k-end".into(), "tcv-end".into())]
        } else {
            (0..6)
                .map(|i| {
                    let key = format!("k{}", (round * 6 + i) % 5);
                    (key, format!("tcv-{round}-{i}-{}", "x".repeat(1_000)))
                })
                .collect()
        };
        runtime.block_on(async {
            producer.begin().await.expect("begin");
            let mut deliveries = Vec::new();
            for (key, value) in &updates {
                let record = ProducerRecord::new(TOPIC, value.clone())
                    .key(key.clone())
                    .partition(0);
                deliveries.push(producer.send(record).await.expect("send"));
            }
            for delivery in deliveries {
                delivery.await.expect("written");
            }
            if commit {
                producer.commit().await.expect("commit");
            } else {
                producer.abort().await.expect("abort");
            }
        });
        for (key, value) in updates {
            written += value.len();
            if commit {
                latest.insert(key, value);
            } else {
                aborted.push(value);
            }
        }
    }
    let data = cluster.dir.path().join("node-1");
    let ours = |groups: &BTreeMap<String, (u64, bool)>| -> Option<u64> {
        let mut holding = groups.values().filter(|(_, holds)| *holds);
        let (bytes, _) = holding.next()?;
        assert!(
            holding.next().is_none(),
            "one group holds the topic's values"
        );
        Some(*bytes)
    };
    let before = ours(&segment_bytes(&data, b"tcv-")).expect("the partition's segments");

    let want: BTreeMap<String, String> = latest.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let uncommitted = consume(&cluster.bootstrap(), TOPIC, "read_uncommitted");
        let committed = consume(&cluster.bootstrap(), TOPIC, "read_committed");
        let exact = |read: &[(String, String)]| {
            read.len() == want.len() && read.iter().cloned().collect::<BTreeMap<_, _>>() == want
        };
        for (_, value) in &committed {
            assert!(
                !aborted.contains(value),
                "read_committed read an aborted value: {value}"
            );
        }
        let after = ours(&segment_bytes(&data, b"tcv-")).expect("the partition's segments");
        // What is left of each batch is its header, of each value only the latest's bytes.
        if exact(&uncommitted) && exact(&committed) && after < written as u64 / 4 {
            assert!(
                after < before,
                "{after} bytes on disk after cleaning, {before} before"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s, read_uncommitted read {} records ({} aborted), read_committed {}, \
             of {} keys; {after} bytes on disk of {written} bytes of values written",
            uncommitted.len(),
            uncommitted
                .iter()
                .filter(|(_, v)| aborted.contains(v))
                .count(),
            committed.len(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
