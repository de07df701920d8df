//! What a transaction coordinator is asked and what it answers: [`TxnOp`], [`TxnResponse`] and
//! [`TxnError`] with its Kafka error codes.

use super::TxnMeta;
use crate::ids::{ProducerEpoch, ProducerId};

/// A request to the coordinator of one transactional id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// InitProducerId with a `transactional.id`: a new instance of the transactional producer.
    InitProducerId(InitProducerId),
    /// AddPartitionsToTxn, and AddOffsetsToTxn (whose partition is its group's
    /// `__consumer_offsets` partition, as in Kafka): the partitions join the instance's open
    /// transaction, which begins with the first.
    AddPartitions(AddPartitions),
    /// EndTxn: the instance commits or aborts its open transaction.
    EndTxn(EndTxn),
    /// DescribeTransactions, for one transactional id.
    Describe {
        /// The transactional id.
        transactional_id: String,
    },
}

/// AddPartitionsToTxn (or AddOffsetsToTxn) for one transactional id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddPartitions {
    /// The transactional id (not empty).
    pub transactional_id: String,
    /// The instance's producer id and epoch.
    pub producer: (ProducerId, ProducerEpoch),
    /// The partitions, (topic, partition); the node has checked that they exist.
    pub partitions: Vec<(String, i32)>,
}

/// EndTxn for one transactional id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndTxn {
    /// The transactional id (not empty).
    pub transactional_id: String,
    /// The instance's producer id and epoch.
    pub producer: (ProducerId, ProducerEpoch),
    /// Commit (true) or abort (false).
    pub commit: bool,
}

/// InitProducerId with a `transactional.id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitProducerId {
    /// The transactional id (not empty).
    pub transactional_id: String,
    /// The producer's `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// KIP-360 (InitProducerId v3+): the producer id and epoch the instance had, when it asks
    /// again after an abortable error; `None` for a new instance.
    pub expected: Option<(ProducerId, ProducerEpoch)>,
}

impl TxnOp {
    /// The transactional id the request is about.
    pub fn transactional_id(&self) -> &str {
        match self {
            Self::InitProducerId(init) => &init.transactional_id,
            Self::AddPartitions(add) => &add.transactional_id,
            Self::EndTxn(end) => &end.transactional_id,
            Self::Describe { transactional_id } => transactional_id,
        }
    }
}

/// Why a transaction request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnError {
    /// This node does not coordinate the transactional id (any more): find it again.
    NotCoordinator,
    /// The coordinator cannot take it now (too many proposals in flight, or its partition
    /// holds the most transactional ids it may): retry.
    CoordinatorNotAvailable,
    /// The coordinator is still loading its state: retry.
    CoordinatorLoadInProgress,
    /// A transaction of this id is ending, or another request for it is in flight: retry.
    ConcurrentTransactions,
    /// The timeout is not within 1 ms and the broker's maximum.
    InvalidTransactionTimeout,
    /// A newer instance took over this transactional id: fatal for this one.
    ProducerFenced,
    /// The request is malformed (an empty or too long transactional id).
    InvalidRequest,
    /// The answer did not come in time; whether it took effect is unknown.
    TimedOut,
    /// The coordinator knows no such transactional id.
    TransactionalIdNotFound,
    /// The producer id is not the transactional id's (or the id is unknown).
    InvalidProducerIdMapping,
    /// The request does not fit where the transaction stands (an EndTxn with nothing to end,
    /// or one that contradicts the outcome already taken).
    InvalidTxnState,
}

impl TxnError {
    /// The Kafka error code.
    pub fn kafka_code(self) -> i16 {
        match self {
            Self::NotCoordinator => 16,
            Self::CoordinatorNotAvailable => 15,
            Self::CoordinatorLoadInProgress => 14,
            Self::ConcurrentTransactions => 51,
            Self::InvalidTransactionTimeout => 50,
            Self::ProducerFenced => 90,
            Self::InvalidRequest => 42,
            Self::TimedOut => 7,
            Self::TransactionalIdNotFound => 105,
            Self::InvalidProducerIdMapping => 49,
            Self::InvalidTxnState => 48,
        }
    }

    /// The error of a Kafka error code, as [`TxnError::kafka_code`] gives it (an unknown code
    /// is a coordinator not available: retriable).
    pub fn from_kafka_code(code: i16) -> Self {
        const ALL: [TxnError; 11] = [
            TxnError::NotCoordinator,
            TxnError::CoordinatorNotAvailable,
            TxnError::CoordinatorLoadInProgress,
            TxnError::ConcurrentTransactions,
            TxnError::InvalidTransactionTimeout,
            TxnError::ProducerFenced,
            TxnError::InvalidRequest,
            TxnError::TimedOut,
            TxnError::TransactionalIdNotFound,
            TxnError::InvalidProducerIdMapping,
            TxnError::InvalidTxnState,
        ];
        ALL.into_iter()
            .find(|e| e.kafka_code() == code)
            .unwrap_or(TxnError::CoordinatorNotAvailable)
    }
}

/// The answer to a [`TxnOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnResponse {
    /// InitProducerId: the instance's producer id and epoch.
    InitProducerId(Result<(ProducerId, ProducerEpoch), TxnError>),
    /// AddPartitionsToTxn or AddOffsetsToTxn: the partitions are in the open transaction.
    AddPartitions(Result<(), TxnError>),
    /// EndTxn: the outcome is stored (its markers are written after the answer, as in Kafka).
    EndTxn(Result<(), TxnError>),
    /// DescribeTransactions: what the coordinator stores of the id.
    Describe(Result<TxnMeta, TxnError>),
}

impl TxnResponse {
    /// The answer to `op` when it fails with `error`.
    pub fn failed(op: &TxnOp, error: TxnError) -> Self {
        match op {
            TxnOp::InitProducerId(_) => Self::InitProducerId(Err(error)),
            TxnOp::AddPartitions(_) => Self::AddPartitions(Err(error)),
            TxnOp::EndTxn(_) => Self::EndTxn(Err(error)),
            TxnOp::Describe { .. } => Self::Describe(Err(error)),
        }
    }
}
