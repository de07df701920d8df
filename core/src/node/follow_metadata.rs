//! How a node follows the cluster metadata: it applies what the metadata group applied
//! (entries, or a snapshot of the whole state that replaced them), starts and stops exactly the
//! partition groups the metadata names it a replica of, and answers the admin requests that
//! waited on those entries.

use std::collections::BTreeSet;

use crate::coordinator::{Coordinator, OFFSETS_TOPIC};
use crate::ids::{GroupId, RaftIndex};
use crate::io::{Response, TraceEvent, WalRecord};
use crate::metadata::{
    decode_entry, AdminError, MetadataChange, MetadataState, PartitionAssignment, TopicMeta,
    METADATA_GROUP,
};
use crate::partition::{Applied, LogKind};
use crate::txn::{TxnCoordinator, TRANSACTION_STATE_TOPIC};

use super::coordinators::Hosted;

use super::{Node, Sink};

impl Node {
    /// Applies what the metadata group just applied, starting and stopping partition groups,
    /// and answers the admin requests waiting on it.
    pub(super) fn apply_metadata(&mut self, sink: &mut Sink, touched: &mut BTreeSet<GroupId>) {
        let entries = self
            .groups
            .get_mut(&METADATA_GROUP)
            .expect("the metadata group is never removed")
            .take_commands_applied();
        for applied in entries {
            let (index, term, data) = match applied {
                Applied::Entry(index, term, data) => (index, term, data),
                Applied::Snapshot(index, state) => {
                    self.restore_metadata(index, &state, sink, touched);
                    continue;
                }
            };
            let state = self.metadata.as_mut().expect("metadata group runs");
            let result = if data.is_empty() {
                state.apply_noop(index); // a leader's no-op
                None
            } else {
                let entry = decode_entry(&data)
                    .expect("metadata entries are encoded by the node that proposed them");
                let result = state.apply(index, term, &entry.command, entry.limits);
                if let Ok(change) = &result {
                    self.on_metadata_change(change, sink, touched);
                }
                if let Some(origin) = entry.origin {
                    self.forwarded_applied(origin, &result, sink);
                }
                Some(result)
            };
            sink.trace(TraceEvent::MetadataApplied {
                index,
                changed: matches!(result, Some(Ok(_))),
            });
            while self.admin_pending.front().is_some_and(|p| p.index <= index) {
                let pending = self.admin_pending.pop_front().expect("checked");
                let response = match &result {
                    Some(result) if pending.index == index && pending.term == term => {
                        result.clone().map(Some)
                    }
                    // Another entry took its place: the command is definitely not in the log.
                    _ => Err(AdminError::NotController { leader: None }),
                };
                sink.reply(pending.id, Response::Admin(response));
            }
        }
    }

    /// A snapshot of the metadata replaced the log up to `index` (this node's own after a
    /// restart, or its leader's when it was far behind): the state becomes the snapshot's, and
    /// the partition groups follow it as if every entry had been applied.
    fn restore_metadata(
        &mut self,
        index: RaftIndex,
        state: &[u8],
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        let restored = MetadataState::decode(state).expect("metadata snapshots are checksummed");
        assert_eq!(
            restored.applied(),
            index,
            "a snapshot is the state at its index"
        );
        let previous = self
            .metadata
            .replace(restored)
            .expect("metadata group runs");
        assert!(
            previous.applied() <= index,
            "a snapshot never takes the metadata back"
        );
        let restored = self.metadata.as_ref().expect("just set");
        // Deleted topics: stop their groups.
        let gone: Vec<TopicMeta> = previous
            .topics()
            .values()
            .filter(|t| restored.topic(&t.name).map(|r| r.id) != Some(t.id))
            .cloned()
            .collect();
        // Every partition the restored state names (starting a group is a no-op if it runs).
        let now: Vec<TopicMeta> = restored.topics().values().cloned().collect();
        let next_group = restored.next_group();
        for topic in gone {
            self.stop_partitions(&topic, sink);
        }
        for topic in now {
            self.host_partitions(&topic, &topic.partitions, touched);
        }
        // Groups the disk held that the snapshot's state does not name were deleted before
        // it (group ids are never reused); later entries can name only newer groups.
        let doomed: Vec<GroupId> = self
            .parked
            .keys()
            .copied()
            .filter(|g| g.0 < next_group)
            .collect();
        for group in doomed {
            self.parked.remove(&group);
            sink.write(WalRecord::RemoveGroup { group }, true);
        }
        sink.trace(TraceEvent::MetadataRestored { index });
        // Entries that waited here were replaced unseen: whether they are in the log is
        // unknown.
        while self.admin_pending.front().is_some_and(|p| p.index <= index) {
            let pending = self.admin_pending.pop_front().expect("checked");
            sink.reply(pending.id, Response::Admin(Err(AdminError::TimedOut)));
        }
    }

    fn on_metadata_change(
        &mut self,
        change: &MetadataChange,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        let state = self.metadata.as_ref().expect("metadata group runs");
        match change {
            MetadataChange::TopicCreated { name, .. } => {
                let topic = state.topic(name).expect("just created").clone();
                self.host_partitions(&topic, &topic.partitions, touched);
            }
            MetadataChange::PartitionsCreated { name, from } => {
                let topic = state.topic(name).expect("just grown").clone();
                self.host_partitions(&topic, &topic.partitions[*from as usize..], touched);
            }
            MetadataChange::TopicDeleted(topic) => self.stop_partitions(topic, sink),
            // Read where they are used (retention reads them at every check), but for the
            // cleanup policy, which the partitions' leaders check at produce.
            MetadataChange::TopicConfigsChanged { name } => {
                let topic = state.topic(name).expect("just changed").clone();
                self.set_cleanup(&topic);
            }
        }
    }

    /// Starts the groups of `partitions` (of `topic`) that this node is a replica of and does
    /// not run yet, from what its disk held for them.
    fn host_partitions(
        &mut self,
        topic: &TopicMeta,
        partitions: &[PartitionAssignment],
        touched: &mut BTreeSet<GroupId>,
    ) {
        let coordinators = topic.name == OFFSETS_TOPIC;
        let txn_coordinators = topic.name == TRANSACTION_STATE_TOPIC;
        for partition in partitions {
            if !partition.replicas.contains(&self.config.node_id)
                || self.groups.contains_key(&partition.group)
            {
                continue;
            }
            let durable = self.parked.remove(&partition.group);
            // A partition new to this node: its first replica campaigns at once, so a new
            // topic has leaders in about a round trip, not after an election timeout.
            let campaign =
                durable.is_none() && partition.replicas.first() == Some(&self.config.node_id);
            let kind = if coordinators || txn_coordinators {
                LogKind::Commands
            } else {
                LogKind::Records(topic.timestamps())
            };
            self.start_group(partition.group, &partition.replicas, kind, durable);
            if campaign {
                self.groups
                    .get_mut(&partition.group)
                    .expect("just started")
                    .campaign();
            }
            if coordinators {
                let logger = self.logger.new(slog::o!("group" => partition.group.0));
                let mut coordinator = Coordinator::new(
                    (self.config.node_id.0, partition.group),
                    (
                        self.config.pending_requests_max,
                        self.config.group_entry_bytes_max,
                    ),
                    self.config.coordinator,
                    &logger,
                );
                coordinator.planted_assignment_to_all = self.config.planted.assignment_to_all();
                self.coordinators
                    .insert(partition.group, Hosted::Group(coordinator));
            }
            if txn_coordinators {
                let index = topic
                    .partitions
                    .iter()
                    .position(|p| p.group == partition.group)
                    .expect("a partition of the topic");
                let mut coordinator = TxnCoordinator::new(
                    (index as u32, partition.group),
                    (
                        self.config.pending_requests_max,
                        self.config.group_entry_bytes_max,
                    ),
                    self.config.txn,
                    &self.logger,
                );
                coordinator.planted_accept_fenced_epoch = self.config.planted.accept_fenced_epoch();
                self.coordinators
                    .insert(partition.group, Hosted::Txn(coordinator));
            }
            touched.insert(partition.group);
        }
        // Started now or before (a restored snapshot names every topic again, maybe with
        // other configurations).
        self.set_cleanup(topic);
    }

    /// Tells the partitions of `topic` hosted here its cleanup policy.
    fn set_cleanup(&mut self, topic: &TopicMeta) {
        let cleanup = topic.cleanup();
        for partition in &topic.partitions {
            if let Some(replica) = self.groups.get_mut(&partition.group) {
                replica.set_cleanup(cleanup);
            }
        }
    }

    /// Stops a deleted topic's groups here and makes the disk forget them.
    fn stop_partitions(&mut self, topic: &TopicMeta, sink: &mut Sink) {
        for partition in &topic.partitions {
            // Their waiting answers are dropped; the clients time out and look again.
            self.coordinators.remove(&partition.group);
            let hosted = match self.groups.remove(&partition.group) {
                Some(mut replica) => {
                    replica.fail_pending(sink);
                    true
                }
                None => false,
            };
            let parked = self.parked.remove(&partition.group).is_some();
            if hosted || parked {
                // Synced: the storage deletes the files only after a sync, so that the commit
                // of the deletion is durable before the files are gone.
                sink.write(
                    WalRecord::RemoveGroup {
                        group: partition.group,
                    },
                    true,
                );
            }
        }
    }
}
