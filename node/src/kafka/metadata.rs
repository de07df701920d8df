//! The metadata APIs: Metadata (the applied metadata combined with the core's leader view, and
//! automatic topic creation) and DescribeCluster, with the broker list and controller both show.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterResponse, MetadataRequest, MetadataResponse, TopicName,
};
use oxbow_core::ids::{GroupId, TopicId};
use oxbow_core::io::{AdminRequest, Forward, Request, Response};
use oxbow_core::metadata::is_internal;
use oxbow_core::metadata::{check_topic_name, CreateTopic, MetadataCommand, METADATA_GROUP};
use slog::debug;
use uuid::Uuid;

use super::{code, str_bytes, uuid, Context};

/// The cluster id clients see.
const CLUSTER_ID: &str = "oxbow";

fn brokers(context: &Context) -> Vec<(i32, String, i32)> {
    context
        .config
        .all_nodes()
        .into_iter()
        .map(|node| {
            let address = context
                .config
                .kafka_address(node)
                .expect("every node has an address");
            (
                node.0 as i32,
                // As configured: a host name stays one (as Kafka's advertised listeners).
                address.host().to_string(),
                i32::from(address.port()),
            )
        })
        .collect()
}

/// The node leading the metadata group (Kafka's controller), or -1.
async fn controller(context: &Context) -> BrokerId {
    let leaders = context.core.leaders(vec![METADATA_GROUP]).await;
    match leaders.and_then(|l| l.into_iter().next().flatten()) {
        Some((node, _)) => BrokerId(node.0 as i32),
        None => BrokerId(-1),
    }
}

/// Asks the metadata group to create a topic with the automatic defaults, without waiting.
async fn auto_create(context: &Context, name: &str) {
    let request = Request::Admin(AdminRequest {
        command: MetadataCommand::CreateTopic(CreateTopic {
            name: name.to_string(),
            partitions: context.config.default_partitions,
            replication_factor: context.config.auto_replication_factor(),
            configs: BTreeMap::new(),
            assignment: Vec::new(),
        }),
        validate_only: false,
        forward: Forward::Blind,
        timeout_ms: 5_000,
    });
    if let Some(Response::Admin(Err(error))) = context.core.request(request).await {
        debug!(context.logger, "automatic topic creation not proposed"; "topic" => name, "why" => ?error);
    }
}

pub(super) async fn metadata(
    context: &Context,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    for (id, host, port) in brokers(context) {
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = BrokerId(id);
        broker.host = str_bytes(&host);
        broker.port = port;
        response.brokers.push(broker);
    }
    response.cluster_id = Some(str_bytes(CLUSTER_ID));
    response.controller_id = controller(context).await;
    let metadata = context.core.metadata();
    // Each asked topic by name, or (v10+) by id; `Err` holds the unknown id.
    let asked: Vec<Result<String, Uuid>> = match request.topics {
        // v0: an empty list means all topics; v1+: null means all topics.
        Some(topics) if !(version == 0 && topics.is_empty()) => topics
            .into_iter()
            .map(|t| match t.name {
                Some(name) => Ok(name.0.as_str().to_string()),
                None => metadata
                    .topic_by_id(TopicId(t.topic_id.as_u128()))
                    .map(|topic| topic.name.clone())
                    .ok_or(t.topic_id),
            })
            .collect(),
        // The internal topics are only shown when asked for by name.
        _ => metadata
            .topics()
            .keys()
            .filter(|name| !is_internal(name))
            .cloned()
            .map(Ok)
            .collect(),
    };
    let groups: Vec<GroupId> = asked
        .iter()
        .filter_map(|name| metadata.topic(name.as_ref().ok()?))
        .flat_map(|topic| topic.partitions.iter().map(|p| p.group))
        .collect();
    let leaders: BTreeMap<GroupId, _> = match context.core.leaders(groups.clone()).await {
        Some(leaders) => groups.iter().copied().zip(leaders).collect(),
        None => BTreeMap::new(),
    };
    let in_sync: BTreeMap<GroupId, _> = match context.core.in_sync(groups.clone()).await {
        Some(in_sync) => groups.into_iter().zip(in_sync).collect(),
        None => BTreeMap::new(),
    };
    let may_create =
        context.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    for name in asked {
        let mut topic = MetadataResponseTopic::default();
        let name = match name {
            Ok(name) => name,
            Err(id) => {
                topic.topic_id = id;
                topic.error_code = code::UNKNOWN_TOPIC_ID;
                response.topics.push(topic);
                continue;
            }
        };
        topic.name = Some(TopicName(str_bytes(&name)));
        match metadata.topic(&name) {
            // A topic of the node's `topics` list is created as configured at start-up;
            // auto-creating it first (with the default partition count) would win the race.
            None if context.config.topics.iter().any(|t| t.name == name) => {
                topic.error_code = code::LEADER_NOT_AVAILABLE;
            }
            None if may_create && check_topic_name(&name).is_ok() => {
                auto_create(context, &name).await;
                topic.error_code = code::LEADER_NOT_AVAILABLE;
            }
            None => topic.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
            Some(meta) => {
                topic.topic_id = uuid(meta.id);
                topic.is_internal = is_internal(&name);
                // A topic whose partitions have not all had a leader yet (just created) is
                // answered as not available as a whole, as Kafka's controller never shows a
                // new topic's partitions without leaders: clients retry the topic. One whose
                // partitions all had leaders is shown with its partitions, a partition whose
                // leader is being replaced as LEADER_NOT_AVAILABLE with leader -1, as Kafka
                // shows it (a topic answered as a whole would have no partitions for clients).
                let all_led = meta
                    .partitions
                    .iter()
                    .all(|p| leaders.get(&p.group).copied().flatten().is_some());
                let groups = meta.partitions.iter().map(|p| p.group).collect();
                if !all_led
                    && !context
                        .core
                        .had_leaders(groups)
                        .await
                        .is_some_and(|had| had.iter().all(|h| *h))
                {
                    topic.error_code = code::LEADER_NOT_AVAILABLE;
                    response.topics.push(topic);
                    continue;
                }
                for (index, placement) in meta.partitions.iter().enumerate() {
                    let mut partition = MetadataResponsePartition::default();
                    partition.partition_index = index as i32;
                    partition.replica_nodes = placement
                        .replicas
                        .iter()
                        .map(|n| BrokerId(n.0 as i32))
                        .collect();
                    match leaders.get(&placement.group).copied().flatten() {
                        Some((leader, term)) => {
                            partition.leader_id = BrokerId(leader.0 as i32);
                            partition.leader_epoch = term.0 as i32;
                            // The leader's count of replicas in sync (Kafka's ISR); until
                            // its gossip arrives, the leader alone.
                            partition.isr_nodes = match in_sync.get(&placement.group) {
                                Some(Some(nodes)) => {
                                    nodes.iter().map(|n| BrokerId(n.0 as i32)).collect()
                                }
                                _ => vec![BrokerId(leader.0 as i32)],
                            };
                        }
                        None => {
                            partition.error_code = code::LEADER_NOT_AVAILABLE;
                            partition.leader_id = BrokerId(-1);
                            partition.leader_epoch = -1;
                        }
                    }
                    topic.partitions.push(partition);
                }
            }
        }
        response.topics.push(topic);
    }
    response
}

pub(super) async fn describe_cluster(context: &Context) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = str_bytes(CLUSTER_ID);
    response.controller_id = controller(context).await;
    response.cluster_authorized_operations = i32::MIN;
    for (id, host, port) in brokers(context) {
        let mut broker = DescribeClusterBroker::default();
        broker.broker_id = BrokerId(id);
        broker.host = str_bytes(&host);
        broker.port = port;
        response.brokers.push(broker);
    }
    response
}
