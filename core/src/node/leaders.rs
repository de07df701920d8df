//! What a node knows of groups' leaders beyond its own: the leader gossip it sends and
//! receives (with each group's replicas in sync).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::codec::{Reader, Writer};
use crate::ids::{GroupId, NodeId, Term};
use crate::partition::Replica;

use super::{Node, Sink, LEADERS_GROUP};

impl Node {
    /// Tells every peer which groups this node leads.
    pub(super) fn gossip_leaders(&mut self, sink: &mut Sink) {
        let mut w = Writer::default();
        let leading: Vec<(GroupId, Term, Vec<NodeId>)> = self
            .groups
            .values()
            .filter_map(|r| Some((r.group(), r.leading()?, r.in_sync(&self.config)?)))
            .collect();
        w.u32(leading.len() as u32);
        for (group, term, in_sync) in leading {
            w.u64(group.0);
            w.u64(term.0);
            w.u8(u8::try_from(in_sync.len()).expect("a group has few replicas"));
            for node in in_sync {
                w.u64(node.0);
            }
        }
        let context = Bytes::from(w.bytes);
        for peer in &self.config.metadata_voters {
            if *peer != self.config.node_id {
                let message = raft::eraftpb::Message {
                    from: self.config.node_id.raft_id().0,
                    to: peer.raft_id().0,
                    context: context.clone(),
                    ..Default::default()
                };
                sink.send(LEADERS_GROUP, message);
            }
        }
    }

    pub(super) fn note_leaders(&mut self, from: NodeId, context: &[u8]) {
        let mut r = Reader::new(context);
        let decoded = (|| {
            let count = r.u32()?;
            let mut led = BTreeMap::new();
            for _ in 0..count.min(1 << 20) {
                let (group, term) = (GroupId(r.u64()?), Term(r.u64()?));
                let in_sync = (0..r.u8()?)
                    .map(|_| r.u64().map(NodeId))
                    .collect::<Result<Vec<_>, _>>()?;
                led.insert(group, (term, in_sync));
            }
            Ok::<_, crate::codec::DecodeError>(led)
        })();
        // A peer's gossip that does not decode is dropped, as the network could have.
        if let Ok(led) = decoded {
            self.remote_leaders.insert(from, led);
        }
    }

    /// The leader of a group and its term, as far as this node knows: its own view for groups
    /// it hosts, else the peers' gossip (the claim with the highest term).
    pub fn leader(&self, group: GroupId) -> Option<(NodeId, Term)> {
        if let Some(status) = self.groups.get(&group).map(Replica::status) {
            if let Some(leader) = status.leader {
                return Some((leader, status.term));
            }
        }
        self.remote_leaders
            .iter()
            .filter_map(|(node, led)| led.get(&group).map(|(term, _)| (*node, *term)))
            .max_by_key(|(_, term)| *term)
    }

    /// Whether a group has ever had a leader, as far as this node knows: for a group it hosts,
    /// whether its log has a committed entry (which only a leader makes); else whether a
    /// leader is known. Unlike [`Node::leader`], it stays true while a dead leader is
    /// replaced, so a topic whose partitions all had leaders is never shown as just created.
    pub fn has_had_leader(&self, group: GroupId) -> bool {
        self.groups.get(&group).is_some_and(Replica::has_had_leader) || self.leader(group).is_some()
    }

    /// Whether this node knows who leads what, as well as a node that has run a while: it
    /// has heard every peer's leader gossip since it started, and knows a leader for every
    /// group it hosts that has had one. A restarted node serves clients only then (or after a
    /// deadline, the runtime's): before, it would show partitions that have leaders as
    /// leaderless (leader -1), which clients such as librdkafka take for a lasting error.
    pub fn leaders_settled(&self) -> bool {
        let me = self.config.node_id;
        self.config
            .metadata_voters
            .iter()
            .all(|peer| *peer == me || self.remote_leaders.contains_key(peer))
            && self
                .groups
                .iter()
                .all(|(group, replica)| !replica.has_had_leader() || self.leader(*group).is_some())
    }

    /// The replicas in sync of a group (Kafka's ISR), as its leader knows them: this node's
    /// own count when it leads, else what the leader last gossiped; `None` when no leader is
    /// known.
    pub fn in_sync(&self, group: GroupId) -> Option<Vec<NodeId>> {
        if let Some(in_sync) = self
            .groups
            .get(&group)
            .and_then(|r| r.in_sync(&self.config))
        {
            return Some(in_sync);
        }
        let (leader, term) = self.leader(group)?;
        self.remote_leaders
            .get(&leader)
            .and_then(|led| led.get(&group))
            .filter(|(t, _)| *t == term)
            .map(|(_, in_sync)| in_sync.clone())
    }
}
