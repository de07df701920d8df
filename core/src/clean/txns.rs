//! What a cleaning pass knows of a log's transactions: how the transaction of each
//! transactional batch ended (read ahead, from the markers that follow it in the log), and
//! which markers may go.
//!
//! A pass first reads the log forward ([`TxnScan`]): every transactional batch belongs to the
//! transaction its producer's next marker closes, so by the end of the read each batch's
//! fate is known if its marker is in what was read. Only what a later decision needs is kept:
//! each producer's first batch still holding records since its last marker (`pending`), and
//! the ABORT markers that close a transaction with records left (`aborted`, producer and
//! marker offset to the transaction's first such batch); a COMMIT is the default. Both are
//! bounded by the pass's `txns_max` (a share of the dedupe buffer, [`txns_max`]): a
//! transaction that does not fit makes every batch from its first one on undecided, as a
//! batch whose marker was not read is, and an undecided batch is neither mapped (the mapped
//! range ends before it, as when the offset map is full) nor thinned.
//!
//! Cleaning then reads the log forward again ([`Txns`]): a marker may go only if no batch of
//! its transaction kept a record in this pass (tracked per producer from its batches to its
//! marker, in the same bound: past it no marker goes in this pass), and then only after its
//! delete horizon.

use std::collections::{BTreeMap, BTreeSet};

use crate::batch::{Batch, Marker};
use crate::ids::{Offset, ProducerId};

/// Memory a tracked transaction costs at most (a producer id, two offsets, the tree's share).
pub const TXN_SLOT_BYTES: usize = 64;

/// The most transactions a pass tracks (pending, aborted, or with records kept) when its
/// offset map has `dedupe_buffer_bytes`: an eighth of that memory again, at least one.
pub fn txns_max(dedupe_buffer_bytes: usize) -> usize {
    (dedupe_buffer_bytes / 8 / TXN_SLOT_BYTES).max(1)
}

/// How a batch's transaction ended, as far as the cleaner knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Not a transaction's records: a plain or idempotent batch, a control batch, or one
    /// with no records left.
    Plain,
    /// Its transaction committed: cleaned as plain records are.
    Committed,
    /// Its transaction aborted: every record goes, none is mapped.
    Aborted,
    /// Its marker was not read (not in the closed, durably committed log yet), or its
    /// transaction did not fit the pass's bound: neither mapped nor thinned.
    Undecided,
}

/// The marker a batch is, as applying the log reads it: a marker, or one a cleaner emptied
/// (a COMMIT, `Batch::removed_marker`). `None` for other batches.
fn marker_of(batch: &Batch) -> Option<Marker> {
    if !batch.is_control() {
        return None;
    }
    batch.marker().or_else(|| batch.removed_marker())
}

/// Whether `batch` is a transaction's data holding records.
fn txn_records(batch: &Batch) -> bool {
    batch.is_transactional()
        && !batch.is_control()
        && batch.producer_id().0 >= 0
        && batch.record_count() > 0
}

/// A pass's read ahead of the log's markers (see the module documentation).
#[derive(Clone, Debug)]
pub struct TxnScan {
    /// Each producer's first batch holding records since its last marker.
    pending: BTreeMap<ProducerId, Offset>,
    /// ABORT markers closing a transaction with records: (producer, marker offset) to the
    /// transaction's first batch holding records.
    aborted: BTreeMap<(ProducerId, Offset), Offset>,
    max: usize,
    /// Batches from here on are undecided: a transaction did not fit.
    cut: Offset,
    /// The offset after the last batch read.
    end: Offset,
}

impl TxnScan {
    /// A read tracking at most `max` transactions in each of its tables.
    pub fn new(max: usize) -> Self {
        assert!(max > 0);
        Self {
            pending: BTreeMap::new(),
            aborted: BTreeMap::new(),
            max,
            cut: Offset(i64::MAX),
            end: Offset(0),
        }
    }

    /// Reads the next batch of the log (batches come in log order).
    pub fn read(&mut self, batch: &Batch) {
        assert!(batch.base_offset() >= self.end, "batches come in log order");
        self.end = batch.next_offset();
        let producer = batch.producer_id();
        if let Some(marker) = marker_of(batch) {
            let first = self.pending.remove(&producer);
            if let (Some(first), false) = (first, marker.commit) {
                if self.aborted.len() < self.max {
                    self.aborted.insert((producer, batch.base_offset()), first);
                } else {
                    self.cut = self.cut.min(first);
                }
            }
            return;
        }
        if !txn_records(batch) || self.pending.contains_key(&producer) {
            return;
        }
        if self.pending.len() < self.max {
            self.pending.insert(producer, batch.base_offset());
        } else {
            self.cut = self.cut.min(batch.base_offset());
        }
        self.invariants();
    }

    /// What the read found, for the pass's mapping and cleaning.
    pub fn finish(self) -> Txns {
        let open = self.pending.values().min().copied();
        let decided_below = self.cut.min(self.end).min(open.unwrap_or(Offset(i64::MAX)));
        Txns {
            aborted: self.aborted,
            decided_below,
            kept: BTreeSet::new(),
            max: self.max,
            overflowed: false,
        }
    }

    /// Its tables are within their bound.
    pub fn invariants(&self) {
        assert!(self.pending.len() <= self.max && self.aborted.len() <= self.max);
        assert!(self.pending.values().all(|first| *first < self.end));
    }
}

/// The transactions of a pass's log: each batch's fate, and which markers may go.
#[derive(Clone, Debug)]
pub struct Txns {
    aborted: BTreeMap<(ProducerId, Offset), Offset>,
    /// Batches of transactions from here on are undecided.
    decided_below: Offset,
    /// Producers with a record kept by this pass's cleaning since their last marker.
    kept: BTreeSet<ProducerId>,
    max: usize,
    /// `kept` was full once: no marker goes in this pass.
    overflowed: bool,
}

impl Txns {
    /// What a pass knows of a log without transactions (or of none): every transactional
    /// batch undecided.
    pub fn none() -> Self {
        TxnScan::new(1).finish()
    }

    /// How `batch`'s transaction ended (see [`Fate`]).
    pub fn fate(&self, batch: &Batch) -> Fate {
        if !txn_records(batch) {
            return Fate::Plain;
        }
        if batch.base_offset() >= self.decided_below {
            return Fate::Undecided;
        }
        // The producer's next ABORT marker closing a transaction with records: this batch's
        // transaction if that one began at or before it (its next marker is then that one).
        let producer = batch.producer_id();
        match self.aborted.range((producer, batch.base_offset())..).next() {
            Some(((p, _), first)) if *p == producer && *first <= batch.base_offset() => {
                Fate::Aborted
            }
            _ => Fate::Committed,
        }
    }

    /// The cleaning of a transaction's data batch kept `kept` of its records (all of them
    /// when it is kept whole).
    pub fn note_kept(&mut self, batch: &Batch, kept: u32) {
        if !txn_records(batch) || kept == 0 || self.kept.contains(&batch.producer_id()) {
            return;
        }
        if self.kept.len() < self.max {
            self.kept.insert(batch.producer_id());
        } else {
            self.overflowed = true;
        }
    }

    /// The cleaning reached control batch `batch`: whether it may go (after its delete
    /// horizon). Only a COMMIT marker may, once no batch of its transaction kept a record in
    /// this pass: an ABORT marker stays (see the module documentation of `clean`).
    pub fn marker_removable(&mut self, batch: &Batch) -> bool {
        let had_records = self.kept.remove(&batch.producer_id());
        let commit = batch.marker().is_some_and(|m| m.commit);
        commit && !had_records && !self.overflowed
    }

    /// Its tables are within their bound.
    pub fn invariants(&self) {
        assert!(self.aborted.len() <= self.max && self.kept.len() <= self.max);
    }
}
