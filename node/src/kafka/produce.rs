//! The APIs that write to partitions: Produce (each partition's batch submitted to the core at
//! read time, in arrival order) and DeleteRecords (a partition's log start offset moved through
//! its Raft log; refused on a compact-only topic, as Kafka does).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ProduceRequest, ProduceResponse, TopicName,
};
use oxbow_core::ids::Offset;
use oxbow_core::io::{
    Acks, DeleteRecordsRequest as CoreDeleteRecords, ProduceRequest as CoreProduce, Request,
    Response,
};
use oxbow_core::metadata::check_topic_name;
use oxbow_core::metadata::is_internal;

use super::{code, placement, str_bytes, Context};

/// Submits every partition's batch to the core now, in order, and returns the wait for the
/// answers (which builds the response; `None` for acks=0).
pub(super) async fn produce(
    context: &Context,
    request: ProduceRequest,
) -> impl Future<Output = Option<ProduceResponse>> + Send + 'static {
    let acks = match request.acks {
        0 => Acks::None,
        1 => Acks::Leader,
        _ => Acks::All,
    };
    let timeout_ms = request.timeout_ms.clamp(0, 300_000) as u32;
    let transactional_id = request
        .transactional_id
        .as_ref()
        .map(|id| id.0.as_str().to_string());
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms) + 5_000);
    let mut waits: Vec<(
        String,
        i32,
        Result<tokio::sync::oneshot::Receiver<Response>, i16>,
    )> = Vec::new();
    let metadata = context.core.metadata();
    // Below the disk reserve nothing new is taken (a retriable error: the client retries
    // until space is freed), while reads, replication and retention go on.
    let disk_low = context.disk.disk_low();
    for topic in request.topic_data {
        let name = topic.name.0.as_str().to_string();
        // Kafka checks the name with topic creation's rules, and refuses its internal topics
        // to producers, before it looks the partition up.
        let invalid = check_topic_name(&name).is_err() || is_internal(&name);
        for partition in topic.partition_data {
            let wait = match placement(&metadata, &name, partition.index) {
                _ if invalid => Err(code::INVALID_TOPIC_EXCEPTION),
                None => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                Some(placement) if !context.hosts(placement) => Err(code::NOT_LEADER_OR_FOLLOWER),
                Some(_) if disk_low => Err(code::KAFKA_STORAGE_ERROR),
                Some(placement) => {
                    let batch = partition.records.unwrap_or_default();
                    let request = Request::Produce(CoreProduce {
                        group: placement.group,
                        acks,
                        batch,
                        timeout_ms,
                        transactional_id: transactional_id.clone(),
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
            let (error_code, base_offset, log_append_time_ms, log_start_offset) = match wait {
                Err(code) => (code, -1, -1, -1),
                Ok(answer) => match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(Response::Produce(Ok(ack)))) => (
                        code::NONE,
                        ack.base_offset.0,
                        ack.log_append_time_ms,
                        ack.log_start_offset.0,
                    ),
                    Ok(Ok(Response::Produce(Err(error)))) => (error.kafka_code(), -1, -1, -1),
                    _ => (code::REQUEST_TIMED_OUT, -1, -1, -1),
                },
            };
            let mut partition = PartitionProduceResponse::default();
            partition.index = index;
            partition.error_code = error_code;
            partition.base_offset = base_offset;
            partition.log_append_time_ms = log_append_time_ms;
            partition.log_start_offset = log_start_offset;
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

/// DeleteRecords: each partition's leader moves its log start offset (Kafka's low watermark)
/// through the partition's Raft log; the answer comes once that is applied. Offset -1 means
/// the high watermark.
pub(super) async fn delete_records(
    context: &Context,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let timeout_ms = request.timeout_ms.clamp(0, 300_000) as u32;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms) + 5_000);
    let metadata = context.core.metadata();
    let mut waits = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        // Kafka's `Partition.deleteRecordsOnLeader`: "Records of partition t-p can not be
        // deleted due to the configured policy" unless the policy lists delete (DeleteRecords'
        // response has no message field, so the code says it all).
        let deletable = metadata.topic(&name).is_some_and(|t| t.cleanup().delete);
        for partition in topic.partitions {
            let wait = match placement(&metadata, &name, partition.partition_index) {
                None => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                Some(placement) if !context.hosts(placement) => Err(code::NOT_LEADER_OR_FOLLOWER),
                Some(_) if !deletable => Err(code::POLICY_VIOLATION),
                Some(_) if partition.offset < -1 => Err(code::OFFSET_OUT_OF_RANGE),
                Some(placement) => {
                    let request = Request::DeleteRecords(CoreDeleteRecords {
                        group: placement.group,
                        offset: (partition.offset >= 0).then_some(Offset(partition.offset)),
                        timeout_ms,
                    });
                    context
                        .core
                        .submit(request)
                        .await
                        .ok_or(code::REQUEST_TIMED_OUT)
                }
            };
            waits.push((name.clone(), partition.partition_index, wait));
        }
    }
    let mut by_topic: BTreeMap<String, Vec<DeleteRecordsPartitionResult>> = BTreeMap::new();
    for (name, index, wait) in waits {
        let (error_code, low_watermark) = match wait {
            Err(code) => (code, -1),
            Ok(answer) => match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(Response::DeleteRecords(Ok(offset)))) => (code::NONE, offset.0),
                Ok(Ok(Response::DeleteRecords(Err(error)))) => (error.kafka_code(), -1),
                _ => (code::REQUEST_TIMED_OUT, -1),
            },
        };
        let mut partition = DeleteRecordsPartitionResult::default();
        partition.partition_index = index;
        partition.error_code = error_code;
        partition.low_watermark = low_watermark;
        by_topic.entry(name).or_default().push(partition);
    }
    let mut response = DeleteRecordsResponse::default();
    for (name, partitions) in by_topic {
        let mut topic = DeleteRecordsTopicResult::default();
        topic.name = TopicName(str_bytes(&name));
        topic.partitions = partitions;
        response.topics.push(topic);
    }
    response
}
