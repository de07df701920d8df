//! Transaction markers on a coordinator partition (a `__consumer_offsets` partition is a
//! command log, so a marker is a command): the leader writes the marker a transaction
//! coordinator asks for as a [`Command::TxnEnd`], and says so once it applies, so that the
//! transaction completes only when its offsets are committed offsets (or dropped).

use super::command::{Command, TxnEnd};
use super::proposals::{Entry, Waiting};
use super::{CommandLog, Coordinator};
use crate::partition::{MarkerOutcome, MarkerWrite};
use crate::time::Now;

impl Coordinator {
    /// Writes the marker `write` asks for. One whose transaction has ended here already is
    /// written; one proposed and not applied yet is proposed. A marker is written even with
    /// nothing pending of its transaction: a transactional offset commit verified before it
    /// may still be on its way, and is dropped when it applies after it.
    pub(crate) fn write_marker(
        &mut self,
        log: &mut dyn CommandLog,
        now: Now,
        write: MarkerWrite,
    ) -> MarkerOutcome {
        let serving = self.live.as_ref().map(|l| l.term);
        if serving.is_none() || log.serving() != serving {
            return MarkerOutcome::Refused;
        }
        let producer_id = write.marker.producer_id;
        if self.stored.is_ended(producer_id, write.txn_start_ms) {
            return MarkerOutcome::Written;
        }
        let proposed = self.proposals.queue.iter().any(|p| match &p.waiting {
            Waiting::Marker(w) => {
                w.marker.producer_id == producer_id && w.txn_start_ms == write.txn_start_ms
            }
            _ => false,
        });
        if proposed {
            return MarkerOutcome::Proposed;
        }
        let command = Command::TxnEnd(TxnEnd {
            producer_id,
            epoch: write.marker.epoch,
            txn_start_ms: write.txn_start_ms,
            commit: write.marker.commit,
            ended_ms: now.wall_ms,
        });
        let entry = Entry::new(&command, &self.stored, self.stored_bytes);
        let waiting = Waiting::Marker(write);
        match self
            .proposals
            .propose(log, entry, now, waiting, &self.logger)
        {
            Ok(()) => MarkerOutcome::Proposed,
            // Not leading, or too busy: the transaction coordinator asks again.
            Err(_) => MarkerOutcome::Refused,
        }
    }

    /// The markers applied since the last call, for their transaction coordinators.
    pub(crate) fn take_markers_written(&mut self) -> Vec<MarkerWrite> {
        std::mem::take(&mut self.markers_written)
    }
}
