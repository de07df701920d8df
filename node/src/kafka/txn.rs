//! The producer-id and transaction APIs: InitProducerId (with or without a transactional id),
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, and the introspection of KIP-664:
//! DescribeTransactions, ListTransactions and DescribeProducers.
//!
//! A request with a transactional id is translated into the core's [`TxnOp`] and sent to the
//! `__transaction_state` partition of its id (`oxbow_core::txn`); this node must lead that
//! partition, or the answer is NOT_COORDINATOR and the client looks for the coordinator again
//! (FindCoordinator with key type 1, in `groups`).

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse as DescribedPartition, ProducerState, TopicResponse as DescribedTopic,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedTransaction,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_core::coordinator::{partition_for as group_partition_for, OFFSETS_TOPIC};
use oxbow_core::ids::{GroupId, ProducerEpoch, ProducerId as CoreProducerId};
use oxbow_core::io::{Request, Response, TxnRequest};
use oxbow_core::producer::ActiveProducer;
use oxbow_core::txn::{
    partition_for, AddPartitions, EndTxn, InitProducerId, TxnError, TxnOp, TxnResponse, TxnState,
    TRANSACTION_STATE_TOPIC,
};
use slog::{debug, warn};

use super::{code, placement, Context};

/// Kafka's OPERATION_NOT_ATTEMPTED: the partitions of an AddPartitionsToTxn with an unknown
/// one are not added.
const OPERATION_NOT_ATTEMPTED: i16 = 55;

/// The error code of a transaction error for a request of `version`: before v2 of
/// AddPartitionsToTxn and EndTxn, PRODUCER_FENCED is INVALID_PRODUCER_EPOCH (KIP-588).
fn fenced_code(error: TxnError, version: i16) -> i16 {
    match error {
        TxnError::ProducerFenced if version < 2 => INVALID_PRODUCER_EPOCH,
        error => error.kafka_code(),
    }
}

/// Kafka's INVALID_PRODUCER_EPOCH, what InitProducerId before v4 answers for PRODUCER_FENCED
/// (KIP-588).
const INVALID_PRODUCER_EPOCH: i16 = 47;

/// The coordinator partition of a transactional id, or the error to answer.
fn coordinator_group(context: &Context, transactional_id: &str) -> Result<GroupId, TxnError> {
    let metadata = context.core.metadata();
    let topic = metadata
        .topic(TRANSACTION_STATE_TOPIC)
        .ok_or(TxnError::CoordinatorNotAvailable)?;
    Ok(topic.partitions[partition_for(transactional_id, topic.partitions.len())].group)
}

/// Sends one transaction request to the core.
async fn call(context: &Context, op: TxnOp) -> TxnResponse {
    let group = match coordinator_group(context, op.transactional_id()) {
        Ok(group) => group,
        Err(error) => return TxnResponse::failed(&op, error),
    };
    let failed = TxnResponse::failed(&op, TxnError::CoordinatorNotAvailable);
    match context
        .core
        .request(Request::Txn(TxnRequest { group, op }))
        .await
    {
        Some(Response::Txn(response)) => {
            debug!(context.logger, "transaction request answered"; "answer" => ?response);
            response
        }
        // The node is stopping.
        None => failed,
        Some(other) => unreachable!("a transaction request answered with {other:?}"),
    }
}

/// InitProducerId without a transactional id: an idempotent producer gets a producer id of
/// this node's range, at epoch 0.
fn init_idempotent_producer_id(context: &Context) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
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

/// InitProducerId: an idempotent producer's id from this node, a transactional producer's from
/// its transaction coordinator (a new epoch, fencing the previous instance).
pub(super) async fn init_producer_id(
    context: &Context,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let Some(transactional_id) = request.transactional_id else {
        return init_idempotent_producer_id(context);
    };
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    // v3+ (KIP-360): the id and epoch of an instance that asks again; -1 for a new one.
    let expected = (version >= 3 && request.producer_id.0 >= 0 && request.producer_epoch >= 0)
        .then_some((
            CoreProducerId(request.producer_id.0),
            ProducerEpoch(request.producer_epoch),
        ));
    let op = TxnOp::InitProducerId(InitProducerId {
        transactional_id: transactional_id.0.as_str().to_string(),
        timeout_ms: request.transaction_timeout_ms,
        expected,
    });
    let TxnResponse::InitProducerId(result) = call(context, op).await else {
        unreachable!("InitProducerId answered otherwise")
    };
    match result {
        Ok((id, epoch)) => {
            response.producer_id = ProducerId(id.0);
            response.producer_epoch = epoch.0;
        }
        Err(TxnError::ProducerFenced) if version < 4 => {
            response.error_code = INVALID_PRODUCER_EPOCH;
        }
        Err(error) => response.error_code = error.kafka_code(),
    }
    response
}

/// AddPartitionsToTxn (the clients' versions, v0-3): the partitions join the producer's open
/// transaction, or it begins with them. A partition that does not exist fails the request:
/// UNKNOWN_TOPIC_OR_PARTITION for it, OPERATION_NOT_ATTEMPTED for the others, as in Kafka.
pub(super) async fn add_partitions_to_txn(
    context: &Context,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let metadata = context.core.metadata();
    let wanted: Vec<(String, i32)> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| {
            let name = t.name.0.as_str().to_string();
            t.partitions.iter().map(move |p| (name.clone(), *p))
        })
        .collect();
    let unknown = |(topic, partition): &(String, i32)| {
        oxbow_core::metadata::is_internal(topic)
            || placement(&metadata, topic, *partition).is_none()
    };
    let codes: Vec<i16> = if wanted.iter().any(unknown) {
        let code = |p: &(String, i32)| {
            if unknown(p) {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                OPERATION_NOT_ATTEMPTED
            }
        };
        wanted.iter().map(code).collect()
    } else {
        let op = TxnOp::AddPartitions(AddPartitions {
            transactional_id: request.v3_and_below_transactional_id.0.as_str().to_string(),
            producer: (
                CoreProducerId(request.v3_and_below_producer_id.0),
                ProducerEpoch(request.v3_and_below_producer_epoch),
            ),
            partitions: wanted.clone(),
        });
        let TxnResponse::AddPartitions(result) = call(context, op).await else {
            unreachable!("AddPartitionsToTxn answered otherwise")
        };
        let code = result.map_or_else(|e| fenced_code(e, version), |()| code::NONE);
        vec![code; wanted.len()]
    };
    let mut response = AddPartitionsToTxnResponse::default();
    for ((topic, partition), code) in wanted.into_iter().zip(codes) {
        let mut result = AddPartitionsToTxnPartitionResult::default();
        result.partition_index = partition;
        result.partition_error_code = code;
        match response.results_by_topic_v3_and_below.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.results_by_partition.push(result),
            _ => {
                let mut by_topic = AddPartitionsToTxnTopicResult::default();
                by_topic.name = TopicName(StrBytes::from_string(topic));
                by_topic.results_by_partition.push(result);
                response.results_by_topic_v3_and_below.push(by_topic);
            }
        }
    }
    response
}

/// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the producer's open
/// transaction, as Kafka adds it, so that the transaction's marker is written there too and
/// ends the offsets the producer commits with it (TxnOffsetCommit, to the group's coordinator).
pub(super) async fn add_offsets_to_txn(
    context: &Context,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let mut response = AddOffsetsToTxnResponse::default();
    let metadata = context.core.metadata();
    let Some(topic) = metadata.topic(OFFSETS_TOPIC) else {
        let partitions = context.config.offsets_topic_partitions;
        super::groups::create_internal_topic(context, OFFSETS_TOPIC, partitions).await;
        response.error_code = code::COORDINATOR_NOT_AVAILABLE;
        return response;
    };
    let group_id = request.group_id.0.as_str();
    let partition = group_partition_for(group_id, topic.partitions.len()) as i32;
    let op = TxnOp::AddPartitions(AddPartitions {
        transactional_id: request.transactional_id.0.as_str().to_string(),
        producer: (
            CoreProducerId(request.producer_id.0),
            ProducerEpoch(request.producer_epoch),
        ),
        partitions: vec![(OFFSETS_TOPIC.to_string(), partition)],
    });
    let TxnResponse::AddPartitions(result) = call(context, op).await else {
        unreachable!("AddOffsetsToTxn answered otherwise")
    };
    response.error_code = result.map_or_else(|e| fenced_code(e, version), |()| code::NONE);
    response
}

/// EndTxn: the producer's open transaction commits or aborts; answered once the outcome is
/// stored (its markers are written after, as in Kafka).
pub(super) async fn end_txn(
    context: &Context,
    request: EndTxnRequest,
    version: i16,
) -> EndTxnResponse {
    let op = TxnOp::EndTxn(EndTxn {
        transactional_id: request.transactional_id.0.as_str().to_string(),
        producer: (
            CoreProducerId(request.producer_id.0),
            ProducerEpoch(request.producer_epoch),
        ),
        commit: request.committed,
    });
    let TxnResponse::EndTxn(result) = call(context, op).await else {
        unreachable!("EndTxn answered otherwise")
    };
    let mut response = EndTxnResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    response.error_code = result.map_or_else(|e| fenced_code(e, version), |()| code::NONE);
    response
}

/// DescribeTransactions: each transactional id as its coordinator stores it (this node must
/// coordinate it: NOT_COORDINATOR otherwise, and the admin client looks again).
pub(super) async fn describe_transactions(
    context: &Context,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut response = DescribeTransactionsResponse::default();
    for transactional_id in request.transactional_ids {
        let mut described = DescribedTransaction::default();
        described.transactional_id = transactional_id.clone();
        described.transaction_state = StrBytes::from_static_str("");
        described.producer_id = ProducerId(-1);
        described.producer_epoch = -1;
        described.transaction_start_time_ms = -1;
        let op = TxnOp::Describe {
            transactional_id: transactional_id.0.as_str().to_string(),
        };
        let TxnResponse::Describe(result) = call(context, op).await else {
            unreachable!("DescribeTransactions answered otherwise")
        };
        match result {
            Ok(meta) => {
                described.transaction_state = StrBytes::from_static_str(meta.state.name());
                described.transaction_timeout_ms = meta.timeout_ms as i32;
                described.transaction_start_time_ms = meta.start_ms;
                described.producer_id = ProducerId(meta.producer_id.0);
                described.producer_epoch = meta.epoch.0;
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, partition) in meta.partitions {
                    match topics.last_mut() {
                        Some(last) if last.topic.0.as_str() == topic => {
                            last.partitions.push(partition)
                        }
                        _ => {
                            let mut data = TopicData::default();
                            data.topic = TopicName(StrBytes::from_string(topic));
                            data.partitions = vec![partition];
                            topics.push(data);
                        }
                    }
                }
                described.topics = topics;
            }
            Err(error) => described.error_code = error.kafka_code(),
        }
        response.transaction_states.push(described);
    }
    response
}

/// ListTransactions: the transactional ids of the coordinator partitions this node leads, with
/// the request's filters (states by Kafka's names, producer ids, and v1's duration).
pub(super) async fn list_transactions(
    context: &Context,
    request: ListTransactionsRequest,
    version: i16,
) -> ListTransactionsResponse {
    let mut response = ListTransactionsResponse::default();
    let known = |name: &str| TxnState::ALL.iter().any(|s| s.name() == name);
    response.unknown_state_filters = request
        .state_filters
        .iter()
        .filter(|name| !known(name.as_str()))
        .cloned()
        .collect();
    let duration_filter_ms = if version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let listed = match context
        .core
        .request(Request::ListTransactions { duration_filter_ms })
        .await
    {
        Some(Response::ListTransactions(listed)) => listed,
        None => {
            response.error_code = TxnError::CoordinatorNotAvailable.kafka_code();
            return response;
        }
        Some(other) => unreachable!("ListTransactions answered with {other:?}"),
    };
    for (transactional_id, meta) in listed {
        let state = meta.state.name();
        let by_state = request.state_filters.is_empty()
            || request.state_filters.iter().any(|s| s.as_str() == state);
        let by_producer = request.producer_id_filters.is_empty()
            || request
                .producer_id_filters
                .iter()
                .any(|p| p.0 == meta.producer_id.0);
        if by_state && by_producer {
            let mut listed = ListedTransaction::default();
            listed.transactional_id = TransactionalId(StrBytes::from_string(transactional_id));
            listed.producer_id = ProducerId(meta.producer_id.0);
            listed.transaction_state = StrBytes::from_static_str(state);
            response.transaction_states.push(listed);
        }
    }
    response
}

/// DescribeProducers (KIP-664): the producers each partition's leader remembers, with their
/// epoch, last sequence, last write and open transaction's first offset. Only the partition's
/// serving leader answers (NOT_LEADER_OR_FOLLOWER otherwise, as Kafka does); the last
/// timestamp is the log's append time of the producer's latest batch or marker, and the
/// coordinator epoch is not kept (-1).
pub(super) async fn describe_producers(
    context: &Context,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut response = DescribeProducersResponse::default();
    let metadata = context.core.metadata();
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let mut out = DescribedTopic::default();
        out.name = topic.name.clone();
        for partition_index in topic.partition_indexes {
            let mut answer = DescribedPartition::default();
            answer.partition_index = partition_index;
            match placement(&metadata, &name, partition_index) {
                None => answer.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(p) if !context.hosts(p) => answer.error_code = code::NOT_LEADER_OR_FOLLOWER,
                Some(p) => {
                    let request = Request::DescribeProducers { group: p.group };
                    match context.core.request(request).await {
                        Some(Response::DescribeProducers(Ok(producers))) => {
                            answer.active_producers = producers.iter().map(state).collect();
                        }
                        Some(Response::DescribeProducers(Err(error))) => {
                            answer.error_code = error.kafka_code();
                        }
                        _ => answer.error_code = code::NOT_LEADER_OR_FOLLOWER,
                    }
                }
            }
            out.partitions.push(answer);
        }
        response.topics.push(out);
    }
    response
}

/// One producer in DescribeProducers' terms.
fn state(producer: &ActiveProducer) -> ProducerState {
    let mut state = ProducerState::default();
    state.producer_id = ProducerId(producer.producer_id.0);
    state.producer_epoch = i32::from(producer.epoch.0);
    state.last_sequence = producer.last_sequence.map_or(-1, |s| s.0);
    state.last_timestamp = producer.last_write_ms.unwrap_or(-1);
    state.coordinator_epoch = -1;
    state.current_txn_start_offset = producer.open_txn_first_offset.map_or(-1, |o| o.0);
    state
}
