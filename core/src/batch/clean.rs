//! The batch cleaner: one stored batch rewritten as Kafka's log cleaner rewrites it.
//!
//! A compacted topic's log cleaner keeps the latest record of each key; this file does its
//! part for one batch: given a stored RecordBatch v2 and a decision per record (the caller's,
//! from the record's offset, key, whether its value is null, and timestamp), it returns the
//! batch holding only the kept records, as Kafka's `MemoryRecords.filterTo` does:
//! - the header's base offset and last offset delta stay, so the batch occupies the same
//!   offsets (a record dropped leaves a gap, and a batch whose every record goes becomes an
//!   empty batch, Kafka's `writeEmptyHeader`, so its Raft entry stays and its offsets and
//!   producer fields with it);
//! - producer id, epoch, base sequence, partition leader epoch and the transactional, control
//!   and timestamp-type attributes stay, so idempotence and transactions apply alike;
//! - the kept records keep their bytes after the offset delta (key, value, headers), their
//!   offset deltas and their timestamps; they are compressed again with the batch's own codec
//!   (an emptied batch has no codec, as Kafka writes it);
//! - the largest timestamp is the kept records' largest under `CreateTime` (Kafka's builder
//!   computes it from what it writes), the batch's own under `LogAppendTime` and for an
//!   emptied batch;
//! - KIP-534: a batch that keeps a tombstone (a record with a null value) and has no delete
//!   horizon yet gets one (attribute bit 6, the horizon in the base timestamp, every record's
//!   timestamp delta taken from it); a later pass may drop its tombstones once the horizon has
//!   passed ([`Batch::tombstones_expired`]). A transaction marker the cleaner finds removable
//!   gets one the same way ([`Batch::clean_marking`]), and goes once it has passed.
//!
//! The records are decompressed and walked by `records.rs`, within `batch_decompressed_bytes_max`
//! as at produce, so a hostile or damaged batch is an error, never a panic or an unbounded
//! allocation. A batch nothing is dropped from (and that needs no horizon) is returned as it
//! is, byte for byte.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};

use super::records::{self, Seen, GZIP, LZ4, SNAPPY, ZSTD};
use super::{
    Batch, BatchError, ATTRIBUTES, ATTRIBUTE_COMPRESSION_MASK, ATTRIBUTE_DELETE_HORIZON,
    BASE_TIMESTAMP, BATCH_LENGTH, CRC, HEADER_LEN, MAX_TIMESTAMP, RECORD_COUNT,
};
use crate::ids::Offset;

/// One record of a stored batch, as the cleaner's caller sees it to decide whether it stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredRecord<'a> {
    /// Its offset (the batch's base offset plus its offset delta).
    pub offset: Offset,
    /// Its key, `None` when null (a compacted topic refuses keyless records at produce, but a
    /// topic's policy can change, so a log may hold some).
    pub key: Option<&'a [u8]>,
    /// Its value is null: a tombstone, which deletes its key on a compacted topic.
    pub tombstone: bool,
    /// Its timestamp (the batch's append time in a `LogAppendTime` batch).
    pub timestamp: i64,
}

/// What cleaning one batch gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleaned {
    /// The cleaned batch: the original itself when nothing changed.
    pub batch: Batch,
    /// Records kept.
    pub kept: u32,
    /// Records dropped.
    pub dropped: u32,
    /// Whether the bytes differ from the original's.
    pub changed: bool,
    /// Tombstones among the records kept.
    pub tombstones: u32,
}

/// A kept record, to be written again.
struct Kept<'a> {
    offset_delta: i64,
    timestamp: i64,
    tail: &'a [u8],
}

impl Batch {
    /// The batch's delete horizon (KIP-534): set by a cleaning that kept a tombstone (or a
    /// marker), the time after which a later cleaning may drop its tombstones.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes() & ATTRIBUTE_DELETE_HORIZON != 0).then(|| self.base_timestamp())
    }

    /// Whether a cleaning at `now_ms` may drop this batch's tombstones: its delete horizon is
    /// set and has passed (Kafka's `currentTime >= deleteHorizonMs`); a batch without one
    /// keeps them, and gets one when cleaned.
    pub fn tombstones_expired(&self, now_ms: i64) -> bool {
        self.delete_horizon_ms()
            .is_some_and(|horizon| now_ms >= horizon)
    }

    /// Shows every record of the batch to `each`, in order, inflated within
    /// `decompressed_max` bytes as [`Batch::clean`] does; on an error it has shown none.
    pub fn each_record(
        &self,
        decompressed_max: usize,
        mut each: impl FnMut(&StoredRecord<'_>),
    ) -> Result<(), BatchError> {
        let codec = self.attributes() & ATTRIBUTE_COMPRESSION_MASK;
        let plain = records::decompress(&self.bytes[HEADER_LEN..], codec, decompressed_max)?;
        records::each_stored(
            &plain,
            (self.record_count(), self.last_offset_delta()),
            |seen| each(&self.stored_record(&seen)),
        )
    }

    /// A record as the cleaner's caller sees it.
    fn stored_record<'a>(&self, seen: &Seen<'a>) -> StoredRecord<'a> {
        StoredRecord {
            offset: self.base_offset().plus(seen.offset_delta),
            key: seen.key,
            tombstone: seen.null_value,
            timestamp: if self.is_log_append_time() {
                self.max_timestamp()
            } else {
                self.base_timestamp().saturating_add(seen.timestamp_delta)
            },
        }
    }

    /// Cleans the batch: only the records `keep` says yes to stay (see the module
    /// documentation for what stays of the rest). `delete_horizon_ms` is the horizon a batch
    /// that keeps a tombstone and has none gets (the cleaning's time plus the topic's
    /// `delete.retention.ms`). The records are inflated within `decompressed_max` bytes; a
    /// batch that cannot be (too large, a bad codec, records that disagree with the header)
    /// is an error, and `keep` has then seen none of its records.
    pub fn clean(
        &self,
        decompressed_max: usize,
        delete_horizon_ms: i64,
        keep: impl FnMut(&StoredRecord<'_>) -> bool,
    ) -> Result<Cleaned, BatchError> {
        self.clean_marking(decompressed_max, delete_horizon_ms, false, keep)
    }

    /// As [`Batch::clean`]; with `horizon_wanted`, a batch that keeps a record and has no
    /// delete horizon gets one even without a tombstone (Kafka's `containsMarkerForEmptyTxn`:
    /// a transaction marker the cleaner may drop once its horizon has passed).
    pub fn clean_marking(
        &self,
        decompressed_max: usize,
        delete_horizon_ms: i64,
        horizon_wanted: bool,
        mut keep: impl FnMut(&StoredRecord<'_>) -> bool,
    ) -> Result<Cleaned, BatchError> {
        let codec = self.attributes() & ATTRIBUTE_COMPRESSION_MASK;
        let base_timestamp = self.base_timestamp();
        let (mut kept, mut dropped) = (Vec::new(), 0u32);
        let mut tombstones = 0u32;
        let plain = records::decompress(&self.bytes[HEADER_LEN..], codec, decompressed_max)?;
        records::each_stored(
            &plain,
            (self.record_count(), self.last_offset_delta()),
            |seen: Seen<'_>| {
                let record = self.stored_record(&seen);
                if keep(&record) {
                    tombstones += u32::from(seen.null_value);
                    kept.push(Kept {
                        offset_delta: seen.offset_delta,
                        // The record's own time, from which a rewritten batch takes its
                        // delta again.
                        timestamp: base_timestamp.saturating_add(seen.timestamp_delta),
                        tail: seen.tail,
                    });
                } else {
                    dropped += 1;
                }
            },
        )?;
        let needs_horizon = (tombstones > 0 || (horizon_wanted && !kept.is_empty()))
            && self.delete_horizon_ms().is_none();
        let kept_count = u32::try_from(kept.len()).expect("at most the record count");
        if dropped == 0 && !needs_horizon {
            return Ok(Cleaned {
                batch: self.clone(),
                kept: kept_count,
                dropped,
                changed: false,
                tombstones,
            });
        }
        let bytes = if kept.is_empty() {
            self.emptied()
        } else {
            let base = if needs_horizon {
                delete_horizon_ms
            } else {
                base_timestamp
            };
            self.rewritten(&kept, base, needs_horizon)?
        };
        let batch = Batch::trusted(bytes);
        assert_eq!(batch.base_offset(), self.base_offset());
        assert_eq!(batch.last_offset_delta(), self.last_offset_delta());
        assert_eq!(batch.record_count(), kept.len() as i32);
        assert_eq!(batch.crc_stored(), batch.crc_computed());
        Ok(Cleaned {
            batch,
            kept: kept_count,
            dropped,
            changed: true,
            tombstones,
        })
    }

    /// The batch with no records: its header, no codec, no delete horizon, its largest
    /// timestamp as both base and largest (Kafka's `writeEmptyHeader`).
    fn emptied(&self) -> Bytes {
        let mut out = BytesMut::from(&self.bytes[..HEADER_LEN]);
        let attributes =
            self.attributes() & !ATTRIBUTE_COMPRESSION_MASK & !ATTRIBUTE_DELETE_HORIZON;
        out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        let max = self.max_timestamp().to_be_bytes();
        out[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&max);
        seal(out, 0)
    }

    /// The batch holding `kept` (at least one), their timestamps taken from `base_timestamp`,
    /// with the delete horizon bit set if `horizon` (then `base_timestamp` is the horizon).
    fn rewritten(
        &self,
        kept: &[Kept<'_>],
        base_timestamp: i64,
        horizon: bool,
    ) -> Result<Bytes, BatchError> {
        assert!(!kept.is_empty());
        let mut plain = Vec::new();
        let mut body = Vec::new();
        for record in kept {
            let delta = record
                .timestamp
                .checked_sub(base_timestamp)
                .ok_or(BatchError::Invalid(
                    "a record's timestamp is too far from the delete horizon",
                ))?;
            body.clear();
            body.push(0); // attributes, unused in v2 (Kafka writes 0)
            put_varlong(&mut body, delta);
            put_varlong(&mut body, record.offset_delta);
            body.extend_from_slice(record.tail);
            put_varlong(&mut plain, body.len() as i64);
            plain.extend_from_slice(&body);
        }
        let codec = self.attributes() & ATTRIBUTE_COMPRESSION_MASK;
        let records = compress(&plain, codec)?;
        let mut out = BytesMut::with_capacity(HEADER_LEN + records.len());
        out.extend_from_slice(&self.bytes[..HEADER_LEN]);
        out.extend_from_slice(&records);
        let mut attributes = self.attributes();
        if horizon {
            attributes |= ATTRIBUTE_DELETE_HORIZON;
        }
        out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        out[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&base_timestamp.to_be_bytes());
        if !self.is_log_append_time() {
            let max = kept.iter().map(|r| r.timestamp).max().expect("one kept");
            out[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max.to_be_bytes());
        }
        Ok(seal(out, kept.len() as i32))
    }
}

/// Sets a batch's record count, length and CRC-32C.
fn seal(mut out: BytesMut, count: i32) -> Bytes {
    out[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    let length = i32::try_from(out.len() - BATCH_LENGTH - 4).expect("a batch fits an i32 length");
    out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// A zigzag varint (Kafka's `ByteUtils.writeVarlong`; an int's is the same bytes).
fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7F) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// snappy-java's stream header (version 1, compatible with 1), and its block size.
const SNAPPY_JAVA_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
const SNAPPY_BLOCK: usize = 32 * 1024;

const UNCOMPRESSABLE: BatchError = BatchError::Corrupt("the kept records do not compress");

/// `plain` compressed with `codec` as Kafka's Java producer writes it: gzip; snappy in
/// snappy-java's framing; lz4 frames of independent blocks (what Kafka's
/// `KafkaLZ4BlockInputStream` reads); zstd at Kafka's default level 3.
fn compress(plain: &[u8], codec: i16) -> Result<Vec<u8>, BatchError> {
    let compressed = match codec {
        0 => plain.to_vec(),
        GZIP => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(plain).map_err(|_| UNCOMPRESSABLE)?;
            encoder.finish().map_err(|_| UNCOMPRESSABLE)?
        }
        SNAPPY => {
            let mut out = SNAPPY_JAVA_HEADER.to_vec();
            let mut encoder = snap::raw::Encoder::new();
            for block in plain.chunks(SNAPPY_BLOCK) {
                let compressed = encoder.compress_vec(block).map_err(|_| UNCOMPRESSABLE)?;
                let len = u32::try_from(compressed.len()).map_err(|_| UNCOMPRESSABLE)?;
                out.put_u32(len);
                out.extend_from_slice(&compressed);
            }
            out
        }
        LZ4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .level(4)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())
                .map_err(|_| UNCOMPRESSABLE)?;
            encoder.write_all(plain).map_err(|_| UNCOMPRESSABLE)?;
            let (out, result) = encoder.finish();
            result.map_err(|_| UNCOMPRESSABLE)?;
            out
        }
        ZSTD => zstd::stream::encode_all(plain, 3).map_err(|_| UNCOMPRESSABLE)?,
        _ => return Err(BatchError::Invalid("unknown compression codec")),
    };
    Ok(compressed)
}

#[cfg(test)]
#[path = "clean_tests.rs"]
mod tests;
