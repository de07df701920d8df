//! Quiescing idle partitions, as CockroachDB and TiKV do: a group with nothing to do stops
//! ticking, so that a node's idle cost is bounded by its active partitions, not by all it hosts.
//!
//! A leader whose log is committed, applied and persisted everywhere (every follower matched
//! up to its last entry and said it knows it committed, and heard from within an election
//! timeout), with nothing waiting, sends each follower a quiescing heartbeat (a raft-rs
//! `MsgHeartbeat` with [`QUIESCE`] as its context and its last entry's index and term) and
//! stops ticking. A follower that holds
//! exactly that log stops ticking too; one that does not keeps ticking, times out and wakes
//! the leader with its campaign.
//!
//! Any other Raft message for the group, a proposal, a campaign or a leadership transfer wakes
//! a quiet replica. Since a quiet follower no longer times out, `Node` wakes the quiet groups
//! of a peer it stops hearing from, and those whose leader stops claiming them in its leader
//! gossip (`node/liveness.rs`). Quiescing changes only when ticks happen, never what Raft
//! decides, so it cannot break safety; it can only delay an election.

use std::collections::BTreeSet;

use raft::eraftpb::{Message, MessageType};
use raft::{ProgressState, StateRole};

use crate::ids::NodeId;
use crate::node::{NodeConfig, Sink};

use super::{Kind, Replica};

/// The context of a quiescing heartbeat and of the follower's answer to it.
pub(crate) const QUIESCE: &[u8] = b"oxbow:quiesce";

/// Whether a message is a quiescing heartbeat or the answer to one: the messages that neither
/// wake a quiet replica nor keep a follower awake.
pub(super) fn is_quiescing(message: &Message) -> bool {
    matches!(
        message.get_msg_type(),
        MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
    ) && message.context.as_ref() == QUIESCE
}

/// A leader's quiescing heartbeat: the log a follower must hold exactly to quiesce with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QuiescingHeartbeat {
    from: u64,
    term: u64,
    /// The leader's last index, all of it committed.
    index: u64,
    /// The term of the entry at `index`.
    log_term: u64,
}

impl QuiescingHeartbeat {
    /// The quiescing heartbeat `message` is, if it is one.
    pub(crate) fn of(message: &Message) -> Option<Self> {
        (message.get_msg_type() == MessageType::MsgHeartbeat && is_quiescing(message)).then_some(
            Self {
                from: message.from,
                term: message.term,
                index: message.index,
                log_term: message.log_term,
            },
        )
    }
}

impl Replica {
    /// Whether the group is quiet: it is not ticked.
    pub(crate) fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Wakes a quiet replica (it is ticked again).
    pub(crate) fn wake(&mut self) {
        self.quiet = false;
    }

    /// After a tick of the leader: quiesces the group when it has nothing to do (see the
    /// module). Only partitions quiesce (a command log's state machine has timers of its own),
    /// and only with every follower a peer that gossips, so that its silence wakes them, and
    /// none of them silent now (a silent follower must be left out of the ISR by ticking).
    pub(super) fn maybe_quiesce(
        &mut self,
        config: &NodeConfig,
        silent: &BTreeSet<NodeId>,
        sink: &mut Sink,
    ) {
        if !config.quiesce || self.quiet || self.leader.is_none() || !self.is_idle() {
            return;
        }
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        let heard_within = config.election_tick as u64;
        let me = raft.id;
        let followers_quiet = raft.prs().iter().all(|(id, pr)| {
            *id == me
                || (pr.matched == last
                    && pr.committed_index == last
                    && pr.state == ProgressState::Replicate
                    && config
                        .metadata_voters
                        .iter()
                        .any(|n| n.raft_id().0 == *id && !silent.contains(n))
                    && self
                        .followers_heard
                        .get(id)
                        .is_some_and(|t| self.ticks - t <= heard_within))
        });
        if !followers_quiet || raft.lead_transferee.is_some() {
            return;
        }
        let log_term = self
            .raw
            .store()
            .term_at(last)
            .expect("the last entry is held");
        let term = raft.term;
        let followers: Vec<u64> = raft
            .prs()
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != me)
            .collect();
        for to in followers {
            sink.send(
                self.group,
                Message {
                    msg_type: MessageType::MsgHeartbeat,
                    to,
                    from: me,
                    term,
                    commit: last,
                    index: last,
                    log_term,
                    context: QUIESCE.to_vec().into(),
                    ..Default::default()
                },
            );
        }
        self.checkpoint(config, sink, true);
        self.quiet = true;
    }

    /// After a quiescing heartbeat was stepped: the follower quiesces when its log is exactly
    /// the leader's, all of it committed and applied, and nothing waits here.
    pub(crate) fn on_quiescing_heartbeat(
        &mut self,
        heartbeat: QuiescingHeartbeat,
        config: &NodeConfig,
        sink: &mut Sink,
    ) {
        let QuiescingHeartbeat {
            from,
            term,
            index,
            log_term,
        } = heartbeat;
        let raft = &self.raw.raft;
        let matches = config.quiesce
            && raft.state == StateRole::Follower
            && raft.leader_id == from
            && raft.term == term
            && raft.raft_log.last_index() == index
            && raft.raft_log.committed == index
            && self.raw.store().term_at(index) == Some(log_term)
            && self.is_idle();
        if matches {
            self.checkpoint(config, sink, true);
        }
        self.quiet = matches;
    }

    /// Nothing is in flight or waiting: the log is applied, persisted and reported applied
    /// to raft-rs; no request, read, snapshot or persisted message waits.
    fn is_idle(&self) -> bool {
        let log = &self.raw.raft.raft_log;
        let last = log.last_index();
        let Kind::Records(records) = &self.kind else {
            return false;
        };
        log.committed == last
            && self.applied.0 == last
            && log.persisted == last
            && log.applied == last
            && self.held.is_empty()
            && self.reads.is_empty()
            && self.snapshot_ticks.is_empty()
            && records.produce.is_idle()
            && records.log_start_waits.is_empty()
    }
}
