//! The consumer-group APIs: FindCoordinator (of groups and of transactions), JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, TxnOffsetCommit, OffsetFetch,
//! DescribeGroups, ListGroups and DeleteGroups.
//!
//! Each request is translated into the core's [`GroupOp`] and sent to the coordinator
//! partition of its group (`oxbow_core::coordinator`); this node must lead that partition,
//! or the answer is NOT_COORDINATOR and the client looks for the coordinator again.

use std::collections::BTreeMap;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup as KafkaListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId as KafkaGroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_core::coordinator::{
    partition_for, CommittedOffset, GroupError, GroupOp, GroupResponse, Heartbeat, JoinGroup,
    LeaveGroup, OffsetCommit, SyncGroup, TxnOffsetCommit, OFFSETS_TOPIC,
};
use oxbow_core::ids::{Generation, GroupId};
use oxbow_core::io::{AdminRequest, Forward, GroupRequest, Request, Response};
use oxbow_core::metadata::{CreateTopic, MetadataCommand};
use oxbow_core::txn::{TRANSACTIONAL_ID_MAX, TRANSACTION_STATE_TOPIC};
use slog::debug;

use super::{code, str_bytes, Caller, Context};

fn string(s: &StrBytes) -> String {
    s.as_str().to_string()
}

fn opt_string(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(string)
}

fn opt_str_bytes(s: &Option<String>) -> Option<StrBytes> {
    s.as_deref().map(str_bytes)
}

/// The coordinator partition of a group, or the error to answer.
fn coordinator_group(context: &Context, group_id: &str) -> Result<GroupId, GroupError> {
    let metadata = context.core.metadata();
    let topic = metadata
        .topic(OFFSETS_TOPIC)
        .ok_or(GroupError::CoordinatorNotAvailable)?;
    Ok(topic.partitions[partition_for(group_id, topic.partitions.len())].group)
}

/// Sends one group request to the core.
async fn call(context: &Context, op: GroupOp) -> GroupResponse {
    let group = match coordinator_group(context, op.group_id()) {
        Ok(group) => group,
        Err(error) => return GroupResponse::failed(&op, error),
    };
    let failed = GroupResponse::failed(&op, GroupError::CoordinatorNotAvailable);
    match context
        .core
        .request(Request::Group(GroupRequest { group, op }))
        .await
    {
        Some(Response::Group(response)) => {
            debug!(context.logger, "group request answered"; "answer" => ?response);
            response
        }
        // The node is stopping.
        None => failed,
        Some(other) => unreachable!("a group request answered with {other:?}"),
    }
}

/// Proposes the creation of an internal topic through the controller (what Kafka does on the
/// first FindCoordinator of each kind).
pub(super) async fn create_internal_topic(context: &Context, name: &str, partitions: u32) {
    let request = Request::Admin(AdminRequest {
        command: MetadataCommand::CreateTopic(CreateTopic {
            name: name.to_string(),
            partitions,
            replication_factor: context.config.offsets_replication_factor(),
            configs: BTreeMap::new(),
            assignment: Vec::new(),
        }),
        validate_only: false,
        forward: Forward::Blind,
        timeout_ms: 5_000,
    });
    if let Some(Response::Admin(Err(error))) = context.core.request(request).await {
        debug!(context.logger, "internal topic creation not proposed";
            "topic" => name, "why" => ?error);
    }
}

/// Kafka's FindCoordinator key types: a consumer group, a transactional id.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

async fn find_one(context: &Context, key_type: i8, key: StrBytes) -> Coordinator {
    let mut found = Coordinator::default();
    // Kafka sends null, not "", when there is no error (clients compare).
    found.error_message = None;
    found.key = key;
    found.node_id = BrokerId(-1);
    found.host = str_bytes("");
    found.port = -1;
    // The internal topic whose partitions coordinate this kind of key, and its size.
    let (topic_name, partitions) = match key_type {
        KEY_GROUP => (OFFSETS_TOPIC, context.config.offsets_topic_partitions),
        KEY_TRANSACTION => (
            TRANSACTION_STATE_TOPIC,
            context.config.transactions.state_partitions,
        ),
        _ => {
            found.error_code = code::INVALID_REQUEST;
            found.error_message = Some(str_bytes(
                "unknown coordinator key type: 0 (group) and 1 (transaction) are known",
            ));
            return found;
        }
    };
    if key_type == KEY_TRANSACTION
        && (found.key.is_empty() || found.key.len() > TRANSACTIONAL_ID_MAX)
    {
        found.error_code = code::INVALID_REQUEST;
        found.error_message = Some(str_bytes(
            "a transactional id is not empty and at most 1000 bytes",
        ));
        return found;
    }
    let metadata = context.core.metadata();
    let Some(topic) = metadata.topic(topic_name) else {
        create_internal_topic(context, topic_name, partitions).await;
        found.error_code = code::COORDINATOR_NOT_AVAILABLE;
        return found;
    };
    let group = topic.partitions[partition_for(found.key.as_str(), topic.partitions.len())].group;
    let leader = context
        .core
        .leaders(vec![group])
        .await
        .and_then(|l| l.into_iter().next().flatten());
    match leader.and_then(|(node, _)| Some((node, context.config.kafka_address(node)?))) {
        Some((node, address)) => {
            found.node_id = BrokerId(node.0 as i32);
            found.host = str_bytes(address.host());
            found.port = i32::from(address.port());
        }
        None => found.error_code = code::COORDINATOR_NOT_AVAILABLE,
    }
    found
}

pub(super) async fn find_coordinator(
    context: &Context,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut response = FindCoordinatorResponse::default();
    response.error_message = None;
    if version >= 4 {
        for key in request.coordinator_keys {
            let found = find_one(context, request.key_type, key).await;
            response.coordinators.push(found);
        }
        return response;
    }
    let found = find_one(context, request.key_type, request.key).await;
    response.error_code = found.error_code;
    if version >= 1 {
        response.error_message = found.error_message;
    }
    response.node_id = found.node_id;
    response.host = found.host;
    response.port = found.port;
    response
}

pub(super) async fn join_group(
    context: &Context,
    request: JoinGroupRequest,
    version: i16,
    caller: Caller,
) -> JoinGroupResponse {
    let op = GroupOp::Join(JoinGroup {
        group_id: string(&request.group_id.0),
        member_id: string(&request.member_id),
        instance_id: opt_string(&request.group_instance_id),
        client_id: caller.client_id,
        client_host: caller.host,
        protocol_type: string(&request.protocol_type),
        protocols: request
            .protocols
            .iter()
            .map(|p| (string(&p.name), p.metadata.clone()))
            .collect(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        require_known_member_id: version >= 4,
    });
    let mut response = JoinGroupResponse::default();
    response.protocol_name = Some(str_bytes(""));
    if version >= 7 {
        response.protocol_type = Some(str_bytes(""));
    }
    response.generation_id = -1;
    response.leader = str_bytes("");
    response.member_id = request.member_id.clone();
    let GroupResponse::Join(result) = call(context, op).await else {
        unreachable!("a join answered otherwise")
    };
    match result {
        Ok(answer) => {
            response.generation_id = answer.generation.0;
            response.protocol_name = Some(str_bytes(&answer.protocol));
            if version >= 7 {
                response.protocol_type = Some(str_bytes(&answer.protocol_type));
            }
            response.leader = str_bytes(&answer.leader);
            response.member_id = str_bytes(&answer.member_id);
            response.members = answer
                .members
                .into_iter()
                .map(|m| {
                    let mut member = JoinGroupResponseMember::default();
                    member.member_id = str_bytes(&m.member_id);
                    if version >= 5 {
                        member.group_instance_id = opt_str_bytes(&m.instance_id);
                    }
                    member.metadata = m.metadata;
                    member
                })
                .collect();
        }
        Err(error) => {
            response.error_code = error.kafka_code();
            if let GroupError::MemberIdRequired(member_id) = error {
                response.member_id = str_bytes(&member_id);
            }
        }
    }
    response
}

pub(super) async fn sync_group(
    context: &Context,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let op = GroupOp::Sync(SyncGroup {
        group_id: string(&request.group_id.0),
        generation: Generation(request.generation_id),
        member_id: string(&request.member_id),
        instance_id: opt_string(&request.group_instance_id),
        assignments: request
            .assignments
            .iter()
            .map(|a| (string(&a.member_id), a.assignment.clone()))
            .collect(),
    });
    let GroupResponse::Sync(result) = call(context, op).await else {
        unreachable!("a sync answered otherwise")
    };
    let mut response = SyncGroupResponse::default();
    match result {
        Ok(answer) => {
            // v5 clients check the protocol type and name they expect.
            let mismatch = version >= 5
                && (request
                    .protocol_type
                    .as_ref()
                    .is_some_and(|t| t.as_str() != answer.protocol_type)
                    || request
                        .protocol_name
                        .as_ref()
                        .is_some_and(|n| n.as_str() != answer.protocol));
            if mismatch {
                response.error_code = GroupError::InconsistentGroupProtocol.kafka_code();
            } else {
                if version >= 5 {
                    response.protocol_type = Some(str_bytes(&answer.protocol_type));
                    response.protocol_name = Some(str_bytes(&answer.protocol));
                }
                response.assignment = answer.assignment;
            }
        }
        Err(error) => response.error_code = error.kafka_code(),
    }
    response
}

pub(super) async fn heartbeat(context: &Context, request: HeartbeatRequest) -> HeartbeatResponse {
    let op = GroupOp::Heartbeat(Heartbeat {
        group_id: string(&request.group_id.0),
        generation: Generation(request.generation_id),
        member_id: string(&request.member_id),
        instance_id: opt_string(&request.group_instance_id),
    });
    let GroupResponse::Heartbeat(result) = call(context, op).await else {
        unreachable!("a heartbeat answered otherwise")
    };
    let mut response = HeartbeatResponse::default();
    if let Err(error) = result {
        response.error_code = error.kafka_code();
    }
    response
}

pub(super) async fn leave_group(
    context: &Context,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| (string(&m.member_id), opt_string(&m.group_instance_id)))
            .collect()
    } else {
        vec![(string(&request.member_id), None)]
    };
    let op = GroupOp::Leave(LeaveGroup {
        group_id: string(&request.group_id.0),
        members: members.clone(),
    });
    let GroupResponse::Leave(result) = call(context, op).await else {
        unreachable!("a leave answered otherwise")
    };
    let mut response = LeaveGroupResponse::default();
    match result {
        Err(error) => response.error_code = error.kafka_code(),
        Ok(results) if version >= 3 => {
            for ((member_id, instance_id), result) in members.iter().zip(results) {
                let mut member = MemberResponse::default();
                member.member_id = str_bytes(member_id);
                member.group_instance_id = opt_str_bytes(instance_id);
                member.error_code = result.err().map_or(code::NONE, |e| e.kafka_code());
                response.members.push(member);
            }
        }
        Ok(results) => {
            if let Some(Err(error)) = results.into_iter().next() {
                response.error_code = error.kafka_code();
            }
        }
    }
    response
}

pub(super) async fn offset_commit(
    context: &Context,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let offsets = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    string(&t.name.0),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    opt_string(&p.committed_metadata).unwrap_or_default(),
                )
            })
        })
        .collect();
    let op = GroupOp::OffsetCommit(OffsetCommit {
        group_id: string(&request.group_id.0),
        generation: Generation(request.generation_id_or_member_epoch),
        member_id: string(&request.member_id),
        instance_id: opt_string(&request.group_instance_id),
        offsets,
    });
    let GroupResponse::OffsetCommit(result) = call(context, op).await else {
        unreachable!("an offset commit answered otherwise")
    };
    let error_code = result.err().map_or(code::NONE, |e| e.kafka_code());
    let mut response = OffsetCommitResponse::default();
    for topic in &request.topics {
        let mut answer = OffsetCommitResponseTopic::default();
        answer.name = topic.name.clone();
        for partition in &topic.partitions {
            let mut p = OffsetCommitResponsePartition::default();
            p.partition_index = partition.partition_index;
            p.error_code = error_code;
            answer.partitions.push(p);
        }
        response.topics.push(answer);
    }
    response
}

/// TxnOffsetCommit (v0–3; KIP-447's member and generation from v3): the offsets join the
/// producer's transaction, verified with its transaction coordinator first, and are the
/// group's committed offsets once the transaction commits.
pub(super) async fn txn_offset_commit(
    context: &Context,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let offsets = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    string(&t.name.0),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    opt_string(&p.committed_metadata).unwrap_or_default(),
                )
            })
        })
        .collect();
    let op = GroupOp::TxnOffsetCommit(TxnOffsetCommit {
        transactional_id: string(&request.transactional_id.0),
        group_id: string(&request.group_id.0),
        producer: (
            oxbow_core::ids::ProducerId(request.producer_id.0),
            oxbow_core::ids::ProducerEpoch(request.producer_epoch),
        ),
        generation: Generation(request.generation_id),
        member_id: string(&request.member_id),
        instance_id: opt_string(&request.group_instance_id),
        offsets,
        txn_start_ms: None,
    });
    let GroupResponse::TxnOffsetCommit(result) = call(context, op).await else {
        unreachable!("a transactional offset commit answered otherwise")
    };
    let error_code = result.err().map_or(code::NONE, |e| e.kafka_code());
    let mut response = TxnOffsetCommitResponse::default();
    for topic in &request.topics {
        let mut answer = TxnOffsetCommitResponseTopic::default();
        answer.name = topic.name.clone();
        for partition in &topic.partitions {
            let mut p = TxnOffsetCommitResponsePartition::default();
            p.partition_index = partition.partition_index;
            p.error_code = error_code;
            answer.partitions.push(p);
        }
        response.topics.push(answer);
    }
    response
}

/// One partition's committed offset, or its error (UNSTABLE_OFFSET_COMMIT).
type FetchedPartition = (i32, Result<Option<CommittedOffset>, GroupError>);

/// The committed offsets of one group, by topic.
type Fetched = Result<BTreeMap<String, Vec<FetchedPartition>>, GroupError>;

async fn fetch_offsets(
    context: &Context,
    group_id: String,
    partitions: Option<Vec<(String, i32)>>,
    require_stable: bool,
) -> Fetched {
    let op = GroupOp::OffsetFetch {
        group_id,
        partitions,
        require_stable,
    };
    let GroupResponse::OffsetFetch(result) = call(context, op).await else {
        unreachable!("an offset fetch answered otherwise")
    };
    let offsets = result?;
    let mut by_topic: BTreeMap<String, Vec<FetchedPartition>> = BTreeMap::new();
    for (topic, partition, offset) in offsets {
        by_topic.entry(topic).or_default().push((partition, offset));
    }
    Ok(by_topic)
}

fn asked_partitions<'a>(
    topics: impl Iterator<Item = (&'a TopicName, &'a Vec<i32>)>,
) -> Vec<(String, i32)> {
    topics
        .flat_map(|(name, partitions)| partitions.iter().map(move |p| (string(&name.0), *p)))
        .collect()
}

pub(super) async fn offset_fetch(
    context: &Context,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        for group in request.groups {
            let asked = group.topics.as_ref().map(|topics| {
                asked_partitions(topics.iter().map(|t| (&t.name, &t.partition_indexes)))
            });
            let mut answer = OffsetFetchResponseGroup::default();
            answer.group_id = group.group_id.clone();
            let fetched = fetch_offsets(
                context,
                string(&group.group_id.0),
                asked,
                request.require_stable,
            );
            match fetched.await {
                Ok(by_topic) => {
                    for (topic, partitions) in by_topic {
                        let mut t = OffsetFetchResponseTopics::default();
                        t.name = TopicName(str_bytes(&topic));
                        for (index, offset) in partitions {
                            let mut p = OffsetFetchResponsePartitions::default();
                            p.partition_index = index;
                            (
                                p.committed_offset,
                                p.committed_leader_epoch,
                                p.metadata,
                                p.error_code,
                            ) = offset_fields(offset);
                            t.partitions.push(p);
                        }
                        answer.topics.push(t);
                    }
                }
                Err(error) => answer.error_code = error.kafka_code(),
            }
            response.groups.push(answer);
        }
        return response;
    }
    let asked = request
        .topics
        .as_ref()
        .map(|topics| asked_partitions(topics.iter().map(|t| (&t.name, &t.partition_indexes))));
    // v7 asks for stable offsets; earlier versions read the committed ones as they are.
    let require_stable = version >= 7 && request.require_stable;
    let fetched = fetch_offsets(
        context,
        string(&request.group_id.0),
        asked.clone(),
        require_stable,
    );
    match fetched.await {
        Ok(by_topic) => {
            for (topic, partitions) in by_topic {
                let mut t = OffsetFetchResponseTopic::default();
                t.name = TopicName(str_bytes(&topic));
                for (index, offset) in partitions {
                    let mut p = OffsetFetchResponsePartition::default();
                    p.partition_index = index;
                    (
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata,
                        p.error_code,
                    ) = offset_fields(offset);
                    t.partitions.push(p);
                }
                response.topics.push(t);
            }
        }
        Err(error) if version >= 2 => {
            response.error_code = error.kafka_code();
        }
        Err(error) => {
            // v0–v1 have no top-level error: every partition asked carries it.
            for (topic, index) in asked.unwrap_or_default() {
                let mut t = OffsetFetchResponseTopic::default();
                t.name = TopicName(str_bytes(&topic));
                let mut p = OffsetFetchResponsePartition::default();
                p.partition_index = index;
                p.committed_offset = -1;
                p.metadata = Some(str_bytes(""));
                p.error_code = error.kafka_code();
                t.partitions.push(p);
                response.topics.push(t);
            }
        }
    }
    response
}

/// (offset, leader epoch, metadata, error code) of a committed offset, or Kafka's "none"
/// (-1, -1, "") with the error if any.
fn offset_fields(
    offset: Result<Option<CommittedOffset>, GroupError>,
) -> (i64, i32, Option<StrBytes>, i16) {
    match offset {
        Ok(Some(o)) => (
            o.offset,
            o.leader_epoch,
            Some(str_bytes(&o.metadata)),
            code::NONE,
        ),
        Ok(None) => (-1, -1, Some(str_bytes("")), code::NONE),
        Err(error) => (-1, -1, Some(str_bytes("")), error.kafka_code()),
    }
}

pub(super) async fn describe_groups(
    context: &Context,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for group_id in request.groups {
        let op = GroupOp::Describe {
            group_id: string(&group_id.0),
        };
        let GroupResponse::Describe(result) = call(context, op).await else {
            unreachable!("a describe answered otherwise")
        };
        let mut described = DescribedGroup::default();
        described.group_id = group_id;
        described.protocol_type = str_bytes("");
        described.protocol_data = str_bytes("");
        described.authorized_operations = i32::MIN;
        match result {
            Ok(description) => {
                described.group_state = str_bytes(description.state);
                described.protocol_type = str_bytes(&description.protocol_type);
                described.protocol_data = str_bytes(&description.protocol);
                for m in description.members {
                    let mut member = DescribedGroupMember::default();
                    member.member_id = str_bytes(&m.member_id);
                    if version >= 4 {
                        member.group_instance_id = opt_str_bytes(&m.instance_id);
                    }
                    member.client_id = str_bytes(&m.client_id);
                    member.client_host = str_bytes(&m.client_host);
                    member.member_metadata = m.metadata;
                    member.member_assignment = m.assignment;
                    described.members.push(member);
                }
            }
            Err(error) => {
                described.error_code = error.kafka_code();
                described.group_state = str_bytes("");
            }
        }
        response.groups.push(described);
    }
    response
}

pub(super) async fn list_groups(
    context: &Context,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let mut response = ListGroupsResponse::default();
    let groups = match context.core.request(Request::ListGroups).await {
        Some(Response::ListGroups(groups)) => groups,
        None => {
            response.error_code = code::COORDINATOR_NOT_AVAILABLE;
            return response;
        }
        Some(other) => unreachable!("ListGroups answered with {other:?}"),
    };
    let states: Vec<&str> = request.states_filter.iter().map(|s| s.as_str()).collect();
    for group in groups {
        if version >= 4 && !states.is_empty() && !states.contains(&group.state) {
            continue;
        }
        let mut listed = KafkaListedGroup::default();
        listed.group_id = KafkaGroupId(str_bytes(&group.group_id));
        listed.protocol_type = str_bytes(&group.protocol_type);
        if version >= 4 {
            listed.group_state = str_bytes(group.state);
        }
        response.groups.push(listed);
    }
    response
}

pub(super) async fn delete_groups(
    context: &Context,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for group_id in request.groups_names {
        let op = GroupOp::Delete {
            group_id: string(&group_id.0),
        };
        let GroupResponse::Delete(result) = call(context, op).await else {
            unreachable!("a delete answered otherwise")
        };
        let mut deleted = DeletableGroupResult::default();
        deleted.group_id = group_id;
        deleted.error_code = result.err().map_or(code::NONE, |e| e.kafka_code());
        response.results.push(deleted);
    }
    response
}

/// OffsetDelete (KIP-496): the coordinator deletes the group's offsets of the partitions its
/// members do not subscribe to, through its log.
pub(super) async fn offset_delete(
    context: &Context,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let mut response = OffsetDeleteResponse::default();
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (string(&t.name.0), p.partition_index))
        })
        .collect();
    let op = GroupOp::OffsetDelete {
        group_id: string(&request.group_id.0),
        partitions,
    };
    let GroupResponse::OffsetDelete(result) = call(context, op).await else {
        unreachable!("an offset delete answered otherwise")
    };
    match result {
        Err(error) => response.error_code = error.kafka_code(),
        Ok(answers) => {
            let mut by_topic: BTreeMap<String, Vec<OffsetDeleteResponsePartition>> =
                BTreeMap::new();
            for (topic, partition, result) in answers {
                let mut p = OffsetDeleteResponsePartition::default();
                p.partition_index = partition;
                p.error_code = result.err().map_or(code::NONE, |e| e.kafka_code());
                by_topic.entry(topic).or_default().push(p);
            }
            for (name, partitions) in by_topic {
                let mut t = OffsetDeleteResponseTopic::default();
                t.name = TopicName(str_bytes(&name));
                t.partitions = partitions;
                response.topics.push(t);
            }
        }
    }
    response
}
