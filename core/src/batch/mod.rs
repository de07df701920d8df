//! Kafka RecordBatch v2 as opaque bytes with a fixed-layout header view.
//!
//! The broker stores records as bytes: it reads the 61-byte header, checks the CRC-32C, walks
//! the records once at produce to check they are what the header says (`records`), and patches
//! the fields Kafka makes the broker's job (base offset, partition leader epoch and, for topics
//! with `LogAppendTime`, the timestamps). Off the produce and fetch paths, a compacted topic's
//! log cleaner rewrites stored batches (`clean`), the one place the broker decodes and
//! compresses records again. Records are otherwise encoded and decoded only by
//! `kafka-protocol`, in clients and tests; the tests in this file check this view against it.

mod clean;
mod marker;
mod records;

pub use clean::{Cleaned, StoredRecord};
pub use marker::Marker;

use bytes::{Bytes, BytesMut};

use crate::ids::{Offset, ProducerEpoch, ProducerId, Sequence, Term};

/// Size of the RecordBatch v2 header, up to and including the record count.
pub const HEADER_LEN: usize = 61;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORD_COUNT: usize = 57;

const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x7;
const ATTRIBUTE_LOG_APPEND_TIME: i16 = 1 << 3;
const ATTRIBUTE_TRANSACTIONAL: i16 = 1 << 4;
const ATTRIBUTE_CONTROL: i16 = 1 << 5;
/// KIP-534: the base timestamp is the batch's delete horizon (set by the log cleaner).
const ATTRIBUTE_DELETE_HORIZON: i16 = 1 << 6;

/// Why a produced batch was refused. Each maps to one Kafka error code at the listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Shorter than a header, length field disagrees with the bytes, or bad CRC-32C
    /// (Kafka `CORRUPT_MESSAGE`).
    Corrupt(&'static str),
    /// Well-formed but not acceptable here: magic other than 2, no records, offsets not dense,
    /// unknown codec, or a control batch from a client (Kafka `INVALID_RECORD`).
    Invalid(&'static str),
    /// Its compressed records inflate past the broker's limit (Kafka `MESSAGE_TOO_LARGE`).
    DecompressedTooLarge {
        /// The most bytes a batch's records may inflate to.
        max: usize,
    },
    /// Records without a key, for a compacted topic (Kafka `INVALID_RECORD`, with a record
    /// error per keyless record).
    MissingKeys {
        /// How many records have no key.
        count: u32,
        /// The first (at most three) of them, by their index in the batch.
        first: Vec<i32>,
    },
    /// Larger than the partition accepts (Kafka `MESSAGE_TOO_LARGE`).
    TooLarge {
        /// The batch's size in bytes.
        size: usize,
        /// The largest size accepted.
        max: usize,
    },
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Corrupt(why) => write!(f, "corrupt record batch: {why}"),
            Self::Invalid(why) => write!(f, "invalid record batch: {why}"),
            Self::DecompressedTooLarge { max } => write!(
                f,
                "record batch decompresses to more than the limit of {max} bytes \
                 (send smaller batches, or raise the node's log.decompressed_batch_bytes_max)"
            ),
            Self::MissingKeys { count, first } => write!(
                f,
                "{count} records without a key (the first at {first:?} in the batch): a \
                 compacted topic keeps the latest record per key, so every record needs one"
            ),
            Self::TooLarge { size, max } => {
                write!(
                    f,
                    "record batch of {size} bytes is larger than the limit of {max} bytes"
                )
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// How a partition stamps record timestamps (Kafka `message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    #[default]
    CreateTime,
    /// Overwrite the batch's max timestamp with the leader's wall clock at append.
    LogAppendTime,
}

/// A read-only view of one RecordBatch v2 header. Construct with [`Batch::parse`] (untrusted
/// input, fully checked) or [`Batch::trusted`] (bytes from our own checksummed log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    bytes: Bytes,
}

impl Batch {
    /// Checks one batch received from a client: length, magic, CRC-32C, header fields, and
    /// the records against the header (compressed ones inflated up to `decompressed_max`
    /// bytes), every one with a key if `require_keys` (a compacted topic's). The bytes must
    /// hold exactly one batch.
    pub fn parse(
        bytes: Bytes,
        size_max: usize,
        decompressed_max: usize,
        require_keys: bool,
    ) -> Result<Self, BatchError> {
        if bytes.len() > size_max {
            return Err(BatchError::TooLarge {
                size: bytes.len(),
                max: size_max,
            });
        }
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::Corrupt("shorter than a batch header"));
        }
        let batch = Self { bytes };
        let length = batch.i32_at(BATCH_LENGTH);
        if length >= 0 && (length as usize + BATCH_LENGTH + 4) < batch.bytes.len() {
            // Kafka (produce v3 and later) takes exactly one batch per partition.
            return Err(BatchError::Invalid(
                "more than one record batch for one partition (send exactly one)",
            ));
        }
        if length < 0 || length as usize + BATCH_LENGTH + 4 != batch.bytes.len() {
            return Err(BatchError::Corrupt(
                "batch length does not match the bytes sent",
            ));
        }
        if batch.bytes[MAGIC] != 2 {
            return Err(BatchError::Invalid(
                "only record batch format v2 (magic 2) is supported",
            ));
        }
        if batch.crc_stored() != batch.crc_computed() {
            return Err(BatchError::Corrupt("CRC-32C mismatch"));
        }
        if batch.attributes() & ATTRIBUTE_COMPRESSION_MASK > 4 {
            return Err(BatchError::Invalid("unknown compression codec"));
        }
        if batch.is_control() {
            return Err(BatchError::Invalid(
                "control batches are written by the broker only",
            ));
        }
        let count = batch.record_count();
        if count < 1 {
            return Err(BatchError::Invalid("a batch must hold at least one record"));
        }
        if batch.last_offset_delta() != count - 1 {
            return Err(BatchError::Invalid(
                "last offset delta must be record count - 1",
            ));
        }
        if batch.producer_id().0 >= 0
            && (batch.producer_epoch().0 < 0 || batch.base_sequence().0 < 0)
        {
            return Err(BatchError::Invalid(
                "idempotent batch without producer epoch or sequence",
            ));
        }
        records::check(
            &batch.bytes[HEADER_LEN..],
            count,
            batch.attributes() & ATTRIBUTE_COMPRESSION_MASK,
            decompressed_max,
            require_keys,
        )?;
        batch.assert_header_sane();
        Ok(batch)
    }

    /// The offset and timestamp of the first record at or after `timestamp` in this batch,
    /// `None` if none is. The records are walked as at produce, compressed ones inflated up to
    /// `decompressed_max` bytes; an error means the batch cannot be looked into within that
    /// limit (a limit lowered since it was produced, or a batch stored before produce checked
    /// its codec). In a `LogAppendTime` batch every record has the append time. A cleaned
    /// batch is walked as it is: its records' offsets may have gaps, and an emptied one has
    /// none to find.
    pub fn first_record_at(
        &self,
        timestamp: i64,
        decompressed_max: usize,
    ) -> Result<Option<(Offset, i64)>, BatchError> {
        if self.is_log_append_time() {
            if self.max_timestamp() < timestamp {
                return Ok(None);
            }
            if self.record_count() == self.last_offset_delta().saturating_add(1) {
                return Ok(Some((self.base_offset(), self.max_timestamp())));
            }
            // Cleaned: its first record is the first kept one, if any is.
            let first = records::first_at(
                &self.bytes[HEADER_LEN..],
                (self.record_count(), self.last_offset_delta()),
                self.attributes() & ATTRIBUTE_COMPRESSION_MASK,
                decompressed_max,
                0,
                i64::MIN,
            )?;
            return Ok(
                first.map(|(delta, _)| (self.base_offset().plus(delta), self.max_timestamp()))
            );
        }
        let found = records::first_at(
            &self.bytes[HEADER_LEN..],
            (self.record_count(), self.last_offset_delta()),
            self.attributes() & ATTRIBUTE_COMPRESSION_MASK,
            decompressed_max,
            self.base_timestamp(),
            timestamp,
        )?;
        Ok(found.map(|(offset_delta, timestamp_delta)| {
            (
                self.base_offset().plus(offset_delta),
                self.base_timestamp().saturating_add(timestamp_delta),
            )
        }))
    }

    /// The producer id and epoch of produced bytes whose header says they are a transactional
    /// batch, unchecked (what routes the batch to KIP-890's verification before
    /// [`Batch::parse`] checks it all).
    pub fn peek_transactional(bytes: &[u8]) -> Option<(ProducerId, ProducerEpoch)> {
        if bytes.len() < HEADER_LEN || bytes[MAGIC] != 2 {
            return None;
        }
        let attributes = i16::from_be_bytes([bytes[ATTRIBUTES], bytes[ATTRIBUTES + 1]]);
        if attributes & ATTRIBUTE_TRANSACTIONAL == 0 || attributes & ATTRIBUTE_CONTROL != 0 {
            return None;
        }
        let id = i64::from_be_bytes(bytes[PRODUCER_ID..PRODUCER_ID + 8].try_into().ok()?);
        let epoch = i16::from_be_bytes([bytes[PRODUCER_EPOCH], bytes[PRODUCER_EPOCH + 1]]);
        (id >= 0 && epoch >= 0).then_some((ProducerId(id), ProducerEpoch(epoch)))
    }

    /// Wraps bytes that were checked by [`Batch::parse`] before they entered our log, maybe
    /// cleaned since (compaction keeps the header's offsets and drops records: fewer records
    /// than offsets, or none). Storage frames are checksummed, so a failure here is corruption
    /// or a bug: it asserts.
    pub fn trusted(bytes: Bytes) -> Self {
        assert!(
            bytes.len() >= HEADER_LEN,
            "stored batch shorter than a header"
        );
        let batch = Self { bytes };
        assert_eq!(batch.bytes[MAGIC], 2, "stored batch is not magic 2");
        batch.assert_header_sane();
        batch
    }

    fn assert_header_sane(&self) {
        assert!(
            self.last_offset_delta() >= 0
                && (0..=self.last_offset_delta().saturating_add(1)).contains(&self.record_count()),
            "a batch holds at most as many records as its offsets"
        );
        assert_eq!(
            self.i32_at(BATCH_LENGTH) as usize + BATCH_LENGTH + 4,
            self.bytes.len()
        );
    }

    /// The batch's bytes, exactly as stored and served.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Gives the bytes back.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Offset of the first record, as stamped by the leader.
    pub fn base_offset(&self) -> Offset {
        Offset(self.i64_at(BASE_OFFSET))
    }

    /// Number of records it holds: as many as its offsets when produced, fewer (or none) once
    /// cleaned. What it occupies is `base_offset()..next_offset()`.
    pub fn record_count(&self) -> i32 {
        self.i32_at(RECORD_COUNT)
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> Offset {
        self.base_offset().plus(i64::from(self.last_offset_delta()))
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }

    /// Its last offset minus its base offset: kept by cleaning, whatever records go.
    pub fn last_offset_delta(&self) -> i32 {
        self.i32_at(LAST_OFFSET_DELTA)
    }

    /// The partition leader epoch stamped by the leader (= the Raft term it was proposed in).
    pub fn partition_leader_epoch(&self) -> i32 {
        self.i32_at(PARTITION_LEADER_EPOCH)
    }

    /// Timestamp of the first record.
    pub fn base_timestamp(&self) -> i64 {
        self.i64_at(BASE_TIMESTAMP)
    }

    /// Largest record timestamp, or the append time for `LogAppendTime` batches.
    pub fn max_timestamp(&self) -> i64 {
        self.i64_at(MAX_TIMESTAMP)
    }

    /// Producer id; negative when the producer is not idempotent.
    pub fn producer_id(&self) -> ProducerId {
        ProducerId(self.i64_at(PRODUCER_ID))
    }

    /// Producer epoch.
    pub fn producer_epoch(&self) -> ProducerEpoch {
        ProducerEpoch(self.i16_at(PRODUCER_EPOCH))
    }

    /// Sequence of the first record.
    pub fn base_sequence(&self) -> Sequence {
        Sequence(self.i32_at(BASE_SEQUENCE))
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTRIBUTE_TRANSACTIONAL != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTRIBUTE_CONTROL != 0
    }

    /// Whether the timestamps are the broker's append time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & ATTRIBUTE_LOG_APPEND_TIME != 0
    }

    fn attributes(&self) -> i16 {
        self.i16_at(ATTRIBUTES)
    }

    /// The CRC-32C stored in the header (over attributes through the last record).
    pub fn crc(&self) -> u32 {
        self.crc_stored()
    }

    fn crc_stored(&self) -> u32 {
        u32::from_be_bytes(self.bytes[CRC..CRC + 4].try_into().expect("4 bytes"))
    }

    fn crc_computed(&self) -> u32 {
        crc32c::crc32c(&self.bytes[ATTRIBUTES..])
    }

    /// Returns the batch with the leader's fields stamped: base offset, partition leader epoch
    /// and, for `LogAppendTime`, the append time (which changes CRC-covered bytes, so the CRC
    /// is recomputed). Copies the bytes only if they are shared.
    pub fn stamp(
        self,
        base_offset: Offset,
        term: Term,
        timestamps: TimestampType,
        wall_ms: i64,
    ) -> Self {
        assert!(base_offset.0 >= 0);
        let epoch = i32::try_from(term.0).expect("term fits a partition leader epoch");
        let count = self.record_count();
        let mut bytes = match self.bytes.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        bytes[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.0.to_be_bytes());
        bytes[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
            .copy_from_slice(&epoch.to_be_bytes());
        if timestamps == TimestampType::LogAppendTime {
            let attributes = i16::from_be_bytes([bytes[ATTRIBUTES], bytes[ATTRIBUTES + 1]])
                | ATTRIBUTE_LOG_APPEND_TIME;
            bytes[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
            bytes[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&wall_ms.to_be_bytes());
            let crc = crc32c::crc32c(&bytes[ATTRIBUTES..]);
            bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        }
        let stamped = Self {
            bytes: bytes.freeze(),
        };
        assert_eq!(stamped.base_offset(), base_offset);
        assert_eq!(stamped.record_count(), count);
        assert_eq!(
            stamped.crc_stored(),
            stamped.crc_computed(),
            "stamping broke the CRC"
        );
        stamped
    }

    fn i16_at(&self, at: usize) -> i16 {
        i16::from_be_bytes(self.bytes[at..at + 2].try_into().expect("2 bytes"))
    }

    fn i32_at(&self, at: usize) -> i32 {
        i32::from_be_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn i64_at(&self, at: usize) -> i64 {
        i64::from_be_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
    }
}

/// Test helpers that build real batches with `kafka-protocol`'s encoder, and cleaned copies
/// of them as a log cleaner leaves them.
#[cfg(test)]
pub(crate) mod testing {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// An encoded batch of `count` records with the given producer fields.
    pub(crate) fn batch(count: i32, producer_id: i64, epoch: i16, base_sequence: i32) -> Bytes {
        batch_with(
            count,
            (producer_id, epoch, base_sequence),
            Compression::None,
        )
    }

    /// An encoded batch of `count` keyed records with the given producer fields (id, epoch,
    /// base sequence), compressed with `compression`.
    pub(crate) fn batch_with(
        count: i32,
        (producer_id, epoch, base_sequence): (i64, i16, i32),
        compression: Compression,
    ) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                sequence: base_sequence.wrapping_add(i),
                timestamp: 1_700_000_000_000 + i64::from(i),
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    /// `batch` (uncompressed or gzip) holding only the records `keep` says yes to (by their
    /// index in it), as a log cleaner leaves it: the records kept byte for byte (their deltas
    /// hold, since the base offset and timestamp stay), and of the header only the record
    /// count, the length and the CRC changed; an emptied batch has no payload, so no codec
    /// (Kafka's `writeEmptyHeader`).
    pub(crate) fn cleaned(batch: &[u8], keep: impl Fn(usize) -> bool) -> Bytes {
        use std::io::{Read, Write};
        let codec = i16::from_be_bytes([batch[super::ATTRIBUTES], batch[super::ATTRIBUTES + 1]])
            & super::ATTRIBUTE_COMPRESSION_MASK;
        let plain = match codec {
            0 => batch[super::HEADER_LEN..].to_vec(),
            1 => {
                let mut out = Vec::new();
                flate2::read::MultiGzDecoder::new(&batch[super::HEADER_LEN..])
                    .read_to_end(&mut out)
                    .expect("gzip");
                out
            }
            _ => panic!("the helper cleans uncompressed and gzip batches"),
        };
        let mut kept = Vec::new();
        let mut count = 0i32;
        let mut rest = &plain[..];
        let mut index = 0;
        while !rest.is_empty() {
            // The record's length: a zigzag varint.
            let (mut raw, mut shift, mut at) = (0u64, 0, 0);
            loop {
                let byte = rest[at];
                raw |= u64::from(byte & 0x7F) << shift;
                at += 1;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let len = ((raw >> 1) as i64 ^ -((raw & 1) as i64)) as usize;
            let (record, after) = rest.split_at(at + len);
            if keep(index) {
                kept.extend_from_slice(record);
                count += 1;
            }
            rest = after;
            index += 1;
        }
        let mut out = BytesMut::from(&batch[..super::HEADER_LEN]);
        let mut attributes =
            i16::from_be_bytes([out[super::ATTRIBUTES], out[super::ATTRIBUTES + 1]]);
        if count == 0 {
            attributes &= !super::ATTRIBUTE_COMPRESSION_MASK;
        } else if codec == 1 {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&kept).expect("gzip");
            kept = gz.finish().expect("gzip");
        }
        out.extend_from_slice(&kept);
        out[super::ATTRIBUTES..super::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        out[super::RECORD_COUNT..super::RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
        let length = (out.len() - super::BATCH_LENGTH - 4) as i32;
        out[super::BATCH_LENGTH..super::BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&out[super::ATTRIBUTES..]);
        out[super::CRC..super::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::batch;
    use super::*;
    use crate::test_support::fixed_seed_config;
    use kafka_protocol::records::RecordBatchDecoder;
    use proptest::prelude::*;

    #[test]
    fn parse_agrees_with_kafka_protocol() {
        let bytes = batch(3, 7, 2, 10);
        let parsed = Batch::parse(bytes.clone(), 1 << 20, 1 << 20, false).expect("valid");
        let info = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).expect("decode");
        assert_eq!(info.len(), 1);
        assert_eq!(parsed.record_count(), info[0].record_count);
        assert_eq!(parsed.producer_id().0, info[0].producer_id);
        assert_eq!(parsed.producer_epoch().0, info[0].producer_epoch);
        assert_eq!(parsed.base_sequence().0, info[0].base_sequence);
        assert_eq!(parsed.base_offset().0, info[0].min_offset);
    }

    #[test]
    fn stamping_keeps_the_batch_readable_by_kafka_protocol() {
        let parsed = Batch::parse(batch(4, -1, -1, -1), 1 << 20, 1 << 20, false).expect("valid");
        let stamped = parsed.stamp(Offset(1000), Term(7), TimestampType::LogAppendTime, 42);
        let decoded = RecordBatchDecoder::decode(&mut stamped.bytes().clone()).expect("decode");
        let offsets: Vec<i64> = decoded.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1000, 1001, 1002, 1003]);
        assert!(decoded
            .records
            .iter()
            .all(|r| r.partition_leader_epoch == 7));
        // As in Kafka, only maxTimestamp carries the append time; readers use it for every record.
        assert_eq!(stamped.max_timestamp(), 42);
        assert!(decoded
            .records
            .iter()
            .all(|r| r.timestamp_type == kafka_protocol::records::TimestampType::LogAppend));
        assert_eq!(stamped.next_offset(), Offset(1004));
        assert!(stamped.is_log_append_time());
    }

    #[test]
    fn refuses_bad_input_with_the_right_class() {
        let good = batch(2, -1, -1, -1);
        let mut flipped = BytesMut::from(&good[..]);
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        assert_eq!(
            Batch::parse(flipped.freeze(), 1 << 20, 1 << 20, false),
            Err(BatchError::Corrupt("CRC-32C mismatch"))
        );
        assert!(matches!(
            Batch::parse(good.slice(..30), 1 << 20, 1 << 20, false),
            Err(BatchError::Corrupt(_))
        ));
        assert!(matches!(
            Batch::parse(good.slice(..good.len() - 1), 1 << 20, 1 << 20, false),
            Err(BatchError::Corrupt(_))
        ));
        assert!(matches!(
            Batch::parse(good.clone(), 10, 1 << 20, false),
            Err(BatchError::TooLarge { .. })
        ));
        let mut magic = BytesMut::from(&good[..]);
        magic[MAGIC] = 1;
        assert!(matches!(
            Batch::parse(magic.freeze(), 1 << 20, 1 << 20, false),
            Err(BatchError::Invalid(_))
        ));
        let mut two = BytesMut::from(&good[..]);
        two.extend_from_slice(&good);
        assert!(
            matches!(
                Batch::parse(two.freeze(), 1 << 20, 1 << 20, false),
                Err(BatchError::Invalid(_))
            ),
            "two batches for one partition are refused as invalid, as Kafka does"
        );
    }

    /// A compacted topic's batch needs a key on every record: a keyless one is refused with
    /// the records that lack one (what Kafka's record errors name), a keyed one passes.
    #[test]
    fn a_compacted_topic_refuses_records_without_keys() {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as Ts,
        };
        let records: Vec<Record> = (0..6)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: Ts::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: 1_700_000_000_000,
                // Keyless at 1, 2, 4 and 5; an empty key is a key.
                key: [0, 3]
                    .contains(&i)
                    .then(|| Bytes::from(vec![b'k'; i as usize])),
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut buf = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression,
            };
            RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
            let bytes = buf.freeze();
            assert_eq!(
                Batch::parse(bytes.clone(), 1 << 20, 1 << 20, true),
                Err(BatchError::MissingKeys {
                    count: 4,
                    first: vec![1, 2, 4]
                }),
                "{compression:?}"
            );
            assert!(Batch::parse(bytes, 1 << 20, 1 << 20, false).is_ok());
        }
        assert!(Batch::parse(batch(5, 3, 0, 0), 1 << 20, 1 << 20, true).is_ok());
    }

    /// What a cleaner leaves (fewer records than offsets, gaps, or none) is a stored batch:
    /// trusted, read by kafka-protocol with every kept record at its own offset, and looked
    /// into by timestamp; its offsets and producer fields are the original's. Produce still
    /// refuses it (a client's batch is dense).
    #[test]
    fn cleaned_and_emptied_batches_are_stored_batches() {
        use super::testing::{batch_with, cleaned};
        use kafka_protocol::records::Compression;
        for compression in [Compression::None, Compression::Gzip] {
            let original = Batch::parse(
                batch_with(6, (9, 1, 40), compression),
                1 << 20,
                1 << 20,
                false,
            )
            .expect("valid")
            .stamp(Offset(100), Term(3), TimestampType::CreateTime, 0);
            for keep in [vec![1, 4], vec![5], vec![0, 1, 2, 3, 4, 5], vec![]] {
                let bytes = cleaned(original.bytes(), |i| keep.contains(&i));
                let stored = Batch::trusted(bytes.clone());
                assert_eq!(stored.record_count(), keep.len() as i32);
                assert_eq!(
                    (
                        stored.base_offset(),
                        stored.next_offset(),
                        stored.last_offset_delta()
                    ),
                    (original.base_offset(), original.next_offset(), 5)
                );
                assert_eq!(
                    (
                        stored.producer_id(),
                        stored.producer_epoch(),
                        stored.base_sequence()
                    ),
                    (
                        original.producer_id(),
                        original.producer_epoch(),
                        original.base_sequence()
                    )
                );
                assert_eq!(stored.max_timestamp(), original.max_timestamp());
                let decoded = RecordBatchDecoder::decode(&mut bytes.clone()).expect("decode");
                let offsets: Vec<i64> = decoded.records.iter().map(|r| r.offset).collect();
                let expected: Vec<i64> = keep.iter().map(|&i| 100 + i as i64).collect();
                assert_eq!(offsets, expected, "{compression:?} keeping {keep:?}");
                // The first kept record at or after each original record's timestamp.
                for i in 0..6 {
                    let found = stored
                        .first_record_at(1_700_000_000_000 + i, 1 << 20)
                        .expect("walkable");
                    let want = keep
                        .iter()
                        .find(|&&k| k as i64 >= i)
                        .map(|&k| (Offset(100 + k as i64), 1_700_000_000_000 + k as i64));
                    assert_eq!(found, want, "{compression:?} keeping {keep:?}, at {i}");
                }
                if keep.len() < 6 {
                    assert!(matches!(
                        Batch::parse(bytes, 1 << 20, 1 << 20, false),
                        Err(BatchError::Invalid(_))
                    ));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(fixed_seed_config(256))]

        /// Any batch kafka-protocol encodes parses, and stamping any offset and term keeps it
        /// valid, decodable, and dense.
        #[test]
        fn stamp_round_trips(count in 1i32..20, pid in -1i64..5, seq in 0i32..1000, base in 0i64..1 << 40,
                             term in 1u64..1 << 20, log_append in any::<bool>()) {
            let epoch = if pid >= 0 { 0 } else { -1 };
            let bytes = batch(count, pid, epoch, seq);
            let parsed = Batch::parse(bytes, 1 << 20, 1 << 20, false).expect("valid");
            let timestamps = if log_append { TimestampType::LogAppendTime } else { TimestampType::CreateTime };
            let stamped = parsed.stamp(Offset(base), Term(term), timestamps, 5);
            prop_assert_eq!(stamped.next_offset(), Offset(base + i64::from(count)));
            let reparsed = Batch::parse(stamped.bytes().clone(), 1 << 20, 1 << 20, false).expect("still valid");
            prop_assert_eq!(reparsed.partition_leader_epoch() as u64, term);
            let decoded = RecordBatchDecoder::decode(&mut stamped.into_bytes()).expect("decode");
            prop_assert_eq!(decoded.records.len(), count as usize);
        }

        /// No byte string makes parse panic.
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Batch::parse(Bytes::from(data), 1 << 20, 1 << 20, false);
        }
    }
}

/// What the storage keeps of a stored batch for retention: its offsets and largest timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSpan {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset after its last record.
    pub next_offset: Offset,
    /// Its largest timestamp (the append time for `LogAppendTime` batches).
    pub max_timestamp: i64,
}

impl BatchSpan {
    /// Reads the span from a stored entry's data, if it holds a RecordBatch v2 header. Never
    /// panics: storage sees every entry, and only partitions' entries are batches.
    pub fn of(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER_LEN || bytes[MAGIC] != 2 {
            return None;
        }
        let i64_at = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        let i32_at = |at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4"));
        let base = i64_at(BASE_OFFSET);
        let delta = i32_at(LAST_OFFSET_DELTA);
        if base < 0 || delta < 0 {
            return None;
        }
        Some(Self {
            base_offset: Offset(base),
            next_offset: Offset(base.saturating_add(i64::from(delta)).saturating_add(1)),
            max_timestamp: i64_at(MAX_TIMESTAMP),
        })
    }
}
