//! The read APIs: Fetch (a long poll over the partitions this node hosts), ListOffsets (by
//! position, or by timestamp through the core's batch index) and OffsetForLeaderEpoch (from
//! the core's epoch history); each checks the client's current leader epoch (KIP-320).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_core::epoch_history::check_leader_epoch;
use oxbow_core::ids::{GroupId, Offset, RaftIndex, Term};
use oxbow_core::io::{
    EpochEndRequest, FetchData, FetchError, FetchRequest as CoreFetch, FindTimestampRequest,
    FoundBatch, Request, Response,
};

use super::fetch_session::{Key, Plan, SessionError, Told, Wanted};
use super::frame::SplicedFetch;
use super::{code, placement, Context};

/// Kafka's `isolation_level` READ_COMMITTED.
const READ_COMMITTED: i8 = 1;

async fn fetch_one(
    context: &Context,
    group: GroupId,
    wanted: &Wanted,
    (max_bytes, read_committed): (i32, bool),
) -> Result<FetchData, FetchError> {
    let request = Request::Fetch(CoreFetch {
        group,
        offset: Offset(wanted.fetch_offset),
        max_bytes: max_bytes.max(0) as u32,
        current_leader_epoch: wanted.current_leader_epoch,
        read_committed,
    });
    let mut found = match context.core.request(request).await {
        Some(Response::Fetch(result)) => result?,
        _ => return Err(FetchError::NotLeader { leader: None }),
    };
    // Records no longer in memory: read from the segment files, the bytes read are served.
    if let Some(read) = found.read.take() {
        let Some(entries) = context.disk.read(read.clone()).await else {
            return Err(FetchError::NotLeader { leader: None });
        };
        found.batches = read.batches(entries);
    }
    Ok(found)
}

/// A Fetch: its response, with each partition's batches kept apart to be spliced in.
pub(super) async fn fetch(context: Arc<Context>, request: FetchRequest) -> SplicedFetch {
    let context = &*context;
    let requested: Vec<(Key, Wanted)> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| {
                let key = (topic.topic.0.as_str().to_string(), p.partition);
                let wanted = Wanted {
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    // -1 before v9, which has no such field.
                    current_leader_epoch: p.current_leader_epoch,
                };
                (key, wanted)
            })
        })
        .collect();
    // Before v7 there are no sessions: kafka-protocol decodes session 0, epoch -1.
    let forgotten: Vec<Key> = request
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.topic.0.as_str().to_string(), *p))
        })
        .collect();
    let plan = context.fetch_sessions.lock().expect("not poisoned").plan(
        request.session_id,
        request.session_epoch,
        &requested,
        &forgotten,
        tokio::time::Instant::now(),
    );
    let (partitions, session) = match plan {
        Ok(Plan::Full { create }) => {
            let partitions = requested.into_iter().map(|(k, w)| (k, w, None)).collect();
            (partitions, Session::Full { create })
        }
        Ok(Plan::Incremental { id, partitions }) => (partitions, Session::Incremental(id)),
        Err(error) => {
            let mut spliced = SplicedFetch::default();
            spliced.response.error_code = error.kafka_code();
            spliced.response.session_id = 0;
            return spliced;
        }
    };
    // READ_COMMITTED (v4+) reads up to the last stable offset, skipping aborted records.
    let read_committed = request.isolation_level == READ_COMMITTED;
    let mut applied = context.core.applied();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(request.max_wait_ms.clamp(0, 30_000) as u64);
    loop {
        applied.borrow_and_update();
        let metadata = context.core.metadata();
        let mut total = 0usize;
        let mut any_error = false;
        let mut spliced = SplicedFetch::default();
        let mut told = Vec::new();
        let mut topics: Vec<FetchableTopicResponse> = Vec::new();
        for ((name, partition), wanted, before) in &partitions {
            let mut data = PartitionData::default();
            data.partition_index = *partition;
            data.high_watermark = -1;
            data.last_stable_offset = -1;
            data.log_start_offset = -1;
            data.preferred_read_replica = BrokerId(-1);
            data.aborted_transactions = Some(Vec::new());
            let mut batches = Vec::new();
            match placement(&metadata, name, *partition) {
                None => data.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(p) if !context.hosts(p) => data.error_code = code::NOT_LEADER_OR_FOLLOWER,
                Some(p) => {
                    // The request's cap, and the broker's (Kafka's fetch.max.bytes).
                    let limit =
                        (request.max_bytes.max(1) as usize).min(context.config.fetch_max_bytes);
                    let budget = if total >= limit {
                        0
                    } else {
                        wanted.max_bytes.min((limit - total) as i32)
                    };
                    match fetch_one(context, p.group, wanted, (budget, read_committed)).await {
                        Ok(found) => {
                            data.high_watermark = found.high_watermark.0;
                            data.last_stable_offset = found.last_stable_offset.0;
                            data.log_start_offset = found.log_start_offset.0;
                            data.aborted_transactions = Some(
                                found
                                    .aborted
                                    .iter()
                                    .map(|a| {
                                        let mut t = AbortedTransaction::default();
                                        t.producer_id = ProducerId(a.producer_id.0);
                                        t.first_offset = a.first_offset.0;
                                        t
                                    })
                                    .collect(),
                            );
                            total += found.batches.iter().map(Bytes::len).sum::<usize>();
                            batches = found.batches;
                        }
                        Err(error) => {
                            any_error = true;
                            data.error_code = error.kafka_code();
                        }
                    }
                }
            }
            let now = Told {
                high_watermark: data.high_watermark,
                last_stable_offset: data.last_stable_offset,
                log_start_offset: data.log_start_offset,
            };
            // An incremental answer holds only partitions with something new.
            let has_records = !batches.is_empty();
            if matches!(session, Session::Incremental(_))
                && data.error_code == 0
                && !has_records
                && *before == Some(now)
            {
                continue;
            }
            told.push(((name.clone(), *partition), wanted.clone(), now, has_records));
            data.records = Some(spliced.records(batches));
            match topics.last_mut() {
                Some(topic) if topic.topic.0.as_str() == name => topic.partitions.push(data),
                _ => {
                    let mut topic = FetchableTopicResponse::default();
                    topic.topic = TopicName(StrBytes::from_string(name.clone()));
                    topic.partitions.push(data);
                    topics.push(topic);
                }
            }
        }
        let enough = total >= request.min_bytes.max(1) as usize;
        if enough || any_error || tokio::time::Instant::now() >= deadline {
            spliced.response.responses = topics;
            let now = tokio::time::Instant::now();
            let mut sessions = context.fetch_sessions.lock().expect("not poisoned");
            spliced.response.session_id = match session {
                Session::Full { create: false } => 0,
                Session::Full { create: true } => sessions.create(
                    told.into_iter()
                        .map(|(key, wanted, told, _)| (key, wanted, told))
                        .collect(),
                    now,
                ),
                Session::Incremental(id) => {
                    let told = told
                        .into_iter()
                        .map(|(key, _, told, had_records)| (key, told, had_records))
                        .collect();
                    if !sessions.answered(id, told, now) {
                        // Closed or evicted meanwhile: the client starts again.
                        let mut gone = SplicedFetch::default();
                        gone.response.error_code = SessionError::NotFound.kafka_code();
                        return gone;
                    }
                    id
                }
            };
            return spliced;
        }
        // Long poll: wait until something is applied on this node (since this round looked),
        // or the deadline.
        let _ = tokio::time::timeout_at(deadline, applied.changed()).await;
    }
}

/// How a Fetch uses its session.
#[derive(Clone, Copy, Debug)]
enum Session {
    /// Every partition answered; `create`: a new session is made of them.
    Full { create: bool },
    /// Only what changed, in session `0`.
    Incremental(i32),
}

/// The offset, timestamp and leader epoch (its batch's) of the first record at or after
/// `timestamp`, if any. The core
/// finds the batch; the record inside it is found by walking that one batch's records
/// (decompressed, whatever the codec, within `[log] decompressed_batch_bytes_max`). A batch
/// that cannot be looked into within that limit answers with its base offset: the earliest
/// that can hold it.
async fn find_timestamp(
    context: &Context,
    group: GroupId,
    timestamp: i64,
) -> Result<Option<(i64, i64, i32)>, FetchError> {
    // A span on disk whose latest batch lies below the log start holds no match: look on
    // after it (each round starts past the last, so this ends).
    let mut after = RaftIndex(0);
    let batch = loop {
        let request = Request::FindTimestamp(FindTimestampRequest {
            group,
            timestamp,
            after,
        });
        let found = match context.core.request(request).await {
            Some(Response::FindTimestamp(result)) => result?,
            _ => return Err(FetchError::NotLeader { leader: None }),
        };
        match found {
            FoundBatch::None => return Ok(None),
            FoundBatch::Batch(batch) => break batch,
            FoundBatch::OnDisk(read) => {
                let Some(entries) = context.disk.read(read.clone()).await else {
                    return Err(FetchError::NotLeader { leader: None });
                };
                match read.first_at(entries, timestamp) {
                    Some(batch) => break batch,
                    None => {
                        assert!(read.to > after, "each round looks further on");
                        after = read.to;
                    }
                }
            }
        }
    };
    let batch = oxbow_core::batch::Batch::trusted(batch);
    let limit = context.config.log.decompressed_batch_bytes_max as usize;
    let (offset, timestamp) = match batch.first_record_at(timestamp, limit) {
        Ok(Some((offset, timestamp))) => (offset.0, timestamp),
        // The batch's max timestamp is at or after it, but no record's is: its last.
        Ok(None) => (batch.last_offset().0, batch.max_timestamp()),
        Err(_) => (batch.base_offset().0, batch.max_timestamp()),
    };
    // The leader stamped its epoch (its term) on the batch: the epoch history's for it.
    Ok(Some((offset, timestamp, batch.partition_leader_epoch())))
}

pub(super) async fn list_offsets(
    context: &Context,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
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
                    None => answer.error_code = code::NOT_LEADER_OR_FOLLOWER,
                    // The client's leader epoch is checked first (-1 before v4), as Kafka does.
                    Some(status) => {
                        match check_leader_epoch(partition.current_leader_epoch, status.term) {
                            Err(error) => answer.error_code = error.kafka_code(),
                            Ok(()) if !status.serving => {
                                answer.error_code = code::NOT_LEADER_OR_FOLLOWER;
                            }
                            // v4+ answer the leader epoch of the record found (-1: not known).
                            Ok(()) => match partition.timestamp {
                                -2 => {
                                    answer.offset = status.log_start_offset.0;
                                    answer.leader_epoch =
                                        status.log_start_epoch.map_or(-1, epoch_i32);
                                }
                                // The latest: the last stable offset for READ_COMMITTED (v2+).
                                -1 if request.isolation_level == READ_COMMITTED => {
                                    answer.offset = status.last_stable_offset.0;
                                    answer.leader_epoch = epoch_i32(status.term);
                                }
                                -1 => {
                                    answer.offset = status.high_watermark.0;
                                    answer.leader_epoch = epoch_i32(status.term);
                                }
                                t if t >= 0 => match find_timestamp(context, p.group, t).await {
                                    Ok(Some((offset, timestamp, epoch))) => {
                                        answer.offset = offset;
                                        answer.timestamp = timestamp;
                                        answer.leader_epoch = epoch;
                                    }
                                    // No record that late: offset and timestamp -1, as Kafka answers.
                                    Ok(None) => {}
                                    Err(error) => answer.error_code = error.kafka_code(),
                                },
                                _ => answer.error_code = code::INVALID_REQUEST,
                            },
                        }
                    }
                },
            }
            // A v4+ field: earlier versions cannot encode another value.
            if version < 4 {
                answer.leader_epoch = -1;
            }
            out.partitions.push(answer);
        }
        response.topics.push(out);
    }
    response
}

/// A term as a Kafka leader epoch (peer messages whose terms do not fit one are dropped).
fn epoch_i32(term: Term) -> i32 {
    i32::try_from(term.0).unwrap_or(-1)
}

/// OffsetForLeaderEpoch (v2-v4, KIP-320): where each leader epoch asked ends, from the
/// partition leader's epoch history, after checking the client's current leader epoch. Every
/// request is a consumer's here (`replica_id` is not used: oxbow's replicas follow through
/// Raft), so only the leader answers.
pub(super) async fn offset_for_leader_epoch(
    context: &Context,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    let metadata = context.core.metadata();
    for topic in request.topics {
        let name = topic.topic.0.as_str().to_string();
        let mut out = OffsetForLeaderTopicResult::default();
        out.topic = topic.topic.clone();
        for partition in topic.partitions {
            // Epoch and end offset -1 (undefined) unless found.
            let mut answer = EpochEndOffset::default();
            answer.partition = partition.partition;
            match placement(&metadata, &name, partition.partition) {
                None => answer.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(p) if !context.hosts(p) => answer.error_code = code::NOT_LEADER_OR_FOLLOWER,
                Some(p) => {
                    let request = Request::EpochEnd(EpochEndRequest {
                        group: p.group,
                        current_leader_epoch: partition.current_leader_epoch,
                        leader_epoch: partition.leader_epoch,
                    });
                    match context.core.request(request).await {
                        Some(Response::EpochEnd(Ok(end))) => {
                            answer.leader_epoch = end.leader_epoch;
                            answer.end_offset = end.end_offset;
                        }
                        Some(Response::EpochEnd(Err(error))) => {
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
