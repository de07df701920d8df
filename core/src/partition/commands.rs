//! The command-log side of a replica (the metadata group, a group coordinator's partition):
//! proposing and forwarding commands, collecting what the log applied ([`Applied`]) for `Node`
//! to apply to its state machine, and compacting the log behind a snapshot of that state machine
//! (the applied metadata, or a coordinator's state).

use bytes::Bytes;
use raft::eraftpb::{Entry, Snapshot};

use super::{Kind, Replica};
use crate::ids::{NodeId, RaftIndex, Term};
use crate::node::Sink;

/// What a command log applied, in order, for `Node` to apply to its state machine.
#[derive(Clone, Debug)]
pub(crate) enum Applied {
    /// An entry: index, term, command bytes (empty for a leader's no-op).
    Entry(RaftIndex, Term, Bytes),
    /// A snapshot replaced everything up to this index: the state machine's encoded state.
    Snapshot(RaftIndex, Bytes),
}

/// The state only a command log has: what it applied since `Node` last took it.
pub(super) struct CommandState {
    applied: Vec<Applied>,
}

impl CommandState {
    /// Starting from the store's latest `snapshot` (empty if none).
    pub(super) fn new(snapshot: &Snapshot) -> Self {
        let mut applied = Vec::new();
        if snapshot.get_metadata().index > 0 {
            // A command log's snapshot is its state machine's state, for `Node` to restore.
            applied.push(Applied::Snapshot(
                RaftIndex(snapshot.get_metadata().index),
                snapshot.data.clone(),
            ));
        }
        Self { applied }
    }

    /// Collects a normal entry for `Node`.
    pub(super) fn apply(&mut self, entry: &Entry) {
        self.applied.push(Applied::Entry(
            RaftIndex(entry.index),
            Term(entry.term),
            entry.data.clone(),
        ));
    }

    /// A leader's snapshot at `index` replaced the log: `state` is its state machine's state.
    pub(super) fn install_snapshot(&mut self, index: RaftIndex, state: Bytes) {
        self.applied.push(Applied::Snapshot(index, state));
    }
}

impl Replica {
    /// Proposes an entry of a command log; answers its index and term, or the leader
    /// this node knows of when it cannot propose.
    pub(crate) fn propose_command(
        &mut self,
        data: Bytes,
    ) -> Result<(RaftIndex, Term), Option<NodeId>> {
        assert!(self.is_command_log(), "commands go to command logs only");
        let Some(term) = self.serving_leader().map(|l| l.term) else {
            return Err(self.leader_hint());
        };
        let last_before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(Vec::new(), data.to_vec()).is_err() {
            return Err(self.leader_hint());
        }
        let index = RaftIndex(self.raw.raft.raft_log.last_index());
        assert_eq!(index.0, last_before + 1, "one proposal, one entry");
        Ok((index, term))
    }

    /// Hands a metadata proposal to the leader this follower knows of (raft-rs forwards it).
    pub(crate) fn forward_metadata(&mut self, data: Bytes) -> Result<(), Option<NodeId>> {
        assert!(self.is_command_log(), "commands go to command logs only");
        if self.leader_hint().is_none() || self.raw.propose(Vec::new(), data.to_vec()).is_err() {
            return Err(self.leader_hint());
        }
        Ok(())
    }

    /// What this command log applied since the last call, in order.
    pub(crate) fn take_commands_applied(&mut self) -> Vec<Applied> {
        match &mut self.kind {
            Kind::Commands(commands) => std::mem::take(&mut commands.applied),
            Kind::Records(_) => panic!("a record-batch partition applies no commands"),
        }
    }

    /// Compacts a command log up to what is applied, with `state` (the state machine's state
    /// at that index) as the snapshot. Only when everything applied is also persisted here.
    pub(crate) fn compact_commands(&mut self, state: Bytes, sink: &mut Sink) -> bool {
        assert!(
            self.is_command_log(),
            "a record-batch partition compacts itself (`compact`)"
        );
        let target = self.applied.0;
        if target <= self.snapshot_index.0 || self.raw.raft.raft_log.persisted < target {
            return false;
        }
        self.compact_to(target, state, sink);
        self.snapshot_index = RaftIndex(target);
        true
    }
}

impl crate::coordinator::CommandLog for Replica {
    fn serving(&self) -> Option<Term> {
        self.serving_term()
    }

    fn leading(&self) -> bool {
        Replica::leading(self).is_some()
    }

    fn propose(&mut self, data: Bytes) -> Option<(RaftIndex, Term)> {
        self.propose_command(data).ok()
    }
}
