//! The idempotent-producer table of one partition (Kafka's `ProducerStateManager`).
//!
//! Per producer id it keeps the epoch, the metadata of the last [`BATCHES_KEPT`] batches, and
//! when the producer last wrote. The leader checks every produced batch against it before
//! proposing; every replica updates it when the batch is applied, so the table is identical on
//! all replicas and travels in snapshots.
//!
//! # Expiry by time, on the log's clock
//!
//! A producer's state is forgotten once it has not written for `producer.id.expiration.ms`
//! (Kafka's setting, 1 day by default), never because other producers need the room: Kafka
//! accepts any sequence from a producer it has no state for (KIP-360), so forgetting a producer
//! that is still retrying makes its retry a silent duplicate.
//!
//! Time must not differ between replicas, so it comes from the log, never from a replica's own
//! clock: the leader stamps every entry of an idempotent batch it proposes with an [`AppendTime`]
//! (its wall clock, never below the time of an earlier entry of its log, and its expiration
//! setting), carried in the entry's context. Applying such an entry moves the table's clock to
//! its time and forgets, before recording the batch, every producer whose last write is
//! `expiration_ms` or more before the clock (Kafka's `isProducerExpired`). Every replica
//! applies the same entries with the same stamps, so every replica forgets the same producers at
//! the same index; the table's clock and each producer's last write time travel in snapshots and
//! checkpoints with the rest. The leader checks a batch at the time it will stamp on it, so
//! what it admits is what applying will find room for. The table stands still between
//! idempotent batches: nothing can be added to it meanwhile either. Entries written before
//! entries were stamped carry no time and leave the clock where it is; producers recorded while
//! the table had no clock yet count as having written when it gets one.
//!
//! A producer with an open transaction is never forgotten (there are no transactions yet:
//! `ProducerEntry::has_open_transaction` is where they will say so).
//!
//! # A full table refuses new producers
//!
//! The leader admits a producer id the table does not know only while the table, once the
//! producers expired at the batch's time are gone, holds fewer than the node's `producers_max`:
//! otherwise the batch is refused ([`SequenceError::TableFull`]). The limit is the leader's
//! admission check, not part of the replicated state: applying never refuses or evicts, so
//! replicas with different limits still agree.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{Offset, ProducerEpoch, ProducerId, RaftIndex, Sequence, Term};

/// How many recent batches per producer are remembered for duplicate detection (Kafka: 5, the
/// most requests a producer may have in flight with idempotence on).
pub const BATCHES_KEPT: usize = 5;

/// Kafka's default `producer.id.expiration.ms`: a producer that has not written for a day is
/// forgotten.
pub const EXPIRATION_MS_DEFAULT: u64 = 86_400_000;

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

/// The leader's time on an entry it appended: what moves every replica's table clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendTime {
    /// The leader's wall clock when it proposed the entry, in Unix milliseconds, raised to the
    /// time of the latest entry before it in the leader's log (so times never go back along a
    /// log). Not negative.
    pub time_ms: i64,
    /// The leader's `producer.id.expiration.ms`: a producer that has not written for this long
    /// at `time_ms` is forgotten. At least 1.
    pub expiration_ms: u64,
}

impl AppendTime {
    /// Producers whose last write is at or before this time are expired at `time_ms`.
    fn cutoff(&self) -> i64 {
        let expiration = i64::try_from(self.expiration_ms).unwrap_or(i64::MAX);
        self.time_ms.saturating_sub(expiration)
    }

    /// Encodes the stamp (an entry's context).
    pub fn encode(&self, w: &mut Writer) {
        assert!(self.time_ms >= 0 && self.expiration_ms > 0);
        w.i64(self.time_ms);
        w.u64(self.expiration_ms);
    }

    /// Decodes a stamp written by [`AppendTime::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let time_ms = r.i64()?;
        let expiration_ms = r.u64()?;
        if time_ms < 0 || expiration_ms == 0 {
            return Err(DecodeError("bad append time"));
        }
        Ok(Self {
            time_ms,
            expiration_ms,
        })
    }
}

/// A producer's last write time while the table has no clock yet (only entries written before
/// entries were stamped have been applied): it becomes the clock's first time.
const NO_TIME: i64 = i64::MIN;

#[derive(Clone, Debug, PartialEq, Eq)]
struct ProducerEntry {
    epoch: ProducerEpoch,
    batches: VecDeque<BatchMetadata>,
    /// The table's clock when its latest batch was recorded ([`NO_TIME`] without a clock).
    last_write_ms: i64,
}

impl ProducerEntry {
    /// Whether the producer has a transaction open in this partition, which keeps its state
    /// whatever its age (Kafka's `currentTxnFirstOffset`). There are no transactions yet; when
    /// they come, the entry records the open transaction's first offset and this reads it.
    fn has_open_transaction(&self) -> bool {
        false
    }
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
    /// A producer the table does not know, and the table holds `limit` producers that have not
    /// expired: a new one would push out a live one's state.
    TableFull {
        /// Producers in the table.
        producers: usize,
        /// The leader's limit.
        limit: usize,
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

/// The table. Producers leave it only by expiry (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerTable {
    producers: BTreeMap<ProducerId, ProducerEntry>,
    /// Every producer as `(last_write_ms, id)`: the order they expire in.
    by_last_write: BTreeSet<(i64, ProducerId)>,
    /// The latest append time applied; `None` before the first stamped entry.
    clock_ms: Option<i64>,
}

impl Default for ProducerTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ProducerTable {
    /// An empty table without a clock.
    pub fn new() -> Self {
        Self {
            producers: BTreeMap::new(),
            by_last_write: BTreeSet::new(),
            clock_ms: None,
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

    /// The latest append time applied, if any.
    pub fn clock_ms(&self) -> Option<i64> {
        self.clock_ms
    }

    /// The stamp a leader whose wall clock reads `wall_ms` puts on its next entry: never below
    /// the table's clock (the leader's table has every entry of its log applied), so times never
    /// go back along the log, whatever the leaders' clocks do.
    pub fn next_append_time(&self, wall_ms: i64, expiration_ms: u64) -> AppendTime {
        assert!(expiration_ms > 0);
        let time_ms = wall_ms.max(0).max(self.clock_ms.unwrap_or(0));
        let stamp = AppendTime {
            time_ms,
            expiration_ms,
        };
        assert!(self.clock_ms.is_none_or(|clock| stamp.time_ms >= clock));
        stamp
    }

    /// Whether `entry` is forgotten once the clock reads `at`.
    fn expired(&self, entry: &ProducerEntry, at: &AppendTime) -> bool {
        // Without a clock, every producer counts as writing at the first time it gets.
        self.clock_ms.is_some()
            && entry.last_write_ms <= at.cutoff()
            && !entry.has_open_transaction()
    }

    /// The producers expired at `at`, oldest first.
    fn expired_at<'a>(&'a self, at: &'a AppendTime) -> impl Iterator<Item = ProducerId> + 'a {
        let cutoff = at.cutoff();
        self.by_last_write
            .iter()
            .take_while(move |(last, _)| *last <= cutoff)
            .map(|(_, id)| *id)
            .filter(move |id| self.expired(&self.producers[id], at))
    }

    /// Checks `batch`, to be appended at `at`, the way Kafka's
    /// `ProducerAppendInfo.checkSequence` does, and admits a producer the table does not know
    /// only while fewer than `producers_max` producers are left once those expired at `at` are
    /// gone (the leader's limit).
    pub fn check(
        &self,
        batch: &ProducerBatch,
        at: &AppendTime,
        producers_max: usize,
    ) -> Result<SequenceCheck, SequenceError> {
        assert!(batch.producer_id.0 >= 0 && batch.count > 0);
        assert!(producers_max > 0);
        assert!(self.clock_ms.is_none_or(|clock| at.time_ms >= clock));
        let entry = self
            .producers
            .get(&batch.producer_id)
            .filter(|entry| !self.expired(entry, at));
        let Some(entry) = entry else {
            // Unknown producer (new, or expired): any sequence is accepted, if there is room.
            let producers = self.producers.len();
            if producers >= producers_max {
                let needed = producers + 1 - producers_max;
                if self.expired_at(at).take(needed).count() < needed {
                    return Err(SequenceError::TableFull {
                        producers,
                        limit: producers_max,
                    });
                }
            }
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

    /// Applies an entry's append time: the clock moves to it (never back) and the producers
    /// expired then are forgotten. Deterministic: every replica calls it with the same stamps in
    /// the same order, before recording the entry's batch.
    pub fn advance(&mut self, at: &AppendTime) {
        assert!(at.time_ms >= 0 && at.expiration_ms > 0);
        let Some(clock) = self.clock_ms else {
            // The first clock: producers recorded without one wrote now.
            let ids: Vec<ProducerId> = self.producers.keys().copied().collect();
            for id in ids {
                self.set_last_write(id, at.time_ms);
            }
            self.clock_ms = Some(at.time_ms);
            return;
        };
        let now = AppendTime {
            time_ms: clock.max(at.time_ms),
            expiration_ms: at.expiration_ms,
        };
        self.clock_ms = Some(now.time_ms);
        let expired: Vec<ProducerId> = self.expired_at(&now).collect();
        for id in expired {
            let entry = self.producers.remove(&id).expect("indexed");
            assert!(self.by_last_write.remove(&(entry.last_write_ms, id)));
        }
        assert_eq!(self.by_last_write.len(), self.producers.len());
    }

    fn set_last_write(&mut self, id: ProducerId, last_write_ms: i64) {
        let entry = self
            .producers
            .get_mut(&id)
            .expect("a producer of the table");
        assert!(self.by_last_write.remove(&(entry.last_write_ms, id)));
        entry.last_write_ms = last_write_ms;
        assert!(self.by_last_write.insert((last_write_ms, id)));
    }

    /// Records an appended batch, as written at the table's clock. Deterministic: every replica
    /// calls it with the same batches in the same order and ends with the same table. Never
    /// refuses and never evicts: the leader checked the limit.
    pub fn record(
        &mut self,
        batch: &ProducerBatch,
        base_offset: Offset,
        index: RaftIndex,
        term: Term,
    ) {
        assert!(batch.producer_id.0 >= 0 && batch.count > 0);
        let now = self.clock_ms.unwrap_or(NO_TIME);
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.epoch,
                // Exactly the window: a table of thousands of producers holds no spare room.
                batches: VecDeque::with_capacity(BATCHES_KEPT),
                last_write_ms: now,
            });
        if entry.batches.is_empty() {
            assert!(self.by_last_write.insert((now, batch.producer_id)));
        }
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
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMetadata {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence(),
            base_offset,
            last_offset: base_offset.plus(i64::from(batch.count - 1)),
            index,
            term,
        });
        assert!(entry.batches.len() <= BATCHES_KEPT);
        self.set_last_write(batch.producer_id, now);
    }

    /// Structural invariants; tests and the simulator call this.
    pub fn invariants(&self) {
        assert_eq!(self.by_last_write.len(), self.producers.len());
        for (id, entry) in &self.producers {
            assert!(!entry.batches.is_empty() && entry.batches.len() <= BATCHES_KEPT);
            assert!(self.by_last_write.contains(&(entry.last_write_ms, *id)));
            match self.clock_ms {
                None => assert_eq!(entry.last_write_ms, NO_TIME),
                Some(clock) => assert!(entry.last_write_ms >= 0 && entry.last_write_ms <= clock),
            }
            for pair in entry.batches.iter().collect::<Vec<_>>().windows(2) {
                assert!(pair[0].last_offset < pair[1].base_offset);
                assert!(pair[0].index < pair[1].index);
            }
        }
    }

    /// Appends the table's encoding: the clock, then per producer its id, epoch, last write
    /// time and batches. (Tables written before producers expired by time are read by
    /// [`ProducerTable::decode_without_times`].)
    pub fn encode(&self, w: &mut Writer) {
        match self.clock_ms {
            None => w.u8(0),
            Some(clock) => {
                w.u8(1);
                w.i64(clock);
            }
        }
        w.u32(u32::try_from(self.producers.len()).expect("producers fit u32"));
        for (id, entry) in &self.producers {
            w.i64(id.0);
            w.i16(entry.epoch.0);
            if self.clock_ms.is_some() {
                w.i64(entry.last_write_ms);
            }
            encode_batches(w, &entry.batches);
        }
    }

    /// Reads a table written by [`ProducerTable::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let clock_ms = match r.u8()? {
            0 => None,
            1 => Some(r.i64()?),
            _ => return Err(DecodeError("bad producer table clock")),
        };
        if clock_ms.is_some_and(|clock| clock < 0) {
            return Err(DecodeError("negative producer table clock"));
        }
        let count = r.u32()?;
        let mut table = Self {
            clock_ms,
            ..Self::new()
        };
        for _ in 0..count {
            let id = ProducerId(r.i64()?);
            let epoch = ProducerEpoch(r.i16()?);
            let last_write_ms = match clock_ms {
                None => NO_TIME,
                Some(clock) => {
                    let last = r.i64()?;
                    if last < 0 || last > clock {
                        return Err(DecodeError("producer write time outside the clock"));
                    }
                    last
                }
            };
            let batches = decode_batches(r)?;
            table.insert_decoded(id, epoch, batches, last_write_ms)?;
        }
        Ok(table)
    }

    /// Reads a table in the encoding written before producers expired by time (snapshot data
    /// versions 1 to 3, checkpoint versions 1 and 2): the bound on producers it was written
    /// with, then per producer its id, epoch and batches. It has no clock: its producers count
    /// as writing at the first append time applied.
    pub fn decode_without_times(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let producers_max = r.u32()?;
        let count = r.u32()?;
        if producers_max == 0 || count > producers_max {
            return Err(DecodeError("producer table over its bound"));
        }
        let mut table = Self::new();
        for _ in 0..count {
            let id = ProducerId(r.i64()?);
            let epoch = ProducerEpoch(r.i16()?);
            let batches = decode_batches(r)?;
            table.insert_decoded(id, epoch, batches, NO_TIME)?;
        }
        Ok(table)
    }

    fn insert_decoded(
        &mut self,
        id: ProducerId,
        epoch: ProducerEpoch,
        batches: VecDeque<BatchMetadata>,
        last_write_ms: i64,
    ) -> Result<(), DecodeError> {
        if id.0 < 0 {
            return Err(DecodeError("negative producer id"));
        }
        for pair in batches.iter().collect::<Vec<_>>().windows(2) {
            if pair[0].last_offset >= pair[1].base_offset || pair[0].index >= pair[1].index {
                return Err(DecodeError("producer batches out of order"));
            }
        }
        let entry = ProducerEntry {
            epoch,
            batches,
            last_write_ms,
        };
        if self.producers.insert(id, entry).is_some() {
            return Err(DecodeError("producer id twice"));
        }
        self.by_last_write.insert((last_write_ms, id));
        Ok(())
    }
}

fn encode_batches(w: &mut Writer, batches: &VecDeque<BatchMetadata>) {
    w.u8(u8::try_from(batches.len()).expect("at most 5"));
    for b in batches {
        w.i32(b.first_sequence.0);
        w.i32(b.last_sequence.0);
        w.i64(b.base_offset.0);
        w.i64(b.last_offset.0);
        w.u64(b.index.0);
        w.u64(b.term.0);
    }
}

fn decode_batches(r: &mut Reader<'_>) -> Result<VecDeque<BatchMetadata>, DecodeError> {
    let n = r.u8()? as usize;
    if n == 0 || n > BATCHES_KEPT {
        return Err(DecodeError("producer entry with a bad batch count"));
    }
    let mut batches = VecDeque::with_capacity(BATCHES_KEPT);
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
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::fixed_seed_config;
    use proptest::prelude::*;

    const DAY: u64 = 86_400_000;

    fn b(pid: i64, epoch: i16, seq: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: ProducerId(pid),
            epoch: ProducerEpoch(epoch),
            first_sequence: Sequence(seq),
            count,
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
}
