//! Committed offsets: OffsetCommit (checked against the group's live state, proposed, and
//! answered when its entry applies) and OffsetFetch (answered from the stored state).

use std::collections::BTreeSet;

use super::command::{Command, CommittedOffset, StoredState};
use super::live::{LiveGroup, State};
use super::membership::check_member;
use super::proposals::WaitingOp;
use super::requests::{GroupError, GroupResponse, OffsetCommit, PartitionResult};
use super::{reply, CommandLog, Coordinator, OFFSET_METADATA_MAX};
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
                // A new group takes at least its header in the stored state.
                let header = StoredState::group_bytes(&commit.group_id);
                let fits = self
                    .proposals
                    .room_for(self.stored_bytes, header, &self.logger);
                if !fits || !live.room_for_group(self.config.groups_max, sink) {
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
            group.changed(now);
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
        let command = Command::Offsets {
            group_id: commit.group_id,
            offsets,
        };
        self.propose_answer(log, now, id, command, WaitingOp::OffsetCommit, sink);
    }

    /// OffsetDelete (KIP-496), as Kafka's classic groups do: an empty group's offsets all go;
    /// a consumer group with members keeps those of the topics its members subscribe to
    /// (GROUP_SUBSCRIBED_TO_TOPIC; every topic when a subscription cannot be read), and a
    /// group of another protocol with members keeps all (NON_EMPTY_GROUP). The rest are
    /// deleted through the partition's log, answered once applied.
    pub(super) fn offset_delete(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: RequestId,
        group_id: String,
        partitions: Vec<(String, i32)>,
        sink: &mut Sink,
    ) {
        let live = self.live.as_ref().expect("serving");
        let fail = |sink: &mut Sink, e| reply(sink, id, GroupResponse::OffsetDelete(Err(e)));
        let exists =
            live.groups.contains_key(&group_id) || self.stored.groups.contains_key(&group_id);
        if !exists {
            return fail(sink, GroupError::GroupIdNotFound);
        }
        // `None`: every topic is kept.
        let subscribed: Option<Option<BTreeSet<String>>> = match live.groups.get(&group_id) {
            None => None,
            Some(group) if group.state == State::Empty => None,
            Some(group) if group.protocol_type == "consumer" => Some(
                group
                    .members
                    .values()
                    .map(|m| subscribed_topics(&m.metadata(&group.protocol)))
                    .collect::<Option<Vec<_>>>()
                    .map(|lists| lists.into_iter().flatten().collect()),
            ),
            Some(_) => return fail(sink, GroupError::NonEmptyGroup),
        };
        let answers: Vec<PartitionResult> = partitions
            .into_iter()
            .map(|(topic, partition)| {
                let kept = match &subscribed {
                    None => false,
                    Some(None) => true,
                    Some(Some(topics)) => topics.contains(&topic),
                };
                let result = if kept {
                    Err(GroupError::GroupSubscribedToTopic)
                } else {
                    Ok(())
                };
                (topic, partition, result)
            })
            .collect();
        let stored = self.stored.groups.get(&group_id);
        let deleted: Vec<(String, i32)> = answers
            .iter()
            .filter(|(topic, partition, result)| {
                result.is_ok()
                    && stored.is_some_and(|g| g.offsets.contains_key(&(topic.clone(), *partition)))
            })
            .map(|(topic, partition, _)| (topic.clone(), *partition))
            .collect();
        if deleted.is_empty() {
            return reply(sink, id, GroupResponse::OffsetDelete(Ok(answers)));
        }
        let command = Command::DeleteOffsets {
            group_id,
            partitions: deleted,
        };
        self.propose_answer(
            log,
            now,
            id,
            command,
            WaitingOp::OffsetDelete(answers),
            sink,
        );
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

/// The topics of a consumer protocol subscription (ConsumerProtocolSubscription: a version,
/// then the topics as an array of strings, in every version), or `None` if it cannot be read.
/// Bounded by the bytes given: nothing is allocated for a count the bytes cannot hold.
fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut rest = metadata.get(2..)?;
    let count = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    rest = &rest[4..];
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let len = usize::try_from(i16::from_be_bytes(rest.get(..2)?.try_into().ok()?)).ok()?;
        let name = rest.get(2..2 + len)?;
        topics.push(String::from_utf8(name.to_vec()).ok()?);
        rest = &rest[2 + len..];
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::subscribed_topics;

    #[test]
    fn a_consumer_subscription_names_its_topics_and_junk_names_none() {
        // Version 1, topics ["ab", "c"], then fields this does not read.
        let bytes = [
            0, 1, 0, 0, 0, 2, 0, 2, b'a', b'b', 0, 1, b'c', 0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(
            subscribed_topics(&bytes),
            Some(vec!["ab".to_string(), "c".to_string()])
        );
        for cut in 0..13 {
            assert_eq!(subscribed_topics(&bytes[..cut]), None, "{cut}");
        }
        assert_eq!(subscribed_topics(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None);
    }
}
