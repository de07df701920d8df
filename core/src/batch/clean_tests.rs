//! Tests of the batch cleaner against `kafka-protocol`'s encoder and decoder: what a cleaned
//! batch holds, what stays of its header, the delete horizon, and hostile input.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as Ts,
};
use proptest::prelude::*;

use super::super::{Batch, BatchError, TimestampType};
use crate::ids::{Offset, Term};
use crate::test_support::fixed_seed_config;

const COMPRESSIONS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// One record as a test writes it: key, value (either may be null), headers, and its
/// timestamp's distance from the first record's.
#[derive(Clone, Debug)]
struct Written {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    time_delta: i64,
}

fn written() -> impl Strategy<Value = Written> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..12);
    (
        prop::option::weighted(0.9, bytes()),
        prop::option::weighted(0.7, bytes()),
        prop::collection::vec(("[a-z]{0,4}", prop::option::of(bytes())), 0..3),
        -1_000i64..1_000,
    )
        .prop_map(|(key, value, headers, time_delta)| Written {
            key,
            value,
            headers,
            time_delta,
        })
}

/// The producer fields of a batch: none, idempotent, or transactional.
fn producer() -> impl Strategy<Value = (i64, i16, i32, bool)> {
    prop_oneof![
        Just((-1, -1, -1, false)),
        (0i64..1 << 40, 0i16..5, 0i32..1 << 20, any::<bool>()),
    ]
}

/// The records of a batch, as kafka-protocol encodes them.
fn records(written: &[Written], (pid, epoch, sequence, txn): (i64, i16, i32, bool)) -> Vec<Record> {
    written
        .iter()
        .enumerate()
        .map(|(i, w)| Record {
            transactional: txn,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: Ts::Creation,
            offset: i as i64,
            // Consecutive, or kafka-protocol starts a batch per record.
            sequence: if pid >= 0 {
                sequence + i as i32
            } else {
                i as i32
            },
            timestamp: 1_700_000_000_000 + w.time_delta,
            key: w.key.clone().map(Bytes::from),
            value: w.value.clone().map(Bytes::from),
            headers: w
                .headers
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone().map(Bytes::from)))
                .collect::<IndexMap<_, _>>(),
        })
        .collect()
}

/// A stored batch of `records`: parsed as at produce and stamped at `base`, in term 4.
fn stored(records: &[Record], compression: Compression, log_append: bool, base: i64) -> Batch {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records, &options).expect("encode");
    let timestamps = if log_append {
        TimestampType::LogAppendTime
    } else {
        TimestampType::CreateTime
    };
    Batch::parse(buf.freeze(), 1 << 20, 1 << 20, false)
        .expect("valid")
        .stamp(Offset(base), Term(4), timestamps, 1_800_000_000_000)
}

fn decoded(batch: &Batch) -> Vec<Record> {
    RecordBatchDecoder::decode(&mut batch.bytes().clone())
        .expect("kafka-protocol decodes a cleaned batch")
        .records
}

proptest! {
    #![proptest_config(fixed_seed_config(256))]

    /// A cleaned batch is a stored batch holding exactly the kept records (keys, values,
    /// headers, offsets, timestamps, in order) with the original's offsets, producer fields,
    /// partition leader epoch and attributes; its largest timestamp is Kafka's; a kept
    /// tombstone gives it a delete horizon; cleaning it again keeping everything changes
    /// nothing.
    #[test]
    fn a_cleaned_batch_keeps_exactly_the_kept_records(
        written in prop::collection::vec(written(), 1..12),
        producer in producer(),
        compression in 0usize..5,
        log_append in any::<bool>(),
        keep_seed in any::<u64>(),
        base in 0i64..1 << 40,
    ) {
        let compression = COMPRESSIONS[compression];
        let records = records(&written, producer);
        let original = stored(&records, compression, log_append, base);
        let keep = |i: usize| keep_seed.rotate_left(i as u32 * 7) % 3 != 0;
        let horizon = 1_900_000_000_000;
        let mut seen = Vec::new();
        let cleaned = original
            .clean(1 << 20, horizon, |r| {
                seen.push((r.offset, r.key.map(<[u8]>::to_vec), r.tombstone, r.timestamp));
                keep((r.offset.0 - base) as usize)
            })
            .expect("cleanable");
        // The cleaner showed every record, as it is.
        let shown: Vec<_> = written
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let timestamp = if log_append {
                    original.max_timestamp()
                } else {
                    1_700_000_000_000 + w.time_delta
                };
                (Offset(base + i as i64), w.key.clone(), w.value.is_none(), timestamp)
            })
            .collect();
        prop_assert_eq!(seen, shown);
        let kept: Vec<usize> = (0..written.len()).filter(|&i| keep(i)).collect();
        prop_assert_eq!(cleaned.kept as usize, kept.len());
        prop_assert_eq!(cleaned.dropped as usize, written.len() - kept.len());
        let batch = Batch::trusted(cleaned.batch.bytes().clone());
        prop_assert_eq!(batch.crc_stored(), batch.crc_computed());
        prop_assert_eq!(batch.record_count() as usize, kept.len());
        prop_assert_eq!(
            (batch.base_offset(), batch.last_offset_delta(), batch.partition_leader_epoch()),
            (original.base_offset(), original.last_offset_delta(), original.partition_leader_epoch())
        );
        prop_assert_eq!(
            (batch.producer_id(), batch.producer_epoch(), batch.base_sequence()),
            (original.producer_id(), original.producer_epoch(), original.base_sequence())
        );
        prop_assert_eq!(
            (batch.is_transactional(), batch.is_control(), batch.is_log_append_time()),
            (original.is_transactional(), original.is_control(), original.is_log_append_time())
        );
        let tombstone_kept = kept.iter().any(|&i| written[i].value.is_none());
        prop_assert_eq!(
            cleaned.tombstones as usize,
            kept.iter().filter(|&&i| written[i].value.is_none()).count()
        );
        prop_assert_eq!(cleaned.changed, kept.len() < written.len() || tombstone_kept);
        if !cleaned.changed {
            prop_assert_eq!(batch.bytes(), original.bytes());
        }
        let codec = |b: &Batch| b.attributes() & super::super::ATTRIBUTE_COMPRESSION_MASK;
        if kept.is_empty() {
            prop_assert_eq!(codec(&batch), 0, "an emptied batch has no codec");
            prop_assert_eq!(batch.max_timestamp(), original.max_timestamp());
            prop_assert_eq!(batch.delete_horizon_ms(), None);
        } else {
            prop_assert_eq!(codec(&batch), codec(&original));
            prop_assert_eq!(batch.delete_horizon_ms(), tombstone_kept.then_some(horizon));
            let max = if log_append {
                original.max_timestamp()
            } else {
                kept.iter().map(|&i| 1_700_000_000_000 + written[i].time_delta).max().expect("kept")
            };
            prop_assert_eq!(batch.max_timestamp(), max);
        }
        // kafka-protocol reads the kept records, each as it was written.
        let out = decoded(&batch);
        prop_assert_eq!(out.len(), kept.len());
        for (record, &i) in out.iter().zip(&kept) {
            let want = &records[i];
            prop_assert_eq!(record.offset, base + i as i64);
            prop_assert_eq!(&record.key, &want.key);
            prop_assert_eq!(&record.value, &want.value);
            prop_assert_eq!(&record.headers, &want.headers);
            prop_assert_eq!(record.producer_id, want.producer_id);
            prop_assert_eq!(record.producer_epoch, want.producer_epoch);
            prop_assert_eq!(record.transactional, want.transactional);
            if !log_append {
                prop_assert_eq!(record.timestamp, want.timestamp);
            }
        }
        // The timestamp lookup walks it.
        let first = batch.first_record_at(i64::MIN, 1 << 20).expect("walkable");
        prop_assert_eq!(first.map(|(o, _)| o), kept.first().map(|&i| Offset(base + i as i64)));
        // Cleaned again, keeping everything: the same bytes (the horizon is set once).
        let again = batch.clean(1 << 20, horizon + 1, |_| true).expect("cleanable");
        prop_assert!(!again.changed);
        prop_assert_eq!(again.batch.bytes(), batch.bytes());
    }

    /// Bytes flipped anywhere in a stored batch's records make cleaning an error or a batch
    /// the core accepts, never a panic.
    #[test]
    fn damaged_records_never_panic(
        written in prop::collection::vec(written(), 1..6),
        compression in 0usize..5,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let original = stored(&records(&written, (-1, -1, -1, false)), COMPRESSIONS[compression], false, 7);
        let mut bytes = BytesMut::from(&original.bytes()[..]);
        let body = bytes.len() - super::super::HEADER_LEN;
        for (at, byte) in flips {
            bytes[super::super::HEADER_LEN + at.index(body)] ^= byte | 1;
        }
        let damaged = Batch::trusted(bytes.freeze());
        if let Ok(cleaned) = damaged.clean(1 << 16, 0, |r| r.offset.0 % 2 == 0) {
            let _ = Batch::trusted(cleaned.batch.into_bytes());
        }
    }
}

/// A batch whose records inflate past the limit is refused before any record is shown, as
/// at produce: the cleaner allocates no more than the limit.
#[test]
fn a_batch_inflating_past_the_limit_is_an_error() {
    let big: Vec<Written> = (0..50)
        .map(|i| Written {
            key: Some(vec![i]),
            value: Some(vec![b'z'; 10_000]),
            headers: Vec::new(),
            time_delta: 0,
        })
        .collect();
    for compression in &COMPRESSIONS[1..] {
        let batch = stored(&records(&big, (-1, -1, -1, false)), *compression, false, 0);
        let mut shown = 0;
        assert_eq!(
            batch.clean(100_000, 0, |_| {
                shown += 1;
                false
            }),
            Err(BatchError::DecompressedTooLarge { max: 100_000 }),
            "{compression:?}"
        );
        assert_eq!(shown, 0);
        let cleaned = batch
            .clean(1 << 20, 0, |r| r.offset.0 == 49)
            .expect("within");
        assert_eq!((cleaned.kept, cleaned.dropped), (1, 49));
        assert!(cleaned.batch.bytes().len() < batch.bytes().len());
    }
}

/// KIP-534: a kept tombstone gives the batch a horizon; the tombstones of a batch may go
/// only once the horizon has passed; a batch that keeps only its live records needs none.
#[test]
fn tombstones_are_kept_until_the_delete_horizon() {
    let written: Vec<Written> = [Some(b"v".to_vec()), None]
        .into_iter()
        .map(|value| Written {
            key: Some(b"k".to_vec()),
            value,
            headers: Vec::new(),
            time_delta: 5,
        })
        .collect();
    let batch = stored(
        &records(&written, (-1, -1, -1, false)),
        Compression::Gzip,
        false,
        10,
    );
    assert_eq!(batch.delete_horizon_ms(), None);
    assert!(!batch.tombstones_expired(i64::MAX));
    // The tombstone at 11 is the key's latest: the value at 10 goes, the tombstone stays.
    let first = batch
        .clean(1 << 20, 5_000, |r| r.offset == Offset(11))
        .expect("clean");
    assert_eq!((first.kept, first.dropped), (1, 1));
    let first = first.batch;
    assert_eq!(first.delete_horizon_ms(), Some(5_000));
    assert!(!first.tombstones_expired(4_999));
    assert!(first.tombstones_expired(5_000));
    let record = &decoded(&first)[0];
    assert_eq!((record.offset, record.value.as_ref()), (11, None));
    assert_eq!(
        record.timestamp, 1_700_000_000_005,
        "a rebased timestamp reads the same"
    );
    assert!(record.delete_horizon);
    // Past the horizon the tombstone goes, and the batch is emptied.
    let now = 6_000;
    let second = first
        .clean(1 << 20, now + 5_000, |r| {
            !(r.tombstone && first.tombstones_expired(now))
        })
        .expect("clean");
    assert_eq!(second.batch.record_count(), 0);
    assert_eq!(second.batch.next_offset(), Offset(12));
}

/// A marker the cleaner may remove gets a delete horizon with its record kept (Kafka's
/// `containsMarkerForEmptyTxn`): still read as the same marker, by oxbow and by
/// kafka-protocol's decoder (a control record, its key and value as they were), left as it
/// is by a later cleaning that wants one, and emptied whole when nothing is kept.
#[test]
fn a_removable_marker_gets_a_delete_horizon() {
    let marker = crate::batch::Marker {
        producer_id: crate::ids::ProducerId(9),
        epoch: crate::ids::ProducerEpoch(2),
        commit: true,
        coordinator_epoch: 4,
    }
    .batch(1_700_000_000_000)
    .stamp(Offset(17), Term(3), TimestampType::CreateTime, 0);
    let plain = marker
        .clean(1 << 20, 1_700_000_100_000, |_| true)
        .expect("clean");
    assert!(!plain.changed, "no horizon unless asked");
    let marked = marker
        .clean_marking(1 << 20, 1_700_000_100_000, true, |_| true)
        .expect("clean");
    assert!(marked.changed);
    assert_eq!(marked.batch.delete_horizon_ms(), Some(1_700_000_100_000));
    assert_eq!(marked.batch.marker(), marker.marker());
    let (before, after) = (decoded(&marker), decoded(&marked.batch));
    assert_eq!(after.len(), 1);
    assert!(after[0].control && after[0].transactional);
    assert_eq!(
        (
            &after[0].key,
            &after[0].value,
            after[0].offset,
            after[0].timestamp
        ),
        (&before[0].key, &before[0].value, 17, 1_700_000_000_000)
    );
    let again = marked
        .batch
        .clean_marking(1 << 20, 1_800_000_000_000, true, |_| true)
        .expect("clean");
    assert!(!again.changed, "its horizon stays");
    let emptied = marked.batch.clean(1 << 20, 0, |_| false).expect("clean");
    assert_eq!(emptied.batch.record_count(), 0);
    assert_eq!(emptied.batch.marker(), None);
    assert!(emptied.batch.removed_marker().is_some_and(|m| m.commit));
    assert_eq!(
        (emptied.batch.base_offset(), emptied.batch.next_offset()),
        (Offset(17), Offset(18))
    );
}
