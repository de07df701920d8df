//! A partition's transactions as its producer table keeps them: each producer's open
//! transaction (its first offset, which bounds the last stable offset, and its start on the
//! coordinator, which names it), the markers that close them, and the aborted transactions
//! read_committed consumers skip.

use crate::batch::Marker;
use crate::ids::{Offset, ProducerEpoch, ProducerId};

use super::{ProducerTable, NO_TIME};

/// A transaction open in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OpenTxn {
    /// The offset of its first batch here (Kafka's `currentTxnFirstOffset`).
    pub(super) first_offset: Offset,
    /// Which transaction of the producer it is: its start on the coordinator (Unix ms, rising
    /// from one transaction of an id to the next). Only its own marker closes it, so a marker
    /// of an earlier transaction that arrives late closes nothing.
    pub(super) start_ms: i64,
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

impl ProducerTable {
    /// The first offset of the earliest transaction open in the partition: the last stable
    /// offset, if it is below the high watermark.
    pub fn first_open_offset(&self) -> Option<Offset> {
        self.open_txns.first().map(|(offset, _)| *offset)
    }

    /// The start (on its coordinator) of the transaction `producer` has open in the partition
    /// at `epoch`, if it has one.
    pub fn open_transaction(&self, producer: ProducerId, epoch: ProducerEpoch) -> Option<i64> {
        let (open_in, start) = self.open_transaction_of(producer)?;
        (open_in == epoch).then_some(start)
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
}
