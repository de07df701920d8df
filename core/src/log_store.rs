//! The Raft log of one partition as raft-rs reads it: the [`raft::Storage`] implementation.
//!
//! Entries are readable here as soon as a `Ready` hands them over, before the disk has them;
//! the disk write is a separate output (the raft-rs asynchronous-persistence contract). The
//! entries are the partition's records: one entry, one RecordBatch, kept as `Bytes`.

use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// Raft log, hard state and latest snapshot of one group, in memory.
#[derive(Clone, Debug, Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// Latest snapshot: the point the log was compacted to, or installed from the leader.
    /// Index 0 means none. Its data is the partition metadata at that index.
    snapshot: Snapshot,
    /// Contiguous entries from `snapshot.index + 1`.
    entries: VecDeque<Entry>,
}

impl LogStore {
    /// A store for a group that starts with the given voters and an empty log.
    pub fn new(voters: Vec<u64>) -> Self {
        assert!(!voters.is_empty());
        let mut store = Self::default();
        store.conf_state.voters = voters;
        store
            .snapshot
            .mut_metadata()
            .set_conf_state(store.conf_state.clone());
        store
    }

    /// Rebuilds a store from durable state read back from disk.
    pub fn recover(
        hard_state: HardState,
        conf_state: ConfState,
        snapshot: Snapshot,
        entries: Vec<Entry>,
    ) -> Self {
        let store = Self {
            hard_state,
            conf_state,
            snapshot,
            entries: entries.into(),
        };
        store.invariants();
        store
    }

    /// Index of the first entry held.
    pub fn first_index(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    /// Index of the last entry held (the snapshot index when the log is empty).
    pub fn last_index(&self) -> u64 {
        self.snapshot.get_metadata().index + self.entries.len() as u64
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        let first = self.first_index();
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// The term of the entry at `index`, including the snapshot's index.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.get_metadata().index {
            return Some(self.snapshot.get_metadata().term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The latest snapshot (index 0 when there is none).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The durable hard state as last handed to the disk.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The current configuration.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Sets the hard state from a `Ready`.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        assert!(
            hard_state.term >= self.hard_state.term,
            "terms never go backwards"
        );
        self.hard_state = hard_state;
    }

    /// Sets the configuration after a configuration change is applied.
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// Appends entries from a `Ready`, replacing any conflicting suffix.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first_new) = entries.first() else {
            return;
        };
        assert!(
            first_new.index >= self.first_index(),
            "append below the snapshot"
        );
        assert!(
            first_new.index <= self.last_index() + 1,
            "append leaves a gap"
        );
        let keep = (first_new.index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend(entries.iter().cloned());
        self.invariants();
        debug_assert!(entries.windows(2).all(|p| p[1].index == p[0].index + 1));
    }

    /// Installs a snapshot received from the leader: the whole log is replaced.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        assert!(
            meta.index >= self.snapshot.get_metadata().index,
            "snapshots move forward"
        );
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snapshot;
        self.invariants();
    }

    /// Drops every entry up to and including `snapshot`'s index, which must be held; the
    /// snapshot becomes the one served to lagging followers.
    pub fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        assert!(
            index >= self.first_index() && index <= self.last_index(),
            "compact to a held entry"
        );
        assert_eq!(Some(snapshot.get_metadata().term), self.term_at(index));
        let drop = (index + 1 - self.first_index()) as usize;
        self.entries.drain(..drop);
        self.snapshot = snapshot;
        self.invariants();
    }

    /// Structural invariants, in constant time (checked after every input).
    pub fn invariants(&self) {
        if let (Some(a), Some(b)) = (self.entries.front(), self.entries.back()) {
            assert_eq!(
                a.index,
                self.first_index(),
                "the log starts after the snapshot"
            );
            assert_eq!(b.index, self.last_index(), "entries are contiguous");
            assert!(
                a.term <= b.term && self.snapshot.get_metadata().term <= a.term,
                "terms grow along the log"
            );
        }
    }

    /// Every invariant, walking the whole log (tests).
    pub fn invariants_full(&self) {
        self.invariants();
        let first = self.first_index();
        for (i, pair) in self
            .entries
            .iter()
            .collect::<Vec<_>>()
            .windows(2)
            .enumerate()
        {
            assert_eq!(pair[0].index, first + i as u64, "entries are contiguous");
            assert!(pair[0].term <= pair[1].term, "terms grow along the log");
        }
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last_index() + 1,
            "raft asked past the last index"
        );
        let first = self.first_index();
        let mut entries: Vec<Entry> = self
            .entries
            .range((low - first) as usize..(high - first) as usize)
            .cloned()
            .collect();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot.get_metadata().index {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entry(idx)
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(LogStore::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(LogStore::last_index(self))
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index < request_index
            || self.snapshot.get_metadata().index == 0
        {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}
