//! The applied state of a record-batch partition: what applying its log of Kafka record batches
//! (and its log start commands) builds (next offset = high watermark, log start offset, offset
//! index, producer table, and the shadow of that state at the latest snapshot), and what reads
//! it: fetch, the timestamp lookup, and compaction into a snapshot of that state (of every
//! entry below the log start offset, and by entry count).

use std::collections::BTreeMap;

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Snapshot};

use super::log_start;
use super::produce::{producer_batch, LeaderState, ProduceState};
use super::{Kind, Replica};
use crate::batch::{Batch, TimestampType};
use crate::ids::{Offset, RaftIndex, Term};
use crate::io::{FetchData, FetchError, FetchRequest};
use crate::log_store::LogStore;
use crate::node::{NodeConfig, Sink};
use crate::producer::ProducerTable;
use crate::snapshot::SnapshotData;

/// Partition state at the latest snapshot index, advanced when the log is compacted.
#[derive(Clone, Debug)]
struct Shadow {
    next_offset: Offset,
    producers: ProducerTable,
}

/// The state applying a partition's log builds, and the produce path on top of it.
pub(super) struct RecordState {
    next_offset: Offset,
    log_start_offset: Offset,
    producers: ProducerTable,
    /// Base offset of each applied batch still held, to its Raft index.
    offset_index: BTreeMap<Offset, RaftIndex>,
    /// This state at the latest snapshot index (`Replica::snapshot_index`).
    shadow: Shadow,
    /// The leader's view of its whole log and the produce requests waiting for an answer.
    pub(super) produce: ProduceState,
    /// DeleteRecords requests waiting for their log start command to apply.
    pub(super) log_start_waits: log_start::Waits,
}

impl RecordState {
    /// The state at `snapshot` (the store's latest; empty if none), with every entry after it
    /// still to apply. `persisted`: the store's last index.
    pub(super) fn new(
        config: &NodeConfig,
        snapshot: &Snapshot,
        timestamps: TimestampType,
        persisted: RaftIndex,
    ) -> Self {
        let (log_start_offset, next_offset, producers) = if snapshot.get_metadata().index > 0 {
            let data =
                SnapshotData::decode(&snapshot.data).expect("stored snapshot data is checksummed");
            (data.log_start_offset, data.next_offset, data.producers)
        } else {
            (
                Offset(0),
                Offset(0),
                ProducerTable::new(config.producers_max),
            )
        };
        Self {
            next_offset,
            log_start_offset,
            producers: producers.clone(),
            offset_index: BTreeMap::new(),
            shadow: Shadow {
                next_offset,
                producers,
            },
            produce: ProduceState::new(timestamps, persisted),
            log_start_waits: log_start::Waits::default(),
        }
    }

    /// Offset after the last applied record: the high watermark.
    pub(super) fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// The first offset still held.
    pub(super) fn log_start_offset(&self) -> Offset {
        self.log_start_offset
    }

    /// Applies a normal entry: its record batch, if it holds one (a leader's no-op does not),
    /// or its log start command. Returns the batch's stored CRC-32C, or 0.
    pub(super) fn apply(&mut self, entry: &Entry) -> u32 {
        if entry.data.is_empty() && !entry.context.is_empty() {
            let offset =
                log_start::decode(&entry.context).expect("partition commands come from our leader");
            // Pair assertion: the leader checked the offset against a high watermark that this
            // entry, later in the log, can only be above.
            assert!(
                offset <= self.next_offset,
                "log start {offset} above the log end {}",
                self.next_offset
            );
            self.log_start_offset = self.log_start_offset.max(offset);
            return 0;
        }
        let Some(batch) = record_batch(entry) else {
            return 0;
        };
        // Pair assertion: the leader stamped this offset from the same log.
        assert_eq!(
            batch.base_offset(),
            self.next_offset,
            "applied batch is not at the log end"
        );
        self.offset_index
            .insert(batch.base_offset(), RaftIndex(entry.index));
        if let Some(p) = producer_batch(&batch) {
            self.producers.record(
                &p,
                batch.base_offset(),
                RaftIndex(entry.index),
                Term(entry.term),
            );
        }
        self.next_offset = batch.next_offset();
        batch.crc()
    }

    /// Replaces the state with a leader's snapshot at `index` (`data`: its [`SnapshotData`]),
    /// and answers the produce requests waiting on entries it replaced. Returns the offset after
    /// the snapshot's index (the high watermark once installed).
    pub(super) fn install_snapshot(
        &mut self,
        index: RaftIndex,
        data: &Bytes,
        sink: &mut Sink,
    ) -> Offset {
        let data = SnapshotData::decode(data).expect("snapshot data from a leader decodes");
        self.next_offset = data.next_offset;
        self.log_start_offset = data.log_start_offset;
        self.producers = data.producers.clone();
        self.offset_index.clear();
        self.shadow = Shadow {
            next_offset: data.next_offset,
            producers: data.producers,
        };
        self.produce.fail_overwritten(index, sink);
        self.log_start_waits.fail_overwritten(index, sink);
        data.next_offset
    }

    /// The leader's view of its log when it starts leading: the applied state plus every
    /// entry from `from` to `last`, the end of its log.
    pub(super) fn leader_state(&self, store: &LogStore, from: u64, last: u64) -> LeaderState {
        let mut producers = self.producers.clone();
        let mut log_end_offset = self.next_offset;
        for index in from..=last {
            let entry = store.entry(index).expect("held");
            if let Some(batch) = record_batch(entry) {
                assert_eq!(
                    batch.base_offset(),
                    log_end_offset,
                    "offsets along a log are dense"
                );
                if let Some(p) = producer_batch(&batch) {
                    producers.record(&p, batch.base_offset(), RaftIndex(index), Term(entry.term));
                }
                log_end_offset = batch.next_offset();
            }
        }
        LeaderState {
            log_end_offset,
            producers,
        }
    }

    /// Linear-time invariants (every producer).
    pub(super) fn invariants_full(&self) {
        self.producers.invariants();
        self.log_start_waits.invariants();
        self.produce.invariants_full();
    }

    /// Constant-time invariants. `first_index`: the store's first entry; `last_index`: the
    /// last index of raft-rs's log; `leading`: the term this node leads in, if it does.
    pub(super) fn invariants(
        &self,
        first_index: u64,
        last_index: u64,
        leading: Option<Term>,
        at_snapshot: bool,
    ) {
        // Right after a snapshot whose log start falls inside the batch after it (DeleteRecords
        // to the middle of a batch), the log start is above the next offset until that batch,
        // the snapshot's next entry, is applied.
        assert!(self.log_start_offset <= self.next_offset || at_snapshot);
        assert!(
            self.shadow.next_offset <= self.log_start_offset,
            "the log start is at or after the records the snapshot dropped"
        );
        if let Some((offset, index)) = self.offset_index.first_key_value() {
            assert!(*offset >= self.shadow.next_offset && index.0 >= first_index);
        }
        self.produce
            .invariants(leading, last_index, self.next_offset);
    }
}

impl Replica {
    pub(crate) fn fetch(
        &self,
        config: &NodeConfig,
        request: &FetchRequest,
    ) -> Result<FetchData, FetchError> {
        assert_eq!(request.group, self.group);
        let records = self.kind.records();
        if self.serving_leader().is_none() {
            return Err(FetchError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        // Planted bug `fetch-above-hwm`: serve the uncommitted suffix too.
        let (readable_end, last_index) = if config.planted.fetch_above_hwm() {
            let leader = records.produce.leader.as_ref().expect("serving leader");
            (leader.log_end_offset, self.raw.store().last_index())
        } else {
            (records.next_offset, self.applied.0)
        };
        if request.offset < records.log_start_offset || request.offset > readable_end {
            return Err(FetchError::OffsetOutOfRange {
                log_start_offset: records.log_start_offset,
                high_watermark: records.next_offset,
            });
        }
        // Start at the batch holding the offset; Kafka serves whole batches.
        let start = records
            .offset_index
            .range(..=request.offset)
            .next_back()
            .map(|(_, index)| index.0);
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        if let Some(start) = start {
            for index in start..=last_index {
                if bytes >= request.max_bytes as usize {
                    break;
                }
                let entry = self
                    .raw
                    .store()
                    .entry(index)
                    .expect("entries from the log start on are held");
                if let Some(batch) = record_batch(entry) {
                    if batch.next_offset() <= request.offset {
                        continue;
                    }
                    bytes += entry.data.len();
                    batches.push(batch.into_bytes());
                }
            }
        }
        Ok(FetchData {
            high_watermark: records.next_offset,
            log_start_offset: records.log_start_offset,
            batches,
        })
    }

    /// The first committed batch whose largest timestamp is at least `timestamp`. Reads only
    /// batch headers, but walks the batches: a time index is future work.
    pub(crate) fn find_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>, FetchError> {
        let records = self.kind.records();
        if self.serving_leader().is_none() {
            return Err(FetchError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        for index in records.offset_index.values() {
            let entry = self
                .raw
                .store()
                .entry(index.0)
                .expect("indexed batches are held");
            let batch = record_batch(entry).expect("the offset index points at batches");
            if batch.next_offset() <= records.log_start_offset {
                continue; // deleted, not yet compacted
            }
            if batch.max_timestamp() >= timestamp {
                return Ok(Some(batch.into_bytes()));
            }
        }
        Ok(None)
    }

    /// Compacts the log into a snapshot of the partition's state: every entry whose records
    /// all lie below the log start offset (DeleteRecords moved it), and, retention by entry
    /// count, all but the last `retain_entries_max` applied entries. Only applied and persisted
    /// entries are compacted.
    pub(super) fn compact(&mut self, config: &NodeConfig, sink: &mut Sink) {
        let first = self.raw.store().first_index();
        let applied = self.applied.0;
        // Command logs are compacted by `Node`, which has their state (`compact_commands`);
        // the metadata log not at all yet: it grows by one entry per admin change.
        let Kind::Records(records) = &mut self.kind else {
            return;
        };
        let compactable = applied.min(self.raw.raft.raft_log.persisted);
        let mut target = self.snapshot_index.0;
        if applied >= first
            && applied - first >= config.retain_entries_max + config.retain_entries_max / 2
        {
            target = applied - config.retain_entries_max;
            assert!(
                target >= first && target < applied,
                "compaction keeps the newest entries"
            );
            assert!(
                target <= compactable,
                "only persisted entries are compacted"
            );
        }
        // Every entry below the log start: whole batches only, so a log start inside a batch
        // keeps that batch (Kafka serves whole batches; the consumer skips the records).
        while records.log_start_offset > records.shadow.next_offset && target < compactable {
            let entry = self.raw.store().entry(target + 1).expect("held");
            match record_batch(entry) {
                Some(batch) if batch.next_offset() > records.log_start_offset => break,
                _ => target += 1,
            }
        }
        if target <= self.snapshot_index.0 {
            return;
        }
        for index in self.snapshot_index.0 + 1..=target {
            let entry = self.raw.store().entry(index).expect("held");
            if let Some(batch) = record_batch(entry) {
                assert_eq!(batch.base_offset(), records.shadow.next_offset);
                if let Some(p) = producer_batch(&batch) {
                    records.shadow.producers.record(
                        &p,
                        batch.base_offset(),
                        RaftIndex(index),
                        Term(entry.term),
                    );
                }
                records.shadow.next_offset = batch.next_offset();
            }
        }
        self.snapshot_index = RaftIndex(target);
        records.log_start_offset = records.log_start_offset.max(records.shadow.next_offset);
        let data = SnapshotData {
            log_start_offset: records.log_start_offset,
            next_offset: records.shadow.next_offset,
            producers: records.shadow.producers.clone(),
        };
        records.offset_index = records.offset_index.split_off(&records.shadow.next_offset);
        self.compact_to(target, data.encode().into(), sink);
    }
}

/// The record batch an entry holds; `None` for a leader's no-op (and anything not normal).
fn record_batch(entry: &Entry) -> Option<Batch> {
    if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
        Some(Batch::trusted(entry.data.clone()))
    } else {
        None
    }
}
