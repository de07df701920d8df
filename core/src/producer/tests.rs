//! The producer table's tests: Kafka's sequence rules, expiry by the log's clock, the limit,
//! transactions and the encodings.

use super::*;
use crate::batch::Marker;
use crate::test_support::fixed_seed_config;
use proptest::prelude::*;

const DAY: u64 = 86_400_000;

fn b(pid: i64, epoch: i16, seq: i32, count: i32) -> ProducerBatch {
    ProducerBatch {
        producer_id: ProducerId(pid),
        epoch: ProducerEpoch(epoch),
        first_sequence: Sequence(seq),
        count,
        transactional: false,
        txn_start_ms: None,
    }
}

fn at(time_ms: i64) -> AppendTime {
    AppendTime {
        time_ms,
        expiration_ms: DAY,
    }
}

/// Applies a stamped entry holding `batch`, as every replica does.
fn apply(t: &mut ProducerTable, time_ms: i64, batch: &ProducerBatch, offset: i64, index: u64) {
    t.advance(&at(time_ms));
    t.record(batch, Offset(offset), RaftIndex(index), Term(1));
    t.invariants();
}

#[test]
fn transactions_open_with_their_first_batch_and_close_with_their_own_marker() {
    let txn = |epoch: i16, seq: i32, start: i64| ProducerBatch {
        transactional: true,
        txn_start_ms: Some(start),
        ..b(9, epoch, seq, 1)
    };
    let marker = |epoch: i16, commit: bool| Marker {
        producer_id: ProducerId(9),
        epoch: ProducerEpoch(epoch),
        commit,
        coordinator_epoch: 1,
    };
    let mut t = ProducerTable::new();
    t.advance(&at(1_000));
    t.record(&txn(0, 0, 100), Offset(10), RaftIndex(1), Term(1));
    t.record(&txn(0, 1, 100), Offset(12), RaftIndex(2), Term(1));
    assert_eq!(t.first_open_offset(), Some(Offset(10)));
    assert_eq!(
        t.open_transaction(ProducerId(9), ProducerEpoch(0)),
        Some(100)
    );
    // DescribeProducers shows it, with its latest batch and the log's time.
    let active = ActiveProducer {
        producer_id: ProducerId(9),
        epoch: ProducerEpoch(0),
        last_sequence: Some(Sequence(1)),
        last_write_ms: Some(1_000),
        open_txn_first_offset: Some(Offset(10)),
    };
    assert_eq!(t.active().collect::<Vec<_>>(), [active]);
    // A late marker of an earlier transaction closes nothing.
    t.record_marker(&marker(0, false), Offset(13), 99);
    assert_eq!(t.first_open_offset(), Some(Offset(10)));
    // Its own ABORT closes it, and read_committed hears of it where it may meet it.
    t.record_marker(&marker(0, false), Offset(14), 100);
    assert_eq!(t.first_open_offset(), None);
    assert_eq!(t.aborted_between(Offset(0), Offset(100)).count(), 1);
    assert_eq!(t.aborted_between(Offset(15), Offset(100)).count(), 0);
    assert_eq!(t.aborted_between(Offset(0), Offset(10)).count(), 0);
    t.invariants();
    let mut w = Writer::default();
    t.encode(&mut w);
    let decoded = ProducerTable::decode(&mut Reader::new(&w.bytes)).expect("decodes");
    assert_eq!(decoded, t);

    // A marker of a later epoch (an abort that fenced the instance) moves the producer to
    // it: the fenced epoch is stale, and the new one starts at sequence 0.
    t.record(&txn(0, 2, 200), Offset(15), RaftIndex(3), Term(1));
    t.record_marker(&marker(1, false), Offset(16), 200);
    let fenced = ActiveProducer {
        epoch: ProducerEpoch(1),
        last_sequence: None,
        open_txn_first_offset: None,
        ..active
    };
    assert_eq!(t.active().collect::<Vec<_>>(), [fenced]);
    assert_eq!(
        t.check(&txn(0, 3, 200), &at(1_000), 10),
        Err(SequenceError::StaleEpoch {
            current: ProducerEpoch(1)
        })
    );
    assert_eq!(
        t.check(&txn(1, 0, 300), &at(1_000), 10),
        Ok(SequenceCheck::Append)
    );
    assert!(matches!(
        t.check(&txn(1, 5, 300), &at(1_000), 10),
        Err(SequenceError::OutOfOrder { .. })
    ));
    // The log start passing a marker forgets that aborted transaction.
    assert_eq!(t.aborted_between(Offset(0), Offset(100)).count(), 2);
    t.trim_aborted(Offset(15));
    assert_eq!(t.aborted_between(Offset(0), Offset(100)).count(), 1);
    t.invariants();
    let mut w = Writer::default();
    t.encode(&mut w);
    let decoded = ProducerTable::decode(&mut Reader::new(&w.bytes)).expect("decodes");
    assert_eq!(decoded, t);
}

#[test]
fn kafka_sequence_rules() {
    let mut t = ProducerTable::new();
    let now = at(1_000);
    assert_eq!(
        t.check(&b(1, 0, 42, 3), &now, 10),
        Ok(SequenceCheck::Append),
        "unknown producer: any sequence"
    );
    apply(&mut t, 1_000, &b(1, 0, 0, 3), 0, 1);
    assert_eq!(t.check(&b(1, 0, 3, 2), &now, 10), Ok(SequenceCheck::Append));
    assert!(
        matches!(t.check(&b(1, 0, 0, 3), &now, 10), Ok(SequenceCheck::Duplicate(m)) if m.base_offset == Offset(0))
    );
    assert_eq!(
        t.check(&b(1, 0, 5, 1), &now, 10),
        Err(SequenceError::OutOfOrder {
            expected: Sequence(3),
            received: Sequence(5)
        })
    );
    assert_eq!(
        t.check(&b(1, 1, 0, 1), &now, 10),
        Ok(SequenceCheck::Append),
        "a new epoch starts at 0"
    );
    assert!(matches!(
        t.check(&b(1, 1, 3, 1), &now, 10),
        Err(SequenceError::OutOfOrder { .. })
    ));
    apply(&mut t, 1_000, &b(1, 1, 0, 1), 3, 2);
    assert_eq!(
        t.check(&b(1, 0, 3, 1), &now, 10),
        Err(SequenceError::StaleEpoch {
            current: ProducerEpoch(1)
        })
    );
}

#[test]
fn sequences_wrap_at_i32_max() {
    let mut t = ProducerTable::new();
    apply(&mut t, 0, &b(1, 0, i32::MAX - 1, 2), 0, 1);
    assert_eq!(
        t.check(&b(1, 0, 0, 1), &at(0), 10),
        Ok(SequenceCheck::Append)
    );
}

#[test]
fn a_full_table_refuses_new_producers_and_keeps_every_live_one() {
    let mut t = ProducerTable::new();
    apply(&mut t, 0, &b(5, 0, 0, 1), 0, 1);
    apply(&mut t, 10, &b(6, 0, 0, 1), 1, 2);
    let now = at(20);
    assert_eq!(
        t.check(&b(7, 0, 0, 1), &now, 2),
        Err(SequenceError::TableFull {
            producers: 2,
            limit: 2
        })
    );
    // Producers it holds go on: retries, next batches, new epochs.
    assert!(matches!(
        t.check(&b(5, 0, 0, 1), &now, 2),
        Ok(SequenceCheck::Duplicate(m)) if m.base_offset == Offset(0)
    ));
    assert_eq!(t.check(&b(6, 0, 1, 1), &now, 2), Ok(SequenceCheck::Append));
    assert_eq!(t.check(&b(5, 1, 0, 1), &now, 2), Ok(SequenceCheck::Append));
    apply(&mut t, 20, &b(5, 0, 1, 1), 2, 3);
    // A day after 6's only write, its state is gone from the batch's time on: the new
    // producer takes its place, and the check and the applying agree.
    let later = at(10 + DAY as i64);
    assert_eq!(
        t.check(&b(7, 0, 0, 1), &later, 2),
        Ok(SequenceCheck::Append)
    );
    assert_eq!(
        t.check(&b(6, 0, 1, 1), &later, 2),
        Ok(SequenceCheck::Append),
        "6 is unknown now: any sequence, if there is room"
    );
    apply(&mut t, 10 + DAY as i64, &b(7, 0, 0, 1), 3, 4);
    assert_eq!(t.len(), 2);
    assert!(matches!(
        t.check(&b(5, 0, 1, 1), &later, 2),
        Ok(SequenceCheck::Duplicate(_))
    ));
    assert_eq!(
        t.check(&b(6, 0, 1, 1), &later, 2),
        Err(SequenceError::TableFull {
            producers: 2,
            limit: 2
        })
    );
    // A limit lowered below the table's size: room only once enough have expired.
    let much_later = at(20 + DAY as i64);
    assert_eq!(
        t.check(&b(8, 0, 0, 1), &much_later, 1),
        Err(SequenceError::TableFull {
            producers: 2,
            limit: 1
        }),
        "5 expired, 7 did not: one left, which is the limit"
    );
    assert_eq!(
        t.check(&b(8, 0, 0, 1), &much_later, 2),
        Ok(SequenceCheck::Append)
    );
}

#[test]
fn a_producer_expires_when_it_has_not_written_for_the_expiration() {
    let mut t = ProducerTable::new();
    apply(&mut t, 1_000, &b(1, 0, 0, 1), 0, 1);
    apply(&mut t, 2_000, &b(2, 0, 0, 1), 1, 2);
    // A write keeps a producer: 1 writes again at 5,000.
    apply(&mut t, 5_000, &b(1, 0, 1, 1), 2, 3);
    t.advance(&at(2_000 + DAY as i64 - 1));
    assert_eq!(t.len(), 2, "a millisecond short of a day");
    t.advance(&at(2_000 + DAY as i64));
    assert_eq!(t.len(), 1, "2 has not written for a day (Kafka: >=)");
    assert_eq!(
        t.check(&b(2, 0, 7, 1), &at(2_000 + DAY as i64), 10),
        Ok(SequenceCheck::Append),
        "an expired producer is unknown"
    );
    assert!(matches!(
        t.check(&b(1, 0, 1, 1), &at(2_000 + DAY as i64), 10),
        Ok(SequenceCheck::Duplicate(_))
    ));
    t.advance(&at(5_000 + DAY as i64));
    assert!(t.is_empty());
    t.invariants();
    // The leader's own expiration travels with the stamp.
    apply(&mut t, 6_000 + DAY as i64, &b(3, 0, 0, 1), 3, 4);
    t.advance(&AppendTime {
        time_ms: 6_100 + DAY as i64,
        expiration_ms: 100,
    });
    assert!(t.is_empty());
}

#[test]
fn the_clock_never_goes_back() {
    let mut t = ProducerTable::new();
    assert_eq!(t.next_append_time(-5, DAY).time_ms, 0);
    apply(&mut t, 10_000, &b(1, 0, 0, 1), 0, 1);
    // A leader whose clock is behind stamps the log's time, not its own.
    assert_eq!(t.next_append_time(4_000, DAY), at(10_000));
    assert_eq!(t.next_append_time(12_000, DAY), at(12_000));
    // An entry stamped earlier (written by a leader before the clamp) moves nothing.
    t.advance(&at(3_000));
    assert_eq!(t.clock_ms(), Some(10_000));
    t.invariants();
}

/// The table as a model sees it: each producer's last write time and next sequence.
type Model = BTreeMap<i64, (i64, i32)>;

proptest! {
    #![proptest_config(fixed_seed_config(256))]

    /// Model test: a producer sends batches and retries a random earlier one. Appends keep
    /// sequences contiguous, every retry of one of the last five batches is a duplicate with
    /// the original offsets, and the table survives an encode/decode round trip.
    #[test]
    fn retries_are_duplicates_and_sequences_stay_dense(ops in proptest::collection::vec((1i32..5, 0usize..8), 1..60)) {
        let mut t = ProducerTable::new();
        let mut sent: Vec<(i32, i32, Offset)> = Vec::new();
        let mut next_seq = 0;
        let mut next_offset = Offset(0);
        let now = at(0);
        for (i, (count, retry_back)) in ops.into_iter().enumerate() {
            if retry_back > 0 && retry_back <= sent.len() {
                let (seq, count, offset) = sent[sent.len() - retry_back];
                let verdict = t.check(&b(9, 0, seq, count), &now, 4);
                if retry_back <= BATCHES_KEPT {
                    prop_assert!(matches!(verdict, Ok(SequenceCheck::Duplicate(m)) if m.base_offset == offset));
                } else {
                    prop_assert!(verdict.is_err());
                }
                continue;
            }
            prop_assert_eq!(t.check(&b(9, 0, next_seq, count), &now, 4), Ok(SequenceCheck::Append));
            apply(&mut t, 0, &b(9, 0, next_seq, count), next_offset.0, i as u64 + 1);
            sent.push((next_seq, count, next_offset));
            next_seq += count;
            next_offset = next_offset.plus(i64::from(count));
        }
        let mut w = Writer::default();
        t.encode(&mut w);
        let mut r = Reader::new(&w.bytes);
        let back = ProducerTable::decode(&mut r).expect("decode");
        r.finish().expect("no trailing bytes");
        prop_assert_eq!(back, t);
    }

    /// Model test of expiry and the limit: producers write at random times. A producer is in
    /// the table exactly while it has written within the expiration; a new one is admitted
    /// exactly while fewer than the limit would be left; a replica that starts from the
    /// table's encoding half-way (a snapshot) ends with the same table.
    #[test]
    fn expiry_and_the_limit_follow_a_model_and_snapshots(
        ops in proptest::collection::vec((0i64..8, 0i64..60), 1..80),
        snapshot_at in 0usize..80,
    ) {
        const EXPIRATION: u64 = 100;
        const LIMIT: usize = 4;
        let mut t = ProducerTable::new();
        let mut replica: Option<ProducerTable> = None;
        let mut model = Model::new();
        let (mut time, mut offset) = (0i64, 0i64);
        for (i, (pid, dt)) in ops.into_iter().enumerate() {
            time += dt;
            let stamp = t.next_append_time(time, EXPIRATION);
            model.retain(|_, (last, _)| time - *last < EXPIRATION as i64);
            let seq = model.get(&pid).map_or(0, |(_, next)| *next);
            let batch = b(pid, 0, seq, 1);
            let verdict = t.check(&batch, &stamp, LIMIT);
            if !model.contains_key(&pid) && model.len() >= LIMIT {
                prop_assert!(matches!(verdict, Err(SequenceError::TableFull { .. })), "{:?}", verdict);
                t.advance(&stamp); // the batch is refused; the entry of another goes in
            } else {
                prop_assert_eq!(verdict, Ok(SequenceCheck::Append));
                t.advance(&stamp);
                t.record(&batch, Offset(offset), RaftIndex(i as u64 + 1), Term(1));
                model.insert(pid, (time, seq + 1));
                offset += 1;
            }
            if let Some(replica) = &mut replica {
                replica.advance(&stamp);
                if model.get(&pid).is_some_and(|(last, _)| *last == time) {
                    replica.record(&batch, Offset(offset - 1), RaftIndex(i as u64 + 1), Term(1));
                }
            }
            t.invariants();
            prop_assert_eq!(t.len(), model.len());
            if i == snapshot_at {
                let mut w = Writer::default();
                t.encode(&mut w);
                replica = Some(ProducerTable::decode(&mut Reader::new(&w.bytes)).expect("decodes"));
            }
        }
        if let Some(replica) = replica {
            prop_assert_eq!(replica, t);
        }
    }

    /// Decoding arbitrary bytes fails cleanly, never panics, in either encoding.
    #[test]
    fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(t) = ProducerTable::decode(&mut Reader::new(&data)) {
            t.invariants();
        }
        if let Ok(t) = ProducerTable::decode_without_times(&mut Reader::new(&data)) {
            t.invariants();
        }
    }
}
