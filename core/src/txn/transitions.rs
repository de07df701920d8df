//! How each request and each timer changes a transactional id's metadata (Kafka's
//! `TransactionCoordinator` and `TransactionMetadata` transitions): what it answers at once,
//! or what it stores and answers once stored.

use super::{
    AddPartitions, Change, EndTxn, InitProducerId, TxnCommand, TxnCoordinator, TxnError, TxnMeta,
    TxnResponse, TxnState, Waiting,
};
use crate::coordinator::CommandLog;
use crate::ids::{ProducerEpoch, ProducerId};
use crate::time::Now;

/// The epoch after `epoch`, unless the epoch is exhausted (Kafka keeps the last one for the
/// producer id's final transaction, and a new instance gets a new producer id).
fn bumped(epoch: ProducerEpoch) -> Option<ProducerEpoch> {
    (epoch.0 < i16::MAX - 1).then(|| ProducerEpoch(epoch.0 + 1))
}

impl TxnCoordinator {
    /// The metadata of the instance `producer` of `transactional_id`, or why a request from it
    /// is refused: an unknown id or another producer id is not mapped to it, another epoch is
    /// fenced (Kafka answers the same for AddPartitionsToTxn, AddOffsetsToTxn and EndTxn).
    pub(super) fn instance(
        &self,
        transactional_id: &str,
        producer: (ProducerId, ProducerEpoch),
    ) -> Result<&TxnMeta, TxnError> {
        let meta = self
            .stored
            .ids
            .get(transactional_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if meta.producer_id != producer.0 {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        // Planted bug `accept-fenced-epoch`: an older epoch passes too.
        let fenced_accepted = self.planted_accept_fenced_epoch && producer.1 < meta.epoch;
        if meta.epoch != producer.1 && !fenced_accepted {
            return Err(TxnError::ProducerFenced);
        }
        Ok(meta)
    }

    /// InitProducerId with a transactional id (Kafka's `handleInitProducerId`).
    pub(super) fn init_producer_id(
        &mut self,
        now: Now,
        init: InitProducerId,
    ) -> Result<Change, TxnResponse> {
        let InitProducerId {
            transactional_id,
            timeout_ms,
            expected,
        } = init;
        let failed = |error| TxnResponse::InitProducerId(Err(error));
        let timeout_ms = match u32::try_from(timeout_ms) {
            Ok(ms) if ms > 0 && ms <= self.config.max_timeout_ms => ms,
            _ => return Err(failed(TxnError::InvalidTransactionTimeout)),
        };
        let Some(meta) = self.stored.ids.get(&transactional_id).cloned() else {
            // A new id (KIP-360's `expected` included: Kafka's new metadata has no epoch yet,
            // which any expected epoch matches).
            let meta = TxnMeta {
                producer_id: self.allocate(),
                epoch: ProducerEpoch(0),
                last: None,
                timeout_ms,
                state: TxnState::Empty,
                partitions: Vec::new(),
                start_ms: -1,
                updated_ms: now.wall_ms,
            };
            let waiting = Waiting::InitProducerId(meta.producer_id, meta.epoch);
            let put = TxnCommand::Put {
                transactional_id,
                meta,
            };
            return Ok(Change::Store(put, waiting));
        };
        let current = (meta.producer_id, meta.epoch);
        if let Some(expected) = expected {
            if expected != current {
                if meta.last == Some(expected) {
                    // A retry of the KIP-360 call that bumped it, or the instance a timeout
                    // fenced (KIP-588): the current ids.
                    let (id, epoch) = current;
                    return Ok(Change::Answer(TxnResponse::InitProducerId(Ok((id, epoch)))));
                }
                return Err(failed(TxnError::ProducerFenced));
            }
        }
        let mut next = meta.clone();
        next.updated_ms = now.wall_ms;
        match meta.state {
            TxnState::Ongoing => {
                // The instance before left a transaction open: abort it, fencing that instance
                // with an epoch bump, and let the client ask again (as Kafka does).
                if let Some(epoch) = bumped(meta.epoch) {
                    next.epoch = epoch;
                }
                next.last = None;
                next.state = TxnState::PrepareAbort;
                let put = TxnCommand::Put {
                    transactional_id,
                    meta: next,
                };
                return Ok(Change::Store(put, Waiting::AbortFirst));
            }
            // Its markers are being written: the client retries until the end is complete.
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(failed(TxnError::ConcurrentTransactions))
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {}
        }
        match bumped(meta.epoch) {
            Some(epoch) => next.epoch = epoch,
            None => {
                // The epoch is exhausted: a new producer id (Kafka does the same).
                next.producer_id = self.allocate();
                next.epoch = ProducerEpoch(0);
            }
        }
        // Only a KIP-360 call keeps what it had, for its own retry: after a new instance's
        // call, the instance before it is fenced whatever it sends (Kafka's
        // `prepareIncrementProducerEpoch`).
        next.last = expected.map(|_| current);
        next.timeout_ms = timeout_ms;
        next.state = TxnState::Empty;
        next.partitions.clear();
        let waiting = Waiting::InitProducerId(next.producer_id, next.epoch);
        let put = TxnCommand::Put {
            transactional_id,
            meta: next,
        };
        Ok(Change::Store(put, waiting))
    }

    /// AddPartitionsToTxn, or AddOffsetsToTxn with its group's offsets partition: the first
    /// partition begins a transaction (Kafka's `handleAddPartitionsToTransaction`).
    pub(super) fn add_partitions(
        &mut self,
        now: Now,
        add: AddPartitions,
    ) -> Result<Change, TxnResponse> {
        let failed = |error| TxnResponse::AddPartitions(Err(error));
        let meta = self
            .instance(&add.transactional_id, add.producer)
            .map_err(failed)?;
        let known = |p: &(String, i32)| meta.partitions.binary_search(p).is_ok();
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(failed(TxnError::ConcurrentTransactions))
            }
            // Nothing new (a retry, or no partitions): done.
            TxnState::Ongoing if add.partitions.iter().all(known) => {
                Ok(Change::Answer(TxnResponse::AddPartitions(Ok(()))))
            }
            _ if add.partitions.is_empty() => {
                Ok(Change::Answer(TxnResponse::AddPartitions(Ok(()))))
            }
            state => {
                let mut next = meta.clone();
                if state != TxnState::Ongoing {
                    // Starts rise from one transaction of the id to the next, whatever the
                    // clocks do: a start names its transaction in the partitions.
                    next.partitions.clear();
                    next.start_ms = now.wall_ms.max(meta.start_ms.saturating_add(1));
                }
                next.state = TxnState::Ongoing;
                next.partitions.extend(add.partitions);
                next.partitions.sort();
                next.partitions.dedup();
                next.updated_ms = now.wall_ms;
                let put = TxnCommand::Put {
                    transactional_id: add.transactional_id,
                    meta: next,
                };
                Ok(Change::Store(put, Waiting::AddPartitions))
            }
        }
    }

    /// EndTxn: the outcome of the open transaction, stored before the answer; its retry is
    /// answered as the first was (Kafka's `handleEndTransaction`).
    pub(super) fn end_txn(&mut self, now: Now, end: EndTxn) -> Result<Change, TxnResponse> {
        let failed = |error| TxnResponse::EndTxn(Err(error));
        let meta = self
            .instance(&end.transactional_id, end.producer)
            .map_err(failed)?;
        match (meta.state, end.commit) {
            (TxnState::Ongoing, commit) => {
                let mut next = meta.clone();
                next.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                next.updated_ms = now.wall_ms;
                let put = TxnCommand::Put {
                    transactional_id: end.transactional_id,
                    meta: next,
                };
                Ok(Change::Store(put, Waiting::EndTxn))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(Change::Answer(TxnResponse::EndTxn(Ok(()))))
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(failed(TxnError::ConcurrentTransactions))
            }
            _ => Err(failed(TxnError::InvalidTxnState)),
        }
    }

    /// The leader's periodic check: aborts every transaction open past its timeout, with an
    /// epoch bump that fences the instance that opened it (which may come back with KIP-588's
    /// InitProducerId), and removes the ids without a request for `id_expiration_ms` and
    /// without a transaction (Kafka's `abortTimedOutTransactions` and
    /// `removeExpiredTransactionalIds`). At most as many as proposals may be in flight.
    pub(super) fn expire(&mut self, log: &mut dyn CommandLog, now: Now) {
        let mut changes = Vec::new();
        for (transactional_id, meta) in &self.stored.ids {
            if changes.len() + self.proposals.len() >= self.proposals_max {
                break;
            }
            if self.in_flight(transactional_id) {
                continue;
            }
            let open_for = now.wall_ms.saturating_sub(meta.start_ms);
            let idle_for = now.wall_ms.saturating_sub(meta.updated_ms);
            if meta.state == TxnState::Ongoing && open_for > i64::from(meta.timeout_ms) {
                let mut next = meta.clone();
                if let Some(epoch) = bumped(meta.epoch) {
                    next.epoch = epoch;
                    next.last = Some((meta.producer_id, meta.epoch));
                }
                next.state = TxnState::PrepareAbort;
                next.updated_ms = now.wall_ms;
                slog::info!(self.logger, "a transaction timed out: aborting it";
                    "transactional_id" => transactional_id,
                    "open_ms" => open_for, "timeout_ms" => meta.timeout_ms);
                changes.push(TxnCommand::Put {
                    transactional_id: transactional_id.clone(),
                    meta: next,
                });
            } else if meta.state.is_settled() && idle_for > self.config.id_expiration_ms {
                slog::info!(self.logger, "a transactional id expired";
                    "transactional_id" => transactional_id, "idle_ms" => idle_for);
                changes.push(TxnCommand::Remove {
                    transactional_id: transactional_id.clone(),
                });
            }
        }
        for command in changes {
            if self
                .propose(log, now, None, command, Waiting::Nobody)
                .is_err()
            {
                break;
            }
        }
    }
}
