//! The records inside a produced batch, checked before the broker takes it.
//!
//! The broker stores and serves batches as bytes, but it decodes one now and then (the
//! timestamp lookup), and so do its clients: a batch whose header promises more records than
//! it holds, or a record whose lengths or header count run past its end, must not get in (a
//! record count of `i32::MAX` once made a decoder allocate for two billion records and abort
//! the process). So the records of every batch are walked once at produce, without
//! allocating per record: each record's length, its offset delta (0, 1, 2, ... as Kafka
//! requires), key, value and headers must fit exactly, and the records must be as many as the
//! header says and fill the batch. Compressed batches (all of Kafka's codecs: gzip, snappy,
//! lz4, zstd) are decompressed up to a limit first, into a buffer that never grows past it; a
//! batch inflating past it is refused, as a zip bomb would be. The timestamp lookup walks a
//! stored batch the same way ([`first_at`]), with the same limit.

use std::io::Read;

use super::BatchError;

/// Kafka's compression codec numbers (the low bits of a batch's attributes).
pub(super) const GZIP: i16 = 1;
pub(super) const SNAPPY: i16 = 2;
pub(super) const LZ4: i16 = 3;
pub(super) const ZSTD: i16 = 4;

/// Checks `records` (the bytes after a batch header) against the header's `count`;
/// `codec` is the batch's compression, `decompressed_max` the most bytes its records may
/// inflate to. With `require_keys` (a compacted topic), a record without a key is refused
/// (`MissingKeys`, naming the first three), once the whole batch is found well-formed.
pub(super) fn check(
    records: &[u8],
    count: i32,
    codec: i16,
    decompressed_max: usize,
    require_keys: bool,
) -> Result<(), BatchError> {
    let plain = decompress(records, codec, decompressed_max)?;
    let mut keyless = 0u32;
    let mut first = Vec::new();
    walk(&plain, Shape::Dense(count), |seen| {
        if require_keys && seen.key.is_none() {
            keyless += 1;
            if first.len() < 3 {
                first.push(seen.offset_delta as i32);
            }
        }
        false
    })?;
    if keyless > 0 {
        return Err(BatchError::MissingKeys {
            count: keyless,
            first,
        });
    }
    Ok(())
}

/// Every record of a stored batch (maybe cleaned: `count` of them, their offset deltas
/// increasing up to `last_offset_delta`), from its decompressed records (`decompress`),
/// shown to `each` in order. The records are checked whole before the first is shown, so a
/// batch that is not well-formed shows none.
pub(super) fn each_stored<'a>(
    plain: &'a [u8],
    (count, last_offset_delta): (i32, i32),
    mut each: impl FnMut(Seen<'a>),
) -> Result<(), BatchError> {
    let shape = Shape::Sparse {
        count,
        last_offset_delta,
    };
    walk(plain, shape, |_| false)?;
    walk(plain, shape, |seen| {
        each(seen);
        false
    })?;
    Ok(())
}

/// The offset delta and timestamp delta of the first record whose timestamp (the batch's
/// `base_timestamp` plus its delta) is at or after `timestamp`, if any. The records of a
/// stored batch are decompressed and walked as [`check`] does, except that a cleaned batch
/// may hold fewer records than its offsets (`count` of them, their offset deltas increasing
/// up to `last_offset_delta`, maybe none).
pub(super) fn first_at(
    records: &[u8],
    (count, last_offset_delta): (i32, i32),
    codec: i16,
    decompressed_max: usize,
    base_timestamp: i64,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, BatchError> {
    let plain = decompress(records, codec, decompressed_max)?;
    walk(
        &plain,
        Shape::Sparse {
            count,
            last_offset_delta,
        },
        |seen| base_timestamp.saturating_add(seen.timestamp_delta) >= timestamp,
    )
}

const UNDECOMPRESSABLE: BatchError = BatchError::Corrupt("compressed records do not decompress");

/// The records of a batch compressed with `codec`, decompressed: at most `max` bytes, or
/// `DecompressedTooLarge`. Uncompressed records are borrowed as they are.
pub(super) fn decompress(
    records: &[u8],
    codec: i16,
    max: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, BatchError> {
    let inflated = match codec {
        0 => return Ok(std::borrow::Cow::Borrowed(records)),
        // Java's GZIPInputStream reads every member of a multi-member stream.
        GZIP => inflate(flate2::read::MultiGzDecoder::new(records), max)?,
        SNAPPY => snappy(records, max)?,
        LZ4 => inflate(
            lz4::Decoder::new(records).map_err(|_| UNDECOMPRESSABLE)?,
            max,
        )?,
        ZSTD => inflate(
            zstd::stream::read::Decoder::new(records).map_err(|_| UNDECOMPRESSABLE)?,
            max,
        )?,
        _ => return Err(BatchError::Invalid("unknown compression codec")),
    };
    Ok(std::borrow::Cow::Owned(inflated))
}

/// Reads a decompressing reader to its end, refusing more than `max` bytes. The buffer grows
/// by doubling but never past `max + 1` bytes (the one more tells an overflow), so a bomb
/// costs at most the limit.
fn inflate<R: Read>(mut reader: R, max: usize) -> Result<Vec<u8>, BatchError> {
    let limit = max.saturating_add(1);
    let mut out = Vec::new();
    let mut len = 0;
    loop {
        if len == out.len() {
            if len == limit {
                break;
            }
            let grown = (len * 2).max(64 << 10).min(limit);
            out.reserve_exact(grown - out.len());
            out.resize(grown, 0);
        }
        match reader.read(&mut out[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(UNDECOMPRESSABLE),
        }
    }
    if len > max {
        return Err(BatchError::DecompressedTooLarge { max });
    }
    out.truncate(len);
    Ok(out)
}

/// snappy-java's stream header: its magic, then its version and the oldest version that can
/// read it (both big-endian `i32`s).
const SNAPPY_JAVA_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const SNAPPY_JAVA_HEADER_LEN: usize = 16;

/// Whether `header` (16 bytes) is snappy-java's stream header; an old version no reader
/// accepts is an error, as in snappy-java.
fn snappy_java_header(header: &[u8]) -> Result<bool, BatchError> {
    if header[..8] != SNAPPY_JAVA_MAGIC[..] {
        return Ok(false);
    }
    let version = i32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
    if version < 1 {
        return Err(UNDECOMPRESSABLE);
    }
    Ok(true)
}

/// Snappy as Kafka reads it (snappy-java's `SnappyInputStream`): the xerial framing (the
/// 16-byte header, then raw snappy blocks each after its big-endian `u32` length; a header
/// again where a length would be starts a concatenated stream, a bad one ends the stream,
/// and fewer than 4 bytes left end it too), or, without that header (librdkafka may send
/// it), the whole as one raw snappy block. Every block's decompressed length is read from
/// its header first, so the output is allocated once, exactly, and only within `max`.
fn snappy(records: &[u8], max: usize) -> Result<Vec<u8>, BatchError> {
    let framed = records.len() >= SNAPPY_JAVA_HEADER_LEN
        && snappy_java_header(&records[..SNAPPY_JAVA_HEADER_LEN])?;
    let mut blocks = Vec::new();
    if framed {
        let mut rest = &records[SNAPPY_JAVA_HEADER_LEN..];
        while rest.len() >= 4 {
            let (length, after) = rest.split_at(4);
            if length == &SNAPPY_JAVA_MAGIC[..4] {
                if after.len() < SNAPPY_JAVA_HEADER_LEN - 4 {
                    return Err(UNDECOMPRESSABLE);
                }
                if !snappy_java_header(&rest[..SNAPPY_JAVA_HEADER_LEN])? {
                    break;
                }
                rest = &rest[SNAPPY_JAVA_HEADER_LEN..];
                continue;
            }
            let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
            if length > after.len() {
                return Err(UNDECOMPRESSABLE);
            }
            let (block, after) = after.split_at(length);
            blocks.push(block);
            rest = after;
        }
    } else {
        blocks.push(records);
    }
    let mut total = 0usize;
    for block in &blocks {
        let len = snap::raw::decompress_len(block).map_err(|_| UNDECOMPRESSABLE)?;
        total = total.saturating_add(len);
        if total > max {
            return Err(BatchError::DecompressedTooLarge { max });
        }
    }
    let mut out = vec![0u8; total];
    let mut at = 0;
    let mut decoder = snap::raw::Decoder::new();
    for block in blocks {
        let len = snap::raw::decompress_len(block).map_err(|_| UNDECOMPRESSABLE)?;
        let written = decoder
            .decompress(block, &mut out[at..at + len])
            .map_err(|_| UNDECOMPRESSABLE)?;
        if written != len {
            return Err(UNDECOMPRESSABLE);
        }
        at += len;
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
    /// bytes. Its bytes, `None` when null.
    fn field(&mut self, nullable: bool) -> Result<Option<&'a [u8]>, BatchError> {
        let len = self.varint()?;
        if len == -1 && nullable {
            return Ok(None);
        }
        self.take(len).map(Some)
    }
}

const SHORT: BatchError = BatchError::Invalid("a record runs past the end of its batch");

/// What the records of a batch must look like.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// As produced: this many records, offset deltas 0, 1, 2, ... (Kafka requires it).
    Dense(i32),
    /// As stored, maybe cleaned (compacted): this many records, offset deltas increasing,
    /// none past the header's last offset delta.
    Sparse { count: i32, last_offset_delta: i32 },
}

/// One record, as the walk shows it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen<'a> {
    pub(super) offset_delta: i64,
    pub(super) timestamp_delta: i64,
    /// Its key, `None` when null.
    pub(super) key: Option<&'a [u8]>,
    /// Its value is null (a tombstone, on a compacted topic).
    pub(super) null_value: bool,
    /// Its bytes after the offset delta (key, value, headers), exactly as stored.
    pub(super) tail: &'a [u8],
}

/// Walks the records filling `bytes` exactly, as many as `shape` says, showing `stop` each
/// one: the first record it says yes to ends the walk (its offset and timestamp deltas are
/// the answer) and the records after it are not checked; `None` when it said yes to none.
fn walk<'a>(
    bytes: &'a [u8],
    shape: Shape,
    mut stop: impl FnMut(Seen<'a>) -> bool,
) -> Result<Option<(i64, i64)>, BatchError> {
    let mut all = Cursor { bytes };
    let count = match shape {
        Shape::Dense(count) | Shape::Sparse { count, .. } => count,
    };
    let mut previous = -1i64;
    for i in 0..i64::from(count) {
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
        let timestamp_delta = record.varlong(10)?;
        let offset_delta = record.varint()?;
        match shape {
            Shape::Dense(_) if offset_delta != i => {
                return Err(BatchError::Invalid(
                    "record offset deltas must be 0, 1, 2, ... in order",
                ));
            }
            Shape::Sparse {
                last_offset_delta, ..
            } if offset_delta <= previous || offset_delta > i64::from(last_offset_delta) => {
                return Err(BatchError::Invalid(
                    "record offset deltas must increase, up to the last offset delta",
                ));
            }
            _ => {}
        }
        previous = offset_delta;
        let tail = record.bytes;
        let key = record.field(true)?;
        let null_value = record.field(true)?.is_none();
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
        let seen = Seen {
            offset_delta,
            timestamp_delta,
            key,
            null_value,
            tail,
        };
        if stop(seen) {
            return Ok(Some((offset_delta, timestamp_delta)));
        }
    }
    if !all.is_empty() {
        return Err(BatchError::Invalid(
            "the batch holds more bytes than its records",
        ));
    }
    Ok(None)
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
            Compression::None => 0,
            Compression::Gzip => GZIP,
            Compression::Snappy => SNAPPY,
            Compression::Lz4 => LZ4,
            Compression::Zstd => ZSTD,
        }
    }

    const COMPRESSED: [Compression; 4] = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The records section of `records` as librdkafka sends snappy: one raw snappy block,
    /// without snappy-java's framing.
    fn raw_snappy(records: &[Record]) -> Vec<u8> {
        let plain = encode(records, Compression::None);
        snap::raw::Encoder::new()
            .compress_vec(&plain[61..])
            .expect("compress")
    }

    #[test]
    fn what_kafka_protocol_encodes_passes_in_every_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            for (count, headers) in [(1, 0), (7, 2), (300, 1)] {
                let batch = encode(&records(count, headers), compression);
                assert_eq!(
                    check(&batch[61..], count, codec(compression), 1 << 20, false),
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
        assert!(
            check(body, 4, 0, 1 << 20, false).is_err(),
            "more records promised"
        );
        assert!(
            check(body, i32::MAX, 0, 1 << 20, false).is_err(),
            "two billion"
        );
        assert!(
            check(body, 2, 0, 1 << 20, false).is_err(),
            "fewer records promised"
        );
        assert!(check(&body[..body.len() - 1], 3, 0, 1 << 20, false).is_err());
        // One record whose header count claims two billion headers.
        let mut one = vec![0u8]; // attributes
        one.push(0); // timestamp delta 0
        one.push(0); // offset delta 0
        one.push(1); // key null (zigzag -1)
        one.push(1); // value null
        one.extend_from_slice(&[0xFE, 0xFF, 0xFF, 0xFF, 0x0F]); // headers: i32::MAX
        let mut record = vec![(one.len() as u8) << 1];
        record.extend_from_slice(&one);
        assert!(check(&record, 1, 0, 1 << 20, false).is_err());
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
        for compression in COMPRESSED {
            let batch = encode(&big, compression);
            assert!(batch.len() < 100_000, "{compression:?}: {}", batch.len());
            assert_eq!(
                check(&batch[61..], 200, codec(compression), 1 << 20, false),
                Err(BatchError::DecompressedTooLarge { max: 1 << 20 })
            );
            assert_eq!(
                check(&batch[61..], 200, codec(compression), 4 << 20, false),
                Ok(())
            );
            // Cut in half: what inflates is fewer records than promised, or nothing.
            let half = 61 + (batch.len() - 61) / 2;
            assert!(check(&batch[61..half], 200, codec(compression), 4 << 20, false).is_err());
        }
        let raw = raw_snappy(&big);
        assert!(raw.len() < 200_000, "raw snappy: {}", raw.len());
        assert_eq!(
            check(&raw, 200, SNAPPY, 1 << 20, false),
            Err(BatchError::DecompressedTooLarge { max: 1 << 20 })
        );
        assert_eq!(check(&raw, 200, SNAPPY, 4 << 20, false), Ok(()));
    }

    #[test]
    fn compressed_records_that_disagree_with_the_count_are_refused() {
        let three = records(3, 1);
        for compression in COMPRESSED {
            let batch = encode(&three, compression);
            let body = &batch[61..];
            let codec = codec(compression);
            assert_eq!(
                check(body, 3, codec, 1 << 20, false),
                Ok(()),
                "{compression:?}"
            );
            for count in [2, 4, i32::MAX] {
                assert!(
                    matches!(
                        check(body, count, codec, 1 << 20, false),
                        Err(BatchError::Invalid(_))
                    ),
                    "{compression:?}: {count} records promised, 3 held"
                );
            }
            // Records that are not what they claim to be, compressed.
            let mut plain = encode(&three, Compression::None)[61..].to_vec();
            plain.push(0);
            let garbage = match compression {
                Compression::Gzip => {
                    use std::io::Write;
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    e.write_all(&plain).expect("gzip");
                    e.finish().expect("gzip")
                }
                Compression::Snappy => snap::raw::Encoder::new()
                    .compress_vec(&plain)
                    .expect("snappy"),
                _ => continue,
            };
            assert_eq!(
                check(&garbage, 3, codec, 1 << 20, false),
                Err(BatchError::Invalid(
                    "the batch holds more bytes than its records"
                )),
                "{compression:?}"
            );
        }
        let raw = raw_snappy(&three);
        assert_eq!(check(&raw, 3, SNAPPY, 1 << 20, false), Ok(()));
        assert!(matches!(
            check(&raw, 4, SNAPPY, 1 << 20, false),
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn snappy_is_read_as_snappy_java_reads_it() {
        let three = records(3, 1);
        let plain = encode(&three, Compression::None)[61..].to_vec();
        let framed = encode(&three, Compression::Snappy)[61..].to_vec();
        assert_eq!(
            &framed[..8],
            SNAPPY_JAVA_MAGIC,
            "kafka-protocol frames as Kafka"
        );
        assert_eq!(snappy(&framed, 1 << 20).expect("framed"), plain);
        assert_eq!(snappy(&raw_snappy(&three), 1 << 20).expect("raw"), plain);
        // Two streams one after the other (a second header where a length would be), and up
        // to three stray bytes at the end: the whole of both, as snappy-java reads them.
        let half = plain.len() / 2;
        let stream = |part: &[u8]| {
            let block = snap::raw::Encoder::new()
                .compress_vec(part)
                .expect("snappy");
            let mut out = framed[..SNAPPY_JAVA_HEADER_LEN].to_vec();
            out.extend_from_slice(&(block.len() as u32).to_be_bytes());
            out.extend_from_slice(&block);
            out
        };
        let mut two = stream(&plain[..half]);
        two.extend_from_slice(&stream(&plain[half..]));
        two.extend_from_slice(&[0, 0, 1]);
        assert_eq!(snappy(&two, 1 << 20).expect("concatenated"), plain);
        // A block length past the end, or a block that is not snappy: not decompressable.
        let mut long = framed.clone();
        long[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(snappy(&long, 1 << 20), Err(UNDECOMPRESSABLE));
        let mut broken = framed.clone();
        broken[20..].fill(0xff);
        assert!(snappy(&broken, 1 << 20).is_err());
        // A raw block whose header claims 4 GiB: refused before anything is allocated.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert_eq!(
            snappy(&claim, 1 << 20),
            Err(BatchError::DecompressedTooLarge { max: 1 << 20 })
        );
    }

    #[test]
    fn inflating_never_holds_more_than_the_limit() {
        let max = 300_000;
        let exact = inflate(std::io::repeat(7).take(max as u64), max).expect("at the limit");
        assert_eq!(exact.len(), max);
        assert!(exact.capacity() <= max + 1, "{}", exact.capacity());
        assert_eq!(
            inflate(std::io::repeat(7), max),
            Err(BatchError::DecompressedTooLarge { max })
        );
    }

    #[test]
    fn the_lookup_finds_the_first_record_at_or_after_a_timestamp_in_every_codec() {
        let seven = records(7, 1);
        let base = seven[0].timestamp;
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode(&seven, compression);
            let at = |timestamp| {
                first_at(
                    &batch[61..],
                    (7, 6),
                    codec(compression),
                    1 << 20,
                    base,
                    timestamp,
                )
            };
            assert_eq!(at(base + 4), Ok(Some((4, 4))), "{compression:?}");
            assert_eq!(at(0), Ok(Some((0, 0))), "{compression:?}");
            assert_eq!(at(base + 7), Ok(None), "{compression:?}");
        }
        let raw = raw_snappy(&seven);
        assert_eq!(
            first_at(&raw, (7, 6), SNAPPY, 1 << 20, base, base + 5),
            Ok(Some((5, 5)))
        );
        // Past the limit, the lookup cannot look in.
        let batch = encode(&seven, Compression::Gzip);
        assert_eq!(
            first_at(&batch[61..], (7, 6), GZIP, 10, base, base + 5),
            Err(BatchError::DecompressedTooLarge { max: 10 })
        );
    }

    /// A stored batch's records may skip offsets (cleaned), but never go back or past the
    /// header's last offset delta, and must still be as many as its count says.
    #[test]
    fn stored_records_may_have_gaps_but_stay_in_order_and_in_range() {
        let three = encode(&records(3, 0), Compression::None);
        let body = &three[61..];
        let at = |shape, timestamp| first_at(body, shape, 0, 1 << 20, 1_700_000_000_000, timestamp);
        assert_eq!(at((3, 2), 1_700_000_000_001), Ok(Some((1, 1))));
        assert_eq!(
            at((3, 9), 1_700_000_000_002),
            Ok(Some((2, 2))),
            "a gap after"
        );
        assert!(
            matches!(at((3, 1), i64::MAX), Err(BatchError::Invalid(_))),
            "past the last delta"
        );
        assert!(
            matches!(at((4, 9), i64::MAX), Err(BatchError::Invalid(_))),
            "fewer than counted"
        );
        assert!(
            matches!(at((2, 9), i64::MAX), Err(BatchError::Invalid(_))),
            "more than counted"
        );
        assert_eq!(first_at(&[], (0, 5), 0, 1 << 20, 0, 0), Ok(None), "emptied");
        // Two records whose deltas go back (2, then 1): the raw records of a batch swapped.
        let plain = body.to_vec();
        let first_len = (plain[0] >> 1) as usize + 1;
        let second_len = (plain[first_len] >> 1) as usize + 1;
        let mut swapped = plain[first_len + second_len..].to_vec();
        swapped.extend_from_slice(&plain[first_len..first_len + second_len]);
        assert!(matches!(
            first_at(&swapped, (2, 5), 0, 1 << 20, 0, i64::MAX),
            Err(BatchError::Invalid(_))
        ));
        // At produce the deltas must be dense: the same two records with a gap are refused.
        let mut gap = plain[..first_len].to_vec();
        gap.extend_from_slice(&plain[first_len + second_len..]);
        assert!(matches!(
            check(&gap, 2, 0, 1 << 20, false),
            Err(BatchError::Invalid(_))
        ));
        assert_eq!(first_at(&gap, (2, 2), 0, 1 << 20, 0, i64::MAX), Ok(None));
    }

    proptest::proptest! {
        #![proptest_config(crate::test_support::fixed_seed_config(256))]

        /// No bytes make a codec panic or return more than the limit.
        #[test]
        fn decompressing_any_bytes_never_panics(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            codec in 1i16..=4,
            framed in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = data;
            if framed && codec == SNAPPY {
                let mut header = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
                header.extend_from_slice(&bytes);
                bytes = header;
            }
            if let Ok(out) = decompress(&bytes, codec, 4096) {
                proptest::prop_assert!(out.len() <= 4096);
            }
            let _ = check(&bytes, 3, codec, 4096, false);
        }
    }
}
