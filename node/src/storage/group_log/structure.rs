//! The live log of one group as its frames describe it: hard state, snapshot, checkpoint, the
//! terms of the live entries (as runs) and a sparse index of where they are. Appending and
//! recovery apply frames to it the same way, and the index file saves it at each roll.
//!
//! The index holds a point (entry index, segment, position) for the first live entry of each
//! segment, for every entry that replaced a suffix, and then one per [`INDEX_INTERVAL`] bytes
//! of entry frames. Live entries lie in the files in index order (a replaced suffix is written
//! after the frames it replaces), so a read walks forward from the greatest point at or below
//! the index it wants and takes each frame whose index is the next one and whose term is that
//! index's term in the live log: a frame a new leader replaced has another term, or an index
//! already passed.

use oxbow_core::io::Checkpoint;
use oxbow_core::raft::eraftpb::{HardState, Snapshot};

/// Bytes of entry frames between two points of the index.
pub(crate) const INDEX_INTERVAL: u64 = 256 << 10;

/// Where a live entry's frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Point {
    pub(crate) index: u64,
    pub(crate) segment: u64,
    pub(crate) position: u64,
}

/// See the module documentation.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Structure {
    /// Whether any frame of the group (not only markers) was applied.
    pub(crate) seen: bool,
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: Snapshot,
    /// The latest checkpoint after the snapshot.
    pub(crate) checkpoint: Option<Checkpoint>,
    /// `(first index, term)` runs of the live entries after the snapshot.
    pub(crate) terms: Vec<(u64, u64)>,
    /// The last live index (the snapshot's when there is none after it).
    pub(crate) last: u64,
    /// The sparse index, ascending.
    pub(crate) points: Vec<Point>,
    /// Bytes of entry frames since the last point.
    pub(crate) since_point: u64,
    /// During recovery: the first index missing before the entries known, when the segments
    /// read start after a gap (their earlier segments were deleted once compaction covered
    /// them, and the snapshot frame that did it comes later). A compaction reaching the
    /// entries known closes it; one left at the end is damage.
    pub(crate) gap: Option<u64>,
}

impl Structure {
    /// The snapshot's index.
    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// The term of live entry `index`, if it is one.
    pub(crate) fn term_of(&self, index: u64) -> Option<u64> {
        if index <= self.snapshot_index() || index > self.last {
            return None;
        }
        let run = self.terms.partition_point(|(start, _)| *start <= index);
        run.checked_sub(1).map(|r| self.terms[r].1)
    }

    /// The point to start a walk to entry `index` from.
    pub(crate) fn start_for(&self, index: u64) -> Option<Point> {
        let at = self.points.partition_point(|p| p.index <= index);
        at.checked_sub(1).map(|i| self.points[i])
    }

    /// Entry `index` of term `term`, whose frame of `len` bytes is at `position` of `segment`.
    /// Returns the first index missing if it leaves a gap (which no crash causes).
    pub(crate) fn entry(
        &mut self,
        index: u64,
        term: u64,
        segment: u64,
        position: u64,
        len: u64,
        allow_gap: bool,
    ) -> Result<(), u64> {
        self.seen = true;
        if index <= self.snapshot_index() {
            return Ok(()); // below the snapshot: compacted away
        }
        if index > self.last + 1 {
            if !allow_gap {
                return Err(self.last + 1);
            }
            // The entries before this one are unknown until a compaction covers them.
            self.gap = Some(self.gap.unwrap_or(self.last + 1));
            self.terms.clear();
            self.points.clear();
            self.last = index - 1;
        }
        let mut point = self.points.last().is_none_or(|p| p.segment != segment)
            || self.since_point >= INDEX_INTERVAL;
        if index <= self.last {
            // A new leader's entry replaces this one and every later one.
            self.last = index - 1;
            while self
                .terms
                .last()
                .is_some_and(|(start, _)| *start > self.last)
            {
                self.terms.pop();
            }
            while self.points.last().is_some_and(|p| p.index >= index) {
                self.points.pop();
            }
            point = true;
        }
        if self.terms.last().is_none_or(|(_, t)| *t != term) {
            self.terms.push((index, term));
        }
        self.last = index;
        if point {
            self.points.push(Point {
                index,
                segment,
                position,
            });
            self.since_point = 0;
        }
        self.since_point += len;
        Ok(())
    }

    /// A snapshot: installed from a leader (it replaces the log), or local compaction (the
    /// entries up to its index go).
    pub(crate) fn snapshot(&mut self, snapshot: Snapshot, install: bool) {
        self.seen = true;
        let index = snapshot.get_metadata().index;
        if install || self.checkpoint.as_ref().is_some_and(|c| c.index <= index) {
            self.checkpoint = None;
        }
        if install {
            self.terms.clear();
            self.points.clear();
            self.last = index;
            self.snapshot = snapshot;
            self.gap = None;
            return;
        }
        if index < self.snapshot_index() {
            return;
        }
        if self.gap.is_some() {
            match self.terms.first() {
                Some((known_from, _)) if index + 1 < *known_from => {
                    // Still short of the entries known.
                    self.snapshot = snapshot;
                    return;
                }
                _ => self.gap = None,
            }
        }
        while self.terms.len() > 1 && self.terms[1].0 <= index + 1 {
            self.terms.remove(0);
        }
        if index >= self.last {
            self.terms.clear();
            self.points.clear();
            self.last = index;
        } else if let Some(first) = self.terms.first_mut() {
            first.0 = first.0.max(index + 1);
            // Keep the point a walk to the first live entry starts from: the greatest one at
            // or below it (in that entry's segment, which stays).
            let keep_from = self.points.partition_point(|p| p.index <= index + 1);
            if keep_from > 1 {
                self.points.drain(..keep_from - 1);
            }
        }
        self.snapshot = snapshot;
    }

    /// A hard state.
    pub(crate) fn hard_state(&mut self, hard_state: HardState) {
        self.seen = true;
        self.hard_state = hard_state;
    }

    /// A checkpoint of the partition's applied state.
    pub(crate) fn checkpoint(&mut self, checkpoint: Checkpoint) {
        self.seen = true;
        if checkpoint.index > self.snapshot_index() && checkpoint.index <= self.last {
            self.checkpoint = Some(checkpoint);
        }
    }

    /// Drops the points into segments that are gone (deleted after compaction).
    pub(crate) fn forget_segments_before(&mut self, first_segment: u64) {
        self.points.retain(|p| p.segment >= first_segment);
    }

    /// Structural invariants.
    pub(crate) fn invariants(&self) {
        assert!(self.last >= self.snapshot_index());
        assert!(self.gap.is_none(), "no gap outside recovery");
        match (self.terms.first(), self.terms.last()) {
            (Some(first), Some(last)) => {
                assert_eq!(
                    first.0,
                    self.snapshot_index() + 1,
                    "term runs cover the log"
                );
                assert!(last.0 <= self.last);
            }
            _ => assert_eq!(self.last, self.snapshot_index(), "term runs cover the log"),
        }
        assert!(self.terms.windows(2).all(|p| p[0].0 < p[1].0));
        assert!(self.points.windows(2).all(|p| p[0].index < p[1].index
            && (p[0].segment, p[0].position) < (p[1].segment, p[1].position)));
        if self.last > self.snapshot_index() {
            let first = self.start_for(self.snapshot_index() + 1);
            assert!(first.is_some(), "the first live entry is reachable");
        }
        if let Some(c) = &self.checkpoint {
            assert!(c.index > self.snapshot_index() && c.index <= self.last);
        }
    }
}
