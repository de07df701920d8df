//! The applied state of a record-batch partition: what applying its log of Kafka record batches
//! (and its log start commands) builds (next offset = high watermark, log start offset, the
//! offset and time index, producer table), and what reads it: fetch and the timestamp lookup
//! (from memory, or as a read of the files for the driver to do), and compaction into a
//! snapshot of that state (of every entry below the log start offset, and by entry count).

use std::collections::BTreeMap;

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Snapshot};

use super::log_start;
use super::markers::PendingMarkers;
use super::produce::{entry_context, producer_batch, LeaderState, ProduceState};
use super::{Kind, Replica};
use crate::batch::{Batch, TimestampType};
use crate::codec::{DecodeError, Reader, Writer};
use crate::epoch_history::{check_leader_epoch, EpochEnd, EpochHistory};
use crate::ids::{Offset, RaftIndex, Term};
use crate::io::{DiskRead, EpochEndRequest, FetchData, FetchError, FetchRequest, FoundBatch};
use crate::log_store::LogStore;
use crate::metadata::Cleanup;
use crate::node::{NodeConfig, Sink};
use crate::producer::ProducerTable;
use crate::snapshot::SnapshotData;

/// Where a batch (or a span of batches) starts in the log, and the largest timestamp in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Point {
    /// Raft index of the span's first batch.
    pub(super) index: RaftIndex,
    /// Largest timestamp of any batch in the span.
    pub(super) max_timestamp: i64,
}

/// The state applying a partition's log builds, and the produce path on top of it.
pub(super) struct RecordState {
    next_offset: Offset,
    log_start_offset: Offset,
    producers: ProducerTable,
    /// Batches at or below this index are already in `producers` (it came from a snapshot
    /// taken of the table as applied later than the snapshot's index): not recorded again,
    /// so every replica's table stays the same, evictions included.
    producers_as_of: RaftIndex,
    /// The offset and time index: base offset of applied batches to where they are. One
    /// point per batch while the batch is in memory; once evicted, one point per span of
    /// about `NodeConfig::offset_index_interval_bytes` (Kafka's sparse index), which a read
    /// from disk walks. The sparse points come first: those of the batches no longer in
    /// memory.
    offset_index: BTreeMap<Offset, Point>,
    /// The sparse span evicted batches are being merged into, and its bytes so far.
    open_span: Option<(Offset, u64)>,
    /// How many of `offset_index`'s first points are sparse (their batches are not in memory).
    sparse_points: usize,
    /// The sparse points' interval is `offset_index_interval_bytes << sparse_shift`: each time
    /// they pass `sparse_points_max` every other one goes (its span merged into the one before),
    /// and the interval doubles, for the spans to come too.
    sparse_shift: u32,
    /// Most sparse points (`NodeConfig::index_points_max`), so that neither the index nor a
    /// checkpoint (24 bytes a point, in one storage frame) grows with the data kept.
    sparse_points_max: usize,
    /// The offset after the latest snapshot's index.
    snapshot_next_offset: Offset,
    /// The first offset of each leader epoch (Raft term) with records still in the log.
    epochs: EpochHistory,
    /// Whether the log start came from an installed snapshot and is still above the next
    /// offset (the replica has not applied up to it yet).
    log_start_ahead: bool,
    /// The leader's view of its whole log and the produce requests waiting for an answer.
    pub(super) produce: ProduceState,
    /// DeleteRecords requests waiting for their log start command to apply.
    pub(super) log_start_waits: log_start::Waits,
    /// Transaction markers proposed and not yet applied, and those applied.
    pub(super) markers: PendingMarkers,
    /// Bytes of batches applied since the last checkpoint, and ticks since then.
    pub(super) since_checkpoint: (u64, u64),
    /// The topic's cleanup policy, as this node's metadata has it (`Replica::set_cleanup`):
    /// a compacted topic's leader refuses records without keys, and a compact-only one is
    /// never compacted by entry count. Not replicated state: nothing applied depends on it.
    pub(super) cleanup: Cleanup,
}

/// Version of the checkpoint encoding (2 added the index the producer table is as of; 3 holds
/// the producer table with its clock and last write times, `ProducerTable::encode`; 4 ends
/// with the leader-epoch history, `EpochHistory::encode`: earlier ones have none, and the
/// epochs are learnt from the entries applied after them; 5 holds the producer table with its
/// open and aborted transactions, and ends with how often the sparse index was thinned, which
/// earlier ones never were).
const CHECKPOINT_VERSION: u8 = 5;
/// The first version whose producer table has its clock.
const CHECKPOINT_TIMES: u8 = 3;
/// The first version whose producer table has its transactions.
const CHECKPOINT_TXNS: u8 = 5;

impl RecordState {
    /// The state at `snapshot` (the store's latest; empty if none), with every entry after it
    /// still to apply. `persisted`: the store's last index; `sparse_points_max`: the most
    /// sparse points of the index.
    pub(super) fn new(
        snapshot: &Snapshot,
        timestamps: TimestampType,
        persisted: RaftIndex,
        sparse_points_max: usize,
    ) -> Self {
        let (log_start_offset, next_offset, producers, producers_as_of, epochs) =
            if snapshot.get_metadata().index > 0 {
                let data = SnapshotData::decode(&snapshot.data)
                    .expect("stored snapshot data is checksummed");
                (
                    data.log_start_offset,
                    data.next_offset,
                    data.producers,
                    RaftIndex(data.producers_index),
                    data.epochs,
                )
            } else {
                let none = (Offset(0), Offset(0), ProducerTable::new(), RaftIndex(0));
                (none.0, none.1, none.2, none.3, EpochHistory::new())
            };
        Self {
            next_offset,
            log_start_offset,
            producers,
            producers_as_of,
            offset_index: BTreeMap::new(),
            open_span: None,
            sparse_points: 0,
            sparse_shift: 0,
            sparse_points_max,
            snapshot_next_offset: next_offset,
            epochs,
            log_start_ahead: log_start_offset > next_offset,
            produce: ProduceState::new(timestamps, persisted),
            log_start_waits: log_start::Waits::default(),
            markers: PendingMarkers::default(),
            since_checkpoint: (0, 0),
            cleanup: Cleanup::DELETE,
        }
    }

    /// The state a checkpoint holds (written by [`RecordState::checkpoint_data`]); the entries
    /// after it are still to apply. `persisted`: the store's last index; `sparse_points_max`:
    /// the most sparse points of the index. Every point it holds is sparse (the entries up to
    /// the checkpoint stay on disk).
    ///
    /// The store's snapshot may be newer than the checkpoint's (compaction ran after it): its
    /// log start and cut win, as they will once the entries after the checkpoint apply again.
    pub(super) fn from_checkpoint(
        data: &[u8],
        snapshot: &Snapshot,
        timestamps: TimestampType,
        persisted: RaftIndex,
        sparse_points_max: usize,
    ) -> Self {
        let decode = || -> Result<Self, DecodeError> {
            let mut r = Reader::new(data);
            let version = r.u8()?;
            if !(1..=CHECKPOINT_VERSION).contains(&version) {
                return Err(DecodeError("unknown checkpoint version"));
            }
            let log_start_offset = Offset(r.i64()?);
            let next_offset = Offset(r.i64()?);
            let snapshot_next_offset = Offset(r.i64()?);
            let producers = if version >= CHECKPOINT_TXNS {
                ProducerTable::decode(&mut r)?
            } else if version >= CHECKPOINT_TIMES {
                ProducerTable::decode_without_txns(&mut r)?
            } else {
                ProducerTable::decode_without_times(&mut r)?
            };
            let producers_as_of = RaftIndex(if version == 1 { 0 } else { r.u64()? });
            let mut offset_index = BTreeMap::new();
            for _ in 0..r.u32()? {
                let offset = Offset(r.i64()?);
                let point = Point {
                    index: RaftIndex(r.u64()?),
                    max_timestamp: r.i64()?,
                };
                offset_index.insert(offset, point);
            }
            // The history as of the checkpoint's index. A newer snapshot's log start (below)
            // does not truncate it here: the next move of the log start, or compaction, does.
            let epochs = if version >= 4 {
                EpochHistory::decode(&mut r)?
            } else {
                EpochHistory::new()
            };
            let sparse_shift = if version >= 5 { u32::from(r.u8()?) } else { 0 };
            r.finish()?;
            let (mut log_start_offset, mut snapshot_next_offset) =
                (log_start_offset, snapshot_next_offset);
            let snapshot_index = snapshot.get_metadata().index;
            if snapshot_index > 0 {
                let at_snapshot = SnapshotData::decode(&snapshot.data)?;
                log_start_offset = log_start_offset.max(at_snapshot.log_start_offset);
                snapshot_next_offset = at_snapshot.next_offset;
            }
            let mut kept = offset_index.split_off(&snapshot_next_offset);
            kept.retain(|_, point| point.index.0 > snapshot_index);
            // The span holding the snapshot's next offset may start below it: its records
            // from there on are found from the entry after the snapshot.
            if next_offset > snapshot_next_offset && !kept.contains_key(&snapshot_next_offset) {
                let covering = offset_index.last_key_value().map(|(_, p)| p.max_timestamp);
                kept.insert(
                    snapshot_next_offset,
                    Point {
                        index: RaftIndex(snapshot_index + 1),
                        max_timestamp: covering.unwrap_or(i64::MAX),
                    },
                );
            }
            let offset_index = kept;
            let mut state = Self {
                next_offset,
                log_start_offset,
                producers,
                producers_as_of,
                sparse_points: offset_index.len(),
                offset_index,
                open_span: None,
                sparse_shift,
                sparse_points_max,
                snapshot_next_offset,
                epochs,
                log_start_ahead: log_start_offset > next_offset,
                produce: ProduceState::new(timestamps, persisted),
                log_start_waits: log_start::Waits::default(),
                markers: PendingMarkers::default(),
                since_checkpoint: (0, 0),
                cleanup: Cleanup::DELETE,
            };
            // A checkpoint written with a larger bound, or holding spans of the batches that
            // were in memory when it was written, may hold more.
            state.thin_to_bound();
            Ok(state)
        };
        decode().expect("checkpoints are checksummed and written by this version")
    }

    /// Encodes the state for a checkpoint. The index is thinned to a point per sparse
    /// interval (`interval`, the configured one, doubled as often as the index was thinned)
    /// of batches (`store` has the sizes of those still cached): after a restart the entries
    /// it covers are read from disk, which a sparse index serves.
    pub(super) fn checkpoint_data(&self, store: &LogStore, interval: u64) -> Vec<u8> {
        let interval = self.sparse_interval(interval);
        let mut w = Writer::default();
        w.u8(CHECKPOINT_VERSION);
        w.i64(self.log_start_offset.0);
        w.i64(self.next_offset.0);
        w.i64(self.snapshot_next_offset.0);
        self.producers.encode(&mut w);
        w.u64(self.producers_as_of.0);
        let mut points: Vec<(Offset, Point)> = Vec::new();
        let mut span_bytes = u64::MAX;
        for (offset, point) in &self.offset_index {
            let Some(entry) = store.entry(point.index.0) else {
                points.push((*offset, *point)); // already sparse
                span_bytes = u64::MAX;
                continue;
            };
            match points.last_mut() {
                Some((_, span)) if span_bytes < interval => {
                    span.max_timestamp = span.max_timestamp.max(point.max_timestamp);
                    span_bytes += entry.data.len() as u64;
                }
                _ => {
                    points.push((*offset, *point));
                    span_bytes = entry.data.len() as u64;
                }
            }
        }
        w.u32(u32::try_from(points.len()).expect("index points fit in u32"));
        for (offset, point) in points {
            w.i64(offset.0);
            w.u64(point.index.0);
            w.i64(point.max_timestamp);
        }
        self.epochs.encode(&mut w);
        // Past 63 the doubling saturates anyway.
        w.u8(u8::try_from(self.sparse_shift.min(64)).expect("at most 64"));
        w.bytes
    }

    /// What the sparse interval is doubled by: 2 to the times the index was thinned.
    fn sparse_factor(&self) -> u64 {
        1u64.checked_shl(self.sparse_shift).unwrap_or(u64::MAX)
    }

    /// Bytes of batches per sparse point: the configured `interval`, doubled as often as the
    /// index was thinned.
    fn sparse_interval(&self, interval: u64) -> u64 {
        interval.saturating_mul(self.sparse_factor())
    }

    /// The most bytes of batches a sparse point's span holds, given the configured `interval`
    /// and the largest batch: a span takes batches while it holds less than its interval, and
    /// each thinning merges two spans into one.
    pub(super) fn span_bytes_max(&self, interval: u64, batch_bytes_max: u64) -> u64 {
        interval
            .saturating_add(batch_bytes_max)
            .saturating_mul(self.sparse_factor())
    }

    /// Points of the sparse index (those of batches no longer in memory).
    pub(super) fn sparse_points(&self) -> usize {
        self.sparse_points
    }

    /// Thins the sparse points while there are more than `sparse_points_max`: each pair of
    /// closed spans merges into its first point, whose span then holds both (its largest
    /// timestamp the larger of theirs), and the sparse interval doubles. A fetch starts at the
    /// point at or below the offset it wants and reads forward, and a timestamp lookup reads
    /// the first span whose largest timestamp is late enough, so both find what they found
    /// before, reading up to twice as far. Deterministic: the same points thin the same way.
    fn thin_to_bound(&mut self) {
        assert!(self.sparse_points_max >= 2, "two closed spans to merge");
        while self.sparse_points > self.sparse_points_max {
            // The open span (the last sparse point) still takes batches: it stays as it is.
            let closed = self.sparse_points - usize::from(self.open_span.is_some());
            let pairs = closed / 2;
            let mut points = std::mem::take(&mut self.offset_index).into_iter();
            let mut kept = BTreeMap::new();
            for _ in 0..pairs {
                let (offset, mut first) = points.next().expect("counted");
                let (_, second) = points.next().expect("counted");
                first.max_timestamp = first.max_timestamp.max(second.max_timestamp);
                kept.insert(offset, first);
            }
            // A closed span left over, the open one and every point of a batch in memory stay.
            kept.extend(points);
            self.offset_index = kept;
            self.sparse_points -= pairs;
            self.sparse_shift += 1;
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

    /// The leader-epoch history.
    pub(super) fn epochs(&self) -> &EpochHistory {
        &self.epochs
    }

    /// Planted bug `local_log_start`: moves the log start offset on this replica alone.
    pub(super) fn move_log_start_locally(&mut self, offset: Offset) {
        assert!(offset <= self.next_offset);
        self.log_start_offset = self.log_start_offset.max(offset);
        self.truncate_epochs();
    }

    /// Drops the epochs whose records all lie below the log start. Not above the next offset
    /// (the log start is above it only on a replica still applying the entries after an
    /// installed snapshot), so no epoch starts above the high watermark.
    fn truncate_epochs(&mut self) {
        self.epochs
            .truncate_start(self.log_start_offset.min(self.next_offset));
        self.producers.trim_aborted(self.log_start_offset);
    }

    /// The last stable offset (Kafka's LSO): below it every transaction has ended, so a
    /// read_committed consumer reads up to it and no further. The high watermark when no
    /// transaction is open.
    pub(super) fn last_stable_offset(&self) -> Offset {
        self.producers
            .first_open_offset()
            .map_or(self.next_offset, |first| first.min(self.next_offset))
    }

    /// The applied producer table.
    pub(super) fn producers(&self) -> &ProducerTable {
        &self.producers
    }

    /// Applies a normal entry: its record batch, if it holds one (a leader's no-op does not),
    /// or its log start command. Returns the batch's stored CRC-32C, or 0.
    pub(super) fn apply(&mut self, entry: &Entry) -> u32 {
        // The first entry of a newer term starts its epoch where its records (if any) start.
        self.epochs.on_entry(Term(entry.term), self.next_offset);
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
            self.truncate_epochs();
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
        self.offset_index.insert(
            batch.base_offset(),
            Point {
                index: RaftIndex(entry.index),
                max_timestamp: batch.max_timestamp(),
            },
        );
        if entry.index > self.producers_as_of.0 {
            record_producer(&mut self.producers, entry, &batch);
        }
        self.next_offset = batch.next_offset();
        self.since_checkpoint.0 += entry.data.len() as u64;
        if self.next_offset >= self.log_start_offset {
            self.log_start_ahead = false;
        }
        batch.crc()
    }

    /// Entries left memory (applied, persisted): their batches' points merge into sparse
    /// spans of about the sparse interval each (`interval`, the configured one, doubled as
    /// often as the index was thinned), thinned past `sparse_points_max`.
    pub(super) fn on_evicted(&mut self, entries: &[Entry], interval: u64) {
        let interval = self.sparse_interval(interval);
        for entry in entries {
            let Some(batch) = record_batch(entry) else {
                continue;
            };
            let base = batch.base_offset();
            let Some(point) = self.offset_index.get(&base).copied() else {
                continue; // below the log start, compacted
            };
            let len = entry.data.len() as u64;
            match &mut self.open_span {
                Some((start, bytes)) if *bytes < interval => {
                    *bytes += len;
                    let start = *start;
                    self.offset_index.remove(&base);
                    let span = self.offset_index.get_mut(&start).expect("open span point");
                    span.max_timestamp = span.max_timestamp.max(point.max_timestamp);
                }
                _ => {
                    self.open_span = Some((base, len));
                    self.sparse_points += 1;
                }
            }
        }
        self.thin_to_bound();
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
        self.producers = data.producers;
        self.producers_as_of = RaftIndex(data.producers_index);
        self.offset_index.clear();
        self.open_span = None;
        self.sparse_points = 0;
        self.sparse_shift = 0;
        self.snapshot_next_offset = data.next_offset;
        self.epochs = data.epochs;
        self.log_start_ahead = self.log_start_offset > self.next_offset;
        self.produce.fail_overwritten(index, sink);
        self.log_start_waits.fail_overwritten(index, sink);
        self.markers.forget_overwritten(index);
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
                if index > self.producers_as_of.0 {
                    record_producer(&mut producers, entry, &batch);
                }
                log_end_offset = batch.next_offset();
            }
        }
        LeaderState {
            log_end_offset,
            producers,
            refusing_producers: false,
        }
    }

    /// Linear-time invariants (every producer, every index point). `cache_first`: the first
    /// entry in memory.
    pub(super) fn invariants_full(&self, cache_first: u64) {
        for (at, (offset, point)) in self.offset_index.iter().enumerate() {
            assert_eq!(
                point.index.0 < cache_first,
                at < self.sparse_points,
                "the sparse points are those of batches no longer in memory, and come first"
            );
            if self.open_span.is_some_and(|(start, _)| start == *offset) {
                assert_eq!(
                    at + 1,
                    self.sparse_points,
                    "the open span is the last sparse one"
                );
            }
        }
        self.producers.invariants();
        if let Some(leader) = &self.produce.leader {
            // The leader's table is the applied one with the rest of its log applied too.
            assert!(leader.producers.clock_ms() >= self.producers.clock_ms());
        }
        self.log_start_waits.invariants();
        self.markers.invariants();
        self.produce.invariants_full();
    }

    /// Constant-time invariants. `first_index`: the store's first entry; `last_index`: the
    /// last index of raft-rs's log; `applied`: the last entry applied; `leading`: the term
    /// this node leads in, if it does.
    pub(super) fn invariants(
        &self,
        first_index: u64,
        last_index: u64,
        applied: RaftIndex,
        leading: Option<Term>,
    ) {
        // Right after installing a snapshot, the log start may be above the next offset until
        // the batches after the snapshot's index are applied up to it.
        assert!(self.log_start_offset <= self.next_offset || self.log_start_ahead);
        assert!(
            self.snapshot_next_offset <= self.log_start_offset,
            "the log start is at or after the records the snapshot dropped"
        );
        if let Some((offset, point)) = self.offset_index.first_key_value() {
            assert!(*offset >= self.snapshot_next_offset && point.index.0 >= first_index);
        }
        assert!(
            self.next_offset <= self.snapshot_next_offset
                || self.offset_index.contains_key(&self.snapshot_next_offset),
            "every record after the snapshot is found through the index"
        );
        if let Some((start, _)) = self.open_span {
            assert!(
                self.offset_index.contains_key(&start),
                "the open span has its point"
            );
        }
        assert!(self.sparse_points <= self.offset_index.len());
        assert!(
            self.sparse_points <= self.sparse_points_max,
            "the sparse index is thinned to its bound"
        );
        self.produce
            .invariants(leading, last_index, self.next_offset);
        // An installed snapshot's history is as of the index its producer table is.
        self.epochs
            .invariants(self.next_offset, applied < self.producers_as_of);
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
        self.serving_at(request.current_leader_epoch)?;
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
        // Planted bug `lso-is-hw`: read_committed reads open transactions too.
        let last_stable_offset = if config.planted.lso_is_hw() {
            records.next_offset
        } else {
            records.last_stable_offset()
        };
        // read_committed stops at the last stable offset, with the aborted transactions a
        // consumer may meet up to there (Kafka's, for the range it reads).
        let (end_offset, aborted) = if request.read_committed {
            let aborted = records
                .producers()
                .aborted_between(request.offset, last_stable_offset)
                .copied()
                .collect();
            (last_stable_offset, aborted)
        } else {
            (Offset::MAX, Vec::new())
        };
        let mut data = FetchData {
            high_watermark: records.next_offset,
            last_stable_offset,
            aborted,
            log_start_offset: records.log_start_offset,
            batches: Vec::new(),
            read: None,
        };
        // Start at the batch (or sparse span) holding the offset; Kafka serves whole batches.
        let start = match records.offset_index.range(..=request.offset).next_back() {
            Some((_, point)) => point.index.0,
            // Above every applied batch: only the planted bug's unapplied suffix.
            None => self.raw.store().cache_first().max(self.applied.0 + 1),
        };
        if start < self.raw.store().cache_first() {
            data.read = Some(DiskRead {
                group: self.group,
                from: RaftIndex(start),
                to: RaftIndex(last_index),
                // The span before the offset asked, which is skipped, and what is served.
                read_bytes: u64::from(request.max_bytes).saturating_add(records.span_bytes_max(
                    config.offset_index_interval_bytes,
                    config.batch_bytes_max as u64,
                )),
                max_bytes: request.max_bytes,
                skip_below: request.offset,
                end_offset,
            });
            return Ok(data);
        }
        let mut bytes = 0usize;
        for index in start..=last_index {
            if bytes >= request.max_bytes as usize {
                break;
            }
            let entry = self
                .raw
                .store()
                .entry(index)
                .expect("entries from the cache's start on are held");
            if let Some(batch) = record_batch(entry) {
                if batch.next_offset() <= request.offset {
                    continue;
                }
                if batch.base_offset() >= end_offset {
                    break;
                }
                bytes += entry.data.len();
                data.batches.push(batch.into_bytes());
            }
        }
        Ok(data)
    }

    /// Checks that a read naming `current_leader_epoch` (-1: none) may be served here: the
    /// epoch is this replica's term (checked first, as Kafka does, so a follower answers a
    /// stale epoch as fenced), and this replica is the serving leader.
    fn serving_at(&self, current_leader_epoch: i32) -> Result<(), FetchError> {
        check_leader_epoch(current_leader_epoch, Term(self.raw.raft.term))
            .map_err(FetchError::LeaderEpoch)?;
        if self.serving_leader().is_none() {
            return Err(FetchError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        Ok(())
    }

    /// Where a leader epoch ends, from the serving leader's history (Kafka's
    /// OffsetForLeaderEpoch): the latest epoch ends at the high watermark.
    pub(crate) fn epoch_end(&self, request: &EpochEndRequest) -> Result<EpochEnd, FetchError> {
        assert_eq!(request.group, self.group);
        let records = self.kind.records();
        self.serving_at(request.current_leader_epoch)?;
        Ok(records
            .epochs
            .end_of(request.leader_epoch, records.next_offset))
    }

    /// The first committed batch after Raft index `after` whose largest timestamp is at least
    /// `timestamp`, through the time index (the largest timestamp of each batch in memory, of
    /// each sparse span on disk).
    pub(crate) fn find_timestamp(
        &self,
        timestamp: i64,
        after: RaftIndex,
    ) -> Result<FoundBatch, FetchError> {
        let records = self.kind.records();
        if self.serving_leader().is_none() {
            return Err(FetchError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        let cache_first = self.raw.store().cache_first();
        let mut points = records.offset_index.iter().peekable();
        while let Some((_, point)) = points.next() {
            let to = points
                .peek()
                .map_or(self.applied.0, |(_, next)| next.index.0 - 1);
            if point.max_timestamp < timestamp || to <= after.0 {
                continue;
            }
            if point.index.0 < cache_first {
                return Ok(FoundBatch::OnDisk(DiskRead {
                    group: self.group,
                    from: point.index,
                    to: RaftIndex(to),
                    read_bytes: u64::MAX,
                    max_bytes: u32::MAX,
                    skip_below: records.log_start_offset,
                    end_offset: Offset::MAX,
                }));
            }
            let entry = self
                .raw
                .store()
                .entry(point.index.0)
                .expect("cached batches are held");
            let batch = record_batch(entry).expect("the offset index points at batches");
            if batch.next_offset() <= records.log_start_offset {
                continue; // deleted, not yet compacted
            }
            return Ok(FoundBatch::Batch(batch.into_bytes()));
        }
        Ok(FoundBatch::None)
    }

    /// Compacts the log into a snapshot of the partition's state: every entry before the
    /// batch (or sparse span) holding the log start offset (DeleteRecords or retention moved
    /// it), and, retention by entry count (`retain_entries_max`, a simulator setting; not for
    /// compact-only topics), all but about the last that many applied entries. Only applied and persisted entries are
    /// compacted. The snapshot carries the log start, the offset after its index and the
    /// producer table as applied (its entries after the index apply to it again harmlessly:
    /// recording a batch twice is a no-op).
    pub(super) fn compact(&mut self, config: &NodeConfig, sink: &mut Sink) {
        let first = self.raw.store().first_index();
        let applied = self.applied.0;
        let snapshot_index = self.snapshot_index.0;
        // Command logs are compacted by `Node`, which has their state (`compact_commands`).
        let Kind::Records(records) = &mut self.kind else {
            return;
        };
        let compactable = applied.min(self.raw.raft.raft_log.persisted);
        // The greatest batch start at or below `offset` whose entry's predecessor is at or
        // below `limit`: compacting to that predecessor keeps every record from it on.
        let point_below = |offset: Offset, limit: u64| {
            records
                .offset_index
                .range(..=offset)
                .rev()
                .map(|(o, p)| (p.index.0 - 1, *o))
                .find(|(target, _)| *target <= limit)
        };
        let mut target =
            if records.log_start_offset >= records.next_offset && applied <= compactable {
                // Every applied record is deleted.
                Some((applied, records.next_offset))
            } else {
                point_below(records.log_start_offset, compactable)
            };
        // A compact-only topic never loses records by position (as Kafka's never does by
        // retention): the simulator's count-based retention leaves it alone.
        let by_count = config
            .retain_entries_max
            .filter(|_| !records.cleanup.compact_only());
        if let Some(keep) = by_count {
            if applied >= first && applied - first >= keep + keep / 2 {
                let by_count = point_below(Offset(i64::MAX), compactable.min(applied - keep));
                if by_count.is_some_and(|(t, _)| target.is_none_or(|(u, _)| t > u)) {
                    target = by_count;
                }
            }
        }
        let Some((target, next_offset)) = target.filter(|(t, _)| *t > snapshot_index) else {
            return;
        };
        assert!(
            target <= compactable,
            "only persisted, applied entries are compacted"
        );
        self.snapshot_index = RaftIndex(target);
        records.log_start_offset = records.log_start_offset.max(next_offset);
        records.snapshot_next_offset = next_offset;
        records.truncate_epochs();
        let data = SnapshotData {
            log_start_offset: records.log_start_offset,
            next_offset,
            producers: records.producers.clone(),
            producers_index: applied,
            epochs: records.epochs.clone(),
        };
        let before = records.offset_index.len();
        records.offset_index = records.offset_index.split_off(&next_offset);
        // The points dropped are a prefix, so the sparse ones first.
        let dropped = before - records.offset_index.len();
        records.sparse_points -= dropped.min(records.sparse_points);
        if records
            .open_span
            .is_some_and(|(start, _)| start < next_offset)
        {
            records.open_span = None;
        }
        self.compact_to(target, data.encode().into(), sink);
    }
}

/// Applies a batch entry to a producer table: its append time (which may expire producers),
/// then its batch, if it has a producer id. Applying and the leader's view of its log do it
/// alike, so both reach the same table.
fn record_producer(producers: &mut ProducerTable, entry: &Entry, batch: &Batch) {
    let context = entry_context(entry);
    if let Some((at, _)) = &context {
        producers.advance(at);
    }
    let txn_start_ms = context.and_then(|(_, start)| start);
    // A marker the log cleaner emptied closes its transaction as the COMMIT it was.
    if let Some(marker) = batch.marker().or_else(|| batch.removed_marker()) {
        let start = txn_start_ms.expect("a marker names its transaction");
        producers.record_marker(&marker, batch.base_offset(), start);
    }
    if let Some(p) = producer_batch(batch, txn_start_ms) {
        producers.record(
            &p,
            batch.base_offset(),
            RaftIndex(entry.index),
            Term(entry.term),
        );
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

#[cfg(test)]
mod cleaned_tests;
#[cfg(test)]
mod tests;
