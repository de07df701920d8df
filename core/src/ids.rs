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
    /// A broker in the cluster. Also its Raft peer id, so it is never 0.
    NodeId(u64)
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

impl NodeId {
    /// The Raft peer id of this node.
    pub fn raft_id(self) -> u64 {
        assert!(self.0 != 0, "node id 0 is reserved by raft");
        self.0
    }
}

impl Offset {
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
