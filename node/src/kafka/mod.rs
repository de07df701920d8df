//! The Kafka listener: the wire protocol (through `kafka-protocol`) in front of the core.
//!
//! Per connection, a reader task decodes requests and submits them in arrival order (up to
//! 16 read ahead of their answers), and a writer task sends the answers in request order. Oversized or malformed frames, unknown API keys and
//! unsupported versions close that connection with a log line (Produce v0-v2 too, which
//! ApiVersions advertises all the same: see `PRODUCE_ADVERTISED_MIN`); ApiVersions above our
//! range is answered in v0 with UNSUPPORTED_VERSION, as clients expect (KIP-511).
//!
//! This file holds the connection (a reader and a writer task), the supported versions table
//! and one generic decode-handle-encode dispatch; the handlers live by API family in
//! `produce`, `fetch`, `metadata`, `admin` and `groups`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, DescribeClusterRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use oxbow_core::ids::TopicId;
use oxbow_core::metadata::{MetadataState, PartitionAssignment};
use slog::{debug, info, warn, Logger};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use uuid::Uuid;

use self::frame::Frame;
use crate::config::Config;
use crate::producer_ids::ProducerIds;
use crate::runtime::env::Network;
use crate::runtime::CoreHandle;

mod admin;
mod fetch;
mod fetch_session;
mod frame;
mod groups;
mod limits;
mod metadata;
mod produce;
mod txn;

/// Requests read ahead of their answers on one connection (answers still go out in order).
const PIPELINE_MAX: usize = 16;
/// Largest request accepted (Kafka's `socket.request.max.bytes` default).
pub(crate) const REQUEST_MAX: usize = 100 << 20;

/// Kafka error codes used here.
mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const INVALID_REQUEST: i16 = 42;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
}

/// The API keys and versions this broker serves, and nothing else (advertising a version
/// promises its semantics), as `(key, lowest, highest)`. Mostly pre-flexible versions, which
/// every client we test uses; Metadata goes to v13 (v10 brought topic ids, v13 a top-level
/// error code, always NONE here: oxbow never asks a client to bootstrap again), ApiVersions to
/// v4 (v3 but for the supported features' lowest versions, which oxbow does not send).
/// ApiVersions advertises these, except for Produce's lowest (`PRODUCE_ADVERTISED_MIN`);
/// docs/compatibility.md lists them (node/tests/versions.rs keeps the two equal).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 7),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
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
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::ElectLeaders, 0, 2),
];

/// The lowest Produce version ApiVersions advertises: 0, although only v3 and later are served
/// (a request for v0-v2 closes the connection, as any unsupported version does). Kafka 4 does
/// the same (KAFKA-18659, KIP-896): librdkafka before 2.11.1, such as the kcat Debian ships
/// (librdkafka 2.0), sends gzip, snappy and lz4 batches uncompressed, without a word, to a
/// broker whose lowest Produce version is above 0 (librdkafka issue 4956). Clients use the
/// highest version both sides have, so none sends v0-v2 to us.
pub const PRODUCE_ADVERTISED_MIN: i16 = 0;

/// What ApiVersions answers, as `(key, lowest, highest)`: `SUPPORTED`, with Produce from
/// `PRODUCE_ADVERTISED_MIN`.
pub fn advertised() -> impl Iterator<Item = (ApiKey, i16, i16)> {
    SUPPORTED.iter().map(|&(key, min, max)| match key {
        ApiKey::Produce => (key, PRODUCE_ADVERTISED_MIN, max),
        _ => (key, min, max),
    })
}

fn supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(k, min, max)| *k == key && (*min..=*max).contains(&version))
}

/// The highest version of `key` served, if it is served at all.
fn highest(key: ApiKey) -> Option<i16> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, max)| *max)
}

/// What every connection shares.
pub struct Context {
    config: Config,
    core: CoreHandle,
    /// Reads old records from the segment files.
    disk: crate::runtime::writer::Writer,
    producer_ids: std::sync::Mutex<ProducerIds>,
    /// Incremental fetch sessions (KIP-227).
    fetch_sessions: std::sync::Mutex<fetch_session::FetchSessions>,
    logger: Logger,
}

impl Context {
    /// Builds the context from the configuration.
    pub fn new(
        config: Config,
        core: CoreHandle,
        disk: crate::runtime::writer::Writer,
        producer_ids: ProducerIds,
        logger: Logger,
    ) -> Arc<Self> {
        let fetch_sessions = std::sync::Mutex::new(fetch_session::FetchSessions::new(
            config.max_incremental_fetch_session_cache_slots,
            // Session ids of different nodes apart; a node's restarts start alike, and a
            // client with a session from before a restart is answered
            // FETCH_SESSION_ID_NOT_FOUND or INVALID_FETCH_SESSION_EPOCH and starts again.
            (config.node_id as u32).wrapping_mul(0x0100_0193),
        ));
        Arc::new(Self {
            config,
            core,
            disk,
            producer_ids: std::sync::Mutex::new(producer_ids),
            fetch_sessions,
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

/// Accepts Kafka connections until shutdown, within the `[connections]` limits.
pub async fn serve<N: Network>(
    listener: N::Listener,
    context: Arc<Context>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = limits::Limits::new(context.config.connections.clone());
    let accept_logger = context.logger.clone();
    crate::runtime::accept_loop::<N, _, _>(
        listener,
        shutdown,
        accept_logger,
        move |read, write, remote| {
            let context = context.clone();
            let limits = limits.clone();
            let logger = context.logger.new(slog::o!("client" => remote.to_string()));
            let slot = limits.admit(remote.ip());
            async move {
                let _slot = match slot {
                    Ok(slot) => slot,
                    Err((why, refused, log)) => {
                        if log {
                            warn!(logger, "refused a client connection"; "why" => why,
                                "refused_so_far" => refused);
                        }
                        return; // dropping the socket closes it
                    }
                };
                match connection(read, write, context, &limits, remote.to_string(), &logger).await {
                    Ok(()) => debug!(logger, "client disconnected"),
                    Err(why) => info!(logger, "closed client connection"; "why" => why),
                }
            }
        },
    )
    .await;
}

/// A response being prepared: resolves to the encoded frame, or `None` when nothing is sent
/// (acks=0).
type PendingResponse = Pin<Box<dyn Future<Output = Result<Option<Frame>, String>> + Send>>;

/// Reads requests and queues their responses, in request order, to a writer task. Produce
/// requests are submitted to the core here, in the order they arrive (idempotent sequences
/// depend on it); only the waiting for their answers overlaps with reading the next request.
async fn connection(
    read: impl AsyncRead + Unpin,
    write: impl AsyncWrite + Unpin + Send + 'static,
    context: Arc<Context>,
    limits: &limits::Limits,
    remote: String,
    logger: &Logger,
) -> Result<(), String> {
    let mut read = BufReader::new(read);
    let (queue, pending) = tokio::sync::mpsc::channel::<PendingResponse>(PIPELINE_MAX);
    let mut writer = tokio::spawn(write_responses(write, pending, limits.response_write()));
    let result = {
        let reading = read_requests(&mut read, &context, limits, &remote, logger, &queue);
        tokio::pin!(reading);
        tokio::select! {
            result = &mut reading => result,
            // The writer stops first only on a failed or timed-out write (the reader holds
            // the queue open): stop reading too, which closes the connection and frees the
            // bytes of the requests read and not yet answered, and say why.
            written = &mut writer => {
                return written.map_err(|e| e.to_string()).and_then(|w| w);
            }
        }
    };
    drop(queue);
    let written = writer.await.map_err(|e| e.to_string())?;
    result.and(written)
}

/// Writes the answers in request order. Each answer's writing must end within `timeout`
/// (`connections.response_write_timeout_ms`) once it starts: a client that does not read its
/// answers would otherwise hold its connection, and the bytes of its pipelined requests,
/// forever.
async fn write_responses(
    mut write: impl AsyncWrite + Unpin,
    mut pending: tokio::sync::mpsc::Receiver<PendingResponse>,
    timeout: std::time::Duration,
) -> Result<(), String> {
    while let Some(response) = pending.recv().await {
        if let Some(frame) = response.await? {
            let bytes = frame.len();
            match tokio::time::timeout(timeout, write_frame(&mut write, frame)).await {
                Err(_) => {
                    return Err(format!(
                        "an answer of {bytes} bytes was not written within {} ms: the client \
                         does not read (connections.response_write_timeout_ms)",
                        timeout.as_millis()
                    ))
                }
                Ok(written) => written.map_err(|e| e.to_string())?,
            }
        }
    }
    Ok(())
}

/// Writes a frame's parts with vectored writes (a fetch's batches are parts of their own).
async fn write_frame(write: &mut (impl AsyncWrite + Unpin), frame: Frame) -> std::io::Result<()> {
    /// Slices per write: well under every platform's IOV_MAX.
    const SLICES: usize = 64;
    let mut parts: std::collections::VecDeque<Bytes> = frame.into_parts().into();
    parts.retain(|p| !p.is_empty());
    while !parts.is_empty() {
        let slices: Vec<std::io::IoSlice<'_>> = parts
            .iter()
            .take(SLICES)
            .map(|p| std::io::IoSlice::new(p))
            .collect();
        let mut written = write.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let first = parts.front_mut().expect("wrote no more than the parts");
            if written >= first.len() {
                written -= first.len();
                parts.pop_front();
            } else {
                first.advance(written);
                written = 0;
            }
        }
    }
    Ok(())
}

async fn read_requests(
    read: &mut BufReader<impl AsyncRead + Unpin>,
    context: &Arc<Context>,
    limits: &limits::Limits,
    remote: &str,
    logger: &Logger,
    queue: &tokio::sync::mpsc::Sender<PendingResponse>,
) -> Result<(), String> {
    loop {
        let size = match tokio::time::timeout(limits.idle(), read.read_i32()).await {
            Err(_) => {
                return Err(format!(
                    "no request for {} ms (connections.connections_max_idle_ms)",
                    limits.idle().as_millis()
                ))
            }
            Ok(Ok(size)) => size,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e.to_string()),
        };
        if size < 8 || size as usize > REQUEST_MAX {
            return Err(format!("request size {size} is outside 8..={REQUEST_MAX}"));
        }
        // Held until the answer is ready: the node holds at most
        // `queued_max_request_bytes` of requests (reading waits past it).
        let held = limits.queue(size as usize).await;
        let mut body = vec![0u8; size as usize];
        // Counted from when its bytes are held (the wait for room is the node's, not the
        // client's): a client that announces a request and trickles it, or sends nothing
        // more, must not hold its share of `queued_max_request_bytes` for long. Returning
        // closes the connection and frees the bytes.
        match tokio::time::timeout(limits.request_read(), read.read_exact(&mut body)).await {
            Err(_) => {
                return Err(format!(
                    "a request of {size} bytes did not arrive within {} ms \
                     (connections.request_read_timeout_ms)",
                    limits.request_read().as_millis()
                ))
            }
            Ok(done) => done.map_err(|e| e.to_string())?,
        };
        let mut buf = Bytes::from(body);
        let api_key = i16::from_be_bytes([buf[0], buf[1]]);
        let version = i16::from_be_bytes([buf[2], buf[3]]);
        let correlation_id = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let key = ApiKey::try_from(api_key).map_err(|_| format!("unknown API key {api_key}"))?;
        let response: PendingResponse = if key == ApiKey::ApiVersions
            && highest(key).is_some_and(|max| version > max)
        {
            // KIP-511: answer in v0 with our ranges, so the client can retry with one of them.
            let mut response = api_versions();
            response.error_code = code::UNSUPPORTED_VERSION;
            let frame = encode_response(correlation_id, key, 0, &response);
            Box::pin(async move { frame.map(|f| Some(Frame::whole(f.freeze()))) })
        } else {
            if !supported(key, version) {
                warn!(logger, "unsupported request"; "api" => ?key, "version" => version);
                if advertised().any(|(k, min, max)| k == key && (min..=max).contains(&version)) {
                    return Err(format!(
                        "{key:?} v{version} is advertised but not served (as Kafka 4 advertises \
                         Produce v0-v2, so that old librdkafka compresses: KAFKA-18659); clients \
                         use a later version"
                    ));
                }
                return Err(format!("{key:?} v{version} is not supported"));
            }
            let header = RequestHeader::decode(&mut buf, key.request_header_version(version))
                .map_err(|e| format!("malformed request header: {e}"))?;
            assert_eq!(header.correlation_id, correlation_id);
            let call = Call {
                correlation_id,
                key,
                version,
            };
            let response = dispatch(call, &header, remote, &mut buf, context.clone()).await?;
            if buf.has_remaining() {
                debug!(logger, "request had trailing bytes"; "api" => ?key, "bytes" => buf.remaining());
            }
            response
        };
        let response: PendingResponse = Box::pin(async move {
            let answer = response.await;
            drop(held);
            answer
        });
        if queue.send(response).await.is_err() {
            // The writer stopped (the client went away or a write failed): it reports why.
            return Ok(());
        }
    }
}

/// Decodes a request's body, hands it to its handler and returns the answer, which encodes
/// the handler's response. One line per API: `handle` for handlers that run when the writer
/// awaits the answer, `handle_now` for those that run at read time.
async fn dispatch(
    call: Call,
    header: &RequestHeader,
    remote: &str,
    body: &mut Bytes,
    ctx: Arc<Context>,
) -> Result<PendingResponse, String> {
    let version = call.version;
    match call.key {
        // The ApiVersions request body is not decoded: nothing in it changes the answer.
        ApiKey::ApiVersions => Ok(call.answer_now(&api_versions())),
        // Submitted to the core here, in arrival order; only the wait for the answer is deferred.
        ApiKey::Produce => Ok(call.answer_later(produce::produce(&ctx, call.decode(body)?).await)),
        ApiKey::InitProducerId => call.handle(body, async move |r| {
            txn::init_producer_id(&ctx, r, version).await
        }),
        ApiKey::DeleteRecords => {
            call.handle(body, async move |r| produce::delete_records(&ctx, r).await)
        }
        ApiKey::Fetch => {
            // The stored batches are spliced into the encoded response, not copied.
            let answer = fetch::fetch(ctx, call.decode(body)?);
            Ok(Box::pin(async move {
                let spliced = answer.await;
                spliced
                    .into_frame(version, |r| {
                        encode_response(call.correlation_id, call.key, version, r)
                    })
                    .map(Some)
            }))
        }
        ApiKey::ListOffsets => call.handle(body, async move |r| {
            fetch::list_offsets(&ctx, r, version).await
        }),
        ApiKey::OffsetForLeaderEpoch => call.handle(body, async move |r| {
            fetch::offset_for_leader_epoch(&ctx, r).await
        }),
        ApiKey::Metadata => call.handle(body, async move |r| {
            metadata::metadata(&ctx, r, version).await
        }),
        ApiKey::DescribeCluster => call.handle(body, async move |_: DescribeClusterRequest| {
            metadata::describe_cluster(&ctx).await
        }),
        ApiKey::CreateTopics => {
            call.handle(body, async move |r| admin::create_topics(&ctx, r).await)
        }
        ApiKey::DeleteTopics => call.handle(body, async move |r| {
            admin::delete_topics(&ctx, r, version).await
        }),
        ApiKey::CreatePartitions => {
            call.handle(body, async move |r| admin::create_partitions(&ctx, r).await)
        }
        ApiKey::DescribeConfigs => call.handle_now(body, |r| admin::describe_configs(&ctx, r)),
        ApiKey::ElectLeaders => {
            call.handle(body, async move |r| admin::elect_leaders(&ctx, r).await)
        }
        ApiKey::DescribeLogDirs => {
            call.handle(body, async move |r| admin::describe_log_dirs(&ctx, r).await)
        }
        ApiKey::AlterConfigs => {
            call.handle(body, async move |r| admin::alter_configs(&ctx, r).await)
        }
        ApiKey::IncrementalAlterConfigs => call.handle(body, async move |r| {
            admin::incremental_alter_configs(&ctx, r).await
        }),
        ApiKey::FindCoordinator => call.handle(body, async move |r| {
            groups::find_coordinator(&ctx, r, version).await
        }),
        ApiKey::JoinGroup => {
            let caller = Caller::new(header, remote);
            call.handle(body, async move |r| {
                groups::join_group(&ctx, r, version, caller).await
            })
        }
        ApiKey::SyncGroup => call.handle(body, async move |r| {
            groups::sync_group(&ctx, r, version).await
        }),
        ApiKey::Heartbeat => call.handle(body, async move |r| groups::heartbeat(&ctx, r).await),
        ApiKey::LeaveGroup => call.handle(body, async move |r| {
            groups::leave_group(&ctx, r, version).await
        }),
        ApiKey::OffsetCommit => {
            call.handle(body, async move |r| groups::offset_commit(&ctx, r).await)
        }
        ApiKey::OffsetFetch => call.handle(body, async move |r| {
            groups::offset_fetch(&ctx, r, version).await
        }),
        ApiKey::DescribeGroups => call.handle(body, async move |r| {
            groups::describe_groups(&ctx, r, version).await
        }),
        ApiKey::ListGroups => call.handle(body, async move |r| {
            groups::list_groups(&ctx, r, version).await
        }),
        ApiKey::OffsetDelete => {
            call.handle(body, async move |r| groups::offset_delete(&ctx, r).await)
        }
        ApiKey::DeleteGroups => {
            call.handle(body, async move |r| groups::delete_groups(&ctx, r).await)
        }
        ApiKey::AddPartitionsToTxn => call.handle(body, async move |r| {
            txn::add_partitions_to_txn(&ctx, r, version).await
        }),
        ApiKey::EndTxn => call.handle(body, async move |r| txn::end_txn(&ctx, r, version).await),
        ApiKey::AddOffsetsToTxn => call.handle(body, async move |r| {
            txn::add_offsets_to_txn(&ctx, r, version).await
        }),
        ApiKey::TxnOffsetCommit => call.handle(body, async move |r| {
            groups::txn_offset_commit(&ctx, r).await
        }),
        ApiKey::DescribeTransactions => call.handle(body, async move |r| {
            txn::describe_transactions(&ctx, r).await
        }),
        ApiKey::ListTransactions => call.handle(body, async move |r| {
            txn::list_transactions(&ctx, r, version).await
        }),
        ApiKey::DescribeProducers => {
            call.handle(body, async move |r| txn::describe_producers(&ctx, r).await)
        }
        other => unreachable!("{other:?} is not in SUPPORTED"),
    }
}

/// Who sent a request, for JoinGroup (DescribeGroups shows it).
struct Caller {
    client_id: String,
    host: String,
}

impl Caller {
    /// The sender of a request with this header, over a connection from `remote` (`host:port`).
    fn new(header: &RequestHeader, remote: &str) -> Self {
        Self {
            client_id: header
                .client_id
                .as_ref()
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
            host: format!("/{}", remote.rsplit_once(':').map_or(remote, |(h, _)| h)),
        }
    }
}

/// One request as its answer needs it: the correlation id to echo, the API and the version.
/// Its methods are the one decode-handle-encode path every API goes through.
#[derive(Clone, Copy)]
struct Call {
    correlation_id: i32,
    key: ApiKey,
    version: i16,
}

impl Call {
    /// Decodes the request body (what follows the header) as this call's version of `R`.
    fn decode<R: Request>(self, body: &mut Bytes) -> Result<R, String> {
        debug_assert_eq!(
            R::KEY,
            self.key as i16,
            "the dispatch decodes the wrong type"
        );
        R::decode(body, self.version).map_err(|e| format!("malformed {:?}: {e}", self.key))
    }

    /// Decodes the request and runs `handler` now, at read time (it sees the state of the
    /// moment the request was read).
    fn handle_now<R: Request>(
        self,
        body: &mut Bytes,
        handler: impl FnOnce(R) -> R::Response,
    ) -> Result<PendingResponse, String> {
        let request = self.decode(body)?;
        Ok(self.answer_now(&handler(request)))
    }

    /// Decodes the request now; the future `handler` returns runs when the writer awaits this
    /// answer, after the answers to every earlier request.
    fn handle<R: Request, F>(
        self,
        body: &mut Bytes,
        handler: impl FnOnce(R) -> F,
    ) -> Result<PendingResponse, String>
    where
        F: Future<Output = R::Response> + Send + 'static,
        R::Response: 'static,
    {
        let answer = handler(self.decode(body)?);
        Ok(self.answer_later(async move { Some(answer.await) }))
    }

    /// The answer with a response already built.
    fn answer_now<M: Encodable>(self, response: &M) -> PendingResponse {
        let frame = encode_response(self.correlation_id, self.key, self.version, response);
        Box::pin(async move { frame.map(|f| Some(Frame::whole(f.freeze()))) })
    }

    /// The answer with the response `answer` resolves to; `None` sends nothing (acks=0).
    fn answer_later<M: Encodable + 'static>(
        self,
        answer: impl Future<Output = Option<M>> + Send + 'static,
    ) -> PendingResponse {
        Box::pin(async move {
            match answer.await {
                Some(response) => {
                    encode_response(self.correlation_id, self.key, self.version, &response)
                        .map(|f| Some(Frame::whole(f.freeze())))
                }
                None => Ok(None),
            }
        })
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
    response.api_keys = advertised()
        .map(|(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    response
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn uuid(id: TopicId) -> Uuid {
    Uuid::from_u128(id.0)
}
