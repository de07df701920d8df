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
//!
//! The module is split by job: `requests` holds what clients ask and what they are answered,
//! `command` the log entries and the [`StoredState`] they build, `live` the leader's live state
//! of each group, `membership` the rebalance protocol (join, sync, heartbeat, leave), `offsets`
//! offset commits and fetches, and `proposals` the proposals whose answers wait for their entry
//! to apply. This file holds the [`Coordinator`] itself: applying the log, following
//! leadership, ticking and dispatching requests.

mod command;
mod live;
mod markers;
mod membership;
mod offsets;
mod proposals;
mod requests;

use bytes::Bytes;

pub use command::{
    Command, CommittedOffset, GroupMeta, PendingOffsets, Resize, StoredGroup, StoredMember,
    StoredState, TxnEnd, ENDED_KEEP_MS,
};
use live::{Live, LiveGroup, State};
use membership::{
    all_joined, complete_join, extend_initial_delay, heartbeat, join_group, leave_group,
    remove_member,
};
use proposals::{store_membership, Entry, Proposals, Waiting, WaitingOp};
pub use requests::{
    FetchedOffset, GroupDescription, GroupError, GroupOp, GroupResponse, Heartbeat, JoinAnswer,
    JoinGroup, JoinedMember, LeaveGroup, ListedGroup, MemberDescription, OffsetCommit,
    PartitionResult, SyncAnswer, SyncGroup, TxnOffsetCommit,
};

use crate::ids::{Generation, GroupId, RaftIndex, RequestId, Term};
use crate::io::Response;
use crate::node::Sink;
use crate::time::Now;

/// The internal topic whose partitions host the group coordinators.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The coordinator's settings, Kafka's broker settings of the same names (each with Kafka's
/// default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Shortest session timeout a member may ask for (Kafka's `group.min.session.timeout.ms`,
    /// 6 s); a JoinGroup asking for less is refused with INVALID_SESSION_TIMEOUT.
    pub min_session_timeout_ms: i32,
    /// Longest session timeout a member may ask for (Kafka's `group.max.session.timeout.ms`,
    /// 30 minutes).
    pub max_session_timeout_ms: i32,
    /// How long the first rebalance of an empty group waits for more members to join (Kafka's
    /// `group.initial.rebalance.delay.ms`, 3 s): each member that joins meanwhile extends the
    /// wait by as much again, up to the members' largest rebalance timeout. 0 completes the
    /// join as soon as every member is in.
    pub initial_rebalance_delay_ms: u64,
    /// A group without members whose stored state (offsets, generation) has not changed for
    /// this long is deleted with its offsets (Kafka's `offsets.retention.minutes`, 7 days, as
    /// milliseconds; KIP-211). Counted by the serving leader from when it last saw the group
    /// change, or from when it began serving, so a failover only lengthens it.
    pub offsets_retention_ms: u64,
    /// Most groups (with members, committed offsets or a stored generation) one coordinator
    /// partition holds; a JoinGroup or OffsetCommit of a new group past it is refused with
    /// COORDINATOR_NOT_AVAILABLE. Checked by the serving leader only.
    pub groups_max: usize,
    /// Most bytes the coordinator keeps of one member (`JoinGroup::metadata_bytes`: its
    /// assignors' metadata, client id and host); a larger JoinGroup is refused with
    /// INVALID_REQUEST and logged. At most the largest entry the coordinator writes.
    pub member_metadata_bytes_max: usize,
    /// Most bytes one partition's stored state takes encoded (every group's offsets and
    /// latest membership: the log's snapshot, written as one storage frame of at most 64 MiB).
    /// What would grow it past this is refused by the serving leader: a new group with
    /// COORDINATOR_NOT_AVAILABLE, an offset commit with INVALID_COMMIT_OFFSET_SIZE, a
    /// membership with UNKNOWN_SERVER_ERROR; logged once.
    pub state_bytes_max: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1_000,
            groups_max: GROUPS_MAX,
            member_metadata_bytes_max: MEMBER_METADATA_BYTES_MAX,
            state_bytes_max: STATE_BYTES_MAX,
        }
    }
}
/// Longest metadata string of a committed offset (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_MAX: usize = 4096;
/// Most members of one group (Kafka's `group.max.size` is unbounded; ours is a bound).
pub const MEMBERS_MAX: usize = 1_000;
/// Most groups one coordinator partition holds by default (`CoordinatorConfig::groups_max`).
pub const GROUPS_MAX: usize = 100_000;
/// Most bytes kept of one member by default (`CoordinatorConfig::member_metadata_bytes_max`):
/// Kafka's `message.max.bytes`, which bounds a whole group's record in Kafka.
pub const MEMBER_METADATA_BYTES_MAX: usize = 1 << 20;
/// Longest group, member or instance id.
pub const ID_MAX: usize = 1_000;
/// Most bytes of one partition's stored state by default (`CoordinatorConfig::state_bytes_max`):
/// half a storage frame.
pub const STATE_BYTES_MAX: usize = 32 << 20;

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

/// What the coordinator needs from its partition's replica.
pub(crate) trait CommandLog {
    /// The term this node leads and serves in, if it does.
    fn serving(&self) -> Option<Term>;
    /// Whether this node leads, serving or not yet (still applying its term's first entry).
    fn leading(&self) -> bool;
    /// Proposes an entry; its index and term, or `None` if it cannot.
    fn propose(&mut self, data: Bytes) -> Option<(RaftIndex, Term)>;
}

/// One coordinator partition on one node.
#[derive(Debug)]
pub struct Coordinator {
    stored: StoredState,
    /// Bytes of `stored` encoded (the log's snapshot, which must fit a storage frame), counted
    /// as entries apply: the same on every replica.
    stored_bytes: usize,
    /// The log index `stored` is at.
    applied: RaftIndex,
    live: Option<Live>,
    /// The answers waiting for their entries, what the entries proposed and not applied may
    /// add to `stored`, and the bounds: proposals in flight, the largest entry (larger
    /// commits and memberships are refused), the state's bytes.
    proposals: Proposals,
    /// The session timeout range, the initial rebalance delay, offsets retention, the limits
    /// on groups.
    config: CoordinatorConfig,
    node: u64,
    /// The partition's Raft group.
    partition: GroupId,
    logger: slog::Logger,
    /// Planted bug `assignment-to-all` (see `PlantedBugs`).
    pub(crate) planted_assignment_to_all: bool,
    /// Transaction markers applied since `Node` last took them.
    markers_written: Vec<crate::partition::MarkerWrite>,
}

impl Coordinator {
    /// A coordinator of the partition whose Raft group is `partition`, with nothing applied
    /// yet, on node `node`, with at most `proposals_max` proposals in flight, none larger than
    /// `entry_bytes_max`.
    pub fn new(
        (node, partition): (u64, GroupId),
        (proposals_max, entry_bytes_max): (usize, usize),
        config: CoordinatorConfig,
        logger: &slog::Logger,
    ) -> Self {
        Self {
            logger: logger.clone(),
            planted_assignment_to_all: false,
            markers_written: Vec::new(),
            stored: StoredState::default(),
            stored_bytes: StoredState::HEADER_BYTES,
            applied: RaftIndex(0),
            live: None,
            proposals: Proposals::new(proposals_max, entry_bytes_max, config.state_bytes_max),
            config,
            node,
            partition,
        }
    }

    /// The applied state.
    pub fn stored(&self) -> &StoredState {
        &self.stored
    }

    /// Bytes of the applied state encoded (its snapshot), as counted entry by entry.
    pub fn stored_bytes(&self) -> usize {
        self.stored_bytes
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
        self.stored_bytes = self.stored.encoded_len();
        self.applied = index;
        self.proposals.applied(index);
        while self
            .proposals
            .queue
            .front()
            .is_some_and(|p| p.index <= index)
        {
            let p = self.proposals.queue.pop_front().expect("checked");
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
        // A transactional offset commit of a transaction that ended here is dropped, and its
        // answer says so.
        let mut dropped = false;
        let command = if data.is_empty() {
            None
        } else {
            let command = Command::decode(data)
                .expect("coordinator entries are encoded by the leader that proposed them");
            if let Command::TxnOffsets {
                producer_id,
                txn_start_ms,
                ..
            } = &command
            {
                dropped = self.stored.is_ended(*producer_id, *txn_start_ms);
            }
            let resize = self.stored.apply(&command);
            self.stored_bytes = resize.applied_to(self.stored_bytes);
            if let Some(group) = command
                .group_id()
                .and_then(|id| self.live.as_mut()?.groups.get_mut(id))
            {
                // Offsets retention counts from the group's last change.
                group.changed(now);
            }
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
        self.proposals.applied(index);
        while self
            .proposals
            .queue
            .front()
            .is_some_and(|p| p.index <= index)
        {
            let p = self.proposals.queue.pop_front().expect("checked");
            let ours = p.index == index && p.term == term;
            match p.waiting {
                Waiting::Answer { id, op } => {
                    let result = match (ours, dropped) {
                        (true, false) => Ok(()),
                        (true, true) => Err(GroupError::Txn(crate::txn::TxnError::InvalidTxnState)),
                        (false, _) => Err(GroupError::NotCoordinator),
                    };
                    reply(sink, id, op.answer(result));
                }
                Waiting::Marker(write) => {
                    if ours {
                        self.markers_written.push(write);
                    }
                }
                Waiting::Assignment {
                    group_id,
                    generation,
                } => self.assignment_applied(&group_id, generation, ours, now, sink),
                Waiting::Nothing => {}
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
            // Every entry of earlier terms still in the log is applied (a leader serves once
            // its term's first entry is): what an earlier term proposed and still waits is
            // lost, its index holding this term's entries now.
            for p in std::mem::take(&mut self.proposals.queue) {
                assert!(p.term < term && p.index > self.applied);
                if let Waiting::Answer { id, op } = p.waiting {
                    reply(sink, id, op.answer(Err(GroupError::NotCoordinator)));
                }
            }
            self.proposals.serving();
            let groups = self
                .stored
                .groups
                .iter()
                .map(|(id, g)| {
                    let mut live = match &g.meta {
                        Some(meta) => LiveGroup::from_stored(meta, now, &self.logger, id),
                        None => LiveGroup::empty(&self.logger, id, now),
                    };
                    // An empty group's retention counts from its stored last change; a group
                    // with members starts counting when it becomes empty.
                    if live.state == State::Empty {
                        live.unchanged_since(g, now);
                    }
                    (id.clone(), live)
                })
                .collect();
            self.live = Some(Live {
                term,
                logger: self.logger.clone(),
                partition: self.partition,
                next_member: 0,
                groups,
                refusing_groups: false,
            });
        }
    }

    /// Expires sessions, pending member ids, rebalance barriers and waiting answers.
    pub(crate) fn tick(&mut self, log: &mut dyn CommandLog, now: Now, sink: &mut Sink) {
        while self
            .proposals
            .queue
            .front()
            .is_some_and(|p| p.deadline <= now.mono)
        {
            let p = self.proposals.queue.pop_front().expect("checked");
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
                if timed_out && extend_initial_delay(group, self.config, now) {
                    continue;
                }
                if timed_out || all_joined(group) {
                    let proposal = complete_join(group, &group_id, now, sink);
                    if let Some(command) = proposal {
                        let entry = Entry::new(&command, &self.stored, self.stored_bytes);
                        let proposals = &mut self.proposals;
                        store_membership(log, proposals, entry, now, &group.logger);
                    }
                }
            }
            if group.state == State::Empty && group.pending_members.is_empty() {
                // An empty group without stored state that never had a generation is
                // forgotten; one with offsets or a generation is rebuilt from the stored state
                // when needed. A group that had a generation keeps it while the entry storing
                // it has not applied yet: forgotten, it would count again from generation 0 and
                // store a generation behind the one in flight. It goes when its entry applies
                // and, once empty for the retention period, is deleted.
                if !self.stored.groups.contains_key(&group_id) && group.generation == Generation(0)
                {
                    live.groups.remove(&group_id);
                } else if now.mono >= group.retention_ends(self.config.offsets_retention_ms)
                    && self.stored.groups[&group_id].pending.is_empty()
                {
                    // Empty for the retention period: its offsets expire, and the group with
                    // them (KIP-211); not while a transaction's offsets wait for its marker. Once proposed the clock restarts, so a proposal lost to
                    // a leader change is retried only after another period; one refused (the
                    // proposal queue is full) is tried again at the next tick.
                    let command = Command::Delete {
                        group_id: group_id.clone(),
                    };
                    let entry = Entry::new(&command, &self.stored, self.stored_bytes);
                    let proposed =
                        self.proposals
                            .propose(log, entry, now, Waiting::Nothing, &group.logger);
                    if proposed.is_ok() {
                        slog::info!(group.logger, "offsets expired; deleting the empty group";
                            "offsets_retention_ms" => self.config.offsets_retention_ms);
                        group.changed(now);
                    }
                }
            }
        }
        live.note_room(self.config.groups_max, sink);
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
                // A new group takes at least its header in the stored state.
                let new_group_fits = live.groups.contains_key(&join.group_id)
                    || self.proposals.room_for(
                        self.stored_bytes,
                        StoredState::group_bytes(&join.group_id),
                        &self.logger,
                    );
                let (node, config) = (self.node, self.config);
                let result = join_group(live, (node, new_group_fits), config, now, id, join, sink);
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
            GroupOp::TxnOffsetCommit(commit) => self.txn_offset_commit(log, now, id, commit, sink),
            GroupOp::OffsetFetch {
                group_id,
                partitions,
                require_stable,
            } => self.offset_fetch(id, group_id, partitions, require_stable, sink),
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
                let command = Command::Delete { group_id };
                self.propose_answer(log, now, id, command, WaitingOp::Delete, sink);
            }
            GroupOp::OffsetDelete {
                group_id,
                partitions,
            } => self.offset_delete(log, now, id, group_id, partitions, sink),
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
        self.proposals.invariants(self.applied);
        self.stored.txn_invariants();
        assert_eq!(
            self.stored_bytes,
            self.stored.encoded_len(),
            "state bytes counted"
        );
        if let Some(live) = &self.live {
            // No bound on `live.groups` here: a new leader takes every stored group, however
            // many its predecessor, configured otherwise, admitted.
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
}
