//! A produced record batch, as the broker checks it (`Batch::parse`: header, CRC, and every
//! record against the header, compressed ones inflated within a bound), stamps it, and later
//! looks into it by timestamp (`Batch::first_record_at`, ListOffsets). Nothing may panic, and
//! no decode may allocate past its bound.
//!
//! Input: one flags byte, eight bytes of the timestamp to look up, then the batch. With flag
//! bit 0 the harness writes the batch's true length and CRC-32C first, so the fuzzer reaches
//! the records behind the checksum.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use oxbow_core::batch::{Batch, TimestampType, HEADER_LEN};
use oxbow_core::ids::{Offset, Term};

/// Small, so that the fuzzer meets the bound; the real default is 64 MiB.
const DECOMPRESSED_MAX: usize = 1 << 20;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let Some((timestamp, batch)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let timestamp = i64::from_be_bytes(*timestamp);
    let mut batch = batch.to_vec();
    if flags & 1 != 0 && batch.len() >= HEADER_LEN {
        oxbow_fuzz::fix_batch_header(&mut batch);
    }
    let Ok(parsed) = Batch::parse(
        Bytes::from(batch),
        1 << 20,
        DECOMPRESSED_MAX,
        flags & 4 != 0,
    ) else {
        return;
    };
    assert!(parsed.record_count() >= 1);
    // As the leader stores it: stamped, then read back as a trusted batch.
    let timestamps = if flags & 2 != 0 {
        TimestampType::LogAppendTime
    } else {
        TimestampType::CreateTime
    };
    let stamped = parsed.stamp(Offset(1_000), Term(7), timestamps, 1_700_000_000_000);
    let stored = Batch::trusted(stamped.into_bytes());
    assert_eq!(stored.base_offset(), Offset(1_000));
    if let Ok(Some((offset, _))) = stored.first_record_at(timestamp, DECOMPRESSED_MAX) {
        assert!(offset >= stored.base_offset() && offset <= stored.last_offset());
    }
});
