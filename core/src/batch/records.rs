//! The records inside a produced batch, checked before the broker takes it.
//!
//! The broker stores and serves batches as bytes, but it decodes one now and then (the
//! timestamp lookup), and so do its clients: a batch whose header promises more records than
//! it holds, or a record whose lengths or header count run past its end, must not get in (a
//! record count of `i32::MAX` once made a decoder allocate for two billion records and abort
//! the process). So the records of every batch are walked once at produce, without
//! allocating per record: each record's length, its offset delta (0, 1, 2, ... as Kafka
//! requires), key, value and headers must fit exactly, and the records must be as many as the
//! header says and fill the batch. Compressed batches (lz4 and zstd) are decompressed up to a
//! limit first; a batch inflating past it is refused, as a zip bomb would be. This build
//! cannot decompress gzip and snappy: their records are not checked, and the broker never
//! decodes them (the timestamp lookup answers such a batch's base offset).

use std::io::Read;

use super::BatchError;

/// Kafka's compression codec numbers (the low bits of a batch's attributes).
pub(super) const LZ4: i16 = 3;
pub(super) const ZSTD: i16 = 4;

/// Checks `records` (the bytes after a batch header) against the header's `count`;
/// `codec` is the batch's compression, `decompressed_max` the most bytes its records may
/// inflate to.
pub(super) fn check(
    records: &[u8],
    count: i32,
    codec: i16,
    decompressed_max: usize,
) -> Result<(), BatchError> {
    match codec {
        0 => walk(records, count),
        LZ4 => walk(
            &inflate(lz4::Decoder::new(records), decompressed_max)?,
            count,
        ),
        ZSTD => walk(
            &inflate(zstd::stream::read::Decoder::new(records), decompressed_max)?,
            count,
        ),
        // gzip and snappy: not checked (see the module's documentation).
        _ => Ok(()),
    }
}

/// Reads a decompressing reader to its end, refusing more than `max` bytes.
fn inflate<R: Read>(reader: std::io::Result<R>, max: usize) -> Result<Vec<u8>, BatchError> {
    let reader = reader.map_err(|_| BatchError::Corrupt("compressed records do not decompress"))?;
    let mut out = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| BatchError::Corrupt("compressed records do not decompress"))?;
    if out.len() > max {
        return Err(BatchError::DecompressedTooLarge { max });
    }
    Ok(out)
}

/// A cursor over record bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn u8(&mut self) -> Result<u8, BatchError> {
        let (&first, rest) = self.bytes.split_first().ok_or(SHORT)?;
        self.bytes = rest;
        Ok(first)
    }

    /// A zigzag varint of at most `max_bytes` bytes (5 for an int, 10 for a long).
    fn varlong(&mut self, max_bytes: usize) -> Result<i64, BatchError> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(BatchError::Invalid("a record varint is too long"))
    }

    fn varint(&mut self) -> Result<i64, BatchError> {
        let value = self.varlong(5)?;
        if i32::try_from(value).is_err() {
            return Err(BatchError::Invalid("a record varint does not fit 32 bits"));
        }
        Ok(value)
    }

    /// `len` bytes, which must be there.
    fn take(&mut self, len: i64) -> Result<&'a [u8], BatchError> {
        let len = usize::try_from(len).map_err(|_| SHORT)?;
        if len > self.bytes.len() {
            return Err(SHORT);
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    /// A field of `varint` length: -1 (null) when `nullable`, else 0 or more, within the
    /// bytes.
    fn field(&mut self, nullable: bool) -> Result<(), BatchError> {
        let len = self.varint()?;
        if len == -1 && nullable {
            return Ok(());
        }
        self.take(len).map(|_| ())
    }
}

const SHORT: BatchError = BatchError::Invalid("a record runs past the end of its batch");

/// Walks `count` records filling `bytes` exactly.
fn walk(bytes: &[u8], count: i32) -> Result<(), BatchError> {
    let mut all = Cursor { bytes };
    for expected_delta in 0..i64::from(count) {
        if all.is_empty() {
            return Err(BatchError::Invalid(
                "the batch holds fewer records than its record count",
            ));
        }
        let len = all.varint()?;
        let mut record = Cursor {
            bytes: all.take(len)?,
        };
        record.u8()?; // attributes (unused in v2)
        record.varlong(10)?; // timestamp delta
        if record.varint()? != expected_delta {
            return Err(BatchError::Invalid(
                "record offset deltas must be 0, 1, 2, ... in order",
            ));
        }
        record.field(true)?; // key
        record.field(true)?; // value
        let headers = record.varint()?;
        if headers < 0 {
            return Err(BatchError::Invalid("a negative record header count"));
        }
        for _ in 0..headers {
            if record.is_empty() {
                return Err(SHORT);
            }
            record.field(false)?; // header key
            record.field(true)?; // header value
        }
        if !record.is_empty() {
            return Err(BatchError::Invalid(
                "a record's length disagrees with its fields",
            ));
        }
    }
    if !all.is_empty() {
        return Err(BatchError::Invalid(
            "the batch holds more bytes than its records",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn records(count: i32, headers: usize) -> Vec<Record> {
        (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                // Consecutive, or kafka-protocol starts a batch per record.
                sequence: i,
                timestamp: 1_700_000_000_000 + i64::from(i),
                key: (i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 3 != 0).then(|| Bytes::from(vec![b'v'; i as usize * 10])),
                headers: (0..headers)
                    .map(|h| {
                        (
                            format!("h{h}").into(),
                            (h % 2 == 0).then(|| Bytes::from_static(b"x")),
                        )
                    })
                    .collect::<IndexMap<_, _>>(),
            })
            .collect()
    }

    fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    fn codec(compression: Compression) -> i16 {
        match compression {
            Compression::Lz4 => LZ4,
            Compression::Zstd => ZSTD,
            _ => 0,
        }
    }

    #[test]
    fn what_kafka_protocol_encodes_passes_in_every_codec_it_has() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            for (count, headers) in [(1, 0), (7, 2), (300, 1)] {
                let batch = encode(&records(count, headers), compression);
                assert_eq!(
                    check(&batch[61..], count, codec(compression), 1 << 20),
                    Ok(()),
                    "{compression:?} {count} records"
                );
            }
        }
    }

    #[test]
    fn lying_counts_and_lengths_are_refused() {
        let batch = encode(&records(3, 1), Compression::None);
        let body = &batch[61..];
        assert!(check(body, 4, 0, 1 << 20).is_err(), "more records promised");
        assert!(check(body, i32::MAX, 0, 1 << 20).is_err(), "two billion");
        assert!(
            check(body, 2, 0, 1 << 20).is_err(),
            "fewer records promised"
        );
        assert!(check(&body[..body.len() - 1], 3, 0, 1 << 20).is_err());
        // One record whose header count claims two billion headers.
        let mut one = vec![0u8]; // attributes
        one.push(0); // timestamp delta 0
        one.push(0); // offset delta 0
        one.push(1); // key null (zigzag -1)
        one.push(1); // value null
        one.extend_from_slice(&[0xFE, 0xFF, 0xFF, 0xFF, 0x0F]); // headers: i32::MAX
        let mut record = vec![(one.len() as u8) << 1];
        record.extend_from_slice(&one);
        assert!(check(&record, 1, 0, 1 << 20).is_err());
    }

    #[test]
    fn a_batch_inflating_past_the_limit_is_refused() {
        // 200 records of 10 KiB of one byte: tiny compressed, 2 MB inflated.
        let big: Vec<Record> = records(200, 0)
            .into_iter()
            .map(|mut r| {
                r.value = Some(Bytes::from(vec![b'z'; 10_000]));
                r
            })
            .collect();
        for compression in [Compression::Lz4, Compression::Zstd] {
            let batch = encode(&big, compression);
            assert!(batch.len() < 100_000, "{compression:?}: {}", batch.len());
            assert_eq!(
                check(&batch[61..], 200, codec(compression), 1 << 20),
                Err(BatchError::DecompressedTooLarge { max: 1 << 20 })
            );
            assert_eq!(
                check(&batch[61..], 200, codec(compression), 4 << 20),
                Ok(())
            );
            // Cut in half: what inflates is fewer records than promised, or nothing.
            let half = 61 + (batch.len() - 61) / 2;
            assert!(check(&batch[61..half], 200, codec(compression), 4 << 20).is_err());
        }
    }
}
