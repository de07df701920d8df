//! Committed offsets: OffsetCommit (checked against the group's live state, proposed, and
//! answered when its entry applies) and OffsetFetch (answered from the stored state).

use super::command::{Command, CommittedOffset};
use super::live::{LiveGroup, State};
use super::membership::check_member;
use super::proposals::WaitingOp;
use super::requests::{GroupError, GroupResponse, OffsetCommit};
use super::{reply, CommandLog, Coordinator, GROUPS_MAX, OFFSET_METADATA_MAX};
use crate::ids::RequestId;
use crate::node::Sink;
use crate::time::Now;

impl Coordinator {
    pub(super) fn offset_commit(
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
                    LiveGroup::empty(&self.logger, &commit.group_id, now),
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
        // Offsets retention counts from now: an expiry must not be proposed behind this
        // offset commit while it waits to apply.
        if let Some(group) = live.groups.get_mut(&commit.group_id) {
            group.changed_at = now.mono;
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

    /// OffsetFetch, answered from the stored state: the partitions asked, or every partition
    /// with a committed offset.
    pub(super) fn offset_fetch(
        &self,
        id: RequestId,
        group_id: String,
        partitions: Option<Vec<(String, i32)>>,
        sink: &mut Sink,
    ) {
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
}
