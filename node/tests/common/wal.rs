//! Raft records for storage tests: entries, hard states and snapshots.

use bytes::Bytes;
use oxbow_core::raft::eraftpb::{Entry, HardState, Snapshot};

pub fn entry(index: u64, term: u64, fill: u8, len: usize) -> Entry {
    Entry {
        index,
        term,
        data: Bytes::from(vec![fill; len]),
        ..Entry::default()
    }
}

pub fn hard_state(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        commit,
        ..HardState::default()
    }
}

pub fn snapshot(index: u64, term: u64) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    s.data = Bytes::from(vec![9; 16]);
    s
}
