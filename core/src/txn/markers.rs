//! The coordinator's side of a transaction's end: once its outcome is stored
//! (`PrepareCommit`, `PrepareAbort`), the marker of that outcome goes to every partition of
//! the transaction, again until each partition's leader says it is written; then the
//! transaction is complete (`CompleteCommit`, `CompleteAbort`). And KIP-890's verification: a
//! partition's leader asks whether a producer added the partition to its open transaction
//! before it appends the transaction's first batch there.
//!
//! Which ids are preparing follows from the applied state, on every replica; what was written
//! is the leader's memory, which a new leader starts again from nothing (markers are
//! idempotent: a marker whose transaction is not open in a partition closes nothing).

use std::collections::{BTreeMap, BTreeSet};

use super::{TxnCommand, TxnCoordinator, TxnError, TxnState, Waiting};
use crate::batch::Marker;
use crate::coordinator::CommandLog;
use crate::ids::{ProducerEpoch, ProducerId};
use crate::time::{Instant, Now};

/// How long the leader waits for a partition's answer before it sends a marker again.
pub const MARKER_RETRY_MS: u64 = 1_000;

/// A marker the coordinator needs written to one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerJob {
    /// The transaction's id.
    pub transactional_id: String,
    /// The marker (its coordinator epoch is the coordinator's Raft term).
    pub marker: Marker,
    /// The transaction's start: what names it.
    pub txn_start_ms: i64,
    /// The partition, (topic, partition).
    pub partition: (String, i32),
}

/// What the leader knows of a preparing transaction's markers.
#[derive(Debug, Default)]
pub(super) struct MarkerProgress {
    /// The partitions whose marker is written.
    written: BTreeSet<(String, i32)>,
    /// When the markers not yet written were last sent.
    sent_at: Option<Instant>,
}

/// The markers of every preparing transaction.
#[derive(Debug, Default)]
pub(super) struct Markers {
    /// The ids whose transaction is `PrepareCommit` or `PrepareAbort` in the applied state.
    pub(super) preparing: BTreeSet<String>,
    /// The leader's progress per preparing id.
    pub(super) progress: BTreeMap<String, MarkerProgress>,
}

impl Markers {
    /// The applied state of `transactional_id` became `state` (`None`: removed).
    pub(super) fn on_applied(&mut self, transactional_id: &str, state: Option<TxnState>) {
        let preparing = matches!(
            state,
            Some(TxnState::PrepareCommit | TxnState::PrepareAbort)
        );
        if preparing {
            self.preparing.insert(transactional_id.to_string());
        } else {
            self.preparing.remove(transactional_id);
            self.progress.remove(transactional_id);
        }
    }
}

impl TxnCoordinator {
    /// The markers due to be sent (first sent, or not answered for [`MARKER_RETRY_MS`]), at
    /// most `max`; call only on the serving leader, whose Raft term is `term`.
    /// Nothing is due before the term has begun (`begin_term`, at the coordinator's first
    /// tick or request in it), which forgets what an earlier term sent.
    pub(crate) fn markers_due(&mut self, now: Now, term: u64, max: usize) -> Vec<MarkerJob> {
        let mut jobs = Vec::new();
        if self.counted_in != Some(crate::ids::Term(term)) {
            return jobs;
        }
        let coordinator_epoch = i32::try_from(term).expect("terms fit a leader epoch");
        for transactional_id in &self.markers.preparing {
            if jobs.len() >= max {
                break;
            }
            let meta = &self.stored.ids[transactional_id];
            let progress = self
                .markers
                .progress
                .entry(transactional_id.clone())
                .or_default();
            if progress
                .sent_at
                .is_some_and(|at| now.mono < at.plus_ms(MARKER_RETRY_MS))
            {
                continue;
            }
            progress.sent_at = Some(now.mono);
            let marker = Marker {
                producer_id: meta.producer_id,
                epoch: meta.epoch,
                commit: meta.state == TxnState::PrepareCommit,
                coordinator_epoch,
            };
            for partition in &meta.partitions {
                if !progress.written.contains(partition) {
                    jobs.push(MarkerJob {
                        transactional_id: transactional_id.clone(),
                        marker,
                        txn_start_ms: meta.start_ms,
                        partition: partition.clone(),
                    });
                }
            }
        }
        jobs
    }

    /// A partition's leader wrote the marker of `job` (or found nothing of it open there).
    /// Once every partition's is written the transaction is complete: stored as such, with no
    /// answer to wait for.
    pub(crate) fn marker_written(&mut self, log: &mut dyn CommandLog, now: Now, job: &MarkerJob) {
        // Proposals wait for the term to begin (it answers those of earlier terms); the
        // marker is sent again meanwhile.
        if log.serving().is_none() || log.serving() != self.counted_in {
            return;
        }
        let Some(meta) = self.stored.ids.get(&job.transactional_id) else {
            return;
        };
        let same = meta.producer_id == job.marker.producer_id
            && meta.epoch == job.marker.epoch
            && meta.start_ms == job.txn_start_ms
            && self.markers.preparing.contains(&job.transactional_id);
        if !same {
            return; // an answer for a transaction already complete
        }
        let progress = self
            .markers
            .progress
            .entry(job.transactional_id.clone())
            .or_default();
        progress.written.insert(job.partition.clone());
        let done = meta.partitions.iter().all(|p| progress.written.contains(p));
        if !done || self.in_flight(&job.transactional_id) {
            return;
        }
        let mut next = meta.clone();
        next.state = match meta.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            other => unreachable!("preparing ids are in a prepare state, not {other:?}"),
        };
        next.partitions.clear();
        next.updated_ms = now.wall_ms;
        let put = TxnCommand::Put {
            transactional_id: job.transactional_id.clone(),
            meta: next,
        };
        // Refused (full proposal queue, lost leadership): the markers go again, and so does
        // this.
        if self.propose(log, now, None, put, Waiting::Nobody).is_err() {
            if let Some(progress) = self.markers.progress.get_mut(&job.transactional_id) {
                progress.sent_at = None;
            }
        }
    }

    /// KIP-890's verification: whether `producer` of `transactional_id` has `partition` in its
    /// open transaction; the transaction's start if it has (what names it in the partition).
    pub(crate) fn verify(
        &self,
        transactional_id: &str,
        producer: (ProducerId, ProducerEpoch),
        partition: &(String, i32),
    ) -> Result<i64, TxnError> {
        let meta = self.instance(transactional_id, producer)?;
        let added =
            meta.state == TxnState::Ongoing && meta.partitions.binary_search(partition).is_ok();
        if !added {
            return Err(TxnError::InvalidTxnState);
        }
        Ok(meta.start_ms)
    }
}
