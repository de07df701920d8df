//! One cleaning pass over a compacted partition's closed segments (Kafka's log cleaner, for
//! one log): map the dirty part, rewrite the segments it cleans, swap them in.
//!
//! The pass reads only closed segments (never the active one), and of them only the live
//! entries (a frame a new leader replaced is left as it is), only up to the group's durable
//! Raft commit index (an entry that may still be replaced never hides an older record) and
//! below the caller's upper offset (`CleanOptions::upper`: the last stable offset, the
//! `min.compaction.lag.ms` horizon). It first reads every closed segment ahead for the
//! transactions' markers ([`oxbow_core::clean::TxnScan`]: how each transactional batch's
//! transaction ended; past the upper offset too, since a marker may follow it there), then
//! maps the batches from the cleaner checkpoint's offset on ([`oxbow_core::clean::map_batch`],
//! not reading again the segments wholly below it) until the map is full, a transaction is
//! undecided, or the range ends, then cleans every batch below the end of what it mapped,
//! from the first closed segment on
//! ([`oxbow_core::clean::clean_batch`]: aborted transactions' records go, committed ones are
//! thinned as plain ones, a COMMIT marker goes once its transaction has no record left and
//! its delete horizon has passed).
//!
//! A segment is rewritten into a new file frame by frame: every frame stays at its place in
//! the order, an entry keeps its Raft index, term, type and context, and only a cleaned
//! batch's data changes (so the log stays a valid Raft log, and the frames of a replaced
//! suffix still follow what they replace); `Synced` markers are left out (a closed segment is
//! synced whole, which recovery knows without them) but for one at the new file's end. The
//! swap is crash-safe:
//! 1. the new file (`<segment>.cleaning`) is written and synced;
//! 2. the group's index file is removed (its positions would no longer be the segment's);
//! 3. the new file is renamed over the segment (atomic, durable);
//! 4. the sparse index's points into it move to their frames' new positions, in memory and
//!    in the index file, which is written again (through a temporary name, renamed).
//!
//! A crash before 3 leaves the old segment (and, before 2, its index file); after 2 and
//! before 4 recovery finds no index file and reads every segment, which is right for the old
//! segment and the new one alike; a leftover `.cleaning` file is removed by recovery.
//! Finally the cleaner checkpoint (`g<group>.cleaner`: the offset the log is clean up to, and
//! the earliest delete horizon of a batch below it still holding a tombstone or a removable
//! marker, for the
//! scheduler to come back then) is written the same way; losing it only makes the next pass
//! map more.
//!
//! A pass runs a step (one segment) at a time ([`CleanPass`]), the log taking writes between
//! steps: a roll between two swaps writes an index file from the live structure (its moved
//! points included), which the next swap removes again.

use bytes::Bytes;
use oxbow_core::batch::{Batch, BatchSpan, HEADER_LEN};
use oxbow_core::clean::{clean_batch, map_batch, OffsetMap, TxnScan, Txns};
use oxbow_core::ids::{GroupId, Offset, RaftIndex};
use oxbow_core::node::PlantedBugs;

use super::index_file::{index_name, IndexFile, SegmentMeta};
use super::structure::Point;
use super::{frame_error_text, segment_name, GroupLog, Segment};
use crate::storage::disk::Disk;
use crate::storage::frame::{self, Frame, FRAME_PAYLOAD_MAX};
use crate::storage::segment_log::{io_error, StorageError};

/// The suffix of a segment's cleaned copy before it is swapped in.
const CLEANING_SUFFIX: &str = ".cleaning";
/// The suffix of a file written whole and then renamed to its name without it.
const TEMPORARY_SUFFIX: &str = ".tmp";
const CHECKPOINT_SUFFIX: &str = ".cleaner";
const CHECKPOINT_MAGIC: u32 = 0x4f58_434c; // "OXCL"

/// Whether `name` is a file a pass writes before renaming it (a crash may leave one): a
/// segment's `.cleaning` copy, or an index file's or cleaner checkpoint's `.tmp` (other
/// files of the data directory are not the log's).
pub(crate) fn is_partial_file(name: &str) -> bool {
    if let Some(segment) = name.strip_suffix(CLEANING_SUFFIX) {
        return super::parse_segment_name(segment).is_some();
    }
    name.strip_suffix(TEMPORARY_SUFFIX).is_some_and(|whole| {
        super::parse_index_name(whole).is_some() || parse_checkpoint_name(whole).is_some()
    })
}

/// The cleaner checkpoint's file name of `group`.
pub(crate) fn checkpoint_name(group: GroupId) -> String {
    format!("g{:020}{CHECKPOINT_SUFFIX}", group.0)
}

/// The group a cleaner checkpoint's file name stands for.
pub(crate) fn parse_checkpoint_name(name: &str) -> Option<GroupId> {
    let digits = name.strip_prefix('g')?.strip_suffix(CHECKPOINT_SUFFIX)?;
    (digits.len() == 20).then(|| digits.parse().ok().map(GroupId))?
}

/// What one pass is to do.
#[derive(Clone, Copy, Debug)]
pub struct CleanOptions {
    /// No batch reaching this offset or past it is mapped or cleaned (the caller's min of
    /// the last stable offset and the `min.compaction.lag.ms` horizon).
    pub upper: Offset,
    /// The pass's wall time: tombstones of batches whose delete horizon is before it go.
    pub now_ms: i64,
    /// The topic's `delete.retention.ms`: a kept tombstone's batch gets a horizon this long
    /// after the pass.
    pub delete_retention_ms: i64,
    /// The most bytes a batch's records may inflate to (`batch_decompressed_bytes_max`).
    pub decompressed_max: usize,
    /// The most transactions the pass tracks in each of its tables
    /// (`oxbow_core::clean::txns_max` of the dedupe buffer).
    pub txns_max: usize,
}

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// The log is clean up to here now (the cleaner checkpoint).
    pub clean_to: Offset,
    /// Segments rewritten and swapped in.
    pub segments_rewritten: usize,
    /// Their bytes before and after.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
    /// Records dropped.
    pub records_dropped: u64,
    /// Batches left with no records.
    pub batches_emptied: u64,
    /// Batches kept as they were because they could not be decoded within the limit.
    pub batches_undecodable: u64,
    /// The earliest delete horizon of a batch below `clean_to` still holding a tombstone.
    pub delete_horizon_ms: Option<i64>,
}

/// A cleaning pass of one group, run a step at a time ([`super::super::SegmentLog::clean_step`]).
/// It owns the offset map, which the caller gets back to reuse ([`CleanPass::into_map`]).
pub struct CleanPass {
    group: GroupId,
    options: CleanOptions,
    map: OffsetMap,
    state: Option<PassState>,
}

impl CleanPass {
    /// A pass over `group`'s log with `map` (its memory is the dedupe buffer).
    pub fn new(group: GroupId, options: CleanOptions, map: OffsetMap) -> Self {
        Self {
            group,
            options,
            map,
            state: None,
        }
    }

    /// The group it cleans.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Gives the map back.
    pub fn into_map(self) -> OffsetMap {
        self.map
    }
}

/// Where a pass is.
struct PassState {
    /// The cleaner checkpoint's offset when the pass began: mapping starts there.
    from: Offset,
    /// The closed segments when the pass began.
    closed: Vec<u64>,
    /// The next of them to read.
    next: usize,
    /// The next live Raft index expected.
    expected: u64,
    /// Reading ahead for the transactions' markers (before mapping): what it read so far.
    scan: Option<TxnScan>,
    /// What the read ahead found (before it ends: nothing, every transaction undecided).
    txns: Txns,
    /// Mapping, or else cleaning.
    mapping: bool,
    /// The offset after the last batch mapped.
    clean_to: Offset,
    /// The index file as it stood when a swap first removed it (the structure at the last
    /// roll), to be written again with the rewritten segments' points moved.
    index: Option<IndexFile>,
    report: CleanReport,
}

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStep {
    /// Bytes read and written.
    pub bytes: u64,
    /// When the step swapped a rewritten segment in: the last Raft index it holds. The core
    /// must drop its entries up to there from memory (`Node::evict_cleaned`), or it would go
    /// on serving their originals.
    pub rewritten_through: Option<RaftIndex>,
    /// Set when the pass is over: its report, `None` when nothing was cleanable.
    pub finished: Option<Option<CleanReport>>,
}

/// Maps the batches of one segment's `frames`; whether the mapping is over (the map is full
/// or the range ended).
fn map_segment(
    frames: &[Scanned],
    map: &mut OffsetMap,
    state: &mut PassState,
    options: &CleanOptions,
    planted: PlantedBugs,
) -> bool {
    for batch in frames.iter().filter_map(|f| f.batch.as_ref()) {
        if batch.base_offset() < state.from {
            continue;
        }
        if batch.next_offset() > options.upper {
            return true;
        }
        match map_batch(map, batch, &state.txns, options.decompressed_max, planted) {
            Ok(true) => state.clean_to = batch.next_offset(),
            Ok(false) => return true,
            // Not mapped and, below, kept as it is: it hides nothing and loses nothing.
            Err(_) => state.clean_to = batch.next_offset(),
        }
    }
    false
}

/// Where each frame of a rewritten segment moved: (old position, new position), ascending.
type Moved = Vec<(u64, u64)>;

/// What the log cleaner's scheduler weighs of a group's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanStats {
    /// The offset the log is clean up to (its cleaner checkpoint).
    pub clean_offset: Offset,
    /// Bytes of its closed segments.
    pub closed_bytes: u64,
    /// Bytes of its closed segments whose batches all lie at or past the clean offset (Kafka's
    /// dirty part; the dirty ratio is this over `closed_bytes`).
    pub dirty_bytes: u64,
    /// The largest timestamp of the first dirty closed segment: every record of it is at
    /// least this old (for `max.compaction.lag.ms`).
    pub dirty_since_ms: Option<i64>,
    /// The first offset of the first closed segment holding a batch newer than the
    /// `min.compaction.lag.ms` horizon: no pass may clean from there on (`Offset::MAX` when
    /// every closed segment is older).
    pub lag_upper: Offset,
    /// The earliest delete horizon of a cleaned batch still holding a tombstone: once past,
    /// a pass removes them even with nothing new to map (KIP-534).
    pub delete_horizon_ms: Option<i64>,
}

impl CleanReport {
    /// A batch left below the clean offset holding `tombstones`: its horizon may be the
    /// earliest.
    fn note_tombstones(&mut self, batch: &Batch, tombstones: u32) {
        if tombstones == 0 {
            return;
        }
        if let Some(horizon) = batch.delete_horizon_ms() {
            self.delete_horizon_ms =
                Some(self.delete_horizon_ms.map_or(horizon, |h| h.min(horizon)));
        }
    }
}

/// One frame of a segment read whole.
struct Scanned {
    position: usize,
    len: usize,
    frame: Frame,
    /// A live entry at or below the durable commit index holding a record batch.
    batch: Option<Batch>,
}

/// The data of a stored entry as a batch, if it is one whose header holds together (a
/// partition's log also holds leader no-ops and commands, with no batch).
fn stored_batch(data: &Bytes) -> Option<Batch> {
    BatchSpan::of(data)?;
    if data.len() < HEADER_LEN {
        return None;
    }
    let length = i32::from_be_bytes(data[8..12].try_into().ok()?);
    let count = i32::from_be_bytes(data[57..61].try_into().ok()?);
    let delta = i32::from_be_bytes(data[23..27].try_into().ok()?);
    let whole = usize::try_from(length).is_ok_and(|l| l + 12 == data.len());
    (whole && (0..=delta.saturating_add(1)).contains(&count)).then(|| Batch::trusted(data.clone()))
}

impl GroupLog {
    /// The offset the log is clean up to, from the cleaner checkpoint (0 without a valid one).
    pub(crate) fn clean_offset<D: Disk>(&self, disk: &mut D) -> Result<Offset, StorageError> {
        Ok(self.cleaner_checkpoint(disk)?.0)
    }

    /// The cleaner checkpoint: the offset the log is clean up to, and the earliest delete
    /// horizon of a batch below it still holding a tombstone ((0, none) without a valid one).
    fn cleaner_checkpoint<D: Disk>(
        &self,
        disk: &mut D,
    ) -> Result<(Offset, Option<i64>), StorageError> {
        let file = checkpoint_name(self.group);
        if !disk
            .list()
            .map_err(io_error("list", "data directory"))?
            .contains(&file)
        {
            return Ok((Offset(0), None));
        }
        let bytes = disk.read(&file).map_err(io_error("read", &file))?;
        let word = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let valid = bytes.len() == 24
            && u32::from_le_bytes(bytes[..4].try_into().expect("4")) == CHECKPOINT_MAGIC
            && crc32fast::hash(&bytes[..20])
                == u32::from_le_bytes(bytes[20..].try_into().expect("4"));
        Ok(if valid {
            let horizon = Some(word(12)).filter(|h| *h != i64::MAX);
            (Offset(word(4).max(0)), horizon)
        } else {
            (Offset(0), None)
        })
    }

    fn write_cleaner_checkpoint<D: Disk>(
        &self,
        disk: &mut D,
        offset: Offset,
        delete_horizon_ms: Option<i64>,
    ) -> Result<(), StorageError> {
        let mut bytes = CHECKPOINT_MAGIC.to_le_bytes().to_vec();
        bytes.extend_from_slice(&offset.0.to_le_bytes());
        bytes.extend_from_slice(&delete_horizon_ms.unwrap_or(i64::MAX).to_le_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        write_whole(disk, &checkpoint_name(self.group), &bytes)
    }

    /// What the scheduler weighs (see [`CleanStats`]) at wall time `now_ms` with the topic's
    /// `min.compaction.lag.ms`.
    pub(crate) fn clean_stats<D: Disk>(
        &self,
        disk: &mut D,
        now_ms: i64,
        min_lag_ms: i64,
    ) -> Result<CleanStats, StorageError> {
        let (clean_offset, delete_horizon_ms) = self.cleaner_checkpoint(disk)?;
        let closed: Vec<&Segment> = self.segments.values().rev().skip(1).rev().collect();
        let dirty: Vec<&&Segment> = closed
            .iter()
            .filter(|s| s.first_offset.is_some_and(|first| first >= clean_offset))
            .collect();
        let horizon = now_ms.saturating_sub(min_lag_ms);
        Ok(CleanStats {
            clean_offset,
            delete_horizon_ms,
            closed_bytes: closed.iter().map(|s| s.len).sum(),
            dirty_bytes: dirty.iter().map(|s| s.len).sum(),
            dirty_since_ms: dirty.first().map(|s| s.max_timestamp),
            lag_upper: closed
                .iter()
                .filter(|s| s.max_timestamp > horizon)
                .find_map(|s| s.first_offset)
                .unwrap_or(Offset(i64::MAX)),
        })
    }

    /// Runs one whole pass (see the module documentation) with `map`: every step at once.
    /// `None` when nothing of the log is cleanable yet.
    pub(crate) fn clean<D: Disk>(
        &mut self,
        disk: &mut D,
        map: &mut OffsetMap,
        options: &CleanOptions,
    ) -> Result<Option<CleanReport>, StorageError> {
        let mut pass = CleanPass::new(
            self.group,
            *options,
            std::mem::replace(map, OffsetMap::new(0)),
        );
        let finished = loop {
            if let Some(finished) = self.clean_step(disk, &mut pass)?.finished {
                break finished;
            }
        };
        *map = pass.into_map();
        Ok(finished)
    }

    /// One step of `pass`: at most one closed segment read (mapped, or cleaned and swapped
    /// in), so that a caller can spread a pass's IO over time while the log goes on taking
    /// writes between steps (a segment that went meanwhile, compacted away, is skipped).
    pub(crate) fn clean_step<D: Disk>(
        &mut self,
        disk: &mut D,
        pass: &mut CleanPass,
    ) -> Result<CleanStep, StorageError> {
        assert_eq!(pass.group, self.group);
        if pass.state.is_none() {
            self.flush(disk)?;
            pass.map.clear();
            let from = self.clean_offset(disk)?;
            pass.state = Some(PassState {
                from,
                closed: self.segments.keys().rev().skip(1).rev().copied().collect(),
                next: 0,
                expected: self.structure.snapshot_index() + 1,
                scan: Some(TxnScan::new(pass.options.txns_max)),
                txns: Txns::none(),
                mapping: true,
                clean_to: from,
                index: None,
                report: CleanReport::default(),
            });
        }
        let state = pass.state.as_mut().expect("started");
        let number = state.closed.get(state.next).copied();
        state.next += 1;
        let mut step = CleanStep::default();
        let mut ended = number.is_none();
        // Mapping skips a segment whose successor starts at or below the checkpoint: all its
        // batches are clean, and the read ahead has read it already. (The next live index
        // expected then stays behind, which lets no frame below the checkpoint be mapped.)
        let clean_whole = state.scan.is_none()
            && state.mapping
            && state
                .closed
                .get(state.next)
                .and_then(|next| self.segments.get(next))
                .and_then(|next| next.first_offset)
                .is_some_and(|first| first <= state.from);
        if let Some(number) = number.filter(|n| self.segments.contains_key(n) && !clean_whole) {
            let (bytes, frames) = self.scan(disk, number, &mut state.expected)?;
            step.bytes += bytes.len() as u64;
            if let Some(scan) = &mut state.scan {
                for batch in frames.iter().filter_map(|f| f.batch.as_ref()) {
                    scan.read(batch);
                }
            } else if state.mapping {
                ended = map_segment(&frames, &mut pass.map, state, &pass.options, self.planted);
            } else {
                let past_end = frames
                    .iter()
                    .filter_map(|f| f.batch.as_ref())
                    .any(|b| b.next_offset() > state.clean_to);
                let rewritten = self.rewrite(
                    &bytes,
                    frames,
                    &pass.options,
                    (&pass.map, &mut state.txns),
                    state.clean_to,
                    &mut state.report,
                );
                if let Some((rewritten, moved)) = rewritten {
                    // Step 2, again if a roll wrote an index file since the last swap.
                    if !self.index_files.is_empty() {
                        state.index = self.remove_index_files(disk)?;
                    }
                    state.report.segments_rewritten += 1;
                    state.report.bytes_before += bytes.len() as u64;
                    state.report.bytes_after += rewritten.len() as u64;
                    step.bytes += rewritten.len() as u64;
                    self.swap(disk, number, &rewritten, &moved)?;
                    let segment = &self.segments[&number];
                    step.rewritten_through = Some(RaftIndex(segment.max_index));
                    if let Some(index) = &mut state.index {
                        index.moved(number, segment.meta(number), &moved);
                    }
                }
                ended = past_end;
            }
        }
        if !ended && state.next < state.closed.len() {
            return Ok(step);
        }
        if let Some(scan) = state.scan.take() {
            // Read ahead to the end: map from the first closed segment again.
            scan.invariants();
            state.txns = scan.finish();
            state.next = 0;
            state.expected = self.structure.snapshot_index() + 1;
            return Ok(step);
        }
        if state.mapping {
            if state.clean_to == Offset(0) {
                step.finished = Some(None);
                return Ok(step);
            }
            // Nothing new mapped: the pass still takes the tombstones whose horizon has
            // passed from the part cleaned before (an empty map keeps every keyed record).
            state.mapping = false;
            state.next = 0;
            state.expected = self.structure.snapshot_index() + 1;
            state.report.clean_to = state.clean_to;
            return Ok(step);
        }
        if self.index_files.is_empty() {
            if let Some(index) = state.index.take() {
                // Step 4: the index file again, its positions the new segments'.
                write_whole(
                    disk,
                    &index_name(self.group, index.through),
                    &index.encode(),
                )?;
                self.index_files.insert(index.through);
            }
        }
        state.txns.invariants();
        let horizon = state.report.delete_horizon_ms;
        self.write_cleaner_checkpoint(disk, state.clean_to, horizon)?;
        self.invariants();
        step.finished = Some(Some(state.report));
        Ok(step)
    }

    /// Reads closed segment `number` whole and decodes its frames, marking the live committed
    /// batches (the next live index is `expected`, moved past them). A bad frame is damage:
    /// a closed segment was synced whole.
    fn scan<D: Disk>(
        &self,
        disk: &mut D,
        number: u64,
        expected: &mut u64,
    ) -> Result<(Vec<u8>, Vec<Scanned>), StorageError> {
        let file = segment_name(self.group, number);
        let bytes = disk.read(&file).map_err(io_error("read", &file))?;
        let len = self.segments[&number].len as usize;
        if bytes.len() < len {
            return Err(StorageError::Damaged {
                file,
                position: bytes.len() as u64,
                why: "a closed segment is shorter than was written".to_string(),
                synced_below: len as u64,
            });
        }
        let commit = self.structure.hard_state.commit;
        let mut frames = Vec::new();
        let mut at = 0usize;
        while at < len {
            let (frame, frame_len) =
                frame::decode(&bytes[at..len]).map_err(|e| StorageError::Damaged {
                    file: file.clone(),
                    position: at as u64,
                    why: frame_error_text(&e),
                    synced_below: len as u64,
                })?;
            let mut batch = None;
            if let Frame::Entry(group, entry) = &frame {
                // At or past the next live index (the segments before may have gone since
                // the pass began), and of its live term: a frame a new leader replaced has
                // another term, and one of the same index and term is the same entry.
                let live = *group == self.group
                    && entry.index >= *expected
                    && self.structure.term_of(entry.index) == Some(entry.term);
                if live {
                    *expected = entry.index + 1;
                    if entry.index <= commit {
                        batch = stored_batch(&entry.data);
                    }
                }
            }
            frames.push(Scanned {
                position: at,
                len: frame_len,
                frame,
                batch,
            });
            at += frame_len;
        }
        Ok((bytes, frames))
    }

    /// The segment's frames with its batches below `clean_to` cleaned, and where each kept
    /// frame moved (old position, new position); `None` if no batch changed.
    fn rewrite(
        &self,
        bytes: &[u8],
        frames: Vec<Scanned>,
        options: &CleanOptions,
        (map, txns): (&OffsetMap, &mut Txns),
        clean_to: Offset,
        report: &mut CleanReport,
    ) -> Option<(Vec<u8>, Moved)> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut moved = Vec::with_capacity(frames.len());
        let mut changed = false;
        for scanned in frames {
            if let Frame::Synced(_) = scanned.frame {
                continue;
            }
            moved.push((scanned.position as u64, out.len() as u64));
            let original = &bytes[scanned.position..scanned.position + scanned.len];
            let (Some(batch), Frame::Entry(group, mut entry)) = (scanned.batch, scanned.frame)
            else {
                out.extend_from_slice(original);
                continue;
            };
            if batch.next_offset() > clean_to {
                out.extend_from_slice(original);
                continue;
            }
            let fits = |cleaned: &Batch| {
                // Kind, group, index, term, type and two lengths, then context and data.
                let payload = 1 + 8 + 8 + 8 + 4 + 8 + entry.context.len() + cleaned.bytes().len();
                payload <= FRAME_PAYLOAD_MAX
            };
            match clean_batch(
                &batch,
                map,
                txns,
                options.now_ms,
                options.delete_retention_ms,
                options.decompressed_max,
                self.planted,
            ) {
                // A batch may grow a little (a delete horizon's timestamp deltas, another
                // compressor), but never past what a frame holds: then it stays as it is.
                Ok(cleaned) if cleaned.changed && fits(&cleaned.batch) => {
                    report.note_tombstones(&cleaned.batch, cleaned.tombstones);
                    report.records_dropped += u64::from(cleaned.dropped);
                    report.batches_emptied += u64::from(cleaned.kept == 0 && cleaned.dropped > 0);
                    entry.data = cleaned.batch.into_bytes();
                    frame::encode(&Frame::Entry(group, entry), &mut out);
                    changed = true;
                }
                Ok(cleaned) => {
                    // As it was: its tombstones stay, with the horizon it has, if any, and
                    // its records keep its transaction's marker (an emptied batch always
                    // fits, so one that does not kept records).
                    report.note_tombstones(&batch, cleaned.tombstones);
                    if cleaned.changed {
                        txns.note_kept(&batch, batch.record_count().max(0) as u32);
                    }
                    out.extend_from_slice(original);
                }
                Err(_) => {
                    report.batches_undecodable += 1;
                    out.extend_from_slice(original);
                }
            }
        }
        if !changed {
            return None;
        }
        // The whole file is synced before it is swapped in: one marker at its end says so,
        // should a crash ever leave it the group's last segment (its successor not created).
        let end = out.len() as u64;
        frame::encode(&Frame::Synced(end), &mut out);
        Some((out, moved))
    }

    /// Removes the group's index files (see the module documentation, step 2), and gives
    /// back the newest as it was, if it is valid.
    fn remove_index_files<D: Disk>(
        &mut self,
        disk: &mut D,
    ) -> Result<Option<IndexFile>, StorageError> {
        let newest = match self.index_files.last() {
            Some(through) => {
                let file = index_name(self.group, *through);
                let bytes = disk.read(&file).map_err(io_error("read", &file))?;
                IndexFile::decode(&bytes)
                    .ok()
                    .filter(|index| index.through == *through)
            }
            None => None,
        };
        for through in std::mem::take(&mut self.index_files) {
            let file = index_name(self.group, through);
            disk.remove(&file).map_err(io_error("remove", &file))?;
        }
        Ok(newest)
    }

    /// Swaps `rewritten` in for closed segment `number` (steps 1 and 3) and moves the points
    /// into it to their frames' new positions.
    fn swap<D: Disk>(
        &mut self,
        disk: &mut D,
        number: u64,
        rewritten: &[u8],
        moved: &[(u64, u64)],
    ) -> Result<(), StorageError> {
        assert!(!self.dirty.contains(&number), "a closed segment is synced");
        let file = segment_name(self.group, number);
        let cleaning = format!("{file}{CLEANING_SUFFIX}");
        write_whole_as(disk, &cleaning, &file, rewritten)?;
        for point in self
            .structure
            .points
            .iter_mut()
            .filter(|p| p.segment == number)
        {
            *point = moved_point(point, moved);
        }
        // What recovery would note of the frames, from the new ones.
        let mut fresh = Segment::new(false);
        let mut at = 0;
        while at < rewritten.len() {
            let (frame, len) = frame::decode(&rewritten[at..]).expect("the frames just encoded");
            if let Frame::Entry(_, entry) = &frame {
                fresh.note_entry(&entry.data);
            }
            at += len;
        }
        let segment = self.segments.get_mut(&number).expect("a closed segment");
        segment.len = rewritten.len() as u64;
        segment.synced_len = segment.len;
        segment.first_offset = fresh.first_offset;
        segment.max_timestamp = fresh.max_timestamp;
        Ok(())
    }
}

impl IndexFile {
    /// Segment `number` rewritten: its metadata is `meta` now, and the points into it move as
    /// `moved` says.
    fn moved(&mut self, number: u64, meta: SegmentMeta, moved: &[(u64, u64)]) {
        for point in self
            .structure
            .points
            .iter_mut()
            .filter(|p| p.segment == number)
        {
            *point = moved_point(point, moved);
        }
        if let Some(old) = self.segments.iter_mut().find(|m| m.number == number) {
            *old = meta;
        }
    }
}

/// `point` (at the start of an entry's frame) at its frame's new position.
fn moved_point(point: &Point, moved: &[(u64, u64)]) -> Point {
    let at = moved
        .binary_search_by_key(&point.position, |(old, _)| *old)
        .expect("a point is at the start of an entry's frame, which a rewrite keeps");
    Point {
        position: moved[at].1,
        ..*point
    }
}

/// Writes `bytes` as `name`: into a temporary file, synced, then renamed over it.
fn write_whole<D: Disk>(disk: &mut D, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    write_whole_as(disk, &format!("{name}{TEMPORARY_SUFFIX}"), name, bytes)
}

/// Writes `bytes` into `temporary` (replacing a leftover one), syncs it, renames it to `name`.
fn write_whole_as<D: Disk>(
    disk: &mut D,
    temporary: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), StorageError> {
    match disk.remove(temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("remove", temporary)(e)),
    }
    disk.append(temporary, bytes)
        .map_err(io_error("write", temporary))?;
    disk.sync(temporary).map_err(io_error("sync", temporary))?;
    disk.rename(temporary, name)
        .map_err(io_error("rename", temporary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_do_not_pass_for_segments() {
        let group = GroupId(42);
        assert_eq!(parse_checkpoint_name(&checkpoint_name(group)), Some(group));
        let cleaning = format!("{}{CLEANING_SUFFIX}", segment_name(group, 3));
        assert!(is_partial_file(&cleaning));
        assert!(super::super::parse_segment_name(&cleaning).is_none());
        assert!(super::super::parse_index_name(&cleaning).is_none());
        assert!(!is_partial_file(&segment_name(group, 3)));
        assert!(is_partial_file(&format!("{}.tmp", checkpoint_name(group))));
        assert!(is_partial_file(&format!("{}.tmp", index_name(group, 3))));
        assert!(!is_partial_file("node-id.tmp"), "not the log's");
        assert!(parse_checkpoint_name(&segment_name(group, 3)).is_none());
    }
}
