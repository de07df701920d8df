//! Which peers this node hears from, so that quiet groups (`partition/quiesce.rs`) wake when
//! their leader may be gone: a quiet follower does not tick, so it would never time out.
//!
//! Every peer that is a metadata voter gossips which groups it leads every
//! `leader_gossip_ticks` (`leaders.rs`), so a peer unheard for an election timeout is taken
//! for gone: the quiet groups it is a replica of wake, tick, and elect a new leader if it is.
//! A peer's gossip that no longer claims a group at the term a quiet follower knows (its node
//! restarted, or it stepped down) wakes that follower too.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::NodeId;

use super::Node;

/// When each peer was last heard from.
#[derive(Debug, Default)]
pub(super) struct PeerLiveness {
    /// The node tick of each peer's latest message.
    heard: BTreeMap<NodeId, u64>,
    /// Peers unheard for an election timeout (their quiet groups were woken once).
    silent: BTreeSet<NodeId>,
}

impl PeerLiveness {
    /// Peers unheard for an election timeout: a leader with a follower among them does not
    /// quiesce (it keeps ticking, so that the follower leaves its replicas in sync).
    pub(super) fn silent(&self) -> &BTreeSet<NodeId> {
        &self.silent
    }
}

impl Node {
    /// A message came from `peer`.
    pub(super) fn heard_from(&mut self, peer: NodeId) {
        self.liveness.heard.insert(peer, self.ticks);
        self.liveness.silent.remove(&peer);
    }

    /// Every tick: a peer unheard for an election timeout wakes the quiet groups it is a
    /// replica of (once, when it falls silent: groups with a silent replica do not quiesce).
    pub(super) fn wake_for_silent_peers(&mut self) {
        let limit = self.config.election_tick as u64;
        let me = self.config.node_id;
        for peer in self.config.metadata_voters.iter().filter(|p| **p != me) {
            let heard = self.liveness.heard.get(peer).copied().unwrap_or(0);
            if self.ticks.saturating_sub(heard) <= limit || !self.liveness.silent.insert(*peer) {
                continue;
            }
            let mut woken = 0_u64;
            for replica in self.groups.values_mut() {
                if replica.is_quiet() && replica.is_voter(*peer) {
                    replica.wake();
                    self.awake.insert(replica.group());
                    woken += 1;
                }
            }
            if woken > 0 {
                slog::info!(self.logger, "woke quiet partitions: a peer fell silent";
                    "peer" => peer.0, "partitions" => woken);
            }
        }
    }

    /// After `from`'s leader gossip: quiet followers of `from` that it no longer claims to
    /// lead at their term wake.
    pub(super) fn wake_unclaimed(&mut self, from: NodeId) {
        let Some(led) = self.remote_leaders.get(&from) else {
            return;
        };
        for replica in self.groups.values_mut() {
            if !replica.is_quiet() || replica.leader_hint() != Some(from) {
                continue;
            }
            if led.get(&replica.group()).map(|(t, _)| *t) != Some(replica.term()) {
                replica.wake();
                self.awake.insert(replica.group());
            }
        }
    }

    /// Quiet groups on this node (tests, the simulator's statistics).
    pub fn quiet_groups(&self) -> usize {
        self.groups.values().filter(|r| r.is_quiet()).count()
    }
}
