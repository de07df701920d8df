//! Raft vote requests that arrive for a group this node does not run yet.
//!
//! A new topic's partitions start on each replica when it applies the metadata entry that
//! creates them, and replicas apply it at slightly different times. The first replica to
//! start a new partition campaigns at once; a vote request reaching a peer that has not
//! started the group yet would be dropped, and the election would wait for a timeout (one to
//! two seconds). Such requests are held here instead and delivered when the group starts, as
//! a slower network would have delivered them. The holding is bounded in messages and in time.
//! Only vote requests are held: appends and heartbeats come again anyway, and a stale one (a
//! commit index from before a crash) must not reach a group that starts empty.

use std::collections::BTreeMap;

use raft::eraftpb::Message;

use crate::ids::GroupId;

/// Messages held for groups not started yet.
#[derive(Debug, Default)]
pub(super) struct EarlyMessages {
    /// Per group: the tick of its first held message, and the messages in arrival order.
    held: BTreeMap<GroupId, (u64, Vec<Message>)>,
    count: usize,
}

impl EarlyMessages {
    /// Holds `message` for `group`, received at tick `now`, unless `max` messages are held.
    pub(super) fn hold(&mut self, group: GroupId, message: Message, now: u64, max: usize) {
        if self.count >= max {
            return; // dropped, as the network could have
        }
        self.held
            .entry(group)
            .or_insert_with(|| (now, Vec::new()))
            .1
            .push(message);
        self.count += 1;
    }

    /// The messages held for `group`, which starts now.
    pub(super) fn take(&mut self, group: GroupId) -> Vec<Message> {
        let messages = self.held.remove(&group).map(|(_, m)| m).unwrap_or_default();
        self.count -= messages.len();
        messages
    }

    /// Forgets what has been held since before tick `oldest` (for a group that never started
    /// here: a deleted topic's, or one this node does not host).
    pub(super) fn expire(&mut self, oldest: u64) {
        let count = &mut self.count;
        self.held.retain(|_, (since, messages)| {
            let keep = *since >= oldest;
            if !keep {
                *count -= messages.len();
            }
            keep
        });
    }

    /// The count matches what is held.
    pub(super) fn invariants(&self) {
        assert_eq!(
            self.count,
            self.held.values().map(|(_, m)| m.len()).sum::<usize>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_messages_are_bounded_taken_once_and_expire() {
        let mut early = EarlyMessages::default();
        for i in 0..5 {
            early.hold(GroupId(7), Message::default(), i, 4);
        }
        early.hold(GroupId(8), Message::default(), 10, 5);
        early.invariants();
        assert_eq!(early.take(GroupId(7)).len(), 4, "bounded");
        assert!(early.take(GroupId(7)).is_empty(), "taken once");
        early.expire(11);
        early.invariants();
        assert!(early.take(GroupId(8)).is_empty(), "expired");
    }
}
