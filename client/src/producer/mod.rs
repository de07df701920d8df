//! The producer: Kafka's default partitioner, batching by size and linger, acks 0/1/all, and
//! idempotence (on by default): per-partition sequences, at most `max_in_flight` requests in
//! flight per partition, and order kept across retries.
//!
//! One worker task per partition owns that partition's batches. It sends them in sequence
//! order, pipelined on the leader's connection. When an answer is an error, it waits for every
//! request in flight, then sends every unacknowledged batch again, in order, with the same
//! sequences: the broker answers a batch it already has with its original offset. A batch the
//! broker refuses for good is failed and the batches after it are renumbered. When the
//! partition's sequence is lost (the broker does not know the producer, or a batch may or may not
//! have been written and is given up), the worker fails what it holds and continues with the
//! epoch bumped locally (KIP-360 for idempotent producers), from sequence 0.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record as WireRecord, TimestampType};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::client::Client;
use crate::error::{Error, Result};

mod transaction;
mod worker;

pub use transaction::{TransactionError, TransactionalProducer};
use worker::Worker;
#[cfg(test)]
use worker::{sequence_add, Batch};

/// When the broker answers a produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// Never: the send resolves once written to the socket, with offset -1.
    None,
    /// Once the leader has written it.
    Leader,
    /// Once every in-sync replica has it (required for idempotence).
    All,
}

/// How batches are compressed (the broker stores them as sent; consumers decompress). Each
/// is written as Kafka's Java client writes it; the consumer reads all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip (one member).
    Gzip,
    /// Snappy, in snappy-java's framing (the consumer also reads raw snappy, which
    /// librdkafka may send).
    Snappy,
    /// LZ4 (frame format, as Kafka).
    Lz4,
    /// Zstandard.
    Zstd,
}

/// Producer settings.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Acknowledgement mode.
    pub acks: Acks,
    /// Idempotence: no duplicates and no reordering from retries. Needs `Acks::All`.
    pub idempotent: bool,
    /// How long a partition waits for more records before sending a batch that is not full.
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes of records.
    pub batch_bytes: usize,
    /// Requests in flight per partition (at most 5 with idempotence, as Kafka requires).
    pub max_in_flight: usize,
    /// How long a record may take, retries included, before it fails.
    pub delivery_timeout: Duration,
    /// How long `send` waits for a topic the cluster does not know yet to appear in its
    /// metadata (Kafka's `max.block.ms`, 60 s): a topic just created may not have reached the
    /// broker that answers. At most `delivery_timeout`.
    pub max_block: Duration,
    /// Records queued per partition before `send` waits (backpressure).
    pub queue_records: usize,
    /// The timeout the broker is given for a produce (acks=all replication).
    pub request_timeout_ms: i32,
    /// Batch compression.
    pub compression: Compression,
    /// A transactional producer's id (Kafka's `transactional.id`): set it to use
    /// [`TransactionalProducer`]; needs idempotence.
    pub transactional_id: Option<String>,
    /// Longest a transaction may stay open before its coordinator aborts it (Kafka's
    /// `transaction.timeout.ms`, 60 s).
    pub transaction_timeout_ms: i32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            idempotent: true,
            linger: Duration::from_millis(5),
            batch_bytes: 16 * 1024,
            max_in_flight: 5,
            delivery_timeout: Duration::from_secs(120),
            max_block: Duration::from_secs(60),
            queue_records: 100_000,
            request_timeout_ms: 30_000,
            compression: Compression::None,
            transactional_id: None,
            transaction_timeout_ms: 60_000,
        }
    }
}

/// A record to send.
#[derive(Clone, Debug, Default)]
pub struct ProducerRecord {
    /// Topic.
    pub topic: String,
    /// Partition; `None` lets the partitioner choose (murmur2 of the key, or sticky for no key).
    pub partition: Option<i32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Create time in Unix milliseconds; `None` means now.
    pub timestamp_ms: Option<i64>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl ProducerRecord {
    /// A record with a value only.
    pub fn new(topic: &str, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.to_string(),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// Sets the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// Where a record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Its partition.
    pub partition: i32,
    /// Its offset (-1 with `Acks::None`).
    pub offset: i64,
}

/// Why a record was not acknowledged, and whether it may be in the log anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The record is definitely not in the log.
    NotWritten(Error),
    /// The record may be in the log (a request carrying it got no definite answer).
    MaybeWritten(Error),
}

impl SendError {
    /// The underlying error.
    pub fn error(&self) -> &Error {
        match self {
            Self::NotWritten(e) | Self::MaybeWritten(e) => e,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotWritten(e) => write!(f, "not written: {e}"),
            Self::MaybeWritten(e) => write!(f, "may have been written: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// The outcome of one send, once it is known.
pub struct DeliveryFuture(oneshot::Receiver<std::result::Result<Delivered, SendError>>);

impl Future for DeliveryFuture {
    type Output = std::result::Result<Delivered, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(SendError::MaybeWritten(Error::Closed))))
    }
}

type Reply = oneshot::Sender<std::result::Result<Delivered, SendError>>;

enum Item {
    Record(WireRecord, Reply),
    Flush(oneshot::Sender<()>),
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    /// The producer id and epoch new partitions start with.
    producer: Mutex<Option<(i64, i16)>>,
    /// A transactional producer's first failed record since its transaction began: the
    /// transaction cannot commit.
    failed: std::sync::Mutex<Option<Error>>,
}

impl Shared {
    /// A record failed: a transactional producer's transaction must abort.
    fn note_failure(&self, error: &Error) {
        if self.config.transactional_id.is_some() {
            let mut failed = self.failed.lock().expect("not poisoned");
            failed.get_or_insert_with(|| error.clone());
        }
    }
}

/// Sends records; cheap to share behind an `Arc`. Dropping it lets queued records finish.
pub struct Producer {
    shared: Arc<Shared>,
    workers: Mutex<BTreeMap<(String, i32), mpsc::Sender<Item>>>,
    /// Per topic, the sticky partition for records without a key, and bytes sent to it.
    sticky: std::sync::Mutex<BTreeMap<String, (i32, usize)>>,
}

impl Producer {
    /// A producer on `client`.
    pub fn new(client: Client, config: ProducerConfig) -> Result<Self> {
        if config.idempotent && config.acks != Acks::All {
            return Err(Error::Invalid("idempotence needs acks=all".into()));
        }
        if config.idempotent && !(1..=5).contains(&config.max_in_flight) {
            return Err(Error::Invalid(
                "idempotence allows 1 to 5 requests in flight per partition".into(),
            ));
        }
        if config.transactional_id.is_some() && !config.idempotent {
            return Err(Error::Invalid(
                "a transactional producer is idempotent".into(),
            ));
        }
        if config.max_in_flight == 0 || config.queue_records == 0 || config.batch_bytes == 0 {
            return Err(Error::Invalid(
                "max_in_flight, queue_records and batch_bytes must be positive".into(),
            ));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                config,
                producer: Mutex::new(None),
                failed: std::sync::Mutex::new(None),
            }),
            workers: Mutex::new(BTreeMap::new()),
            sticky: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Queues a record; waits when the partition's queue is full, and for the topic's metadata
    /// while the topic is not available (no leader) or no broker answers, up to the delivery
    /// timeout. The returned future resolves to where the record landed, or why not. An error
    /// here means the record was not queued: it is not written.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let partition = self.partition(&record).await?;
        let timestamp = record
            .timestamp_ms
            .unwrap_or_else(|| self.shared.client.config().wall_clock.now_ms());
        let headers = record
            .headers
            .into_iter()
            .map(|(k, v)| (StrBytes::from_string(k), v))
            .collect::<IndexMap<_, _>>();
        let wire = WireRecord {
            transactional: self.shared.config.transactional_id.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp,
            key: record.key,
            value: record.value,
            headers,
        };
        let (reply, wait) = oneshot::channel();
        let worker = self.worker(&record.topic, partition).await;
        worker
            .send(Item::Record(wire, reply))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(DeliveryFuture(wait))
    }

    /// The partition `record` goes to: its own, or the partitioner's choice (murmur2 of the
    /// key, or sticky for no key).
    async fn partition(&self, record: &ProducerRecord) -> Result<i32> {
        let config = &self.shared.config;
        let now = tokio::time::Instant::now();
        let deadline = now + config.delivery_timeout;
        let unknown_deadline = now + config.max_block.min(config.delivery_timeout);
        let topic = self
            .shared
            .client
            .topic_until(&record.topic, deadline, unknown_deadline)
            .await?;
        let count = topic.partitions.len() as i32;
        Ok(match (record.partition, &record.key) {
            (Some(p), _) if (0..count).contains(&p) => p,
            (Some(p), _) => {
                return Err(Error::Invalid(format!(
                    "topic {} has {count} partitions, not {p}",
                    record.topic
                )))
            }
            (None, Some(key)) => (murmur2(key) & 0x7fff_ffff) % count,
            (None, None) => self.sticky_partition(record, count),
        })
    }

    /// Waits until every record sent before the call is acknowledged or failed.
    pub async fn flush(&self) {
        let workers: Vec<mpsc::Sender<Item>> =
            self.workers.lock().await.values().cloned().collect();
        let mut waits = Vec::new();
        for worker in workers {
            let (done, wait) = oneshot::channel();
            if worker.send(Item::Flush(done)).await.is_ok() {
                waits.push(wait);
            }
        }
        for wait in waits {
            let _ = wait.await;
        }
    }

    fn sticky_partition(&self, record: &ProducerRecord, count: i32) -> i32 {
        let size = record.value.as_ref().map_or(0, Bytes::len) + 16;
        let mut sticky = self.sticky.lock().expect("sticky lock");
        let entry = sticky.entry(record.topic.clone()).or_insert((0, 0));
        if entry.1 >= self.shared.config.batch_bytes || entry.0 >= count {
            entry.0 = (entry.0 + 1) % count;
            entry.1 = 0;
        }
        entry.1 += size;
        entry.0
    }

    async fn worker(&self, topic: &str, partition: i32) -> mpsc::Sender<Item> {
        let mut workers = self.workers.lock().await;
        let key = (topic.to_string(), partition);
        if let Some(w) = workers.get(&key).filter(|w| !w.is_closed()) {
            return w.clone();
        }
        let (tx, rx) = mpsc::channel(self.shared.config.queue_records);
        let worker = Worker::new(self.shared.clone(), topic, partition, rx);
        tokio::spawn(worker.run());
        workers.insert(key, tx.clone());
        tx
    }
}

/// Kafka's murmur2 (`Utils.murmur2`), used by the default partitioner.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ len as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// The simulator found this: without a producer id, every record became a batch of its own,
    /// and brokers take one batch per partition.
    #[test]
    fn a_batch_without_a_producer_id_encodes_as_one_batch() {
        let records = (0..5)
            .map(|i| WireRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 0,
                sequence: -1,
                timestamp: 1_000 + i,
                key: None,
                value: Some(Bytes::from(vec![b'v'; 10])),
                headers: Default::default(),
            })
            .collect();
        let (tx, _rx) = oneshot::channel();
        let mut batch = Batch {
            records,
            replies: vec![tx],
            base_sequence: 0,
            producer: (-1, -1),
            bytes: Bytes::new(),
            created: Instant::now(),
            maybe_written: false,
            sent: false,
        };
        batch.encode(Compression::None).expect("encodes");
        let mut bytes = batch.bytes.clone();
        let batches = kafka_protocol::records::RecordBatchDecoder::decode_batch_info(&mut bytes)
            .expect("decodes");
        assert_eq!(batches.len(), 1, "one batch");
        assert_eq!(batches[0].record_count, 5);
        assert_eq!(batches[0].base_sequence, -1);
        assert_eq!(batches[0].producer_id, -1);
    }

    fn timed_records(count: i64) -> Vec<WireRecord> {
        (0..count)
            .map(|i| WireRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: 7,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: 0,
                sequence: 0,
                timestamp: 1_000 + i,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{i}-{}", "v".repeat(i as usize)))),
                headers: Default::default(),
            })
            .collect()
    }

    #[test]
    fn every_codec_round_trips_through_the_consumer() {
        for (compression, codec) in [
            (Compression::None, 0),
            (Compression::Gzip, 1),
            (Compression::Snappy, 2),
            (Compression::Lz4, 3),
            (Compression::Zstd, 4),
        ] {
            let (tx, _rx) = oneshot::channel();
            let mut batch = Batch {
                records: timed_records(50),
                replies: vec![tx],
                base_sequence: 10,
                producer: (7, 0),
                bytes: Bytes::new(),
                created: Instant::now(),
                maybe_written: false,
                sent: false,
            };
            batch.encode(compression).expect("encodes");
            let attributes = i16::from_be_bytes([batch.bytes[21], batch.bytes[22]]);
            assert_eq!(attributes & 7, codec, "{compression:?} on the wire");
            let mut read = Vec::new();
            let next =
                crate::consumer::decode_records("t", 0, batch.bytes.clone(), 3, None, &mut read)
                    .expect("decodes");
            assert_eq!(next, 50, "{compression:?}");
            let values: Vec<Bytes> = read.iter().filter_map(|r| r.value.clone()).collect();
            let expected: Vec<Bytes> = timed_records(50)
                .into_iter()
                .skip(3)
                .filter_map(|r| r.value)
                .collect();
            assert_eq!(values, expected, "{compression:?}");
            assert_eq!(read[0].offset, 3);
            assert_eq!(read[0].timestamp, 1_003);
        }
    }

    /// librdkafka may send snappy as one raw block, without snappy-java's framing; Kafka reads
    /// it, and so does the consumer.
    #[test]
    fn the_consumer_reads_raw_snappy() {
        let (tx, _rx) = oneshot::channel();
        let mut batch = Batch {
            records: timed_records(20),
            replies: vec![tx],
            base_sequence: 0,
            producer: (7, 0),
            bytes: Bytes::new(),
            created: Instant::now(),
            maybe_written: false,
            sent: false,
        };
        batch.encode(Compression::None).expect("encodes");
        let plain = &batch.bytes;
        let block = snap::raw::Encoder::new()
            .compress_vec(&plain[61..])
            .expect("snappy");
        let mut raw = plain[..61].to_vec();
        raw.extend_from_slice(&block);
        raw[22] |= 2;
        let length = (raw.len() - 12) as i32;
        raw[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&raw[21..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut read = Vec::new();
        let next = crate::consumer::decode_records("t", 0, Bytes::from(raw), 0, None, &mut read)
            .expect("decodes");
        assert_eq!(next, 20);
        assert_eq!(read.len(), 20);
        assert_eq!(
            read[19].value.as_deref(),
            timed_records(20)[19].value.as_deref()
        );
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(murmur2(data), expected, "{:?}", std::str::from_utf8(data));
        }
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(sequence_add(i32::MAX, 1), 0);
        assert_eq!(sequence_add(5, 3), 8);
    }
}
