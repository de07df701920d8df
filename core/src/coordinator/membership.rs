//! The classic rebalance protocol on the leader's live state: JoinGroup (new, known and static
//! members, the join barrier and its completion), SyncGroup (the leader's assignment, proposed
//! and answered once its entry applies), Heartbeat, LeaveGroup, and members that leave or whose
//! session expires.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::command::Command;
use super::live::{InitialDelay, Live, LiveGroup, Member, State};
use super::proposals::{store_membership, Entry, Refused, Waiting};
use super::requests::{
    GroupError, GroupResponse, Heartbeat, JoinAnswer, JoinGroup, JoinedMember, LeaveGroup,
    SyncAnswer, SyncGroup,
};
use super::{reply, CommandLog, Coordinator, CoordinatorConfig, ID_MAX, MEMBERS_MAX};
use crate::ids::{Generation, RequestId};
use crate::io::Response;
use crate::node::Sink;
use crate::time::Now;

impl Coordinator {
    pub(super) fn assignment_applied(
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

    /// After a join or leave changed a group: complete its rebalance if everyone is in.
    pub(super) fn after_change(
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
            if let Some(command) = complete_join(group, group_id, now, sink) {
                let entry = Entry::new(&command, &self.stored, self.stored_bytes);
                store_membership(log, &mut self.proposals, entry, now, &group.logger);
            }
        }
    }

    pub(super) fn sync_group(
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
                let command = Command::Group {
                    group_id: sync.group_id.clone(),
                    meta: group.meta(now.wall_ms),
                };
                let entry = Entry::new(&command, &self.stored, self.stored_bytes);
                let generation = group.generation;
                group.syncing = true;
                let waiting = Waiting::Assignment {
                    group_id: sync.group_id.clone(),
                    generation,
                };
                let bytes = entry.len();
                let proposals = &mut self.proposals;
                if let Err(refused) = proposals.propose(log, entry, now, waiting, &group.logger) {
                    // Past the bound on the state's bytes the refusal is logged once, by
                    // `propose`; this one is the group's own.
                    if refused == Refused::TooLarge {
                        slog::warn!(group.logger,
                            "the group's membership is too large to store; the leader's SyncGroup gets UNKNOWN_SERVER_ERROR";
                            "generation" => generation.0, "members" => group.members.len(),
                            "bytes" => bytes, "group_entry_bytes_max" => proposals.entry_bytes_max);
                    }
                    group.syncing = false;
                    let member = group.members.get_mut(&sync.member_id).expect("checked");
                    member.awaiting_sync = None;
                    fail(
                        sink,
                        match refused {
                            Refused::Unavailable => GroupError::NotCoordinator,
                            Refused::TooLarge | Refused::StateFull => GroupError::GroupTooLarge,
                        },
                    );
                }
            }
        }
    }
}

/// Checks that a request comes from a current member of the current generation.
pub(super) fn check_member(
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

pub(super) fn heartbeat(live: &mut Live, now: Now, hb: &Heartbeat) -> Result<(), GroupError> {
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

/// Whether the join barrier may lift before its deadline: every member is in, and no initial
/// rebalance delay is running (that one lifts only at its deadline).
pub(super) fn all_joined(group: &LiveGroup) -> bool {
    group.initial_delay.is_none()
        && group.pending_members.is_empty()
        && group.members.values().all(|m| m.awaiting_join.is_some())
}

/// The initial rebalance delay ran out: if a member joined during it and the rebalance timeout
/// leaves time, the barrier waits once more (and `true` is returned); otherwise the delay is
/// over and the barrier lifts.
pub(super) fn extend_initial_delay(
    group: &mut LiveGroup,
    config: CoordinatorConfig,
    now: Now,
) -> bool {
    let Some(delay) = group.initial_delay.take() else {
        return false;
    };
    if !delay.new_member_added || delay.remaining_ms == 0 {
        return false;
    }
    let delay_ms = config.initial_rebalance_delay_ms.min(delay.remaining_ms);
    group.initial_delay = Some(InitialDelay {
        delay_ms,
        remaining_ms: delay.remaining_ms.saturating_sub(delay.delay_ms),
        new_member_added: false,
    });
    group.rebalance_deadline = Some(now.mono.plus_ms(delay_ms));
    slog::info!(group.logger, "members joined during the initial rebalance delay; waiting again";
        "delay_ms" => delay_ms, "members" => group.members.len());
    true
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
pub(super) fn complete_join(
    group: &mut LiveGroup,
    group_id: &str,
    now: Now,
    sink: &mut Sink,
) -> Option<Command> {
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
    group.initial_delay = None;
    group.generation = Generation(group.generation.0.wrapping_add(1).max(1));
    if group.members.is_empty() {
        group.state = State::Empty;
        // Offsets retention counts from now, not from an earlier change.
        group.changed(now);
        slog::info!(group.logger, "group is empty"; "generation" => group.generation.0);
        group.protocol_type.clear();
        group.protocol.clear();
        group.leader.clear();
        return Some(Command::Group {
            group_id: group_id.to_string(),
            meta: group.meta(now.wall_ms),
        });
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
pub(super) fn remove_member(group: &mut LiveGroup, member_id: &str, now: Now, sink: &mut Sink) {
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

pub(super) fn leave_group(
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

/// JoinGroup, on node `node`; a new group is refused unless `new_group_fits` the stored
/// state's bound. Returns the group id when the join may have completed the barrier.
pub(super) fn join_group(
    live: &mut Live,
    (node, new_group_fits): (u64, bool),
    config: CoordinatorConfig,
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
    if !(config.min_session_timeout_ms..=config.max_session_timeout_ms)
        .contains(&join.session_timeout_ms)
    {
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
    let bytes = join.metadata_bytes();
    if bytes > config.member_metadata_bytes_max {
        slog::warn!(live.logger, "refused a JoinGroup: the member's metadata is too large (INVALID_REQUEST)";
            "consumer_group" => &join.group_id, "member" => &join.member_id, "bytes" => bytes,
            "member_metadata_bytes_max" => config.member_metadata_bytes_max);
        return fail(sink, GroupError::MemberMetadataTooLarge);
    }
    if !live.groups.contains_key(&join.group_id) {
        if !join.member_id.is_empty() {
            return fail(sink, GroupError::UnknownMemberId);
        }
        if !new_group_fits || !live.room_for_group(config.groups_max, sink) {
            return fail(sink, GroupError::CoordinatorNotAvailable);
        }
        let group = LiveGroup::empty(&live.logger, &join.group_id, now);
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
                return add_member(group, &group_id, member_id, join, config, now, id, sink);
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
        return add_member(group, &group_id, member_id, join, config, now, id, sink);
    }
    if group.pending_members.remove(&member_id).is_some() {
        return add_member(group, &group_id, member_id, join, config, now, id, sink);
    }
    if !group.members.contains_key(&member_id) {
        return fail(sink, GroupError::UnknownMemberId);
    }
    rejoin(group, &group_id, member_id, join, now, id, sink)
}

#[allow(clippy::too_many_arguments)]
fn add_member(
    group: &mut LiveGroup,
    group_id: &str,
    member_id: String,
    join: JoinGroup,
    config: CoordinatorConfig,
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
    if let Some(delay) = &mut group.initial_delay {
        delay.new_member_added = true;
    }
    let was_empty = group.state == State::Empty;
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
    if was_empty && config.initial_rebalance_delay_ms > 0 {
        // The first rebalance of an empty group waits for more members (Kafka's
        // `group.initial.rebalance.delay.ms`), up to the rebalance timeout in all.
        let delay_ms = config.initial_rebalance_delay_ms;
        let timeout = join.rebalance_timeout_ms.max(0) as u64;
        group.initial_delay = Some(InitialDelay {
            delay_ms,
            remaining_ms: timeout.saturating_sub(delay_ms),
            new_member_added: false,
        });
        group.rebalance_deadline = Some(now.mono.plus_ms(delay_ms));
    }
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
