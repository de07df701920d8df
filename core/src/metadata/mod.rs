//! Cluster metadata: topics, their stable ids, their partitions and where each partition's
//! replicas live.
//!
//! [`MetadataState`] is the applied state of the metadata Raft group ([`METADATA_GROUP`]), in
//! which every node votes, as in KRaft's controller quorum. Its log holds encoded
//! [`MetadataCommand`]s. Applying one is deterministic: partition group ids come from a counter,
//! replicas from the sorted node list, topic ids from the entry's position in the log; so every
//! node that applies the same log builds the same state, and starts or stops the same partition
//! groups (`Node` does that with the [`MetadataChange`] an apply returns).

use std::collections::BTreeMap;

use crate::batch::TimestampType;
use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{GroupId, NodeId, RaftIndex, Term, TopicId};

/// The metadata Raft group. Partition groups are numbered from 1.
pub const METADATA_GROUP: GroupId = GroupId(0);

/// Most partitions of one topic.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;
/// Longest topic name (Kafka's limit).
pub const TOPIC_NAME_MAX: usize = 249;

/// Version of the encoded [`MetadataState`] (the metadata log's snapshots).
const STATE_VERSION: u8 = 1;

/// One partition's Raft group and replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionAssignment {
    /// Its Raft group.
    pub group: GroupId,
    /// The nodes holding a replica (the group's voters); the first is the preferred leader.
    pub replicas: Vec<NodeId>,
}

/// A topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    /// Stable id (Kafka's topic UUID), never 0.
    pub id: TopicId,
    /// Name.
    pub name: String,
    /// Partitions, by index.
    pub partitions: Vec<PartitionAssignment>,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// Configuration overrides (keys from [`TOPIC_CONFIGS`]).
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    /// How records of this topic are timestamped.
    pub fn timestamps(&self) -> TimestampType {
        match self
            .configs
            .get("message.timestamp.type")
            .map(String::as_str)
        {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        }
    }

    /// The overrides after an [`MetadataCommand::AlterTopicConfigs`] of `set`, `remove` and
    /// `replace` (which keeps the overrides that cannot change at run time).
    pub fn altered_configs(
        &self,
        set: &BTreeMap<String, String>,
        remove: &[String],
        replace: bool,
    ) -> BTreeMap<String, String> {
        let mut configs = self.configs.clone();
        if replace {
            configs.retain(|key, _| !RUNTIME_TOPIC_CONFIGS.contains(&key.as_str()));
        }
        for key in remove {
            configs.remove(key);
        }
        configs.extend(set.clone());
        configs
    }

    /// The value of a configuration key: the override, else the default.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.configs
            .get(key)
            .map(String::as_str)
            .or_else(|| configs::default_of(key))
    }
}

/// Create a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTopic {
    /// Name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// Configuration overrides.
    pub configs: BTreeMap<String, String>,
    /// Manual replica assignment: each partition's replicas, the first the preferred leader
    /// (empty: placed round robin). When given, it has `partitions` lists of
    /// `replication_factor` nodes each.
    pub assignment: Vec<Vec<NodeId>>,
}

/// A change to the metadata, as proposed to the metadata group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataCommand {
    /// Create a topic.
    CreateTopic(CreateTopic),
    /// Delete a topic and all its partitions' data.
    DeleteTopic {
        /// Its name.
        name: String,
    },
    /// Grow a topic to `count` partitions.
    CreatePartitions {
        /// Its name.
        name: String,
        /// The new total number of partitions.
        count: u32,
        /// Manual replica assignment of the new partitions (empty: round robin).
        assignment: Vec<Vec<NodeId>>,
    },
    /// Change a topic's configuration overrides (Kafka's IncrementalAlterConfigs, or
    /// AlterConfigs with `replace`).
    AlterTopicConfigs {
        /// Its name.
        name: String,
        /// Overrides to set.
        set: BTreeMap<String, String>,
        /// Overrides to remove (the key takes its default again).
        remove: Vec<String>,
        /// Whether every override not in `set` goes (AlterConfigs replaces the whole set).
        replace: bool,
    },
}

/// What applying a command changed; `Node` starts and stops partition groups from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataChange {
    /// A topic was created.
    TopicCreated {
        /// Its name.
        name: String,
        /// Its id.
        id: TopicId,
    },
    /// A topic was deleted; its former metadata.
    TopicDeleted(TopicMeta),
    /// Partitions were added to a topic, from index `from` on.
    PartitionsCreated {
        /// The topic.
        name: String,
        /// The first new partition.
        from: u32,
    },
    /// A topic's configuration overrides changed.
    TopicConfigsChanged {
        /// The topic.
        name: String,
    },
}

/// Why an admin command was refused. Deterministic ones come from [`MetadataState::check`]; the
/// others from where the command was (not) proposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminError {
    /// This node does not lead the metadata group; nothing was proposed.
    NotController {
        /// The leader it knows of.
        leader: Option<NodeId>,
    },
    /// A topic of that name exists.
    TopicAlreadyExists,
    /// No topic of that name.
    UnknownTopic,
    /// The topic name is not allowed.
    InvalidTopic(String),
    /// The partition count is not allowed.
    InvalidPartitions(String),
    /// The replication factor is not allowed.
    InvalidReplicationFactor(String),
    /// A configuration key or value is not supported.
    InvalidConfig(String),
    /// A manual replica assignment is not allowed.
    InvalidReplicaAssignment(String),
    /// The request contradicts itself.
    InvalidRequest(String),
    /// Too many admin requests are waiting; nothing was proposed.
    Backpressure,
    /// No answer within the timeout: the command may or may not take effect.
    TimedOut,
}

impl AdminError {
    /// The Kafka error code that answers this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            Self::NotController { .. } => 41,
            Self::TopicAlreadyExists => 36,
            Self::UnknownTopic => 3,
            Self::InvalidTopic(_) => 17,
            Self::InvalidPartitions(_) => 37,
            Self::InvalidReplicationFactor(_) => 38,
            Self::InvalidConfig(_) => 40,
            Self::InvalidReplicaAssignment(_) => 39,
            Self::InvalidRequest(_) => 42,
            Self::Backpressure | Self::TimedOut => 7,
        }
    }

    /// A message for the client, if the error has one.
    pub fn message(&self) -> Option<String> {
        match self {
            Self::InvalidTopic(m)
            | Self::InvalidPartitions(m)
            | Self::InvalidReplicationFactor(m)
            | Self::InvalidConfig(m)
            | Self::InvalidReplicaAssignment(m)
            | Self::InvalidRequest(m) => Some(m.clone()),
            Self::NotController { .. } => {
                Some("this node is not the controller; refresh metadata and retry".into())
            }
            _ => None,
        }
    }

    /// Whether the command may still take effect.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Self::TimedOut)
    }
}

/// Whether `name` is one of the internal topics whose partitions are command logs of
/// coordinators (`__consumer_offsets`, `__transaction_state`): never produced to, never
/// deleted or grown, never trimmed by retention, and listed only when asked for by name.
pub fn is_internal(name: &str) -> bool {
    name == crate::coordinator::OFFSETS_TOPIC || name == crate::txn::TRANSACTION_STATE_TOPIC
}

/// Checks a topic name the way Kafka does.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_MAX || name == "." || name == ".." {
        return Err(format!(
            "topic name {name:?} must be 1-{TOPIC_NAME_MAX} characters and not . or .."
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!("topic name {name:?} may only hold [a-zA-Z0-9._-]"));
    }
    Ok(())
}

/// The applied state of the metadata group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataState {
    nodes: Vec<NodeId>,
    topics: BTreeMap<String, TopicMeta>,
    next_group: u64,
    partitions: usize,
    /// Partition replicas per node (nodes hosting none are absent): what the limit per node
    /// is checked against, kept as partitions come and go.
    hosted: BTreeMap<NodeId, usize>,
    applied: RaftIndex,
}

impl MetadataState {
    /// The empty state of a cluster of `nodes`.
    pub fn new(mut nodes: Vec<NodeId>) -> Self {
        nodes.sort();
        nodes.dedup();
        assert!(!nodes.is_empty());
        Self {
            nodes,
            topics: BTreeMap::new(),
            next_group: METADATA_GROUP.0 + 1,
            partitions: 0,
            hosted: BTreeMap::new(),
            applied: RaftIndex(0),
        }
    }

    /// Partitions in the cluster.
    pub fn partition_count(&self) -> usize {
        self.partitions
    }

    /// Partition replicas `node` hosts.
    pub fn replicas_on(&self, node: NodeId) -> usize {
        self.hosted.get(&node).copied().unwrap_or(0)
    }

    /// The cluster's nodes, sorted.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Every topic, by name.
    pub fn topics(&self) -> &BTreeMap<String, TopicMeta> {
        &self.topics
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// The topic with this id.
    pub fn topic_by_id(&self, id: TopicId) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == id)
    }

    /// The group id the next partition gets (every lower one was given out already).
    pub fn next_group(&self) -> u64 {
        self.next_group
    }

    /// The last metadata log index applied.
    pub fn applied(&self) -> RaftIndex {
        self.applied
    }

    /// A leader's no-op entry at `index` applied: nothing changes but the applied index.
    pub fn apply_noop(&mut self, index: RaftIndex) {
        assert!(
            index > self.applied,
            "metadata entries apply in order, once"
        );
        self.applied = index;
    }

    /// Encodes the whole state: the metadata log's snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(STATE_VERSION);
        w.u64(self.applied.0);
        w.u64(self.next_group);
        w.u32(self.nodes.len() as u32);
        for node in &self.nodes {
            w.u64(node.0);
        }
        w.u32(self.topics.len() as u32);
        for topic in self.topics.values() {
            w.bytes(topic.name.as_bytes());
            w.u64((topic.id.0 >> 64) as u64);
            w.u64(topic.id.0 as u64);
            w.u32(u32::from(topic.replication_factor));
            w.u32(topic.configs.len() as u32);
            for (key, value) in &topic.configs {
                w.bytes(key.as_bytes());
                w.bytes(value.as_bytes());
            }
            w.u32(topic.partitions.len() as u32);
            for partition in &topic.partitions {
                w.u64(partition.group.0);
                for replica in &partition.replicas {
                    w.u64(replica.0);
                }
            }
        }
        w.bytes
    }

    /// Decodes bytes written by [`MetadataState::encode`] (a snapshot of this node's own
    /// metadata log, or one its leader sent: both checksummed on the way).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != STATE_VERSION {
            return Err(DecodeError("unknown metadata state version"));
        }
        let string = |r: &mut Reader<'_>| -> Result<String, DecodeError> {
            String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError("name is not UTF-8"))
        };
        let applied = RaftIndex(r.u64()?);
        let next_group = r.u64()?;
        let node_count = r.u32()?;
        let mut nodes = Vec::new();
        for _ in 0..node_count.min(1 << 16) {
            nodes.push(NodeId(r.u64()?));
        }
        let topic_count = r.u32()?;
        let mut topics = BTreeMap::new();
        let mut partitions = 0;
        let mut hosted = BTreeMap::new();
        for _ in 0..topic_count {
            let name = string(&mut r)?;
            let id = TopicId((u128::from(r.u64()?) << 64) | u128::from(r.u64()?));
            let replication_factor = u16::try_from(r.u32()?)
                .map_err(|_| DecodeError("replication factor out of range"))?;
            let mut configs = BTreeMap::new();
            for _ in 0..r.u32()? {
                let key = string(&mut r)?;
                configs.insert(key, string(&mut r)?);
            }
            let mut assignments = Vec::new();
            for _ in 0..r.u32()? {
                let group = GroupId(r.u64()?);
                let mut replicas = Vec::new();
                for _ in 0..replication_factor {
                    replicas.push(NodeId(r.u64()?));
                }
                for replica in &replicas {
                    *hosted.entry(*replica).or_insert(0) += 1;
                }
                assignments.push(PartitionAssignment { group, replicas });
                if partitions + assignments.len() > PARTITIONS_CEILING {
                    return Err(DecodeError("impossible metadata state"));
                }
            }
            partitions += assignments.len();
            topics.insert(
                name.clone(),
                TopicMeta {
                    id,
                    name,
                    partitions: assignments,
                    replication_factor,
                    configs,
                },
            );
        }
        r.finish()?;
        if nodes.is_empty() {
            return Err(DecodeError("impossible metadata state"));
        }
        let state = Self {
            nodes,
            topics,
            next_group,
            partitions,
            hosted,
            applied,
        };
        match state.broken_invariant() {
            None => Ok(state),
            Some(broken) => Err(DecodeError(broken)),
        }
    }

    /// Whether `command` would be applied (rather than refused) in the current state, with an
    /// entry that carries `limits`.
    pub fn check(
        &self,
        command: &MetadataCommand,
        limits: PartitionLimits,
    ) -> Result<(), AdminError> {
        match command {
            MetadataCommand::CreateTopic(create) => {
                check_topic_name(&create.name).map_err(AdminError::InvalidTopic)?;
                if self.topics.contains_key(&create.name) {
                    return Err(AdminError::TopicAlreadyExists);
                }
                if create.partitions == 0 || create.partitions > PARTITIONS_PER_TOPIC_MAX {
                    return Err(AdminError::InvalidPartitions(format!(
                        "{} partitions is outside 1..={PARTITIONS_PER_TOPIC_MAX}",
                        create.partitions
                    )));
                }
                if create.replication_factor == 0
                    || usize::from(create.replication_factor) > self.nodes.len()
                {
                    return Err(AdminError::InvalidReplicationFactor(format!(
                        "replication factor {} must be between 1 and the number of nodes ({})",
                        create.replication_factor,
                        self.nodes.len()
                    )));
                }
                for (key, value) in &create.configs {
                    check_topic_config(key, value).map_err(AdminError::InvalidConfig)?;
                }
                check_topic_configs(&create.configs).map_err(AdminError::InvalidConfig)?;
                if !create.assignment.is_empty() {
                    if create.assignment.len() != create.partitions as usize {
                        return Err(AdminError::InvalidReplicaAssignment(format!(
                            "{} partitions but {} assignments",
                            create.partitions,
                            create.assignment.len()
                        )));
                    }
                    self.check_assignment(&create.assignment, create.replication_factor)?;
                }
                self.check_partition_limits(&self.placement(create), limits)
            }
            MetadataCommand::DeleteTopic { name } | MetadataCommand::CreatePartitions { name, .. }
                if is_internal(name) =>
            {
                Err(AdminError::InvalidTopic(format!(
                    "{name} is internal: it holds coordinators' state (consumer groups' offsets, or transactions), and their ids are hashed over its partitions, so it is never deleted or grown"
                )))
            }
            MetadataCommand::DeleteTopic { name } => {
                self.topics.get(name).ok_or(AdminError::UnknownTopic)?;
                Ok(())
            }
            MetadataCommand::AlterTopicConfigs {
                name,
                set,
                remove,
                replace,
            } => {
                let topic = self.topics.get(name).ok_or(AdminError::UnknownTopic)?;
                for (key, value) in set {
                    check_topic_config(key, value).map_err(AdminError::InvalidConfig)?;
                }
                // A key that cannot change may be named with the value it has (AlterConfigs
                // sends the whole set).
                let changed = set
                    .iter()
                    .filter(|(key, value)| topic.config(key) != Some(value.as_str()))
                    .map(|(key, _)| key);
                for key in changed.chain(remove) {
                    if !RUNTIME_TOPIC_CONFIGS.contains(&key.as_str()) {
                        return Err(AdminError::InvalidConfig(format!(
                            "{key} cannot be changed on an existing topic yet (the topic's \
                             partitions read it when they start); changeable: {}",
                            RUNTIME_TOPIC_CONFIGS.join(", ")
                        )));
                    }
                }
                check_topic_configs(&topic.altered_configs(set, remove, *replace))
                    .map_err(AdminError::InvalidConfig)
            }
            MetadataCommand::CreatePartitions {
                name,
                count,
                assignment,
            } => {
                let topic = self.topics.get(name).ok_or(AdminError::UnknownTopic)?;
                let current = topic.partitions.len() as u32;
                if *count <= current || *count > PARTITIONS_PER_TOPIC_MAX {
                    return Err(AdminError::InvalidPartitions(format!(
                        "topic {name:?} has {current} partitions; the new count {count} must be larger and at most {PARTITIONS_PER_TOPIC_MAX}"
                    )));
                }
                if !assignment.is_empty() {
                    if assignment.len() != (count - current) as usize {
                        return Err(AdminError::InvalidReplicaAssignment(format!(
                            "increasing the number of partitions by {} but {} assignments provided",
                            count - current,
                            assignment.len()
                        )));
                    }
                    self.check_assignment(assignment, topic.replication_factor)?;
                }
                let new = self.growth_placement(topic, *count, assignment);
                self.check_partition_limits(&new, limits)
            }
        }
    }

    /// Checks a manual replica assignment as Kafka does: every partition has
    /// `replication_factor` replicas, none twice, all of them nodes of the cluster.
    fn check_assignment(
        &self,
        assignment: &[Vec<NodeId>],
        replication_factor: u16,
    ) -> Result<(), AdminError> {
        for (i, replicas) in assignment.iter().enumerate() {
            if replicas.len() != usize::from(replication_factor) {
                return Err(AdminError::InvalidReplicaAssignment(format!(
                    "partition {i} of the assignment has {} replicas; every partition must have the replication factor, {replication_factor}",
                    replicas.len()
                )));
            }
            for (j, replica) in replicas.iter().enumerate() {
                if replicas[..j].contains(replica) {
                    return Err(AdminError::InvalidReplicaAssignment(format!(
                        "partition {i} of the assignment names broker {} twice",
                        replica.0
                    )));
                }
                if !self.nodes.contains(replica) {
                    return Err(AdminError::InvalidReplicaAssignment(format!(
                        "partition {i} of the assignment names unknown broker {}",
                        replica.0
                    )));
                }
            }
        }
        Ok(())
    }

    /// The replicas of a new topic's partitions: its manual assignment, or round robin over
    /// the sorted nodes from a node that depends on the topic's first group id, so that
    /// leaders (the first replica is preferred, and usually first to campaign) spread over
    /// topics.
    fn placement(&self, create: &CreateTopic) -> Vec<Vec<NodeId>> {
        if !create.assignment.is_empty() {
            return create.assignment.clone();
        }
        let rf = usize::from(create.replication_factor);
        self.round_robin(self.next_group, 0, create.partitions, rf)
    }

    /// The replicas of the partitions that grow `topic` to `count`: the manual assignment, or
    /// the topic's round robin continued.
    fn growth_placement(
        &self,
        topic: &TopicMeta,
        count: u32,
        assignment: &[Vec<NodeId>],
    ) -> Vec<Vec<NodeId>> {
        if !assignment.is_empty() {
            return assignment.to_vec();
        }
        let from = topic.partitions.len();
        let start = topic.partitions[0].group.0;
        let rf = usize::from(topic.replication_factor);
        self.round_robin(start, from, count - from as u32, rf)
    }

    /// `count` partitions' replicas, from partition index `first` of a topic whose round robin
    /// starts at `start`.
    fn round_robin(&self, start: u64, first: usize, count: u32, rf: usize) -> Vec<Vec<NodeId>> {
        let n = self.nodes.len();
        (first..first + count as usize)
            .map(|p| {
                (0..rf)
                    .map(|i| self.nodes[(start as usize + p + i) % n])
                    .collect()
            })
            .collect()
    }

    /// Applies the command of the metadata log entry at `index` (of `term`), which carries
    /// `limits` (the limits of the node that took the request, or
    /// [`PartitionLimits::UNCARRIED`]). A refused command changes nothing but the applied
    /// index.
    pub fn apply(
        &mut self,
        index: RaftIndex,
        term: Term,
        command: &MetadataCommand,
        limits: PartitionLimits,
    ) -> Result<MetadataChange, AdminError> {
        assert!(
            index > self.applied,
            "metadata entries apply in order, once"
        );
        self.applied = index;
        self.check(command, limits)?;
        let change = match command {
            MetadataCommand::CreateTopic(create) => {
                let id = topic_id(index, term, &create.name);
                let placement = self.placement(create);
                let mut topic = TopicMeta {
                    id,
                    name: create.name.clone(),
                    partitions: Vec::new(),
                    replication_factor: create.replication_factor,
                    configs: create.configs.clone(),
                };
                self.add_assigned(&mut topic, &placement);
                self.topics.insert(create.name.clone(), topic);
                MetadataChange::TopicCreated {
                    name: create.name.clone(),
                    id,
                }
            }
            MetadataCommand::DeleteTopic { name } => {
                let topic = self.topics.remove(name).expect("checked");
                self.partitions -= topic.partitions.len();
                for replica in topic.partitions.iter().flat_map(|p| &p.replicas) {
                    let hosted = self.hosted.get_mut(replica).expect("counted");
                    *hosted -= 1;
                    if *hosted == 0 {
                        self.hosted.remove(replica);
                    }
                }
                MetadataChange::TopicDeleted(topic)
            }
            MetadataCommand::AlterTopicConfigs {
                name,
                set,
                remove,
                replace,
            } => {
                let topic = self.topics.get_mut(name).expect("checked");
                topic.configs = topic.altered_configs(set, remove, *replace);
                MetadataChange::TopicConfigsChanged { name: name.clone() }
            }
            MetadataCommand::CreatePartitions {
                name,
                count,
                assignment,
            } => {
                let mut topic = self.topics.remove(name).expect("checked");
                let from = topic.partitions.len() as u32;
                let placement = self.growth_placement(&topic, *count, assignment);
                self.add_assigned(&mut topic, &placement);
                self.topics.insert(name.clone(), topic);
                MetadataChange::PartitionsCreated {
                    name: name.clone(),
                    from,
                }
            }
        };
        self.invariants();
        Ok(change)
    }

    /// Appends one partition per list of `assignment` (checked), with exactly those replicas.
    fn add_assigned(&mut self, topic: &mut TopicMeta, assignment: &[Vec<NodeId>]) {
        for replicas in assignment {
            for replica in replicas {
                *self.hosted.entry(*replica).or_insert(0) += 1;
            }
            topic.partitions.push(PartitionAssignment {
                group: GroupId(self.next_group),
                replicas: replicas.clone(),
            });
            self.next_group += 1;
            self.partitions += 1;
        }
    }

    /// Asserts the state's invariants.
    pub fn invariants(&self) {
        if let Some(broken) = self.broken_invariant() {
            panic!("metadata state invariant broken: {broken}");
        }
    }

    /// The first invariant the state breaks, if any: `invariants` asserts there is none, and
    /// `decode` refuses bytes that make one (a snapshot from a peer is input, not our state).
    fn broken_invariant(&self) -> Option<&'static str> {
        let mut groups = std::collections::BTreeSet::new();
        let mut count = 0;
        let mut hosted = BTreeMap::new();
        for (name, topic) in &self.topics {
            let checks = [
                (name == &topic.name, "a topic is filed under its name"),
                (topic.id != TopicId(0), "a topic's id is not 0"),
                (!topic.partitions.is_empty(), "a topic has partitions"),
            ];
            if let Some((_, broken)) = checks.iter().find(|(holds, _)| !holds) {
                return Some(broken);
            }
            for p in &topic.partitions {
                let checks = [
                    (
                        p.group != METADATA_GROUP && p.group.0 < self.next_group,
                        "a partition's group is below the next group id",
                    ),
                    (groups.insert(p.group), "a group belongs to one partition"),
                    (
                        p.replicas.len() == usize::from(topic.replication_factor),
                        "a partition has the topic's replication factor",
                    ),
                    (
                        p.replicas.iter().all(|r| self.nodes.contains(r)),
                        "a partition's replicas are nodes",
                    ),
                ];
                if let Some((_, broken)) = checks.iter().find(|(holds, _)| !holds) {
                    return Some(broken);
                }
                for replica in &p.replicas {
                    *hosted.entry(*replica).or_insert(0) += 1;
                }
            }
            count += topic.partitions.len();
        }
        if count != self.partitions {
            return Some("the partition count is the topics' partitions");
        }
        if hosted != self.hosted {
            return Some("the partitions hosted per node are counted");
        }
        (self.partitions > PARTITIONS_CEILING).then_some("the partition count is within the limit")
    }
}

/// A topic id from the entry that created it: the same on every node, distinct per entry.
fn topic_id(index: RaftIndex, term: Term, name: &str) -> TopicId {
    let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let high = crate::node::mix(&[index.0, term.0, name_hash, 1]);
    let low = crate::node::mix(&[index.0, term.0, name_hash, 2]);
    let id = (u128::from(high) << 64) | u128::from(low);
    TopicId(id.max(1))
}

mod command;
mod configs;
mod limits;
#[cfg(test)]
mod tests;

pub use command::{decode_entry, encode_entry, Entry, Origin};
pub use configs::{
    check_topic_config, check_topic_configs, Cleanup, RUNTIME_TOPIC_CONFIGS, TOPIC_CONFIGS,
};
pub use limits::{PartitionLimits, PARTITIONS_CEILING};
