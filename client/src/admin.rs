//! [`Admin`]: create and delete topics, add partitions, describe the cluster, list a group's
//! committed offsets. Requests go to the controller named by the metadata; NOT_CONTROLLER makes
//! the client refresh and retry.

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, FindCoordinatorRequest, GroupId, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use std::sync::Arc;

use kafka_protocol::messages::ApiKey;

use crate::client::Client;
use crate::connection::Connection;
use crate::error::{codes, Error, Result};

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions (-1: the broker's default).
    pub partitions: i32,
    /// Replicas per partition (-1: the broker's default).
    pub replication_factor: i16,
    /// Configuration overrides.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with no configuration overrides.
    pub fn new(name: &str, partitions: i32, replication_factor: i16) -> Self {
        Self {
            name: name.to_string(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }
}

fn creatable(t: &NewTopic) -> CreatableTopic {
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_string(t.name.clone()));
    topic.num_partitions = t.partitions;
    topic.replication_factor = t.replication_factor;
    topic.configs = t
        .configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = StrBytes::from_string(k.clone());
            c.value = Some(StrBytes::from_string(v.clone()));
            c
        })
        .collect();
    topic
}

/// Records each topic's answer; NOT_CONTROLLER leaves it pending for the next attempt.
fn note_answers(
    results: &mut [Option<Result<()>>],
    pending: &[usize],
    answers: impl Iterator<Item = (i16, Option<StrBytes>)>,
) {
    for (i, (code, message)) in pending.iter().zip(answers) {
        match code {
            codes::NONE => results[*i] = Some(Ok(())),
            codes::NOT_CONTROLLER => {}
            code => {
                let message = message.map(|m| m.as_str().to_string());
                results[*i] = Some(Err(Error::broker(code, message)));
            }
        }
    }
}

/// What DescribeCluster says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The cluster id.
    pub cluster_id: String,
    /// The controller's broker id (-1: none).
    pub controller: i32,
    /// Broker ids and `host:port`s.
    pub brokers: Vec<(i32, String)>,
}

/// The admin client.
#[derive(Clone)]
pub struct Admin {
    client: Client,
}

/// Attempts per admin call while the controller moves.
const ATTEMPTS: usize = 20;

impl Admin {
    /// An admin client on `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn controller(&self) -> Result<Arc<Connection>> {
        let metadata = self.client.refresh_metadata(&[]).await?;
        if metadata.controller < 0 {
            return Err(Error::broker(
                codes::NOT_CONTROLLER,
                Some("no controller yet".into()),
            ));
        }
        self.client.broker(metadata.controller).await
    }

    /// Creates topics; one result per topic, in order.
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<Vec<Result<()>>> {
        self.per_topic(topics.len(), |connection, pending| async move {
            let mut request = CreateTopicsRequest::default();
            request.timeout_ms = 30_000;
            request.topics = pending.iter().map(|i| creatable(&topics[*i])).collect();
            let (response, _) = connection.call(request).await?;
            Ok(response
                .topics
                .into_iter()
                .map(|a| (a.error_code, a.error_message))
                .collect())
        })
        .await
    }

    /// Deletes topics by name; one result per topic, in order.
    pub async fn delete_topics(&self, names: &[&str]) -> Result<Vec<Result<()>>> {
        self.per_topic(names.len(), |connection, pending| async move {
            let version = connection.version(ApiKey::DeleteTopics)?;
            let mut request = DeleteTopicsRequest::default();
            request.timeout_ms = 30_000;
            for i in &pending {
                let name = TopicName(StrBytes::from_string(names[*i].to_string()));
                if version >= 6 {
                    let mut state = DeleteTopicState::default();
                    state.name = Some(name);
                    request.topics.push(state);
                } else {
                    request.topic_names.push(name);
                }
            }
            let response = connection.call_version(request, version).await?;
            Ok(response
                .responses
                .into_iter()
                .map(|a| (a.error_code, a.error_message))
                .collect())
        })
        .await
    }

    /// Runs a per-topic admin request against the controller until every topic of `count` has
    /// an answer other than NOT_CONTROLLER. `attempt` sends the request for the pending topics
    /// (indexes) and returns their (error code, message), in order.
    async fn per_topic<F, Fut>(&self, count: usize, mut attempt: F) -> Result<Vec<Result<()>>>
    where
        F: FnMut(Arc<Connection>, Vec<usize>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(i16, Option<StrBytes>)>>>,
    {
        let mut results: Vec<Option<Result<()>>> = vec![None; count];
        let mut last = Error::Closed;
        for _ in 0..ATTEMPTS {
            let pending: Vec<usize> = (0..count).filter(|i| results[*i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            // Finding the controller is a read: any retriable failure is retried.
            let connection = match self.controller().await {
                Ok(connection) => connection,
                Err(e) if e.is_retriable() => {
                    last = e;
                    self.client.backoff().await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Creating or deleting twice is answered, not repeated: an indeterminate failure
            // is returned rather than retried.
            match attempt(connection, pending.clone()).await {
                Ok(answers) => note_answers(&mut results, &pending, answers.into_iter()),
                Err(e) if e.is_retriable() && !e.is_indeterminate() => last = e,
                Err(e) => return Err(e),
            }
            if results.iter().any(Option::is_none) {
                self.client.backoff().await;
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(last.clone())))
            .collect())
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(&self, topic: &str, count: i32) -> Result<()> {
        let mut last = Error::Closed;
        for _ in 0..ATTEMPTS {
            let mut request = CreatePartitionsRequest::default();
            request.timeout_ms = 30_000;
            let mut t = CreatePartitionsTopic::default();
            t.name = TopicName(StrBytes::from_string(topic.to_string()));
            t.count = count;
            t.assignments = None;
            request.topics = vec![t];
            match self.call_controller(request).await {
                Ok(response) => {
                    let answer =
                        response.results.into_iter().next().ok_or_else(|| {
                            Error::Protocol("empty CreatePartitions answer".into())
                        })?;
                    match answer.error_code {
                        codes::NONE => return Ok(()),
                        codes::NOT_CONTROLLER => last = Error::broker(codes::NOT_CONTROLLER, None),
                        code => {
                            return Err(Error::broker(
                                code,
                                answer.error_message.map(|m| m.as_str().to_string()),
                            ))
                        }
                    }
                }
                Err(e) if e.is_retriable() && !e.is_indeterminate() => last = e,
                Err(e) => return Err(e),
            }
            self.client.backoff().await;
        }
        Err(last)
    }

    /// Moves a partition's log start offset up to `offset` (Kafka's DeleteRecords; -1: the
    /// high watermark), at its leader; returns the new log start offset (the low watermark).
    /// The log start never moves back, so an attempt that may have taken effect is retried.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout_ms: i32,
    ) -> Result<i64> {
        let mut last = Error::Closed;
        for _ in 0..ATTEMPTS {
            match self
                .delete_records_once(topic, partition, offset, timeout_ms)
                .await
            {
                Ok(low_watermark) => return Ok(low_watermark),
                Err(e) if e.is_retriable() => {
                    last = e;
                    let _ = self.client.refresh_metadata(&[topic]).await;
                    self.client.backoff().await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn delete_records_once(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout_ms: i32,
    ) -> Result<i64> {
        let connection = self.client.leader(topic, partition).await?;
        let mut p = DeleteRecordsPartition::default();
        p.partition_index = partition;
        p.offset = offset;
        let mut t = DeleteRecordsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![p];
        let mut request = DeleteRecordsRequest::default();
        request.topics = vec![t];
        request.timeout_ms = timeout_ms;
        let (response, _) = connection.call(request).await?;
        let answer = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| Error::Protocol("DeleteRecords answer lacks the partition".into()))?;
        match answer.error_code {
            codes::NONE => Ok(answer.low_watermark),
            code => Err(Error::broker(code, None)),
        }
    }

    /// Sends one request to the controller.
    async fn call_controller<R: kafka_protocol::protocol::Request>(
        &self,
        request: R,
    ) -> Result<R::Response> {
        let connection = self.controller().await?;
        Ok(connection.call(request).await?.0)
    }

    /// A consumer group's committed offsets, (topic, partition, offset), from its coordinator
    /// (Kafka's `listConsumerGroupOffsets`). With `require_stable`, a partition whose offsets
    /// a transaction has pending fails the call with UNSTABLE_OFFSET_COMMIT (retriable).
    pub async fn list_group_offsets(
        &self,
        group_id: &str,
        require_stable: bool,
    ) -> Result<Vec<(String, i32, i64)>> {
        let connection = self.client.any_broker().await?;
        let mut find = FindCoordinatorRequest::default();
        find.key = StrBytes::from_string(group_id.to_string());
        let (found, _) = connection.call(find).await?;
        if found.error_code != codes::NONE {
            return Err(Error::broker(found.error_code, None));
        }
        let coordinator = self
            .client
            .connection(&format!("{}:{}", found.host, found.port))
            .await?;
        let mut request = OffsetFetchRequest::default();
        request.group_id = GroupId(StrBytes::from_string(group_id.to_string()));
        request.topics = None;
        request.require_stable = require_stable;
        let (response, _) = coordinator.call(request).await?;
        if response.error_code != codes::NONE {
            return Err(Error::broker(response.error_code, None));
        }
        let mut offsets = Vec::new();
        for topic in &response.topics {
            for p in &topic.partitions {
                if p.error_code != codes::NONE {
                    return Err(Error::broker(p.error_code, None));
                }
                if p.committed_offset >= 0 {
                    offsets.push((
                        topic.name.0.to_string(),
                        p.partition_index,
                        p.committed_offset,
                    ));
                }
            }
        }
        Ok(offsets)
    }

    /// Describes the cluster.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let connection = self.client.any_broker().await?;
        let (response, _) = connection.call(DescribeClusterRequest::default()).await?;
        if response.error_code != codes::NONE {
            return Err(Error::broker(
                response.error_code,
                response.error_message.map(|m| m.as_str().to_string()),
            ));
        }
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.as_str().to_string(),
            controller: response.controller_id.0,
            brokers: response
                .brokers
                .iter()
                .map(|b| (b.broker_id.0, format!("{}:{}", b.host.as_str(), b.port)))
                .collect(),
        })
    }
}
