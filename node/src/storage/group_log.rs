//! The log of one Raft group (one partition, the metadata group, or a coordinator partition):
//! its own numbered segment files, so that one group's data is deleted without touching
//! another's. [`super::SegmentLog`] routes each frame to its group and syncs every group a
//! group commit wrote to.
//!
//! A segment file is named `g<group>-<number>.seg` (both numbers zero-padded to 20 digits, so
//! names sort in log order). A group's segments are numbered from 0 and roll at a size limit;
//! each one after the first starts with the group's hard state and snapshot (its header), so a
//! prefix of old segments can be deleted once compaction has made their entries unneeded.

use std::collections::{BTreeMap, BTreeSet};

use oxbow_core::batch::BatchSpan;
use oxbow_core::ids::{GroupId, Offset};
use oxbow_core::io::Checkpoint;
use oxbow_core::node::GroupDurableState;
use oxbow_core::raft::eraftpb::{Entry, HardState, Snapshot};

use super::disk::Disk;
use super::frame::{self, Frame, FrameError};
use super::segment_log::{io_error, StorageError};

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
}

impl Segment {
    fn new(header_written: bool) -> Self {
        Self {
            len: 0,
            max_index: 0,
            header_written,
            header_durable: false,
            synced_len: 0,
            first_offset: None,
            max_timestamp: i64::MIN,
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
        }
    }
}

/// A frame that recovery accepted no longer reads back.
fn read_damage(file: &str, position: u64, why: &str) -> StorageError {
    StorageError::Damaged {
        file: file.to_string(),
        position,
        why: format!("reading back: {why}"),
        synced_below: position,
    }
}

/// What a partition keeps: Kafka's `retention.ms` and `retention.bytes` (negative: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Records older than this (by their batch's largest timestamp) may go.
    pub retention_ms: i64,
    /// The partition's log may be cut down to this many bytes.
    pub retention_bytes: i64,
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

/// One group's segments, its latest hard state and snapshot, and where each entry is.
pub(crate) struct GroupLog {
    group: GroupId,
    segments: BTreeMap<u64, Segment>,
    /// Where each live entry's frame is: Raft index to (segment, position).
    index: BTreeMap<u64, (u64, u64)>,
    hard_state: HardState,
    snapshot: Snapshot,
    /// The latest checkpoint after the snapshot (repeated in every segment header).
    checkpoint: Option<Checkpoint>,
    /// Segments appended to since the last sync.
    dirty: BTreeSet<u64>,
    /// Frames encoded for the active segment and not yet handed to the disk.
    buffer: Vec<u8>,
    /// Whether a frame that must be durable at the next sync was appended since the last one.
    needs_sync: bool,
}

/// Replay state of one group: entries by index, so truncation and compaction are map edits.
#[derive(Default)]
struct Replay {
    /// Whether any frame of the group (not only markers) was replayed.
    seen: bool,
    hard_state: HardState,
    snapshot: Snapshot,
    checkpoint: Option<Checkpoint>,
    /// Live entries: index to (term, segment, position). Their data is not kept: recovery
    /// reads back only the entries after the checkpoint.
    entries: BTreeMap<u64, (u64, u64, u64)>,
}

impl GroupLog {
    /// A group with no segment yet: its first frame starts segment 0.
    pub(crate) fn new(group: GroupId) -> Self {
        let mut segments = BTreeMap::new();
        segments.insert(0, Segment::new(false));
        Self {
            group,
            segments,
            index: BTreeMap::new(),
            hard_state: HardState::default(),
            snapshot: Snapshot::default(),
            checkpoint: None,
            dirty: BTreeSet::new(),
            buffer: Vec::new(),
            needs_sync: false,
        }
    }

    /// Recovers a group from its segments (`numbers`, ascending). See the documentation of
    /// [`super::SegmentLog`] for what a bad frame means.
    pub(crate) fn recover<D: Disk>(
        disk: &mut D,
        group: GroupId,
        numbers: &[u64],
        keep_torn_tail: bool,
    ) -> Result<Recovered, StorageError> {
        assert!(!numbers.is_empty() && numbers.windows(2).all(|p| p[0] < p[1]));
        let mut replay = Replay::default();
        let mut segments = BTreeMap::new();
        let mut frames = 0;
        let mut cut = None;
        let mut bytes_cut = 0;
        for (position_in_list, number) in numbers.iter().enumerate() {
            let file = segment_name(group, *number);
            let bytes = disk.read(&file).map_err(io_error("read", &file))?;
            let mut segment = Segment::new(false);
            let mut at = 0usize;
            while at < bytes.len() {
                let error = match frame::decode(&bytes[at..]) {
                    Ok((frame, len)) => {
                        if let Frame::Entry(_, entry) = &frame {
                            segment.note_entry(&entry.data);
                        }
                        match replay_frame(&mut replay, group, frame, *number, at as u64) {
                            Ok(entry_index) => {
                                frames += 1;
                                segment.max_index = segment.max_index.max(entry_index);
                                at += len;
                                continue;
                            }
                            Err(why) => why,
                        }
                    }
                    Err(FrameError::Truncated) => "torn frame at the tail".to_string(),
                    Err(FrameError::BadLength) => "impossible frame length".to_string(),
                    Err(FrameError::BadChecksum) => "checksum mismatch".to_string(),
                    Err(FrameError::Undecodable(e)) => e.to_string(),
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
        if !replay.seen {
            // Every frame was torn off: the group never durably existed here.
            for number in segments.keys() {
                let file = segment_name(group, *number);
                disk.remove(&file).map_err(io_error("remove", &file))?;
            }
            return Ok(Recovered {
                log: Self::new(group),
                state: None,
                frames,
                cut,
                bytes_cut,
            });
        }
        let snapshot_index = replay.snapshot.get_metadata().index;
        let first = snapshot_index + 1;
        let mut index = BTreeMap::new();
        let mut terms: Vec<(u64, u64)> = Vec::new();
        let mut last = snapshot_index;
        for (expected, (i, (term, segment, position))) in (first..).zip(&replay.entries) {
            if *i != expected {
                return Err(StorageError::Gap {
                    group,
                    missing: expected,
                });
            }
            index.insert(*i, (*segment, *position));
            if terms.last().is_none_or(|(_, t)| t != term) {
                terms.push((*i, *term));
            }
            last = *i;
        }
        // A checkpoint counts if the entry it names is the log's (a later snapshot or a
        // replaced suffix makes it stale).
        let checkpoint = replay.checkpoint.filter(|c| {
            c.index > snapshot_index
                && c.index <= last
                && replay.entries.get(&c.index).map(|e| e.0) == Some(c.term)
        });
        let mut log = Self {
            group,
            segments,
            index,
            hard_state: replay.hard_state.clone(),
            snapshot: replay.snapshot.clone(),
            checkpoint: checkpoint.clone(),
            dirty: BTreeSet::new(),
            buffer: Vec::new(),
            needs_sync: false,
        };
        log.invariants();
        // Only the entries after the checkpoint are read into memory; before it, their terms.
        let from = checkpoint.as_ref().map_or(first, |c| c.index + 1);
        terms.retain(|(start, _)| *start < from);
        let entries = if from <= last {
            log.read_entries(disk, from, last, u64::MAX)?
        } else {
            Vec::new()
        };
        assert_eq!(
            entries.len() as u64,
            last + 1 - from,
            "recovered entries read back"
        );
        Ok(Recovered {
            log,
            state: Some(GroupDurableState {
                hard_state: replay.hard_state,
                snapshot: replay.snapshot,
                terms: if checkpoint.is_some() {
                    terms
                } else {
                    Vec::new()
                },
                checkpoint,
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
        frame::encode(&frame, &mut self.buffer);
        match frame {
            Frame::Entry(group, entry) => {
                assert_eq!(group, self.group, "frames go to their group's log");
                let _ = self.index.split_off(&entry.index);
                self.index.insert(entry.index, (active, position));
                segment.max_index = segment.max_index.max(entry.index);
                segment.note_entry(&entry.data);
            }
            Frame::HardState(_, hard_state) => self.hard_state = hard_state,
            Frame::Snapshot {
                snapshot, install, ..
            } => {
                let index = snapshot.get_metadata().index;
                if install {
                    self.index.clear();
                } else {
                    self.index = self.index.split_off(&(index + 1));
                }
                if install || self.checkpoint.as_ref().is_some_and(|c| c.index <= index) {
                    self.checkpoint = None;
                }
                self.snapshot = snapshot;
            }
            Frame::Checkpoint(_, checkpoint) => self.checkpoint = Some(checkpoint),
            Frame::Synced(_) => unreachable!("markers are written by mark_synced"),
        }
        Ok(())
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
        max > 0 && max <= self.snapshot.get_metadata().index
    }

    /// Starts a new segment. The old one is synced first, so a crash can tear only the last
    /// segment; the new one begins with the group's hard state and snapshot.
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
        self.delete_unneeded_segments(disk)?;
        let next = self.active() + 1;
        self.segments.insert(next, Segment::new(true));
        frame::encode(
            &Frame::HardState(self.group, self.hard_state.clone()),
            &mut self.buffer,
        );
        if self.snapshot.get_metadata().index > 0 {
            frame::encode(
                &Frame::Snapshot {
                    group: self.group,
                    snapshot: self.snapshot.clone(),
                    install: false,
                },
                &mut self.buffer,
            );
        }
        if let Some(checkpoint) = &self.checkpoint {
            frame::encode(
                &Frame::Checkpoint(self.group, checkpoint.clone()),
                &mut self.buffer,
            );
        }
        // The header must become durable before the segments it covers may go.
        self.needs_sync = true;
        self.flush(disk)
    }

    /// The files appended to since the last sync (flushed).
    pub(crate) fn dirty_files(&self) -> Vec<String> {
        assert!(self.buffer.is_empty(), "flush before syncing");
        self.dirty
            .iter()
            .map(|n| segment_name(self.group, *n))
            .collect()
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
        let snapshot_index = self.snapshot.get_metadata().index;
        let deletable: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(id, s)| **id < covered_before && s.max_index <= snapshot_index)
            .map(|(id, _)| *id)
            .collect();
        for id in deletable {
            let file = segment_name(self.group, id);
            disk.remove(&file).map_err(io_error("remove", &file))?;
            self.segments.remove(&id);
            self.dirty.remove(&id);
        }
        Ok(())
    }

    /// Deletes every segment of the group, newest first: a crash part-way leaves an older but
    /// consistent log, which the node parks until the replayed metadata removes it again.
    pub(crate) fn remove_all<D: Disk>(self, disk: &mut D) -> Result<(), StorageError> {
        for number in self.segments.keys().rev() {
            let file = segment_name(self.group, *number);
            match disk.remove(&file) {
                Ok(()) => {}
                // A segment not yet given any bytes was never created.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &file)(e)),
            }
        }
        Ok(())
    }

    /// Reads entries `from..=to` back, stopping once `max_bytes` of entry data are collected
    /// (at least one entry is read), or at the first one the log does not hold. Each chunk is
    /// one read of the file; entries share its buffer (no copy after the read). Frames an
    /// entry was overwritten by are skipped: the index says where each live entry is.
    pub(crate) fn read_entries<D: Disk>(
        &mut self,
        disk: &mut D,
        from: u64,
        to: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        /// Read at least this much at once.
        const CHUNK: u64 = 256 << 10;
        self.flush(disk)?;
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        let mut next = from;
        'chunks: while next <= to && (entries.is_empty() || bytes < max_bytes) {
            let Some(&(segment, start)) = self.index.get(&next) else {
                break;
            };
            let file = segment_name(self.group, segment);
            let segment_len = self.segments.get(&segment).map_or(0, |s| s.len);
            let header = disk
                .read_at(&file, start, frame::FRAME_HEADER_LEN)
                .map_err(io_error("read", &file))?;
            let Some(first_len) = frame::frame_len(&header) else {
                return Err(read_damage(&file, start, "bad frame length"));
            };
            let want = (max_bytes.saturating_sub(bytes).max(CHUNK))
                .max(first_len as u64)
                .min(segment_len - start);
            let buffer = bytes::Bytes::from(
                disk.read_at(&file, start, want as usize)
                    .map_err(io_error("read", &file))?,
            );
            loop {
                let at = match self.index.get(&next) {
                    Some(&(s, position)) if s == segment && position >= start => {
                        (position - start) as usize
                    }
                    _ => continue 'chunks,
                };
                match frame::decode_shared(&buffer, at) {
                    Ok((Frame::Entry(group, entry), _))
                        if group == self.group && entry.index == next =>
                    {
                        bytes += entry.data.len() as u64;
                        entries.push(entry);
                        next += 1;
                        if next > to || bytes >= max_bytes {
                            break 'chunks;
                        }
                    }
                    // The rest is past this chunk: read the next one from there.
                    Err(FrameError::Truncated) if !entries.is_empty() || at > 0 => continue 'chunks,
                    Ok(other) => {
                        return Err(read_damage(
                            &file,
                            start + at as u64,
                            &format!("the index points at {other:?}, not entry {next}"),
                        ))
                    }
                    Err(e) => return Err(read_damage(&file, start + at as u64, &format!("{e:?}"))),
                }
            }
        }
        Ok(entries)
    }

    /// Where entry `index`'s frame is, if it is held: segment file and position.
    pub(crate) fn locate(&self, index: u64) -> Option<(String, u64)> {
        self.index
            .get(&index)
            .map(|(segment, position)| (segment_name(self.group, *segment), *position))
    }

    /// Where the log start offset may move by `policy` at wall time `now_ms`, as Kafka's
    /// retention decides: a prefix of closed segments whose every batch is older than
    /// `retention_ms`, and of the oldest closed segments as long as the log stays at least
    /// `retention_bytes` long; the active segment always stays. The answer is the first offset
    /// of the oldest segment kept, `None` when nothing may go.
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

    /// The group.
    pub(crate) fn group(&self) -> GroupId {
        self.group
    }

    /// Number of segments (the active one included).
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Structural invariants.
    pub(crate) fn invariants(&self) {
        assert!(!self.segments.is_empty());
        let snapshot_index = self.snapshot.get_metadata().index;
        for (index, (segment, _)) in &self.index {
            assert!(
                self.segments.contains_key(segment),
                "indexed frame in a deleted segment"
            );
            assert!(
                *index > snapshot_index,
                "indexed entry at or below the snapshot"
            );
        }
        assert!(self.dirty.iter().all(|d| self.segments.contains_key(d)));
    }
}

/// Replays the frame found at `position` of segment `number` into `replay`. Returns the
/// index of the entry it holds (0 for other frames), or why the frame does not belong here.
fn replay_frame(
    replay: &mut Replay,
    group: GroupId,
    frame: Frame,
    number: u64,
    position: u64,
) -> Result<u64, String> {
    replay.seen |= !matches!(frame, Frame::Synced(_));
    match frame {
        Frame::Entry(g, entry) => {
            check_group(g, group)?;
            let index = entry.index;
            if index > replay.snapshot.get_metadata().index {
                let _ = replay.entries.split_off(&index);
                replay.entries.insert(index, (entry.term, number, position));
            }
            Ok(index)
        }
        Frame::HardState(g, hard_state) => {
            check_group(g, group)?;
            replay.hard_state = hard_state;
            Ok(0)
        }
        Frame::Snapshot {
            group: g,
            snapshot,
            install,
        } => {
            check_group(g, group)?;
            let index = snapshot.get_metadata().index;
            if install || replay.checkpoint.as_ref().is_some_and(|c| c.index <= index) {
                replay.checkpoint = None;
            }
            if install {
                replay.entries.clear();
                replay.snapshot = snapshot;
            } else {
                replay.entries = replay.entries.split_off(&(index + 1));
                if index >= replay.snapshot.get_metadata().index {
                    replay.snapshot = snapshot;
                }
            }
            Ok(0)
        }
        Frame::Checkpoint(g, checkpoint) => {
            check_group(g, group)?;
            if checkpoint.index > replay.snapshot.get_metadata().index {
                replay.checkpoint = Some(checkpoint);
            }
            Ok(0)
        }
        Frame::Synced(_) => Ok(0),
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
