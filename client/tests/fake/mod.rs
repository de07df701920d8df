//! A fake Kafka cluster in the test's process, for tests of the client's behaviour under
//! faults that real nodes cannot be made to show on cue: brokers that answer ApiVersions,
//! Metadata, InitProducerId, Produce, ListOffsets and Fetch from an in-memory log per partition, reached
//! through in-memory streams (so the tests can run on tokio's paused clock), and that can be
//! made stuck (they read requests and answer none, as a SIGSTOPped process) and released.
//!
//! Addresses are `broker-N:9092`; the client bootstraps from broker 1.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, InitProducerIdResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, ProducerId, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use oxbow_client::transport::{Connecting, Connector, Stream};
use oxbow_client::{Client, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// LEADER_NOT_AVAILABLE.
pub const LEADER_NOT_AVAILABLE: i16 = 5;

/// A topic as the fake cluster knows it.
#[derive(Clone, Debug)]
pub enum Topic {
    /// It exists but the metadata answers this error for the whole topic, with no partitions
    /// (as oxbow answers LEADER_NOT_AVAILABLE for a topic none of whose partitions has a leader).
    Unavailable(i16),
    /// Its partitions: each one's leader and the values of its log, by offset.
    Ready(Vec<Partition>),
}

/// One partition: its leader and its log.
#[derive(Clone, Debug)]
pub struct Partition {
    /// The leader's broker id.
    pub leader: i32,
    /// The records' values, by offset.
    pub log: Vec<Bytes>,
}

#[derive(Default)]
struct State {
    brokers: Vec<i32>,
    topics: BTreeMap<String, Topic>,
    /// Requests read, by broker and API key.
    requests: BTreeMap<(i32, i16), u32>,
    /// Every connection opened, with its broker and whether it went silent.
    connections: Vec<(i32, Arc<std::sync::atomic::AtomicBool>)>,
}

/// The fake cluster; cheap to clone.
#[derive(Clone)]
pub struct Fake {
    state: Arc<Mutex<State>>,
    stuck: Arc<BTreeMap<i32, watch::Sender<bool>>>,
}

impl Fake {
    /// A cluster of these brokers, with no topics.
    pub fn new(brokers: &[i32]) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                brokers: brokers.to_vec(),
                ..State::default()
            })),
            stuck: Arc::new(
                brokers
                    .iter()
                    .map(|b| (*b, watch::channel(false).0))
                    .collect(),
            ),
        }
    }

    /// A client of the cluster (bootstrap broker 1) whose requests time out after `timeout`.
    pub fn client(&self, timeout: Duration) -> Client {
        let mut config = ClientConfig::new("broker-1:9092");
        config.request_timeout = timeout;
        config.connector = Arc::new(self.clone());
        Client::new(config).expect("client")
    }

    /// Creates or replaces a topic.
    pub fn set_topic(&self, name: &str, topic: Topic) {
        self.lock().topics.insert(name.to_string(), topic);
    }

    /// Appends values to a partition's log.
    pub fn append(&self, topic: &str, partition: usize, values: &[&str]) {
        let mut state = self.lock();
        let Some(Topic::Ready(partitions)) = state.topics.get_mut(topic) else {
            panic!("no ready topic {topic}");
        };
        partitions[partition]
            .log
            .extend(values.iter().map(|v| Bytes::from(v.to_string())));
    }

    /// A partition's log.
    pub fn log(&self, topic: &str, partition: usize) -> Vec<Bytes> {
        match self.lock().topics.get(topic) {
            Some(Topic::Ready(partitions)) => partitions[partition].log.clone(),
            _ => Vec::new(),
        }
    }

    /// Makes a broker stuck (it reads requests and answers none) or releases it (it answers
    /// what it read, in order).
    pub fn stick(&self, broker: i32, stuck: bool) {
        self.stuck[&broker].send_replace(stuck);
    }

    /// Makes every connection now open to `broker` silent for good, as after a power cut that
    /// sent no FIN: it still reads requests, but answers none and is never closed. Connections
    /// opened later are answered.
    pub fn silence_connections(&self, broker: i32) {
        for (b, silent) in &self.lock().connections {
            if *b == broker {
                silent.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    /// How many connections were opened to `broker`.
    pub fn connections(&self, broker: i32) -> usize {
        self.lock()
            .connections
            .iter()
            .filter(|(b, _)| *b == broker)
            .count()
    }

    /// How many requests of `key` a broker has read.
    pub fn requests(&self, broker: i32, key: ApiKey) -> u32 {
        self.lock()
            .requests
            .get(&(broker, key as i16))
            .copied()
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    /// Reads frames, counts them, and hands them to the answering side in order.
    async fn read_requests(
        self,
        broker: i32,
        mut read: tokio::io::ReadHalf<tokio::io::DuplexStream>,
        requests: mpsc::UnboundedSender<Bytes>,
    ) {
        loop {
            let Ok(size) = read.read_i32().await else {
                return;
            };
            let mut body = vec![0; size as usize];
            if read.read_exact(&mut body).await.is_err() {
                return;
            }
            let body = Bytes::from(body);
            let key = (&body[..2]).get_i16();
            *self.lock().requests.entry((broker, key)).or_default() += 1;
            if requests.send(body).is_err() {
                return;
            }
        }
    }

    /// Answers the requests in order, each once the broker is not stuck.
    async fn answer_requests(
        self,
        broker: i32,
        silent: Arc<std::sync::atomic::AtomicBool>,
        mut write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        mut requests: mpsc::UnboundedReceiver<Bytes>,
    ) {
        let mut stuck = self.stuck[&broker].subscribe();
        while let Some(mut body) = requests.recv().await {
            if stuck.wait_for(|s| !s).await.is_err() {
                return;
            }
            if silent.load(std::sync::atomic::Ordering::SeqCst) {
                // Holds the connection open, answering nothing, until the client closes it.
                let _write = write;
                while requests.recv().await.is_some() {}
                return;
            }
            let key = ApiKey::try_from((&body[..2]).get_i16()).expect("known key");
            let version = (&body[2..4]).get_i16();
            let header = RequestHeader::decode(&mut body, key.request_header_version(version))
                .expect("header");
            let mut frame = BytesMut::new();
            frame.put_i32(0);
            let mut response = ResponseHeader::default();
            response.correlation_id = header.correlation_id;
            let header_version = if key == ApiKey::ApiVersions {
                0
            } else {
                key.response_header_version(version)
            };
            response
                .encode(&mut frame, header_version)
                .expect("encodes");
            match key {
                ApiKey::ApiVersions => api_versions().encode(&mut frame, version),
                ApiKey::Metadata => {
                    let request = MetadataRequest::decode(&mut body, version).expect("decodes");
                    self.metadata(request).encode(&mut frame, version)
                }
                ApiKey::InitProducerId => {
                    let mut answer = InitProducerIdResponse::default();
                    answer.producer_id = ProducerId(1);
                    answer.producer_epoch = 0;
                    answer.encode(&mut frame, version)
                }
                ApiKey::Produce => {
                    let request = ProduceRequest::decode(&mut body, version).expect("decodes");
                    self.produce(broker, request).encode(&mut frame, version)
                }
                ApiKey::ListOffsets => {
                    let request = ListOffsetsRequest::decode(&mut body, version).expect("decodes");
                    self.list_offsets(broker, request)
                        .encode(&mut frame, version)
                }
                ApiKey::Fetch => {
                    let request = FetchRequest::decode(&mut body, version).expect("decodes");
                    self.fetch(broker, request)
                        .await
                        .encode(&mut frame, version)
                }
                other => panic!("the fake cluster does not answer {other:?}"),
            }
            .expect("encodes");
            let size = (frame.len() - 4) as i32;
            frame[..4].copy_from_slice(&size.to_be_bytes());
            if write.write_all(&frame).await.is_err() {
                return;
            }
        }
    }

    fn metadata(&self, request: MetadataRequest) -> MetadataResponse {
        let state = self.lock();
        let mut answer = MetadataResponse::default();
        answer.controller_id = BrokerId(state.brokers[0]);
        for id in &state.brokers {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(*id);
            broker.host = StrBytes::from_string(format!("broker-{id}"));
            broker.port = 9092;
            answer.brokers.push(broker);
        }
        let names: Vec<String> = match request.topics {
            Some(topics) => topics
                .into_iter()
                .filter_map(|t| t.name.map(|n| n.0.as_str().to_string()))
                .collect(),
            None => state.topics.keys().cloned().collect(),
        };
        for name in names {
            let mut topic = MetadataResponseTopic::default();
            topic.name = Some(TopicName(StrBytes::from_string(name.clone())));
            match state.topics.get(&name) {
                None => topic.error_code = 3,
                Some(Topic::Unavailable(code)) => topic.error_code = *code,
                Some(Topic::Ready(partitions)) => {
                    for (index, p) in partitions.iter().enumerate() {
                        let mut partition = MetadataResponsePartition::default();
                        partition.partition_index = index as i32;
                        partition.leader_id = BrokerId(p.leader);
                        partition.replica_nodes = vec![BrokerId(p.leader)];
                        partition.isr_nodes = vec![BrokerId(p.leader)];
                        topic.partitions.push(partition);
                    }
                }
            }
            answer.topics.push(topic);
        }
        answer
    }

    fn produce(&self, broker: i32, request: ProduceRequest) -> ProduceResponse {
        let mut state = self.lock();
        let mut answer = ProduceResponse::default();
        for topic_data in request.topic_data {
            let mut topic = TopicProduceResponse::default();
            topic.name = topic_data.name.clone();
            for data in topic_data.partition_data {
                let mut partition = PartitionProduceResponse::default();
                partition.index = data.index;
                match state.topics.get_mut(topic_data.name.0.as_str()) {
                    Some(Topic::Ready(partitions))
                        if partitions
                            .get(data.index as usize)
                            .is_some_and(|p| p.leader == broker) =>
                    {
                        let log = &mut partitions[data.index as usize].log;
                        partition.base_offset = log.len() as i64;
                        let mut bytes = data.records.unwrap_or_default();
                        let set = RecordBatchDecoder::decode(&mut bytes).expect("a batch");
                        log.extend(set.records.into_iter().map(|r| r.value.unwrap_or_default()));
                    }
                    _ => partition.error_code = 6,
                }
                topic.partition_responses.push(partition);
            }
            answer.responses.push(topic);
        }
        answer
    }

    /// The log start (0) or end of each partition asked, from its leader only (others answer
    /// NOT_LEADER_OR_FOLLOWER); only the earliest (-2) and latest (-1) timestamps.
    fn list_offsets(&self, broker: i32, request: ListOffsetsRequest) -> ListOffsetsResponse {
        let state = self.lock();
        let mut answer = ListOffsetsResponse::default();
        for asked in request.topics {
            let mut topic = ListOffsetsTopicResponse::default();
            topic.name = asked.name.clone();
            for p in asked.partitions {
                let mut partition = ListOffsetsPartitionResponse::default();
                partition.partition_index = p.partition_index;
                match state.topics.get(asked.name.0.as_str()) {
                    Some(Topic::Ready(partitions))
                        if partitions
                            .get(p.partition_index as usize)
                            .is_some_and(|x| x.leader == broker) =>
                    {
                        let end = partitions[p.partition_index as usize].log.len() as i64;
                        partition.offset = if p.timestamp == -2 { 0 } else { end };
                    }
                    _ => partition.error_code = 6,
                }
                topic.partitions.push(partition);
            }
            answer.topics.push(topic);
        }
        answer
    }

    async fn fetch(&self, broker: i32, request: FetchRequest) -> FetchResponse {
        // Waits up to max_wait for a record, as a broker does.
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
        loop {
            let (answer, records) = self.fetch_now(broker, &request);
            if records || tokio::time::Instant::now() >= deadline {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn fetch_now(&self, broker: i32, request: &FetchRequest) -> (FetchResponse, bool) {
        let state = self.lock();
        let mut answer = FetchResponse::default();
        let mut any = false;
        for asked in &request.topics {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = asked.topic.clone();
            for p in &asked.partitions {
                let mut partition = PartitionData::default();
                partition.partition_index = p.partition;
                match state.topics.get(asked.topic.0.as_str()) {
                    Some(Topic::Ready(partitions))
                        if partitions
                            .get(p.partition as usize)
                            .is_some_and(|x| x.leader == broker) =>
                    {
                        let log = &partitions[p.partition as usize].log;
                        partition.high_watermark = log.len() as i64;
                        partition.last_stable_offset = log.len() as i64;
                        partition.log_start_offset = 0;
                        let from = p.fetch_offset.max(0) as usize;
                        if from < log.len() {
                            partition.records = Some(encode(from, &log[from..]));
                            any = true;
                        }
                    }
                    _ => partition.error_code = 6,
                }
                topic.partitions.push(partition);
            }
            answer.responses.push(topic);
        }
        (answer, any)
    }
}

fn api_versions() -> ApiVersionsResponse {
    let mut answer = ApiVersionsResponse::default();
    for (key, min, max) in [
        (ApiKey::ApiVersions, 0, 3),
        (ApiKey::Metadata, 1, 12),
        (ApiKey::Produce, 3, 7),
        (ApiKey::Fetch, 4, 11),
        (ApiKey::ListOffsets, 1, 7),
        (ApiKey::InitProducerId, 0, 4),
    ] {
        let mut version = ApiVersion::default();
        version.api_key = key as i16;
        version.min_version = min;
        version.max_version = max;
        answer.api_keys.push(version);
    }
    answer
}

/// One batch of `values` from offset `base`.
fn encode(base: usize, values: &[Bytes]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: (base + i) as i64,
            sequence: -1,
            timestamp: 0,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encodes");
    buf.freeze()
}

impl Connector for Fake {
    fn connect(&self, address: &str) -> Connecting {
        let broker: Option<i32> = address
            .strip_prefix("broker-")
            .and_then(|a| a.strip_suffix(":9092"))
            .and_then(|id| id.parse().ok())
            .filter(|id| self.stuck.contains_key(id));
        let fake = self.clone();
        Box::pin(async move {
            let Some(broker) = broker else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "no such broker",
                ));
            };
            let (client, server) = tokio::io::duplex(1 << 20);
            let (read, write) = tokio::io::split(server);
            let (requests, queue) = mpsc::unbounded_channel();
            let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
            fake.lock().connections.push((broker, silent.clone()));
            tokio::spawn(fake.clone().read_requests(broker, read, requests));
            tokio::spawn(fake.answer_requests(broker, silent, write, queue));
            Ok(Box::new(client) as Box<dyn Stream>)
        })
    }
}
