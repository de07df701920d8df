//! The idempotent-producer table of one partition (Kafka's `ProducerStateManager`).
//!
//! Per producer id it keeps the epoch and the metadata of the last [`BATCHES_KEPT`] batches. The
//! leader checks every produced batch against it before proposing; every replica updates it when
//! the batch is applied, so the table is identical on all replicas and travels in snapshots.

use std::collections::{BTreeMap, VecDeque};

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{Offset, ProducerEpoch, ProducerId, RaftIndex, Sequence, Term};

/// How many recent batches per producer are remembered for duplicate detection (Kafka: 5, the
/// most requests a producer may have in flight with idempotence on).
pub const BATCHES_KEPT: usize = 5;

/// What the table remembers of one appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Sequence of the first record.
    pub first_sequence: Sequence,
    /// Sequence of the last record.
    pub last_sequence: Sequence,
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// Raft entry that holds the batch, so a duplicate's answer can wait until it is applied.
    pub index: RaftIndex,
    /// Term of that entry.
    pub term: Term,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ProducerEntry {
    epoch: ProducerEpoch,
    batches: VecDeque<BatchMetadata>,
}

/// The outcome of checking a batch that may be appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Next in sequence (or from a producer the table does not know): append it.
    Append,
    /// Already appended: answer with the original batch's offsets and do not append again.
    Duplicate(BatchMetadata),
}

/// Why a batch is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceError {
    /// Not the next sequence (Kafka `OUT_OF_ORDER_SEQUENCE_NUMBER`).
    OutOfOrder {
        /// The sequence the table expected.
        expected: Sequence,
        /// The sequence that came.
        received: Sequence,
    },
    /// An older epoch than the producer's current one: fenced (Kafka `INVALID_PRODUCER_EPOCH`).
    StaleEpoch {
        /// The current epoch.
        current: ProducerEpoch,
    },
}

/// One batch as the table sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Producer id (non-negative).
    pub producer_id: ProducerId,
    /// Producer epoch.
    pub epoch: ProducerEpoch,
    /// Sequence of the first record.
    pub first_sequence: Sequence,
    /// Number of records.
    pub count: i32,
}

impl ProducerBatch {
    fn last_sequence(&self) -> Sequence {
        if self.count == 1 {
            self.first_sequence
        } else {
            self.first_sequence.after(self.count - 1)
        }
    }
}

/// The table. Bounded: past `producers_max` ids the one that wrote longest ago is forgotten
/// (deterministically, so every replica forgets the same one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerTable {
    producers: BTreeMap<ProducerId, ProducerEntry>,
    producers_max: usize,
}

impl ProducerTable {
    /// An empty table holding at most `producers_max` producers.
    pub fn new(producers_max: usize) -> Self {
        assert!(producers_max > 0);
        Self {
            producers: BTreeMap::new(),
            producers_max,
        }
    }

    /// Number of producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks `batch` the way Kafka's `ProducerAppendInfo.checkSequence` does.
    pub fn check(&self, batch: &ProducerBatch) -> Result<SequenceCheck, SequenceError> {
        assert!(batch.producer_id.0 >= 0 && batch.count > 0);
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            // Unknown producer (new, or forgotten by retention): any sequence is accepted.
            return Ok(SequenceCheck::Append);
        };
        if batch.epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                current: entry.epoch,
            });
        }
        if batch.epoch > entry.epoch {
            if batch.first_sequence != Sequence(0) {
                return Err(SequenceError::OutOfOrder {
                    expected: Sequence(0),
                    received: batch.first_sequence,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        let last_sequence = batch.last_sequence();
        if let Some(original) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == batch.first_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate(*original));
        }
        let last = entry
            .batches
            .back()
            .expect("a remembered producer has a batch");
        let expected = last.last_sequence.after(1);
        if batch.first_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(SequenceError::OutOfOrder {
                expected,
                received: batch.first_sequence,
            })
        }
    }

    /// Records an appended batch. Deterministic: every replica calls it with the same batches
    /// in the same order and ends with the same table.
    pub fn record(
        &mut self,
        batch: &ProducerBatch,
        base_offset: Offset,
        index: RaftIndex,
        term: Term,
    ) {
        assert!(batch.producer_id.0 >= 0 && batch.count > 0);
        if !self.producers.contains_key(&batch.producer_id)
            && self.producers.len() >= self.producers_max
        {
            self.evict_oldest();
        }
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.epoch,
                batches: VecDeque::new(),
            });
        // A batch recorded already (a snapshot's table holds the batches applied after its
        // index too, which a replica installing it applies again) changes nothing.
        if batch.epoch < entry.epoch
            || (batch.epoch == entry.epoch
                && entry.batches.back().is_some_and(|last| last.index >= index))
        {
            return;
        }
        if batch.epoch != entry.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        if let Some(last) = entry.batches.back() {
            assert!(
                last.last_offset < base_offset,
                "producer batches are recorded in offset order"
            );
        }
        entry.batches.push_back(BatchMetadata {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence(),
            base_offset,
            last_offset: base_offset.plus(i64::from(batch.count - 1)),
            index,
            term,
        });
        while entry.batches.len() > BATCHES_KEPT {
            entry.batches.pop_front();
        }
        assert!(self.producers.len() <= self.producers_max);
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(id, entry)| (entry.batches.back().map(|b| b.last_offset), **id))
            .map(|(id, _)| *id)
            .expect("table is full, so not empty");
        self.producers.remove(&oldest);
    }

    /// Structural invariants; tests and the simulator call this.
    pub fn invariants(&self) {
        assert!(self.producers.len() <= self.producers_max);
        for entry in self.producers.values() {
            assert!(!entry.batches.is_empty() && entry.batches.len() <= BATCHES_KEPT);
            for pair in entry.batches.iter().collect::<Vec<_>>().windows(2) {
                assert!(pair[0].last_offset < pair[1].base_offset);
                assert!(pair[0].index < pair[1].index);
            }
        }
    }

    /// Appends the table's encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.u32(u32::try_from(self.producers_max).expect("bound fits u32"));
        w.u32(u32::try_from(self.producers.len()).expect("bounded"));
        for (id, entry) in &self.producers {
            w.i64(id.0);
            w.i16(entry.epoch.0);
            w.u8(u8::try_from(entry.batches.len()).expect("at most 5"));
            for b in &entry.batches {
                w.i32(b.first_sequence.0);
                w.i32(b.last_sequence.0);
                w.i64(b.base_offset.0);
                w.i64(b.last_offset.0);
                w.u64(b.index.0);
                w.u64(b.term.0);
            }
        }
    }

    /// Reads a table written by [`ProducerTable::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let producers_max = r.u32()? as usize;
        let count = r.u32()? as usize;
        if producers_max == 0 || count > producers_max {
            return Err(DecodeError("producer table over its bound"));
        }
        let mut producers = BTreeMap::new();
        for _ in 0..count {
            let id = ProducerId(r.i64()?);
            let epoch = ProducerEpoch(r.i16()?);
            let n = r.u8()? as usize;
            if n == 0 || n > BATCHES_KEPT {
                return Err(DecodeError("producer entry with a bad batch count"));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMetadata {
                    first_sequence: Sequence(r.i32()?),
                    last_sequence: Sequence(r.i32()?),
                    base_offset: Offset(r.i64()?),
                    last_offset: Offset(r.i64()?),
                    index: RaftIndex(r.u64()?),
                    term: Term(r.u64()?),
                });
            }
            producers.insert(id, ProducerEntry { epoch, batches });
        }
        Ok(Self {
            producers,
            producers_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::fixed_seed_config;
    use proptest::prelude::*;

    fn b(pid: i64, epoch: i16, seq: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: ProducerId(pid),
            epoch: ProducerEpoch(epoch),
            first_sequence: Sequence(seq),
            count,
        }
    }

    #[test]
    fn kafka_sequence_rules() {
        let mut t = ProducerTable::new(10);
        assert_eq!(
            t.check(&b(1, 0, 42, 3)),
            Ok(SequenceCheck::Append),
            "unknown producer: any sequence"
        );
        t.record(&b(1, 0, 0, 3), Offset(0), RaftIndex(1), Term(1));
        assert_eq!(t.check(&b(1, 0, 3, 2)), Ok(SequenceCheck::Append));
        assert!(
            matches!(t.check(&b(1, 0, 0, 3)), Ok(SequenceCheck::Duplicate(m)) if m.base_offset == Offset(0))
        );
        assert_eq!(
            t.check(&b(1, 0, 5, 1)),
            Err(SequenceError::OutOfOrder {
                expected: Sequence(3),
                received: Sequence(5)
            })
        );
        assert_eq!(
            t.check(&b(1, 1, 0, 1)),
            Ok(SequenceCheck::Append),
            "a new epoch starts at 0"
        );
        assert!(matches!(
            t.check(&b(1, 1, 3, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        t.record(&b(1, 1, 0, 1), Offset(3), RaftIndex(2), Term(1));
        assert_eq!(
            t.check(&b(1, 0, 3, 1)),
            Err(SequenceError::StaleEpoch {
                current: ProducerEpoch(1)
            })
        );
        t.invariants();
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut t = ProducerTable::new(10);
        t.record(&b(1, 0, i32::MAX - 1, 2), Offset(0), RaftIndex(1), Term(1));
        assert_eq!(t.check(&b(1, 0, 0, 1)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn eviction_forgets_the_producer_that_wrote_longest_ago() {
        let mut t = ProducerTable::new(2);
        t.record(&b(5, 0, 0, 1), Offset(0), RaftIndex(1), Term(1));
        t.record(&b(6, 0, 0, 1), Offset(1), RaftIndex(2), Term(1));
        t.record(&b(5, 0, 1, 1), Offset(2), RaftIndex(3), Term(1));
        t.record(&b(7, 0, 0, 1), Offset(3), RaftIndex(4), Term(1));
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.check(&b(6, 0, 99, 1)),
            Ok(SequenceCheck::Append),
            "6 was forgotten"
        );
        assert!(
            matches!(
                t.check(&b(5, 0, 5, 1)),
                Err(SequenceError::OutOfOrder { .. })
            ),
            "5 is remembered"
        );
    }

    proptest! {
        #![proptest_config(fixed_seed_config(256))]

        /// Model test: a producer sends batches and retries a random earlier one. Appends keep
        /// sequences contiguous, every retry of one of the last five batches is a duplicate with
        /// the original offsets, and the table survives an encode/decode round trip.
        #[test]
        fn retries_are_duplicates_and_sequences_stay_dense(ops in proptest::collection::vec((1i32..5, 0usize..8), 1..60)) {
            let mut t = ProducerTable::new(4);
            let mut sent: Vec<(i32, i32, Offset)> = Vec::new();
            let mut next_seq = 0;
            let mut next_offset = Offset(0);
            for (i, (count, retry_back)) in ops.into_iter().enumerate() {
                if retry_back > 0 && retry_back <= sent.len() {
                    let (seq, count, offset) = sent[sent.len() - retry_back];
                    let verdict = t.check(&b(9, 0, seq, count));
                    if retry_back <= BATCHES_KEPT {
                        prop_assert!(matches!(verdict, Ok(SequenceCheck::Duplicate(m)) if m.base_offset == offset));
                    } else {
                        prop_assert!(verdict.is_err());
                    }
                    continue;
                }
                prop_assert_eq!(t.check(&b(9, 0, next_seq, count)), Ok(SequenceCheck::Append));
                t.record(&b(9, 0, next_seq, count), next_offset, RaftIndex(i as u64 + 1), Term(1));
                sent.push((next_seq, count, next_offset));
                next_seq += count;
                next_offset = next_offset.plus(i64::from(count));
                t.invariants();
            }
            let mut w = Writer::default();
            t.encode(&mut w);
            let mut r = Reader::new(&w.bytes);
            let back = ProducerTable::decode(&mut r).expect("decode");
            r.finish().expect("no trailing bytes");
            prop_assert_eq!(back, t);
        }

        /// Decoding arbitrary bytes fails cleanly, never panics.
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ProducerTable::decode(&mut Reader::new(&data));
        }
    }
}
