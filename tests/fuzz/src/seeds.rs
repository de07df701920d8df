//! What the seed corpora are made of: record batches as Kafka clients encode them, every
//! codec included.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// `count` records stamped from `timestamp` on, with keys and headers, compressed with
/// `compression`, from producer `producer` (-1: not idempotent).
pub fn batch_with(count: i32, timestamp: i64, compression: Compression, producer: i64) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer,
            producer_epoch: if producer >= 0 { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            // Consecutive, or the encoder starts a batch per record.
            sequence: if producer >= 0 {
                i
            } else {
                (-1i32).wrapping_add(i)
            },
            timestamp: timestamp + i64::from(i),
            key: (i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'v'; 10 + i as usize])),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut out, &records, &options).expect("encode");
    out.freeze()
}

/// A plain batch of `count` records from `timestamp` on.
pub fn batch(count: i32, timestamp: i64) -> Bytes {
    batch_with(count, timestamp, Compression::None, -1)
}

/// Every codec Kafka has.
pub const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];
