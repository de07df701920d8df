//! Tests of a partition's applied state: checkpoints of every version, the sparse index.

use super::*;
use crate::ids::{ProducerEpoch, ProducerId, Sequence};
use crate::producer::{ProducerBatch, SequenceCheck};

/// A checkpoint as version 2 wrote it (the producer table without times) still restores,
/// with its producer, the index its table is as of, and its offset index.
#[test]
fn a_version_2_checkpoint_restores_its_producer_table() {
    let mut w = Writer::default();
    w.u8(2);
    w.i64(0); // log start offset
    w.i64(3); // next offset
    w.i64(0); // snapshot's next offset
    w.u32(10_000); // the table's bound, as version 2 wrote it
    w.u32(1);
    w.i64(77);
    w.i16(0);
    w.u8(1);
    for v in [0i32, 2] {
        w.i32(v); // first and last sequence
    }
    w.i64(0);
    w.i64(2); // base and last offset
    w.u64(2);
    w.u64(1); // entry 2 of term 1
    w.u64(2); // the table is as of entry 2
    w.u32(1);
    w.i64(0);
    w.u64(2);
    w.i64(1_000); // one index point: offset 0 at entry 2
    let state = RecordState::from_checkpoint(
        &w.bytes,
        &Snapshot::default(),
        TimestampType::CreateTime,
        RaftIndex(2),
        usize::MAX,
    );
    assert_eq!(state.next_offset(), Offset(3));
    assert_eq!(state.producers_as_of, RaftIndex(2));
    assert_eq!(state.producers.len(), 1);
    state.producers.invariants();
    let retry = ProducerBatch {
        producer_id: ProducerId(77),
        epoch: ProducerEpoch(0),
        first_sequence: Sequence(0),
        count: 3,
        transactional: false,
        txn_start_ms: None,
    };
    let at = state.producers.next_append_time(5_000, 86_400_000);
    assert!(matches!(
        state.producers.check(&retry, &at, 10),
        Ok(SequenceCheck::Duplicate(m)) if m.base_offset == Offset(0)
    ));
    // And what this version writes reads back the same.
    let store = LogStore::new(vec![1]);
    let again = RecordState::from_checkpoint(
        &state.checkpoint_data(&store, 1 << 20),
        &Snapshot::default(),
        TimestampType::CreateTime,
        RaftIndex(2),
        usize::MAX,
    );
    assert_eq!(again.producers, state.producers);
    assert_eq!(again.producers_as_of, state.producers_as_of);
}

/// A checkpoint as version 3 wrote it (no epoch history) restores with no epoch known;
/// what this version writes keeps the history.
#[test]
fn a_version_3_checkpoint_has_no_epochs_and_this_version_keeps_them() {
    let mut w = Writer::default();
    w.u8(3);
    w.i64(0); // log start offset
    w.i64(3); // next offset
    w.i64(0); // snapshot's next offset
    w.u8(0); // an empty producer table as it was written then: no clock,
    w.u32(0); // no producer, and no transactions
    w.u64(0); // the table is as of entry 0
    w.u32(0); // no index point
    let mut state = RecordState::from_checkpoint(
        &w.bytes,
        &Snapshot::default(),
        TimestampType::CreateTime,
        RaftIndex(2),
        usize::MAX,
    );
    assert_eq!(state.next_offset(), Offset(3));
    assert_eq!(state.epochs, EpochHistory::new());
    state.epochs.on_entry(Term(4), Offset(3));
    let store = LogStore::new(vec![1]);
    let again = RecordState::from_checkpoint(
        &state.checkpoint_data(&store, 1 << 20),
        &Snapshot::default(),
        TimestampType::CreateTime,
        RaftIndex(2),
        usize::MAX,
    );
    assert_eq!(again.epochs.epochs(), &[(Term(4), Offset(3))]);
}

/// A checkpoint's sparse points past the bound are thinned as it is read: pairs merge into
/// their first point with the larger timestamp, an odd one out stays, until the bound
/// holds; every thinning doubles what a span may hold, and the next checkpoint keeps that.
#[test]
fn sparse_points_past_the_bound_merge_in_pairs() {
    let mut w = Writer::default();
    w.u8(CHECKPOINT_VERSION);
    w.i64(0); // log start offset
    w.i64(70); // next offset
    w.i64(0); // snapshot's next offset
    ProducerTable::new().encode(&mut w);
    w.u64(0); // the table is as of entry 0
    let stamps = [5, 3, 9, 1, 2, 8, 4];
    w.u32(7);
    for (i, stamp) in (0u64..).zip(stamps) {
        w.i64(i as i64 * 10);
        w.u64(i + 1);
        w.i64(stamp);
    }
    EpochHistory::new().encode(&mut w);
    w.u8(0); // never thinned
    let read = |bytes: &[u8], max| {
        RecordState::from_checkpoint(
            bytes,
            &Snapshot::default(),
            TimestampType::CreateTime,
            RaftIndex(7),
            max,
        )
    };
    let points = |state: &RecordState| -> Vec<(i64, u64, i64)> {
        (state.offset_index.iter())
            .map(|(o, p)| (o.0, p.index.0, p.max_timestamp))
            .collect()
    };
    let state = read(&w.bytes, 3);
    // Seven become four ((0, 10), (20, 30), (40, 50), 60), then two.
    assert_eq!(points(&state), vec![(0, 1, 9), (40, 5, 8)]);
    assert_eq!((state.sparse_points, state.sparse_shift), (2, 2));
    assert_eq!(state.span_bytes_max(100, 10), 440);
    let untouched = read(&w.bytes, 7);
    assert_eq!(untouched.sparse_points, 7);
    assert_eq!(untouched.span_bytes_max(100, 10), 110);
    let store = LogStore::new(vec![1]);
    let again = read(&state.checkpoint_data(&store, 100), 3);
    assert_eq!(points(&again), points(&state));
    assert_eq!(again.sparse_shift, 2);
}
