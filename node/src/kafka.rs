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
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteGroupsRequest, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeGroupsRequest, FetchRequest, FetchResponse,
    FindCoordinatorRequest, HeartbeatRequest, InitProducerIdRequest, InitProducerIdResponse,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetFetchRequest, ProduceRequest, ProduceResponse, ProducerId, RequestHeader, ResponseHeader,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use oxbow_core::coordinator::OFFSETS_TOPIC;
use oxbow_core::ids::{GroupId, Offset, TopicId};
use oxbow_core::io::AdminRequest;
use oxbow_core::io::FindTimestampRequest;
use oxbow_core::io::{
    Acks, FetchData, FetchError, FetchRequest as CoreFetch, ProduceRequest as CoreProduce, Request,
    Response,
};
use oxbow_core::metadata::{
    check_topic_name, AdminError, CreateTopic, MetadataChange, MetadataCommand, MetadataState,
    PartitionAssignment, TopicMeta, METADATA_GROUP, TOPIC_CONFIGS,
};
use slog::{debug, info, warn, Logger};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::Config;
use crate::producer_ids::ProducerIds;
use crate::runtime::env::Network;
use crate::runtime::CoreHandle;

mod groups;

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
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
}

/// The cluster id clients see.
const CLUSTER_ID: &str = "oxbow";

/// The API keys and versions this broker implements, and nothing else (advertising a version
/// promises its semantics). Mostly pre-flexible versions, which every client we test uses;
/// Metadata goes to v12 for topic ids.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 7),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
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
    producer_ids: std::sync::Mutex<ProducerIds>,
    logger: Logger,
}

impl Context {
    /// Builds the context from the configuration.
    pub fn new(
        config: Config,
        core: CoreHandle,
        producer_ids: ProducerIds,
        logger: Logger,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            core,
            producer_ids: std::sync::Mutex::new(producer_ids),
            logger,
        })
    }

    fn hosts(&self, placement: &PartitionAssignment) -> bool {
        placement.replicas.contains(&self.config.node())
    }
}

fn placement<'a>(
    metadata: &'a MetadataState,
    topic: &str,
    partition: i32,
) -> Option<&'a PartitionAssignment> {
    metadata
        .topic(topic)?
        .partitions
        .get(usize::try_from(partition).ok()?)
}

/// Accepts Kafka connections until shutdown.
pub async fn serve<N: Network>(
    listener: N::Listener,
    context: Arc<Context>,
    shutdown: watch::Receiver<bool>,
) {
    crate::runtime::accept_loop::<N, _, _>(listener, shutdown, move |read, write, remote| {
        let context = context.clone();
        let logger = context.logger.new(slog::o!("client" => remote.to_string()));
        async move {
            match connection(read, write, context, remote.to_string(), &logger).await {
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
    read: impl AsyncRead + Unpin,
    write: impl AsyncWrite + Unpin + Send + 'static,
    context: Arc<Context>,
    remote: String,
    logger: &Logger,
) -> Result<(), String> {
    let mut read = BufReader::new(read);
    let (queue, pending) = tokio::sync::mpsc::channel::<PendingResponse>(PIPELINE_MAX);
    let writer = tokio::spawn(write_responses(write, pending));
    let result = read_requests(&mut read, &context, &remote, logger, &queue).await;
    drop(queue);
    let written = writer.await.map_err(|e| e.to_string())?;
    result.and(written)
}

async fn write_responses(
    mut write: impl AsyncWrite + Unpin,
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
    read: &mut BufReader<impl AsyncRead + Unpin>,
    context: &Arc<Context>,
    remote: &str,
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
                ApiKey::CreateTopics => {
                    let request = CreateTopicsRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed CreateTopics: {e}"))?;
                    Box::pin(async move {
                        let response = create_topics(&ctx, request).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::DeleteTopics => {
                    let request = DeleteTopicsRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed DeleteTopics: {e}"))?;
                    Box::pin(async move {
                        let response = delete_topics(&ctx, request, version).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::CreatePartitions => {
                    let request = CreatePartitionsRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed CreatePartitions: {e}"))?;
                    Box::pin(async move {
                        let response = create_partitions(&ctx, request).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::DescribeConfigs => {
                    let request = DescribeConfigsRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed DescribeConfigs: {e}"))?;
                    let frame = encode_response(
                        correlation_id,
                        key,
                        version,
                        &describe_configs(&ctx, request),
                    );
                    Box::pin(async move { frame.map(Some) })
                }
                ApiKey::DescribeCluster => {
                    DescribeClusterRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed DescribeCluster: {e}"))?;
                    Box::pin(async move {
                        let response = describe_cluster(&ctx).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::FindCoordinator => {
                    let request = FindCoordinatorRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed FindCoordinator: {e}"))?;
                    Box::pin(async move {
                        let response = groups::find_coordinator(&ctx, request, version).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::JoinGroup => {
                    let request = JoinGroupRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed JoinGroup: {e}"))?;
                    let caller = groups::Caller {
                        client_id: header
                            .client_id
                            .as_ref()
                            .map(|c| c.as_str().to_string())
                            .unwrap_or_default(),
                        host: format!("/{}", remote.rsplit_once(':').map_or(remote, |(h, _)| h)),
                    };
                    Box::pin(async move {
                        let response = groups::join_group(&ctx, request, version, caller).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::SyncGroup => {
                    let request = SyncGroupRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed SyncGroup: {e}"))?;
                    Box::pin(async move {
                        let response = groups::sync_group(&ctx, request, version).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::Heartbeat => {
                    let request = HeartbeatRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed Heartbeat: {e}"))?;
                    Box::pin(async move {
                        let response = groups::heartbeat(&ctx, request).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::LeaveGroup => {
                    let request = LeaveGroupRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed LeaveGroup: {e}"))?;
                    Box::pin(async move {
                        let response = groups::leave_group(&ctx, request, version).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::OffsetCommit => {
                    let request = OffsetCommitRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed OffsetCommit: {e}"))?;
                    Box::pin(async move {
                        let response = groups::offset_commit(&ctx, request).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::OffsetFetch => {
                    let request = OffsetFetchRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed OffsetFetch: {e}"))?;
                    Box::pin(async move {
                        let response = groups::offset_fetch(&ctx, request, version).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::DescribeGroups => {
                    let request = DescribeGroupsRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed DescribeGroups: {e}"))?;
                    Box::pin(async move {
                        let response = groups::describe_groups(&ctx, request, version).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::ListGroups => {
                    let request = ListGroupsRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed ListGroups: {e}"))?;
                    Box::pin(async move {
                        let response = groups::list_groups(&ctx, request, version).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
                }
                ApiKey::DeleteGroups => {
                    let request = DeleteGroupsRequest::decode(&mut buf, version)
                        .map_err(|e| format!("malformed DeleteGroups: {e}"))?;
                    Box::pin(async move {
                        let response = groups::delete_groups(&ctx, request).await;
                        encode_response(correlation_id, key, version, &response).map(Some)
                    })
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

fn brokers(context: &Context) -> Vec<(i32, String, i32)> {
    context
        .config
        .all_nodes()
        .into_iter()
        .map(|node| {
            let address = context
                .config
                .kafka_address(node)
                .expect("every node has an address");
            (
                node.0 as i32,
                address.ip().to_string(),
                i32::from(address.port()),
            )
        })
        .collect()
}

/// The node leading the metadata group (Kafka's controller), or -1.
async fn controller(context: &Context) -> BrokerId {
    let leaders = context.core.leaders(vec![METADATA_GROUP]).await;
    match leaders.and_then(|l| l.into_iter().next().flatten()) {
        Some((node, _)) => BrokerId(node.0 as i32),
        None => BrokerId(-1),
    }
}

fn uuid(id: TopicId) -> Uuid {
    Uuid::from_u128(id.0)
}

/// Asks the metadata group to create a topic with the automatic defaults, without waiting.
async fn auto_create(context: &Context, name: &str) {
    let request = Request::Admin(AdminRequest {
        command: MetadataCommand::CreateTopic(CreateTopic {
            name: name.to_string(),
            partitions: context.config.default_partitions,
            replication_factor: context.config.auto_replication_factor(),
            configs: BTreeMap::new(),
        }),
        validate_only: false,
        forward: true,
        timeout_ms: 5_000,
    });
    if let Some(Response::Admin(Err(error))) = context.core.request(request).await {
        debug!(context.logger, "automatic topic creation not proposed"; "topic" => name, "why" => ?error);
    }
}

async fn metadata(context: &Context, request: MetadataRequest, version: i16) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    for (id, host, port) in brokers(context) {
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = BrokerId(id);
        broker.host = str_bytes(&host);
        broker.port = port;
        response.brokers.push(broker);
    }
    response.cluster_id = Some(str_bytes(CLUSTER_ID));
    response.controller_id = controller(context).await;
    let metadata = context.core.metadata();
    // Each asked topic by name, or (v10+) by id; `Err` holds the unknown id.
    let asked: Vec<Result<String, Uuid>> = match request.topics {
        // v0: an empty list means all topics; v1+: null means all topics.
        Some(topics) if !(version == 0 && topics.is_empty()) => topics
            .into_iter()
            .map(|t| match t.name {
                Some(name) => Ok(name.0.as_str().to_string()),
                None => metadata
                    .topic_by_id(TopicId(t.topic_id.as_u128()))
                    .map(|topic| topic.name.clone())
                    .ok_or(t.topic_id),
            })
            .collect(),
        // The internal offsets topic is only shown when asked for by name.
        _ => metadata
            .topics()
            .keys()
            .filter(|name| *name != OFFSETS_TOPIC)
            .cloned()
            .map(Ok)
            .collect(),
    };
    let groups: Vec<GroupId> = asked
        .iter()
        .filter_map(|name| metadata.topic(name.as_ref().ok()?))
        .flat_map(|topic| topic.partitions.iter().map(|p| p.group))
        .collect();
    let leaders: BTreeMap<GroupId, _> = match context.core.leaders(groups.clone()).await {
        Some(leaders) => groups.into_iter().zip(leaders).collect(),
        None => BTreeMap::new(),
    };
    let may_create =
        context.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    for name in asked {
        let mut topic = MetadataResponseTopic::default();
        let name = match name {
            Ok(name) => name,
            Err(id) => {
                topic.topic_id = id;
                topic.error_code = code::UNKNOWN_TOPIC_ID;
                response.topics.push(topic);
                continue;
            }
        };
        topic.name = Some(TopicName(str_bytes(&name)));
        match metadata.topic(&name) {
            None if may_create && check_topic_name(&name).is_ok() => {
                auto_create(context, &name).await;
                topic.error_code = code::LEADER_NOT_AVAILABLE;
            }
            None => topic.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
            Some(meta) => {
                topic.topic_id = uuid(meta.id);
                topic.is_internal = name == OFFSETS_TOPIC;
                for (index, placement) in meta.partitions.iter().enumerate() {
                    let mut partition = MetadataResponsePartition::default();
                    partition.partition_index = index as i32;
                    partition.replica_nodes = placement
                        .replicas
                        .iter()
                        .map(|n| BrokerId(n.0 as i32))
                        .collect();
                    partition.isr_nodes = partition.replica_nodes.clone();
                    match leaders.get(&placement.group).copied().flatten() {
                        Some((leader, term)) => {
                            partition.leader_id = BrokerId(leader.0 as i32);
                            partition.leader_epoch = term.0 as i32;
                        }
                        None => {
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

/// Proposes one admin command and waits for its answer.
async fn admin(
    context: &Context,
    command: MetadataCommand,
    validate_only: bool,
    timeout_ms: i32,
) -> Result<Option<MetadataChange>, AdminError> {
    let timeout_ms = timeout_ms.clamp(0, 300_000) as u32;
    let request = Request::Admin(AdminRequest {
        command,
        validate_only,
        forward: false,
        timeout_ms,
    });
    let deadline = Duration::from_millis(u64::from(timeout_ms) + 5_000);
    match tokio::time::timeout(deadline, context.core.request(request)).await {
        Ok(Some(Response::Admin(result))) => result,
        Ok(_) => Err(AdminError::NotController { leader: None }),
        Err(_) => Err(AdminError::TimedOut),
    }
}

fn error_fields(result: &Result<Option<MetadataChange>, AdminError>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(_) => (code::NONE, None),
        Err(error) => (error.kafka_code(), error.message().map(|m| str_bytes(&m))),
    }
}

async fn create_topics(context: &Context, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    let mut seen = std::collections::BTreeSet::new();
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        result.num_partitions = -1;
        result.replication_factor = -1;
        let outcome = if !seen.insert(name.clone()) {
            Err(AdminError::InvalidTopic(format!(
                "topic {name:?} appears twice in the request"
            )))
        } else if !topic.assignments.is_empty() {
            Err(AdminError::InvalidConfig(
                "manual replica assignment is not supported; give num_partitions and replication_factor".into(),
            ))
        } else {
            let partitions = if topic.num_partitions == -1 {
                context.config.default_partitions as i32
            } else {
                topic.num_partitions
            };
            let replication_factor = if topic.replication_factor == -1 {
                context.config.auto_replication_factor() as i16
            } else {
                topic.replication_factor
            };
            let mut configs = BTreeMap::new();
            let mut bad_config = None;
            for config in &topic.configs {
                match &config.value {
                    Some(value) => {
                        configs
                            .insert(config.name.as_str().to_string(), value.as_str().to_string());
                    }
                    None => bad_config = Some(config.name.as_str().to_string()),
                }
            }
            match (
                u32::try_from(partitions),
                u16::try_from(replication_factor),
                bad_config,
            ) {
                (_, _, Some(key)) => Err(AdminError::InvalidConfig(format!(
                    "config {key:?} has no value"
                ))),
                (Err(_), _, _) => Err(AdminError::InvalidPartitions(format!(
                    "{partitions} partitions"
                ))),
                (_, Err(_), _) => Err(AdminError::InvalidReplicationFactor(format!(
                    "replication factor {replication_factor}"
                ))),
                (Ok(partitions), Ok(replication_factor), None) => {
                    admin(
                        context,
                        MetadataCommand::CreateTopic(CreateTopic {
                            name: name.clone(),
                            partitions,
                            replication_factor,
                            configs,
                        }),
                        request.validate_only,
                        request.timeout_ms,
                    )
                    .await
                }
            }
        };
        (result.error_code, result.error_message) = error_fields(&outcome);
        if outcome.is_ok() {
            if let Some(meta) = context.core.metadata().topic(&name) {
                result.topic_id = uuid(meta.id);
                result.num_partitions = meta.partitions.len() as i32;
                result.replication_factor = meta.replication_factor as i16;
                result.configs = Some(
                    topic_configs(meta)
                        .into_iter()
                        .map(|(key, value, default)| {
                            let mut c = CreatableTopicConfigs::default();
                            c.name = str_bytes(&key);
                            c.value = Some(str_bytes(&value));
                            c.config_source = if default { 5 } else { 1 };
                            c
                        })
                        .collect(),
                );
            } else if let Ok(Some(MetadataChange::TopicCreated { id, .. })) = &outcome {
                result.topic_id = uuid(*id);
            }
        }
        response.topics.push(result);
    }
    response
}

async fn delete_topics(
    context: &Context,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    // v0-5 name topics; v6 names or ids.
    let asked: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.as_str().to_string()), Uuid::nil()))
            .collect()
    };
    for (name, id) in asked {
        let mut result = DeletableTopicResult::default();
        let metadata = context.core.metadata();
        let name = name.or_else(|| {
            metadata
                .topic_by_id(TopicId(id.as_u128()))
                .map(|t| t.name.clone())
        });
        match name {
            None => {
                result.topic_id = id;
                result.error_code = code::UNKNOWN_TOPIC_ID;
            }
            Some(name) => {
                result.topic_id = metadata.topic(&name).map_or(id, |t| uuid(t.id));
                result.name = Some(TopicName(str_bytes(&name)));
                let outcome = admin(
                    context,
                    MetadataCommand::DeleteTopic { name },
                    false,
                    request.timeout_ms,
                )
                .await;
                (result.error_code, result.error_message) = error_fields(&outcome);
            }
        }
        response.responses.push(result);
    }
    response
}

async fn create_partitions(
    context: &Context,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name.clone();
        let outcome = if topic.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Err(AdminError::InvalidConfig(
                "manual replica assignment is not supported".into(),
            ))
        } else {
            match u32::try_from(topic.count) {
                Err(_) => Err(AdminError::InvalidPartitions(format!(
                    "{} partitions",
                    topic.count
                ))),
                Ok(count) => {
                    admin(
                        context,
                        MetadataCommand::CreatePartitions {
                            name: topic.name.0.as_str().to_string(),
                            count,
                        },
                        request.validate_only,
                        request.timeout_ms,
                    )
                    .await
                }
            }
        };
        (result.error_code, result.error_message) = error_fields(&outcome);
        response.results.push(result);
    }
    response
}

/// A topic's configuration: (key, value, whether it is the default).
fn topic_configs(topic: &TopicMeta) -> Vec<(String, String, bool)> {
    TOPIC_CONFIGS
        .iter()
        .map(|(key, _)| {
            let value = topic.config(key).expect("known key").to_string();
            (key.to_string(), value, !topic.configs.contains_key(*key))
        })
        .collect()
}

/// The broker configuration that DescribeConfigs reports (read-only: it comes from the file).
fn broker_configs(context: &Context) -> Vec<(String, String)> {
    let config = &context.config;
    vec![
        ("broker.id".into(), config.node_id.to_string()),
        (
            "auto.create.topics.enable".into(),
            config.auto_create_topics.to_string(),
        ),
        (
            "num.partitions".into(),
            config.default_partitions.to_string(),
        ),
        (
            "default.replication.factor".into(),
            config.auto_replication_factor().to_string(),
        ),
        (
            "message.max.bytes".into(),
            crate::runtime::core_config(config)
                .batch_bytes_max
                .to_string(),
        ),
    ]
}

fn describe_configs(context: &Context, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    const TOPIC: i8 = 2;
    const BROKER: i8 = 4;
    let mut response = DescribeConfigsResponse::default();
    let metadata = context.core.metadata();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let name = resource.resource_name.as_str();
        // (key, value, read only, source: 1 topic, 4 static broker, 5 default).
        let entries: Option<Vec<(String, String, bool, i8)>> = match resource.resource_type {
            TOPIC => metadata.topic(name).map(|topic| {
                topic_configs(topic)
                    .into_iter()
                    .map(|(k, v, default)| (k, v, false, if default { 5 } else { 1 }))
                    .collect()
            }),
            BROKER if name.is_empty() || name == context.config.node_id.to_string() => Some(
                broker_configs(context)
                    .into_iter()
                    .map(|(k, v)| (k, v, true, 4))
                    .collect(),
            ),
            _ => None,
        };
        match entries {
            None if resource.resource_type == TOPIC => {
                result.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
                result.error_message = Some(str_bytes(&format!("no topic {name:?}")));
            }
            None => {
                result.error_code = code::INVALID_REQUEST;
                result.error_message = Some(str_bytes(
                    "only topic resources and this broker's id can be described",
                ));
            }
            Some(entries) => {
                for (key, value, read_only, source) in entries {
                    let wanted = resource
                        .configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key));
                    if !wanted {
                        continue;
                    }
                    let mut entry = DescribeConfigsResourceResult::default();
                    entry.name = str_bytes(&key);
                    entry.value = Some(str_bytes(&value));
                    entry.read_only = read_only;
                    entry.config_source = source;
                    result.configs.push(entry);
                }
            }
        }
        response.results.push(result);
    }
    response
}

async fn describe_cluster(context: &Context) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = str_bytes(CLUSTER_ID);
    response.controller_id = controller(context).await;
    response.cluster_authorized_operations = i32::MIN;
    for (id, host, port) in brokers(context) {
        let mut broker = DescribeClusterBroker::default();
        broker.broker_id = BrokerId(id);
        broker.host = str_bytes(&host);
        broker.port = port;
        response.brokers.push(broker);
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
    let metadata = context.core.metadata();
    for topic in request.topic_data {
        let name = topic.name.0.as_str().to_string();
        for partition in topic.partition_data {
            let wait = match placement(&metadata, &name, partition.index) {
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
        let metadata = context.core.metadata();
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
                match placement(&metadata, name, partition.partition) {
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
/// batch this build cannot decompress (gzip, snappy; lz4 and zstd it can) answers with its base
/// offset: the earliest that can hold it.
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
    let metadata = context.core.metadata();
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
            match placement(&metadata, &name, partition.partition_index) {
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
