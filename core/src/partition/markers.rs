//! Transaction markers on a record-batch partition: its leader writes the marker a transaction
//! coordinator asks for (Kafka's WriteTxnMarkers, for one partition) through the partition's
//! log, and says so once the marker is applied, so that the coordinator completes the
//! transaction only when every marker is committed.

use std::collections::VecDeque;

use raft::eraftpb::Entry;

use super::produce::encode_context;
use super::Replica;
use crate::batch::Marker;
use crate::ids::{GroupId, ProducerEpoch, ProducerId, RaftIndex, Term};
use crate::node::NodeConfig;
use crate::time::Now;

/// A marker for a partition's leader to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerWrite {
    /// The transaction coordinator's partition (its Raft group), where the answer goes.
    pub coordinator: GroupId,
    /// The transaction's id.
    pub transactional_id: String,
    /// The data partition's Raft group.
    pub group: GroupId,
    /// The data partition, (topic, partition).
    pub partition: (String, i32),
    /// The marker.
    pub marker: Marker,
    /// The transaction's start on its coordinator: what names it (`producer::OpenTxn`).
    pub txn_start_ms: i64,
}

/// What became of a marker write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerOutcome {
    /// Nothing of the transaction is open here: nothing to write, and that is committed.
    Written,
    /// Proposed: it is written once applied (`Replica::take_markers_written`).
    Proposed,
    /// This node cannot write it now (not the serving leader, or too busy): the coordinator
    /// asks again.
    Refused,
}

/// Markers proposed and not yet applied.
#[derive(Debug, Default)]
pub(super) struct PendingMarkers {
    proposed: VecDeque<(RaftIndex, Term, MarkerWrite)>,
    /// Applied since `Node` last took them.
    written: Vec<MarkerWrite>,
}

impl PendingMarkers {
    /// The entry at `applied`, of `term`, is applied: a marker proposed there in that term is
    /// written; one proposed there in another term was replaced, and is not.
    pub(super) fn resolve_applied(&mut self, applied: RaftIndex, term: Term) {
        while let Some((index, proposed_in, _)) = self.proposed.front() {
            if *index > applied {
                break;
            }
            let ours = *index == applied && *proposed_in == term;
            let (_, _, write) = self.proposed.pop_front().expect("checked");
            if ours {
                self.written.push(write);
            }
        }
    }

    /// A snapshot up to `index` was installed: whether the markers proposed up to there were
    /// written is unknown, and the coordinator asks again.
    pub(super) fn forget_overwritten(&mut self, index: RaftIndex) {
        self.proposed.retain(|(at, _, _)| *at > index);
    }

    pub(super) fn len(&self) -> usize {
        self.proposed.len()
    }

    pub(super) fn invariants(&self) {
        for pair in self.proposed.iter().collect::<Vec<_>>().windows(2) {
            assert!(pair[0].0 < pair[1].0, "markers proposed in log order");
        }
    }
}

impl Replica {
    /// Writes the marker `write` asks for, if the transaction it ends is open here (in the
    /// leader's log, or applied): a marker of a transaction that is not open here closes
    /// nothing, and is answered as written at once.
    pub(crate) fn write_marker(
        &mut self,
        config: &NodeConfig,
        now: Now,
        write: MarkerWrite,
    ) -> MarkerOutcome {
        assert_eq!(write.group, self.group);
        assert!(
            !self.is_command_log(),
            "markers of command logs are commands"
        );
        let Some(term) = self.serving_term() else {
            return MarkerOutcome::Refused;
        };
        let marker = write.marker;
        let records = self.kind.records();
        let open_in = |start: Option<(ProducerEpoch, i64)>| {
            start.is_some_and(|(epoch, start)| epoch <= marker.epoch && start == write.txn_start_ms)
        };
        let leader = records.produce.leader.as_ref().expect("serving leader");
        let in_log = open_in(leader.producers.open_transaction_of(marker.producer_id));
        let applied = open_in(records.producers().open_transaction_of(marker.producer_id));
        if !in_log && !applied {
            return MarkerOutcome::Written;
        }
        // Open in the applied state but closed in the log: a marker of it is proposed and not
        // applied yet. Another closes nothing and is answered once applied, after that one.
        if records.markers.len() >= config.pending_requests_max {
            return MarkerOutcome::Refused;
        }
        let leader = records.produce.leader.as_ref().expect("serving leader");
        let base_offset = leader.log_end_offset;
        let at = leader
            .producers
            .next_append_time(now.wall_ms, config.producer_expiration_ms);
        let batch = marker.batch(now.wall_ms).stamp(
            base_offset,
            term,
            records.produce.timestamps(),
            now.wall_ms,
        );
        let entry = Entry {
            data: batch.bytes().clone(),
            context: encode_context(&at, Some(write.txn_start_ms)),
            ..Entry::default()
        };
        let Ok(index) = self.propose_batch(entry, term) else {
            return MarkerOutcome::Refused;
        };
        let records = self.kind.records_mut();
        let leader = records.produce.leader.as_mut().expect("still leader");
        leader.log_end_offset = batch.next_offset();
        // As applying the entry will (`records::record_producer`).
        leader.producers.advance(&at);
        leader
            .producers
            .record_marker(&marker, base_offset, write.txn_start_ms);
        records.markers.proposed.push_back((index, term, write));
        MarkerOutcome::Proposed
    }

    /// Whether a transactional batch of `producer` at `epoch` needs its coordinator's
    /// verification before this leader appends it: no transaction of it is open here. (Not
    /// serving: the partition refuses the batch anyway.)
    pub(crate) fn needs_verification(&self, producer: ProducerId, epoch: ProducerEpoch) -> bool {
        let Some(leader) = &self.kind.records().produce.leader else {
            return false;
        };
        self.serving_term().is_some()
            && leader.producers.open_transaction(producer, epoch).is_none()
    }

    /// The markers applied since the last call.
    pub(crate) fn take_markers_written(&mut self) -> Vec<MarkerWrite> {
        match &mut self.kind {
            super::Kind::Records(records) => std::mem::take(&mut records.markers.written),
            super::Kind::Commands(_) => Vec::new(),
        }
    }
}
