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
    let mut map = OffsetMap::new(map_bytes);
    let mut end = Offset(0);
    for batch in batches {
        if !map_batch(&mut map, batch, 1 << 20, PlantedBugs::default()).expect("mappable") {
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
            clean_batch(batch, &map, now_ms, 100, 1 << 20, PlantedBugs::default())
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

/// Control and transactional batches are neither mapped nor thinned: a marker stays, and a
/// transactional record neither hides the plain record of its key before it nor goes.
#[test]
fn markers_and_transactions_stay_whole() {
    use crate::ids::{ProducerEpoch, ProducerId};
    let plain = log(&[vec![(1, Some(1))]]).remove(0);
    let txn_records: Vec<Record> = (0..2)
        .map(|i| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: Ts::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: 1_000,
            key: Some(Bytes::from_static(b"k\x01")),
            value: Some(Bytes::from_static(b"t")),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &txn_records, &options).expect("encode");
    let txn = Batch::parse(buf.freeze(), 1 << 20, 1 << 20, true)
        .expect("valid")
        .stamp(Offset(1), Term(1), TimestampType::CreateTime, 0);
    let marker = crate::batch::Marker {
        producer_id: ProducerId(7),
        epoch: ProducerEpoch(0),
        commit: true,
        coordinator_epoch: 0,
    }
    .batch(1_000)
    .stamp(Offset(3), Term(1), TimestampType::CreateTime, 0);
    let log = [plain, txn, marker];
    let mut map = OffsetMap::new(1 << 10);
    for batch in &log {
        assert!(map_batch(&mut map, batch, 1 << 20, PlantedBugs::default()).expect("mappable"));
    }
    assert_eq!(
        map.get(b"k\x01"),
        Some(Offset(0)),
        "only the plain record is mapped"
    );
    for batch in &log {
        let cleaned =
            clean_batch(batch, &map, 0, 0, 1 << 20, PlantedBugs::default()).expect("clean");
        assert!(!cleaned.changed);
        assert_eq!(cleaned.batch.bytes(), batch.bytes());
    }
}
