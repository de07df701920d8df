//! The Kafka listener: the wire protocol (through `kafka-protocol`) in front of the core.
//!
//! One task per connection reads a request, answers it, and only then reads the next, so
//! answers are in request order. Oversized or malformed frames, unknown API keys and
//! unsupported versions close that connection with a log line; ApiVersions above our range is
//! answered in v0 with UNSUPPORTED_VERSION, as clients expect (KIP-511).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use oxbow_core::ids::{GroupId, Offset};
use oxbow_core::io::FindTimestampRequest;
use oxbow_core::io::{
    Acks, FetchData, FetchError, FetchRequest as CoreFetch, ProduceRequest as CoreProduce, Request,
    Response,
};
use slog::{debug, info, warn, Logger};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::{Config, PartitionPlacement};
use crate::producer_ids::ProducerIds;
use crate::runtime::CoreHandle;

/// Requests read ahead of their answers on one connection (answers still go out in order).
const PIPELINE_MAX: usize = 16;
/// Largest request accepted (Kafka's `socket.request.max.bytes` default).
const REQUEST_MAX: usize = 100 << 20;

/// Kafka error codes used here.
mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const INVALID_REQUEST: i16 = 42;
}

/// The API keys and versions this broker implements, and nothing else (advertising a version
/// promises its semantics). These are the pre-flexible versions every client we test uses.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 7),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::Metadata, 0, 8),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::InitProducerId, 0, 1),
];

fn supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(k, min, max)| *k == key && (*min..=*max).contains(&version))
}

/// What every connection shares.
pub struct Context {
    config: Config,
    core: CoreHandle,
    topics: BTreeMap<String, Vec<PartitionPlacement>>,
    producer_ids: std::sync::Mutex<ProducerIds>,
    logger: Logger,
}

impl Context {
    /// Builds the context from the configuration.
    pub fn new(config: Config, core: CoreHandle, logger: Logger) -> std::io::Result<Arc<Self>> {
        let mut topics: BTreeMap<String, Vec<PartitionPlacement>> = BTreeMap::new();
        for placement in config.placements() {
            topics
                .entry(placement.topic.clone())
                .or_default()
                .push(placement);
        }
        let producer_ids =
            std::sync::Mutex::new(ProducerIds::open(&config.data_dir, config.node_id)?);
        Ok(Arc::new(Self {
            config,
            core,
            topics,
            producer_ids,
            logger,
        }))
    }

    fn placement(&self, topic: &str, partition: i32) -> Option<&PartitionPlacement> {
        self.topics
            .get(topic)?
            .get(usize::try_from(partition).ok()?)
    }

    fn hosts(&self, placement: &PartitionPlacement) -> bool {
        placement.replicas.contains(&self.config.node())
    }
}

/// Accepts Kafka connections until shutdown.
pub async fn serve(listener: TcpListener, context: Arc<Context>, shutdown: watch::Receiver<bool>) {
    crate::runtime::accept_loop(listener, shutdown, move |stream, remote| {
        let context = context.clone();
        let logger = context.logger.new(slog::o!("client" => remote.to_string()));
        async move {
            match connection(stream, context, &logger).await {
                Ok(()) => debug!(logger, "client disconnected"),
                Err(why) => info!(logger, "closed client connection"; "why" => why),
            }
        }
    })
    .await;
}

/// A response being prepared: resolves to the encoded frame, or `None` when nothing is sent
/// (acks=0).
type PendingResponse = Pin<Box<dyn Future<Output = Result<Option<BytesMut>, String>> + Send>>;

/// Reads requests and queues their responses, in request order, to a writer task. Produce
/// requests are submitted to the core here, in the order they arrive (idempotent sequences
/// depend on it); only the waiting for their answers overlaps with reading the next request.
async fn connection(
    stream: TcpStream,
    context: Arc<Context>,
    logger: &Logger,
) -> Result<(), String> {
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let (queue, pending) = tokio::sync::mpsc::channel::<PendingResponse>(PIPELINE_MAX);
    let writer = tokio::spawn(write_responses(write, pending));
    let result = read_requests(&mut read, &context, logger, &queue).await;
    drop(queue);
    let written = writer.await.map_err(|e| e.to_string())?;
    result.and(written)
}

async fn write_responses(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    mut pending: tokio::sync::mpsc::Receiver<PendingResponse>,
) -> Result<(), String> {
    while let Some(response) = pending.recv().await {
        if let Some(frame) = response.await? {
            write.write_all(&frame).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

async fn read_requests(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    context: &Arc<Context>,
    logger: &Logger,
    queue: &tokio::sync::mpsc::Sender<PendingResponse>,
) -> Result<(), String> {
    loop {
        let size = match read.read_i32().await {
            Ok(size) => size,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if size < 8 || size as usize > REQUEST_MAX {
            return Err(format!("request size {size} is outside 8..={REQUEST_MAX}"));
        }
        let mut body = vec![0u8; size as usize];
        read.read_exact(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Bytes::from(body);
        let api_key = i16::from_be_bytes([buf[0], buf[1]]);
        let version = i16::from_be_bytes([buf[2], buf[3]]);
        let correlation_id = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let key = ApiKey::try_from(api_key).map_err(|_| format!("unknown API key {api_key}"))?;
        let response: PendingResponse = if key == ApiKey::ApiVersions && version > 3 {
            // KIP-511: answer in v0 with our ranges, so the client can retry with one of them.
            let mut response = api_versions();
            response.error_code = code::UNSUPPORTED_VERSION;
            let frame = encode_response(correlation_id, key, 0, &response);
            Box::pin(async move { frame.map(Some) })
        } else {
            if !supported(key, version) {
                warn!(logger, "unsupported request"; "api" => ?key, "version" => version);
                return Err(format!("{key:?} v{version} is not supported"));
            }
            let header = RequestHeader::decode(&mut buf, key.request_header_version(version))
                .map_err(|e| format!("malformed request header: {e}"))?;
            assert_eq!(header.correlation_id, correlation_id);
            let ctx = context.clone();
            let response: PendingResponse = match key {
                ApiKey::ApiVersions => {
                    let frame = encode_response(correlation_id, key, version, &api_versions());
                    Box::pin(async move { frame.map(Some) })
                }
                ApiKey::Metadata => {
                    let request = MetadataRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed Metadata: {e}"))?;
                    Box::pin(async move {
                        let response = metadata(&ctx, request, version).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::Produce => {
                    let request = ProduceRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed Produce: {e}"))?;
                    let answer = produce(&ctx, request).await;
                    Box::pin(async move {
                        match answer.await {
                            Some(response) => {
                                encode_response(correlation_id, key, version, &response).map(Some)
                            }
                            None => Ok(None),
                        }
                    })
                }
                ApiKey::Fetch => {
                    let request = FetchRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed Fetch: {e}"))?;
                    Box::pin(async move {
                        let response = fetch(&ctx, request).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::ListOffsets => {
                    let request = ListOffsetsRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed ListOffsets: {e}"))?;
                    Box::pin(async move {
                        let response = list_offsets(&ctx, request).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::InitProducerId => {
                    let request = InitProducerIdRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed InitProducerId: {e}"))?;
                    let frame = encode_response(
                        correlation_id,
                        key,
                        version,
                        &init_producer_id(&ctx, request),
                    );
                    Box::pin(async move { frame.map(Some) })
                }
                other => unreachable!("{other:?} is not in SUPPORTED"),
            };
            if buf.has_remaining() {
                debug!(logger, "request had trailing bytes"; "api" => ?key, "bytes" => buf.remaining());
            }
            response
        };
        if queue.send(response).await.is_err() {
            // The writer stopped (the client went away or a write failed): it reports why.
            return Ok(());
        }
    }
}

fn encode_response<M: Encodable>(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    message: &M,
) -> Result<BytesMut, String> {
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(0);
    let header_version = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut out, header_version)
        .map_err(|e| format!("encode header: {e}"))?;
    message
        .encode(&mut out, version)
        .map_err(|e| format!("encode {key:?} v{version}: {e}"))?;
    let size = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(out)
}

fn api_versions() -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = *key as i16;
            v.min_version = *min;
            v.max_version = *max;
            v
        })
        .collect();
    response
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

async fn metadata(context: &Context, request: MetadataRequest, version: i16) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    for node in context.config.all_nodes() {
        let address = context
            .config
            .kafka_address(node)
            .expect("every node has an address");
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = BrokerId(node.0 as i32);
        broker.host = str_bytes(&address.ip().to_string());
        broker.port = i32::from(address.port());
        response.brokers.push(broker);
    }
    response.cluster_id = Some(str_bytes("oxbow"));
    response.controller_id = BrokerId(context.config.node_id as i32);
    let names: Vec<String> = match request.topics {
        // v0: an empty list means all topics; v1+: null means all topics.
        Some(topics) if !(version == 0 && topics.is_empty()) => topics
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.as_str().to_string()))
            .collect(),
        _ => context.topics.keys().cloned().collect(),
    };
    let groups: Vec<GroupId> = names
        .iter()
        .filter_map(|n| context.topics.get(n))
        .flatten()
        .map(|p| p.group)
        .collect();
    let statuses: BTreeMap<GroupId, _> = match context.core.status(groups.clone()).await {
        Some(statuses) => groups.into_iter().zip(statuses).collect(),
        None => BTreeMap::new(),
    };
    for name in names {
        let mut topic = MetadataResponseTopic::default();
        topic.name = Some(TopicName(str_bytes(&name)));
        match context.topics.get(&name) {
            None => topic.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
            Some(placements) => {
                for placement in placements {
                    let mut partition = MetadataResponsePartition::default();
                    partition.partition_index = placement.partition as i32;
                    partition.replica_nodes = placement
                        .replicas
                        .iter()
                        .map(|n| BrokerId(n.0 as i32))
                        .collect();
                    partition.isr_nodes = partition.replica_nodes.clone();
                    match statuses.get(&placement.group).copied().flatten() {
                        Some(status) if status.leader.is_some() => {
                            partition.leader_id =
                                BrokerId(status.leader.expect("checked").0 as i32);
                            partition.leader_epoch = status.term.0 as i32;
                        }
                        _ => {
                            partition.error_code = code::LEADER_NOT_AVAILABLE;
                            partition.leader_id = BrokerId(-1);
                            partition.leader_epoch = -1;
                        }
                    }
                    topic.partitions.push(partition);
                }
            }
        }
        response.topics.push(topic);
    }
    response
}

/// Submits every partition's batch to the core now, in order, and returns the wait for the
/// answers (which builds the response; `None` for acks=0).
async fn produce(
    context: &Context,
    request: ProduceRequest,
) -> impl Future<Output = Option<ProduceResponse>> + Send + 'static {
    let acks = match request.acks {
        0 => Acks::None,
        1 => Acks::Leader,
        _ => Acks::All,
    };
    let timeout_ms = request.timeout_ms.clamp(0, 300_000) as u32;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms) + 5_000);
    let mut waits: Vec<(
        String,
        i32,
        Result<tokio::sync::oneshot::Receiver<Response>, i16>,
    )> = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.as_str().to_string();
        for partition in topic.partition_data {
            let wait = match context.placement(&name, partition.index) {
                None => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                Some(placement) if !context.hosts(placement) => Err(code::NOT_LEADER_OR_FOLLOWER),
                Some(placement) => {
                    let batch = partition.records.unwrap_or_default();
                    let request = Request::Produce(CoreProduce {
                        group: placement.group,
                        acks,
                        batch,
                        timeout_ms,
                    });
                    if acks == Acks::None {
                        context.core.request_no_reply(request).await;
                        Err(code::NONE)
                    } else {
                        context
                            .core
                            .submit(request)
                            .await
                            .ok_or(code::REQUEST_TIMED_OUT)
                    }
                }
            };
            waits.push((name.clone(), partition.index, wait));
        }
    }
    async move {
        let mut by_topic: BTreeMap<String, Vec<PartitionProduceResponse>> = BTreeMap::new();
        for (name, index, wait) in waits {
            let (error_code, base_offset, log_append_time_ms) = match wait {
                Err(code) => (code, -1, -1),
                Ok(answer) => match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(Response::Produce(Ok(ack)))) => {
                        (code::NONE, ack.base_offset.0, ack.log_append_time_ms)
                    }
                    Ok(Ok(Response::Produce(Err(error)))) => (error.kafka_code(), -1, -1),
                    _ => (code::REQUEST_TIMED_OUT, -1, -1),
                },
            };
            let mut partition = PartitionProduceResponse::default();
            partition.index = index;
            partition.error_code = error_code;
            partition.base_offset = base_offset;
            partition.log_append_time_ms = log_append_time_ms;
            by_topic.entry(name).or_default().push(partition);
        }
        if acks == Acks::None {
            return None;
        }
        let mut response = ProduceResponse::default();
        for (name, partitions) in by_topic {
            let mut topic = TopicProduceResponse::default();
            topic.name = TopicName(str_bytes(&name));
            topic.partition_responses = partitions;
            response.responses.push(topic);
        }
        Some(response)
    }
}

fn init_producer_id(context: &Context, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if request.transactional_id.is_some() {
        // Transactions are not implemented (and not advertised through FindCoordinator).
        response.error_code = code::INVALID_REQUEST;
        return response;
    }
    let allocated = context
        .producer_ids
        .lock()
        .map_err(|_| ())
        .and_then(|mut ids| ids.allocate().map_err(|_| ()));
    match allocated {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(()) => {
            warn!(context.logger, "cannot persist a producer id block");
            response.error_code = code::COORDINATOR_NOT_AVAILABLE;
        }
    }
    response
}

async fn fetch_one(
    context: &Context,
    group: GroupId,
    offset: i64,
    max_bytes: i32,
) -> Result<FetchData, FetchError> {
    let request = Request::Fetch(CoreFetch {
        group,
        offset: Offset(offset),
        max_bytes: max_bytes.max(0) as u32,
    });
    match context.core.request(request).await {
        Some(Response::Fetch(result)) => result,
        _ => Err(FetchError::NotLeader { leader: None }),
    }
}

async fn fetch(context: &Context, request: FetchRequest) -> FetchResponse {
    let mut applied = context.core.applied();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(request.max_wait_ms.clamp(0, 30_000) as u64);
    loop {
        applied.borrow_and_update();
        let mut total = 0usize;
        let mut any_error = false;
        let mut response = FetchResponse::default();
        for topic in &request.topics {
            let name = topic.topic.0.as_str();
            let mut out = FetchableTopicResponse::default();
            out.topic = topic.topic.clone();
            for partition in &topic.partitions {
                let mut data = PartitionData::default();
                data.partition_index = partition.partition;
                data.high_watermark = -1;
                data.last_stable_offset = -1;
                data.log_start_offset = -1;
                data.preferred_read_replica = BrokerId(-1);
                data.aborted_transactions = Some(Vec::new());
                match context.placement(name, partition.partition) {
                    None => data.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(p) if !context.hosts(p) => data.error_code = code::NOT_LEADER_OR_FOLLOWER,
                    Some(p) => {
                        let budget = if total >= request.max_bytes.max(1) as usize {
                            0
                        } else {
                            partition.partition_max_bytes
                        };
                        match fetch_one(context, p.group, partition.fetch_offset, budget).await {
                            Ok(found) => {
                                data.high_watermark = found.high_watermark.0;
                                // No transactions yet: the last stable offset is the high watermark.
                                data.last_stable_offset = found.high_watermark.0;
                                data.log_start_offset = found.log_start_offset.0;
                                let bytes: usize = found.batches.iter().map(Bytes::len).sum();
                                total += bytes;
                                data.records = Some(concat(found.batches));
                            }
                            Err(error) => {
                                any_error = true;
                                data.error_code = error.kafka_code();
                            }
                        }
                    }
                }
                out.partitions.push(data);
            }
            response.responses.push(out);
        }
        let enough = total >= request.min_bytes.max(1) as usize;
        if enough || any_error || tokio::time::Instant::now() >= deadline {
            return response;
        }
        // Long poll: wait until something is applied on this node (since this round looked),
        // or the deadline.
        let _ = tokio::time::timeout_at(deadline, applied.changed()).await;
    }
}

fn concat(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().expect("one"),
        _ => {
            let mut out = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
            for b in batches {
                out.extend_from_slice(&b);
            }
            out.freeze()
        }
    }
}

/// The offset and timestamp of the first record at or after `timestamp`, if any. The core
/// finds the batch; the record inside it is found by decoding that one batch. A compressed
/// batch (this build has no codecs) answers with its base offset: the earliest that can hold it.
async fn find_timestamp(
    context: &Context,
    group: GroupId,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, FetchError> {
    let request = Request::FindTimestamp(FindTimestampRequest { group, timestamp });
    let batch = match context.core.request(request).await {
        Some(Response::FindTimestamp(result)) => result?,
        _ => return Err(FetchError::NotLeader { leader: None }),
    };
    let Some(batch) = batch else { return Ok(None) };
    let header = oxbow_core::batch::Batch::trusted(batch.clone());
    if header.is_log_append_time() {
        return Ok(Some((header.base_offset().0, header.max_timestamp())));
    }
    match RecordBatchDecoder::decode(&mut batch.clone()) {
        Ok(decoded) => Ok(decoded
            .records
            .iter()
            .find(|r| r.timestamp >= timestamp)
            .map(|r| (r.offset, r.timestamp))
            .or(Some((header.last_offset().0, header.max_timestamp())))),
        Err(_) => Ok(Some((header.base_offset().0, header.max_timestamp()))),
    }
}

async fn list_offsets(context: &Context, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let mut out = ListOffsetsTopicResponse::default();
        out.name = topic.name.clone();
        for partition in topic.partitions {
            let mut answer = ListOffsetsPartitionResponse::default();
            answer.partition_index = partition.partition_index;
            answer.timestamp = -1;
            answer.offset = -1;
            answer.leader_epoch = -1;
            match context.placement(&name, partition.partition_index) {
                None => answer.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(p) if !context.hosts(p) => answer.error_code = code::NOT_LEADER_OR_FOLLOWER,
                Some(p) => match context
                    .core
                    .status(vec![p.group])
                    .await
                    .and_then(|s| s.into_iter().next().flatten())
                {
                    Some(status) if status.serving => match partition.timestamp {
                        -2 => answer.offset = status.log_start_offset.0,
                        -1 => answer.offset = status.high_watermark.0,
                        t if t >= 0 => match find_timestamp(context, p.group, t).await {
                            Ok(Some((offset, timestamp))) => {
                                answer.offset = offset;
                                answer.timestamp = timestamp;
                            }
                            // No record that late: offset and timestamp -1, as Kafka answers.
                            Ok(None) => {}
                            Err(error) => answer.error_code = error.kafka_code(),
                        },
                        _ => answer.error_code = code::INVALID_REQUEST,
                    },
                    _ => answer.error_code = code::NOT_LEADER_OR_FOLLOWER,
                },
            }
            out.partitions.push(answer);
        }
        response.topics.push(out);
    }
    response
}
