//! The producer-id and transaction APIs: InitProducerId (with or without a transactional id)
//! so far.
//!
//! A request with a transactional id is translated into the core's [`TxnOp`] and sent to the
//! `__transaction_state` partition of its id (`oxbow_core::txn`); this node must lead that
//! partition, or the answer is NOT_COORDINATOR and the client looks for the coordinator again
//! (FindCoordinator with key type 1, in `groups`).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use oxbow_core::ids::{GroupId, ProducerEpoch, ProducerId as CoreProducerId};
use oxbow_core::io::{Request, Response, TxnRequest};
use oxbow_core::txn::{
    partition_for, InitProducerId, TxnError, TxnOp, TxnResponse, TRANSACTION_STATE_TOPIC,
};
use slog::{debug, warn};

use super::{code, Context};

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
    let TxnResponse::InitProducerId(result) = call(context, op).await;
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
