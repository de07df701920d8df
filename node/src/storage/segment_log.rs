//! The segment log: frames appended to numbered segment files, an index from (group, Raft
//! index) to frame position, group commit through [`SegmentLog::sync`], and recovery.
//!
//! Recovery reads the segments in order and replays every frame, until a frame that is short,
//! has an impossible length, a bad checksum or an undecodable payload. What happens then depends
//! on whether those bytes were ever synced:
//!
//! - A torn write: nothing shows the bad frame was synced. The file is cut there and any later
//!   segment is removed, so the torn bytes are never replayed, served or appended after. A crash
//!   loses only unsynced bytes, so nothing acknowledged is lost.
//! - Damage: the bad frame lies in a segment that a roll synced whole, or below the position a
//!   later [`Frame::Synced`] marker says was synced. Cutting there would drop writes the node
//!   acknowledged (to its peers, and through them to clients), which Raft cannot survive, so
//!   recovery refuses with [`StorageError::Damaged`] and the node does not start.
//!
//! Right after each sync, the log writes a `Synced` marker (unsynced itself) where the synced
//! bytes end. The next sync makes it durable, so every synced byte but the last group commit's
//! is provably durable after any crash, and the last group commit's too after a restart that
//! kept the page cache (a process crash or a clean stop).

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use oxbow_core::ids::GroupId;
use oxbow_core::io::WalRecord;
use oxbow_core::node::{DurableState, GroupDurableState};
use oxbow_core::raft::eraftpb::{Entry, HardState, Snapshot};

use super::disk::Disk;
use super::frame::{self, Frame, FrameError};

const SUFFIX: &str = ".seg";

/// Tuning of the segment log.
#[derive(Clone, Copy, Debug)]
pub struct SegmentLogOptions {
    /// A segment rolls once it is at least this large.
    pub segment_bytes_max: u64,
    /// Bugs to plant (only `keep_torn_tail` applies here; only in simulator builds).
    pub planted: oxbow_core::node::PlantedBugs,
}

impl Default for SegmentLogOptions {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 << 20,
            planted: oxbow_core::node::PlantedBugs::default(),
        }
    }
}

/// A storage failure. IO errors are fatal for the node: it cannot know what reached the disk.
#[derive(Debug)]
pub enum StorageError {
    /// The operating system refused an operation.
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        file: String,
        /// The error.
        source: io::Error,
    },
    /// After replay a group's entries are not contiguous from its snapshot: frames are missing
    /// from the middle of the log, which cutting a torn tail never causes.
    Gap {
        /// The group.
        group: GroupId,
        /// The first index missing.
        missing: u64,
    },
    /// A frame that was synced is bad: the disk damaged acknowledged data.
    Damaged {
        /// The segment file.
        file: String,
        /// Where the bad frame starts.
        position: u64,
        /// What is wrong with it.
        why: String,
        /// The file is known synced up to here.
        synced_below: u64,
    },
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io {
                operation,
                file,
                source,
            } => write!(f, "cannot {operation} {file}: {source}"),
            Self::Gap { group, missing } => write!(
                f,
                "group {group}: Raft entry {missing} is missing from the middle of the log, \
                 which no crash causes: the data directory is damaged. {DAMAGED_NEXT}"
            ),
            Self::Damaged {
                file,
                position,
                why,
                synced_below,
            } => write!(
                f,
                "{file} is damaged at byte {position} ({why}), below byte {synced_below}, which \
                 was synced: this is not a torn write from a crash but damage to acknowledged \
                 data. The node refuses to start, because cutting its log here could lose writes \
                 it acknowledged. {DAMAGED_NEXT}"
            ),
        }
    }
}

impl std::error::Error for StorageError {}

/// What to do about a damaged data directory.
const DAMAGED_NEXT: &str = "Keep the directory for inspection and run the cluster without \
     this node (a majority of each partition's replicas keeps serving); do not start it with an \
     empty directory, which would forget its Raft votes (see docs/operations.md, \
     \"A damaged data directory\").";

impl StorageError {
    /// Whether the error is damage to stored data (as opposed to the operating system failing).
    pub fn is_damage(&self) -> bool {
        matches!(self, Self::Damaged { .. } | Self::Gap { .. })
    }
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: usize,
    /// Valid frames replayed.
    pub frames: u64,
    /// Where the log was cut, if it was: segment file, position, and why.
    pub cut: Option<(String, u64, String)>,
    /// Bytes removed by the cut (the rest of that segment and every later one).
    pub bytes_cut: u64,
}

#[derive(Clone, Debug, Default)]
struct Segment {
    len: u64,
    /// Highest entry index of each group in this segment.
    max_index: BTreeMap<GroupId, u64>,
    /// Whether this process started the segment with a complete header (every group's hard
    /// state and snapshot). Recovered segments do not count: a crash may have torn theirs.
    header_written: bool,
    /// Whether that header is known durable. Only segments before one with a durable header
    /// may be deleted: the header keeps the hard states and snapshots their frames held.
    header_durable: bool,
    /// Bytes this process synced.
    synced_len: u64,
}

#[derive(Clone, Debug, Default)]
struct GroupMeta {
    hard_state: HardState,
    snapshot: Snapshot,
}

/// The log. See the module documentation.
pub struct SegmentLog<D: Disk> {
    disk: D,
    options: SegmentLogOptions,
    segments: BTreeMap<u64, Segment>,
    /// Where each live entry's frame is: (segment, position).
    index: BTreeMap<(GroupId, u64), (u64, u64)>,
    groups: BTreeMap<GroupId, GroupMeta>,
    dirty: BTreeSet<u64>,
    buffer: Vec<u8>,
}

fn name(segment: u64) -> String {
    format!("{segment:020}{SUFFIX}")
}

fn io_error<'a>(
    operation: &'static str,
    file: &'a str,
) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        operation,
        file: file.to_string(),
        source,
    }
}

/// Replay state of one group: entries by index, so truncation and compaction are map edits.
#[derive(Default)]
struct Replay {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: BTreeMap<u64, (Entry, u64, u64)>,
}

impl<D: Disk> SegmentLog<D> {
    /// Opens the log on `disk`, recovering what it holds.
    pub fn open(
        mut disk: D,
        options: SegmentLogOptions,
    ) -> Result<(Self, DurableState, RecoveryReport), StorageError> {
        assert!(options.segment_bytes_max > 0);
        let names = disk.list().map_err(io_error("list", "data directory"))?;
        let mut ids: Vec<u64> = names
            .iter()
            .filter_map(|n| n.strip_suffix(SUFFIX).and_then(|stem| stem.parse().ok()))
            .collect();
        ids.sort_unstable();
        let mut report = RecoveryReport::default();
        let mut replay: BTreeMap<GroupId, Replay> = BTreeMap::new();
        let mut segments = BTreeMap::new();
        let mut cut_at: Option<usize> = None;
        for (position_in_list, id) in ids.iter().enumerate() {
            let file = name(*id);
            let bytes = disk.read(&file).map_err(io_error("read", &file))?;
            report.segments += 1;
            let mut segment = Segment::default();
            let mut at = 0usize;
            while at < bytes.len() {
                match frame::decode(&bytes[at..]) {
                    Ok((frame, len)) => {
                        report.frames += 1;
                        replay_frame(&mut replay, frame, *id, at as u64, &mut segment);
                        at += len;
                    }
                    Err(error) => {
                        let why = match error {
                            FrameError::Truncated => "torn frame at the tail".to_string(),
                            FrameError::BadLength => "impossible frame length".to_string(),
                            FrameError::BadChecksum => "checksum mismatch".to_string(),
                            FrameError::Undecodable(e) => e.to_string(),
                        };
                        let last = position_in_list + 1 == ids.len();
                        let synced_below = provably_synced(&bytes, at + 1, last);
                        if synced_below > at as u64 {
                            return Err(StorageError::Damaged {
                                file,
                                position: at as u64,
                                why,
                                synced_below,
                            });
                        }
                        report.cut = Some((file.clone(), at as u64, why));
                        report.bytes_cut += (bytes.len() - at) as u64;
                        if !options.planted.keep_torn_tail() {
                            disk.truncate(&file, at as u64)
                                .map_err(io_error("truncate", &file))?;
                        }
                        break;
                    }
                }
            }
            segment.len = at as u64;
            segments.insert(*id, segment);
            if report.cut.is_some() {
                cut_at = Some(position_in_list);
                break;
            }
        }
        if let Some(position) = cut_at {
            for id in &ids[position + 1..] {
                let file = name(*id);
                report.bytes_cut += disk.read(&file).map_err(io_error("read", &file))?.len() as u64;
                disk.remove(&file).map_err(io_error("remove", &file))?;
            }
        }
        let mut durable = DurableState::default();
        let mut index = BTreeMap::new();
        let mut groups = BTreeMap::new();
        for (group, state) in replay {
            let first = state.snapshot.get_metadata().index + 1;
            let mut entries = Vec::with_capacity(state.entries.len());
            for (expected, (i, (entry, segment, position))) in (first..).zip(state.entries) {
                if i != expected {
                    return Err(StorageError::Gap {
                        group,
                        missing: expected,
                    });
                }
                index.insert((group, i), (segment, position));
                entries.push(entry);
            }
            groups.insert(
                group,
                GroupMeta {
                    hard_state: state.hard_state.clone(),
                    snapshot: state.snapshot.clone(),
                },
            );
            durable.groups.insert(
                group,
                GroupDurableState {
                    hard_state: state.hard_state,
                    snapshot: state.snapshot,
                    entries,
                },
            );
        }
        let mut log = Self {
            disk,
            options,
            segments,
            index,
            groups,
            dirty: BTreeSet::new(),
            buffer: Vec::new(),
        };
        if log.segments.is_empty() {
            log.segments.insert(0, Segment::default());
        }
        log.invariants();
        Ok((log, durable, report))
    }

    fn active(&self) -> u64 {
        *self
            .segments
            .keys()
            .next_back()
            .expect("there is always an active segment")
    }

    /// Appends records (not yet durable: see [`SegmentLog::sync`]).
    pub fn append(&mut self, records: &[WalRecord]) -> Result<(), StorageError> {
        for record in records {
            match record {
                WalRecord::Entries { group, entries } => {
                    for entry in entries {
                        self.append_frame(Frame::Entry(*group, entry.clone()))?;
                    }
                }
                WalRecord::HardState { group, hard_state } => {
                    self.append_frame(Frame::HardState(*group, hard_state.clone()))?;
                }
                WalRecord::Snapshot {
                    group,
                    snapshot,
                    install,
                } => {
                    self.append_frame(Frame::Snapshot {
                        group: *group,
                        snapshot: snapshot.clone(),
                        install: *install,
                    })?;
                }
                WalRecord::RemoveGroup { group } => {
                    self.append_frame(Frame::RemoveGroup(*group))?;
                }
            }
        }
        self.flush_buffer()
    }

    fn append_frame(&mut self, frame: Frame) -> Result<(), StorageError> {
        let active = self.active();
        if self.segments[&active].len + self.buffer.len() as u64 >= self.options.segment_bytes_max {
            self.roll()?;
        }
        let active = self.active();
        let segment = self.segments.get_mut(&active).expect("active");
        let position = segment.len + self.buffer.len() as u64;
        frame::encode(&frame, &mut self.buffer);
        match frame {
            Frame::Entry(group, entry) => {
                self.index.retain_range_from(group, entry.index);
                self.index.insert((group, entry.index), (active, position));
                let max = segment.max_index.entry(group).or_default();
                *max = (*max).max(entry.index);
                self.groups.entry(group).or_default();
            }
            Frame::HardState(group, hard_state) => {
                self.groups.entry(group).or_default().hard_state = hard_state
            }
            Frame::Snapshot {
                group,
                snapshot,
                install,
            } => {
                let index = snapshot.get_metadata().index;
                if install {
                    self.index.retain_range_from(group, 0);
                } else {
                    self.index.remove_through(group, index);
                }
                self.groups.entry(group).or_default().snapshot = snapshot;
            }
            Frame::RemoveGroup(group) => {
                self.index.retain_range_from(group, 0);
                self.groups.remove(&group);
            }
            Frame::Synced(_) => unreachable!("markers are written above, not appended"),
        }
        Ok(())
    }

    fn flush_buffer(&mut self) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let active = self.active();
        let file = name(active);
        self.disk
            .append(&file, &self.buffer)
            .map_err(io_error("append to", &file))?;
        self.segments.get_mut(&active).expect("active").len += self.buffer.len() as u64;
        self.buffer.clear();
        self.dirty.insert(active);
        Ok(())
    }

    /// Starts a new segment. The old one is synced first, so a crash can tear only the last
    /// segment; the new one begins with every group's state.
    fn roll(&mut self) -> Result<(), StorageError> {
        // No marker: recovery counts a segment that a later one follows as synced whole, so
        // nothing unsynced may follow this sync in it.
        self.sync_files()?;
        self.delete_unneeded_segments()?;
        let next = self.active() + 1;
        self.segments.insert(
            next,
            Segment {
                header_written: true,
                ..Segment::default()
            },
        );
        let header: Vec<Frame> = self
            .groups
            .iter()
            .flat_map(|(group, meta)| {
                let mut frames = vec![Frame::HardState(*group, meta.hard_state.clone())];
                if meta.snapshot.get_metadata().index > 0 {
                    frames.push(Frame::Snapshot {
                        group: *group,
                        snapshot: meta.snapshot.clone(),
                        install: false,
                    });
                }
                frames
            })
            .collect();
        for frame in header {
            frame::encode(&frame, &mut self.buffer);
        }
        self.flush_buffer()
    }

    /// Makes everything appended durable (one fsync per dirty segment, normally one), writes
    /// a `Synced` marker after it, then deletes the old segments that compaction made unneeded.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if self.sync_files()? {
            self.mark_synced()?;
        }
        self.delete_unneeded_segments()
    }

    /// Writes (without syncing) a `Synced` marker at the end of the active segment's synced
    /// bytes, right after the sync rather than before the next frame: then a restart that kept
    /// the page cache (a process crash, a clean stop) finds it, and can tell damage to the last
    /// group commit from a torn write. Recovery believes a marker only at the position it
    /// claims, which is where this one sits.
    fn mark_synced(&mut self) -> Result<(), StorageError> {
        let segment = &self.segments[&self.active()];
        assert!(self.buffer.is_empty(), "flushed by the sync");
        assert_eq!(
            segment.len, segment.synced_len,
            "nothing appended since the sync"
        );
        frame::encode(&Frame::Synced(segment.synced_len), &mut self.buffer);
        self.flush_buffer()
    }

    /// fsyncs every segment appended to since the last sync; says whether the active one was
    /// among them (and so has new synced bytes to mark).
    fn sync_files(&mut self) -> Result<bool, StorageError> {
        self.flush_buffer()?;
        let active_synced = self.dirty.contains(&self.active());
        for segment in std::mem::take(&mut self.dirty) {
            let file = name(segment);
            self.disk.sync(&file).map_err(io_error("sync", &file))?;
            let segment = self
                .segments
                .get_mut(&segment)
                .expect("dirty segments exist");
            segment.header_durable |= segment.header_written;
            segment.synced_len = segment.len;
        }
        Ok(active_synced)
    }

    /// Deletes a prefix of segments whose every entry is at or below its group's snapshot, and
    /// that come before a segment whose header is durable (the header repeats the hard states
    /// and snapshots the deleted frames held). Only a prefix: a later segment may hold a frame
    /// (an installed snapshot) that an earlier segment's stale entries must be replayed before.
    fn delete_unneeded_segments(&mut self) -> Result<(), StorageError> {
        let Some(covered_before) = self
            .segments
            .iter()
            .rev()
            .find(|(_, s)| s.header_durable)
            .map(|(id, _)| *id)
        else {
            return Ok(());
        };
        let mut deletable = Vec::new();
        for (id, segment) in &self.segments {
            if *id >= covered_before {
                break;
            }
            // A group without state was removed: none of its frames are needed.
            let unneeded = segment.max_index.iter().all(|(group, max)| {
                self.groups
                    .get(group)
                    .is_none_or(|g| *max <= g.snapshot.get_metadata().index)
            });
            if !unneeded {
                break;
            }
            deletable.push(*id);
        }
        for id in deletable {
            let file = name(id);
            self.disk.remove(&file).map_err(io_error("remove", &file))?;
            self.segments.remove(&id);
        }
        Ok(())
    }

    /// Reads one entry back from disk through the index.
    pub fn read_entry(
        &mut self,
        group: GroupId,
        index: u64,
    ) -> Result<Option<Entry>, StorageError> {
        self.flush_buffer()?;
        let Some((segment, position)) = self.index.get(&(group, index)).copied() else {
            return Ok(None);
        };
        let file = name(segment);
        let header = self
            .disk
            .read_at(&file, position, frame::FRAME_HEADER_LEN)
            .map_err(io_error("read", &file))?;
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4")) as usize;
        let bytes = self
            .disk
            .read_at(&file, position, frame::FRAME_HEADER_LEN + len)
            .map_err(io_error("read", &file))?;
        match frame::decode(&bytes) {
            Ok((Frame::Entry(g, entry), _)) if g == group && entry.index == index => {
                Ok(Some(entry))
            }
            other => panic!(
                "index points at a frame that is not entry {index} of group {group}: {other:?}"
            ),
        }
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Gives the disk back (the simulator crashes it and opens a new log on it).
    pub fn into_disk(mut self) -> D {
        let _ = self.flush_buffer();
        self.disk
    }

    /// The disk, for inspection.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Structural invariants.
    pub fn invariants(&self) {
        assert!(!self.segments.is_empty());
        for ((group, index), (segment, _)) in &self.index {
            assert!(
                self.segments.contains_key(segment),
                "indexed frame in a deleted segment"
            );
            let snapshot_index = self
                .groups
                .get(group)
                .map_or(0, |g| g.snapshot.get_metadata().index);
            assert!(
                *index > snapshot_index,
                "indexed entry at or below the snapshot"
            );
        }
    }
}

fn replay_frame(
    replay: &mut BTreeMap<GroupId, Replay>,
    frame: Frame,
    segment_id: u64,
    position: u64,
    segment: &mut Segment,
) {
    match frame {
        Frame::Entry(group, entry) => {
            let state = replay.entry(group).or_default();
            let index = entry.index;
            let max = segment.max_index.entry(group).or_default();
            *max = (*max).max(index);
            if index <= state.snapshot.get_metadata().index {
                return;
            }
            state.entries.split_off(&index);
            state.entries.insert(index, (entry, segment_id, position));
        }
        Frame::HardState(group, hard_state) => {
            replay.entry(group).or_default().hard_state = hard_state
        }
        Frame::Snapshot {
            group,
            snapshot,
            install,
        } => {
            let state = replay.entry(group).or_default();
            let index = snapshot.get_metadata().index;
            if install {
                state.entries.clear();
                state.snapshot = snapshot;
            } else {
                state.entries = state.entries.split_off(&(index + 1));
                if index >= state.snapshot.get_metadata().index {
                    state.snapshot = snapshot;
                }
            }
        }
        Frame::RemoveGroup(group) => {
            replay.remove(&group);
        }
        Frame::Synced(_) => {}
    }
}

/// How far recovery can prove a segment's bytes were synced, judging by the frames at or after
/// `from`: a segment that a later one follows whole (a roll synced it); the last segment up to
/// the highest position a valid [`Frame::Synced`] marker both claims and sits at (0 if none).
/// Past a bad frame the scan moves on a byte at a time, to find the frames after it even when
/// the bad frame's length field is what was damaged.
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

trait IndexExt {
    fn retain_range_from(&mut self, group: GroupId, from: u64);
    fn remove_through(&mut self, group: GroupId, to: u64);
}

impl IndexExt for BTreeMap<(GroupId, u64), (u64, u64)> {
    /// Removes the group's entries at or after `from` (normally none: appends go at the end).
    fn retain_range_from(&mut self, group: GroupId, from: u64) {
        let doomed: Vec<(GroupId, u64)> = self
            .range((group, from)..=(group, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in doomed {
            self.remove(&key);
        }
    }

    /// Removes the group's entries at or below `to`.
    fn remove_through(&mut self, group: GroupId, to: u64) {
        let doomed: Vec<(GroupId, u64)> = self
            .range((group, 0)..=(group, to))
            .map(|(k, _)| *k)
            .collect();
        for key in doomed {
            self.remove(&key);
        }
    }
}
