//! [`Consumer`]: assign partitions, seek (earliest, latest, offset, timestamp), and poll with
//! one fetch per leader, written to every leader at once; a poll returns the answers that came
//! and leaves a stuck leader's fetch outstanding (up to the request timeout) for a later poll. `read_committed` skips aborted transactional records and
//! control batches; the broker stops at the last stable offset.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::client::Client;
use crate::connection::Connection;
use crate::error::{codes, Error, Result};

/// Where to start reading a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// The first record held.
    Earliest,
    /// After the last record (only new records).
    Latest,
    /// This offset.
    Offset(i64),
    /// The first record with a timestamp at or after this (Unix milliseconds); the end if none.
    Timestamp(i64),
}

/// Consumer settings.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Longest a fetch waits at the broker for `min_bytes`.
    pub max_wait_ms: i32,
    /// Bytes a fetch waits for.
    pub min_bytes: i32,
    /// Most bytes per fetch response.
    pub max_bytes: i32,
    /// Most bytes per partition per fetch.
    pub partition_max_bytes: i32,
    /// Only committed transactional records (Kafka's `isolation.level=read_committed`).
    pub read_committed: bool,
    /// Where to go when a position is out of range (Kafka's `auto.offset.reset`).
    pub reset: Seek,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
            read_committed: false,
            reset: Seek::Earliest,
        }
    }
}

/// One record read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp (Unix milliseconds).
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    At(i64),
    Seek(Seek),
}

/// A fetch written to a leader and not answered yet: at most one per leader.
struct Outstanding {
    connection: Arc<Connection>,
    version: i16,
    answer: oneshot::Receiver<Result<Bytes>>,
    /// The answer once it came (a receiver is polled to its end only once).
    came: Option<std::result::Result<Result<Bytes>, oneshot::error::RecvError>>,
    /// Each partition asked for, with the offset asked from.
    asked: BTreeMap<(String, i32), i64>,
    /// When it is abandoned: written, plus the request timeout.
    expires: Instant,
}

/// Reads assigned partitions.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    positions: BTreeMap<(String, i32), Position>,
    /// Partitions whose position was out of range and went to `config.reset` since the last
    /// `take_resets`, each with the position it left (one entry per assigned partition).
    resets: BTreeMap<(String, i32), i64>,
    /// Fetches written and not answered yet, by leader; a poll returns what came without
    /// waiting for the rest, which a later poll collects.
    fetches: BTreeMap<i32, Outstanding>,
}

impl Consumer {
    /// A consumer on `client` with no partitions assigned.
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        Self {
            client,
            config,
            positions: BTreeMap::new(),
            resets: BTreeMap::new(),
            fetches: BTreeMap::new(),
        }
    }

    /// The partitions whose position was out of range (below the log start offset, or past
    /// the end) and was reset per `config.reset` since the last call, each with the position
    /// it left, as Kafka's consumer logs "Resetting offset for partition".
    pub fn take_resets(&mut self) -> Vec<(String, i32, i64)> {
        std::mem::take(&mut self.resets)
            .into_iter()
            .map(|((topic, partition), from)| (topic, partition, from))
            .collect()
    }

    /// The log start offset of a partition (Kafka's `beginningOffsets`), from its leader.
    pub async fn beginning_offset(&self, topic: &str, partition: i32) -> Result<i64> {
        self.list_offset(topic, partition, -2).await
    }

    /// The end of a partition, from its leader: its high watermark, or with `read_committed`
    /// its last stable offset (Kafka's `endOffsets`).
    pub async fn end_offset(&self, topic: &str, partition: i32) -> Result<i64> {
        self.list_offset(topic, partition, -1).await
    }

    /// Reads exactly these partitions from now on, each from `config.reset` unless sought.
    pub fn assign(&mut self, partitions: &[(&str, i32)]) {
        let keep: BTreeSet<(String, i32)> = partitions
            .iter()
            .map(|(t, p)| (t.to_string(), *p))
            .collect();
        self.positions.retain(|k, _| keep.contains(k));
        self.resets.retain(|k, _| keep.contains(k));
        for key in keep {
            self.positions
                .entry(key)
                .or_insert(Position::Seek(self.config.reset));
        }
    }

    /// Moves an assigned partition's position.
    pub fn seek(&mut self, topic: &str, partition: i32, to: Seek) -> Result<()> {
        let position = self
            .positions
            .get_mut(&(topic.to_string(), partition))
            .ok_or_else(|| Error::Invalid(format!("{topic}/{partition} is not assigned")))?;
        *position = match to {
            Seek::Offset(o) => Position::At(o),
            other => Position::Seek(other),
        };
        Ok(())
    }

    /// The next offset to read of an assigned partition, once known.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        match self.positions.get(&(topic.to_string(), partition)) {
            Some(Position::At(o)) => Some(*o),
            _ => None,
        }
    }

    /// Fetches records from every assigned partition, waiting up to `timeout` for some.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.resolve_positions().await?;
            let records = self.fetch_once(deadline).await?;
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
        }
    }

    /// Turns every pending seek into an offset with ListOffsets at the partition's leader.
    async fn resolve_positions(&mut self) -> Result<()> {
        let pending: Vec<((String, i32), Seek)> = self
            .positions
            .iter()
            .filter_map(|(k, p)| match p {
                Position::Seek(s) => Some((k.clone(), *s)),
                Position::At(_) => None,
            })
            .collect();
        for ((topic, partition), seek) in pending {
            let timestamp = match seek {
                Seek::Earliest => -2,
                Seek::Latest => -1,
                Seek::Timestamp(t) => t,
                Seek::Offset(o) => {
                    self.positions.insert((topic, partition), Position::At(o));
                    continue;
                }
            };
            match self.list_offset(&topic, partition, timestamp).await {
                Ok(offset) => {
                    self.positions
                        .insert((topic, partition), Position::At(offset));
                }
                Err(e) if e.is_retriable() => {
                    let _ = self.client.refresh_metadata(&[&topic]).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Asks the partition's leader for the offset of `timestamp` (-1 the end, -2 the log
    /// start). A retriable error (the leader moved: NOT_LEADER_OR_FOLLOWER, no leader yet, a
    /// lost connection) refreshes the metadata and asks again until the request timeout, as
    /// Kafka's `beginningOffsets` and `endOffsets` do within `default.api.timeout.ms`.
    async fn list_offset(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
        let deadline = Instant::now() + self.client.config().request_timeout;
        loop {
            match self.list_offset_once(topic, partition, timestamp).await {
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    let _ = self.client.refresh_metadata(&[topic]).await;
                    self.client.backoff().await;
                }
                answer => return answer,
            }
        }
    }

    /// One ListOffsets request to the leader the metadata names.
    async fn list_offset_once(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
        let connection = self.client.leader(topic, partition).await?;
        let mut p = ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = timestamp;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![p];
        let mut request = ListOffsetsRequest::default();
        request.replica_id = BrokerId(-1);
        request.isolation_level = i8::from(self.config.read_committed);
        request.topics = vec![t];
        let (response, _) = connection.call(request).await?;
        let answer = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| Error::Protocol("ListOffsets answer lacks the partition".into()))?;
        if answer.error_code != codes::NONE {
            return Err(Error::broker(answer.error_code, None));
        }
        if answer.offset >= 0 {
            return Ok(answer.offset);
        }
        // No record at or after the timestamp: the end of the log.
        Box::pin(self.list_offset_once(topic, partition, -1)).await
    }

    /// Writes a fetch to every leader of a partition with a known position that has no fetch
    /// outstanding, then waits until an answer comes (to this poll's fetches or to earlier
    /// ones), an outstanding fetch times out, or `deadline`; returns the records of every answer
    /// that came. A stuck leader holds back only its own partitions: its fetch stays
    /// outstanding (not written again) until it is answered or the request timeout passes,
    /// when it is abandoned and the metadata refreshed.
    async fn fetch_once(&mut self, deadline: Instant) -> Result<Vec<ConsumerRecord>> {
        let metadata = match self.missing_leaders() {
            true => self.client.refresh_metadata(&self.topics()).await?,
            false => self.client.metadata(),
        };
        // Partitions with a known position, by leader, for leaders with no fetch outstanding.
        let mut by_leader: BTreeMap<i32, Vec<(String, i32, i64)>> = BTreeMap::new();
        for ((topic, partition), position) in &self.positions {
            let Position::At(offset) = position else {
                continue;
            };
            let leader = metadata
                .topics
                .get(topic)
                .and_then(|t| t.partitions.get(*partition as usize))
                .map_or(-1, |p| p.leader);
            if leader >= 0 && !self.fetches.contains_key(&leader) {
                by_leader
                    .entry(leader)
                    .or_default()
                    .push((topic.clone(), *partition, *offset));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let max_wait = self.config.max_wait_ms.min(left.as_millis() as i32);
        for (leader, partitions) in by_leader {
            let connection = match self.client.broker(leader).await {
                Ok(c) => c,
                Err(_) => {
                    let _ = self.client.refresh_metadata(&self.topics()).await;
                    continue;
                }
            };
            let version = connection.version(ApiKey::Fetch)?;
            let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
            for (topic, partition, offset) in &partitions {
                let mut p = FetchPartition::default();
                p.partition = *partition;
                p.fetch_offset = *offset;
                p.partition_max_bytes = self.config.partition_max_bytes;
                p.log_start_offset = -1;
                p.current_leader_epoch = -1;
                topics.entry(topic.clone()).or_default().push(p);
            }
            let mut request = FetchRequest::default();
            request.replica_id = BrokerId(-1);
            request.max_wait_ms = max_wait.max(0);
            request.min_bytes = self.config.min_bytes;
            request.max_bytes = self.config.max_bytes;
            request.isolation_level = i8::from(self.config.read_committed);
            request.session_epoch = -1;
            request.topics = topics
                .into_iter()
                .map(|(name, partitions)| {
                    let mut t = FetchTopic::default();
                    t.topic = TopicName(StrBytes::from_string(name));
                    t.partitions = partitions;
                    t
                })
                .collect();
            if let Ok(Some(answer)) = connection.submit(request, version, true).await {
                let expires = Instant::now() + connection.timeout();
                let asked = partitions
                    .into_iter()
                    .map(|(topic, partition, offset)| ((topic, partition), offset))
                    .collect();
                self.fetches.insert(
                    leader,
                    Outstanding {
                        connection,
                        version,
                        answer,
                        came: None,
                        asked,
                        expires,
                    },
                );
            }
        }
        if self.fetches.is_empty() {
            tokio::time::sleep_until(
                deadline.min(Instant::now() + self.client.config().retry_backoff),
            )
            .await;
            return Ok(Vec::new());
        }
        self.wait_for_answers(deadline).await;
        // The answers that came, and the fetches that timed out, by leader.
        let now = Instant::now();
        let done: Vec<i32> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.came.is_some() || now >= f.expires)
            .map(|(leader, _)| *leader)
            .collect();
        let mut records = Vec::new();
        let mut refresh = false;
        for leader in done {
            let fetch = self.fetches.remove(&leader).expect("listed");
            let Some(answer) = fetch.came else {
                // No answer within the request timeout: abandoned, and its connection closed
                // (as Kafka's consumer disconnects on a request timeout: the broker may be
                // gone without a FIN).
                fetch.connection.kill();
                refresh = true;
                continue;
            };
            let response = match fetch
                .connection
                .decode::<FetchRequest>(answer, fetch.version)
            {
                Ok(r) => r,
                Err(e) if e.is_retriable() => {
                    refresh = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for topic in response.responses {
                let name = topic.topic.0.as_str().to_string();
                for partition in topic.partitions {
                    let key = (name.clone(), partition.partition_index);
                    // Only where the position is still the offset asked for (a seek or an
                    // answer from another leader may have moved it meanwhile).
                    let Some(position) = fetch.asked.get(&key).copied() else {
                        continue;
                    };
                    if self.positions.get(&key) != Some(&Position::At(position)) {
                        continue;
                    }
                    match partition.error_code {
                        codes::NONE => {}
                        codes::OFFSET_OUT_OF_RANGE => {
                            self.resets.entry(key.clone()).or_insert(position);
                            self.positions
                                .insert(key, Position::Seek(self.config.reset));
                            continue;
                        }
                        code if codes::retriable(code) => {
                            refresh = true;
                            continue;
                        }
                        code => return Err(Error::broker(code, None)),
                    }
                    let aborted: Vec<(i64, i64)> = partition
                        .aborted_transactions
                        .unwrap_or_default()
                        .iter()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect();
                    let next = decode_records(
                        &name,
                        partition.partition_index,
                        partition.records.unwrap_or_default(),
                        position,
                        self.config.read_committed.then_some(aborted.as_slice()),
                        &mut records,
                    )?;
                    self.positions.insert(key, Position::At(next));
                }
            }
        }
        if refresh {
            let _ = self.client.refresh_metadata(&self.topics()).await;
        }
        Ok(records)
    }

    /// Waits until an outstanding fetch is answered (keeping every answer that came), the
    /// first one times out, or `deadline`. No task is spawned: the answers are polled here,
    /// in leader order, so a simulated run stays deterministic.
    async fn wait_for_answers(&mut self, deadline: Instant) {
        let wake = self
            .fetches
            .values()
            .map(|f| f.expires)
            .min()
            .map_or(deadline, |e| e.min(deadline));
        // A timer whose deadline has passed still waits for the timer wheel's next tick:
        // then only take what has come.
        let passed = Instant::now() >= wake;
        let sleep = tokio::time::sleep_until(wake);
        tokio::pin!(sleep);
        let fetches = &mut self.fetches;
        std::future::poll_fn(|cx| {
            let mut came = false;
            for fetch in fetches.values_mut() {
                if fetch.came.is_none() {
                    if let Poll::Ready(answer) = Pin::new(&mut fetch.answer).poll(cx) {
                        fetch.came = Some(answer);
                    }
                }
                came |= fetch.came.is_some();
            }
            if came || passed {
                return Poll::Ready(());
            }
            sleep.as_mut().poll(cx)
        })
        .await;
    }

    fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = self.positions.keys().map(|(t, _)| t.as_str()).collect();
        topics.dedup();
        topics
    }

    fn missing_leaders(&self) -> bool {
        let metadata = self.client.metadata();
        self.positions.keys().any(|(topic, partition)| {
            metadata
                .topics
                .get(topic)
                .and_then(|t| t.partitions.get(*partition as usize))
                .is_none_or(|p| p.leader < 0)
        })
    }
}

/// Appends the records of `bytes` at or after `position` to `out`; returns the next position.
/// A partial batch at the end (a broker may cut one at `max_bytes`) is left for the next fetch.
pub(crate) fn decode_records(
    topic: &str,
    partition: i32,
    mut bytes: Bytes,
    position: i64,
    aborted: Option<&[(i64, i64)]>,
    out: &mut Vec<ConsumerRecord>,
) -> Result<i64> {
    let mut next = position;
    // The aborted transactions not reached yet, by first offset; once a record reaches one,
    // its producer's records are skipped until its marker (Kafka's consumer does the same).
    let mut pending: Vec<(i64, i64)> = aborted.map(<[_]>::to_vec).unwrap_or_default();
    pending.sort_by_key(|(producer, first)| (std::cmp::Reverse(*first), *producer));
    // Producers whose records are aborted from an offset on, until their abort marker.
    let mut aborting: BTreeMap<i64, i64> = BTreeMap::new();
    while bytes.len() >= 12 {
        let length = (&bytes[8..12]).get_i32();
        let total = 12
            + usize::try_from(length)
                .map_err(|_| Error::Protocol("negative batch length".into()))?;
        if bytes.len() < total {
            break;
        }
        let base_offset = (&bytes[0..8]).get_i64();
        let last_offset_delta = if total >= 27 {
            (&bytes[23..27]).get_i32()
        } else {
            0
        };
        let mut batch = bytes.split_to(total);
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| {
            Error::Protocol(format!(
                "{topic}/{partition}: cannot decode a batch at {base_offset}: {e}"
            ))
        })?;
        for record in set.records {
            if aborted.is_some() {
                while pending
                    .last()
                    .is_some_and(|(_, first)| *first <= record.offset)
                {
                    let (producer, first) = pending.pop().expect("checked");
                    aborting.entry(producer).or_insert(first);
                }
                if record.control {
                    // A transaction marker ends the producer's aborted range.
                    aborting.remove(&record.producer_id);
                    continue;
                }
                if record.transactional && aborting.contains_key(&record.producer_id) {
                    continue;
                }
            }
            if record.control || record.offset < position {
                continue;
            }
            out.push(ConsumerRecord {
                topic: topic.to_string(),
                partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_string(), v))
                    .collect(),
            });
        }
        next = next.max(base_offset + i64::from(last_offset_delta) + 1);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// A batch of producer 5's transaction at `offset` (`count` records), or its marker.
    fn batch(offset: i64, count: i64, control: bool) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: true,
                control,
                delete_horizon: false,
                partition_leader_epoch: 1,
                producer_id: 5,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: offset + i,
                sequence: if control { -1 } else { (offset + i) as i32 },
                timestamp: 1_000,
                key: Some(Bytes::from_static(if control {
                    &[0, 0, 0, 0]
                } else {
                    b"k"
                })),
                value: Some(Bytes::from(format!("v{}", offset + i))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encodes");
        buf.freeze()
    }

    /// An aborted transaction's records are skipped up to its marker, and the same
    /// producer's next transaction, after the marker, is read.
    #[test]
    fn read_committed_skips_an_aborted_transaction_and_reads_the_next() {
        let mut bytes = BytesMut::new();
        for part in [
            batch(0, 2, false),
            batch(2, 1, true),
            batch(3, 2, false),
            batch(5, 1, true),
        ] {
            bytes.extend_from_slice(&part);
        }
        let mut out = Vec::new();
        let next =
            decode_records("t", 0, bytes.freeze(), 0, Some(&[(5, 0)]), &mut out).expect("decodes");
        assert_eq!(next, 6);
        let offsets: Vec<i64> = out.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![3, 4]);
    }
}
