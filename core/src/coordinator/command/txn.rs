//! The transactional part of a coordinator partition's stored state (KIP-98's transactional
//! offset commits): each group's pending offsets per producer, which a transaction's marker on
//! the partition makes committed offsets or drops, and the transactions whose marker applied,
//! so that an offset commit of an ended transaction arriving late is dropped, not left pending.
//!
//! Invariant: no pending offsets belong to a transaction the partition has ended.

use std::collections::BTreeMap;

use super::{Command, CommittedOffset, Resize, StoredState};
use crate::ids::{ProducerEpoch, ProducerId};

/// How long a partition remembers a transaction's marker: far longer than any request waits,
/// so a transactional offset commit that was verified before the marker and applies after it
/// is always recognised. A day, by the marker's own time.
pub const ENDED_KEEP_MS: i64 = 24 * 60 * 60 * 1_000;

/// A group's offsets of one producer's open transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingOffsets {
    /// The producer's epoch (the latest that wrote them).
    pub epoch: ProducerEpoch,
    /// The transaction's start on its coordinator (what names the transaction).
    pub txn_start_ms: i64,
    /// By (topic, partition).
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
}

impl PendingOffsets {
    /// The command that stores them (in a snapshot).
    pub(super) fn command(&self, group_id: &str, producer_id: ProducerId) -> Command {
        Command::TxnOffsets {
            group_id: group_id.to_string(),
            producer_id,
            epoch: self.epoch,
            txn_start_ms: self.txn_start_ms,
            offsets: self
                .offsets
                .iter()
                .map(|((t, p), o)| (t.clone(), *p, o.clone()))
                .collect(),
        }
    }
}

/// A transaction's marker on a coordinator partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnEnd {
    /// The producer.
    pub producer_id: ProducerId,
    /// The marker's epoch.
    pub epoch: ProducerEpoch,
    /// The transaction's start on its coordinator: every pending offset of the producer's
    /// transactions up to this one ends.
    pub txn_start_ms: i64,
    /// Commit (true) or abort.
    pub commit: bool,
    /// When the partition's leader proposed it (its wall clock, Unix ms): how long it is
    /// remembered counts from here.
    pub ended_ms: i64,
}

impl TxnEnd {
    /// Bytes one takes in the encoded state: its command with the length prefix.
    pub const ENCODED_BYTES: usize = 4 + 1 + 1 + 8 + 2 + 8 + 1 + 8;
}

impl StoredState {
    /// Bytes a group's pending offsets of one producer take in the encoded state: their
    /// `TxnOffsets` command with the length prefix.
    pub fn pending_bytes(group_id: &str, pending: &PendingOffsets) -> usize {
        let offsets: usize = pending
            .offsets
            .iter()
            .map(|((topic, _), o)| Self::offset_bytes(topic, o))
            .sum();
        Self::pending_header_bytes(group_id) + offsets
    }

    fn pending_header_bytes(group_id: &str) -> usize {
        4 + 1 + 1 + (4 + group_id.len()) + 8 + 2 + 8 + 4
    }

    /// Whether the transaction of `producer_id` that started at `txn_start_ms` has ended on
    /// this partition (its marker, or a later transaction's, applied).
    pub fn is_ended(&self, producer_id: ProducerId, txn_start_ms: i64) -> bool {
        self.txn_ended
            .get(&producer_id)
            .is_some_and(|e| e.txn_start_ms >= txn_start_ms)
    }

    /// Whether `group_id` has offsets of an open transaction for (topic, partition)
    /// (OffsetFetch's `require_stable`).
    pub fn is_pending(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.groups.get(group_id).is_some_and(|g| {
            let key = (topic.to_string(), partition);
            g.pending.values().any(|p| p.offsets.contains_key(&key))
        })
    }

    /// The most bytes a transactional command adds, besides a new group's header: pending
    /// offsets at their full size (whatever the slot holds now: a marker applied before them
    /// may have emptied it), a marker at one remembered transaction (making offsets
    /// committed frees their pending bytes first).
    pub(super) fn txn_growth_bound(&self, command: &Command) -> usize {
        match command {
            Command::TxnOffsets {
                group_id, offsets, ..
            } => {
                let offsets: usize = offsets
                    .iter()
                    .map(|(topic, _, o)| Self::offset_bytes(topic, o))
                    .sum();
                Self::pending_header_bytes(group_id) + offsets
            }
            Command::TxnEnd(_) => TxnEnd::ENCODED_BYTES,
            other => unreachable!("not a transactional command: {other:?}"),
        }
    }

    /// A transactional offset commit of a transaction not ended here: joins the producer's
    /// pending offsets of the same transaction, or replaces those of an earlier one (whose
    /// marker never came: they are dropped, as an abort would).
    pub(super) fn apply_txn_offsets(
        &mut self,
        group_id: &str,
        (producer_id, epoch, txn_start_ms): (ProducerId, ProducerEpoch, i64),
        offsets: &[(String, i32, CommittedOffset)],
        mut resize: Resize,
    ) -> Resize {
        let group = self.groups.entry(group_id.to_string()).or_default();
        match group.pending.get_mut(&producer_id) {
            Some(slot) if slot.txn_start_ms > txn_start_ms => {} // an earlier transaction's
            Some(slot) if slot.txn_start_ms == txn_start_ms => {
                slot.epoch = slot.epoch.max(epoch);
                for (topic, partition, offset) in offsets {
                    resize.added += Self::offset_bytes(topic, offset);
                    let old = slot
                        .offsets
                        .insert((topic.clone(), *partition), offset.clone());
                    if let Some(old) = old {
                        resize.removed += Self::offset_bytes(topic, &old);
                    }
                }
            }
            slot => {
                let new = PendingOffsets {
                    epoch,
                    txn_start_ms,
                    offsets: offsets
                        .iter()
                        .map(|(t, p, o)| ((t.clone(), *p), o.clone()))
                        .collect(),
                };
                resize.added += Self::pending_bytes(group_id, &new);
                match slot {
                    Some(old) => {
                        resize.removed += Self::pending_bytes(group_id, old);
                        *old = new;
                    }
                    None => {
                        group.pending.insert(producer_id, new);
                        self.pending_groups
                            .entry(producer_id)
                            .or_default()
                            .insert(group_id.to_string());
                    }
                }
            }
        }
        resize
    }

    /// A transaction's marker: the producer's pending offsets of it (and of any earlier
    /// transaction) become committed offsets on a commit and are dropped on an abort, in every
    /// group; the transaction is remembered as ended, and transactions ended more than
    /// [`ENDED_KEEP_MS`] before this marker are forgotten.
    pub(super) fn apply_txn_end(&mut self, end: &TxnEnd) -> Resize {
        let mut resize = Resize::default();
        let producer_id = end.producer_id;
        let groups = self
            .pending_groups
            .get(&producer_id)
            .cloned()
            .unwrap_or_default();
        for group_id in groups {
            let group = self.groups.get_mut(&group_id).expect("indexed");
            if group.pending[&producer_id].txn_start_ms > end.txn_start_ms {
                continue; // a later transaction's (the marker is a late duplicate)
            }
            let pending = group.pending.remove(&producer_id).expect("checked");
            resize.removed += Self::pending_bytes(&group_id, &pending);
            if end.commit {
                for ((topic, partition), offset) in pending.offsets {
                    resize.added += Self::offset_bytes(&topic, &offset);
                    if let Some(old) = group.offsets.insert((topic.clone(), partition), offset) {
                        resize.removed += Self::offset_bytes(&topic, &old);
                    }
                }
            }
            self.unindex_pending(producer_id, &group_id);
        }
        let later_kept = self
            .txn_ended
            .get(&producer_id)
            .is_some_and(|e| e.txn_start_ms >= end.txn_start_ms);
        if !later_kept && self.restore_ended(end.clone()) {
            resize.added += TxnEnd::ENCODED_BYTES;
        }
        let forget_before = end.ended_ms.saturating_sub(ENDED_KEEP_MS);
        let forgotten: Vec<(i64, ProducerId)> = self
            .ended_by_time
            .range(..(forget_before, ProducerId(i64::MIN)))
            .filter(|(_, p)| *p != producer_id)
            .copied()
            .collect();
        for key in forgotten {
            self.ended_by_time.remove(&key);
            self.txn_ended.remove(&key.1).expect("indexed");
            resize.removed += TxnEnd::ENCODED_BYTES;
        }
        resize
    }

    /// Remembers `end` as its producer's last ended transaction (as a snapshot stores it);
    /// true if the producer had none.
    pub(super) fn restore_ended(&mut self, end: TxnEnd) -> bool {
        let key = (end.ended_ms, end.producer_id);
        let old = self.txn_ended.insert(end.producer_id, end);
        if let Some(old) = &old {
            self.ended_by_time.remove(&(old.ended_ms, old.producer_id));
        }
        self.ended_by_time.insert(key);
        old.is_none()
    }

    pub(super) fn unindex_pending(&mut self, producer_id: ProducerId, group_id: &str) {
        let groups = self.pending_groups.get_mut(&producer_id).expect("indexed");
        assert!(groups.remove(group_id), "indexed");
        if groups.is_empty() {
            self.pending_groups.remove(&producer_id);
        }
    }

    /// Asserts the transactional invariants: the index of pending offsets is the groups'
    /// pending offsets, and none of them is of a transaction ended here.
    pub fn txn_invariants(&self) {
        let mut index: BTreeMap<ProducerId, std::collections::BTreeSet<String>> = BTreeMap::new();
        for (group_id, group) in &self.groups {
            for (producer_id, pending) in &group.pending {
                index
                    .entry(*producer_id)
                    .or_default()
                    .insert(group_id.clone());
                assert!(
                    !self.is_ended(*producer_id, pending.txn_start_ms),
                    "pending offsets of a transaction ended here"
                );
            }
        }
        assert_eq!(index, self.pending_groups, "pending offsets indexed");
        let by_time: std::collections::BTreeSet<(i64, ProducerId)> = self
            .txn_ended
            .values()
            .map(|e| (e.ended_ms, e.producer_id))
            .collect();
        assert_eq!(
            by_time, self.ended_by_time,
            "ended transactions indexed by time"
        );
        for (producer_id, end) in &self.txn_ended {
            assert_eq!(*producer_id, end.producer_id);
        }
    }
}
