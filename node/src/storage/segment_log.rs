//! The segment log: one log of numbered segment files per Raft group ([`super::group_log`]),
//! so that a partition's data is deleted without touching another's; group commit through
//! [`SegmentLog::sync`], which fsyncs every file a round wrote to in one call; and recovery.
//!
//! Recovery reads the segments in order and replays every frame, until a frame that is short,
//! has an impossible length, a bad checksum or an undecodable payload. What happens then depends
//! on whether those bytes were ever synced:
//!
//! - A torn write: nothing shows the bad frame was synced. The file is cut there and any later
//!   segment of the group is removed, so the torn bytes are never replayed, served or appended after. A crash
//!   loses only unsynced bytes, so nothing acknowledged is lost.
//! - Damage: the bad frame lies in a segment that a roll synced whole (one its group's later
//!   segment follows), or below the position a later [`Frame::Synced`] marker says was synced. Cutting there would drop writes the node
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
use oxbow_core::node::DurableState;
use oxbow_core::raft::eraftpb::Entry;

use super::disk::Disk;
use super::frame::Frame;
use super::group_log::{
    index_name, is_partial_file, parse_checkpoint_name, parse_index_name, parse_segment_name,
    CleanOptions, CleanPass, CleanReport, CleanStats, CleanStep, GroupLog, RetentionPolicy,
};

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
    /// The directory holds segments of the layout before per-group logs (one log for every
    /// group), which this version does not read.
    OldLayout {
        /// One such file.
        file: String,
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
            Self::OldLayout { file } => write!(
                f,
                "the data directory holds {file}, a segment of the storage layout before \
                 per-partition logs (oxbow before December 2026), which this version cannot \
                 read. Keep running the version that wrote it, or start the whole cluster anew \
                 with empty data directories (its data is then gone). Do not empty the \
                 directory of one node only: it would forget its Raft votes (see \
                 docs/operations.md, \"A damaged data directory\")"
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
    /// Where groups' logs were cut (at most one place per group): segment file, position, why.
    pub cuts: Vec<(String, u64, String)>,
    /// Bytes removed by the cuts (the rest of each cut segment and every later one of its
    /// group).
    pub bytes_cut: u64,
}

/// The log. See the module documentation.
pub struct SegmentLog<D: Disk> {
    disk: D,
    options: SegmentLogOptions,
    groups: BTreeMap<GroupId, GroupLog>,
    /// Removed groups whose files go after the next sync: the removal follows the metadata
    /// log's commit of the deletion onto the disk, never the other way round.
    removed: Vec<GroupLog>,
    /// Segment sizes of groups whose topic sets its own `segment.bytes`.
    segment_bytes: BTreeMap<GroupId, u64>,
    /// Groups appended to (or rolled) since a sync last left them clean: the only ones a sync
    /// looks at, so that its cost follows the groups written, not all a node hosts.
    pending: BTreeSet<GroupId>,
}

pub(crate) fn io_error<'a>(
    operation: &'static str,
    file: &'a str,
) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        operation,
        file: file.to_string(),
        source,
    }
}

/// A segment file of the layout before per-group logs: `<number>.seg`, 20 digits.
fn is_old_layout(name: &str) -> bool {
    name.strip_suffix(".seg")
        .is_some_and(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
}

impl<D: Disk> SegmentLog<D> {
    /// Opens the log on `disk`, recovering what it holds.
    pub fn open(
        mut disk: D,
        options: SegmentLogOptions,
    ) -> Result<(Self, DurableState, RecoveryReport), StorageError> {
        assert!(options.segment_bytes_max > 0);
        let names = disk.list().map_err(io_error("list", "data directory"))?;
        if let Some(old) = names.iter().find(|n| is_old_layout(n)) {
            return Err(StorageError::OldLayout { file: old.clone() });
        }
        let mut numbers: BTreeMap<GroupId, Vec<u64>> = BTreeMap::new();
        for (group, number) in names.iter().filter_map(|n| parse_segment_name(n)) {
            numbers.entry(group).or_default().push(number);
        }
        let mut index_files: BTreeMap<GroupId, Vec<u64>> = BTreeMap::new();
        for (group, number) in names.iter().filter_map(|n| parse_index_name(n)) {
            if numbers.contains_key(&group) {
                index_files.entry(group).or_default().push(number);
            } else {
                // A group whose segments are all gone (removed, a crash part-way).
                let file = index_name(group, number);
                disk.remove(&file).map_err(io_error("remove", &file))?;
            }
        }
        // What a cleaning pass left half-written, and the cleaner checkpoints of groups
        // whose segments are all gone.
        for name in &names {
            let orphan = parse_checkpoint_name(name).is_some_and(|g| !numbers.contains_key(&g));
            if is_partial_file(name) || orphan {
                disk.remove(name).map_err(io_error("remove", name))?;
            }
        }
        let mut report = RecoveryReport::default();
        let mut durable = DurableState::default();
        let mut groups = BTreeMap::new();
        for (group, mut numbers) in numbers {
            numbers.sort_unstable();
            report.segments += numbers.len();
            let mut indexes = index_files.remove(&group).unwrap_or_default();
            indexes.sort_unstable();
            let recovered =
                GroupLog::recover(&mut disk, group, &numbers, &indexes, options.planted)?;
            report.frames += recovered.frames;
            report.cuts.extend(recovered.cut);
            report.bytes_cut += recovered.bytes_cut;
            if let Some(state) = recovered.state {
                durable.groups.insert(group, state);
                groups.insert(group, recovered.log);
            }
        }
        let log = Self {
            disk,
            options,
            groups,
            removed: Vec::new(),
            segment_bytes: BTreeMap::new(),
            pending: BTreeSet::new(),
        };
        log.invariants();
        Ok((log, durable, report))
    }

    /// Sets the segment size of the groups whose topic has its own (`segment.bytes`); every
    /// other group rolls at the options' size. Takes effect at the next roll.
    pub fn set_segment_bytes(&mut self, sizes: BTreeMap<GroupId, u64>) {
        assert!(sizes.values().all(|s| *s > 0));
        self.segment_bytes = sizes;
    }

    /// Appends records (not yet durable: see [`SegmentLog::sync`]).
    pub fn append(&mut self, records: &[WalRecord]) -> Result<(), StorageError> {
        for record in records {
            let group = record.group();
            let max = self
                .segment_bytes
                .get(&group)
                .copied()
                .unwrap_or(self.options.segment_bytes_max);
            if let WalRecord::RemoveGroup { .. } = record {
                if let Some(log) = self.groups.remove(&group) {
                    self.removed.push(log);
                }
                self.pending.remove(&group);
                continue;
            }
            if let Some(at) = self.removed.iter().position(|l| l.group() == group) {
                // A group id back after its removal (the core never reuses one; tests do):
                // the old files go first, so the new log starts empty.
                self.removed.swap_remove(at).remove_all(&mut self.disk)?;
            }
            let log = self
                .groups
                .entry(group)
                .or_insert_with(|| GroupLog::new(group, self.options.planted));
            self.pending.insert(group);
            match record {
                WalRecord::Entries { entries, .. } => {
                    for entry in entries {
                        let frame = Frame::Entry(group, entry.clone());
                        log.append(&mut self.disk, frame, max, true)?;
                    }
                }
                WalRecord::HardState {
                    hard_state,
                    must_sync,
                    ..
                } => {
                    let frame = Frame::HardState(group, hard_state.clone());
                    log.append(&mut self.disk, frame, max, *must_sync)?;
                }
                WalRecord::Snapshot {
                    snapshot, install, ..
                } => {
                    let frame = Frame::Snapshot {
                        group,
                        snapshot: snapshot.clone(),
                        install: *install,
                    };
                    log.append(&mut self.disk, frame, max, true)?;
                }
                WalRecord::Checkpoint { checkpoint, .. } => {
                    let frame = Frame::Checkpoint(group, checkpoint.clone());
                    log.append(&mut self.disk, frame, max, false)?;
                }
                WalRecord::RemoveGroup { .. } => unreachable!("handled above"),
            }
        }
        for group in records.iter().map(WalRecord::group) {
            if let Some(log) = self.groups.get_mut(&group) {
                log.flush(&mut self.disk)?;
            }
        }
        Ok(())
    }

    /// Makes durable everything appended that must be: one call fsyncs the files appended to
    /// since the last sync of every group that was given an entry, a snapshot or a hard state
    /// that must be durable (group commit across groups; the disk may sync them in parallel).
    /// A group given only Raft commit indexes is left for a later sync. Then writes a `Synced`
    /// marker after each synced group's bytes and deletes the old segments that compaction made
    /// unneeded.
    ///
    /// A round that removes a group fsyncs every group's appended bytes: the removal follows
    /// the metadata group's Raft commit index of the topic deletion, which alone need not be
    /// durable, and a restart that forgot it would recreate the group with empty files (and
    /// forgotten votes) while the topic still exists.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        let everything = !self.removed.is_empty();
        let groups: Vec<GroupId> = if everything {
            self.groups.keys().copied().collect()
        } else {
            self.pending.iter().copied().collect()
        };
        let mut files = Vec::new();
        for group in &groups {
            let log = self.groups.get_mut(group).expect("pending groups are held");
            log.flush(&mut self.disk)?;
            if everything || log.needs_sync() {
                files.extend(log.dirty_files());
            }
        }
        if !files.is_empty() {
            self.disk
                .sync_all(&files)
                .map_err(io_error("sync", &files.join(", ")))?;
        }
        for group in groups {
            let log = self
                .groups
                .get_mut(&group)
                .expect("pending groups are held");
            let active_synced = (everything || log.needs_sync()) && log.synced();
            let mut rolled = false;
            if log.active_is_covered() {
                // Its every entry is below the snapshot (the log start moved past them): a
                // new segment, whose header holds that snapshot, lets the next sync delete it.
                log.roll(&mut self.disk)?;
                rolled = true;
            } else if active_synced {
                log.mark_synced(&mut self.disk)?;
            }
            log.delete_unneeded_segments(&mut self.disk)?;
            // Left for a later sync: bytes not synced yet (only Raft commit indexes), or a
            // roll whose old segment the next sync deletes.
            if !rolled && log.is_clean() {
                self.pending.remove(&group);
            }
        }
        self.remove_groups()
    }

    /// Ends a group commit that was not synced (the node runs with `fsync = "never"`): the
    /// removed groups' files go now, as nothing is promised durable anyway.
    pub fn finish_unsynced(&mut self) -> Result<(), StorageError> {
        self.remove_groups()
    }

    fn remove_groups(&mut self) -> Result<(), StorageError> {
        for log in std::mem::take(&mut self.removed) {
            log.remove_all(&mut self.disk)?;
        }
        Ok(())
    }

    /// For each group with a policy, rolls its active segment if it is older than the
    /// policy's `segment_ms`, then says where its log start may move by retention at wall time
    /// `now_ms` (see `GroupLog::retention_point`); groups where nothing may go are left out.
    pub fn retention(
        &mut self,
        policies: &BTreeMap<GroupId, RetentionPolicy>,
        now_ms: i64,
    ) -> Result<Vec<(GroupId, oxbow_core::ids::Offset)>, StorageError> {
        let mut points = Vec::new();
        for (group, policy) in policies {
            let Some(log) = self.groups.get_mut(group) else {
                continue;
            };
            if log.roll_if_old(&mut self.disk, *policy, now_ms)? {
                self.pending.insert(*group);
            }
            if let Some(point) = log.retention_point(*policy, now_ms) {
                points.push((*group, point));
            }
        }
        Ok(points)
    }

    /// Runs one cleaning pass over a compacted partition's closed segments with `map` (see
    /// `group_log/clean.rs`): `None` for an unknown group or when nothing is cleanable yet.
    pub fn clean(
        &mut self,
        group: GroupId,
        map: &mut oxbow_core::clean::OffsetMap,
        options: &CleanOptions,
    ) -> Result<Option<CleanReport>, StorageError> {
        match self.groups.get_mut(&group) {
            Some(log) => log.clean(&mut self.disk, map, options),
            None => Ok(None),
        }
    }

    /// One step of a cleaning pass (at most one closed segment read, and maybe rewritten and
    /// swapped in), so that a pass's IO can be spread between group commits. A pass over a
    /// group that is gone ends with nothing.
    pub fn clean_step(&mut self, pass: &mut CleanPass) -> Result<CleanStep, StorageError> {
        match self.groups.get_mut(&pass.group()) {
            Some(log) => log.clean_step(&mut self.disk, pass),
            None => Ok(CleanStep {
                finished: Some(None),
                ..CleanStep::default()
            }),
        }
    }

    /// What the log cleaner's scheduler weighs of each group in `groups` (with its topic's
    /// `min.compaction.lag.ms`) at wall time `now_ms`; unknown groups are left out.
    pub fn clean_stats(
        &mut self,
        groups: &BTreeMap<GroupId, i64>,
        now_ms: i64,
    ) -> Result<BTreeMap<GroupId, CleanStats>, StorageError> {
        let mut stats = BTreeMap::new();
        for (group, min_lag_ms) in groups {
            if let Some(log) = self.groups.get(group) {
                stats.insert(
                    *group,
                    log.clean_stats(&mut self.disk, now_ms, *min_lag_ms)?,
                );
            }
        }
        Ok(stats)
    }

    /// The offset a group's log is clean up to (its cleaner checkpoint; 0 for none).
    pub fn clean_offset(
        &mut self,
        group: GroupId,
    ) -> Result<oxbow_core::ids::Offset, StorageError> {
        match self.groups.get(&group) {
            Some(log) => log.clean_offset(&mut self.disk),
            None => Ok(oxbow_core::ids::Offset(0)),
        }
    }

    /// Reads a group's entries `from..=to` back from disk, stopping once `max_bytes` of entry
    /// data are collected (at least one entry is read) or at the first entry not held (an
    /// unknown group, or entries compacted away, read as none).
    pub fn read_entries(
        &mut self,
        group: GroupId,
        from: u64,
        to: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        match self.groups.get_mut(&group) {
            Some(log) => log.read_entries(&mut self.disk, from, to, max_bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Reads one entry back from disk.
    pub fn read_entry(
        &mut self,
        group: GroupId,
        index: u64,
    ) -> Result<Option<Entry>, StorageError> {
        Ok(self.read_entries(group, index, index, 0)?.pop())
    }

    /// Bytes free on the disk, if it can tell.
    pub fn free_bytes(&self) -> Option<u64> {
        self.disk.free_bytes()
    }

    /// The size of the disk, if it can tell.
    pub fn total_bytes(&self) -> Option<u64> {
        self.disk.total_bytes()
    }

    /// Bytes of each group's segment files.
    pub fn group_bytes(&self) -> BTreeMap<GroupId, u64> {
        self.groups
            .iter()
            .map(|(group, log)| (*group, log.bytes()))
            .collect()
    }

    /// Number of segment files of every group.
    pub fn segment_count(&self) -> usize {
        self.groups.values().map(GroupLog::segment_count).sum()
    }

    /// Gives the disk back (the simulator crashes it and opens a new log on it).
    pub fn into_disk(mut self) -> D {
        for log in self.groups.values_mut() {
            let _ = log.flush(&mut self.disk);
        }
        self.disk
    }

    /// The disk, for inspection.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Structural invariants.
    pub fn invariants(&self) {
        for (group, log) in &self.groups {
            log.invariants();
            assert!(
                self.pending.contains(group) || log.is_clean(),
                "a group with bytes to write or sync is pending"
            );
        }
        assert!(self.pending.iter().all(|g| self.groups.contains_key(g)));
    }
}
