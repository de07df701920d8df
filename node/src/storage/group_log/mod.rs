//! The log of one Raft group (one partition, the metadata group, or a coordinator partition):
//! its own numbered segment files, so that one group's data is deleted without touching
//! another's. [`super::SegmentLog`] routes each frame to its group and syncs every group a
//! group commit wrote to.
//!
//! A segment file is named `g<group>-<number>.seg` (both numbers zero-padded to 20 digits, so
//! names sort in log order). A group's segments are numbered from 0 and roll at a size limit;
//! each one after the first starts with the group's hard state and snapshot (its header), so a
//! prefix of old segments can be deleted once compaction has made their entries unneeded.

mod clean;
mod index_file;
mod read;
mod structure;

use std::collections::{BTreeMap, BTreeSet};

use oxbow_core::batch::BatchSpan;
use oxbow_core::ids::{GroupId, Offset};
use oxbow_core::node::{GroupDurableState, PlantedBugs};

use super::disk::Disk;
use super::frame::{self, Frame, FrameError};
use super::segment_log::{io_error, StorageError};
pub(crate) use clean::{checkpoint_name, is_partial_file, parse_checkpoint_name};
pub use clean::{CleanOptions, CleanPass, CleanReport, CleanStats, CleanStep};
pub(crate) use index_file::{index_name, parse_index_name};
use index_file::{IndexFile, SegmentMeta};
use structure::Structure;

const PREFIX: &str = "g";
const SUFFIX: &str = ".seg";

/// The file name of segment `number` of `group`.
pub(crate) fn segment_name(group: GroupId, number: u64) -> String {
    format!("{PREFIX}{:020}-{number:020}{SUFFIX}", group.0)
}

/// The group and segment number a file name stands for, if it is a segment of this layout.
pub(crate) fn parse_segment_name(name: &str) -> Option<(GroupId, u64)> {
    let stem = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (group, number) = stem.split_once('-')?;
    if group.len() != 20 || number.len() != 20 {
        return None;
    }
    Some((GroupId(group.parse().ok()?), number.parse().ok()?))
}

#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub(crate) len: u64,
    /// Highest entry index in this segment (0 when it holds none).
    max_index: u64,
    /// Whether this process started the segment with a complete header (the group's hard
    /// state and snapshot). Recovered segments do not count: a crash may have torn theirs.
    header_written: bool,
    /// Whether that header is known durable. Only segments before one with a durable header
    /// may be deleted: the header keeps the hard state and snapshot their frames held.
    header_durable: bool,
    /// Bytes this process synced.
    synced_len: u64,
    /// Smallest base offset of any record batch written to it. A batch a new leader truncated
    /// may still be in it, but its base offset is the offset after the entries before it,
    /// which are valid: so no valid record in this or a later segment is below this.
    first_offset: Option<Offset>,
    /// Largest timestamp of any batch written to it (`i64::MIN` for none).
    max_timestamp: i64,
    /// Largest timestamp of the first batch written to it: its age, for `segment.ms`.
    first_timestamp: Option<i64>,
}

impl Segment {
    /// A closed segment as an index file describes it (synced whole).
    fn recovered(meta: &SegmentMeta) -> Self {
        Self {
            len: meta.len,
            max_index: meta.max_index,
            header_written: false,
            header_durable: false,
            synced_len: meta.len,
            first_offset: meta.first_offset,
            max_timestamp: meta.max_timestamp,
            first_timestamp: None,
        }
    }

    /// What an index file records of it.
    fn meta(&self, number: u64) -> SegmentMeta {
        SegmentMeta {
            number,
            len: self.len,
            max_index: self.max_index,
            first_offset: self.first_offset,
            max_timestamp: self.max_timestamp,
        }
    }

    fn new(header_written: bool) -> Self {
        Self {
            len: 0,
            max_index: 0,
            header_written,
            header_durable: false,
            synced_len: 0,
            first_offset: None,
            max_timestamp: i64::MIN,
            first_timestamp: None,
        }
    }

    /// Notes a record batch written to it (`data`: an entry's data).
    fn note_entry(&mut self, data: &[u8]) {
        if let Some(span) = BatchSpan::of(data) {
            self.first_offset = Some(
                self.first_offset
                    .map_or(span.base_offset, |f| f.min(span.base_offset)),
            );
            self.max_timestamp = self.max_timestamp.max(span.max_timestamp);
            self.first_timestamp.get_or_insert(span.max_timestamp);
        }
    }
}

/// A frame that recovery accepted no longer reads back.
fn read_damage(file: &str, position: u64, why: &str, synced_below: u64) -> StorageError {
    StorageError::Damaged {
        file: file.to_string(),
        position,
        why: why.to_string(),
        synced_below,
    }
}

/// What a bad frame is, in words.
fn frame_error_text(error: &FrameError) -> String {
    match error {
        FrameError::Truncated => "torn frame at the tail".to_string(),
        FrameError::BadLength => "impossible frame length".to_string(),
        FrameError::BadChecksum => "checksum mismatch".to_string(),
        FrameError::Undecodable(e) => e.to_string(),
    }
}

/// What a partition keeps: Kafka's `retention.ms` and `retention.bytes` (negative: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Records older than this (by their batch's largest timestamp) may go.
    pub retention_ms: i64,
    /// The partition's log may be cut down to this many bytes.
    pub retention_bytes: i64,
    /// The active segment rolls once its first batch is this old (Kafka's `segment.ms`).
    pub segment_ms: i64,
    /// The partition's high watermark as its leader knows it, if the caller leads it: with
    /// it, retention may take every segment holding records (the active one is rolled first
    /// once all of it has expired, as Kafka does) and move the log start to the end. Without
    /// it, the newest segment holding a batch stays.
    pub log_end: Option<Offset>,
}

/// What recovery found in one group's segments.
pub(crate) struct Recovered {
    pub(crate) log: GroupLog,
    /// `None` when the cut left nothing of the group (its files are then removed).
    pub(crate) state: Option<GroupDurableState>,
    pub(crate) frames: u64,
    /// Where the group's log was cut: file, position, why.
    pub(crate) cut: Option<(String, u64, String)>,
    pub(crate) bytes_cut: u64,
}

/// One group's segments, its live log's structure (hard state, snapshot, checkpoint, terms, a
/// sparse index of where its entries are) and the index files saved at each roll.
pub(crate) struct GroupLog {
    group: GroupId,
    segments: BTreeMap<u64, Segment>,
    structure: Structure,
    /// Index files on disk, by the segment each was written at the close of.
    index_files: BTreeSet<u64>,
    /// Segments appended to since the last sync.
    dirty: BTreeSet<u64>,
    /// Frames encoded for the active segment and not yet handed to the disk.
    buffer: Vec<u8>,
    /// Whether a frame that must be durable at the next sync was appended since the last one.
    needs_sync: bool,
    /// Bugs to plant (simulator builds only).
    planted: PlantedBugs,
}

impl GroupLog {
    /// A group with no segment yet: its first frame starts segment 0.
    pub(crate) fn new(group: GroupId, planted: PlantedBugs) -> Self {
        let mut segments = BTreeMap::new();
        segments.insert(0, Segment::new(false));
        Self {
            group,
            segments,
            structure: Structure::default(),
            index_files: BTreeSet::new(),
            dirty: BTreeSet::new(),
            buffer: Vec::new(),
            needs_sync: false,
            planted,
        }
    }

    /// Recovers a group from its segments (`numbers`, ascending) and index files
    /// (`index_files`: the segments they were written at the close of). It starts from the
    /// newest index file that matches the segments on disk and reads only the segments after
    /// it (all of them without one). See the documentation of [`super::SegmentLog`] for what
    /// a bad frame means.
    pub(crate) fn recover<D: Disk>(
        disk: &mut D,
        group: GroupId,
        numbers: &[u64],
        index_files: &[u64],
        planted: PlantedBugs,
    ) -> Result<Recovered, StorageError> {
        let keep_torn_tail = planted.keep_torn_tail();
        assert!(!numbers.is_empty() && numbers.windows(2).all(|p| p[0] < p[1]));
        let mut structure = Structure::default();
        let mut segments = BTreeMap::new();
        let mut scan_from = 0;
        let mut kept_index = None;
        for through in index_files.iter().rev() {
            if let Some(loaded) = load_index(disk, group, numbers, *through)? {
                for meta in loaded
                    .segments
                    .iter()
                    .filter(|m| numbers.contains(&m.number))
                {
                    segments.insert(meta.number, Segment::recovered(meta));
                }
                structure = loaded.structure;
                structure.forget_segments_before(numbers[0]);
                scan_from = numbers.partition_point(|n| n <= through);
                kept_index = Some(*through);
                break;
            }
        }
        // Index files not used are stale or torn: they go.
        for number in index_files.iter().filter(|n| Some(**n) != kept_index) {
            let file = index_name(group, *number);
            disk.remove(&file).map_err(io_error("remove", &file))?;
        }
        let mut frames = 0;
        let mut cut = None;
        let mut bytes_cut = 0;
        for (position_in_list, number) in numbers.iter().enumerate().skip(scan_from) {
            let file = segment_name(group, *number);
            let bytes = disk.read(&file).map_err(io_error("read", &file))?;
            let mut segment = Segment::new(false);
            let mut at = 0usize;
            while at < bytes.len() {
                let error = match frame::decode(&bytes[at..]) {
                    Ok((frame, len)) => {
                        if let Frame::Entry(_, entry) = &frame {
                            segment.note_entry(&entry.data);
                            segment.max_index = segment.max_index.max(entry.index);
                        }
                        match replay_frame(&mut structure, group, frame, *number, at, len, true) {
                            Ok(()) => {
                                frames += 1;
                                at += len;
                                continue;
                            }
                            Err(Replayed::Gap(missing)) => {
                                return Err(StorageError::Gap { group, missing })
                            }
                            Err(Replayed::Foreign(why)) => why,
                        }
                    }
                    Err(e) => frame_error_text(&e),
                };
                let last = position_in_list + 1 == numbers.len();
                let synced_below = provably_synced(&bytes, at + 1, last);
                if synced_below > at as u64 {
                    return Err(StorageError::Damaged {
                        file,
                        position: at as u64,
                        why: error,
                        synced_below,
                    });
                }
                bytes_cut += (bytes.len() - at) as u64;
                if !keep_torn_tail {
                    disk.truncate(&file, at as u64)
                        .map_err(io_error("truncate", &file))?;
                }
                cut = Some((file.clone(), at as u64, error));
                break;
            }
            segment.len = at as u64;
            segments.insert(*number, segment);
            if cut.is_some() {
                // Later segments were started after this one was synced whole, so nothing of
                // them can follow a torn write in it; they are not replayed.
                for later in &numbers[position_in_list + 1..] {
                    let file = segment_name(group, *later);
                    bytes_cut += disk.read(&file).map_err(io_error("read", &file))?.len() as u64;
                    disk.remove(&file).map_err(io_error("remove", &file))?;
                }
                break;
            }
        }
        if let Some(missing) = structure.gap {
            return Err(StorageError::Gap { group, missing });
        }
        let mut log = Self {
            group,
            segments,
            structure,
            index_files: kept_index.into_iter().collect(),
            dirty: BTreeSet::new(),
            buffer: Vec::new(),
            needs_sync: false,
            planted,
        };
        if !log.structure.seen {
            // Every frame was torn off: the group never durably existed here.
            log.remove_all(disk)?;
            return Ok(Recovered {
                log: Self::new(group, planted),
                state: None,
                frames,
                cut,
                bytes_cut,
            });
        }
        log.invariants();
        let structure = &log.structure;
        let checkpoint = structure
            .checkpoint
            .clone()
            .filter(|c| structure.term_of(c.index) == Some(c.term));
        // Only the entries after the checkpoint are read into memory; before it, their terms.
        let from = checkpoint
            .as_ref()
            .map_or(structure.snapshot_index() + 1, |c| c.index + 1);
        let last = structure.last;
        let terms = match &checkpoint {
            Some(_) => structure
                .terms
                .iter()
                .copied()
                .filter(|(start, _)| *start < from)
                .collect(),
            None => Vec::new(),
        };
        let (hard_state, snapshot) = (structure.hard_state.clone(), structure.snapshot.clone());
        let entries = if from <= last {
            log.read_entries(disk, from, last, u64::MAX)?
        } else {
            Vec::new()
        };
        if entries.len() as u64 != last + 1 - from {
            return Err(StorageError::Gap {
                group,
                missing: from + entries.len() as u64,
            });
        }
        Ok(Recovered {
            log,
            state: Some(GroupDurableState {
                hard_state,
                snapshot,
                checkpoint,
                terms,
                entries,
            }),
            frames,
            cut,
            bytes_cut,
        })
    }

    fn active(&self) -> u64 {
        *self
            .segments
            .keys()
            .next_back()
            .expect("a group always has an active segment")
    }

    /// Encodes a frame of this group into the active segment (rolling it first when full); it
    /// reaches the disk at the next [`GroupLog::flush`], and is made durable by the next sync
    /// if `must_sync` (or anything else of the group must be).
    pub(crate) fn append<D: Disk>(
        &mut self,
        disk: &mut D,
        frame: Frame,
        segment_bytes_max: u64,
        must_sync: bool,
    ) -> Result<(), StorageError> {
        let active = self.active();
        if self.segments[&active].len + self.buffer.len() as u64 >= segment_bytes_max {
            self.roll(disk)?;
        }
        self.needs_sync |= must_sync;
        let active = self.active();
        let segment = self.segments.get_mut(&active).expect("active");
        let position = segment.len + self.buffer.len() as u64;
        let len = frame::encode(&frame, &mut self.buffer);
        let len = self.buffer.len() - len;
        if let Frame::Entry(group, entry) = &frame {
            assert_eq!(*group, self.group, "frames go to their group's log");
            segment.max_index = segment.max_index.max(entry.index);
            segment.note_entry(&entry.data);
        }
        match replay_frame(
            &mut self.structure,
            self.group,
            frame,
            active,
            position as usize,
            len,
            false,
        ) {
            Ok(()) => Ok(()),
            Err(Replayed::Gap(missing)) => panic!("the core appends entry {missing} first"),
            Err(Replayed::Foreign(why)) => panic!("{why}"),
        }
    }

    /// Hands the encoded frames to the disk (not yet durable); the next sync fsyncs them.
    pub(crate) fn flush<D: Disk>(&mut self, disk: &mut D) -> Result<(), StorageError> {
        self.write_buffer(disk, true)
    }

    /// Hands the encoded frames to the disk; `dirty`: the next sync must fsync them (a marker
    /// alone need not be: it only vouches for bytes already synced).
    fn write_buffer<D: Disk>(&mut self, disk: &mut D, dirty: bool) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let active = self.active();
        let file = segment_name(self.group, active);
        disk.append(&file, &self.buffer)
            .map_err(io_error("append to", &file))?;
        self.segments.get_mut(&active).expect("active").len += self.buffer.len() as u64;
        self.buffer.clear();
        if dirty {
            self.dirty.insert(active);
        }
        Ok(())
    }

    /// Whether the active segment holds entries and every one is at or below the snapshot.
    pub(crate) fn active_is_covered(&self) -> bool {
        let max = self.segments[&self.active()].max_index;
        max > 0 && max <= self.structure.snapshot_index()
    }

    /// Starts a new segment. The old one is synced first, so a crash can tear only the last
    /// segment; then the group's index file is written for it (recovery starts after it), and
    /// the new one begins with the group's hard state, snapshot and checkpoint.
    pub(crate) fn roll<D: Disk>(&mut self, disk: &mut D) -> Result<(), StorageError> {
        // No marker: recovery counts a segment that a later one follows as synced whole, so
        // nothing unsynced may follow this sync in it, not even the last marker.
        self.flush(disk)?;
        let active = self.active();
        if self.segments[&active].len > self.segments[&active].synced_len {
            self.dirty.insert(active);
        }
        let files = self.dirty_files();
        disk.sync_all(&files)
            .map_err(io_error("sync", &files.join(", ")))?;
        self.synced();
        self.write_index_file(disk, active)?;
        self.delete_unneeded_segments(disk)?;
        let next = self.active() + 1;
        self.segments.insert(next, Segment::new(true));
        let structure = &self.structure;
        frame::encode(
            &Frame::HardState(self.group, structure.hard_state.clone()),
            &mut self.buffer,
        );
        if structure.snapshot_index() > 0 {
            frame::encode(
                &Frame::Snapshot {
                    group: self.group,
                    snapshot: structure.snapshot.clone(),
                    install: false,
                },
                &mut self.buffer,
            );
        }
        if let Some(checkpoint) = &structure.checkpoint {
            frame::encode(
                &Frame::Checkpoint(self.group, checkpoint.clone()),
                &mut self.buffer,
            );
        }
        // The header must become durable before the segments it covers may go.
        self.needs_sync = true;
        self.flush(disk)
    }

    /// Writes and syncs the index file for the segments up to `through` (just synced whole),
    /// then deletes the group's older index files.
    fn write_index_file<D: Disk>(
        &mut self,
        disk: &mut D,
        through: u64,
    ) -> Result<(), StorageError> {
        let index = IndexFile {
            through,
            segments: self
                .segments
                .iter()
                .map(|(number, s)| s.meta(*number))
                .collect(),
            structure: self.structure.clone(),
        };
        let file = index_name(self.group, through);
        if self.index_files.contains(&through) {
            disk.remove(&file).map_err(io_error("remove", &file))?;
        }
        disk.append(&file, &index.encode())
            .map_err(io_error("write", &file))?;
        disk.sync(&file).map_err(io_error("sync", &file))?;
        for old in std::mem::take(&mut self.index_files) {
            if old != through {
                let name = index_name(self.group, old);
                disk.remove(&name).map_err(io_error("remove", &name))?;
            }
        }
        self.index_files.insert(through);
        Ok(())
    }

    /// The files appended to since the last sync (flushed).
    pub(crate) fn dirty_files(&self) -> Vec<String> {
        assert!(self.buffer.is_empty(), "flush before syncing");
        self.dirty
            .iter()
            .map(|n| segment_name(self.group, *n))
            .collect()
    }

    /// Nothing appended waits to be written or synced.
    pub(crate) fn is_clean(&self) -> bool {
        self.buffer.is_empty() && self.dirty.is_empty() && !self.needs_sync
    }

    /// Whether the next sync must fsync this group's files.
    pub(crate) fn needs_sync(&self) -> bool {
        self.needs_sync
    }

    /// The dirty files were synced: records it, and says whether the active segment was among
    /// them (and so has new synced bytes to mark).
    pub(crate) fn synced(&mut self) -> bool {
        self.needs_sync = false;
        let active = self.active();
        let active_synced = self.dirty.contains(&active);
        for number in std::mem::take(&mut self.dirty) {
            let segment = self
                .segments
                .get_mut(&number)
                .expect("dirty segments exist");
            segment.header_durable |= segment.header_written;
            segment.synced_len = segment.len;
        }
        active_synced
    }

    /// Writes (without syncing) a `Synced` marker at the end of the active segment's synced
    /// bytes, right after the sync rather than before the next frame: then a restart that kept
    /// the page cache (a process crash, a clean stop) finds it, and can tell damage to the last
    /// group commit from a torn write. Recovery believes a marker only at the position it
    /// claims, which is where this one sits.
    pub(crate) fn mark_synced<D: Disk>(&mut self, disk: &mut D) -> Result<(), StorageError> {
        let segment = &self.segments[&self.active()];
        assert!(self.buffer.is_empty(), "flushed before the sync");
        assert_eq!(
            segment.len, segment.synced_len,
            "nothing appended since the sync"
        );
        frame::encode(&Frame::Synced(segment.synced_len), &mut self.buffer);
        // Not dirty: a group commit that wrote nothing else to this group does not fsync it
        // for the marker's sake (a roll does; see `roll`).
        self.write_buffer(disk, false)
    }

    /// Deletes a prefix of segments whose every entry is at or below the group's snapshot, and
    /// that come before a segment whose header is durable (the header repeats the hard state
    /// and snapshot the deleted frames held). Only a prefix: a later segment may hold a frame
    /// (an installed snapshot) that an earlier segment's stale entries must be replayed before.
    /// An index file written at the close of a deleted segment goes with it.
    pub(crate) fn delete_unneeded_segments<D: Disk>(
        &mut self,
        disk: &mut D,
    ) -> Result<(), StorageError> {
        let Some(covered_before) = self
            .segments
            .iter()
            .rev()
            .find(|(_, s)| s.header_durable)
            .map(|(id, _)| *id)
        else {
            return Ok(());
        };
        let snapshot_index = self.structure.snapshot_index();
        let deletable: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(id, s)| {
                **id < covered_before
                    && (s.max_index <= snapshot_index || self.planted.delete_live_segments())
            })
            .map(|(id, _)| *id)
            .collect();
        for id in deletable {
            if self.index_files.remove(&id) {
                let file = index_name(self.group, id);
                disk.remove(&file).map_err(io_error("remove", &file))?;
            }
            let file = segment_name(self.group, id);
            disk.remove(&file).map_err(io_error("remove", &file))?;
            self.segments.remove(&id);
            self.dirty.remove(&id);
        }
        let first = *self
            .segments
            .keys()
            .next()
            .expect("the active segment stays");
        self.structure.forget_segments_before(first);
        Ok(())
    }

    /// Deletes every segment and index file of the group, newest first: a crash part-way
    /// leaves an older but consistent log, which the node parks until the replayed metadata
    /// removes it again.
    pub(crate) fn remove_all<D: Disk>(self, disk: &mut D) -> Result<(), StorageError> {
        let files = self
            .index_files
            .iter()
            .rev()
            .map(|n| index_name(self.group, *n))
            .chain(
                self.segments
                    .keys()
                    .rev()
                    .map(|n| segment_name(self.group, *n)),
            )
            .chain(std::iter::once(checkpoint_name(self.group)));
        for file in files {
            match disk.remove(&file) {
                Ok(()) => {}
                // A segment not yet given any bytes was never created.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &file)(e)),
            }
        }
        Ok(())
    }

    /// Where the log start offset may move by `policy` at wall time `now_ms`, as Kafka's
    /// retention decides: a prefix of closed segments whose every batch is older than
    /// `retention_ms`, and of the oldest closed segments as long as the log stays at least
    /// `retention_bytes` long; the active segment always stays. The answer is the first offset
    /// of the oldest segment kept (or `policy.log_end` when none kept holds a batch), `None`
    /// when nothing may go.
    pub(crate) fn retention_point(&self, policy: RetentionPolicy, now_ms: i64) -> Option<Offset> {
        let closed: Vec<&Segment> = self.segments.values().rev().skip(1).rev().collect();
        let expired = if policy.retention_ms >= 0 {
            let horizon = now_ms.saturating_sub(policy.retention_ms);
            closed
                .iter()
                .take_while(|s| s.max_timestamp < horizon)
                .count()
        } else {
            0
        };
        let oversized = if policy.retention_bytes >= 0 {
            let total: u64 = self.segments.values().map(|s| s.len).sum();
            let mut excess = total.saturating_sub(policy.retention_bytes as u64);
            closed
                .iter()
                .take_while(|s| {
                    let fits = s.len <= excess;
                    excess -= s.len.min(excess);
                    fits
                })
                .count()
        } else {
            0
        };
        // The new log start is the first offset of the oldest segment kept that holds a batch.
        // Where none kept holds one (the active segment may hold only its header), the newest
        // segment that does is kept too: the storage cannot tell the log end offset for sure
        // (a follower's segments may hold batches a new leader replaced), so it never moves
        // the log start past a batch it has not seen begin.
        let segments: Vec<&Segment> = self.segments.values().collect();
        let mut keep_from = expired.max(oversized);
        if keep_from > 0
            && segments[keep_from..]
                .iter()
                .all(|s| s.first_offset.is_none())
        {
            // Every batch may go: the log start moves to the end the leader knows, at or
            // past every batch those segments hold (committed or not: the files go only once
            // compaction covers their entries, which it does for applied ones).
            if let Some(end) = policy.log_end {
                return Some(end);
            }
        }
        while keep_from > 0
            && segments[keep_from..]
                .iter()
                .all(|s| s.first_offset.is_none())
        {
            keep_from -= 1;
        }
        if keep_from == 0 {
            return None;
        }
        segments[keep_from..]
            .iter()
            .filter_map(|s| s.first_offset)
            .min()
    }

    /// Rolls the active segment if its first batch is `segment_ms` older than `now_ms`
    /// (Kafka's `segment.ms`): then a partition that gets little data still has closed
    /// segments for time-based retention to delete. With `policy.log_end` known, it also rolls
    /// once every batch in it is older than `retention_ms`, so that all of it may go, as
    /// Kafka rolls an active segment that retention deletes.
    pub(crate) fn roll_if_old<D: Disk>(
        &mut self,
        disk: &mut D,
        policy: RetentionPolicy,
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        let active = &self.segments[&self.active()];
        let expired = policy.log_end.is_some()
            && policy.retention_ms >= 0
            && active.first_timestamp.is_some()
            && active.max_timestamp < now_ms.saturating_sub(policy.retention_ms);
        let old = expired
            || active
                .first_timestamp
                .is_some_and(|first| now_ms.saturating_sub(first) >= policy.segment_ms);
        if old {
            self.roll(disk)?;
        }
        Ok(old)
    }

    /// The group.
    pub(crate) fn group(&self) -> GroupId {
        self.group
    }

    /// Bytes of its segment files (the active one's appended bytes included).
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    /// Number of segments (the active one included).
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Structural invariants.
    pub(crate) fn invariants(&self) {
        assert!(!self.segments.is_empty());
        self.structure.invariants();
        assert!(
            self.structure
                .points
                .iter()
                .all(|p| self.segments.contains_key(&p.segment)),
            "an index point into a deleted segment"
        );
        assert!(self.dirty.iter().all(|d| self.segments.contains_key(d)));
    }
}

/// The newest index file of `group` written at the close of segment `through`, if it is valid
/// and matches the segments on disk (`numbers`): its segment there, as long as it says.
fn load_index<D: Disk>(
    disk: &mut D,
    group: GroupId,
    numbers: &[u64],
    through: u64,
) -> Result<Option<IndexFile>, StorageError> {
    if !numbers.contains(&through) {
        return Ok(None);
    }
    let file = index_name(group, through);
    let bytes = disk.read(&file).map_err(io_error("read", &file))?;
    let Ok(index) = IndexFile::decode(&bytes) else {
        return Ok(None);
    };
    let covered = |n: &u64| index.segments.iter().find(|m| m.number == *n);
    let segment = segment_name(group, through);
    let len = disk.size(&segment).map_err(io_error("size of", &segment))?;
    let fits = index.through == through
        && covered(&through).is_some_and(|m| m.len == len)
        && numbers
            .iter()
            .filter(|n| **n <= through)
            .all(|n| covered(n).is_some());
    Ok(fits.then_some(index))
}

/// Why a frame was not applied.
enum Replayed {
    /// An entry after a gap: the first index missing.
    Gap(u64),
    /// The frame belongs to another group.
    Foreign(String),
}

/// Applies the frame found at `position` of segment `number` (`len` bytes) to `structure`.
fn replay_frame(
    structure: &mut Structure,
    group: GroupId,
    frame: Frame,
    number: u64,
    position: usize,
    len: usize,
    recovering: bool,
) -> Result<(), Replayed> {
    let check = |g: GroupId| check_group(g, group).map_err(Replayed::Foreign);
    match frame {
        Frame::Entry(g, entry) => {
            check(g)?;
            structure
                .entry(
                    entry.index,
                    entry.term,
                    number,
                    position as u64,
                    len as u64,
                    recovering,
                )
                .map_err(Replayed::Gap)
        }
        Frame::HardState(g, hard_state) => {
            check(g)?;
            structure.hard_state(hard_state);
            Ok(())
        }
        Frame::Snapshot {
            group: g,
            snapshot,
            install,
        } => {
            check(g)?;
            structure.snapshot(snapshot, install);
            Ok(())
        }
        Frame::Checkpoint(g, checkpoint) => {
            check(g)?;
            structure.checkpoint(checkpoint);
            Ok(())
        }
        Frame::Synced(_) => Ok(()),
    }
}

fn check_group(frame: GroupId, file: GroupId) -> Result<(), String> {
    if frame == file {
        Ok(())
    } else {
        Err(format!(
            "a frame of group {frame} in a segment of group {file}"
        ))
    }
}

/// How far recovery can prove a segment's bytes were synced, judging by the frames at or after
/// `from`: a segment that a later one of its group follows whole (a roll synced it); the last
/// segment up to the highest position a valid [`Frame::Synced`] marker both claims and sits at
/// (0 if none). Past a bad frame the scan moves on a byte at a time, to find the frames after
/// it even when the bad frame's length field is what was damaged.
pub fn provably_synced(bytes: &[u8], from: usize, last_segment: bool) -> u64 {
    if !last_segment {
        return bytes.len() as u64;
    }
    let mut proven = 0;
    let mut at = from;
    while at < bytes.len() {
        match frame::decode_if_valid(&bytes[at..]) {
            Some((frame, len)) => {
                // The log writes a marker exactly where the synced bytes end, so one anywhere
                // else is not the log's: a record's value may hold any bytes, a marker too.
                if let Frame::Synced(position) = frame {
                    if position == at as u64 {
                        proven = proven.max(position);
                    }
                }
                at += len;
            }
            None => at += 1,
        }
    }
    proven
}

/// Whether recovery reads `name` (a segment file) at start, by a directory listing `names`:
/// a segment after the one the group's newest index file was written at (every segment of a
/// group without one). Frames in the others are checked when they are read back.
pub fn is_read_at_start(names: &[String], name: &str) -> bool {
    let Some((group, number)) = parse_segment_name(name) else {
        return false;
    };
    let newest_index = names
        .iter()
        .filter_map(|n| parse_index_name(n))
        .filter(|(g, _)| *g == group)
        .map(|(_, through)| through)
        .max();
    newest_index.is_none_or(|through| number > through)
}

/// Whether `name` is the last segment of its group among `names` (a directory listing): the
/// one a crash can tear, whose synced bytes only markers vouch for. False for other files.
pub fn is_last_segment(names: &[String], name: &str) -> bool {
    let Some((group, number)) = parse_segment_name(name) else {
        return false;
    };
    !names
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .any(|(g, n)| g == group && n > number)
}
