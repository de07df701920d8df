//! [`Client`]: bootstrap, connections to every broker (reopened when they die), and a metadata
//! cache that is refreshed when a broker says it is not the leader or does not know a topic.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::connection::Connection;
use crate::error::{codes, Error, Result};
use crate::transport::{Connector, TcpConnector};

/// How to reach the cluster.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port` of one or more brokers.
    pub bootstrap: Vec<String>,
    /// Sent in every request header.
    pub client_id: String,
    /// How long to wait for a connection or an answer.
    pub request_timeout: Duration,
    /// Wait between retries, and the first wait before reconnecting to a broker that could not
    /// be reached; the reconnect wait doubles with each failure, up to `reconnect_backoff_max`.
    pub retry_backoff: Duration,
    /// Longest wait before reconnecting to an unreachable broker.
    pub reconnect_backoff_max: Duration,
    /// How connections are opened.
    pub connector: Arc<dyn Connector>,
    /// The wall clock that stamps records sent without a timestamp.
    pub wall_clock: WallClock,
}

/// Milliseconds since the Unix epoch, from the system or from a simulation.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl WallClock {
    /// The system clock.
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)]
    pub fn system() -> Self {
        Self(Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        }))
    }

    /// A clock read through `now` (a simulator's).
    pub fn from_fn(now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WallClock")
    }
}

impl ClientConfig {
    /// Plain TCP to `bootstrap` (comma-separated `host:port`s), with defaults.
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            client_id: "oxbow-client".into(),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(5),
            connector: Arc::new(TcpConnector),
            wall_clock: WallClock::system(),
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("bootstrap", &self.bootstrap)
            .field("client_id", &self.client_id)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// One partition as the metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The leader's broker id, or -1.
    pub leader: i32,
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
}

/// One topic as the metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its id (nil if the broker has no topic ids).
    pub id: Uuid,
    /// Its partitions, by index.
    pub partitions: Vec<PartitionInfo>,
}

/// What the client knows of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Broker id to `host:port`.
    pub brokers: BTreeMap<i32, String>,
    /// The controller's broker id, or -1.
    pub controller: i32,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// Topics the cluster answered with a retriable error for the whole topic (for example
    /// LEADER_NOT_AVAILABLE while it is being created, or while none of its partitions has a
    /// leader), with the error code: ask again.
    pub unavailable: BTreeMap<String, i16>,
}

struct Inner {
    config: ClientConfig,
    connections: Mutex<BTreeMap<String, Arc<Connection>>>,
    /// Per unreachable address: failures in a row, and when the next attempt may be made.
    unreachable: std::sync::Mutex<BTreeMap<String, (u32, tokio::time::Instant)>>,
    metadata: RwLock<Arc<ClusterMetadata>>,
}

/// A handle on the cluster, cheap to clone; the producer, consumer and admin use it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A client; nothing is connected until the first request.
    pub fn new(config: ClientConfig) -> Result<Self> {
        if config.bootstrap.is_empty() {
            return Err(Error::Invalid("no bootstrap server given".into()));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                connections: Mutex::new(BTreeMap::new()),
                unreachable: std::sync::Mutex::new(BTreeMap::new()),
                metadata: RwLock::new(Arc::new(ClusterMetadata::default())),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The cached metadata.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.inner.metadata.read().expect("metadata lock").clone()
    }

    /// A live connection to `address`, opened if needed.
    pub async fn connection(&self, address: &str) -> Result<Arc<Connection>> {
        let mut connections = self.inner.connections.lock().await;
        if let Some(c) = connections.get(address) {
            if !c.is_dead() {
                return Ok(c.clone());
            }
        }
        let config = &self.inner.config;
        let now = tokio::time::Instant::now();
        if let Some((failures, next)) = self.unreachable().get(address).copied() {
            if now < next {
                return Err(Error::Connect(format!(
                    "{address}: unreachable {failures} time(s) in a row; next attempt in {} ms",
                    (next - now).as_millis()
                )));
            }
        }
        let opened = Connection::open(
            config.connector.as_ref(),
            address,
            &config.client_id,
            config.request_timeout,
        )
        .await;
        let connection = match opened {
            Ok(connection) => Arc::new(connection),
            Err(error) => {
                let mut unreachable = self.unreachable();
                let failures = unreachable.get(address).map_or(0, |(f, _)| *f) + 1;
                let wait = config
                    .retry_backoff
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(config.reconnect_backoff_max);
                unreachable.insert(
                    address.to_string(),
                    (failures, tokio::time::Instant::now() + wait),
                );
                return Err(error);
            }
        };
        self.unreachable().remove(address);
        connections.insert(address.to_string(), connection.clone());
        Ok(connection)
    }

    fn unreachable(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, (u32, tokio::time::Instant)>> {
        self.inner.unreachable.lock().expect("unreachable lock")
    }

    /// A connection to broker `id`.
    pub async fn broker(&self, id: i32) -> Result<Arc<Connection>> {
        let address = self.metadata().brokers.get(&id).cloned().ok_or_else(|| {
            Error::broker(
                codes::LEADER_NOT_AVAILABLE,
                Some(format!("broker {id} is unknown")),
            )
        })?;
        self.connection(&address).await
    }

    /// A connection to any broker: known brokers first, then the bootstrap list.
    pub async fn any_broker(&self) -> Result<Arc<Connection>> {
        let mut addresses: Vec<String> = self.metadata().brokers.values().cloned().collect();
        addresses.extend(self.inner.config.bootstrap.iter().cloned());
        let mut last = Error::Connect("no broker address".into());
        for address in addresses {
            match self.connection(&address).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Fetches metadata for `topics` (and every topic already cached) and caches it. A read
    /// with no effect, so a broken connection is retried (on another broker if need be).
    pub async fn refresh_metadata(&self, topics: &[&str]) -> Result<Arc<ClusterMetadata>> {
        let mut last = Error::Closed;
        for _ in 0..3 {
            match self.refresh_metadata_once(topics).await {
                Err(e) if e.is_retriable() => {
                    last = e;
                    self.backoff().await;
                }
                other => return other,
            }
        }
        Err(last)
    }

    async fn refresh_metadata_once(&self, topics: &[&str]) -> Result<Arc<ClusterMetadata>> {
        let mut names: Vec<String> = self.metadata().topics.keys().cloned().collect();
        names.extend(topics.iter().map(|t| t.to_string()));
        names.sort();
        names.dedup();
        let mut request = MetadataRequest::default();
        request.topics = Some(
            names
                .iter()
                .map(|n| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(TopicName(StrBytes::from_string(n.clone())));
                    t
                })
                .collect(),
        );
        let connection = self.any_broker().await?;
        let (response, _) = connection.call(request).await?;
        let mut metadata = ClusterMetadata {
            controller: response.controller_id.0,
            ..ClusterMetadata::default()
        };
        for broker in &response.brokers {
            metadata.brokers.insert(
                broker.node_id.0,
                format!("{}:{}", broker.host.as_str(), broker.port),
            );
        }
        for topic in &response.topics {
            let Some(name) = &topic.name else { continue };
            if topic.error_code != codes::NONE && topic.partitions.is_empty() {
                if codes::retriable(topic.error_code)
                    && topic.error_code != codes::UNKNOWN_TOPIC_OR_PARTITION
                {
                    metadata
                        .unavailable
                        .insert(name.0.as_str().to_string(), topic.error_code);
                }
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = Vec::new();
            let mut sorted: Vec<_> = topic.partitions.iter().collect();
            sorted.sort_by_key(|p| p.partition_index);
            for p in sorted {
                partitions.push(PartitionInfo {
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                });
            }
            metadata.topics.insert(
                name.0.as_str().to_string(),
                TopicInfo {
                    id: topic.topic_id,
                    partitions,
                },
            );
        }
        let metadata = Arc::new(metadata);
        *self.inner.metadata.write().expect("metadata lock") = metadata.clone();
        Ok(metadata)
    }

    /// The topic's metadata, fetched if not cached; `UNKNOWN_TOPIC_OR_PARTITION` if the
    /// cluster does not have it.
    /// A topic the cluster answers as not available (being created, or no partition has a
    /// leader) is asked again until `request_timeout`, as Kafka's clients wait for a topic's
    /// metadata; then the error is the cluster's (LEADER_NOT_AVAILABLE), not "no topic".
    pub async fn topic(&self, topic: &str) -> Result<TopicInfo> {
        let deadline = tokio::time::Instant::now() + self.inner.config.request_timeout;
        self.topic_by(topic, deadline, None).await
    }

    /// [`Client::topic`], asking until `deadline` (a producer's delivery timeout) both while
    /// the topic is not available and while no broker answers the metadata request, and until
    /// `unknown_deadline` (a producer's `max.block.ms`) while the cluster does not know the
    /// topic: a topic just created reaches the brokers one by one, and the one that answers may
    /// not have it yet. The error then says which.
    pub async fn topic_until(
        &self,
        topic: &str,
        deadline: tokio::time::Instant,
        unknown_deadline: tokio::time::Instant,
    ) -> Result<TopicInfo> {
        self.topic_by(topic, deadline, Some(unknown_deadline)).await
    }

    /// The topic's metadata, asked until `deadline`; with `unknown_deadline`, also through
    /// retriable errors and, until then, through "no topic".
    async fn topic_by(
        &self,
        topic: &str,
        deadline: tokio::time::Instant,
        unknown_deadline: Option<tokio::time::Instant>,
    ) -> Result<TopicInfo> {
        let through_errors = unknown_deadline.is_some();
        if let Some(info) = self.metadata().topics.get(topic) {
            return Ok(info.clone());
        }
        let start = tokio::time::Instant::now();
        loop {
            let error = match self.refresh_metadata(&[topic]).await {
                Ok(metadata) => {
                    if let Some(info) = metadata.topics.get(topic) {
                        return Ok(info.clone());
                    }
                    let Some(code) = metadata.unavailable.get(topic).copied() else {
                        let error = Error::broker(
                            codes::UNKNOWN_TOPIC_OR_PARTITION,
                            Some(format!(
                                "no topic {topic:?} (asked for {} ms); create it first",
                                start.elapsed().as_millis()
                            )),
                        );
                        match unknown_deadline {
                            Some(until) if tokio::time::Instant::now() < until => {
                                self.backoff().await;
                                continue;
                            }
                            _ => return Err(error),
                        }
                    };
                    let why = if code == codes::LEADER_NOT_AVAILABLE {
                        "it exists, but has no leader yet"
                    } else {
                        "it exists, but is not available yet"
                    };
                    Error::broker(
                        code,
                        Some(format!(
                            "topic {topic:?}: {why} (asked for {} ms); try again later",
                            start.elapsed().as_millis()
                        )),
                    )
                }
                Err(e) if through_errors && e.is_retriable() => e,
                Err(e) => return Err(e),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            self.backoff().await;
        }
    }

    /// A connection to the leader of a partition (from the cache; refresh on errors).
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<Arc<Connection>> {
        let info = self.topic(topic).await?;
        let leader = info
            .partitions
            .get(
                usize::try_from(partition)
                    .map_err(|_| Error::Invalid(format!("partition {partition}")))?,
            )
            .ok_or_else(|| {
                Error::broker(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(format!("{topic} has no partition {partition}")),
                )
            })?
            .leader;
        if leader < 0 {
            return Err(Error::broker(codes::LEADER_NOT_AVAILABLE, None));
        }
        self.broker(leader).await
    }

    /// Waits the retry backoff.
    pub async fn backoff(&self) {
        tokio::time::sleep(self.inner.config.retry_backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_broker_is_retried_with_growing_waits() {
        // A port nobody listens on: bind one, then let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let address = format!("127.0.0.1:{port}");
        let mut config = ClientConfig::new(&address);
        config.retry_backoff = Duration::from_millis(50);
        config.reconnect_backoff_max = Duration::from_millis(150);
        let client = Client::new(config).expect("client");
        let first = client
            .connection(&address)
            .await
            .expect_err("nobody listens");
        assert!(!first.to_string().contains("next attempt"), "{first}");
        // At once again: refused without an attempt, saying when the next one comes.
        let second = client.connection(&address).await.expect_err("backing off");
        assert!(
            second.to_string().contains("unreachable 1 time(s)"),
            "{second}"
        );
        assert!(second.is_retriable());
        tokio::time::sleep(Duration::from_millis(60)).await;
        client
            .connection(&address)
            .await
            .expect_err("tried again, still nobody");
        let waits = client
            .unreachable()
            .get(&address)
            .copied()
            .expect("recorded");
        assert_eq!(waits.0, 2, "the second failure doubles the wait");
        assert!(waits.1 - tokio::time::Instant::now() > Duration::from_millis(60));
    }
}
