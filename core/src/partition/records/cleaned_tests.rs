//! Cleaning is invisible to apply: a log whose batches a cleaner thinned (records dropped,
//! offsets left as gaps, batches emptied) applies to the same partition state as the log it
//! was cleaned from. Applying reads only what cleaning keeps: the entry (index, term,
//! context) and the header's offsets, timestamps and producer fields.

use proptest::prelude::*;

use super::*;
use crate::batch::testing::{batch_with, cleaned};
use crate::batch::TimestampType;
use crate::partition::produce::encode_context;
use crate::test_support::fixed_seed_config;

/// One produced batch: how many records, which producer (none, or an idempotent one), its
/// codec (uncompressed or gzip), and which of its records a cleaner keeps.
#[derive(Clone, Debug)]
struct Produced {
    count: i32,
    producer: Option<u8>,
    gzip: bool,
    keep: Vec<bool>,
}

fn produced() -> impl Strategy<Value = Produced> {
    (1i32..8, prop::option::of(0u8..3), any::<bool>()).prop_flat_map(|(count, producer, gzip)| {
        prop::collection::vec(
            prop_oneof![2 => Just(false), 1 => Just(true)],
            count as usize,
        )
        .prop_map(move |keep| Produced {
            count,
            producer,
            gzip,
            keep,
        })
    })
}

/// The test helper's cleaning: the kept records byte for byte, the header's largest
/// timestamp as it was.
fn by_hand(batch: &Batch, keep: &[bool]) -> Bytes {
    cleaned(batch.bytes(), |r| keep[r])
}

/// The batch cleaner's (`Batch::clean`), as a compacted topic's log cleaner runs it.
fn by_the_cleaner(batch: &Batch, keep: &[bool]) -> Bytes {
    let base = batch.base_offset();
    batch
        .clean(1 << 20, 0, |r| keep[(r.offset.0 - base.0) as usize])
        .expect("cleanable")
        .batch
        .into_bytes()
}

/// The entries of a log of `batches` as its leader wrote them (stamped, each with its append
/// time in the context), uncleaned and cleaned by `clean`, from Raft index 1 in terms 1
/// and 2.
fn logs(
    batches: &[Produced],
    clean: impl Fn(&Batch, &[bool]) -> Bytes,
) -> (Vec<Entry>, Vec<Entry>) {
    let table = ProducerTable::new();
    let mut sequences = [0i32; 3];
    let mut next = Offset(0);
    let (mut original, mut cleaned) = (Vec::new(), Vec::new());
    for (i, produced) in batches.iter().enumerate() {
        let index = i as u64 + 1;
        let term = Term(1 + index / 6);
        let fields = match produced.producer {
            Some(p) => {
                let first = sequences[p as usize];
                sequences[p as usize] += produced.count;
                (1_000 + i64::from(p), 0, first)
            }
            None => (-1, -1, -1),
        };
        let compression = if produced.gzip {
            kafka_protocol::records::Compression::Gzip
        } else {
            kafka_protocol::records::Compression::None
        };
        let batch = Batch::parse(
            batch_with(produced.count, fields, compression),
            1 << 20,
            1 << 20,
            false,
        )
        .expect("valid")
        .stamp(next, term, TimestampType::CreateTime, 0);
        next = batch.next_offset();
        let at = table.next_append_time(10_000 + index as i64, 86_400_000);
        let entry = |data: Bytes| Entry {
            index,
            term: term.0,
            context: encode_context(&at, None),
            data,
            ..Entry::default()
        };
        cleaned.push(entry(clean(&batch, &produced.keep)));
        original.push(entry(batch.into_bytes()));
    }
    (original, cleaned)
}

fn applied(entries: &[Entry]) -> RecordState {
    let mut state = RecordState::new(
        &Snapshot::default(),
        TimestampType::CreateTime,
        RaftIndex(0),
        usize::MAX,
    );
    for entry in entries {
        state.apply(entry);
    }
    state
}

proptest! {
    #![proptest_config(fixed_seed_config(128))]

    /// Hand-cleaned batches (kafka-protocol's, with records dropped, down to none) apply to
    /// the state their originals apply to: offsets, the offset and time index, the producer
    /// table (sequences go by offsets, not records), the epochs.
    #[test]
    fn cleaned_batches_apply_as_their_originals(batches in prop::collection::vec(produced(), 1..14)) {
        let (original, clean) = logs(&batches, by_hand);
        let dropped: usize = batches.iter().map(|b| b.keep.iter().filter(|k| !**k).count()).sum();
        prop_assert_eq!(
            clean.iter().map(|e| Batch::trusted(e.data.clone()).record_count() as usize).sum::<usize>(),
            batches.iter().map(|b| b.count as usize).sum::<usize>() - dropped
        );
        let (a, b) = (applied(&original), applied(&clean));
        prop_assert_eq!(a.next_offset(), b.next_offset());
        prop_assert_eq!(a.log_start_offset(), b.log_start_offset());
        prop_assert_eq!(&a.offset_index, &b.offset_index);
        prop_assert_eq!(&a.producers, &b.producers);
        prop_assert_eq!(&a.epochs, &b.epochs);
        a.producers.invariants();
        b.producers.invariants();
    }

    /// The batch cleaner's batches apply as their originals too: the same offsets, producer
    /// table and epochs, and an offset index at the same offsets and entries (its largest
    /// timestamps are the kept records', as Kafka's cleaner writes them).
    #[test]
    fn batches_of_the_cleaner_apply_as_their_originals(batches in prop::collection::vec(produced(), 1..14)) {
        let (original, clean) = logs(&batches, by_the_cleaner);
        let (a, b) = (applied(&original), applied(&clean));
        prop_assert_eq!(a.next_offset(), b.next_offset());
        prop_assert_eq!(a.log_start_offset(), b.log_start_offset());
        let points = |s: &RecordState| s.offset_index.iter().map(|(o, p)| (*o, p.index)).collect::<Vec<_>>();
        prop_assert_eq!(points(&a), points(&b));
        prop_assert_eq!(&a.producers, &b.producers);
        prop_assert_eq!(&a.epochs, &b.epochs);
        b.producers.invariants();
    }
}

/// A transactional batch of producer 1000 at epoch 0: one record of key `key-0`, its
/// sequence `sequence`.
fn txn_batch(sequence: i32) -> Bytes {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
    let record = Record {
        transactional: true,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: 1_000,
        producer_epoch: 0,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"key-0")),
        value: Some(Bytes::from_static(b"txn")),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &[record], &options).expect("encode");
    buf.freeze()
}

/// A log of a committed transaction whose record a later plain one supersedes, then an
/// aborted one, cleaned by the log cleaner until the COMMIT marker is emptied, applies as
/// the log it was cleaned from: the emptied marker closes its transaction (the last stable
/// offset is the high watermark), and the producer table is the same.
#[test]
fn a_log_with_transactions_applies_as_its_original_once_cleaned() {
    use crate::batch::Marker;
    use crate::clean::{clean_batch, map_batch, OffsetMap, TxnScan};
    use crate::ids::{ProducerEpoch, ProducerId};
    use crate::node::PlantedBugs;
    let table = ProducerTable::new();
    let marker = |commit| {
        Marker {
            producer_id: ProducerId(1_000),
            epoch: ProducerEpoch(0),
            commit,
            coordinator_epoch: 3,
        }
        .batch(1_700_000_000_000)
        .into_bytes()
    };
    // (data, the transaction's start on its coordinator)
    let produced = [
        (txn_batch(0), Some(5)),
        (marker(true), Some(5)),
        (
            batch_with(1, (-1, -1, -1), kafka_protocol::records::Compression::None),
            None,
        ),
        (txn_batch(1), Some(6)),
        (marker(false), Some(6)),
    ];
    let mut next = Offset(0);
    let mut original = Vec::new();
    let mut batches = Vec::new();
    for (i, (data, start)) in produced.into_iter().enumerate() {
        let index = i as u64 + 1;
        let batch = Batch::trusted(data).stamp(next, Term(1), TimestampType::CreateTime, 0);
        next = batch.next_offset();
        let at = table.next_append_time(10_000 + index as i64, 86_400_000);
        original.push(Entry {
            index,
            term: 1,
            context: encode_context(&at, start),
            data: batch.bytes().clone(),
            ..Entry::default()
        });
        batches.push(batch);
    }
    let pass = |batches: &[Batch], now_ms: i64| -> Vec<Batch> {
        let mut scan = TxnScan::new(8);
        batches.iter().for_each(|b| scan.read(b));
        let mut txns = scan.finish();
        let mut map = OffsetMap::new(1 << 10);
        for batch in batches {
            assert!(
                map_batch(&mut map, batch, &txns, 1 << 20, PlantedBugs::default()).expect("map")
            );
        }
        batches
            .iter()
            .map(|b| {
                clean_batch(
                    b,
                    &map,
                    &mut txns,
                    now_ms,
                    100,
                    1 << 20,
                    PlantedBugs::default(),
                )
                .expect("clean")
                .batch
            })
            .collect()
    };
    let once = pass(&batches, 0);
    let twice = pass(&once, 1_000);
    assert_eq!(twice[1].record_count(), 0, "the COMMIT marker is emptied");
    assert_eq!(twice[0].record_count(), 0, "superseded");
    assert_eq!(twice[3].record_count(), 0, "aborted");
    assert_eq!(
        twice[4].bytes(),
        batches[4].bytes(),
        "the ABORT marker stays"
    );
    let cleaned: Vec<Entry> = original
        .iter()
        .zip(&twice)
        .map(|(entry, batch)| Entry {
            data: batch.bytes().clone(),
            ..entry.clone()
        })
        .collect();
    let (a, b) = (applied(&original), applied(&cleaned));
    assert_eq!(a.next_offset(), b.next_offset());
    assert_eq!(a.last_stable_offset(), a.next_offset());
    assert_eq!(
        b.last_stable_offset(),
        b.next_offset(),
        "every transaction closed"
    );
    assert_eq!(&a.producers, &b.producers);
    b.producers.invariants();
}
