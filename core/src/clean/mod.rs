//! What a compacted topic's log cleaner decides, apart from the files it reads and writes:
//! the offset map of a dirty range (`offset_map.rs`), what it knows of the log's transactions
//! (`txns.rs`), and which records of a batch stay.
//!
//! A cleaning pass (the storage's, `node/src/storage/group_log/clean.rs`) first reads the log
//! forward for its transactions' markers ([`TxnScan`]), then maps the dirty part of the log,
//! batch by batch, each keyed record's offset as its key's latest ([`map_batch`]), until the
//! map is full, a batch's transaction is undecided, or the range ends; then it cleans every
//! batch below the end of what it mapped ([`clean_batch`]), from the log's first batch on: a
//! record stays if it is its key's latest (or its key is not in the map: it was not updated
//! in the dirty range), unless it has no key, or it is a tombstone whose batch's delete
//! horizon has passed (KIP-534; a kept tombstone gives its batch a horizon
//! `delete.retention.ms` after the pass).
//!
//! # Transactions (KIP-98, as Kafka's `LogCleaner` and `CleanedTransactionMetadata`)
//!
//! - A record of a committed transaction is mapped and thinned as a plain one: a later value
//!   of its key supersedes it, and it supersedes earlier ones.
//! - A record of an aborted transaction goes (its batch emptied, its header and Raft entry
//!   kept, as any emptied batch), and is never mapped, so an aborted value never hides a
//!   key's committed value.
//! - A COMMIT marker goes once no record of its transaction is left (none kept by this pass,
//!   which reads the whole cleaned log forward, its transaction's batches before it) and its
//!   batch's delete horizon has passed: the first pass that finds it removable gives it one,
//!   `delete.retention.ms` later (Kafka's `containsMarkerForEmptyTxn`). An emptied marker
//!   keeps its entry and header, and applying it closes its transaction as the COMMIT it was
//!   (`Batch::removed_marker`), so a follower or a restart that applies the cleaned log
//!   reaches the same producer state, last stable offset included.
//! - An ABORT marker stays, unlike Kafka's (which drops it with its transaction's entry in the
//!   segment's transaction index). A read_committed consumer skips a producer's batches from
//!   an aborted transaction's first offset until it reads that transaction's ABORT marker
//!   (Java's `containsAbortMarker` is false for an emptied control batch), and the aborted
//!   transactions a fetch returns come from the replicated producer table, which keeps them
//!   until the log start passes them: without its marker, the consumer would skip the
//!   producer's later committed records. Dropping ABORT markers needs the table to forget
//!   the transaction on the same replica, durably; left for later. The marker costs one
//!   record-less transaction's header and one record, never the aborted records.
//! - Nothing at or past the last stable offset is mapped or cleaned (the caller's upper
//!   bound), nor is a batch whose transaction is undecided.
//!
//! How a transaction ended comes from the log itself, not from the producer table's aborted
//! transactions: a transactional batch belongs to the transaction its producer's next marker
//! in the log closes (a leader writes a transaction's marker after its batches and before the
//! producer's next transaction's, and a duplicate marker only right after the first), so the
//! pass reads ahead for the markers ([`TxnScan`]); every transaction below the last stable
//! offset has its marker in the log, possibly past the segment cleaned, and one whose marker
//! is not in the closed, durably committed segments yet is undecided. The log is what every
//! replica holds and keeps across restarts (a cleaned log's markers stay until their
//! transaction has no record left, after which its batches' fate no longer matters), and a
//! log start move only removes a prefix, transactions and markers alike; the producer table's
//! list, by contrast, is replicated state trimmed only at the log start, not bounded by
//! configuration, and not in the checkpoints of older versions. What the read ahead keeps is
//! bounded by configuration ([`txns_max`], a share of the dedupe buffer), never by data.
//!
//! Every decision is a function of the batches, the map and the pass's time, so a pass is
//! deterministic; each replica cleans its own log (docs/ARCHITECTURE.md says why they agree).

mod offset_map;
mod txns;

pub use offset_map::{KeyHash, OffsetMap, SLOT_BYTES};
pub use txns::{txns_max, Fate, TxnScan, Txns, TXN_SLOT_BYTES};

use crate::batch::{Batch, BatchError, Cleaned};
use crate::node::PlantedBugs;

/// The default memory of a cleaner's offset map (Kafka's `log.cleaner.dedupe.buffer.size`
/// is 128 MiB for all its cleaner threads; oxbow has one cleaner per node).
pub const DEDUPE_BUFFER_BYTES_DEFAULT: usize = 32 << 20;

/// Maps every keyed record of `batch` as its key's latest offset, if the map has room for
/// all its records; `Ok(false)`, mapping none, if it has not, or if the batch's transaction
/// is undecided in `txns` (the pass then ends before this batch, as Kafka's does when its map
/// is full). A control batch, and one of an aborted transaction, maps nothing. Batches must
/// come in log order.
///
/// With the planted bug `clean_keep_first`, a key already in the map keeps its offset (its
/// first in the range).
pub fn map_batch(
    map: &mut OffsetMap,
    batch: &Batch,
    txns: &Txns,
    decompressed_max: usize,
    planted: PlantedBugs,
) -> Result<bool, BatchError> {
    match txns.fate(batch) {
        Fate::Undecided => return Ok(false),
        Fate::Aborted => return Ok(true),
        Fate::Plain | Fate::Committed => {}
    }
    if batch.is_control() || batch.record_count() <= 0 {
        return Ok(true);
    }
    if map.room() < batch.record_count() as usize {
        return Ok(false);
    }
    let mut keyed = Vec::new();
    batch.each_record(decompressed_max, |record| {
        if let Some(key) = record.key {
            keyed.push((key.to_vec(), record.offset));
        }
    })?;
    for (key, offset) in keyed {
        if planted.clean_keep_first() && map.get(&key).is_some() {
            continue;
        }
        assert!(map.put(&key, offset), "the room was checked");
    }
    Ok(true)
}

/// `batch` as it is, kept whole; a marker kept with a delete horizon counts as a tombstone
/// (it is due to go at its horizon).
fn whole(batch: &Batch) -> Cleaned {
    let marker_with_horizon =
        batch.is_control() && batch.record_count() > 0 && batch.delete_horizon_ms().is_some();
    Cleaned {
        batch: batch.clone(),
        kept: batch.record_count().max(0) as u32,
        dropped: 0,
        changed: false,
        tombstones: u32::from(marker_with_horizon),
    }
}

/// Cleans `batch` against `map` and `txns` at `now_ms`: what stays is said in the module
/// documentation; a kept tombstone (or a removable marker) in a batch without a delete
/// horizon gets `now_ms + delete_retention_ms`. Batches must come in log order, every
/// batch from the log's first one, so that `txns` sees each transaction's batches before its
/// marker. With the planted bug `clean_keep_first`, a record stays if it is not after its
/// key's mapped (first) offset; with `clean_drop_tombstones`, a tombstone goes at once.
pub fn clean_batch(
    batch: &Batch,
    map: &OffsetMap,
    txns: &mut Txns,
    now_ms: i64,
    delete_retention_ms: i64,
    decompressed_max: usize,
    planted: PlantedBugs,
) -> Result<Cleaned, BatchError> {
    let horizon = now_ms.saturating_add(delete_retention_ms.max(0));
    if batch.is_control() {
        if !txns.marker_removable(batch) || batch.record_count() <= 0 {
            return Ok(whole(batch));
        }
        if batch.tombstones_expired(now_ms) {
            return batch.clean(decompressed_max, horizon, |_| false);
        }
        // Removable: it goes once its horizon (set now if it has none) has passed.
        let mut cleaned = batch.clean_marking(decompressed_max, horizon, true, |_| true)?;
        cleaned.tombstones = 1;
        return Ok(cleaned);
    }
    let cleaned = match txns.fate(batch) {
        Fate::Undecided => Ok(whole(batch)),
        Fate::Aborted => batch.clean(decompressed_max, horizon, |_| false),
        Fate::Plain | Fate::Committed => {
            let tombstones_expired =
                batch.tombstones_expired(now_ms) || planted.clean_drop_tombstones();
            batch.clean(decompressed_max, horizon, |record| {
                let Some(key) = record.key else {
                    return false;
                };
                let latest = map.get(key).is_none_or(|latest| {
                    if planted.clean_keep_first() {
                        record.offset <= latest
                    } else {
                        record.offset >= latest
                    }
                });
                latest && !(record.tombstone && tombstones_expired)
            })
        }
    };
    // A batch that cannot be decoded is kept whole by the caller: all its records stay.
    let kept = cleaned
        .as_ref()
        .map_or(batch.record_count().max(0) as u32, |c| c.kept);
    txns.note_kept(batch, kept);
    cleaned
}

#[cfg(test)]
mod tests;
