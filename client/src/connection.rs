//! One connection to one broker: requests are written in call order and may be pipelined; the
//! broker answers in order, and each answer is matched to its request by correlation id.
//!
//! A writer task owns the write half, a reader task the read half; the writer hands each
//! written request's reply slot to the reader through a bounded queue (the pipeline bound).
//! When either side fails, every waiting call gets an error, and the connection is dead: the
//! owner opens a new one. A request not answered within the request timeout kills the
//! connection too, as Kafka's clients disconnect on a request timeout: a broker that lost
//! power sends no FIN, and a connection that is only waited on would never learn it (the
//! pipeline fills, and later calls would wait for room forever).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::transport::{Connector, Stream};

/// Requests written but not answered, at most, per connection.
pub const PIPELINE_MAX: usize = 64;
/// Largest response accepted.
const RESPONSE_MAX: usize = 256 << 20;
/// The versions this client speaks, per API key; a request uses the highest version both
/// sides support.
pub(crate) const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 7),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
];

struct Call {
    frame: BytesMut,
    correlation_id: i32,
    /// `None`: no answer comes (acks=0 produce).
    reply: Option<oneshot::Sender<Result<Bytes>>>,
}

struct Waiting {
    correlation_id: i32,
    reply: oneshot::Sender<Result<Bytes>>,
}

/// A connection to one broker.
pub struct Connection {
    address: String,
    calls: mpsc::Sender<Call>,
    /// The reader and writer tasks, aborted when the connection is killed.
    tasks: [tokio::task::AbortHandle; 2],
    next_correlation: std::sync::atomic::AtomicI32,
    versions: BTreeMap<i16, (i16, i16)>,
    dead: Arc<AtomicBool>,
    client_id: StrBytes,
    timeout: Duration,
}

impl Connection {
    /// Connects and negotiates versions (ApiVersions, with the v0 fallback of KIP-511).
    pub async fn open(
        connector: &dyn Connector,
        address: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let stream = tokio::time::timeout(timeout, connector.connect(address))
            .await
            .map_err(|_| Error::Connect(format!("{address}: connect timed out")))?
            .map_err(|e| Error::Connect(format!("{address}: {e}")))?;
        let mut connection = Self::start(stream, address, client_id, timeout);
        let mut versions = None;
        for version in [3, 0] {
            let response: ApiVersionsResponse = connection
                .call_version(ApiVersionsRequest::default(), version)
                .await?;
            match response.error_code {
                0 => {
                    versions = Some(response);
                    break;
                }
                35 => continue,
                code => return Err(Error::broker(code, None)),
            }
        }
        let versions = versions.ok_or_else(|| {
            Error::Protocol(format!("{address}: no ApiVersions version in common"))
        })?;
        connection.versions = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(connection)
    }

    fn start(stream: Box<dyn Stream>, address: &str, client_id: &str, timeout: Duration) -> Self {
        let (read, write) = tokio::io::split(stream);
        let (calls, calls_rx) = mpsc::channel(PIPELINE_MAX);
        let (waiting, waiting_rx) = mpsc::channel(PIPELINE_MAX);
        let dead = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_loop(write, calls_rx, waiting, dead.clone()));
        let reader = tokio::spawn(read_loop(read, waiting_rx, dead.clone()));
        Self {
            address: address.to_string(),
            calls,
            tasks: [writer.abort_handle(), reader.abort_handle()],
            next_correlation: std::sync::atomic::AtomicI32::new(1),
            versions: BTreeMap::new(),
            dead,
            client_id: StrBytes::from_string(client_id.to_string()),
            timeout,
        }
    }

    /// The broker's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the connection failed; a dead connection fails every call.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed) || self.calls.is_closed()
    }

    /// Closes the connection at once (a request timed out): it is dead, its socket is closed,
    /// and every call still waiting on it fails as disconnected (their requests may have
    /// been written).
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }

    /// The version to use for `key`: the highest both sides support.
    pub fn version(&self, key: ApiKey) -> Result<i16> {
        let (_, client_min, client_max) = CLIENT_VERSIONS
            .iter()
            .find(|(k, _, _)| *k == key)
            .ok_or_else(|| Error::Protocol(format!("{key:?} is not implemented by this client")))?;
        let (broker_min, broker_max) = self
            .versions
            .get(&(key as i16))
            .ok_or_else(|| Error::Protocol(format!("{} does not support {key:?}", self.address)))?;
        let version = (*client_max).min(*broker_max);
        if version < (*client_min).max(*broker_min) {
            return Err(Error::Protocol(format!(
                "{}: no {key:?} version in common (client {client_min}-{client_max}, broker {broker_min}-{broker_max})",
                self.address
            )));
        }
        Ok(version)
    }

    /// Sends a request at the negotiated version and waits for the answer.
    pub async fn call<R: Request>(&self, request: R) -> Result<(R::Response, i16)> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| Error::Protocol("unknown key".into()))?;
        let version = self.version(key)?;
        Ok((self.call_version(request, version).await?, version))
    }

    /// Sends a request at `version` and waits for the answer.
    pub async fn call_version<R: Request>(&self, request: R, version: i16) -> Result<R::Response> {
        let answer = self
            .submit(request, version, true)
            .await?
            .expect("an answer is expected");
        self.wait::<R>(answer, version).await
    }

    /// Waits for the answer to a request [`Connection::submit`] wrote, and decodes it.
    pub async fn wait<R: Request>(
        &self,
        answer: oneshot::Receiver<Result<Bytes>>,
        version: i16,
    ) -> Result<R::Response> {
        self.wait_for::<R>(answer, version, self.timeout).await
    }

    /// [`Connection::wait`], up to `timeout` (longer than the request timeout for a request
    /// the broker may hold, as JoinGroup for the rebalance). No answer by then kills the
    /// connection.
    pub async fn wait_for<R: Request>(
        &self,
        answer: oneshot::Receiver<Result<Bytes>>,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => {
                self.kill();
                Err(Error::Timeout)
            }
            Ok(answer) => self.decode::<R>(answer, version),
        }
    }

    /// The request timeout this connection's calls wait for an answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Decodes an answer that came for a request [`Connection::submit`] wrote at `version`
    /// (for callers that wait for several answers at once, with their own deadline).
    pub fn decode<R: Request>(
        &self,
        answer: std::result::Result<Result<Bytes>, oneshot::error::RecvError>,
        version: i16,
    ) -> Result<R::Response> {
        let mut body = match answer {
            Err(_) => {
                return Err(Error::Disconnected(format!(
                    "{}: connection closed",
                    self.address
                )))
            }
            Ok(result) => result?,
        };
        let key = ApiKey::try_from(R::KEY).map_err(|_| Error::Protocol("unknown key".into()))?;
        let header_version = if key == ApiKey::ApiVersions {
            0
        } else {
            key.response_header_version(version)
        };
        ResponseHeader::decode(&mut body, header_version)
            .map_err(|e| Error::Protocol(format!("{}: response header: {e}", self.address)))?;
        R::Response::decode(&mut body, version).map_err(|e| {
            Error::Protocol(format!(
                "{}: {key:?} v{version} response: {e}",
                self.address
            ))
        })
    }

    /// Writes a request; returns the wait for its answer (`None` when `answered` is false).
    /// Requests are written in the order this is called.
    pub async fn submit<R: Request>(
        &self,
        request: R,
        version: i16,
        answered: bool,
    ) -> Result<Option<oneshot::Receiver<Result<Bytes>>>> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| Error::Protocol("unknown key".into()))?;
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(self.client_id.clone());
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        header
            .encode(&mut frame, key.request_header_version(version))
            .map_err(|e| Error::Protocol(format!("encode header: {e}")))?;
        request
            .encode(&mut frame, version)
            .map_err(|e| Error::Invalid(format!("cannot encode {key:?} v{version}: {e}")))?;
        let size = (frame.len() - 4) as i32;
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        let (reply, answer) = if answered {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if self.is_dead() {
            return Err(Error::Connect(format!(
                "{}: connection is closed",
                self.address
            )));
        }
        let call = Call {
            frame,
            correlation_id,
            reply,
        };
        // The pipeline has room unless the broker stopped answering: then the connection
        // is killed after the request timeout, and nothing of this request was written.
        match tokio::time::timeout(self.timeout, self.calls.send(call)).await {
            Ok(Ok(())) => Ok(answer),
            Ok(Err(_)) => Err(Error::Connect(format!(
                "{}: connection is closed",
                self.address
            ))),
            Err(_) => {
                self.kill();
                Err(Error::Connect(format!(
                    "{}: no room in the pipeline within the request timeout; reconnecting",
                    self.address
                )))
            }
        }
    }
}

async fn write_loop(
    mut write: tokio::io::WriteHalf<Box<dyn Stream>>,
    mut calls: mpsc::Receiver<Call>,
    waiting: mpsc::Sender<Waiting>,
    dead: Arc<AtomicBool>,
) {
    while let Some(call) = calls.recv().await {
        if let Some(reply) = call.reply {
            // Registered before writing, so the reader never sees an answer it cannot match.
            if waiting
                .send(Waiting {
                    correlation_id: call.correlation_id,
                    reply,
                })
                .await
                .is_err()
            {
                break;
            }
        }
        if write.write_all(&call.frame).await.is_err() {
            break;
        }
    }
    dead.store(true, Ordering::Relaxed);
    let _ = write.shutdown().await;
}

async fn read_loop(
    mut read: tokio::io::ReadHalf<Box<dyn Stream>>,
    mut waiting: mpsc::Receiver<Waiting>,
    dead: Arc<AtomicBool>,
) {
    let why = loop {
        let Some(next) = waiting.recv().await else {
            break "closed".to_string();
        };
        let size = match read.read_i32().await {
            Ok(size) => size,
            Err(e) => {
                let _ = next.reply.send(Err(Error::Disconnected(e.to_string())));
                break e.to_string();
            }
        };
        if size < 4 || size as usize > RESPONSE_MAX {
            let why = format!("response size {size} is impossible");
            let _ = next.reply.send(Err(Error::Protocol(why.clone())));
            break why;
        }
        let mut body = vec![0u8; size as usize];
        if let Err(e) = read.read_exact(&mut body).await {
            let _ = next.reply.send(Err(Error::Disconnected(e.to_string())));
            break e.to_string();
        }
        let body = Bytes::from(body);
        let correlation_id = (&body[..4]).get_i32();
        if correlation_id != next.correlation_id {
            let why = format!(
                "answer {correlation_id} came when {} was expected",
                next.correlation_id
            );
            let _ = next.reply.send(Err(Error::Protocol(why.clone())));
            break why;
        }
        let _ = next.reply.send(Ok(body));
    };
    dead.store(true, Ordering::Relaxed);
    waiting.close();
    while let Ok(next) = waiting.try_recv() {
        let _ = next.reply.send(Err(Error::Disconnected(why.clone())));
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .field("dead", &self.is_dead())
            .finish_non_exhaustive()
    }
}
