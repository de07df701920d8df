//! What a compacted topic's log cleaner decides, apart from the files it reads and writes:
//! the offset map of a dirty range (`offset_map.rs`) and which records of a batch stay.
//!
//! A cleaning pass (the storage's, `node/src/storage/cleaner/`) first maps the dirty part of
//! a log, batch by batch, each keyed record's offset as its key's latest ([`map_batch`]),
//! until the map is full or the range ends; then it cleans every batch below the end of what
//! it mapped ([`clean_batch`]): a record stays if it is its key's latest (or its key is not
//! in the map: it was not updated in the dirty range), unless it has no key, or it is a
//! tombstone whose batch's delete horizon has passed (KIP-534; a kept tombstone gives its
//! batch a horizon `delete.retention.ms` after the pass). What stays whole, in this slice:
//! control batches (transaction markers) and transactional batches, which are neither mapped
//! nor thinned, so an aborted record never hides a key's committed value and a committed one
//! never goes; removing aborted data and markers safely is left for later.
//!
//! Every decision is a function of the batches, the map and the pass's time, so a pass is
//! deterministic; each replica cleans its own log (docs/ARCHITECTURE.md says why they agree).

mod offset_map;

pub use offset_map::{KeyHash, OffsetMap, SLOT_BYTES};

use crate::batch::{Batch, BatchError, Cleaned};
use crate::node::PlantedBugs;

/// The default memory of a cleaner's offset map (Kafka's `log.cleaner.dedupe.buffer.size`
/// is 128 MiB for all its cleaner threads; oxbow has one cleaner per node).
pub const DEDUPE_BUFFER_BYTES_DEFAULT: usize = 32 << 20;

/// Whether a batch's records are mapped and thinned: a control batch (a transaction's
/// marker) and a transactional batch stay whole (see the module documentation).
pub fn cleanable(batch: &Batch) -> bool {
    !batch.is_control() && !batch.is_transactional()
}

/// Maps every keyed record of `batch` as its key's latest offset, if the map has room for
/// all its records; `Ok(false)`, mapping none, if it has not (the pass then ends before this
/// batch, as Kafka's does when its map is full). Batches must come in log order.
///
/// With the planted bug `clean_keep_first`, a key already in the map keeps its offset (its
/// first in the range).
pub fn map_batch(
    map: &mut OffsetMap,
    batch: &Batch,
    decompressed_max: usize,
    planted: PlantedBugs,
) -> Result<bool, BatchError> {
    if !cleanable(batch) || batch.record_count() == 0 {
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

/// Cleans `batch` against `map` at `now_ms`: what stays is said in the module documentation;
/// a kept tombstone in a batch without a delete horizon gets `now_ms + delete_retention_ms`.
/// With the planted bug `clean_keep_first`, a record stays if it is not after its key's
/// mapped (first) offset.
pub fn clean_batch(
    batch: &Batch,
    map: &OffsetMap,
    now_ms: i64,
    delete_retention_ms: i64,
    decompressed_max: usize,
    planted: PlantedBugs,
) -> Result<Cleaned, BatchError> {
    if !cleanable(batch) {
        return Ok(Cleaned {
            batch: batch.clone(),
            kept: batch.record_count().max(0) as u32,
            dropped: 0,
            changed: false,
            // Kept whole, and never dropped for their horizon: none to count.
            tombstones: 0,
        });
    }
    let tombstones_expired = batch.tombstones_expired(now_ms);
    let horizon = now_ms.saturating_add(delete_retention_ms.max(0));
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

#[cfg(test)]
mod tests;
