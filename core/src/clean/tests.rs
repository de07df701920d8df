//! A cleaning pass over logs of batches in memory, against a model of each key's latest
//! record: what stays, the delete horizon, and a map that fills up part-way.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as Ts,
};
use proptest::prelude::*;

use super::*;
use crate::batch::TimestampType;
use crate::ids::{Offset, Term};
use crate::test_support::fixed_seed_config;

/// One record: its key (one of a few) and its value, `None` for a tombstone.
type Update = (u8, Option<u8>);

/// A log of batches holding `updates`, from offset 0, gzip every other batch.
fn log(batches: &[Vec<Update>]) -> Vec<Batch> {
    let mut next = Offset(0);
    batches
        .iter()
        .enumerate()
        .map(|(b, updates)| {
            let records: Vec<Record> = updates
                .iter()
                .enumerate()
                .map(|(i, (key, value))| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: Ts::Creation,
                    offset: i as i64,
                    sequence: i as i32,
                    timestamp: 1_000 + i as i64,
                    key: Some(Bytes::from(vec![b'k', *key])),
                    value: value.map(|v| Bytes::from(vec![v])),
                    headers: Default::default(),
                })
                .collect();
            let compression = if b % 2 == 0 {
                Compression::None
            } else {
                Compression::Gzip
            };
            let mut buf = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression,
            };
            RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
            let batch = Batch::parse(buf.freeze(), 1 << 20, 1 << 20, true)
                .expect("valid")
                .stamp(next, Term(1), TimestampType::CreateTime, 0);
            next = batch.next_offset();
            batch
        })
        .collect()
}

/// Every record of `batches`: offset, key, value.
fn records(batches: &[Batch]) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
    batches
        .iter()
        .filter(|b| b.record_count() > 0)
        .flat_map(|b| {
            RecordBatchDecoder::decode(&mut b.bytes().clone())
                .expect("decode")
                .records
        })
        .map(|r| (r.offset, r.key, r.value))
        .collect()
}

/// One pass at `now_ms` with a map of `map_bytes`: the cleaned log and where the mapped part
/// ended (the offset after its last mapped batch).
fn pass(batches: &[Batch], map_bytes: usize, now_ms: i64) -> (Vec<Batch>, Offset) {
    let mut scan = TxnScan::new(64);
    for batch in batches {
        scan.read(batch);
    }
    let mut txns = scan.finish();
    let mut map = OffsetMap::new(map_bytes);
    let mut end = Offset(0);
    for batch in batches {
        if !map_batch(&mut map, batch, &txns, 1 << 20, PlantedBugs::default()).expect("mappable") {
            break;
        }
        end = batch.next_offset();
        map.invariants();
    }
    let cleaned = batches
        .iter()
        .map(|batch| {
            if batch.next_offset() > end {
                return batch.clone();
            }
            clean_batch(
                batch,
                &map,
                &mut txns,
                now_ms,
                100,
                1 << 20,
                PlantedBugs::default(),
            )
            .expect("cleanable")
            .batch
        })
        .collect();
    (cleaned, end)
}

fn updates() -> impl Strategy<Value = Vec<Vec<Update>>> {
    let update = (0u8..5, prop::option::weighted(0.8, any::<u8>()));
    prop::collection::vec(prop::collection::vec(update, 1..6), 1..20)
}

proptest! {
    #![proptest_config(fixed_seed_config(128))]

    /// After a pass with room for everything, each key's latest record is there (a tombstone
    /// too, until its horizon), at its own offset, and nothing else below the end; every
    /// batch keeps its offsets. A pass past the horizon takes the tombstones away.
    #[test]
    fn a_pass_keeps_each_keys_latest_record(batches in updates()) {
        let original = log(&batches);
        let (cleaned, end) = pass(&original, 1 << 20, 0);
        prop_assert_eq!(end, original.last().expect("one").next_offset());
        for (a, b) in original.iter().zip(&cleaned) {
            prop_assert_eq!((a.base_offset(), a.next_offset()), (b.base_offset(), b.next_offset()));
        }
        let mut latest = BTreeMap::new();
        for record in records(&original) {
            latest.insert(record.1.clone(), record);
        }
        let want: Vec<_> = latest.values().cloned().collect();
        let mut got = records(&cleaned);
        got.sort_by(|a, b| a.1.cmp(&b.1));
        prop_assert_eq!(&got, &want);
        // Again, past the horizon: only live keys.
        let (again, _) = pass(&cleaned, 1 << 20, 1_000);
        let live: Vec<_> = want.iter().filter(|r| r.2.is_some()).cloned().collect();
        let mut got = records(&again);
        got.sort_by(|a, b| a.1.cmp(&b.1));
        prop_assert_eq!(got, live);
    }

    /// A map too small for the dirty range maps a prefix of whole batches; the batches past
    /// it stay as they are, and no key's latest record anywhere in the log is dropped.
    #[test]
    fn a_full_map_cleans_only_what_it_mapped(batches in updates(), slots in 3usize..12) {
        let original = log(&batches);
        let (cleaned, end) = pass(&original, slots * SLOT_BYTES, 0);
        for (a, b) in original.iter().zip(&cleaned) {
            if a.next_offset() > end {
                prop_assert_eq!(a.bytes(), b.bytes());
            }
        }
        let mut latest = BTreeMap::new();
        for record in records(&original) {
            latest.insert(record.1.clone(), record);
        }
        let kept = records(&cleaned);
        for record in latest.values() {
            prop_assert!(kept.contains(record), "{:?} dropped", record);
        }
    }
}

/// A producer's transactional batch of `updates` at `base`.
fn txn_batch(base: i64, producer: i64, updates: &[Update]) -> Batch {
    let records: Vec<Record> = updates
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer,
            producer_epoch: 0,
            timestamp_type: Ts::Creation,
            offset: i as i64,
            sequence: base as i32 + i as i32,
            timestamp: 1_000 + i as i64,
            key: Some(Bytes::from(vec![b'k', *key])),
            value: value.map(|v| Bytes::from(vec![v])),
            headers: Default::default(),
        })
        .collect();
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

/// A plain batch of `updates` at `base`.
fn plain_batch(base: i64, updates: &[Update]) -> Batch {
    let batch = log(&[updates.to_vec()]).remove(0);
    Batch::trusted(batch.into_bytes()).stamp(Offset(base), Term(1), TimestampType::CreateTime, 0)
}

/// A producer's transaction marker at `base`.
fn marker(base: i64, producer: i64, commit: bool) -> Batch {
    crate::batch::Marker {
        producer_id: crate::ids::ProducerId(producer),
        epoch: crate::ids::ProducerEpoch(0),
        commit,
        coordinator_epoch: 0,
    }
    .batch(1_000)
    .stamp(Offset(base), Term(1), TimestampType::CreateTime, 0)
}

/// Every data record left: (offset, key, value), keys as their byte after `k`.
fn data(batches: &[Batch]) -> Vec<(i64, u8, Option<u8>)> {
    let plain: Vec<Batch> = batches
        .iter()
        .filter(|b| !b.is_control())
        .cloned()
        .collect();
    records(&plain)
        .into_iter()
        .map(|(offset, key, value)| {
            let key = key.expect("keyed")[1];
            (offset, key, value.map(|v| v[0]))
        })
        .collect()
}

/// A committed transaction's records are mapped and thinned as plain ones: a later plain or
/// transactional value of a key supersedes them, and they supersede earlier ones.
#[test]
fn committed_transactional_records_are_thinned_like_plain_ones() {
    let log = [
        plain_batch(0, &[(1, Some(1))]),
        txn_batch(1, 7, &[(1, Some(2)), (2, Some(3))]),
        marker(3, 7, true),
        plain_batch(4, &[(2, Some(4))]),
        txn_batch(5, 8, &[(1, Some(5))]),
        marker(6, 8, true),
    ];
    let (cleaned, end) = pass(&log, 1 << 20, 0);
    assert_eq!(end, Offset(7), "every batch is mapped");
    assert_eq!(data(&cleaned), vec![(4, 2, Some(4)), (5, 1, Some(5))]);
    for (a, b) in log.iter().zip(&cleaned) {
        assert_eq!(
            (a.base_offset(), a.next_offset(), a.producer_id()),
            (b.base_offset(), b.next_offset(), b.producer_id())
        );
    }
    // The first transaction has no record left: its marker stays, with a horizon; the second
    // keeps its record, and its marker as it was.
    assert_eq!(cleaned[2].marker(), log[2].marker());
    assert_eq!(cleaned[2].delete_horizon_ms(), Some(100));
    assert_eq!(cleaned[5].bytes(), log[5].bytes());
}

/// An aborted transaction's records go (their batch emptied, its offsets and producer kept),
/// are never mapped, so they hide no committed value before or after them, and its ABORT
/// marker stays, even past any horizon.
#[test]
fn aborted_records_go_and_never_hide_a_committed_value() {
    let log = [
        plain_batch(0, &[(1, Some(1))]),
        txn_batch(1, 7, &[(1, Some(2)), (2, Some(2))]),
        txn_batch(3, 8, &[(2, Some(3))]),
        marker(4, 7, false),
        marker(5, 8, true),
        txn_batch(6, 8, &[(3, Some(4))]),
        marker(7, 8, false),
        plain_batch(8, &[(4, Some(5))]),
    ];
    let (cleaned, end) = pass(&log, 1 << 20, 0);
    assert_eq!(end, Offset(9));
    assert_eq!(
        data(&cleaned),
        vec![(0, 1, Some(1)), (3, 2, Some(3)), (8, 4, Some(5))]
    );
    for at in [1, 5] {
        assert_eq!(cleaned[at].record_count(), 0, "emptied");
        assert_eq!(
            (cleaned[at].base_offset(), cleaned[at].next_offset()),
            (log[at].base_offset(), log[at].next_offset())
        );
        assert!(cleaned[at].is_transactional());
        assert_eq!(cleaned[at].producer_id(), log[at].producer_id());
    }
    let (again, _) = pass(&cleaned, 1 << 20, 1_000_000);
    assert_eq!(data(&again), data(&cleaned));
    for at in [3, 6] {
        assert_eq!(again[at].bytes(), log[at].bytes(), "an ABORT marker stays");
    }
}

/// A COMMIT marker stays while a record of its transaction is left; once none is, the pass
/// that finds it so gives it a delete horizon, and the first pass past it empties it (its
/// entry and header stay, and apply it as the COMMIT it was).
#[test]
fn a_commit_marker_goes_only_after_its_transaction_and_its_horizon() {
    let log = [
        txn_batch(0, 7, &[(1, Some(1))]),
        marker(1, 7, true),
        txn_batch(2, 7, &[(2, Some(2))]),
        marker(3, 7, true),
    ];
    let (cleaned, _) = pass(&log, 1 << 20, 0);
    assert_eq!(cleaned, log.to_vec(), "every record is its key's latest");
    let (cleaned, _) = pass(&cleaned, 1 << 20, 1_000_000);
    assert_eq!(cleaned, log.to_vec(), "nothing has a horizon to pass");
    // A later value of key 1 supersedes the first transaction's record.
    let mut log = cleaned;
    log.push(plain_batch(4, &[(1, Some(3))]));
    let (first, _) = pass(&log, 1 << 20, 0);
    assert_eq!(first[0].record_count(), 0);
    assert_eq!(first[1].marker(), log[1].marker(), "kept until its horizon");
    assert_eq!(first[1].delete_horizon_ms(), Some(100));
    assert_eq!(first[3].bytes(), log[3].bytes(), "its record is left");
    let (before, _) = pass(&first, 1 << 20, 99);
    assert_eq!(before, first, "before the horizon");
    let (after, _) = pass(&first, 1 << 20, 100);
    assert_eq!(after[1].record_count(), 0, "emptied at its horizon");
    assert_eq!(
        (after[1].base_offset(), after[1].next_offset()),
        (Offset(1), Offset(2))
    );
    assert_eq!(after[1].removed_marker(), {
        let mut m = log[1].marker().expect("a marker");
        m.coordinator_epoch = -1;
        Some(m)
    });
    assert_eq!(after[3].bytes(), log[3].bytes());
    assert_eq!(data(&after), vec![(2, 2, Some(2)), (4, 1, Some(3))]);
}

/// A transaction whose marker the pass did not read (open, or past the log read) is
/// undecided: the mapped range ends before its first batch, which stays whole; so do the
/// batches of a transaction past the pass's bound.
#[test]
fn an_undecided_transaction_is_neither_mapped_nor_thinned() {
    let log = [
        plain_batch(0, &[(1, Some(1))]),
        plain_batch(1, &[(1, Some(2))]),
        txn_batch(2, 7, &[(1, Some(3))]),
        plain_batch(3, &[(1, Some(4))]),
    ];
    let (cleaned, end) = pass(&log, 1 << 20, 0);
    assert_eq!(end, Offset(2), "mapping ends before the open transaction");
    assert_eq!(
        data(&cleaned),
        vec![(1, 1, Some(2)), (2, 1, Some(3)), (3, 1, Some(4))]
    );
    assert_eq!(cleaned[2].bytes(), log[2].bytes());

    // Two aborted transactions, room for one: the second is undecided from its first batch.
    let log = [
        txn_batch(0, 7, &[(1, Some(1))]),
        marker(1, 7, false),
        txn_batch(2, 8, &[(2, Some(2))]),
        marker(3, 8, false),
        plain_batch(4, &[(3, Some(3))]),
    ];
    let mut scan = TxnScan::new(1);
    for batch in &log {
        scan.read(batch);
        scan.invariants();
    }
    let txns = scan.finish();
    assert_eq!(txns.fate(&log[0]), Fate::Aborted);
    assert_eq!(txns.fate(&log[2]), Fate::Undecided);
    assert_eq!(txns.fate(&log[4]), Fate::Plain);
    let mut map = OffsetMap::new(1 << 10);
    let planted = PlantedBugs::default();
    assert!(map_batch(&mut map, &log[0], &txns, 1 << 20, planted).expect("mapped"));
    assert!(!map_batch(&mut map, &log[2], &txns, 1 << 20, planted).expect("mapped"));
    assert!(map.is_empty(), "nothing of either is mapped");
}

/// One step of a random log: a plain batch, a transactional batch of one of three
/// producers, or the marker ending that producer's transaction.
#[derive(Clone, Debug)]
enum Step {
    Plain(Vec<Update>),
    Txn(u8, Vec<Update>),
    End(u8, bool),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let update = (0u8..5, prop::option::weighted(0.8, any::<u8>()));
    let updates = prop::collection::vec(update, 1..4);
    let step = prop_oneof![
        updates.clone().prop_map(Step::Plain),
        (0u8..3, updates).prop_map(|(p, u)| Step::Txn(p, u)),
        (0u8..3, any::<bool>()).prop_map(|(p, c)| Step::End(p, c)),
    ];
    prop::collection::vec(step, 1..30)
}

/// The log of `steps` (a marker only for a producer with a transaction open, every one
/// closed at the end by a COMMIT), with each data record's transaction outcome: offset to
/// whether it is committed (or plain), and each COMMIT marker's offset with its records'.
#[allow(clippy::type_complexity)]
fn txn_log(steps: &[Step]) -> (Vec<Batch>, BTreeMap<i64, bool>, Vec<(i64, Vec<i64>)>) {
    // Every transaction left open is committed at the end.
    let mut all = steps.to_vec();
    all.extend((0..3).map(|p| Step::End(p, true)));
    let mut batches = Vec::new();
    let mut committed = BTreeMap::new();
    let mut markers = Vec::new();
    let mut open: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
    let mut next = 0i64;
    for step in &all {
        match step {
            Step::Plain(updates) => {
                for i in 0..updates.len() as i64 {
                    committed.insert(next + i, true);
                }
                batches.push(plain_batch(next, updates));
                next += updates.len() as i64;
            }
            Step::Txn(producer, updates) => {
                let offsets = open.entry(*producer).or_default();
                offsets.extend(next..next + updates.len() as i64);
                batches.push(txn_batch(next, 100 + i64::from(*producer), updates));
                next += updates.len() as i64;
            }
            Step::End(producer, commit) => {
                let Some(offsets) = open.remove(producer) else {
                    continue;
                };
                for offset in &offsets {
                    committed.insert(*offset, *commit);
                }
                batches.push(marker(next, 100 + i64::from(*producer), *commit));
                if *commit {
                    markers.push((next, offsets));
                }
                next += 1;
            }
        }
    }
    (batches, committed, markers)
}

proptest! {
    #![proptest_config(fixed_seed_config(128))]

    /// Against a model of read_committed: after a pass, the records left are each key's
    /// latest plain or committed record, no aborted record is, every batch keeps its offsets
    /// and every marker its record; after passes past the horizons, a COMMIT marker is
    /// emptied exactly when no record of its transaction is left, and every ABORT marker
    /// stays.
    #[test]
    fn a_pass_keeps_each_keys_latest_committed_record(steps in steps()) {
        let (original, committed, commits) = txn_log(&steps);
        prop_assume!(!original.is_empty());
        let (cleaned, end) = pass(&original, 1 << 20, 0);
        prop_assert_eq!(end, original.last().expect("one").next_offset());
        let mut latest = BTreeMap::new();
        for record in data(&original) {
            if committed[&record.0] {
                latest.insert(record.1, record);
            }
        }
        let want: Vec<_> = latest.values().copied().collect();
        let mut got = data(&cleaned);
        got.sort_by_key(|r| r.1);
        prop_assert_eq!(&got, &want);
        for (a, b) in original.iter().zip(&cleaned) {
            prop_assert_eq!((a.base_offset(), a.next_offset()), (b.base_offset(), b.next_offset()));
            prop_assert_eq!(a.marker(), b.marker());
        }
        // Past the tombstones' horizon (100), then past the horizon the markers of the
        // transactions that lost their last record then got (200).
        let (again, _) = pass(&cleaned, 1 << 20, 100);
        let (again, _) = pass(&again, 1 << 20, 200);
        let left: Vec<i64> = data(&again).iter().map(|r| r.0).collect();
        for (a, b) in original.iter().zip(&again) {
            let Some(marker) = a.marker() else { continue };
            if !marker.commit {
                prop_assert_eq!(a.bytes(), b.bytes());
                continue;
            }
            let (_, offsets) = commits.iter().find(|(at, _)| *at == a.base_offset().0).expect("a commit");
            let has_records = offsets.iter().any(|o| left.contains(o));
            prop_assert_eq!(b.record_count() == 0, !has_records, "marker at {}", a.base_offset().0);
        }
    }
}
