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

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as WireCompression, Record as WireRecord, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{codes, Error, Result};

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
    /// Records queued per partition before `send` waits (backpressure).
    pub queue_records: usize,
    /// The timeout the broker is given for a produce (acks=all replication).
    pub request_timeout_ms: i32,
    /// Batch compression.
    pub compression: Compression,
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
            queue_records: 100_000,
            request_timeout_ms: 30_000,
            compression: Compression::None,
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
            }),
            workers: Mutex::new(BTreeMap::new()),
            sticky: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Queues a record; waits only when the partition's queue is full. The returned future
    /// resolves to where the record landed, or why not.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let topic = self.shared.client.topic(&record.topic).await?;
        let count = topic.partitions.len() as i32;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if (0..count).contains(&p) => p,
            (Some(p), _) => {
                return Err(Error::Invalid(format!(
                    "topic {} has {count} partitions, not {p}",
                    record.topic
                )))
            }
            (None, Some(key)) => (murmur2(key) & 0x7fff_ffff) % count,
            (None, None) => self.sticky_partition(&record, count),
        };
        let timestamp = record
            .timestamp_ms
            .unwrap_or_else(|| self.shared.client.config().wall_clock.now_ms());
        let headers = record
            .headers
            .into_iter()
            .map(|(k, v)| (StrBytes::from_string(k), v))
            .collect::<IndexMap<_, _>>();
        let wire = WireRecord {
            transactional: false,
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
        let worker = Worker {
            shared: self.shared.clone(),
            topic: topic.to_string(),
            partition,
            items: rx,
            producer: None,
            next_sequence: 0,
            open: Vec::new(),
            open_bytes: 0,
            open_since: None,
            unsent: VecDeque::new(),
            in_flight: VecDeque::new(),
            flushes: Vec::new(),
            closed: false,
            retired: None,
        };
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

/// A sealed batch: its records keep their sequences across retries.
struct Batch {
    records: Vec<WireRecord>,
    replies: Vec<Reply>,
    base_sequence: i32,
    producer: (i64, i16),
    bytes: Bytes,
    created: Instant,
    /// A request carrying it got no definite answer: it may be in the log.
    maybe_written: bool,
}

impl Batch {
    fn encode(&mut self, compression: Compression) -> Result<()> {
        let (producer_id, epoch) = self.producer;
        for (i, record) in self.records.iter_mut().enumerate() {
            record.offset = i as i64;
            record.producer_id = producer_id;
            record.producer_epoch = epoch;
            // Without a producer id the batch's base sequence is -1. The encoder starts a new
            // batch wherever `offset - sequence` changes, so the records count up from -1
            // (with -1 on every record, each would become a batch of its own, and the broker
            // refuses more than one batch per partition).
            record.sequence = if producer_id >= 0 {
                sequence_add(self.base_sequence, i as i32)
            } else {
                i as i32 - 1
            };
        }
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &self.records,
            &RecordEncodeOptions {
                version: 2,
                compression: match compression {
                    Compression::None => WireCompression::None,
                    Compression::Gzip => WireCompression::Gzip,
                    Compression::Snappy => WireCompression::Snappy,
                    Compression::Lz4 => WireCompression::Lz4,
                    Compression::Zstd => WireCompression::Zstd,
                },
            },
        )
        .map_err(|e| Error::Invalid(format!("cannot encode a record batch: {e}")))?;
        self.bytes = buf.freeze();
        Ok(())
    }

    fn resolve(self, partition: i32, base_offset: Option<i64>) {
        for (i, reply) in self.replies.into_iter().enumerate() {
            let offset = base_offset.map_or(-1, |b| b + i as i64);
            let _ = reply.send(Ok(Delivered { partition, offset }));
        }
    }

    fn fail(self, error: Error) {
        let error = if self.maybe_written || error.is_indeterminate() {
            SendError::MaybeWritten(error)
        } else {
            SendError::NotWritten(error)
        };
        for reply in self.replies {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

fn sequence_add(base: i32, count: i32) -> i32 {
    ((i64::from(base) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

type Answer = Pin<Box<dyn Future<Output = Result<Option<ProduceResponse>>> + Send + Sync>>;

struct Worker {
    shared: Arc<Shared>,
    topic: String,
    partition: i32,
    items: mpsc::Receiver<Item>,
    producer: Option<(i64, i16)>,
    next_sequence: i32,
    open: Vec<(WireRecord, Reply)>,
    open_bytes: usize,
    open_since: Option<Instant>,
    unsent: VecDeque<Batch>,
    in_flight: VecDeque<(Batch, Answer)>,
    flushes: Vec<oneshot::Sender<()>>,
    closed: bool,
    /// An identity whose epoch is exhausted: the next send asks for a new id.
    retired: Option<(i64, i16)>,
}

/// What to do after an answer.
enum Outcome {
    Acked(Option<i64>),
    /// Retry later; the batch may be in the log if `maybe` is set.
    Retry {
        error: Error,
        maybe: bool,
    },
    /// The broker refused the batch for good.
    Refused(Error),
    /// The partition's sequence is lost.
    SequenceLost(Error),
}

impl Worker {
    async fn run(mut self) {
        loop {
            // Before anything else: a path that fails batches may `continue` below.
            self.answer_flushes();
            if self.closed
                && self.open.is_empty()
                && self.unsent.is_empty()
                && self.in_flight.is_empty()
            {
                self.answer_flushes();
                return;
            }
            self.collect().await;
            self.seal_full_batches();
            if self.in_flight.is_empty() && self.unsent.is_empty() {
                self.linger().await;
            }
            self.expire();
            if let Err(error) = self.send_window().await {
                // No leader or no connection: nothing was written; try again after a pause.
                self.shared.client.backoff().await;
                if !error.is_retriable() {
                    if let Some(batch) = self.unsent.pop_front() {
                        let start = batch.base_sequence;
                        batch.fail(error);
                        self.renumber_from(start);
                    }
                }
                let _ = self.shared.client.refresh_metadata(&[&self.topic]).await;
                continue;
            }
            if let Some((batch, answer)) = self.in_flight.pop_front() {
                let answer = answer.await;
                let outcome = self.outcome(answer);
                self.handle(batch, outcome).await;
            }
            self.answer_flushes();
        }
    }

    /// Takes every queued item without waiting; waits for one if there is nothing to do.
    async fn collect(&mut self) {
        let idle = self.open.is_empty() && self.unsent.is_empty() && self.in_flight.is_empty();
        if idle && !self.closed {
            match self.items.recv().await {
                Some(item) => self.take(item),
                None => self.closed = true,
            }
        }
        while let Ok(item) = self.items.try_recv() {
            self.take(item);
        }
    }

    fn take(&mut self, item: Item) {
        match item {
            Item::Record(record, reply) => {
                let size = record.value.as_ref().map_or(0, Bytes::len)
                    + record.key.as_ref().map_or(0, Bytes::len)
                    + 16;
                // A batch never grows past `batch_bytes` (unless one record is larger).
                if self.open_bytes + size > self.shared.config.batch_bytes {
                    self.seal();
                }
                self.open_bytes += size;
                self.open_since.get_or_insert_with(Instant::now);
                self.open.push((record, reply));
            }
            Item::Flush(done) => {
                self.flushes.push(done);
                // Send what is open now instead of lingering.
                self.seal();
            }
        }
    }

    /// Waits (up to the linger) for more records when the open batch is not full.
    async fn linger(&mut self) {
        let Some(since) = self.open_since else { return };
        let deadline = since + self.shared.config.linger;
        // A timer whose deadline has passed still waits for the timer wheel's next tick
        // (about 1 ms): check the clock instead of arming one.
        while self.open_bytes < self.shared.config.batch_bytes
            && !self.closed
            && Instant::now() < deadline
        {
            match tokio::time::timeout_at(deadline, self.items.recv()).await {
                Ok(Some(item)) => self.take(item),
                Ok(None) => self.closed = true,
                Err(_) => break,
            }
        }
        self.seal();
    }

    fn seal_full_batches(&mut self) {
        if self.open_bytes >= self.shared.config.batch_bytes || self.closed {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let (records, replies): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.open).into_iter().unzip();
        let count = records.len() as i32;
        let batch = Batch {
            records,
            replies,
            base_sequence: self.next_sequence,
            producer: (-1, -1),
            bytes: Bytes::new(),
            created: self.open_since.take().unwrap_or_else(Instant::now),
            maybe_written: false,
        };
        self.next_sequence = sequence_add(self.next_sequence, count);
        self.open_bytes = 0;
        self.unsent.push_back(batch);
    }

    /// Fails batches past their delivery timeout. Giving up a batch that may be in the log
    /// loses the partition's sequence; everything after it fails too.
    fn expire(&mut self) {
        let timeout = self.shared.config.delivery_timeout;
        let expired = self
            .unsent
            .front()
            .is_some_and(|b| b.created.elapsed() >= timeout);
        if !expired || !self.in_flight.is_empty() {
            return;
        }
        let batch = self.unsent.pop_front().expect("checked");
        let (maybe, start) = (batch.maybe_written, batch.base_sequence);
        batch.fail(Error::Timeout);
        if maybe {
            self.lose_sequence(Error::Timeout);
        } else {
            self.renumber_from(start);
        }
    }

    /// Sends unsent batches, in order, until the window is full.
    async fn send_window(&mut self) -> Result<()> {
        let max = self.shared.config.max_in_flight;
        while self.in_flight.len() < max && !self.unsent.is_empty() {
            let producer = self.producer().await?;
            let batch = self.unsent.front_mut().expect("checked");
            if batch.bytes.is_empty() || batch.producer != producer {
                batch.producer = producer;
                batch.encode(self.shared.config.compression)?;
            }
            let connection = self
                .shared
                .client
                .leader(&self.topic, self.partition)
                .await?;
            let version = connection.version(ApiKey::Produce)?;
            let acks = match self.shared.config.acks {
                Acks::None => 0,
                Acks::Leader => 1,
                Acks::All => -1,
            };
            let mut partition = PartitionProduceData::default();
            partition.index = self.partition;
            partition.records = Some(batch.bytes.clone());
            let mut topic = TopicProduceData::default();
            topic.name = TopicName(StrBytes::from_string(self.topic.clone()));
            topic.partition_data = vec![partition];
            let mut request = ProduceRequest::default();
            request.acks = acks;
            request.timeout_ms = self.shared.config.request_timeout_ms;
            request.topic_data = vec![topic];
            let answer = connection.submit(request, version, acks != 0).await?;
            let mut batch = self.unsent.pop_front().expect("checked");
            batch.maybe_written = batch.maybe_written || acks == 0;
            let answer: Answer = match answer {
                None => Box::pin(async { Ok(None) }),
                Some(answer) => Box::pin(async move {
                    connection
                        .wait::<ProduceRequest>(answer, version)
                        .await
                        .map(Some)
                }),
            };
            self.in_flight.push_back((batch, answer));
        }
        Ok(())
    }

    fn outcome(&self, answer: Result<Option<ProduceResponse>>) -> Outcome {
        let response = match answer {
            Ok(None) => return Outcome::Acked(None),
            Ok(Some(response)) => response,
            Err(error) => {
                let maybe = error.is_indeterminate();
                return if error.is_retriable() {
                    Outcome::Retry { error, maybe }
                } else {
                    Outcome::Refused(error)
                };
            }
        };
        let Some(partition) = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == self.partition)
        else {
            return Outcome::Retry {
                error: Error::Protocol("the produce answer lacks the partition".into()),
                maybe: true,
            };
        };
        let message = partition
            .error_message
            .as_ref()
            .map(|m| m.as_str().to_string());
        match partition.error_code {
            codes::NONE => Outcome::Acked(Some(partition.base_offset)),
            codes::OUT_OF_ORDER_SEQUENCE_NUMBER | codes::UNKNOWN_PRODUCER_ID => {
                Outcome::SequenceLost(Error::broker(partition.error_code, message))
            }
            code if codes::retriable(code) => Outcome::Retry {
                error: Error::broker(code, message),
                maybe: code == codes::REQUEST_TIMED_OUT,
            },
            code => Outcome::Refused(Error::broker(code, message)),
        }
    }

    /// Handles the answer for the oldest batch in flight.
    async fn handle(&mut self, batch: Batch, outcome: Outcome) {
        if let Outcome::Acked(base) = outcome {
            batch.resolve(self.partition, base);
            return;
        }
        // Something went wrong: collect every answer still coming, then decide.
        let mut failed = vec![(batch, outcome)];
        while let Some((batch, answer)) = self.in_flight.pop_front() {
            let answer = answer.await;
            let outcome = self.outcome(answer);
            match outcome {
                Outcome::Acked(base) => batch.resolve(self.partition, base),
                other => failed.push((batch, other)),
            }
        }
        // Failed batches go back in front of the unsent ones, in sequence order.
        let mut first_error = None;
        let mut lost = None;
        let mut refused_at = None;
        for (i, (mut batch, outcome)) in failed.into_iter().enumerate().rev() {
            match outcome {
                Outcome::Acked(_) => unreachable!("acknowledged batches were resolved"),
                Outcome::Retry { error, maybe } => {
                    batch.maybe_written |= maybe;
                    first_error = Some(error);
                }
                // Later batches are refused out of order because an earlier one failed.
                Outcome::SequenceLost(error) if i > 0 => first_error = Some(error),
                Outcome::SequenceLost(error) => lost = Some(error),
                // Only the oldest batch's refusal is final here; a later one is sent again and
                // answered again once it is the oldest.
                Outcome::Refused(error) if i == 0 => refused_at = Some(error),
                Outcome::Refused(error) => first_error = Some(error),
            }
            self.unsent.push_front(batch);
        }
        if let Some(error) = lost {
            self.lose_sequence(error);
            return;
        }
        if let Some(error) = refused_at {
            // The head was refused for good: fail it, and shift the later sequences down.
            let batch = self.unsent.pop_front().expect("pushed");
            let start = batch.base_sequence;
            batch.fail(error);
            self.renumber_from(start);
            return;
        }
        if first_error.is_some() {
            self.shared.client.backoff().await;
            let _ = self.shared.client.refresh_metadata(&[&self.topic]).await;
        }
    }

    /// A batch at sequence `start` was failed without being written: the batches after it
    /// take the sequences from `start` on, in order. Valid only when none of them can be in
    /// the log (the broker refuses batches after a gap), so with any doubt the sequence is lost.
    fn renumber_from(&mut self, start: i32) {
        let mut sequence = start;
        if self.unsent.iter().any(|b| b.maybe_written) {
            self.lose_sequence(Error::Protocol("a batch may be in the log".into()));
            return;
        }
        for batch in &mut self.unsent {
            batch.base_sequence = sequence;
            batch.bytes = Bytes::new();
            sequence = sequence_add(sequence, batch.records.len() as i32);
        }
        self.next_sequence = sequence;
    }

    /// Fails everything this partition holds and starts again under a new producer identity.
    fn lose_sequence(&mut self, error: Error) {
        for batch in self.unsent.drain(..) {
            batch.fail(error.clone());
        }
        for (record, reply) in self.open.drain(..) {
            drop(record);
            let _ = reply.send(Err(SendError::NotWritten(error.clone())));
        }
        self.open_bytes = 0;
        self.open_since = None;
        self.next_sequence = 0;
        // KIP-360 for idempotent producers: bump the epoch locally (the broker takes a higher
        // epoch from sequence 0 and fences the old one); a new id once the epoch is exhausted.
        match self.producer.take() {
            Some((id, epoch)) if epoch < i16::MAX => self.producer = Some((id, epoch + 1)),
            Some(exhausted) => self.retired = Some(exhausted),
            None => {}
        }
    }

    async fn producer(&mut self) -> Result<(i64, i16)> {
        if !self.shared.config.idempotent {
            return Ok((-1, -1));
        }
        if let Some(p) = self.producer {
            return Ok(p);
        }
        let producer = match self.retired.take() {
            // The epoch is exhausted: a new id.
            Some(_) => init_producer_id(&self.shared.client).await,
            None => {
                let mut shared = self.shared.producer.lock().await;
                match *shared {
                    Some(p) => Ok(p),
                    None => {
                        let p = init_producer_id(&self.shared.client).await;
                        if let Ok(p) = p {
                            *shared = Some(p);
                        }
                        p
                    }
                }
            }
        }?;
        self.producer = Some(producer);
        Ok(producer)
    }

    fn answer_flushes(&mut self) {
        if self.open.is_empty() && self.unsent.is_empty() && self.in_flight.is_empty() {
            for done in self.flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

/// Gets a new producer id (epoch 0 on oxbow; whatever the broker gives elsewhere).
async fn init_producer_id(client: &Client) -> Result<(i64, i16)> {
    let mut last = Error::Closed;
    for _ in 0..20 {
        let connection = match client.any_broker().await {
            Ok(c) => c,
            Err(e) => {
                last = e;
                client.backoff().await;
                continue;
            }
        };
        let version = connection.version(ApiKey::InitProducerId)?;
        let mut request = InitProducerIdRequest::default();
        request.transactional_id = None;
        request.transaction_timeout_ms = 60_000;
        request.producer_id = ProducerId(-1);
        request.producer_epoch = -1;
        match connection.call_version(request, version).await {
            Ok(response) if response.error_code == codes::NONE => {
                return Ok((response.producer_id.0, response.producer_epoch))
            }
            Ok(response) => last = Error::broker(response.error_code, None),
            Err(e) => last = e,
        }
        if !last.is_retriable() {
            return Err(last);
        }
        client.backoff().await;
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

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
