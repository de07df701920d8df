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
//!
//! The module is split by job: this file holds the table and its idempotence and expiry;
//! `txns` the transactions it keeps (open ones, markers, aborted ones); `codec` its encodings.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{Offset, ProducerEpoch, ProducerId, RaftIndex, Sequence, Term};

mod codec;
#[cfg(test)]
mod tests;
mod txns;

pub use txns::AbortedTxn;
use txns::OpenTxn;

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

/// One producer as DescribeProducers shows it (Kafka's `ProducerState` of KIP-664).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveProducer {
    /// Its id.
    pub producer_id: ProducerId,
    /// Its current epoch in the partition.
    pub epoch: ProducerEpoch,
    /// The sequence of its latest batch's last record; `None` when a marker moved it to an
    /// epoch it has not written in yet.
    pub last_sequence: Option<Sequence>,
    /// The table's clock when it last wrote a batch or marker (the log's append time, Unix
    /// ms); `None` while the table has no clock.
    pub last_write_ms: Option<i64>,
    /// The first offset of its transaction open in the partition, if it has one.
    pub open_txn_first_offset: Option<Offset>,
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

impl ProducerEntry {
    /// Whether the producer has a transaction open in this partition.
    fn has_open_transaction(&self) -> bool {
        self.open_txn.is_some()
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

    /// Every producer the table remembers, by id (DescribeProducers).
    pub fn active(&self) -> impl Iterator<Item = ActiveProducer> + '_ {
        self.producers.iter().map(|(id, entry)| ActiveProducer {
            producer_id: *id,
            epoch: entry.epoch,
            last_sequence: entry.batches.back().map(|b| b.last_sequence),
            last_write_ms: (entry.last_write_ms != NO_TIME).then_some(entry.last_write_ms),
            open_txn_first_offset: entry.open_txn.map(|t| t.first_offset),
        })
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
}
