//! The Raft log of one group as raft-rs reads it: the [`raft::Storage`] implementation.
//!
//! Entries are readable here as soon as a `Ready` hands them over, before the disk has them;
//! the disk write is a separate output (the raft-rs asynchronous-persistence contract). The
//! entries are the partition's records: one entry, one RecordBatch, kept as `Bytes`.
//!
//! Memory holds only a suffix of the log, the *cache*: every entry not yet applied or not yet
//! persisted, and as many older ones as the node's cache budget leaves (`Node` evicts the
//! oldest with [`LogStore::evict`]). Terms are kept for the whole log as runs, so raft-rs can
//! match any index. When raft-rs wants evicted entries to send a lagging follower, the store
//! answers `LogTemporarilyUnavailable` and records the miss ([`LogStore::take_misses`]); the
//! replica asks the driver to read them from disk, and once they come back
//! ([`LogStore::set_fetched`]) raft-rs is called again and finds them here. Entries that are
//! not persisted or not applied are never evicted, so applying and the leader's view of its
//! log never need the disk.

use std::cell::RefCell;
use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// Entries raft-rs asked for that are not in memory: `low..high`, with its request context.
pub(crate) type Miss = (u64, u64, GetEntriesContext);

/// Raft log, hard state and latest snapshot of one group; the newest entries in memory.
#[derive(Debug, Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// Latest snapshot: the point the log was compacted to, or installed from the leader.
    /// Index 0 means none. Its data is the partition metadata at that index.
    snapshot: Snapshot,
    /// Index of the last entry of the log (the snapshot's index when it is empty).
    last_index: u64,
    /// `(first index, term)` runs covering every entry after the snapshot, in index order.
    terms: VecDeque<(u64, u64)>,
    /// The cache: the entries from `last_index + 1 - entries.len()` to `last_index`.
    entries: VecDeque<Entry>,
    /// Bytes of entry data and context in `entries`.
    cached_bytes: u64,
    /// Entries read back from disk for followers, contiguous, all below the cache.
    fetched: VecDeque<Entry>,
    /// Bytes of entry data and context in `fetched`.
    fetched_bytes: u64,
    /// Reads raft-rs asked for since the last [`LogStore::take_misses`].
    misses: RefCell<Vec<Miss>>,
}

/// The memory an entry takes in the cache, as counted against the budget.
pub fn entry_bytes(entry: &Entry) -> u64 {
    (entry.data.len() + entry.context.len()) as u64 + 64
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

    /// Rebuilds a store from durable state read back from disk: the entries after the
    /// snapshot, or, with `on_disk = Some((last, terms))`, only the terms (as `(first index,
    /// term)` runs) of the entries up to `last`, which stay on disk, and the entries after it.
    pub fn recover(
        hard_state: HardState,
        conf_state: ConfState,
        snapshot: Snapshot,
        on_disk: Option<(u64, Vec<(u64, u64)>)>,
        entries: Vec<Entry>,
    ) -> Self {
        let mut store = Self {
            hard_state,
            conf_state,
            last_index: snapshot.get_metadata().index,
            snapshot,
            ..Self::default()
        };
        if let Some((last, terms)) = on_disk {
            assert!(last >= store.last_index, "checkpoint below the snapshot");
            assert!(
                terms
                    .first()
                    .is_none_or(|(first, _)| *first == store.first_index())
                    && terms.windows(2).all(|p| p[0].0 < p[1].0 && p[0].1 < p[1].1)
                    && terms.last().is_none_or(|(start, _)| *start <= last)
                    && (terms.is_empty() == (last == store.last_index)),
                "term runs cover the entries on disk"
            );
            store.terms = terms.into();
            store.last_index = last;
        }
        store.append(&entries);
        store.invariants();
        store
    }

    /// Index of the first entry of the log (held in memory or not).
    pub fn first_index(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    /// Index of the last entry (the snapshot index when the log is empty).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Index of the first entry held in memory.
    pub fn cache_first(&self) -> u64 {
        self.last_index + 1 - self.entries.len() as u64
    }

    /// Bytes the cache and the read-back entries take.
    pub fn cached_bytes(&self) -> u64 {
        self.cached_bytes + self.fetched_bytes
    }

    /// The entry at `index`, if held in memory.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        let first = self.cache_first();
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// The term of the entry at `index`, including the snapshot's index; `None` outside the log.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        let meta = self.snapshot.get_metadata();
        if index == meta.index {
            return Some(meta.term);
        }
        if index < self.first_index() || index > self.last_index {
            return None;
        }
        let run = self.terms.partition_point(|(start, _)| *start <= index);
        Some(self.terms[run - 1].1)
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

    /// Appends entries from a `Ready`, replacing any conflicting suffix. Only cached entries
    /// can conflict: evicted ones are applied, so committed.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first_new) = entries.first() else {
            return;
        };
        assert!(
            first_new.index >= self.first_index(),
            "append below the snapshot"
        );
        assert!(
            first_new.index <= self.last_index + 1,
            "append leaves a gap"
        );
        assert!(
            first_new.index >= self.cache_first(),
            "an evicted (applied) entry is never replaced"
        );
        let keep = (first_new.index - self.cache_first()) as usize;
        for dropped in self.entries.drain(keep..) {
            self.cached_bytes -= entry_bytes(&dropped);
        }
        self.last_index = first_new.index - 1;
        while self
            .terms
            .back()
            .is_some_and(|(start, _)| *start > self.last_index)
        {
            self.terms.pop_back();
        }
        while self
            .fetched
            .back()
            .is_some_and(|e| e.index > self.last_index)
        {
            let dropped = self.fetched.pop_back().expect("checked");
            self.fetched_bytes -= entry_bytes(&dropped);
        }
        for entry in entries {
            assert_eq!(entry.index, self.last_index + 1, "entries are contiguous");
            if self
                .terms
                .back()
                .is_none_or(|(_, term)| *term != entry.term)
            {
                assert!(
                    self.terms.back().is_none_or(|(_, term)| *term < entry.term),
                    "terms grow along the log"
                );
                self.terms.push_back((entry.index, entry.term));
            }
            self.cached_bytes += entry_bytes(entry);
            self.entries.push_back(entry.clone());
            self.last_index = entry.index;
        }
        self.invariants();
    }

    /// Drops from memory every cached entry up to `upto` (which the caller knows applied and
    /// persisted) and returns them, oldest first.
    pub fn evict(&mut self, upto: u64) -> Vec<Entry> {
        let first = self.cache_first();
        if upto < first {
            return Vec::new();
        }
        let count = ((upto + 1 - first) as usize).min(self.entries.len());
        let evicted: Vec<Entry> = self.entries.drain(..count).collect();
        for entry in &evicted {
            self.cached_bytes -= entry_bytes(entry);
        }
        evicted
    }

    /// Forgets the entries read back from disk.
    pub fn drop_fetched(&mut self) {
        self.fetched.clear();
        self.fetched_bytes = 0;
    }

    /// Keeps entries read back from disk (from index `low`) for raft-rs to send; those that
    /// are not in the log any more, or are cached, are left out.
    pub fn set_fetched(&mut self, entries: Vec<Entry>) {
        self.drop_fetched();
        let (first, cache_first) = (self.first_index(), self.cache_first());
        for entry in entries {
            if entry.index < first || entry.index >= cache_first {
                continue;
            }
            if let Some(last) = self.fetched.back() {
                if entry.index != last.index + 1 {
                    break;
                }
            }
            if Some(entry.term) != self.term_at(entry.index) {
                // Not this log's entry (read before a new leader replaced it): never served.
                break;
            }
            self.fetched_bytes += entry_bytes(&entry);
            self.fetched.push_back(entry);
        }
    }

    /// The reads raft-rs asked for since the last call.
    pub(crate) fn take_misses(&mut self) -> Vec<Miss> {
        std::mem::take(self.misses.get_mut())
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
        self.cached_bytes = 0;
        self.drop_fetched();
        self.terms.clear();
        self.last_index = meta.index;
        self.snapshot = snapshot;
        self.invariants();
    }

    /// Drops every entry up to and including `snapshot`'s index, which must be in the log; the
    /// snapshot becomes the one served to lagging followers.
    pub fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        assert!(
            index >= self.first_index() && index <= self.last_index,
            "compact to an entry of the log"
        );
        assert_eq!(Some(snapshot.get_metadata().term), self.term_at(index));
        self.evict(index);
        while self.fetched.front().is_some_and(|e| e.index <= index) {
            let dropped = self.fetched.pop_front().expect("checked");
            self.fetched_bytes -= entry_bytes(&dropped);
        }
        // The run holding index + 1 now starts there.
        while self.terms.len() > 1 && self.terms[1].0 <= index + 1 {
            self.terms.pop_front();
        }
        if index == self.last_index {
            self.terms.clear();
        } else if let Some(front) = self.terms.front_mut() {
            front.0 = index + 1;
        }
        self.snapshot = snapshot;
        self.invariants();
    }

    /// Structural invariants, in constant time (checked after every input).
    pub fn invariants(&self) {
        assert!(self.last_index >= self.snapshot.get_metadata().index);
        assert!(self.cache_first() >= self.first_index());
        if let (Some(a), Some(b)) = (self.entries.front(), self.entries.back()) {
            assert_eq!(a.index, self.cache_first(), "the cache is the log's suffix");
            assert_eq!(b.index, self.last_index, "entries are contiguous");
            assert!(a.term <= b.term, "terms grow along the log");
        }
        match (self.terms.front(), self.terms.back()) {
            (Some(first), Some(last)) => {
                assert_eq!(first.0, self.first_index(), "term runs cover the log");
                assert!(last.0 <= self.last_index);
                assert!(self.snapshot.get_metadata().term <= first.1);
            }
            _ => assert_eq!(self.last_index, self.snapshot.get_metadata().index),
        }
        if let Some(last) = self.fetched.back() {
            assert!(
                last.index < self.cache_first(),
                "read-back entries are below the cache"
            );
        }
    }

    /// Every invariant, walking the whole cache (tests).
    pub fn invariants_full(&self) {
        self.invariants();
        let first = self.cache_first();
        for (i, entry) in self.entries.iter().enumerate() {
            assert_eq!(entry.index, first + i as u64, "entries are contiguous");
            assert_eq!(Some(entry.term), self.term_at(entry.index));
        }
        for pair in self.terms.iter().collect::<Vec<_>>().windows(2) {
            assert!(pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1);
        }
        let bytes: u64 = self.entries.iter().map(entry_bytes).sum();
        assert_eq!(bytes, self.cached_bytes);
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
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last_index + 1,
            "raft asked past the last index"
        );
        let cache_first = self.cache_first();
        let mut entries: Vec<Entry> = Vec::new();
        let mut next = low;
        if low < cache_first {
            let fetched_first = self.fetched.front().map_or(u64::MAX, |e| e.index);
            let fetched_end = fetched_first.saturating_add(self.fetched.len() as u64);
            if low < fetched_first || low >= fetched_end {
                assert!(
                    context.can_async(),
                    "raft read evicted entries {low}..{high} for applying"
                );
                self.misses.borrow_mut().push((low, high, context));
                return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
            }
            let end = high.min(fetched_end);
            entries.extend(
                self.fetched
                    .range((low - fetched_first) as usize..(end - fetched_first) as usize)
                    .cloned(),
            );
            next = end;
            if next < cache_first {
                // Read back up to here; raft-rs sends what there is and asks again.
                raft::util::limit_size(&mut entries, max_size.into());
                return Ok(entries);
            }
        }
        if next < high {
            entries.extend(
                self.entries
                    .range((next - cache_first) as usize..(high - cache_first) as usize)
                    .cloned(),
            );
        }
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.snapshot.get_metadata().index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_at(idx)
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
