//! The coordinators a node hosts on the partitions of the internal topics, one per partition
//! replica: a group coordinator on each `__consumer_offsets` partition, a transaction
//! coordinator on each `__transaction_state` partition. Both are command logs: their entries
//! are handed to the coordinator as they apply, a snapshot replaces its state, and the log is
//! compacted into a snapshot of that state every `command_entries_max` entries.

use crate::coordinator::Coordinator;
use crate::node::{NodeConfig, Sink};
use crate::partition::{Applied, Replica};
use crate::time::Now;
use crate::txn::TxnCoordinator;

/// The coordinator of one hosted partition of an internal topic.
#[derive(Debug)]
pub(crate) enum Hosted {
    /// A `__consumer_offsets` partition's group coordinator.
    Group(Coordinator),
    /// A `__transaction_state` partition's transaction coordinator.
    Txn(TxnCoordinator),
}

impl Hosted {
    /// Hands the coordinator what its partition applied (entries, or a snapshot) and, for the
    /// group coordinator, whether this node serves the partition now. True if a transaction
    /// coordinator applied something (its markers may be due at once).
    pub(crate) fn follow(&mut self, replica: &mut Replica, now: Now, sink: &mut Sink) -> bool {
        let applied = replica.take_commands_applied();
        let txn_applied = matches!(self, Self::Txn(_)) && !applied.is_empty();
        for applied in applied {
            match (applied, &mut *self) {
                (Applied::Entry(index, term, data), Self::Group(c)) => {
                    c.apply(index, term, &data, now, sink)
                }
                (Applied::Entry(index, term, data), Self::Txn(c)) => {
                    c.apply(index, term, &data, sink)
                }
                (Applied::Snapshot(index, state), Self::Group(c)) => c.restore(index, &state, sink),
                (Applied::Snapshot(index, state), Self::Txn(c)) => c.restore(index, &state, sink),
            }
        }
        if let Self::Group(c) = self {
            c.observe(replica.serving_term(), now, sink);
        }
        txn_applied
    }

    /// A tick: the coordinator's own timers, then the compaction of its log once it holds
    /// `command_entries_max` entries (the coordinator's state is the snapshot, each key once).
    pub(crate) fn tick(
        &mut self,
        replica: &mut Replica,
        config: &NodeConfig,
        now: Now,
        sink: &mut Sink,
    ) {
        match self {
            Self::Group(c) => c.tick(replica, now, sink),
            Self::Txn(c) => c.tick(replica, now, sink),
        }
        if replica.entries_held() >= config.command_entries_max {
            let (applied, state) = match self {
                Self::Group(c) => (c.applied(), c.stored().encode().into()),
                Self::Txn(c) => (c.applied(), c.snapshot()),
            };
            assert_eq!(applied, replica.applied_index());
            replica.compact_commands(state, sink);
        }
    }

    /// The group coordinator, if this is one.
    pub(crate) fn group(&self) -> Option<&Coordinator> {
        match self {
            Self::Group(c) => Some(c),
            Self::Txn(_) => None,
        }
    }

    /// The transaction coordinator, if this is one.
    pub(crate) fn txn(&self) -> Option<&TxnCoordinator> {
        match self {
            Self::Txn(c) => Some(c),
            Self::Group(_) => None,
        }
    }

    /// Asserts the coordinator's invariants.
    pub(crate) fn invariants(&self) {
        match self {
            Self::Group(c) => c.invariants(),
            Self::Txn(c) => c.invariants(),
        }
    }
}
