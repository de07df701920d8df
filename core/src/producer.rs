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
//! A producer with an open transaction is never forgotten.
//!
//! # Transactions
//!
//! A producer's first transactional batch in the partition opens its transaction there (its
//! first offset, Kafka's `currentTxnFirstOffset`); the transaction's marker closes it, and an
//! ABORT marker adds it to the aborted transactions (producer id, first offset, marker offset),
//! which read_committed fetches return so consumers skip its records. The first offset of the
//! earliest open transaction bounds the last stable offset. A marker of a later epoch (an
//! abort that fenced the instance) also moves the producer to that epoch: the fenced instance's
//! batches are refused from then on, and the new one starts at sequence 0.
//!
//! # A full table refuses new producers
//!
//! The leader admits a producer id the table does not know only while the table, once the
//! producers expired at the batch's time are gone, holds fewer than the node's `producers_max`:
//! otherwise the batch is refused ([`SequenceError::TableFull`]). The limit is the leader's
//! admission check, not part of the replicated state: applying never refuses or evicts, so
//! replicas with different limits still agree.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::batch::Marker;
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
    /// The latest batches of `epoch`; none only after a marker moved the producer to a later
    /// epoch than its batches'.
    batches: VecDeque<BatchMetadata>,
    /// The table's clock when its latest batch or marker was recorded ([`NO_TIME`] without a
    /// clock).
    last_write_ms: i64,
    /// Its transaction open in this partition, which keeps its state whatever its age.
    open_txn: Option<OpenTxn>,
}

/// A transaction open in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpenTxn {
    /// The offset of its first batch here (Kafka's `currentTxnFirstOffset`).
    first_offset: Offset,
    /// Which transaction of the producer it is: its start on the coordinator (Unix ms, rising
    /// from one transaction of an id to the next). Only its own marker closes it, so a marker
    /// of an earlier transaction that arrives late closes nothing.
    start_ms: i64,
}

impl ProducerEntry {
    /// Whether the producer has a transaction open in this partition.
    fn has_open_transaction(&self) -> bool {
        self.open_txn.is_some()
    }
}

/// A transaction aborted in this partition: read_committed consumers skip the producer's
/// records from `first_offset` up to the marker at `last_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The transaction's producer id.
    pub producer_id: ProducerId,
    /// Its first offset in the partition.
    pub first_offset: Offset,
    /// The offset of its ABORT marker.
    pub last_offset: Offset,
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
    /// Whether it belongs to a transaction.
    pub transactional: bool,
    /// For a transactional batch, its transaction's start on the coordinator (what names the
    /// transaction; see `OpenTxn`).
    pub txn_start_ms: Option<i64>,
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
    /// The open transactions as `(first offset, producer)`: the earliest bounds the last
    /// stable offset.
    open_txns: BTreeSet<(Offset, ProducerId)>,
    /// The transactions aborted in the partition, in the order of their markers (so of
    /// `last_offset`), back to the log start.
    aborted: VecDeque<AbortedTxn>,
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
            open_txns: BTreeSet::new(),
            aborted: VecDeque::new(),
        }
    }

    /// The first offset of the earliest transaction open in the partition: the last stable
    /// offset, if it is below the high watermark.
    pub fn first_open_offset(&self) -> Option<Offset> {
        self.open_txns.first().map(|(offset, _)| *offset)
    }

    /// The start (on its coordinator) of the transaction `producer` has open in the partition
    /// at `epoch`, if it has one.
    pub fn open_transaction(&self, producer: ProducerId, epoch: ProducerEpoch) -> Option<i64> {
        let entry = self.producers.get(&producer)?;
        (entry.epoch == epoch).then_some(entry.open_txn?.start_ms)
    }

    /// The epoch and start (on its coordinator) of the transaction `producer` has open in the
    /// partition, if it has one.
    pub fn open_transaction_of(&self, producer: ProducerId) -> Option<(ProducerEpoch, i64)> {
        let entry = self.producers.get(&producer)?;
        Some((entry.epoch, entry.open_txn?.start_ms))
    }

    /// The aborted transactions a read of `from` up to (not including) `to` meets: those whose
    /// marker is at or after `from` and whose first offset is below `to` (Kafka's
    /// `collectAbortedTxns`), in marker order.
    pub fn aborted_between(&self, from: Offset, to: Offset) -> impl Iterator<Item = &AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted
            .range(start..)
            .filter(move |a| a.first_offset < to)
    }

    /// Forgets the aborted transactions whose marker is below the log start `offset`: a read
    /// can no longer meet them.
    pub fn trim_aborted(&mut self, offset: Offset) {
        while self.aborted.front().is_some_and(|a| a.last_offset < offset) {
            self.aborted.pop_front();
        }
    }

    /// Applies the marker at `offset` of the transaction that started at `txn_start_ms`, at
    /// the table's clock: it closes that transaction (an ABORT one is recorded as aborted) and
    /// moves the producer to the marker's epoch. A marker of an older epoch than the
    /// producer's, of another transaction, or of a producer the table does not know, changes
    /// nothing. Deterministic, as `record`.
    pub fn record_marker(&mut self, marker: &Marker, offset: Offset, txn_start_ms: i64) {
        let id = marker.producer_id;
        let now = self.clock_ms.unwrap_or(NO_TIME);
        let Some(entry) = self.producers.get_mut(&id) else {
            return;
        };
        if marker.epoch < entry.epoch || entry.open_txn.is_none_or(|t| t.start_ms != txn_start_ms) {
            return;
        }
        if let Some(OpenTxn {
            first_offset: first,
            ..
        }) = entry.open_txn.take()
        {
            assert!(first < offset, "a marker comes after its transaction");
            assert!(self.open_txns.remove(&(first, id)));
            if !marker.commit {
                assert!(self.aborted.back().is_none_or(|a| a.last_offset < offset));
                self.aborted.push_back(AbortedTxn {
                    producer_id: id,
                    first_offset: first,
                    last_offset: offset,
                });
            }
        }
        if marker.epoch > entry.epoch {
            entry.epoch = marker.epoch;
            entry.batches.clear();
        }
        self.set_last_write(id, now);
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
        if entry.batches.is_empty() {
            // A marker moved the producer to this epoch: it starts at sequence 0.
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
        let is_new = !self.producers.contains_key(&batch.producer_id);
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.epoch,
                // Exactly the window: a table of thousands of producers holds no spare room.
                batches: VecDeque::with_capacity(BATCHES_KEPT),
                last_write_ms: now,
                open_txn: None,
            });
        if is_new {
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
        if batch.transactional && entry.open_txn.is_none() {
            let start_ms = batch
                .txn_start_ms
                .expect("a transactional batch names its transaction");
            entry.open_txn = Some(OpenTxn {
                first_offset: base_offset,
                start_ms,
            });
            assert!(self.open_txns.insert((base_offset, batch.producer_id)));
        }
        self.set_last_write(batch.producer_id, now);
    }

    /// Structural invariants; tests and the simulator call this.
    pub fn invariants(&self) {
        assert_eq!(self.by_last_write.len(), self.producers.len());
        let open: BTreeSet<(Offset, ProducerId)> = self
            .producers
            .iter()
            .filter_map(|(id, e)| Some((e.open_txn?.first_offset, *id)))
            .collect();
        assert_eq!(open, self.open_txns, "the open transactions are indexed");
        for pair in self.aborted.iter().collect::<Vec<_>>().windows(2) {
            assert!(
                pair[0].last_offset < pair[1].last_offset,
                "markers in order"
            );
        }
        for a in &self.aborted {
            assert!(a.first_offset < a.last_offset);
        }
        for (id, entry) in &self.producers {
            assert!(entry.batches.len() <= BATCHES_KEPT);
            if let (Some(open), Some(last)) = (entry.open_txn, entry.batches.back()) {
                assert!(
                    open.first_offset <= last.last_offset,
                    "a transaction opens with a batch"
                );
            }
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
    /// time, batches and open transaction's first offset, then the aborted transactions.
    /// (Tables written before transactions are read by
    /// [`ProducerTable::decode_without_txns`], before producers expired by time by
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
            match entry.open_txn {
                None => w.u8(0),
                Some(open) => {
                    w.u8(1);
                    w.i64(open.first_offset.0);
                    w.i64(open.start_ms);
                }
            }
        }
        w.u32(u32::try_from(self.aborted.len()).expect("aborted transactions fit u32"));
        for a in &self.aborted {
            w.i64(a.producer_id.0);
            w.i64(a.first_offset.0);
            w.i64(a.last_offset.0);
        }
    }

    /// Reads a table written by [`ProducerTable::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::decode_with(r, true)
    }

    /// Reads a table written before transactions (snapshot data versions 4 and 5, checkpoint
    /// versions 3 and 4): no open or aborted transactions.
    pub fn decode_without_txns(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::decode_with(r, false)
    }

    fn decode_with(r: &mut Reader<'_>, txns: bool) -> Result<Self, DecodeError> {
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
            let batches = decode_batches(r, txns)?;
            table.insert_decoded(id, epoch, batches, last_write_ms)?;
            if txns {
                let open_txn = match r.u8()? {
                    0 => None,
                    1 => Some(OpenTxn {
                        first_offset: Offset(r.i64()?),
                        start_ms: r.i64()?,
                    }),
                    _ => return Err(DecodeError("bad open transaction tag")),
                };
                if let Some(open) = open_txn {
                    let first = open.first_offset;
                    let entry = table.producers.get_mut(&id).expect("inserted");
                    if first.0 < 0 || entry.batches.back().is_none_or(|b| b.last_offset < first) {
                        return Err(DecodeError("an open transaction without its batches"));
                    }
                    entry.open_txn = Some(open);
                    table.open_txns.insert((first, id));
                }
            }
        }
        if txns {
            for _ in 0..r.u32()? {
                let a = AbortedTxn {
                    producer_id: ProducerId(r.i64()?),
                    first_offset: Offset(r.i64()?),
                    last_offset: Offset(r.i64()?),
                };
                let in_order = table
                    .aborted
                    .back()
                    .is_none_or(|b| b.last_offset < a.last_offset);
                if a.first_offset.0 < 0 || a.first_offset >= a.last_offset || !in_order {
                    return Err(DecodeError("aborted transactions out of order"));
                }
                table.aborted.push_back(a);
            }
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
            let batches = decode_batches(r, false)?;
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
            open_txn: None,
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

/// Reads a producer's batches; none only where a marker may have moved it to a later epoch
/// (`may_be_empty`, tables with transactions).
fn decode_batches(
    r: &mut Reader<'_>,
    may_be_empty: bool,
) -> Result<VecDeque<BatchMetadata>, DecodeError> {
    let n = r.u8()? as usize;
    if (n == 0 && !may_be_empty) || n > BATCHES_KEPT {
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
}
