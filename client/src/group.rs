//! Consumer-group membership (Kafka's classic protocol, eager rebalancing, the range
//! assignor): [`GroupConsumer`] joins a group, reads the partitions the group assigns it from
//! the group's committed offsets, heartbeats from [`GroupConsumer::poll`], and commits its
//! positions with [`GroupConsumer::commit`].
//!
//! Everything happens inside `poll` and `commit` (no background task): call `poll` more often
//! than the session timeout, or the coordinator removes the member. Give each member its own
//! [`Client`]: a broker answers one connection's requests in order, and a JoinGroup waits for
//! the whole group, so members sharing connections would wait for each other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::client::Client;
use crate::connection::Connection;
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, Seek};
use crate::error::{codes, Error, Result};

/// Kafka error codes of the group protocol.
mod group_codes {
    pub const NOT_COORDINATOR: i16 = 16;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
}

/// How a [`GroupConsumer`] takes part in its group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// The group.
    pub group_id: String,
    /// The coordinator removes the member if it hears nothing for this long.
    pub session_timeout_ms: i32,
    /// How long the coordinator waits for members to rejoin in a rebalance.
    pub rebalance_timeout_ms: i32,
    /// How often `poll` heartbeats.
    pub heartbeat_interval: Duration,
    /// How records are read; `reset` applies to partitions without a committed offset.
    pub consumer: ConsumerConfig,
}

impl GroupConfig {
    /// Kafka's defaults (45 s sessions, 3 s heartbeats), reading from the earliest offset.
    pub fn new(group_id: &str) -> Self {
        Self {
            group_id: group_id.to_string(),
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: 60_000,
            heartbeat_interval: Duration::from_secs(3),
            consumer: ConsumerConfig {
                reset: Seek::Earliest,
                ..ConsumerConfig::default()
            },
        }
    }
}

/// What a transaction's offsets are committed with (KIP-447's `ConsumerGroupMetadata`): the
/// group, and the member's generation and id, so that the group's coordinator refuses the
/// offsets of a member a rebalance has replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// The group.
    pub group_id: String,
    /// The member's generation, or -1 (no membership check).
    pub generation: i32,
    /// The member id, or empty.
    pub member_id: String,
}

impl ConsumerGroupMetadata {
    /// The metadata of a consumer outside group management (assigned partitions): offsets
    /// are committed for `group_id` without a membership check.
    pub fn unmanaged(group_id: &str) -> Self {
        Self {
            group_id: group_id.to_string(),
            generation: -1,
            member_id: String::new(),
        }
    }
}

/// A member of a consumer group. See the module documentation.
pub struct GroupConsumer {
    client: Client,
    config: GroupConfig,
    topics: Vec<String>,
    consumer: Consumer,
    coordinator: Option<Arc<Connection>>,
    member_id: String,
    generation: i32,
    /// Whether the member is in a generation with an assignment (else `poll` joins first).
    joined: bool,
    assignment: Vec<(String, i32)>,
    next_heartbeat: tokio::time::Instant,
    /// The next `poll` seeks to the committed offsets first (`rewind`).
    rewind: bool,
}

impl GroupConsumer {
    /// A member of `config.group_id` subscribed to `topics`; it joins on the first `poll`.
    pub fn new(client: Client, config: GroupConfig, topics: &[&str]) -> Self {
        let consumer = Consumer::new(client.clone(), config.consumer.clone());
        Self {
            client,
            config,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            consumer,
            coordinator: None,
            member_id: String::new(),
            generation: -1,
            joined: false,
            assignment: Vec::new(),
            next_heartbeat: tokio::time::Instant::now(),
            rewind: false,
        }
    }

    /// The generation this member is in, once joined.
    pub fn generation(&self) -> Option<i32> {
        self.joined.then_some(self.generation)
    }

    /// The member id the coordinator gave, once it gave one.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// What a transactional producer commits this member's offsets with
    /// (`TransactionalProducer::send_offsets_to_transaction`).
    pub fn group_metadata(&self) -> ConsumerGroupMetadata {
        ConsumerGroupMetadata {
            group_id: self.config.group_id.clone(),
            generation: self.generation,
            member_id: self.member_id.clone(),
        }
    }

    /// The position (next offset to read) of every assigned partition that has one:
    /// (topic, partition, offset), what a transaction commits as the group's offsets.
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        self.assignment()
            .iter()
            .filter_map(|(t, p)| Some((t.clone(), *p, self.consumer.position(t, *p)?)))
            .collect()
    }

    /// Goes back to the group's committed offsets on the next `poll`: after an aborted
    /// transaction, the records read since its offsets were committed are read again (with
    /// `read_committed`, once no transaction's offsets are pending for them).
    pub fn rewind(&mut self) {
        self.rewind = true;
    }

    /// The partitions assigned in the current generation (empty while rebalancing).
    pub fn assignment(&self) -> &[(String, i32)] {
        if self.joined {
            &self.assignment
        } else {
            &[]
        }
    }

    /// Joins (or rejoins) the group when needed, heartbeats when due, and reads records of
    /// the assigned partitions for up to `timeout`. A rebalance shows as a poll that returns
    /// no records and a changed [`GroupConsumer::generation`].
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if !self.joined {
            match self.join().await {
                Ok(()) => {}
                // The group moved on while joining (`check` reset what must be reset).
                Err(Error::Broker {
                    code:
                        group_codes::REBALANCE_IN_PROGRESS
                        | group_codes::ILLEGAL_GENERATION
                        | group_codes::UNKNOWN_MEMBER_ID,
                    ..
                }) => return Ok(Vec::new()),
                Err(e) if e.is_retriable() => {
                    self.coordinator = None;
                    self.client.backoff().await;
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e),
            }
        }
        if tokio::time::Instant::now() >= self.next_heartbeat {
            self.heartbeat().await?;
            if !self.joined {
                return Ok(Vec::new());
            }
        }
        if self.rewind {
            match self.seek_committed().await {
                Ok(()) => self.rewind = false,
                Err(e) if e.is_retriable() => {
                    self.client.backoff().await;
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e),
            }
        }
        let until_heartbeat = self
            .next_heartbeat
            .saturating_duration_since(tokio::time::Instant::now());
        self.consumer.poll(timeout.min(until_heartbeat)).await
    }

    /// Commits the position of every assigned partition, in this member's generation. An
    /// ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID answer means a rebalance took the partitions:
    /// the member rejoins on its next poll. Returns what was committed: (topic, partition,
    /// offset).
    pub async fn commit(&mut self) -> Result<Vec<(String, i32, i64)>> {
        if !self.joined {
            return Err(Error::broker(group_codes::REBALANCE_IN_PROGRESS, None));
        }
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        let mut committed = Vec::new();
        for (topic, partition) in &self.assignment {
            if let Some(offset) = self.consumer.position(topic, *partition) {
                committed.push((topic.clone(), *partition, offset));
                let mut p = OffsetCommitRequestPartition::default();
                p.partition_index = *partition;
                p.committed_offset = offset;
                p.committed_leader_epoch = -1;
                p.committed_metadata = Some(StrBytes::from_static_str(""));
                by_topic.entry(topic).or_default().push(p);
            }
        }
        let mut request = OffsetCommitRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group_id.clone()));
        request.generation_id_or_member_epoch = self.generation;
        request.member_id = StrBytes::from_string(self.member_id.clone());
        request.retention_time_ms = -1;
        for (topic, partitions) in by_topic {
            let mut t = OffsetCommitRequestTopic::default();
            t.name = TopicName(StrBytes::from_string(topic.to_string()));
            t.partitions = partitions;
            request.topics.push(t);
        }
        let coordinator = self.coordinator().await?;
        let (response, _) = coordinator.call(request).await?;
        let code = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.error_code)
            .find(|c| *c != codes::NONE)
            .unwrap_or(codes::NONE);
        self.check(code)?;
        Ok(committed)
    }

    /// Leaves the group, so that the others rebalance at once instead of after the session
    /// timeout.
    pub async fn leave(mut self) -> Result<()> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let coordinator = self.coordinator().await?;
        let mut request = LeaveGroupRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group_id.clone()));
        let version = coordinator.version(kafka_protocol::messages::ApiKey::LeaveGroup)?;
        if version >= 3 {
            let mut member = MemberIdentity::default();
            member.member_id = StrBytes::from_string(self.member_id.clone());
            request.members = vec![member];
        } else {
            request.member_id = StrBytes::from_string(self.member_id.clone());
        }
        let response = coordinator.call_version(request, version).await?;
        match response.error_code {
            codes::NONE | group_codes::UNKNOWN_MEMBER_ID => Ok(()),
            code => Err(Error::broker(code, None)),
        }
    }

    /// Maps an error code of a group request to the member's reaction.
    fn check(&mut self, code: i16) -> Result<()> {
        match code {
            codes::NONE => Ok(()),
            group_codes::REBALANCE_IN_PROGRESS | group_codes::ILLEGAL_GENERATION => {
                self.joined = false;
                Err(Error::broker(code, None))
            }
            group_codes::UNKNOWN_MEMBER_ID => {
                self.joined = false;
                self.member_id.clear();
                Err(Error::broker(code, None))
            }
            group_codes::NOT_COORDINATOR
            | group_codes::COORDINATOR_NOT_AVAILABLE
            | group_codes::COORDINATOR_LOAD_IN_PROGRESS => {
                self.coordinator = None;
                Err(Error::broker(code, None))
            }
            code => Err(Error::broker(code, None)),
        }
    }

    async fn heartbeat(&mut self) -> Result<()> {
        self.next_heartbeat = tokio::time::Instant::now() + self.config.heartbeat_interval;
        let coordinator = match self.coordinator().await {
            Ok(c) => c,
            Err(e) if e.is_retriable() => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut request = HeartbeatRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group_id.clone()));
        request.generation_id = self.generation;
        request.member_id = StrBytes::from_string(self.member_id.clone());
        let code = match coordinator.call(request).await {
            Ok((response, _)) => response.error_code,
            Err(e) if e.is_retriable() => {
                self.coordinator = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match self.check(code) {
            Ok(()) => Ok(()),
            Err(Error::Broker { code, .. }) if code != codes::NONE && !self.joined => Ok(()),
            Err(e) if e.is_retriable() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn coordinator(&mut self) -> Result<Arc<Connection>> {
        if let Some(c) = self.coordinator.as_ref().filter(|c| !c.is_dead()) {
            return Ok(c.clone());
        }
        let connection = self.client.any_broker().await?;
        let mut request = FindCoordinatorRequest::default();
        request.key = StrBytes::from_string(self.config.group_id.clone());
        let (response, _) = connection.call(request).await?;
        if response.error_code != codes::NONE {
            return Err(Error::broker(response.error_code, None));
        }
        // The answer names the coordinator's address, which the metadata may not know yet.
        let address = format!("{}:{}", response.host, response.port);
        let coordinator = self.client.connection(&address).await?;
        self.coordinator = Some(coordinator.clone());
        Ok(coordinator)
    }

    /// JoinGroup (with the MEMBER_ID_REQUIRED round trip), the leader's range assignment,
    /// SyncGroup, and the committed offsets of the new assignment.
    async fn join(&mut self) -> Result<()> {
        // Eager rebalancing: nothing is read while the group decides anew.
        self.consumer.assign(&[]);
        self.assignment.clear();
        let coordinator = self.coordinator().await?;
        let mut subscription = ConsumerProtocolSubscription::default();
        subscription.topics = self
            .topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect();
        let metadata = encode_versioned(&subscription, 0)?;
        let response = loop {
            let mut request = JoinGroupRequest::default();
            request.group_id = GroupId(StrBytes::from_string(self.config.group_id.clone()));
            request.session_timeout_ms = self.config.session_timeout_ms;
            request.rebalance_timeout_ms = self.config.rebalance_timeout_ms;
            request.member_id = StrBytes::from_string(self.member_id.clone());
            request.protocol_type = StrBytes::from_static_str("consumer");
            let mut protocol = JoinGroupRequestProtocol::default();
            protocol.name = StrBytes::from_static_str("range");
            protocol.metadata = metadata.clone();
            request.protocols = vec![protocol];
            // The coordinator holds a join until the rebalance ends: wait up to the rebalance
            // timeout and 5 s more, as Kafka's consumer does.
            let version = coordinator.version(kafka_protocol::messages::ApiKey::JoinGroup)?;
            let answer = coordinator
                .submit(request, version, true)
                .await?
                .expect("an answer is expected");
            let wait = coordinator.timeout().max(
                Duration::from_millis(self.config.rebalance_timeout_ms.max(0) as u64)
                    + Duration::from_secs(5),
            );
            let response = coordinator
                .wait_for::<JoinGroupRequest>(answer, version, wait)
                .await?;
            if response.error_code == group_codes::MEMBER_ID_REQUIRED {
                self.member_id = response.member_id.to_string();
                continue;
            }
            self.check(response.error_code)?;
            break response;
        };
        self.member_id = response.member_id.to_string();
        self.generation = response.generation_id;
        let assignments = if response.leader == response.member_id {
            let members: Vec<(String, Vec<String>)> = response
                .members
                .iter()
                .map(|m| {
                    let mut bytes = m.metadata.clone();
                    let version = bytes.get_i16();
                    let subscription = ConsumerProtocolSubscription::decode(&mut bytes, version)
                        .map_err(|e| Error::Protocol(format!("member subscription: {e}")))?;
                    Ok((
                        m.member_id.to_string(),
                        subscription.topics.iter().map(|t| t.to_string()).collect(),
                    ))
                })
                .collect::<Result<_>>()?;
            let mut partitions = BTreeMap::new();
            for topic in members.iter().flat_map(|(_, t)| t).collect::<BTreeSet<_>>() {
                partitions.insert(
                    topic.clone(),
                    self.client.topic(topic).await?.partitions.len(),
                );
            }
            range_assign(&members, &partitions)
                .into_iter()
                .map(|(member, assigned)| {
                    let mut assignment = ConsumerProtocolAssignment::default();
                    assignment.assigned_partitions = assigned
                        .into_iter()
                        .map(|(topic, partitions)| {
                            let mut t = AssignedPartitions::default();
                            t.topic = TopicName(StrBytes::from_string(topic));
                            t.partitions = partitions;
                            t
                        })
                        .collect();
                    let mut a = SyncGroupRequestAssignment::default();
                    a.member_id = StrBytes::from_string(member);
                    a.assignment = encode_versioned(&assignment, 0)?;
                    Ok(a)
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let mut request = SyncGroupRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group_id.clone()));
        request.generation_id = self.generation;
        request.member_id = StrBytes::from_string(self.member_id.clone());
        request.protocol_type = Some(StrBytes::from_static_str("consumer"));
        request.protocol_name = response.protocol_name.clone();
        request.assignments = assignments;
        let (sync, _) = coordinator.call(request).await?;
        self.check(sync.error_code)?;
        let mut bytes = sync.assignment.clone();
        self.assignment = if bytes.remaining() >= 2 {
            let version = bytes.get_i16();
            let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version)
                .map_err(|e| Error::Protocol(format!("assignment: {e}")))?;
            assignment
                .assigned_partitions
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(move |p| (t.topic.0.to_string(), *p))
                })
                .collect()
        } else {
            Vec::new()
        };
        self.assignment.sort();
        let committed = self.fetch_committed(&coordinator).await?;
        let assigned: Vec<(&str, i32)> = self
            .assignment
            .iter()
            .map(|(t, p)| (t.as_str(), *p))
            .collect();
        self.consumer.assign(&assigned);
        for ((topic, partition), offset) in committed {
            self.consumer
                .seek(&topic, partition, Seek::Offset(offset))?;
        }
        self.rewind = false;
        self.joined = true;
        self.next_heartbeat = tokio::time::Instant::now() + self.config.heartbeat_interval;
        Ok(())
    }

    /// Seeks every assigned partition to the group's committed offset (the reset policy's
    /// where it has none).
    async fn seek_committed(&mut self) -> Result<()> {
        let coordinator = self.coordinator().await?;
        let committed = self.fetch_committed(&coordinator).await?;
        for (topic, partition) in self.assignment.clone() {
            let to = match committed.get(&(topic.clone(), partition)) {
                Some(offset) => Seek::Offset(*offset),
                None => self.config.consumer.reset,
            };
            self.consumer.seek(&topic, partition, to)?;
        }
        Ok(())
    }

    /// The group's committed offsets of the assigned partitions that have one.
    async fn fetch_committed(
        &mut self,
        coordinator: &Connection,
    ) -> Result<BTreeMap<(String, i32), i64>> {
        let mut request = OffsetFetchRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group_id.clone()));
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in &self.assignment {
            by_topic.entry(topic).or_default().push(*partition);
        }
        request.topics = Some(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    let mut t = OffsetFetchRequestTopic::default();
                    t.name = TopicName(StrBytes::from_string(topic.to_string()));
                    t.partition_indexes = partitions;
                    t
                })
                .collect(),
        );
        // A read_committed member waits for offsets a transaction has pending (KIP-447).
        request.require_stable = self.config.consumer.read_committed;
        let version = coordinator.version(kafka_protocol::messages::ApiKey::OffsetFetch)?;
        if request.require_stable && version < 7 {
            request.require_stable = false;
        }
        let (response, _) = coordinator.call(request).await?;
        self.check(response.error_code)?;
        let mut committed = BTreeMap::new();
        for topic in &response.topics {
            for p in &topic.partitions {
                self.check(p.error_code)?;
                if p.committed_offset >= 0 {
                    committed.insert(
                        (topic.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
        Ok(committed)
    }
}

/// Kafka's embedded protocol messages: an i16 version, then the message.
fn encode_versioned<M: Encodable>(message: &M, version: i16) -> Result<Bytes> {
    let mut out = BytesMut::new();
    out.put_i16(version);
    message
        .encode(&mut out, version)
        .map_err(|e| Error::Protocol(format!("encode: {e}")))?;
    Ok(out.freeze())
}

/// Kafka's range assignor: per topic, its partitions split into contiguous ranges over the
/// members subscribed to it, sorted by member id; the first `partitions % members` members get
/// one more. Returns each member's (topic, partitions).
pub fn range_assign(
    members: &[(String, Vec<String>)],
    partitions: &BTreeMap<String, usize>,
) -> BTreeMap<String, Vec<(String, Vec<i32>)>> {
    let mut assigned: BTreeMap<String, Vec<(String, Vec<i32>)>> = members
        .iter()
        .map(|(m, _)| (m.clone(), Vec::new()))
        .collect();
    for (topic, count) in partitions {
        let mut subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        subscribers.sort();
        if subscribers.is_empty() {
            continue;
        }
        let per = count / subscribers.len();
        let extra = count % subscribers.len();
        let mut next = 0;
        for (i, member) in subscribers.into_iter().enumerate() {
            let take = per + usize::from(i < extra);
            let range: Vec<i32> = (next..next + take).map(|p| p as i32).collect();
            next += take;
            if !range.is_empty() {
                assigned
                    .get_mut(member)
                    .expect("every member listed")
                    .push((topic.clone(), range));
            }
        }
        debug_assert_eq!(next, *count);
    }
    assigned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_gives_contiguous_ranges_and_the_remainder_to_the_first_members() {
        let members = vec![
            ("b".to_string(), vec!["t".to_string()]),
            ("a".to_string(), vec!["t".to_string(), "u".to_string()]),
            ("c".to_string(), vec!["t".to_string()]),
        ];
        let partitions = BTreeMap::from([("t".to_string(), 7), ("u".to_string(), 2)]);
        let assigned = range_assign(&members, &partitions);
        assert_eq!(
            assigned["a"],
            vec![("t".into(), vec![0, 1, 2]), ("u".into(), vec![0, 1])]
        );
        assert_eq!(assigned["b"], vec![("t".into(), vec![3, 4])]);
        assert_eq!(assigned["c"], vec![("t".into(), vec![5, 6])]);
    }
}
