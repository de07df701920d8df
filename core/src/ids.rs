//! Identifier newtypes. Raft indexes, Kafka offsets, terms and producer ids are different number
//! spaces; keeping each in its own type makes mixing them a compile error.

use std::fmt;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident($inner:ty)) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $inner);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// A broker in the cluster: Kafka's `node.id` (a non-negative int32, so 0 is allowed),
    /// as clients, logs and the configuration see it. Inside raft-rs it is a [`RaftId`].
    NodeId(u64)
);
id_type!(
    /// A node's peer id inside raft-rs, which reserves 0 for "none". Only the core's Raft
    /// plumbing and the peer transport's check of raft messages see it; see
    /// [`NodeId::raft_id`] for the mapping.
    RaftId(u64)
);
id_type!(
    /// One Raft group; today exactly one partition of one topic.
    GroupId(u64)
);
id_type!(
    /// A Kafka offset: the position of a record in a partition, dense over records only.
    Offset(i64)
);
id_type!(
    /// A Raft term. Also the partition leader epoch stamped into record batches.
    Term(u64)
);
id_type!(
    /// A Raft log index. Not an offset: leader no-ops and configuration entries carry no records.
    RaftIndex(u64)
);
id_type!(
    /// A Kafka idempotent producer id; negative means "not idempotent".
    ProducerId(i64)
);
id_type!(
    /// A Kafka producer epoch; a larger epoch fences every smaller one.
    ProducerEpoch(i16)
);
id_type!(
    /// A Kafka producer sequence number of the first record of a batch.
    Sequence(i32)
);
id_type!(
    /// A topic's stable id (Kafka's topic UUID); 0 is Kafka's null id and never names a topic.
    TopicId(u128)
);
id_type!(
    /// A consumer group's generation: it grows with every completed rebalance, and fences
    /// members of earlier ones.
    Generation(i32)
);
id_type!(
    /// Identifies a client request for the driver, so replies can be routed back.
    RequestId(u64)
);
id_type!(
    /// Identifies a write handed to the node's disk; completions come back in this order.
    IoSeq(u64)
);

/// The Raft id of node 0. Kafka node ids are non-negative int32s, so no node has this id as
/// its own, and every other node keeps its node id as its Raft id: the votes and voter sets
/// that data directories of earlier versions hold (written when node ids started at 1) still
/// name the same nodes, and such nodes still understand each other's raft messages.
const NODE_ZERO_RAFT_ID: u64 = 1 << 31;

impl NodeId {
    /// The largest node id: Kafka's broker ids are int32s.
    pub const MAX: NodeId = NodeId(i32::MAX as u64);

    /// This node's peer id inside raft-rs: its node id, except node 0 (which raft-rs reserves),
    /// which is 2^31, just past the largest node id. A bijection between `0..=NodeId::MAX` and
    /// `1..=2^31`.
    pub fn raft_id(self) -> RaftId {
        assert!(self <= Self::MAX, "node id {} is past i32::MAX", self.0);
        if self.0 == 0 {
            RaftId(NODE_ZERO_RAFT_ID)
        } else {
            RaftId(self.0)
        }
    }
}

impl RaftId {
    /// The node this Raft id is; `None` for raft-rs's 0 ("none") and for ids no node has.
    pub fn node(self) -> Option<NodeId> {
        match self.0 {
            0 => None,
            NODE_ZERO_RAFT_ID => Some(NodeId(0)),
            id if id <= NodeId::MAX.0 => Some(NodeId(id)),
            _ => None,
        }
    }

    /// The node this Raft id of a voter is (raft-rs only ever names voters, and the voters
    /// only ever come from node ids).
    pub fn voter(self) -> NodeId {
        self.node()
            .unwrap_or_else(|| panic!("Raft id {} names no node", self.0))
    }
}

impl Offset {
    /// Past every offset: no bound.
    pub const MAX: Self = Self(i64::MAX);

    /// The offset `count` records after this one.
    pub fn plus(self, count: i64) -> Self {
        assert!(count >= 0);
        Self(self.0.checked_add(count).expect("offset overflow"))
    }
}

impl Sequence {
    /// The sequence that follows the last record of a batch of `count` records starting here,
    /// wrapping at `i32::MAX` as Kafka does.
    pub fn after(self, count: i32) -> Self {
        assert!(count > 0);
        let next = i64::from(self.0) + i64::from(count);
        Self((next % (i64::from(i32::MAX) + 1)) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_ids_are_a_bijection_that_keeps_earlier_ids() {
        // Ids 1.. are their own Raft ids, as before node 0 was allowed: data directories and
        // peers of earlier versions name the same nodes.
        for id in [1, 2, 3, 7, 1_000, i32::MAX as u64] {
            assert_eq!(NodeId(id).raft_id(), RaftId(id));
            assert_eq!(RaftId(id).node(), Some(NodeId(id)));
        }
        // Node 0 gets a Raft id that is not 0 (raft-rs's "none") and no other node's.
        let zero = NodeId(0).raft_id();
        assert_ne!(zero, RaftId(0));
        assert!(zero.0 > NodeId::MAX.0);
        assert_eq!(zero.node(), Some(NodeId(0)));
        assert_eq!(zero.voter(), NodeId(0));
        // Nothing else maps to a node.
        assert_eq!(RaftId(0).node(), None);
        assert_eq!(RaftId(zero.0 + 1).node(), None);
        assert_eq!(RaftId(u64::MAX).node(), None);
        // Round trips over the edges of the range.
        for id in [0, 1, 2, (1 << 31) - 1] {
            assert_eq!(NodeId(id).raft_id().node(), Some(NodeId(id)));
        }
    }

    #[test]
    fn a_node_id_past_int32_has_no_raft_id() {
        // It would take node 0's Raft id.
        let taken = std::panic::catch_unwind(|| NodeId(1 << 31).raft_id());
        assert!(taken.is_err(), "{taken:?}");
        assert_eq!(NodeId::MAX.raft_id(), RaftId(i32::MAX as u64));
    }
}
