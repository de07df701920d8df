//! What a group coordinator is asked and what it answers: [`GroupOp`] and the requests it
//! carries (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, ...), their answers,
//! [`GroupResponse`], and [`GroupError`] with its Kafka error codes.

use bytes::Bytes;

use super::command::CommittedOffset;
use crate::ids::{Generation, ProducerEpoch, ProducerId};
use crate::txn::TxnError;

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
    /// TxnOffsetCommit: offsets committed with a transaction, pending until its marker.
    TxnOffsetCommit(TxnOffsetCommit),
    /// OffsetFetch: the partitions asked, or every partition with a committed offset.
    OffsetFetch {
        /// The group.
        group_id: String,
        /// `None` for all.
        partitions: Option<Vec<(String, i32)>>,
        /// OffsetFetch v7+ (KIP-447): a partition with offsets of an open transaction answers
        /// UNSTABLE_OFFSET_COMMIT instead of its committed offset.
        require_stable: bool,
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
    /// OffsetDelete (KIP-496): delete a group's committed offsets of these partitions.
    OffsetDelete {
        /// The group.
        group_id: String,
        /// (topic, partition).
        partitions: Vec<(String, i32)>,
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
            Self::TxnOffsetCommit(r) => &r.group_id,
            Self::OffsetFetch { group_id, .. }
            | Self::Describe { group_id }
            | Self::Delete { group_id }
            | Self::OffsetDelete { group_id, .. } => group_id,
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

impl JoinGroup {
    /// What the coordinator keeps of the member, in bytes: its assignors' names and metadata,
    /// its client id and host (its ids are bounded on their own).
    pub fn metadata_bytes(&self) -> usize {
        let protocols: usize = self
            .protocols
            .iter()
            .map(|(name, metadata)| name.len() + metadata.len())
            .sum();
        protocols + self.client_id.len() + self.client_host.len()
    }
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

/// TxnOffsetCommit (KIP-98; KIP-447's group metadata from v3).
#[derive(Clone, Debug)]
pub struct TxnOffsetCommit {
    /// The producer's transactional id.
    pub transactional_id: String,
    /// The group.
    pub group_id: String,
    /// The producer's id and epoch.
    pub producer: (ProducerId, ProducerEpoch),
    /// The member's generation, or -1 (before v3, or a producer without the group's
    /// metadata): no membership check.
    pub generation: Generation,
    /// The member, or empty.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// (topic, partition, offset, leader epoch, metadata).
    pub offsets: Vec<(String, i32, i64, i32, String)>,
    /// The transaction's start, as its coordinator verified that the producer added this
    /// partition to its open transaction (KIP-890); set by the node before the coordinator
    /// sees the request.
    pub txn_start_ms: Option<i64>,
}

/// One partition of an OffsetFetch answer: its committed offset if any, or why not.
pub type FetchedOffset = (String, i32, Result<Option<CommittedOffset>, GroupError>);

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
    /// The member's metadata (assignors' metadata, client id and host) is larger than the
    /// coordinator keeps (INVALID_REQUEST, as Kafka answers a request its broker will not take
    /// as it is).
    MemberMetadataTooLarge,
    /// The offset's metadata is too long.
    OffsetMetadataTooLarge,
    /// The offsets of one commit would make a log entry over the coordinator's limit
    /// (Kafka's INVALID_COMMIT_OFFSET_SIZE).
    CommitTooLarge,
    /// The group's membership (every member's metadata and assignment) would make a log
    /// entry over the coordinator's limit (Kafka answers UNKNOWN_SERVER_ERROR, as here).
    GroupTooLarge,
    /// The group is subscribed to the partition's topic, so its offset stays (OffsetDelete).
    GroupSubscribedToTopic,
    /// No answer in time: the change may or may not have been made.
    TimedOut,
    /// OffsetFetch with `require_stable`: the partition has offsets of an open transaction.
    UnstableOffsetCommit,
    /// A transactional offset commit the producer's transaction coordinator did not verify,
    /// or whose transaction ended before it applied.
    Txn(TxnError),
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
            Self::MemberMetadataTooLarge => 42,
            Self::OffsetMetadataTooLarge => 12,
            Self::CommitTooLarge => 28,
            Self::GroupTooLarge => -1,
            Self::GroupSubscribedToTopic => 86,
            Self::TimedOut => 7,
            Self::UnstableOffsetCommit => 88,
            // TxnOffsetCommit's codes, which clients know: a stale epoch is fenced
            // (INVALID_PRODUCER_EPOCH, fatal), an unavailable transaction coordinator is
            // retried (COORDINATOR_LOAD_IN_PROGRESS).
            Self::Txn(error) => match error {
                TxnError::ProducerFenced => 47,
                TxnError::InvalidProducerIdMapping => 49,
                TxnError::InvalidTxnState => 48,
                TxnError::TimedOut => 7,
                _ => 14,
            },
        }
    }
}

/// One partition's answer: (topic, partition, result).
pub type PartitionResult = (String, i32, Result<(), GroupError>);

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
    /// TxnOffsetCommit: the offsets are pending in the transaction.
    TxnOffsetCommit(Result<(), GroupError>),
    /// OffsetFetch: per partition its committed offset if any, or why not.
    OffsetFetch(Result<Vec<FetchedOffset>, GroupError>),
    /// DescribeGroups.
    Describe(Result<GroupDescription, GroupError>),
    /// DeleteGroups.
    Delete(Result<(), GroupError>),
    /// OffsetDelete: the group's error, or each partition's, in request order.
    OffsetDelete(Result<Vec<PartitionResult>, GroupError>),
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
            GroupOp::TxnOffsetCommit(_) => Self::TxnOffsetCommit(Err(error)),
            GroupOp::OffsetFetch { .. } => Self::OffsetFetch(Err(error)),
            GroupOp::Describe { .. } => Self::Describe(Err(error)),
            GroupOp::Delete { .. } => Self::Delete(Err(error)),
            GroupOp::OffsetDelete { .. } => Self::OffsetDelete(Err(error)),
        }
    }
}
