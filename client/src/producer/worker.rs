//! One partition's worker: its open records, sealed batches with their sequences, the
//! requests in flight, and what each answer means (acknowledged, retried, refused, or the
//! sequence lost).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as WireCompression, Record as WireRecord, RecordBatchEncoder, RecordEncodeOptions,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Acks, Compression, Delivered, Item, Reply, SendError, Shared};
use crate::client::Client;
use crate::error::{codes, Error, Result};

/// A sealed batch: its records keep their sequences across retries.
pub(super) struct Batch {
    pub(super) records: Vec<WireRecord>,
    pub(super) replies: Vec<Reply>,
    pub(super) base_sequence: i32,
    pub(super) producer: (i64, i16),
    pub(super) bytes: Bytes,
    pub(super) created: Instant,
    /// A request carrying it got no definite answer: it may be in the log.
    pub(super) maybe_written: bool,
    /// A request carrying it was handed to a connection (else it is surely not in the log).
    pub(super) sent: bool,
}

impl Batch {
    pub(super) fn encode(&mut self, compression: Compression) -> Result<()> {
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

pub(super) fn sequence_add(base: i32, count: i32) -> i32 {
    ((i64::from(base) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

type Answer = Pin<Box<dyn Future<Output = Result<Option<ProduceResponse>>> + Send + Sync>>;

pub(super) struct Worker {
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
    /// Why the last attempt to send failed before writing anything (no leader, no
    /// connection): named when a batch that was never sent outlives the delivery timeout.
    last_send_error: Option<Error>,
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
    pub(super) fn new(
        shared: Arc<Shared>,
        topic: &str,
        partition: i32,
        items: mpsc::Receiver<Item>,
    ) -> Self {
        Self {
            shared,
            topic: topic.to_string(),
            partition,
            items,
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
            last_send_error: None,
        }
    }

    pub(super) async fn run(mut self) {
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
                self.last_send_error = Some(error.clone());
                self.shared.client.backoff().await;
                if !error.is_retriable() {
                    if let Some(batch) = self.unsent.pop_front() {
                        let start = batch.base_sequence;
                        self.shared.note_failure(&error);
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
            sent: false,
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
        let error = if batch.sent {
            Error::Timeout
        } else {
            Error::NotSent(format!(
                "no request carried it within the delivery timeout ({} ms){}",
                timeout.as_millis(),
                self.last_send_error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; the last attempt failed: {e}"))
            ))
        };
        self.shared.note_failure(&error);
        batch.fail(error);
        if maybe {
            let cause = format!(
                "a batch ahead of it on {}/{} got no answer within the delivery timeout ({} ms) and may be in the log",
                self.topic,
                self.partition,
                timeout.as_millis()
            );
            self.lose_sequence(Error::Timeout, &cause);
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
            request.transactional_id = self
                .shared
                .config
                .transactional_id
                .as_ref()
                .map(|id| TransactionalId(StrBytes::from_string(id.clone())));
            let answer = connection.submit(request, version, acks != 0).await?;
            let mut batch = self.unsent.pop_front().expect("checked");
            batch.maybe_written = batch.maybe_written || acks == 0;
            batch.sent = true;
            self.last_send_error = None;
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
            let cause = format!("the broker answered a batch ahead of it with {error}");
            self.lose_sequence(error, &cause);
            return;
        }
        if let Some(error) = refused_at {
            // The head was refused for good: fail it, and shift the later sequences down.
            let batch = self.unsent.pop_front().expect("pushed");
            let start = batch.base_sequence;
            self.shared.note_failure(&error);
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
            self.lose_sequence(
                Error::Protocol("a batch may be in the log".into()),
                "a batch ahead of it failed, and one after that may be in the log",
            );
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
    /// Batches sent before fail with `error` (as not written, unless it or an earlier answer
    /// leaves doubt); records never sent fail as not sent, with `cause`: why the sequence was
    /// given up.
    fn lose_sequence(&mut self, error: Error, cause: &str) {
        self.shared.note_failure(&error);
        let not_sent = Error::NotSent(format!(
            "{cause}, so the partition's sequence was given up before this record was sent"
        ));
        for batch in self.unsent.drain(..) {
            if batch.sent {
                batch.fail(error.clone());
            } else {
                batch.fail(not_sent.clone());
            }
        }
        for (record, reply) in self.open.drain(..) {
            drop(record);
            let _ = reply.send(Err(SendError::NotWritten(not_sent.clone())));
        }
        self.open_bytes = 0;
        self.open_since = None;
        self.next_sequence = 0;
        if self.shared.config.transactional_id.is_some() {
            // A transactional producer's epoch comes from its coordinator: the transaction is
            // aborted, and the abort takes a new epoch (KIP-360) that every partition adopts.
            return;
        }
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
        if self.shared.config.transactional_id.is_some() {
            // The coordinator's producer id and epoch; a new epoch starts from sequence 0.
            let current = *self.shared.producer.lock().await;
            let Some(producer) = current else {
                return Err(Error::Invalid(
                    "a transactional producer sends after init_transactions()".into(),
                ));
            };
            if self.producer.is_some_and(|p| p != producer) {
                self.renumber_from(0);
            }
            self.producer = Some(producer);
            return Ok(producer);
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
