//! Kafka's group coordinator (the classic protocol), as a state machine over a Raft group of
//! the internal [`OFFSETS_TOPIC`].
//!
//! Each partition of that topic is a Raft group whose log holds encoded [`Command`]s: offset
//! commits, a group's membership as of a completed rebalance, and group deletions. Every replica
//! applies them into [`StoredState`], so a new leader has the committed offsets and the last
//! generation at hand. The leader of the partition is the coordinator of every group whose id
//! hashes to it; while it serves, it also keeps the live state of the protocol ([`Live`]):
//! members, their session deadlines, the rebalance barrier and the answers waiting on it.
//!
//! Answers that change stored state wait until their entry applies (as acks=all produces do);
//! membership changes between rebalances are the leader's alone and are rebuilt from the stored
//! generation after a failover, where members keep their assignment and heartbeat on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{Generation, RaftIndex, RequestId, Term};
use crate::io::Response;
use crate::node::Sink;
use crate::time::{Instant, Now};

/// The internal topic whose partitions host the group coordinators.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Shortest session timeout a member may ask for (Kafka's `group.min.session.timeout.ms`).
pub const SESSION_TIMEOUT_MIN_MS: i32 = 6_000;
/// Longest session timeout a member may ask for (Kafka's `group.max.session.timeout.ms`).
pub const SESSION_TIMEOUT_MAX_MS: i32 = 1_800_000;
/// Longest metadata string of a committed offset (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_MAX: usize = 4096;
/// Most members of one group (Kafka's `group.max.size` is unbounded; ours is a bound).
pub const MEMBERS_MAX: usize = 1_000;
/// Most groups one coordinator partition holds.
pub const GROUPS_MAX: usize = 100_000;
/// Longest group, member or instance id.
pub const ID_MAX: usize = 1_000;

/// The partition of [`OFFSETS_TOPIC`] that coordinates `group_id`: Kafka's
/// `abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode` (over UTF-16 units).
pub fn partition_for(group_id: &str, partitions: usize) -> usize {
    assert!(partitions > 0);
    let mut hash: i32 = 0;
    for unit in group_id.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs as usize % partitions
}

// ---------------------------------------------------------------------------------------------
// Requests and answers.

/// A request to the coordinator of one group.
#[derive(Clone, Debug)]
pub enum GroupOp {
    /// JoinGroup.
    Join(JoinGroup),
    /// SyncGroup.
    Sync(SyncGroup),
    /// Heartbeat.
    Heartbeat(Heartbeat),
    /// LeaveGroup (one or more members).
    Leave(LeaveGroup),
    /// OffsetCommit.
    OffsetCommit(OffsetCommit),
    /// OffsetFetch: the partitions asked, or every partition with a committed offset.
    OffsetFetch {
        /// The group.
        group_id: String,
        /// `None` for all.
        partitions: Option<Vec<(String, i32)>>,
    },
    /// DescribeGroups, for one group.
    Describe {
        /// The group.
        group_id: String,
    },
    /// DeleteGroups, for one group.
    Delete {
        /// The group.
        group_id: String,
    },
}

impl GroupOp {
    /// The consumer group the request is about.
    pub fn group_id(&self) -> &str {
        match self {
            Self::Join(r) => &r.group_id,
            Self::Sync(r) => &r.group_id,
            Self::Heartbeat(r) => &r.group_id,
            Self::Leave(r) => &r.group_id,
            Self::OffsetCommit(r) => &r.group_id,
            Self::OffsetFetch { group_id, .. }
            | Self::Describe { group_id }
            | Self::Delete { group_id } => group_id,
        }
    }
}

/// JoinGroup.
#[derive(Clone, Debug)]
pub struct JoinGroup {
    /// The group.
    pub group_id: String,
    /// Empty on a member's first join.
    pub member_id: String,
    /// Static membership (`group.instance.id`).
    pub instance_id: Option<String>,
    /// The client's id, for DescribeGroups.
    pub client_id: String,
    /// The client's address, for DescribeGroups.
    pub client_host: String,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// Assignors the member supports, in preference order, with its subscription for each.
    pub protocols: Vec<(String, Bytes)>,
    /// Heartbeats must come at least this often.
    pub session_timeout_ms: i32,
    /// How long the member may take to rejoin in a rebalance.
    pub rebalance_timeout_ms: i32,
    /// JoinGroup v4+: a member without an id gets one with MEMBER_ID_REQUIRED and joins again.
    pub require_known_member_id: bool,
}

/// A member as the group leader sees it in its JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Its subscription for the chosen protocol.
    pub metadata: Bytes,
}

/// A successful JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinAnswer {
    /// The new generation.
    pub generation: Generation,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The chosen assignor.
    pub protocol: String,
    /// The leader's member id.
    pub leader: String,
    /// The joining member's id.
    pub member_id: String,
    /// Every member, for the leader only; empty for the others.
    pub members: Vec<JoinedMember>,
}

/// SyncGroup.
#[derive(Clone, Debug)]
pub struct SyncGroup {
    /// The group.
    pub group_id: String,
    /// The member's generation.
    pub generation: Generation,
    /// The member.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// From the leader: every member's assignment.
    pub assignments: Vec<(String, Bytes)>,
}

/// A successful SyncGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncAnswer {
    /// The group's protocol type.
    pub protocol_type: String,
    /// The chosen assignor.
    pub protocol: String,
    /// This member's assignment.
    pub assignment: Bytes,
}

/// Heartbeat.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    /// The group.
    pub group_id: String,
    /// The member's generation.
    pub generation: Generation,
    /// The member.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
}

/// LeaveGroup.
#[derive(Clone, Debug)]
pub struct LeaveGroup {
    /// The group.
    pub group_id: String,
    /// (member id, instance id) of each member leaving; a static member may give only its
    /// instance id.
    pub members: Vec<(String, Option<String>)>,
}

/// One committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// The leader epoch of the record before it, or -1.
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
    /// When the commit was accepted (the coordinator's wall clock, Unix ms).
    pub commit_time_ms: i64,
}

/// OffsetCommit.
#[derive(Clone, Debug)]
pub struct OffsetCommit {
    /// The group.
    pub group_id: String,
    /// The member's generation, or -1 for a commit outside group management.
    pub generation: Generation,
    /// The member, or empty.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// (topic, partition, offset, leader epoch, metadata).
    pub offsets: Vec<(String, i32, i64, i32, String)>,
}

/// A member in a DescribeGroups answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Its subscription for the chosen protocol.
    pub metadata: Bytes,
    /// Its assignment.
    pub assignment: Bytes,
}

/// A DescribeGroups answer for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// Kafka's state name: "Empty", "PreparingRebalance", "CompletingRebalance", "Stable",
    /// or "Dead" for a group that does not exist.
    pub state: &'static str,
    /// Protocol type ("" when none).
    pub protocol_type: String,
    /// The chosen assignor ("" when none).
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

/// A ListGroups entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group.
    pub group_id: String,
    /// Protocol type ("" for a group with only offsets).
    pub protocol_type: String,
    /// State name.
    pub state: &'static str,
}

/// Why a group request failed. Each has its Kafka error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupError {
    /// This node does not coordinate the group (now).
    NotCoordinator,
    /// The coordinator is not available (its partition does not exist yet).
    CoordinatorNotAvailable,
    /// The member id is not (or no longer) in the group.
    UnknownMemberId,
    /// The member's generation is not the group's.
    IllegalGeneration,
    /// A rebalance is under way: join again.
    RebalanceInProgress,
    /// Join again with this member id (JoinGroup v4+).
    MemberIdRequired(String),
    /// The member's protocol type or assignors do not match the group's.
    InconsistentGroupProtocol,
    /// The session timeout is outside the allowed range.
    InvalidSessionTimeout,
    /// Another member holds this static instance id now.
    FencedInstanceId,
    /// No such group.
    GroupIdNotFound,
    /// The group still has members.
    NonEmptyGroup,
    /// The group id is empty or too long.
    InvalidGroupId,
    /// The group has as many members as allowed.
    GroupMaxSizeReached,
    /// The offset's metadata is too long.
    OffsetMetadataTooLarge,
    /// No answer in time: the change may or may not have been made.
    TimedOut,
}

impl GroupError {
    /// The Kafka error code that answers this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            Self::NotCoordinator => 16,
            Self::CoordinatorNotAvailable => 15,
            Self::UnknownMemberId => 25,
            Self::IllegalGeneration => 22,
            Self::RebalanceInProgress => 27,
            Self::MemberIdRequired(_) => 79,
            Self::InconsistentGroupProtocol => 23,
            Self::InvalidSessionTimeout => 26,
            Self::FencedInstanceId => 82,
            Self::GroupIdNotFound => 69,
            Self::NonEmptyGroup => 68,
            Self::InvalidGroupId => 24,
            Self::GroupMaxSizeReached => 81,
            Self::OffsetMetadataTooLarge => 12,
            Self::TimedOut => 7,
        }
    }
}

/// The answer to a [`GroupOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupResponse {
    /// JoinGroup.
    Join(Result<JoinAnswer, GroupError>),
    /// SyncGroup.
    Sync(Result<SyncAnswer, GroupError>),
    /// Heartbeat.
    Heartbeat(Result<(), GroupError>),
    /// LeaveGroup: per member, in request order.
    Leave(Result<Vec<Result<(), GroupError>>, GroupError>),
    /// OffsetCommit: the whole commit succeeds or fails (per-offset errors are found before
    /// anything is proposed).
    OffsetCommit(Result<(), GroupError>),
    /// OffsetFetch: (topic, partition, committed offset if any).
    OffsetFetch(Result<Vec<(String, i32, Option<CommittedOffset>)>, GroupError>),
    /// DescribeGroups.
    Describe(Result<GroupDescription, GroupError>),
    /// DeleteGroups.
    Delete(Result<(), GroupError>),
}

impl GroupResponse {
    /// The same kind of answer, failed with `error`.
    pub fn failed(op: &GroupOp, error: GroupError) -> Self {
        match op {
            GroupOp::Join(_) => Self::Join(Err(error)),
            GroupOp::Sync(_) => Self::Sync(Err(error)),
            GroupOp::Heartbeat(_) => Self::Heartbeat(Err(error)),
            GroupOp::Leave(_) => Self::Leave(Err(error)),
            GroupOp::OffsetCommit(_) => Self::OffsetCommit(Err(error)),
            GroupOp::OffsetFetch { .. } => Self::OffsetFetch(Err(error)),
            GroupOp::Describe { .. } => Self::Describe(Err(error)),
            GroupOp::Delete { .. } => Self::Delete(Err(error)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replicated state.

/// A member as stored with its generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Subscription for the chosen protocol.
    pub subscription: Bytes,
    /// Assignment.
    pub assignment: Bytes,
}

/// A group's membership as of its last completed rebalance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMeta {
    /// Generation.
    pub generation: Generation,
    /// Protocol type ("" when the group is empty).
    pub protocol_type: String,
    /// Chosen assignor ("" when the group is empty).
    pub protocol: String,
    /// Leader's member id ("" when empty).
    pub leader: String,
    /// Members; empty for an empty group.
    pub members: Vec<StoredMember>,
}

/// One entry of a coordinator partition's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Offsets committed by a group.
    Offsets {
        /// The group.
        group_id: String,
        /// (topic, partition, offset).
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    /// A group's membership after a rebalance.
    Group {
        /// The group.
        group_id: String,
        /// Its membership.
        meta: GroupMeta,
    },
    /// A group and its offsets are deleted.
    Delete {
        /// The group.
        group_id: String,
    },
}

const VERSION: u8 = 1;

fn put_str(w: &mut Writer, s: &str) {
    w.bytes(s.as_bytes());
}

fn put_opt(w: &mut Writer, s: &Option<String>) {
    match s {
        Some(s) => {
            w.u8(1);
            put_str(w, s);
        }
        None => w.u8(0),
    }
}

fn get_str(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
}

fn get_opt(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(get_str(r)?)),
        _ => Err(DecodeError("bad option tag")),
    }
}

impl Command {
    /// Encodes the command for the log.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        match self {
            Self::Offsets { group_id, offsets } => {
                w.u8(1);
                put_str(&mut w, group_id);
                w.u32(offsets.len() as u32);
                for (topic, partition, o) in offsets {
                    put_str(&mut w, topic);
                    w.i32(*partition);
                    w.i64(o.offset);
                    w.i32(o.leader_epoch);
                    put_str(&mut w, &o.metadata);
                    w.i64(o.commit_time_ms);
                }
            }
            Self::Group { group_id, meta } => {
                w.u8(2);
                put_str(&mut w, group_id);
                w.i32(meta.generation.0);
                put_str(&mut w, &meta.protocol_type);
                put_str(&mut w, &meta.protocol);
                put_str(&mut w, &meta.leader);
                w.u32(meta.members.len() as u32);
                for m in &meta.members {
                    put_str(&mut w, &m.member_id);
                    put_opt(&mut w, &m.instance_id);
                    put_str(&mut w, &m.client_id);
                    put_str(&mut w, &m.client_host);
                    w.i32(m.session_timeout_ms);
                    w.i32(m.rebalance_timeout_ms);
                    w.bytes(&m.subscription);
                    w.bytes(&m.assignment);
                }
            }
            Self::Delete { group_id } => {
                w.u8(3);
                put_str(&mut w, group_id);
            }
        }
        w.bytes
    }

    /// Decodes a command written by [`Command::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown coordinator command version"));
        }
        let command = match r.u8()? {
            1 => {
                let group_id = get_str(&mut r)?;
                let count = r.u32()?;
                let mut offsets = Vec::new();
                for _ in 0..count {
                    let topic = get_str(&mut r)?;
                    let partition = r.i32()?;
                    let offset = CommittedOffset {
                        offset: r.i64()?,
                        leader_epoch: r.i32()?,
                        metadata: get_str(&mut r)?,
                        commit_time_ms: r.i64()?,
                    };
                    offsets.push((topic, partition, offset));
                }
                Self::Offsets { group_id, offsets }
            }
            2 => {
                let group_id = get_str(&mut r)?;
                let generation = Generation(r.i32()?);
                let protocol_type = get_str(&mut r)?;
                let protocol = get_str(&mut r)?;
                let leader = get_str(&mut r)?;
                let count = r.u32()?;
                let mut members = Vec::new();
                for _ in 0..count {
                    members.push(StoredMember {
                        member_id: get_str(&mut r)?,
                        instance_id: get_opt(&mut r)?,
                        client_id: get_str(&mut r)?,
                        client_host: get_str(&mut r)?,
                        session_timeout_ms: r.i32()?,
                        rebalance_timeout_ms: r.i32()?,
                        subscription: Bytes::copy_from_slice(r.bytes()?),
                        assignment: Bytes::copy_from_slice(r.bytes()?),
                    });
                }
                Self::Group {
                    group_id,
                    meta: GroupMeta {
                        generation,
                        protocol_type,
                        protocol,
                        leader,
                        members,
                    },
                }
            }
            3 => Self::Delete {
                group_id: get_str(&mut r)?,
            },
            _ => return Err(DecodeError("unknown coordinator command")),
        };
        r.finish()?;
        Ok(command)
    }
}

/// What one group has in the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredGroup {
    /// Its membership as of the last completed rebalance.
    pub meta: Option<GroupMeta>,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
}

/// The applied state of one coordinator partition: the same on every replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Groups by id.
    pub groups: BTreeMap<String, StoredGroup>,
}

impl StoredState {
    /// Encodes the state as the commands that rebuild it: per group its membership and its
    /// offsets, each once (a snapshot of the coordinator's log, compacted by key).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        let mut commands = Vec::new();
        for (group_id, group) in &self.groups {
            if let Some(meta) = &group.meta {
                commands.push(Command::Group {
                    group_id: group_id.clone(),
                    meta: meta.clone(),
                });
            }
            commands.push(Command::Offsets {
                group_id: group_id.clone(),
                offsets: group
                    .offsets
                    .iter()
                    .map(|((t, p), o)| (t.clone(), *p, o.clone()))
                    .collect(),
            });
        }
        w.u32(commands.len() as u32);
        for command in commands {
            w.bytes(&command.encode());
        }
        w.bytes
    }

    /// Decodes a state written by [`StoredState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown coordinator state version"));
        }
        let mut state = Self::default();
        for _ in 0..r.u32()? {
            state.apply(&Command::decode(r.bytes()?)?);
        }
        r.finish()?;
        Ok(state)
    }

    /// Applies one command.
    pub fn apply(&mut self, command: &Command) {
        match command {
            Command::Offsets { group_id, offsets } => {
                let group = self.groups.entry(group_id.clone()).or_default();
                for (topic, partition, offset) in offsets {
                    group
                        .offsets
                        .insert((topic.clone(), *partition), offset.clone());
                }
            }
            Command::Group { group_id, meta } => {
                let group = self.groups.entry(group_id.clone()).or_default();
                if let Some(old) = &group.meta {
                    assert!(
                        meta.generation >= old.generation,
                        "a group's stored generation never goes back"
                    );
                }
                group.meta = Some(meta.clone());
            }
            Command::Delete { group_id } => {
                self.groups.remove(group_id);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The leader's live state.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

#[derive(Debug)]
struct Member {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// The session expires here unless a heartbeat (or any request) comes first.
    deadline: Instant,
    awaiting_join: Option<RequestId>,
    awaiting_sync: Option<RequestId>,
}

impl Member {
    /// Answers the member's waiting JoinGroup and SyncGroup with `error`.
    fn fail_waiting(&mut self, error: GroupError, sink: &mut Sink) {
        if let Some(id) = self.awaiting_join.take() {
            reply(sink, id, GroupResponse::Join(Err(error.clone())));
        }
        if let Some(id) = self.awaiting_sync.take() {
            reply(sink, id, GroupResponse::Sync(Err(error)));
        }
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct LiveGroup {
    state: State,
    generation: Generation,
    protocol_type: String,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or this deadline.
    pending_members: BTreeMap<String, Instant>,
    /// Static instance id to its current member id.
    instances: BTreeMap<String, String>,
    /// In PreparingRebalance: when the barrier gives up on members that did not rejoin.
    rebalance_deadline: Option<Instant>,
    /// The leader's assignment is proposed for this generation and not yet applied.
    syncing: bool,
    /// Logs the group's rebalances (with its id).
    logger: slog::Logger,
}

impl LiveGroup {
    fn empty(logger: &slog::Logger, group_id: &str) -> Self {
        Self {
            logger: logger.new(slog::o!("consumer_group" => group_id.to_string())),
            state: State::Empty,
            generation: Generation(0),
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            instances: BTreeMap::new(),
            rebalance_deadline: None,
            syncing: false,
        }
    }

    fn from_stored(meta: &GroupMeta, now: Now, logger: &slog::Logger, group_id: &str) -> Self {
        let mut group = Self::empty(logger, group_id);
        group.generation = meta.generation;
        if meta.members.is_empty() {
            return group;
        }
        group.state = State::Stable;
        group.protocol_type = meta.protocol_type.clone();
        group.protocol = meta.protocol.clone();
        group.leader = meta.leader.clone();
        for m in &meta.members {
            if let Some(instance) = &m.instance_id {
                group
                    .instances
                    .insert(instance.clone(), m.member_id.clone());
            }
            group.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![(meta.protocol.clone(), m.subscription.clone())],
                    assignment: m.assignment.clone(),
                    deadline: now.mono.plus_ms(m.session_timeout_ms as u64),
                    awaiting_join: None,
                    awaiting_sync: None,
                },
            );
        }
        group
    }

    /// Assignors every member supports.
    fn common_protocols(&self) -> Option<BTreeSet<String>> {
        let mut common: Option<BTreeSet<String>> = None;
        for member in self.members.values() {
            let names: BTreeSet<String> = member.protocols.iter().map(|(n, _)| n.clone()).collect();
            common = Some(match common {
                None => names,
                Some(c) => c.intersection(&names).cloned().collect(),
            });
        }
        common
    }

    /// Each member votes for its most preferred common assignor; the most votes win (ties go
    /// to the name that sorts first, so every run picks the same).
    fn select_protocol(&self) -> String {
        let common = self.common_protocols().unwrap_or_default();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| common.contains(n)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        votes
            .into_iter()
            .find(|(_, v)| *v == best)
            .map(|(name, _)| name.to_string())
            .expect("members share an assignor (checked at join)")
    }

    fn meta(&self) -> GroupMeta {
        GroupMeta {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscription: m.metadata(&self.protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn invariants(&self) {
        assert!(self.members.len() <= MEMBERS_MAX);
        match self.state {
            State::Empty => assert!(self.members.is_empty()),
            _ => assert!(!self.members.is_empty() || self.state == State::PreparingRebalance),
        }
        if matches!(self.state, State::CompletingRebalance | State::Stable) {
            assert!(
                self.members.contains_key(&self.leader),
                "the leader is a member"
            );
        }
        assert_eq!(
            self.rebalance_deadline.is_some(),
            self.state == State::PreparingRebalance
        );
        for (instance, member) in &self.instances {
            let m = self.members.get(member).expect("instances map to members");
            assert_eq!(m.instance_id.as_deref(), Some(instance.as_str()));
        }
        for m in self.members.values() {
            if m.awaiting_join.is_some() {
                assert_eq!(self.state, State::PreparingRebalance);
            }
            if m.awaiting_sync.is_some() {
                assert_eq!(self.state, State::CompletingRebalance);
            }
        }
    }
}

/// The coordinator's live state while its partition's leader serves, for one term.
#[derive(Debug)]
struct Live {
    term: Term,
    logger: slog::Logger,
    /// Counter for member ids handed out in this term.
    next_member: u64,
    groups: BTreeMap<String, LiveGroup>,
}

#[derive(Debug)]
enum Waiting {
    /// An OffsetCommit or DeleteGroups answer.
    Answer { id: RequestId, op: WaitingOp },
    /// The leader's assignment for this generation: SyncGroup answers follow.
    Assignment {
        group_id: String,
        generation: Generation,
    },
    /// A record nobody waits for (an empty group's generation).
    Nothing,
}

#[derive(Debug, Clone, Copy)]
enum WaitingOp {
    OffsetCommit,
    Delete,
}

impl WaitingOp {
    fn answer(self, result: Result<(), GroupError>) -> GroupResponse {
        match self {
            Self::OffsetCommit => GroupResponse::OffsetCommit(result),
            Self::Delete => GroupResponse::Delete(result),
        }
    }
}

#[derive(Debug)]
struct Proposal {
    index: RaftIndex,
    term: Term,
    deadline: Instant,
    waiting: Waiting,
}

/// What the coordinator needs from its partition's replica.
pub(crate) trait CommandLog {
    /// The term this node leads and serves in, if it does.
    fn serving(&self) -> Option<Term>;
    /// Proposes an entry; its index and term, or `None` if it cannot.
    fn propose(&mut self, data: Bytes) -> Option<(RaftIndex, Term)>;
}

/// One coordinator partition on one node.
#[derive(Debug)]
pub struct Coordinator {
    stored: StoredState,
    /// The log index `stored` is at.
    applied: RaftIndex,
    live: Option<Live>,
    proposals: VecDeque<Proposal>,
    proposals_max: usize,
    node: u64,
    logger: slog::Logger,
    /// Planted bug `assignment-to-all` (see `PlantedBugs`).
    pub(crate) planted_assignment_to_all: bool,
}

/// How long an answer waits for its entry to apply.
const PROPOSAL_TIMEOUT_MS: u64 = 5_000;

impl Coordinator {
    /// A coordinator with nothing applied yet, on node `node`.
    pub fn new(node: u64, proposals_max: usize, logger: &slog::Logger) -> Self {
        Self {
            logger: logger.clone(),
            planted_assignment_to_all: false,
            stored: StoredState::default(),
            applied: RaftIndex(0),
            live: None,
            proposals: VecDeque::new(),
            proposals_max,
            node,
        }
    }

    /// The applied state.
    pub fn stored(&self) -> &StoredState {
        &self.stored
    }

    /// The log index the applied state is at.
    pub fn applied(&self) -> RaftIndex {
        self.applied
    }

    /// A snapshot replaced the log up to `index`: its state replaces ours. Answers waiting on
    /// entries it covers are unknown (the entries may or may not be in it).
    pub(crate) fn restore(&mut self, index: RaftIndex, state: &[u8], sink: &mut Sink) {
        assert!(index > self.applied, "snapshots move forward");
        self.stored = StoredState::decode(state).expect("snapshot data is checksummed");
        self.applied = index;
        while self.proposals.front().is_some_and(|p| p.index <= index) {
            let p = self.proposals.pop_front().expect("checked");
            if let Waiting::Answer { id, op } = p.waiting {
                reply(sink, id, op.answer(Err(GroupError::TimedOut)));
            }
        }
    }

    /// Applies one entry of the partition's log (an empty one is a leader's no-op) and
    /// answers what waited on it.
    pub(crate) fn apply(
        &mut self,
        index: RaftIndex,
        term: Term,
        data: &[u8],
        now: Now,
        sink: &mut Sink,
    ) {
        assert_eq!(index.0, self.applied.0 + 1, "entries apply in order, once");
        self.applied = index;
        let command = if data.is_empty() {
            None
        } else {
            let command = Command::decode(data)
                .expect("coordinator entries are encoded by the leader that proposed them");
            self.stored.apply(&command);
            Some(command)
        };
        if let Some(Command::Delete { group_id }) = &command {
            if let Some(live) = &mut self.live {
                if live
                    .groups
                    .get(group_id)
                    .is_some_and(|g| g.state == State::Empty)
                {
                    live.groups.remove(group_id);
                }
            }
        }
        while self.proposals.front().is_some_and(|p| p.index <= index) {
            let p = self.proposals.pop_front().expect("checked");
            let ours = p.index == index && p.term == term;
            match p.waiting {
                Waiting::Answer { id, op } => {
                    let result = if ours {
                        Ok(())
                    } else {
                        Err(GroupError::NotCoordinator)
                    };
                    reply(sink, id, op.answer(result));
                }
                Waiting::Assignment {
                    group_id,
                    generation,
                } => self.assignment_applied(&group_id, generation, ours, now, sink),
                Waiting::Nothing => {}
            }
        }
    }

    fn assignment_applied(
        &mut self,
        group_id: &str,
        generation: Generation,
        ours: bool,
        now: Now,
        sink: &mut Sink,
    ) {
        let Some(live) = &mut self.live else { return };
        let Some(group) = live.groups.get_mut(group_id) else {
            return;
        };
        if group.generation != generation || group.state != State::CompletingRebalance {
            return;
        }
        group.syncing = false;
        if !ours {
            // Lost to another leader's entry; this node is about to stop coordinating.
            return;
        }
        let stored = self
            .stored
            .groups
            .get(group_id)
            .and_then(|g| g.meta.as_ref())
            .expect("just applied");
        group.state = State::Stable;
        slog::info!(group.logger, "group is stable"; "generation" => generation.0,
            "members" => group.members.len());
        let leader_assignment = self.planted_assignment_to_all.then(|| {
            stored
                .members
                .iter()
                .find(|m| m.member_id == stored.leader)
                .map(|m| m.assignment.clone())
                .unwrap_or_default()
        });
        for stored_member in &stored.members {
            if let Some(member) = group.members.get_mut(&stored_member.member_id) {
                member.assignment = leader_assignment
                    .clone()
                    .unwrap_or_else(|| stored_member.assignment.clone());
            }
        }
        for member in group.members.values_mut() {
            member.deadline = now.mono.plus_ms(member.session_timeout_ms as u64);
            if let Some(id) = member.awaiting_sync.take() {
                sink.reply(
                    id,
                    Response::Group(GroupResponse::Sync(Ok(SyncAnswer {
                        protocol_type: group.protocol_type.clone(),
                        protocol: group.protocol.clone(),
                        assignment: member.assignment.clone(),
                    }))),
                );
            }
        }
    }

    /// Follows the partition's leadership: builds the live state when this node starts
    /// serving a term, and answers everything waiting in it when it stops.
    pub(crate) fn observe(&mut self, serving: Option<Term>, now: Now, sink: &mut Sink) {
        if self.live.as_ref().map(|l| l.term) == serving {
            return;
        }
        if let Some(live) = self.live.take() {
            for group in live.groups.into_values() {
                for mut member in group.members.into_values() {
                    member.fail_waiting(GroupError::NotCoordinator, sink);
                }
            }
        }
        if let Some(term) = serving {
            let groups = self
                .stored
                .groups
                .iter()
                .map(|(id, g)| {
                    let live = match &g.meta {
                        Some(meta) => LiveGroup::from_stored(meta, now, &self.logger, id),
                        None => LiveGroup::empty(&self.logger, id),
                    };
                    (id.clone(), live)
                })
                .collect();
            self.live = Some(Live {
                term,
                logger: self.logger.clone(),
                next_member: 0,
                groups,
            });
        }
    }

    /// Expires sessions, pending member ids, rebalance barriers and waiting answers.
    pub(crate) fn tick(&mut self, log: &mut dyn CommandLog, now: Now, sink: &mut Sink) {
        while self
            .proposals
            .front()
            .is_some_and(|p| p.deadline <= now.mono)
        {
            let p = self.proposals.pop_front().expect("checked");
            if let Waiting::Answer { id, op } = p.waiting {
                reply(sink, id, op.answer(Err(GroupError::TimedOut)));
            }
        }
        let Some(live) = &mut self.live else { return };
        let ids: Vec<String> = live.groups.keys().cloned().collect();
        for group_id in ids {
            let group = live.groups.get_mut(&group_id).expect("listed");
            group
                .pending_members
                .retain(|_, deadline| *deadline > now.mono);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    m.deadline <= now.mono && m.awaiting_join.is_none() && m.awaiting_sync.is_none()
                })
                .map(|m| m.member_id.clone())
                .collect();
            for member_id in expired {
                slog::info!(group.logger, "member's session expired"; "member" => &member_id);
                remove_member(group, &member_id, now, sink);
            }
            if group.state == State::PreparingRebalance {
                let timed_out = group.rebalance_deadline.is_some_and(|d| d <= now.mono);
                if timed_out || all_joined(group) {
                    let proposal = complete_join(group, &group_id, now, sink);
                    if let Some(data) = proposal {
                        propose(
                            log,
                            &mut self.proposals,
                            self.proposals_max,
                            data,
                            now,
                            Waiting::Nothing,
                        );
                    }
                }
            }
            if group.state == State::Empty && group.pending_members.is_empty() {
                // An empty group without stored state is forgotten; one with offsets or a
                // generation is rebuilt from the stored state when needed.
                if !self.stored.groups.contains_key(&group_id) {
                    live.groups.remove(&group_id);
                }
            }
        }
    }

    /// Handles one request for a group this partition coordinates.
    pub(crate) fn handle(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: RequestId,
        op: GroupOp,
        sink: &mut Sink,
    ) {
        let group_id = op.group_id();
        if group_id.is_empty() || group_id.len() > ID_MAX {
            return reply(
                sink,
                id,
                GroupResponse::failed(&op, GroupError::InvalidGroupId),
            );
        }
        let Some(live) = self.live.as_mut().filter(|l| log.serving() == Some(l.term)) else {
            return reply(
                sink,
                id,
                GroupResponse::failed(&op, GroupError::NotCoordinator),
            );
        };
        match op {
            GroupOp::Join(join) => {
                let node = self.node;
                let result = join_group(live, node, now, id, join, sink);
                if let Some(group_id) = result {
                    self.after_change(log, &group_id, now, sink);
                }
            }
            GroupOp::Sync(sync) => self.sync_group(log, now, id, sync, sink),
            GroupOp::Heartbeat(hb) => {
                let result = heartbeat(live, now, &hb);
                reply(sink, id, GroupResponse::Heartbeat(result));
            }
            GroupOp::Leave(leave) => {
                let result = leave_group(live, &leave, now, sink);
                reply(sink, id, GroupResponse::Leave(result));
                self.after_change(log, &leave.group_id, now, sink);
            }
            GroupOp::OffsetCommit(commit) => self.offset_commit(log, now, id, commit, sink),
            GroupOp::OffsetFetch {
                group_id,
                partitions,
            } => {
                let stored = self.stored.groups.get(&group_id);
                let answer = match partitions {
                    Some(partitions) => partitions
                        .into_iter()
                        .map(|(topic, partition)| {
                            let offset = stored
                                .and_then(|g| g.offsets.get(&(topic.clone(), partition)))
                                .cloned();
                            (topic, partition, offset)
                        })
                        .collect(),
                    None => stored
                        .map(|g| {
                            g.offsets
                                .iter()
                                .map(|((t, p), o)| (t.clone(), *p, Some(o.clone())))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                reply(sink, id, GroupResponse::OffsetFetch(Ok(answer)));
            }
            GroupOp::Describe { group_id } => {
                let description = match live.groups.get(&group_id) {
                    Some(group) => GroupDescription {
                        state: group.state.name(),
                        protocol_type: group.protocol_type.clone(),
                        protocol: group.protocol.clone(),
                        members: group
                            .members
                            .values()
                            .map(|m| MemberDescription {
                                member_id: m.member_id.clone(),
                                instance_id: m.instance_id.clone(),
                                client_id: m.client_id.clone(),
                                client_host: m.client_host.clone(),
                                metadata: m.metadata(&group.protocol),
                                assignment: m.assignment.clone(),
                            })
                            .collect(),
                    },
                    None => GroupDescription {
                        state: "Dead",
                        protocol_type: String::new(),
                        protocol: String::new(),
                        members: Vec::new(),
                    },
                };
                reply(sink, id, GroupResponse::Describe(Ok(description)));
            }
            GroupOp::Delete { group_id } => {
                let exists = live.groups.contains_key(&group_id)
                    || self.stored.groups.contains_key(&group_id);
                let error = match live.groups.get(&group_id) {
                    _ if !exists => Some(GroupError::GroupIdNotFound),
                    Some(group) if group.state != State::Empty => Some(GroupError::NonEmptyGroup),
                    _ => None,
                };
                if let Some(error) = error {
                    return reply(sink, id, GroupResponse::Delete(Err(error)));
                }
                let data = Command::Delete { group_id }.encode();
                self.propose_answer(log, now, id, data, WaitingOp::Delete, sink);
            }
        }
    }

    /// After a join or leave changed a group: complete its rebalance if everyone is in.
    fn after_change(
        &mut self,
        log: &mut dyn CommandLog,
        group_id: &str,
        now: Now,
        sink: &mut Sink,
    ) {
        let Some(live) = &mut self.live else { return };
        let Some(group) = live.groups.get_mut(group_id) else {
            return;
        };
        if group.state == State::PreparingRebalance && all_joined(group) {
            if let Some(data) = complete_join(group, group_id, now, sink) {
                propose(
                    log,
                    &mut self.proposals,
                    self.proposals_max,
                    data,
                    now,
                    Waiting::Nothing,
                );
            }
        }
    }

    fn propose_answer(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: RequestId,
        data: Vec<u8>,
        op: WaitingOp,
        sink: &mut Sink,
    ) {
        let failed = |error| op.answer(Err(error));
        if self.proposals.len() >= self.proposals_max {
            return reply(sink, id, failed(GroupError::CoordinatorNotAvailable));
        }
        let waiting = Waiting::Answer { id, op };
        if !propose(
            log,
            &mut self.proposals,
            self.proposals_max,
            data,
            now,
            waiting,
        ) {
            reply(sink, id, failed(GroupError::NotCoordinator));
        }
    }

    fn offset_commit(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: RequestId,
        commit: OffsetCommit,
        sink: &mut Sink,
    ) {
        let live = self.live.as_mut().expect("serving");
        let fail = |sink: &mut Sink, e| reply(sink, id, GroupResponse::OffsetCommit(Err(e)));
        if commit
            .offsets
            .iter()
            .any(|(_, _, _, _, metadata)| metadata.len() > OFFSET_METADATA_MAX)
        {
            return fail(sink, GroupError::OffsetMetadataTooLarge);
        }
        match live.groups.get_mut(&commit.group_id) {
            None if commit.generation.0 < 0 => {
                if live.groups.len() >= GROUPS_MAX {
                    return fail(sink, GroupError::CoordinatorNotAvailable);
                }
                live.groups.insert(
                    commit.group_id.clone(),
                    LiveGroup::empty(&self.logger, &commit.group_id),
                );
            }
            None => return fail(sink, GroupError::IllegalGeneration),
            Some(group) if commit.generation.0 < 0 && group.state == State::Empty => {}
            Some(group) => {
                if let Err(e) = check_member(
                    group,
                    &commit.member_id,
                    &commit.instance_id,
                    commit.generation,
                ) {
                    return fail(sink, e);
                }
                if group.state == State::CompletingRebalance {
                    return fail(sink, GroupError::RebalanceInProgress);
                }
                let member = group.members.get_mut(&commit.member_id).expect("checked");
                member.deadline = now.mono.plus_ms(member.session_timeout_ms as u64);
            }
        }
        let offsets = commit
            .offsets
            .into_iter()
            .map(|(topic, partition, offset, leader_epoch, metadata)| {
                (
                    topic,
                    partition,
                    CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_time_ms: now.wall_ms,
                    },
                )
            })
            .collect();
        let data = Command::Offsets {
            group_id: commit.group_id,
            offsets,
        }
        .encode();
        self.propose_answer(log, now, id, data, WaitingOp::OffsetCommit, sink);
    }

    fn sync_group(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: RequestId,
        sync: SyncGroup,
        sink: &mut Sink,
    ) {
        let live = self.live.as_mut().expect("serving");
        let fail = |sink: &mut Sink, e| reply(sink, id, GroupResponse::Sync(Err(e)));
        let Some(group) = live.groups.get_mut(&sync.group_id) else {
            return fail(sink, GroupError::UnknownMemberId);
        };
        if let Err(e) = check_member(group, &sync.member_id, &sync.instance_id, sync.generation) {
            return fail(sink, e);
        }
        match group.state {
            State::Empty => fail(sink, GroupError::UnknownMemberId),
            State::PreparingRebalance => fail(sink, GroupError::RebalanceInProgress),
            State::Stable => {
                let member = group.members.get_mut(&sync.member_id).expect("checked");
                member.deadline = now.mono.plus_ms(member.session_timeout_ms as u64);
                let answer = SyncAnswer {
                    protocol_type: group.protocol_type.clone(),
                    protocol: group.protocol.clone(),
                    assignment: member.assignment.clone(),
                };
                reply(sink, id, GroupResponse::Sync(Ok(answer)));
            }
            State::CompletingRebalance => {
                let member = group.members.get_mut(&sync.member_id).expect("checked");
                member.deadline = now.mono.plus_ms(member.session_timeout_ms as u64);
                if let Some(old) = member.awaiting_sync.replace(id) {
                    reply(
                        sink,
                        old,
                        GroupResponse::Sync(Err(GroupError::RebalanceInProgress)),
                    );
                }
                if sync.member_id != group.leader || group.syncing {
                    return;
                }
                let assignments: BTreeMap<String, Bytes> = sync.assignments.into_iter().collect();
                for member in group.members.values_mut() {
                    member.assignment = assignments
                        .get(&member.member_id)
                        .cloned()
                        .unwrap_or_default();
                }
                let data = Command::Group {
                    group_id: sync.group_id.clone(),
                    meta: group.meta(),
                }
                .encode();
                let generation = group.generation;
                group.syncing = true;
                let waiting = Waiting::Assignment {
                    group_id: sync.group_id.clone(),
                    generation,
                };
                if !propose(
                    log,
                    &mut self.proposals,
                    self.proposals_max,
                    data,
                    now,
                    waiting,
                ) {
                    group.syncing = false;
                    let member = group.members.get_mut(&sync.member_id).expect("checked");
                    member.awaiting_sync = None;
                    fail(sink, GroupError::NotCoordinator);
                }
            }
        }
    }

    /// Groups this coordinator serves, for ListGroups.
    pub(crate) fn list(&self) -> Vec<ListedGroup> {
        let Some(live) = &self.live else {
            return Vec::new();
        };
        live.groups
            .iter()
            .map(|(id, g)| ListedGroup {
                group_id: id.clone(),
                protocol_type: g.protocol_type.clone(),
                state: g.state.name(),
            })
            .collect()
    }

    /// Asserts the coordinator's invariants.
    pub fn invariants(&self) {
        assert!(self.proposals.len() <= self.proposals_max);
        for pair in self.proposals.iter().collect::<Vec<_>>().windows(2) {
            assert!(pair[0].index < pair[1].index, "proposals in log order");
        }
        if let Some(live) = &self.live {
            assert!(live.groups.len() <= GROUPS_MAX);
            for (id, group) in &live.groups {
                group.invariants();
                if let Some(meta) = self.stored.groups.get(id).and_then(|g| g.meta.as_ref()) {
                    assert!(
                        group.generation >= meta.generation,
                        "the live generation is never behind the stored one"
                    );
                }
            }
        }
    }
}

fn reply(sink: &mut Sink, id: RequestId, response: GroupResponse) {
    sink.reply(id, Response::Group(response));
}

/// Proposes `data`; false if the log refused it (not leading) or too many wait already.
fn propose(
    log: &mut dyn CommandLog,
    proposals: &mut VecDeque<Proposal>,
    proposals_max: usize,
    data: Vec<u8>,
    now: Now,
    waiting: Waiting,
) -> bool {
    if proposals.len() >= proposals_max {
        return false;
    }
    match log.propose(Bytes::from(data)) {
        Some((index, term)) => {
            proposals.push_back(Proposal {
                index,
                term,
                deadline: now.mono.plus_ms(PROPOSAL_TIMEOUT_MS),
                waiting,
            });
            true
        }
        None => false,
    }
}

/// Checks that a request comes from a current member of the current generation.
fn check_member(
    group: &LiveGroup,
    member_id: &str,
    instance_id: &Option<String>,
    generation: Generation,
) -> Result<(), GroupError> {
    if let Some(instance) = instance_id {
        match group.instances.get(instance) {
            Some(current) if current != member_id => return Err(GroupError::FencedInstanceId),
            _ => {}
        }
    }
    if !group.members.contains_key(member_id) {
        return Err(GroupError::UnknownMemberId);
    }
    if generation != group.generation {
        return Err(GroupError::IllegalGeneration);
    }
    Ok(())
}

fn heartbeat(live: &mut Live, now: Now, hb: &Heartbeat) -> Result<(), GroupError> {
    let group = live
        .groups
        .get_mut(&hb.group_id)
        .ok_or(GroupError::UnknownMemberId)?;
    if group.state == State::Empty {
        return Err(GroupError::UnknownMemberId);
    }
    if let Some(instance) = &hb.instance_id {
        if group
            .instances
            .get(instance)
            .is_some_and(|m| *m != hb.member_id)
        {
            return Err(GroupError::FencedInstanceId);
        }
    }
    let member = group
        .members
        .get_mut(&hb.member_id)
        .ok_or(GroupError::UnknownMemberId)?;
    member.deadline = now.mono.plus_ms(member.session_timeout_ms as u64);
    if group.state == State::PreparingRebalance {
        return Err(GroupError::RebalanceInProgress);
    }
    if hb.generation != group.generation {
        return Err(GroupError::IllegalGeneration);
    }
    Ok(())
}

fn all_joined(group: &LiveGroup) -> bool {
    group.pending_members.is_empty() && group.members.values().all(|m| m.awaiting_join.is_some())
}

/// Starts a rebalance: members must join again before the barrier lifts.
fn prepare_rebalance(group: &mut LiveGroup, now: Now, sink: &mut Sink) {
    if group.state == State::CompletingRebalance {
        for member in group.members.values_mut() {
            if let Some(id) = member.awaiting_sync.take() {
                reply(
                    sink,
                    id,
                    GroupResponse::Sync(Err(GroupError::RebalanceInProgress)),
                );
            }
        }
        group.syncing = false;
    }
    if group.state != State::PreparingRebalance {
        let timeout = group
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
            .max(0);
        group.state = State::PreparingRebalance;
        group.rebalance_deadline = Some(now.mono.plus_ms(timeout as u64));
        slog::info!(group.logger, "preparing rebalance"; "generation" => group.generation.0,
            "members" => group.members.len());
    }
}

/// Lifts the barrier: members that did not rejoin are dropped, the generation advances, every
/// joined member gets its answer. Returns the record of an empty group's generation to store.
fn complete_join(
    group: &mut LiveGroup,
    group_id: &str,
    now: Now,
    sink: &mut Sink,
) -> Option<Vec<u8>> {
    assert_eq!(group.state, State::PreparingRebalance);
    let absent: Vec<String> = group
        .members
        .values()
        .filter(|m| m.awaiting_join.is_none())
        .map(|m| m.member_id.clone())
        .collect();
    for member_id in absent {
        slog::info!(group.logger, "member did not rejoin in time"; "member" => &member_id);
        forget_member(group, &member_id);
    }
    group.pending_members.clear();
    group.rebalance_deadline = None;
    group.generation = Generation(group.generation.0.wrapping_add(1).max(1));
    if group.members.is_empty() {
        group.state = State::Empty;
        slog::info!(group.logger, "group is empty"; "generation" => group.generation.0);
        group.protocol_type.clear();
        group.protocol.clear();
        group.leader.clear();
        return Some(
            Command::Group {
                group_id: group_id.to_string(),
                meta: group.meta(),
            }
            .encode(),
        );
    }
    group.state = State::CompletingRebalance;
    group.protocol = group.select_protocol();
    if !group.members.contains_key(&group.leader) {
        group.leader = group.members.keys().next().expect("not empty").clone();
    }
    slog::info!(group.logger, "members joined"; "generation" => group.generation.0,
        "members" => group.members.len(), "leader" => &group.leader,
        "protocol" => &group.protocol);
    let everyone: Vec<JoinedMember> = group
        .members
        .values()
        .map(|m| JoinedMember {
            member_id: m.member_id.clone(),
            instance_id: m.instance_id.clone(),
            metadata: m.metadata(&group.protocol),
        })
        .collect();
    for member in group.members.values_mut() {
        member.deadline = now.mono.plus_ms(member.session_timeout_ms as u64);
        let id = member.awaiting_join.take().expect("every member rejoined");
        let answer = JoinAnswer {
            generation: group.generation,
            protocol_type: group.protocol_type.clone(),
            protocol: group.protocol.clone(),
            leader: group.leader.clone(),
            member_id: member.member_id.clone(),
            members: if member.member_id == group.leader {
                everyone.clone()
            } else {
                Vec::new()
            },
        };
        reply(sink, id, GroupResponse::Join(Ok(answer)));
    }
    None
}

fn forget_member(group: &mut LiveGroup, member_id: &str) {
    if let Some(member) = group.members.remove(member_id) {
        if let Some(instance) = &member.instance_id {
            if group.instances.get(instance).map(String::as_str) == Some(member_id) {
                group.instances.remove(instance);
            }
        }
    }
}

/// A member left or its session expired.
fn remove_member(group: &mut LiveGroup, member_id: &str, now: Now, sink: &mut Sink) {
    let Some(member) = group.members.get_mut(member_id) else {
        return;
    };
    member.fail_waiting(GroupError::UnknownMemberId, sink);
    forget_member(group, member_id);
    match group.state {
        State::Empty => {}
        // Kafka starts a rebalance even when the last member leaves; completing it with no
        // members makes the group Empty with a new generation.
        State::Stable | State::CompletingRebalance | State::PreparingRebalance => {
            prepare_rebalance(group, now, sink)
        }
    }
}

fn leave_group(
    live: &mut Live,
    leave: &LeaveGroup,
    now: Now,
    sink: &mut Sink,
) -> Result<Vec<Result<(), GroupError>>, GroupError> {
    let group = live
        .groups
        .get_mut(&leave.group_id)
        .ok_or(GroupError::UnknownMemberId)?;
    let mut results = Vec::new();
    for (member_id, instance_id) in &leave.members {
        let target = match instance_id {
            Some(instance) => match group.instances.get(instance) {
                None => Err(GroupError::UnknownMemberId),
                Some(current) if !member_id.is_empty() && current != member_id => {
                    Err(GroupError::FencedInstanceId)
                }
                Some(current) => Ok(current.clone()),
            },
            None if group.members.contains_key(member_id) => Ok(member_id.clone()),
            None if group.pending_members.remove(member_id).is_some() => {
                results.push(Ok(()));
                continue;
            }
            None => Err(GroupError::UnknownMemberId),
        };
        results.push(target.map(|member_id| remove_member(group, &member_id, now, sink)));
    }
    Ok(results)
}

/// JoinGroup. Returns the group id when the join may have completed the barrier.
fn join_group(
    live: &mut Live,
    node: u64,
    now: Now,
    id: RequestId,
    join: JoinGroup,
    sink: &mut Sink,
) -> Option<String> {
    let fail = |sink: &mut Sink, e| {
        reply(sink, id, GroupResponse::Join(Err(e)));
        None
    };
    let group_id = join.group_id.clone();
    if !(SESSION_TIMEOUT_MIN_MS..=SESSION_TIMEOUT_MAX_MS).contains(&join.session_timeout_ms) {
        return fail(sink, GroupError::InvalidSessionTimeout);
    }
    if join.protocol_type.is_empty()
        || join.protocols.is_empty()
        || join.member_id.len() > ID_MAX
        || join
            .instance_id
            .as_ref()
            .is_some_and(|i| i.is_empty() || i.len() > ID_MAX)
    {
        return fail(sink, GroupError::InconsistentGroupProtocol);
    }
    if !live.groups.contains_key(&join.group_id) {
        if !join.member_id.is_empty() {
            return fail(sink, GroupError::UnknownMemberId);
        }
        if live.groups.len() >= GROUPS_MAX {
            return fail(sink, GroupError::CoordinatorNotAvailable);
        }
        let group = LiveGroup::empty(&live.logger, &join.group_id);
        live.groups.insert(join.group_id.clone(), group);
    }
    let term = live.term;
    let group = live.groups.get_mut(&join.group_id).expect("present");
    // The member's protocols must fit the group's.
    if group.state != State::Empty {
        let names: BTreeSet<String> = join.protocols.iter().map(|(n, _)| n.clone()).collect();
        let fits = group.protocol_type == join.protocol_type
            && group
                .common_protocols()
                .is_none_or(|common| common.intersection(&names).next().is_some());
        if !fits {
            return fail(sink, GroupError::InconsistentGroupProtocol);
        }
    }
    let new_member_id = |live_next: &mut u64| {
        *live_next += 1;
        format!(
            "{}-{}-{}-{}",
            if join.client_id.is_empty() {
                "member"
            } else {
                &join.client_id
            },
            node,
            term.0,
            live_next
        )
    };
    let mut member_id = join.member_id.clone();
    if let Some(instance) = &join.instance_id {
        match group.instances.get(instance).cloned() {
            Some(current) if !member_id.is_empty() && current != member_id => {
                return fail(sink, GroupError::FencedInstanceId);
            }
            Some(current) if member_id.is_empty() => {
                // A static member restarted: it takes over its old identity's place; the old
                // member id is fenced.
                member_id = new_member_id(&mut live.next_member);
                let group = live.groups.get_mut(&join.group_id).expect("present");
                let mut member = group
                    .members
                    .remove(&current)
                    .expect("instances map to members");
                member.fail_waiting(GroupError::FencedInstanceId, sink);
                member.member_id = member_id.clone();
                if group.leader == current {
                    group.leader = member_id.clone();
                }
                group.instances.insert(instance.clone(), member_id.clone());
                group.members.insert(member_id.clone(), member);
                return rejoin(group, &group_id, member_id, join, now, id, sink);
            }
            Some(_) => {
                let group = live.groups.get_mut(&join.group_id).expect("present");
                return rejoin(group, &group_id, member_id, join, now, id, sink);
            }
            None => {
                if member_id.is_empty() {
                    member_id = new_member_id(&mut live.next_member);
                }
                let group = live.groups.get_mut(&join.group_id).expect("present");
                return add_member(group, &group_id, member_id, join, now, id, sink);
            }
        }
    }
    if member_id.is_empty() {
        let member_id = new_member_id(&mut live.next_member);
        let group = live.groups.get_mut(&join.group_id).expect("present");
        if join.require_known_member_id {
            if group.members.len() + group.pending_members.len() >= MEMBERS_MAX {
                return fail(sink, GroupError::GroupMaxSizeReached);
            }
            group.pending_members.insert(
                member_id.clone(),
                now.mono.plus_ms(join.session_timeout_ms as u64),
            );
            return fail(sink, GroupError::MemberIdRequired(member_id));
        }
        return add_member(group, &group_id, member_id, join, now, id, sink);
    }
    if group.pending_members.remove(&member_id).is_some() {
        return add_member(group, &group_id, member_id, join, now, id, sink);
    }
    if !group.members.contains_key(&member_id) {
        return fail(sink, GroupError::UnknownMemberId);
    }
    rejoin(group, &group_id, member_id, join, now, id, sink)
}

fn add_member(
    group: &mut LiveGroup,
    group_id: &str,
    member_id: String,
    join: JoinGroup,
    now: Now,
    id: RequestId,
    sink: &mut Sink,
) -> Option<String> {
    if group.members.len() >= MEMBERS_MAX {
        reply(
            sink,
            id,
            GroupResponse::Join(Err(GroupError::GroupMaxSizeReached)),
        );
        return None;
    }
    if group.members.is_empty() {
        group.protocol_type = join.protocol_type.clone();
    }
    if let Some(instance) = &join.instance_id {
        group.instances.insert(instance.clone(), member_id.clone());
    }
    group.members.insert(
        member_id.clone(),
        Member {
            member_id,
            instance_id: join.instance_id,
            client_id: join.client_id,
            client_host: join.client_host,
            session_timeout_ms: join.session_timeout_ms,
            rebalance_timeout_ms: join.rebalance_timeout_ms,
            protocols: join.protocols,
            assignment: Bytes::new(),
            deadline: now.mono.plus_ms(join.session_timeout_ms as u64),
            awaiting_join: Some(id),
            awaiting_sync: None,
        },
    );
    prepare_rebalance(group, now, sink);
    Some(group_id.to_string())
}

/// A known member joins again.
fn rejoin(
    group: &mut LiveGroup,
    group_id: &str,
    member_id: String,
    join: JoinGroup,
    now: Now,
    id: RequestId,
    sink: &mut Sink,
) -> Option<String> {
    let state = group.state;
    let is_leader = group.leader == member_id;
    let member = group.members.get_mut(&member_id).expect("a known member");
    let same_protocols = member.protocols == join.protocols;
    member.deadline = now.mono.plus_ms(join.session_timeout_ms as u64);
    member.session_timeout_ms = join.session_timeout_ms;
    member.rebalance_timeout_ms = join.rebalance_timeout_ms;
    member.client_id = join.client_id;
    member.client_host = join.client_host;
    member.protocols = join.protocols;
    let current = |group: &LiveGroup, member_id: &str| JoinAnswer {
        generation: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol: group.protocol.clone(),
        leader: group.leader.clone(),
        member_id: member_id.to_string(),
        members: if group.leader == member_id {
            group
                .members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata(&group.protocol),
                })
                .collect()
        } else {
            Vec::new()
        },
    };
    match state {
        State::PreparingRebalance => {
            if let Some(old) = member.awaiting_join.replace(id) {
                reply(
                    sink,
                    old,
                    GroupResponse::Join(Err(GroupError::RebalanceInProgress)),
                );
            }
            Some(group_id.to_string())
        }
        State::CompletingRebalance | State::Stable
            if same_protocols && !(is_leader && state == State::Stable) =>
        {
            // Nothing changed: the member gets the current generation again.
            let answer = current(group, &member_id);
            reply(sink, id, GroupResponse::Join(Ok(answer)));
            None
        }
        State::CompletingRebalance | State::Stable => {
            member.awaiting_join = Some(id);
            prepare_rebalance(group, now, sink);
            Some(group_id.to_string())
        }
        State::Empty => {
            reply(
                sink,
                id,
                GroupResponse::Join(Err(GroupError::UnknownMemberId)),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_follows_java_string_hash() {
        // "my-group".hashCode() = 1_239_930_148 in Java; "" hashes to 0.
        assert_eq!(partition_for("", 50), 0);
        let mut h: i32 = 0;
        for c in "my-group".chars() {
            h = h.wrapping_mul(31).wrapping_add(c as i32);
        }
        assert_eq!(
            partition_for("my-group", 50),
            h.unsigned_abs() as usize % 50
        );
        // Java: "polygenelubricants".hashCode() == Integer.MIN_VALUE, which Kafka maps to 0.
        assert_eq!(partition_for("polygenelubricants", 7), 0);
    }

    #[test]
    fn commands_round_trip() {
        let commands = vec![
            Command::Offsets {
                group_id: "g".into(),
                offsets: vec![(
                    "t".into(),
                    3,
                    CommittedOffset {
                        offset: 42,
                        leader_epoch: 7,
                        metadata: "m".into(),
                        commit_time_ms: 1000,
                    },
                )],
            },
            Command::Group {
                group_id: "g".into(),
                meta: GroupMeta {
                    generation: Generation(3),
                    protocol_type: "consumer".into(),
                    protocol: "range".into(),
                    leader: "a".into(),
                    members: vec![StoredMember {
                        member_id: "a".into(),
                        instance_id: Some("i".into()),
                        client_id: "c".into(),
                        client_host: "/1.2.3.4".into(),
                        session_timeout_ms: 10_000,
                        rebalance_timeout_ms: 30_000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"asg"),
                    }],
                },
            },
            Command::Delete {
                group_id: "g".into(),
            },
        ];
        for command in commands {
            let bytes = command.encode();
            assert_eq!(Command::decode(&bytes).unwrap(), command);
            assert!(Command::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }
}
