//! The admin APIs, which become `Request::Admin` commands for the metadata group: CreateTopics,
//! DeleteTopics, CreatePartitions, and IncrementalAlterConfigs and AlterConfigs (from any node);
//! and DescribeConfigs, answered from the applied metadata and the configuration file.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as AlterConfigsResourceResponseV0;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ElectLeadersRequest, ElectLeadersResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_core::ids::{NodeId, TopicId};
use oxbow_core::io::{AdminRequest, Forward, Request, Response};
use oxbow_core::metadata::{
    AdminError, CreateTopic, MetadataChange, MetadataCommand, TopicMeta, TOPIC_CONFIGS,
};
use uuid::Uuid;

use super::{code, str_bytes, uuid, Context};

/// Proposes one admin command and waits for its answer.
async fn admin(
    context: &Context,
    command: MetadataCommand,
    validate_only: bool,
    timeout_ms: i32,
) -> Result<Option<MetadataChange>, AdminError> {
    let timeout_ms = timeout_ms.clamp(0, 300_000) as u32;
    let request = Request::Admin(AdminRequest {
        command,
        validate_only,
        // From any node, as Kafka's brokers forward admin requests to the controller.
        forward: Forward::Await,
        timeout_ms,
    });
    let deadline = Duration::from_millis(u64::from(timeout_ms) + 5_000);
    match tokio::time::timeout(deadline, context.core.request(request)).await {
        Ok(Some(Response::Admin(result))) => result,
        Ok(_) => Err(AdminError::NotController { leader: None }),
        Err(_) => Err(AdminError::TimedOut),
    }
}

fn error_fields(result: &Result<Option<MetadataChange>, AdminError>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(_) => (code::NONE, None),
        Err(error) => (error.kafka_code(), error.message().map(|m| str_bytes(&m))),
    }
}

pub(super) async fn create_topics(
    context: &Context,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    let mut seen = std::collections::BTreeSet::new();
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let mut result = CreatableTopicResult::default();
        // Kafka sends null, not "", when there is no error (clients compare).
        result.error_message = None;
        result.name = topic.name.clone();
        result.num_partitions = -1;
        result.replication_factor = -1;
        let outcome = if !seen.insert(name.clone()) {
            Err(AdminError::InvalidTopic(format!(
                "topic {name:?} appears twice in the request"
            )))
        } else if !topic.assignments.is_empty()
            && (topic.num_partitions != -1 || topic.replication_factor != -1)
        {
            Err(AdminError::InvalidRequest(
                "a manual replica assignment was given, so num_partitions and replication_factor must be -1".into(),
            ))
        } else {
            let assignment = create_assignment(&topic.assignments);
            let partitions =
                if let Some(assigned) = assignment.as_ref().ok().filter(|a| !a.is_empty()) {
                    assigned.len() as i32
                } else if topic.num_partitions == -1 {
                    context.config.default_partitions as i32
                } else {
                    topic.num_partitions
                };
            let replication_factor =
                if let Some(first) = assignment.as_ref().ok().and_then(|a| a.first()) {
                    first.len() as i16
                } else if topic.replication_factor == -1 {
                    context.config.auto_replication_factor() as i16
                } else {
                    topic.replication_factor
                };
            let mut configs = BTreeMap::new();
            let mut bad_config = None;
            for config in &topic.configs {
                match &config.value {
                    Some(value) => {
                        configs
                            .insert(config.name.as_str().to_string(), value.as_str().to_string());
                    }
                    None => bad_config = Some(config.name.as_str().to_string()),
                }
            }
            match (
                u32::try_from(partitions),
                u16::try_from(replication_factor),
                bad_config,
                assignment,
            ) {
                (_, _, _, Err(error)) => Err(error),
                (_, _, Some(key), _) => Err(AdminError::InvalidConfig(format!(
                    "config {key:?} has no value"
                ))),
                (Err(_), _, _, _) => Err(AdminError::InvalidPartitions(format!(
                    "{partitions} partitions"
                ))),
                (_, Err(_), _, _) => Err(AdminError::InvalidReplicationFactor(format!(
                    "replication factor {replication_factor}"
                ))),
                (Ok(partitions), Ok(replication_factor), None, Ok(assignment)) => {
                    admin(
                        context,
                        MetadataCommand::CreateTopic(CreateTopic {
                            name: name.clone(),
                            partitions,
                            replication_factor,
                            configs,
                            assignment,
                        }),
                        request.validate_only,
                        request.timeout_ms,
                    )
                    .await
                }
            }
        };
        (result.error_code, result.error_message) = error_fields(&outcome);
        if outcome.is_ok() {
            if let Some(meta) = context.core.metadata().topic(&name) {
                result.topic_id = uuid(meta.id);
                result.num_partitions = meta.partitions.len() as i32;
                result.replication_factor = meta.replication_factor as i16;
                result.configs = Some(
                    topic_configs(context, meta)
                        .into_iter()
                        .map(|(key, value, default)| {
                            let mut c = CreatableTopicConfigs::default();
                            c.name = str_bytes(&key);
                            c.value = Some(str_bytes(&value));
                            c.config_source = if default { 5 } else { 1 };
                            c
                        })
                        .collect(),
                );
            } else if let Ok(Some(MetadataChange::TopicCreated { id, .. })) = &outcome {
                result.topic_id = uuid(*id);
            }
        }
        response.topics.push(result);
    }
    response
}

pub(super) async fn delete_topics(
    context: &Context,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    // v0-5 name topics; v6 names or ids.
    let asked: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.as_str().to_string()), Uuid::nil()))
            .collect()
    };
    for (name, id) in asked {
        let mut result = DeletableTopicResult::default();
        let metadata = context.core.metadata();
        let name = name.or_else(|| {
            metadata
                .topic_by_id(TopicId(id.as_u128()))
                .map(|t| t.name.clone())
        });
        match name {
            None => {
                result.topic_id = id;
                result.error_code = code::UNKNOWN_TOPIC_ID;
            }
            Some(name) => {
                result.topic_id = metadata.topic(&name).map_or(id, |t| uuid(t.id));
                result.name = Some(TopicName(str_bytes(&name)));
                let outcome = admin(
                    context,
                    MetadataCommand::DeleteTopic { name },
                    false,
                    request.timeout_ms,
                )
                .await;
                (result.error_code, result.error_message) = error_fields(&outcome);
            }
        }
        response.responses.push(result);
    }
    response
}

pub(super) async fn create_partitions(
    context: &Context,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name.clone();
        let assignment = topic
            .assignments
            .iter()
            .flatten()
            .map(|a| replicas(&a.broker_ids))
            .collect::<Result<Vec<_>, _>>();
        let outcome = match (u32::try_from(topic.count), assignment) {
            (Err(_), _) => Err(AdminError::InvalidPartitions(format!(
                "{} partitions",
                topic.count
            ))),
            (_, Err(error)) => Err(error),
            (Ok(count), Ok(assignment)) => {
                admin(
                    context,
                    MetadataCommand::CreatePartitions {
                        name: topic.name.0.as_str().to_string(),
                        count,
                        assignment,
                    },
                    request.validate_only,
                    request.timeout_ms,
                )
                .await
            }
        };
        (result.error_code, result.error_message) = error_fields(&outcome);
        response.results.push(result);
    }
    response
}

/// One partition's replicas from a manual assignment; the cluster's metadata checks the rest
/// (replica counts, duplicates, unknown brokers).
fn replicas(brokers: &[kafka_protocol::messages::BrokerId]) -> Result<Vec<NodeId>, AdminError> {
    if brokers.is_empty() {
        return Err(AdminError::InvalidReplicaAssignment(
            "the manual replica assignment holds an empty replica list".into(),
        ));
    }
    brokers
        .iter()
        .map(|b| {
            u64::try_from(b.0).map(NodeId).map_err(|_| {
                AdminError::InvalidReplicaAssignment(format!(
                    "the manual replica assignment names unknown broker {}",
                    b.0
                ))
            })
        })
        .collect()
}

/// CreateTopics' manual assignment, by partition index: the indexes must be 0, 1, ... (in any
/// order), as Kafka requires.
fn create_assignment(
    assignments: &[kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment],
) -> Result<Vec<Vec<NodeId>>, AdminError> {
    let mut by_index = BTreeMap::new();
    for a in assignments {
        if by_index
            .insert(a.partition_index, replicas(&a.broker_ids)?)
            .is_some()
        {
            return Err(AdminError::InvalidReplicaAssignment(format!(
                "partition {} is assigned twice",
                a.partition_index
            )));
        }
    }
    if by_index.keys().copied().ne(0..by_index.len() as i32) {
        return Err(AdminError::InvalidReplicaAssignment(
            "the assignment's partitions must be a consecutive sequence from 0".into(),
        ));
    }
    Ok(by_index.into_values().collect())
}

/// A topic's configuration: (key, value, whether it is the default).
fn topic_configs(context: &Context, topic: &TopicMeta) -> Vec<(String, String, bool)> {
    TOPIC_CONFIGS
        .iter()
        .map(|(key, _)| {
            let (value, default) = context.config.topic_value(topic, key);
            (key.to_string(), value, default)
        })
        .collect()
}

/// The broker configuration that DescribeConfigs reports (read-only: it comes from the file).
fn broker_configs(context: &Context) -> Vec<(String, String)> {
    let config = &context.config;
    vec![
        ("broker.id".into(), config.node_id.to_string()),
        (
            "auto.create.topics.enable".into(),
            config.auto_create_topics.to_string(),
        ),
        (
            "num.partitions".into(),
            config.default_partitions.to_string(),
        ),
        (
            "default.replication.factor".into(),
            config.auto_replication_factor().to_string(),
        ),
        (
            "log.retention.ms".into(),
            config.log.default_retention_ms().to_string(),
        ),
        (
            "log.retention.bytes".into(),
            config.log.retention_bytes.to_string(),
        ),
        (
            "log.segment.bytes".into(),
            config.log.segment_bytes.to_string(),
        ),
        ("log.roll.ms".into(), config.log.segment_ms.to_string()),
        (
            "log.retention.check.interval.ms".into(),
            config.log.retention_check_interval_ms.to_string(),
        ),
        (
            "log.cleaner.dedupe.buffer.size".into(),
            config.log.cleaner_dedupe_buffer_bytes.to_string(),
        ),
        (
            "log.cleaner.io.max.bytes.per.second".into(),
            config.log.cleaner_io_bytes_per_second.to_string(),
        ),
        (
            "log.cleaner.backoff.ms".into(),
            config.log.cleaner_backoff_ms.to_string(),
        ),
        (
            "message.max.bytes".into(),
            crate::runtime::core_config(config)
                .batch_bytes_max
                .to_string(),
        ),
        ("fetch.max.bytes".into(), config.fetch_max_bytes.to_string()),
        (
            "offsets.topic.num.partitions".into(),
            config.offsets_topic_partitions.to_string(),
        ),
        (
            "group.min.session.timeout.ms".into(),
            config.groups.min_session_timeout_ms.to_string(),
        ),
        (
            "group.max.session.timeout.ms".into(),
            config.groups.max_session_timeout_ms.to_string(),
        ),
        (
            "group.initial.rebalance.delay.ms".into(),
            config.groups.initial_rebalance_delay_ms.to_string(),
        ),
        (
            "offsets.retention.minutes".into(),
            config.groups.offsets_retention_minutes.to_string(),
        ),
        (
            "transaction.state.log.num.partitions".into(),
            config.transactions.state_partitions.to_string(),
        ),
        (
            "transaction.max.timeout.ms".into(),
            config.transactions.max_timeout_ms.to_string(),
        ),
        (
            "transaction.abort.timed.out.transaction.cleanup.interval.ms".into(),
            config.transactions.timeout_check_interval_ms.to_string(),
        ),
        (
            "transactional.id.expiration.ms".into(),
            config.transactions.id_expiration_ms.to_string(),
        ),
        (
            "max.connections".into(),
            config.connections.max_connections.to_string(),
        ),
        (
            "max.connections.per.ip".into(),
            config.connections.max_connections_per_ip.to_string(),
        ),
        (
            "connections.max.idle.ms".into(),
            config.connections.connections_max_idle_ms.to_string(),
        ),
        (
            "queued.max.request.bytes".into(),
            config.connections.queued_max_request_bytes.to_string(),
        ),
    ]
}

pub(super) fn describe_configs(
    context: &Context,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    const TOPIC: i8 = 2;
    const BROKER: i8 = 4;
    let mut response = DescribeConfigsResponse::default();
    let metadata = context.core.metadata();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.error_message = None;
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let name = resource.resource_name.as_str();
        // (key, value, read only, source: 1 topic, 4 static broker, 5 default).
        let entries: Option<Vec<(String, String, bool, i8)>> = match resource.resource_type {
            TOPIC => metadata.topic(name).map(|topic| {
                topic_configs(context, topic)
                    .into_iter()
                    .map(|(k, v, default)| (k, v, false, if default { 5 } else { 1 }))
                    .collect()
            }),
            BROKER if name.is_empty() || name == context.config.node_id.to_string() => Some(
                broker_configs(context)
                    .into_iter()
                    .map(|(k, v)| (k, v, true, 4))
                    .collect(),
            ),
            _ => None,
        };
        match entries {
            None if resource.resource_type == TOPIC => {
                result.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
                result.error_message = Some(str_bytes(&format!("no topic {name:?}")));
            }
            None => {
                result.error_code = code::INVALID_REQUEST;
                result.error_message = Some(str_bytes(
                    "only topic resources and this broker's id can be described",
                ));
            }
            Some(entries) => {
                for (key, value, read_only, source) in entries {
                    let wanted = resource
                        .configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key));
                    if !wanted {
                        continue;
                    }
                    let mut entry = DescribeConfigsResourceResult::default();
                    entry.name = str_bytes(&key);
                    entry.value = Some(str_bytes(&value));
                    entry.read_only = read_only;
                    entry.config_source = source;
                    result.configs.push(entry);
                }
            }
        }
        response.results.push(result);
    }
    response
}

/// One resource of an AlterConfigs or IncrementalAlterConfigs: the change for a topic, or why
/// it is refused (error code, message).
type ConfigChange = Result<MetadataCommand, (i16, String)>;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// The command for one resource, or why there is none.
fn config_change(
    resource_type: i8,
    name: &str,
    set: BTreeMap<String, String>,
    remove: Vec<String>,
    replace: bool,
) -> ConfigChange {
    match resource_type {
        RESOURCE_TOPIC => Ok(MetadataCommand::AlterTopicConfigs {
            name: name.to_string(),
            set,
            remove,
            replace,
        }),
        RESOURCE_BROKER => Err((
            AdminError::InvalidConfig(String::new()).kafka_code(),
            "broker settings come from the node's configuration file: change it there and \
             restart the node"
                .into(),
        )),
        _ => Err((
            code::INVALID_REQUEST,
            "only topic and broker configurations exist".into(),
        )),
    }
}

/// Applies one topic configuration change through the metadata group, from any node (as
/// Kafka's brokers forward to the controller): proposed here if this node leads the metadata
/// group, else handed to its leader, and answered once this node has applied it.
async fn alter_topic_configs(
    context: &Context,
    command: MetadataCommand,
    validate_only: bool,
) -> Result<(), (i16, Option<StrBytes>)> {
    let refused = |error: AdminError| (error.kafka_code(), error.message().map(|m| str_bytes(&m)));
    admin(context, command, validate_only, 30_000)
        .await
        .map(|_| ())
        .map_err(refused)
}

/// One resource of either alter API: `changes` are the overrides to set and remove, or why the
/// request is malformed; answers the error code and message, if any.
async fn alter_resource(
    context: &Context,
    resource_type: i8,
    name: &str,
    changes: Result<(BTreeMap<String, String>, Vec<String>), String>,
    replace: bool,
    validate_only: bool,
) -> Result<(), (i16, Option<StrBytes>)> {
    let command = changes
        .map_err(|why| (code::INVALID_REQUEST, why))
        .and_then(|(set, remove)| config_change(resource_type, name, set, remove, replace))
        .map_err(|(code, message)| (code, Some(str_bytes(&message))))?;
    alter_topic_configs(context, command, validate_only).await
}

/// IncrementalAlterConfigs: SET and DELETE of the topic keys that change at run time, and
/// APPEND and SUBTRACT of `cleanup.policy`, oxbow's one list-valued key (as Kafka's controller
/// does them: the items not yet listed are added at the end, the items named are removed).
pub(super) async fn incremental_alter_configs(
    context: &Context,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    let metadata = context.core.metadata();
    for resource in request.resources {
        let mut set = BTreeMap::new();
        let mut remove = Vec::new();
        let mut bad = None;
        let topic = (resource.resource_type == RESOURCE_TOPIC)
            .then(|| metadata.topic(resource.resource_name.as_str()))
            .flatten();
        for config in &resource.configs {
            let key = config.name.to_string();
            match (config.config_operation, &config.value) {
                (0, Some(value)) => {
                    set.insert(key, value.to_string());
                }
                (1, _) => remove.push(key),
                (0, None) => bad = Some(format!("SET of {key} without a value")),
                (op @ (2 | 3), Some(value)) if key == "cleanup.policy" => {
                    let current = set
                        .get(&key)
                        .cloned()
                        .or_else(|| topic.and_then(|t| t.config(&key)).map(str::to_string))
                        .unwrap_or_default();
                    let mut items: Vec<String> = current
                        .split(',')
                        .map(|item| item.trim().to_string())
                        .filter(|item| !item.is_empty())
                        .collect();
                    for item in value.split(',').map(str::trim) {
                        if op == 2 && !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        } else if op == 3 {
                            items.retain(|i| i != item);
                        }
                    }
                    set.insert(key, items.join(","));
                }
                (2 | 3, None) if key == "cleanup.policy" => {
                    bad = Some(format!("APPEND or SUBTRACT of {key} without a value"))
                }
                (2 | 3, _) => {
                    bad = Some(format!(
                        "{key} is not a list: APPEND and SUBTRACT apply to cleanup.policy only"
                    ))
                }
                (op, _) => bad = Some(format!("unknown config operation {op}")),
            }
        }
        let changes = bad.map_or(Ok((set, remove)), Err);
        let outcome = alter_resource(
            context,
            resource.resource_type,
            resource.resource_name.as_str(),
            changes,
            false,
            request.validate_only,
        )
        .await;
        let mut result = AlterConfigsResourceResponse::default();
        result.error_message = None;
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        if let Err((code, message)) = outcome {
            result.error_code = code;
            result.error_message = message;
        }
        response.responses.push(result);
    }
    response
}

/// AlterConfigs (the older API): a topic's changeable overrides become exactly the ones given
/// (those that cannot change may be given as they are).
pub(super) async fn alter_configs(
    context: &Context,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let mut set = BTreeMap::new();
        let mut bad = None;
        for config in &resource.configs {
            match &config.value {
                Some(value) => {
                    set.insert(config.name.to_string(), value.to_string());
                }
                None => bad = Some(format!("{} has no value", config.name.as_str())),
            }
        }
        let changes = bad.map_or(Ok((set, Vec::new())), Err);
        let outcome = alter_resource(
            context,
            resource.resource_type,
            resource.resource_name.as_str(),
            changes,
            true,
            request.validate_only,
        )
        .await;
        let mut result = AlterConfigsResourceResponseV0::default();
        result.error_message = None;
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        if let Err((code, message)) = outcome {
            result.error_code = code;
            result.error_message = message;
        }
        response.responses.push(result);
    }
    response
}

/// DescribeLogDirs: the one log directory, the node's data directory, with each partition
/// this node holds a replica of (those asked, or all) and the bytes of its segment files;
/// every replica holds the whole log, so the offset lag is 0; v4's total and usable bytes
/// from the file system (-1 where it cannot tell).
pub(super) async fn describe_log_dirs(
    context: &Context,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    let mut response = DescribeLogDirsResponse::default();
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = str_bytes(&context.config.data_dir.display().to_string());
    result.total_bytes = -1;
    result.usable_bytes = -1;
    let Some(sizes) = context.disk.sizes().await else {
        result.error_code = code::KAFKA_STORAGE_ERROR;
        response.results.push(result);
        return response;
    };
    let bytes = |v: Option<u64>| v.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    result.total_bytes = bytes(sizes.total_bytes);
    result.usable_bytes = bytes(sizes.free_bytes);
    let asked: Option<BTreeMap<String, Vec<i32>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.as_str().to_string(), t.partitions))
            .collect()
    });
    let metadata = context.core.metadata();
    for (name, topic) in metadata.topics() {
        let wanted = |index: i32| {
            asked
                .as_ref()
                .is_none_or(|a| a.get(name).is_some_and(|p| p.contains(&index)))
        };
        let partitions: Vec<DescribeLogDirsPartition> = topic
            .partitions
            .iter()
            .enumerate()
            .filter(|(index, p)| wanted(*index as i32) && context.hosts(p))
            .map(|(index, p)| {
                let mut partition = DescribeLogDirsPartition::default();
                partition.partition_index = index as i32;
                partition.partition_size = bytes(sizes.groups.get(&p.group).copied());
                partition.partition_size = partition.partition_size.max(0);
                partition.offset_lag = 0;
                partition.is_future_key = false;
                partition
            })
            .collect();
        if !partitions.is_empty() {
            let mut t = DescribeLogDirsTopic::default();
            t.name = TopicName(str_bytes(name));
            t.partitions = partitions;
            result.topics.push(t);
        }
    }
    response.results.push(result);
    response
}

/// ElectLeaders: a preferred election (type 0) asks the partition's Raft group to hand
/// leadership to its first replica (raft-rs's leadership transfer: the leader brings it up to
/// date, then tells it to campaign at once), through this node's replica, and answers once
/// that replica leads; ELECTION_NOT_NEEDED when it leads already, PREFERRED_LEADER_NOT_AVAILABLE
/// when it does not lead within the timeout (it is down or behind) or this node holds no
/// replica to ask through. Raft elects only replicas holding every committed entry, so an
/// unclean election (type 1) is never possible: ELECTION_NOT_NEEDED when the partition has a
/// leader (as Kafka), INVALID_REQUEST otherwise.
pub(super) async fn elect_leaders(
    context: &Context,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };
    use oxbow_core::ids::GroupId;
    let mut response = ElectLeadersResponse::default();
    let metadata = context.core.metadata();
    // (topic, partition, its group and preferred replica if it exists); all partitions when
    // none are named.
    let all = request.topic_partitions.is_none();
    // Each: (topic, partition, its group and preferred replica if it exists).
    type Asked = (String, i32, Option<(GroupId, NodeId)>);
    let asked: Vec<Asked> = match &request.topic_partitions {
        Some(topics) => topics
            .iter()
            .flat_map(|t| {
                let name = t.topic.0.as_str().to_string();
                t.partitions.iter().map(move |p| (name.clone(), *p))
            })
            .map(|(name, index)| {
                let found =
                    super::placement(&metadata, &name, index).map(|p| (p.group, p.replicas[0]));
                (name, index, found)
            })
            .collect(),
        None => metadata
            .topics()
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (t.name.clone(), i as i32, Some((p.group, p.replicas[0]))))
            })
            .collect(),
    };
    let groups: Vec<GroupId> = asked
        .iter()
        .filter_map(|(_, _, f)| f.map(|(g, _)| g))
        .collect();
    let leaders: BTreeMap<GroupId, NodeId> = match context.core.leaders(groups.clone()).await {
        Some(leaders) => groups
            .iter()
            .zip(leaders)
            .filter_map(|(g, l)| l.map(|(node, _)| (*g, node)))
            .collect(),
        None => BTreeMap::new(),
    };
    let mut results: Vec<(String, i32, i16, Option<String>)> = Vec::new();
    let mut waiting: Vec<(String, i32, GroupId, NodeId)> = Vec::new();
    for (name, index, found) in asked {
        let Some((group, preferred)) = found else {
            results.push((name, index, code::UNKNOWN_TOPIC_OR_PARTITION, None));
            continue;
        };
        let leader = leaders.get(&group).copied();
        let answer = match request.election_type {
            0 if leader == Some(preferred) => {
                if all {
                    // Kafka leaves these out when every partition was asked.
                    continue;
                }
                Some((code::ELECTION_NOT_NEEDED, None))
            }
            0 => {
                let handed = context
                    .core
                    .request(Request::TransferLeader {
                        group,
                        to: preferred,
                    })
                    .await;
                match handed {
                    Some(Response::TransferLeader(true)) => None,
                    _ => Some((
                        code::PREFERRED_LEADER_NOT_AVAILABLE,
                        Some(format!(
                            "this node holds no replica of the partition to ask through; send ElectLeaders to broker {}",
                            preferred.0
                        )),
                    )),
                }
            }
            1 if leader.is_some() => Some((code::ELECTION_NOT_NEEDED, None)),
            1 => Some((
                code::INVALID_REQUEST,
                Some("unclean election is not possible: Raft elects only replicas holding every committed entry".into()),
            )),
            other => Some((
                code::INVALID_REQUEST,
                Some(format!("unknown election type {other}")),
            )),
        };
        match answer {
            Some((error, message)) => results.push((name, index, error, message)),
            None => waiting.push((name, index, group, preferred)),
        }
    }
    // Wait for each transfer to show in who leads (gossiped within a round trip or so).
    let timeout = Duration::from_millis(request.timeout_ms.clamp(1_000, 60_000) as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    while !waiting.is_empty() {
        let groups: Vec<GroupId> = waiting.iter().map(|(_, _, g, _)| *g).collect();
        let leaders = context.core.leaders(groups).await.unwrap_or_default();
        let mut still = Vec::new();
        for (i, (name, index, group, preferred)) in waiting.into_iter().enumerate() {
            if leaders.get(i).copied().flatten().map(|(node, _)| node) == Some(preferred) {
                results.push((name, index, code::NONE, None));
            } else {
                still.push((name, index, group, preferred));
            }
        }
        waiting = still;
        if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, index, _, preferred) in waiting {
        results.push((
            name,
            index,
            code::PREFERRED_LEADER_NOT_AVAILABLE,
            Some(format!(
                "broker {} did not take leadership within {} ms: it is down or behind",
                preferred.0,
                timeout.as_millis()
            )),
        ));
    }
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (name, index, error, message) in results {
        let mut p = PartitionResult::default();
        p.partition_id = index;
        p.error_code = error;
        p.error_message = message.map(|m| str_bytes(&m));
        by_topic.entry(name).or_default().push(p);
    }
    for (name, mut partitions) in by_topic {
        partitions.sort_by_key(|p| p.partition_id);
        let mut t = ReplicaElectionResult::default();
        t.topic = TopicName(str_bytes(&name));
        t.partition_result = partitions;
        response.replica_election_results.push(t);
    }
    response
}
