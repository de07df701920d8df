//! Committed offsets: OffsetCommit and TxnOffsetCommit (checked against the group's live
//! state, proposed, and answered when its entry applies; a transaction's offsets are pending
//! until its marker) and OffsetFetch (answered from the stored state).

use std::collections::BTreeSet;

use super::command::{Command, CommittedOffset, StoredState};
use super::live::{LiveGroup, State};
use super::membership::check_member;
use super::proposals::WaitingOp;
use super::requests::{
    FetchedOffset, GroupError, GroupResponse, OffsetCommit, PartitionResult, TxnOffsetCommit,
};
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
        let fail = |sink: &mut Sink, e| reply(sink, id, GroupResponse::OffsetCommit(Err(e)));
        let member = (&commit.member_id, &commit.instance_id, commit.generation);
        if let Err(e) = self.admit_commit(now, &commit.group_id, member, &commit.offsets, sink) {
            return fail(sink, e);
        }
        let command = Command::Offsets {
            group_id: commit.group_id,
            offsets: committed_offsets(commit.offsets, now),
        };
        self.propose_answer(log, now, id, command, WaitingOp::OffsetCommit, sink);
    }

    /// TxnOffsetCommit, once the transaction coordinator verified it: checked as an
    /// OffsetCommit (the member and generation only when the producer gives them, as KIP-447
    /// does; a rebalance does not refuse it), stored as the transaction's pending offsets and
    /// answered when applied, or refused if the transaction ended here meanwhile.
    pub(super) fn txn_offset_commit(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        id: RequestId,
        commit: TxnOffsetCommit,
        sink: &mut Sink,
    ) {
        let fail = |sink: &mut Sink, e| reply(sink, id, GroupResponse::TxnOffsetCommit(Err(e)));
        let txn_start_ms = commit.txn_start_ms.expect("verified by the node");
        let (producer_id, epoch) = commit.producer;
        if self.stored.is_ended(producer_id, txn_start_ms) {
            return fail(sink, GroupError::Txn(crate::txn::TxnError::InvalidTxnState));
        }
        let generation = if commit.member_id.is_empty() {
            crate::ids::Generation(-1)
        } else {
            commit.generation
        };
        let member = (&commit.member_id, &commit.instance_id, generation);
        if let Err(e) = self.admit_commit(now, &commit.group_id, member, &commit.offsets, sink) {
            return fail(sink, e);
        }
        let command = Command::TxnOffsets {
            group_id: commit.group_id,
            producer_id,
            epoch,
            txn_start_ms,
            offsets: committed_offsets(commit.offsets, now),
        };
        self.propose_answer(log, now, id, command, WaitingOp::TxnOffsetCommit, sink);
    }

    /// Whether a commit of `offsets` by `member` (member id, instance id, generation; a
    /// negative generation commits from outside the group) may be proposed for `group_id`:
    /// the metadata's length, the group (a new one admitted within the bounds) and the
    /// member. A member's commit extends its session; the group's retention restarts.
    fn admit_commit(
        &mut self,
        now: Now,
        group_id: &str,
        (member_id, instance_id, generation): (&String, &Option<String>, crate::ids::Generation),
        offsets: &[(String, i32, i64, i32, String)],
        sink: &mut Sink,
    ) -> Result<(), GroupError> {
        let live = self.live.as_mut().expect("serving");
        if offsets
            .iter()
            .any(|(_, _, _, _, metadata)| metadata.len() > OFFSET_METADATA_MAX)
        {
            return Err(GroupError::OffsetMetadataTooLarge);
        }
        match live.groups.get_mut(group_id) {
            None if generation.0 < 0 => {
                // A new group takes at least its header in the stored state.
                let header = StoredState::group_bytes(group_id);
                let fits = self
                    .proposals
                    .room_for(self.stored_bytes, header, &self.logger);
                if !fits || !live.room_for_group(self.config.groups_max, sink) {
                    return Err(GroupError::CoordinatorNotAvailable);
                }
                live.groups.insert(
                    group_id.to_string(),
                    LiveGroup::empty(&self.logger, group_id, now),
                );
            }
            None => return Err(GroupError::IllegalGeneration),
            Some(group) if generation.0 < 0 && group.state == State::Empty => {}
            Some(group) => {
                check_member(group, member_id, instance_id, generation)?;
                if group.state == State::CompletingRebalance {
                    return Err(GroupError::RebalanceInProgress);
                }
                let member = group.members.get_mut(member_id).expect("checked");
                member.deadline = now.mono.plus_ms(member.session_timeout_ms as u64);
            }
        }
        // Offsets retention counts from now: an expiry must not be proposed behind this
        // offset commit while it waits to apply.
        if let Some(group) = live.groups.get_mut(group_id) {
            group.changed(now);
        }
        Ok(())
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
    /// with a committed offset (or, with `require_stable`, with pending offsets). With
    /// `require_stable` a partition with offsets of an open transaction answers
    /// UNSTABLE_OFFSET_COMMIT, and the client asks again.
    pub(super) fn offset_fetch(
        &self,
        id: RequestId,
        group_id: String,
        partitions: Option<Vec<(String, i32)>>,
        require_stable: bool,
        sink: &mut Sink,
    ) {
        let stored = self.stored.groups.get(&group_id);
        let partitions: Vec<(String, i32)> = match partitions {
            Some(partitions) => partitions,
            None => {
                let mut all: BTreeSet<(String, i32)> = stored
                    .map(|g| g.offsets.keys().cloned().collect())
                    .unwrap_or_default();
                if require_stable {
                    for pending in stored.iter().flat_map(|g| g.pending.values()) {
                        all.extend(pending.offsets.keys().cloned());
                    }
                }
                all.into_iter().collect()
            }
        };
        let answer: Vec<FetchedOffset> = partitions
            .into_iter()
            .map(|(topic, partition)| {
                let result =
                    if require_stable && self.stored.is_pending(&group_id, &topic, partition) {
                        Err(GroupError::UnstableOffsetCommit)
                    } else {
                        Ok(stored
                            .and_then(|g| g.offsets.get(&(topic.clone(), partition)))
                            .cloned())
                    };
                (topic, partition, result)
            })
            .collect();
        reply(sink, id, GroupResponse::OffsetFetch(Ok(answer)));
    }
}

/// A commit's offsets as stored, committed at `now`.
fn committed_offsets(
    offsets: Vec<(String, i32, i64, i32, String)>,
    now: Now,
) -> Vec<(String, i32, CommittedOffset)> {
    offsets
        .into_iter()
        .map(|(topic, partition, offset, leader_epoch, metadata)| {
            let offset = CommittedOffset {
                offset,
                leader_epoch,
                metadata,
                commit_time_ms: now.wall_ms,
            };
            (topic, partition, offset)
        })
        .collect()
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
