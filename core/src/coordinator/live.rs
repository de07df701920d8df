//! The leader's live state, kept only while this node's replica serves: per group its protocol
//! state, members with their session deadlines and the JoinGroup and SyncGroup answers waiting
//! on them, static instance ids, pending member ids and the rebalance barrier. A new leader
//! rebuilds it from the stored generation.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::command::{GroupMeta, StoredGroup, StoredMember};
use super::requests::{GroupError, GroupResponse};
use super::{reply, MEMBERS_MAX};
use crate::ids::{Generation, GroupId, RequestId, Term};
use crate::io::TraceEvent;
use crate::node::Sink;
use crate::time::{Instant, Now};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

#[derive(Debug)]
pub(super) struct Member {
    pub(super) member_id: String,
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout_ms: i32,
    pub(super) rebalance_timeout_ms: i32,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    /// The session expires here unless a heartbeat (or any request) comes first.
    pub(super) deadline: Instant,
    pub(super) awaiting_join: Option<RequestId>,
    pub(super) awaiting_sync: Option<RequestId>,
}

impl Member {
    /// Answers the member's waiting JoinGroup and SyncGroup with `error`.
    pub(super) fn fail_waiting(&mut self, error: GroupError, sink: &mut Sink) {
        if let Some(id) = self.awaiting_join.take() {
            reply(sink, id, GroupResponse::Join(Err(error.clone())));
        }
        if let Some(id) = self.awaiting_sync.take() {
            reply(sink, id, GroupResponse::Sync(Err(error)));
        }
    }

    pub(super) fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub(super) struct LiveGroup {
    pub(super) state: State,
    pub(super) generation: Generation,
    pub(super) protocol_type: String,
    pub(super) protocol: String,
    pub(super) leader: String,
    pub(super) members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or this deadline.
    pub(super) pending_members: BTreeMap<String, Instant>,
    /// Static instance id to its current member id.
    pub(super) instances: BTreeMap<String, String>,
    /// In PreparingRebalance: when the barrier gives up on members that did not rejoin.
    pub(super) rebalance_deadline: Option<Instant>,
    /// The leader's assignment is proposed for this generation and not yet applied.
    pub(super) syncing: bool,
    /// In a rebalance that began with the group empty: the initial rebalance delay, during
    /// which the barrier waits for more members even once everyone is in.
    pub(super) initial_delay: Option<InitialDelay>,
    /// When the group's stored state last changed, or this leader began serving it: an empty
    /// group's offsets expire a retention period after it, less `unchanged_before_ms`.
    pub(super) changed_at: Instant,
    /// How long the stored state had been unchanged at `changed_at`: 0 after a change this
    /// leader made or applied; when it began serving, the time since the stored state's last
    /// change by the wall clock ([`StoredGroup::changed_ms`]), so that a leader change does not
    /// restart the retention period (Kafka's offsets carry their times too).
    pub(super) unchanged_before_ms: u64,
    /// Logs the group's rebalances (with its id).
    pub(super) logger: slog::Logger,
}

/// The initial rebalance delay of a group that was empty (Kafka's `InitialDelayedJoin`): the
/// barrier lifts at the group's `rebalance_deadline`, unless a member joined during the delay
/// and time remains, when it waits once more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct InitialDelay {
    /// The delay now running.
    pub(super) delay_ms: u64,
    /// How much longer the barrier may still be extended (the rebalance timeout less the
    /// delays so far).
    pub(super) remaining_ms: u64,
    /// A member joined during the delay now running.
    pub(super) new_member_added: bool,
}

impl LiveGroup {
    pub(super) fn empty(logger: &slog::Logger, group_id: &str, now: Now) -> Self {
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
            initial_delay: None,
            changed_at: now.mono,
            unchanged_before_ms: 0,
        }
    }

    /// The group's stored state changes (or is about to) now.
    pub(super) fn changed(&mut self, now: Now) {
        self.changed_at = now.mono;
        self.unchanged_before_ms = 0;
    }

    /// A leader that begins serving the group counts the time since `stored`'s last change.
    pub(super) fn unchanged_since(&mut self, stored: &StoredGroup, now: Now) {
        self.unchanged_before_ms = stored.changed_ms().map_or(0, |changed_ms| {
            u64::try_from(now.wall_ms.saturating_sub(changed_ms)).unwrap_or(0)
        });
    }

    /// When an empty group's offsets expire unless it changes first.
    pub(super) fn retention_ends(&self, retention_ms: u64) -> Instant {
        self.changed_at
            .plus_ms(retention_ms.saturating_sub(self.unchanged_before_ms))
    }

    pub(super) fn from_stored(
        meta: &GroupMeta,
        now: Now,
        logger: &slog::Logger,
        group_id: &str,
    ) -> Self {
        let mut group = Self::empty(logger, group_id, now);
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
    pub(super) fn common_protocols(&self) -> Option<BTreeSet<String>> {
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
    pub(super) fn select_protocol(&self) -> String {
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

    /// The membership to store, stored at `wall_ms`.
    pub(super) fn meta(&self, wall_ms: i64) -> GroupMeta {
        GroupMeta {
            state_time_ms: wall_ms.max(0),
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

    pub(super) fn invariants(&self) {
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
        if self.initial_delay.is_some() {
            assert_eq!(self.state, State::PreparingRebalance);
        }
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
pub(super) struct Live {
    pub(super) term: Term,
    pub(super) logger: slog::Logger,
    /// The coordinator partition's Raft group (for the trace events).
    pub(super) partition: GroupId,
    /// Counter for member ids handed out in this term.
    pub(super) next_member: u64,
    pub(super) groups: BTreeMap<String, LiveGroup>,
    /// The limit on groups refused a new group, and nothing has had room since: the refusal
    /// is traced (and logged) once, not per request.
    pub(super) refusing_groups: bool,
}

impl Live {
    /// Whether a new group fits under `groups_max`. The first refusal since there was room is
    /// traced (`CoordinatorGroupsFull`), so the node logs it once.
    pub(super) fn room_for_group(&mut self, groups_max: usize, sink: &mut Sink) -> bool {
        if self.groups.len() < groups_max {
            return true;
        }
        if !self.refusing_groups {
            self.refusing_groups = true;
            sink.trace(TraceEvent::CoordinatorGroupsFull {
                group: self.partition,
                groups: self.groups.len() as u64,
                limit: groups_max as u64,
            });
        }
        false
    }

    /// After groups went: if new groups were being refused and one fits again, traced once
    /// (`CoordinatorGroupsHaveRoom`).
    pub(super) fn note_room(&mut self, groups_max: usize, sink: &mut Sink) {
        if self.refusing_groups && self.groups.len() < groups_max {
            self.refusing_groups = false;
            sink.trace(TraceEvent::CoordinatorGroupsHaveRoom {
                group: self.partition,
                groups: self.groups.len() as u64,
                limit: groups_max as u64,
            });
        }
    }
}
