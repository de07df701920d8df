//! The raft messages that cross between nodes, checked at the core's edge: peers' messages
//! that would break this node outside raft-rs are dropped on the way in, and messages raft-rs
//! forwards for another node are made this node's or dropped on the way out, so that every
//! message a peer receives is from its sender.

use crate::ids::RaftId;

/// Why a peer's message would break this node outside raft-rs, if it would: only a broken or
/// hostile peer sends one (links are authenticated), and it is dropped. raft-rs's own checks
/// (a commit index past the log, say) are left to it: they are how the simulator catches
/// planted durability bugs.
pub(super) fn malformed(message: &raft::eraftpb::Message) -> Option<&'static str> {
    // Kafka's leader epoch is an i32 and every stored batch carries its term as one: a term
    // past it could never be served.
    let fits = |term: u64| term <= i32::MAX as u64;
    let terms_fit = fits(message.term)
        && fits(message.log_term)
        && message.get_entries().iter().all(|e| fits(e.term))
        && fits(message.get_snapshot().get_metadata().term);
    if !terms_fit {
        return Some("a term past i32::MAX");
    }
    // raft-rs appends an append's entries as given; the log store asserts they continue the
    // log at `index + 1`, one index apart, with terms that never go back nor pass the
    // sender's.
    if message.get_msg_type() == raft::eraftpb::MessageType::MsgAppend {
        let mut index = message.index;
        let mut term = message.log_term;
        for entry in message.get_entries() {
            if Some(entry.index) != index.checked_add(1) || entry.term < term {
                return Some("append entries that do not continue the log");
            }
            if entry.term > message.term {
                return Some("append entries of a later term than the sender's");
            }
            index = entry.index;
            term = entry.term;
        }
    }
    None
}

/// Whether a message raft-rs wants sent may leave as this node's (`me`), making it so where it
/// can. raft-rs forwards some messages it received to the leader it knows (a proposal, a
/// leadership transfer, a read index) and keeps their `from` (it sets `from` only when it is
/// unset), so a follower that got one from a node with a stale leader hint would pass it on
/// as that node's, and the receiving transport refuses a message not from its sender (the
/// link is dropped). A proposal does not depend on who sent it, so it leaves as this node's;
/// the others name their sender as the one to answer or to lead, so they are dropped, and the
/// request they carry times out, as one lost on the network would.
pub(super) fn leaves_as(me: RaftId, message: &mut raft::eraftpb::Message) -> bool {
    if message.from == me.0 {
        return true;
    }
    if message.get_msg_type() == raft::eraftpb::MessageType::MsgPropose {
        message.from = me.0;
        return true;
    }
    false
}
