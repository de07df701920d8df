//! The transactional producer (KIP-98): records sent between [`TransactionalProducer::begin`]
//! and [`TransactionalProducer::commit`] become visible to `read_committed` consumers together,
//! on every partition, or (after [`TransactionalProducer::abort`]) never.
//!
//! # What exactly-once means here
//!
//! A transaction's records are written once each (the producer is idempotent) and are
//! committed or aborted as a whole. Consumers see that only with `read_committed`; a
//! `read_uncommitted` consumer sees aborted records too. Reading input, writing output and
//! committing the input's offsets is exactly-once only when the offsets are committed in the
//! same transaction ([`TransactionalProducer::send_offsets_to_transaction`], Kafka's
//! `sendOffsetsToTransaction`): the group's offsets then move if and only if the output is
//! committed. The consumer must read with `read_committed` (so that it reads neither aborted
//! input nor offsets still pending in a transaction) and, after an abort, go back to the
//! group's committed offsets ([`crate::GroupConsumer::rewind`]), or it skips the input the
//! aborted transaction read. A consumer that commits its offsets outside the transaction, or
//! two live processes consuming the same partitions with different transactional ids, break it.
//! Side effects outside Kafka are never part of a transaction.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use oxbow_client::{
//!     Client, ClientConfig, GroupConfig, GroupConsumer, ProducerConfig, ProducerRecord,
//!     TransactionError, TransactionalProducer,
//! };
//! let client = Client::new(ClientConfig::new("127.0.0.1:9092"))?;
//! let mut config = GroupConfig::new("transformer");
//! config.consumer.read_committed = true;
//! let mut input = GroupConsumer::new(client.clone(), config, &["input"]);
//! let producer = TransactionalProducer::new(
//!     client,
//!     ProducerConfig { transactional_id: Some("transformer-1".into()), ..Default::default() },
//! )?;
//! producer.init_transactions().await?;
//! loop {
//!     let records = input.poll(Duration::from_millis(500)).await?;
//!     if records.is_empty() { continue; }
//!     producer.begin().await?;
//!     let done: Result<(), TransactionError> = async {
//!         for record in records {
//!             let value = record.value.unwrap_or_default();
//!             producer.send(ProducerRecord::new("output", value)).await?;
//!         }
//!         producer.send_offsets_to_transaction(&input.positions(), &input.group_metadata()).await?;
//!         producer.commit().await
//!     }.await;
//!     match done {
//!         Ok(()) => {}
//!         Err(TransactionError::Fatal(e)) => return Err(e.into()),
//!         Err(_) => {
//!             producer.abort().await?;
//!             input.rewind();
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! A second instance with the same `transactional_id` fences the first: every call of the
//! first fails with [`TransactionError::Fatal`] from then on, and the first's open transaction
//! is aborted. So one transactional id must be used by one live process at a time, which the
//! fencing enforces.
//!
//! # Errors
//!
//! [`TransactionError`] says what the application does next: `Fatal` (fenced, or the producer
//! cannot go on: drop it), `Abortable` (a record failed, so this transaction cannot commit:
//! call `abort`, then carry on), or `Retriable` (the coordinator did not answer in time: the
//! same call may be made again; for `commit`, the outcome is unknown until it is).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, EndTxnRequest,
    FindCoordinatorRequest, GroupId, InitProducerIdRequest, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use crate::client::Client;
use crate::connection::Connection;
use crate::error::{codes, Error};
use crate::group::ConsumerGroupMetadata;

/// Kafka's error codes the transaction calls act on.
mod code {
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const PRODUCER_FENCED: i16 = 90;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// Why a transaction call failed, and what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransactionError {
    /// The producer cannot go on (fenced by a newer instance of its transactional id, or a
    /// state the coordinator refuses): drop it.
    Fatal(Error),
    /// The open transaction cannot commit (a record failed): abort it, then carry on.
    Abortable(Error),
    /// The coordinator did not answer in time; the call may be made again (a `commit` that
    /// failed so has an unknown outcome until it is).
    Retriable(Error),
}

impl TransactionError {
    /// The underlying error.
    pub fn error(&self) -> &Error {
        match self {
            Self::Fatal(e) | Self::Abortable(e) | Self::Retriable(e) => e,
        }
    }

    /// A broker's error code on a transaction call, classified.
    fn of_code(code: i16) -> Self {
        let error = Error::broker(code, None);
        match code {
            code::PRODUCER_FENCED
            | code::INVALID_PRODUCER_EPOCH
            | code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            | code::INVALID_PRODUCER_ID_MAPPING
            | code::INVALID_TXN_STATE => Self::Fatal(error),
            _ => Self::Abortable(error),
        }
    }
}

impl std::fmt::Display for TransactionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fatal(e) => write!(f, "the transactional producer cannot go on: {e}"),
            Self::Abortable(e) => write!(f, "the transaction must be aborted: {e}"),
            Self::Retriable(e) => write!(f, "the call may be made again: {e}"),
        }
    }
}

impl std::error::Error for TransactionError {}

/// Result of a transaction call.
pub type TxnResult<T> = Result<T, TransactionError>;

/// What the producer knows of its transaction.
#[derive(Default)]
struct State {
    /// The coordinator of its transactional id, once found.
    coordinator: Option<Arc<Connection>>,
    /// Whether `init_transactions` succeeded.
    ready: bool,
    /// Whether a transaction is open (`begin` without `commit` or `abort` since).
    open: bool,
    /// The partitions added to the open transaction.
    partitions: BTreeSet<(String, i32)>,
    /// The groups whose offsets were added to the open transaction (AddOffsetsToTxn).
    offsets_groups: BTreeSet<String>,
    /// Why the producer cannot go on, once it cannot.
    fatal: Option<Error>,
}

/// A transactional producer: an idempotent [`Producer`] whose records are written in
/// transactions (see the module documentation for what that guarantees).
pub struct TransactionalProducer {
    producer: Producer,
    transactional_id: String,
    state: Mutex<State>,
}

impl TransactionalProducer {
    /// A transactional producer on `client`; `config.transactional_id` must be set.
    pub fn new(client: Client, config: ProducerConfig) -> crate::Result<Self> {
        let Some(transactional_id) = config.transactional_id.clone() else {
            return Err(Error::Invalid(
                "a transactional producer needs a transactional_id".into(),
            ));
        };
        if transactional_id.is_empty() {
            return Err(Error::Invalid("the transactional_id is empty".into()));
        }
        Ok(Self {
            producer: Producer::new(client, config)?,
            transactional_id,
            state: Mutex::new(State::default()),
        })
    }

    fn client(&self) -> &Client {
        &self.producer.shared.client
    }

    fn config(&self) -> &ProducerConfig {
        &self.producer.shared.config
    }

    /// Registers with the transactional id's coordinator: a producer id and a new epoch, which
    /// fences every earlier instance and aborts a transaction one left open. Call once, first.
    pub async fn init_transactions(&self) -> TxnResult<()> {
        let mut state = self.state.lock().await;
        self.init(&mut state, None).await?;
        state.ready = true;
        Ok(())
    }

    /// InitProducerId: a new instance (`expected` none), or KIP-360's bump of this one's
    /// epoch after a failed transaction.
    async fn init(&self, state: &mut State, expected: Option<(i64, i16)>) -> TxnResult<()> {
        let timeout_ms = self.config().transaction_timeout_ms;
        let transactional_id = self.transactional_id.clone();
        let response = self
            .coordinator_call(state, move || {
                let mut request = InitProducerIdRequest::default();
                request.transactional_id = Some(TransactionalId(StrBytes::from_string(
                    transactional_id.clone(),
                )));
                request.transaction_timeout_ms = timeout_ms;
                let (id, epoch) = expected.unwrap_or((-1, -1));
                request.producer_id = ProducerId(id);
                request.producer_epoch = epoch;
                request
            })
            .await?;
        let mut producer = self.producer.shared.producer.lock().await;
        *producer = Some((response.producer_id.0, response.producer_epoch));
        Ok(())
    }

    /// Opens a transaction.
    pub async fn begin(&self) -> TxnResult<()> {
        let mut state = self.state.lock().await;
        check_usable(&state)?;
        if state.open {
            return Err(TransactionError::Fatal(Error::Invalid(
                "a transaction is open already".into(),
            )));
        }
        state.open = true;
        *self.producer.shared.failed.lock().expect("not poisoned") = None;
        Ok(())
    }

    /// Sends a record in the open transaction (its partition joins the transaction first).
    /// The returned future resolves once the record is written, or failed: a failure makes
    /// the transaction abortable.
    pub async fn send(&self, record: ProducerRecord) -> TxnResult<DeliveryFuture> {
        let mut state = self.state.lock().await;
        check_usable(&state)?;
        if !state.open {
            return Err(TransactionError::Fatal(Error::Invalid(
                "send needs an open transaction (begin)".into(),
            )));
        }
        let partition = self
            .producer
            .partition(&record)
            .await
            .map_err(TransactionError::Abortable)?;
        let key = (record.topic.clone(), partition);
        if !state.partitions.contains(&key) {
            self.add_partition(&mut state, &key).await?;
            state.partitions.insert(key);
        }
        drop(state);
        self.producer
            .send(record.partition(partition))
            .await
            .map_err(TransactionError::Abortable)
    }

    /// AddPartitionsToTxn for one partition.
    async fn add_partition(&self, state: &mut State, partition: &(String, i32)) -> TxnResult<()> {
        let producer = self.producer_ids().await?;
        let transactional_id = self.transactional_id.clone();
        let (topic, index) = partition.clone();
        let response = self
            .coordinator_call(state, move || {
                let mut request = AddPartitionsToTxnRequest::default();
                request.v3_and_below_transactional_id =
                    TransactionalId(StrBytes::from_string(transactional_id.clone()));
                request.v3_and_below_producer_id = ProducerId(producer.0);
                request.v3_and_below_producer_epoch = producer.1;
                let mut t = AddPartitionsToTxnTopic::default();
                t.name = TopicName(StrBytes::from_string(topic.clone()));
                t.partitions = vec![index];
                request.v3_and_below_topics = vec![t];
                request
            })
            .await?;
        let code = response
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| t.results_by_partition.iter())
            .map(|p| p.partition_error_code)
            .find(|c| *c != codes::NONE);
        match code {
            None => Ok(()),
            Some(code) => {
                let error = TransactionError::of_code(code);
                if let TransactionError::Fatal(e) = &error {
                    state.fatal = Some(e.clone());
                }
                Err(error)
            }
        }
    }

    /// Commits the open transaction: waits until every record sent in it is written, then
    /// has the coordinator commit it. A record that failed makes it abortable instead.
    pub async fn commit(&self) -> TxnResult<()> {
        self.end(true).await
    }

    /// Aborts the open transaction: its records are never visible to `read_committed`.
    pub async fn abort(&self) -> TxnResult<()> {
        self.end(false).await
    }

    async fn end(&self, commit: bool) -> TxnResult<()> {
        let mut state = self.state.lock().await;
        check_usable(&state)?;
        if !state.open {
            return Err(TransactionError::Fatal(Error::Invalid(
                "no transaction is open".into(),
            )));
        }
        self.producer.flush().await;
        // A commit leaves the failure for the abort that must follow; an abort clears it.
        let failed = {
            let mut failed = self.producer.shared.failed.lock().expect("not poisoned");
            if let (true, Some(error)) = (commit, failed.as_ref()) {
                return Err(TransactionError::Abortable(error.clone()));
            }
            failed.take()
        };
        if !state.partitions.is_empty() || !state.offsets_groups.is_empty() {
            let producer = self.producer_ids().await?;
            let transactional_id = self.transactional_id.clone();
            let ended = self
                .coordinator_call(&mut state, move || {
                    let mut request = EndTxnRequest::default();
                    request.transactional_id =
                        TransactionalId(StrBytes::from_string(transactional_id.clone()));
                    request.producer_id = ProducerId(producer.0);
                    request.producer_epoch = producer.1;
                    request.committed = commit;
                    request
                })
                .await;
            match ended {
                Ok(response) if response.error_code == codes::NONE => {}
                // The coordinator aborted it already (its timeout fenced this epoch): KIP-588
                // lets this instance take the new epoch and go on.
                Ok(response)
                    if !commit
                        && matches!(
                            response.error_code,
                            code::PRODUCER_FENCED | code::INVALID_PRODUCER_EPOCH
                        ) =>
                {
                    self.init(&mut state, Some(producer)).await?;
                }
                Ok(response) => {
                    let error = TransactionError::of_code(response.error_code);
                    if let TransactionError::Fatal(e) = &error {
                        state.fatal = Some(e.clone());
                    }
                    return Err(error);
                }
                Err(error) => return Err(error),
            }
        }
        state.open = false;
        state.partitions.clear();
        state.offsets_groups.clear();
        if !commit && failed.is_some() {
            // Records failed: the partitions' sequences may be lost. A new epoch (KIP-360)
            // starts them again from 0.
            let producer = self.producer_ids().await?;
            self.init(&mut state, Some(producer)).await?;
        }
        Ok(())
    }

    /// Commits a consumer group's offsets with the open transaction (Kafka's
    /// `sendOffsetsToTransaction`): `offsets` ((topic, partition, next offset to read)) become
    /// the group's committed offsets if, and when, the transaction commits. `group` is the
    /// consumer's ([`crate::GroupConsumer::group_metadata`]): the group's coordinator refuses
    /// the offsets of a member a rebalance replaced, which makes the transaction abortable.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(String, i32, i64)],
        group: &ConsumerGroupMetadata,
    ) -> TxnResult<()> {
        let mut state = self.state.lock().await;
        check_usable(&state)?;
        if !state.open {
            return Err(TransactionError::Fatal(Error::Invalid(
                "send_offsets_to_transaction needs an open transaction (begin)".into(),
            )));
        }
        let producer = self.producer_ids().await?;
        if !state.offsets_groups.contains(&group.group_id) {
            let transactional_id = self.transactional_id.clone();
            let group_id = group.group_id.clone();
            let response = self
                .coordinator_call(&mut state, move || {
                    let mut request = AddOffsetsToTxnRequest::default();
                    request.transactional_id =
                        TransactionalId(StrBytes::from_string(transactional_id.clone()));
                    request.producer_id = ProducerId(producer.0);
                    request.producer_epoch = producer.1;
                    request.group_id = GroupId(StrBytes::from_string(group_id.clone()));
                    request
                })
                .await?;
            if response.error_code != codes::NONE {
                return Err(fail(
                    &mut state,
                    TransactionError::of_code(response.error_code),
                ));
            }
            state.offsets_groups.insert(group.group_id.clone());
        }
        let mut by_topic: std::collections::BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> =
            std::collections::BTreeMap::new();
        for (topic, partition, offset) in offsets {
            let mut p = TxnOffsetCommitRequestPartition::default();
            p.partition_index = *partition;
            p.committed_offset = *offset;
            p.committed_leader_epoch = -1;
            p.committed_metadata = Some(StrBytes::from_static_str(""));
            by_topic.entry(topic).or_default().push(p);
        }
        let mut request = TxnOffsetCommitRequest::default();
        request.transactional_id =
            TransactionalId(StrBytes::from_string(self.transactional_id.clone()));
        request.group_id = GroupId(StrBytes::from_string(group.group_id.clone()));
        request.producer_id = ProducerId(producer.0);
        request.producer_epoch = producer.1;
        request.generation_id = group.generation;
        request.member_id = StrBytes::from_string(group.member_id.clone());
        for (topic, partitions) in by_topic {
            let mut t = TxnOffsetCommitRequestTopic::default();
            t.name = TopicName(StrBytes::from_string(topic.to_string()));
            t.partitions = partitions;
            request.topics.push(t);
        }
        let deadline = Instant::now() + self.config().delivery_timeout;
        let mut last = Error::Timeout;
        while Instant::now() < deadline {
            let answered = match self.group_coordinator(&group.group_id).await {
                Ok(coordinator) => match coordinator.version(ApiKey::TxnOffsetCommit) {
                    Ok(version) => coordinator.call_version(request.clone(), version).await,
                    Err(error) => return Err(fail(&mut state, TransactionError::Fatal(error))),
                },
                Err(error) => Err(error),
            };
            let code = match answered {
                Ok(response) => response
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| p.error_code)
                    .find(|c| *c != codes::NONE)
                    .unwrap_or(codes::NONE),
                Err(error) if error.is_retriable() => {
                    last = error;
                    self.client().backoff().await;
                    continue;
                }
                Err(error) => return Err(TransactionError::Abortable(error)),
            };
            let error = Error::broker(code, None);
            match code {
                codes::NONE => return Ok(()),
                code::NOT_COORDINATOR
                | code::COORDINATOR_NOT_AVAILABLE
                | code::COORDINATOR_LOAD_IN_PROGRESS
                | code::REQUEST_TIMED_OUT
                | code::CONCURRENT_TRANSACTIONS => {
                    last = error;
                    self.client().backoff().await;
                }
                // A rebalance replaced the member (KIP-447): the offsets may not be its.
                code::ILLEGAL_GENERATION
                | code::UNKNOWN_MEMBER_ID
                | code::REBALANCE_IN_PROGRESS
                | code::FENCED_INSTANCE_ID => return Err(TransactionError::Abortable(error)),
                code => return Err(fail(&mut state, TransactionError::of_code(code))),
            }
        }
        Err(TransactionError::Retriable(last))
    }

    /// The coordinator of a consumer group (FindCoordinator with key type 0).
    async fn group_coordinator(&self, group_id: &str) -> crate::Result<Arc<Connection>> {
        let connection = self.client().any_broker().await?;
        let mut request = FindCoordinatorRequest::default();
        request.key = StrBytes::from_string(group_id.to_string());
        let (response, _) = connection.call(request).await?;
        if response.error_code != codes::NONE {
            return Err(Error::broker(response.error_code, None));
        }
        let address = format!("{}:{}", response.host, response.port);
        self.client().connection(&address).await
    }

    /// The producer id and epoch from `init_transactions`.
    async fn producer_ids(&self) -> TxnResult<(i64, i16)> {
        let producer = *self.producer.shared.producer.lock().await;
        producer.ok_or_else(|| {
            TransactionError::Fatal(Error::Invalid("call init_transactions() first".into()))
        })
    }

    /// Sends a request to the transactional id's coordinator until it answers with an error
    /// code other than those that say to ask again (finding the coordinator again when it
    /// moved), or the delivery timeout passes.
    async fn coordinator_call<R>(
        &self,
        state: &mut State,
        make: impl Fn() -> R,
    ) -> TxnResult<R::Response>
    where
        R: kafka_protocol::protocol::Request + CoordinatorRequest,
        R::Response: ResponseCode,
    {
        let deadline = Instant::now() + self.config().delivery_timeout;
        let mut last = Error::Timeout;
        while Instant::now() < deadline {
            let coordinator = match self.coordinator(state).await {
                Ok(c) => c,
                Err(error) => {
                    last = error;
                    self.client().backoff().await;
                    continue;
                }
            };
            let key = ApiKey::try_from(R::KEY).expect("a known key");
            let version = coordinator.version(key).map_err(TransactionError::Fatal)?;
            match coordinator.call_version(make(), version).await {
                Ok(response) => match response.code() {
                    code::NOT_COORDINATOR
                    | code::COORDINATOR_NOT_AVAILABLE
                    | code::COORDINATOR_LOAD_IN_PROGRESS => {
                        last = Error::broker(response.code(), None);
                        state.coordinator = None;
                        self.client().backoff().await;
                    }
                    // The previous transaction's markers are still being written.
                    code::CONCURRENT_TRANSACTIONS => {
                        last = Error::broker(response.code(), None);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    code::PRODUCER_FENCED
                    | code::INVALID_PRODUCER_EPOCH
                    | code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                        if R::FENCES =>
                    {
                        let error = Error::broker(response.code(), None);
                        state.fatal = Some(error.clone());
                        return Err(TransactionError::Fatal(error));
                    }
                    _ => return Ok(response),
                },
                Err(error) if error.is_retriable() => {
                    last = error;
                    state.coordinator = None;
                    self.client().backoff().await;
                }
                Err(error) => return Err(TransactionError::Abortable(error)),
            }
        }
        Err(TransactionError::Retriable(last))
    }

    /// The transactional id's coordinator (FindCoordinator with key type 1).
    async fn coordinator(&self, state: &mut State) -> crate::Result<Arc<Connection>> {
        if let Some(c) = state.coordinator.as_ref().filter(|c| !c.is_dead()) {
            return Ok(c.clone());
        }
        let connection = self.client().any_broker().await?;
        let version = connection.version(ApiKey::FindCoordinator)?;
        if version < 1 {
            return Err(Error::Protocol(
                "the broker cannot find transaction coordinators (FindCoordinator v1+)".into(),
            ));
        }
        let mut request = FindCoordinatorRequest::default();
        request.key = StrBytes::from_string(self.transactional_id.clone());
        request.key_type = 1;
        let response = connection.call_version(request, version).await?;
        if response.error_code != codes::NONE {
            return Err(Error::broker(response.error_code, None));
        }
        let address = format!("{}:{}", response.host, response.port);
        let coordinator = self.client().connection(&address).await?;
        state.coordinator = Some(coordinator.clone());
        Ok(coordinator)
    }
}

/// `error`, remembered as the producer's end if it is fatal.
fn fail(state: &mut State, error: TransactionError) -> TransactionError {
    if let TransactionError::Fatal(e) = &error {
        state.fatal = Some(e.clone());
    }
    error
}

fn check_usable(state: &State) -> TxnResult<()> {
    if let Some(error) = &state.fatal {
        return Err(TransactionError::Fatal(error.clone()));
    }
    if !state.ready {
        return Err(TransactionError::Fatal(Error::Invalid(
            "call init_transactions() first".into(),
        )));
    }
    Ok(())
}

/// The coordinator requests, and whether a fencing code answers them for good.
trait CoordinatorRequest {
    /// A fencing error code is final (InitProducerId's is answered to the caller instead).
    const FENCES: bool;
}

impl CoordinatorRequest for InitProducerIdRequest {
    const FENCES: bool = true;
}
impl CoordinatorRequest for AddPartitionsToTxnRequest {
    const FENCES: bool = false;
}
impl CoordinatorRequest for EndTxnRequest {
    const FENCES: bool = false;
}
impl CoordinatorRequest for AddOffsetsToTxnRequest {
    const FENCES: bool = false;
}

/// The error code a coordinator's answer carries at its top level (or its first partition's).
trait ResponseCode {
    fn code(&self) -> i16;
}

impl ResponseCode for kafka_protocol::messages::InitProducerIdResponse {
    fn code(&self) -> i16 {
        self.error_code
    }
}

impl ResponseCode for kafka_protocol::messages::AddOffsetsToTxnResponse {
    fn code(&self) -> i16 {
        self.error_code
    }
}

impl ResponseCode for kafka_protocol::messages::EndTxnResponse {
    fn code(&self) -> i16 {
        self.error_code
    }
}

impl ResponseCode for kafka_protocol::messages::AddPartitionsToTxnResponse {
    fn code(&self) -> i16 {
        self.results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| t.results_by_partition.iter())
            .map(|p| p.partition_error_code)
            .find(|c| *c != codes::NONE)
            .unwrap_or(codes::NONE)
    }
}
