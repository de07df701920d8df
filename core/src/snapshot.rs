//! What a Raft snapshot carries: partition metadata only, never records.
//!
//! A follower that installs one starts its log at `log_start_offset`; the records before it are
//! gone on that replica, exactly like Kafka's `logStartOffset` after retention.

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::Offset;
use crate::producer::ProducerTable;

/// Version 2 added `next_offset`; version 1 data had it equal to the log start offset.
/// Version 3 added `producers_index`; earlier data had it at the snapshot's index (0 here).
const VERSION: u8 = 3;
const VERSION_2: u8 = 2;
const VERSION_1: u8 = 1;

/// Partition metadata at a snapshot's Raft index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotData {
    /// The partition's log start offset at the snapshot: at least `next_offset`, more when
    /// DeleteRecords moved it into or past the records after the snapshot's index.
    pub log_start_offset: Offset,
    /// Offset of the first record after the snapshot's index.
    pub next_offset: Offset,
    /// The idempotent-producer table as of Raft index `producers_index`.
    pub producers: ProducerTable,
    /// The index the producer table is as of: at or after the snapshot's (a partition's
    /// compaction snapshots the table as applied). A replica installing the snapshot does not
    /// record the batches up to it again (0: as of the snapshot's index).
    pub producers_index: u64,
}

impl SnapshotData {
    /// Encodes for `raft::eraftpb::Snapshot::data`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        assert!(self.next_offset <= self.log_start_offset);
        w.u8(VERSION);
        w.i64(self.log_start_offset.0);
        w.i64(self.next_offset.0);
        self.producers.encode(&mut w);
        w.u64(self.producers_index);
        w.bytes
    }

    /// Decodes bytes written by [`SnapshotData::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != VERSION && version != VERSION_2 && version != VERSION_1 {
            return Err(DecodeError("unknown snapshot data version"));
        }
        let log_start_offset = Offset(r.i64()?);
        let next_offset = if version == VERSION_1 {
            log_start_offset
        } else {
            Offset(r.i64()?)
        };
        if next_offset.0 < 0 || next_offset > log_start_offset {
            return Err(DecodeError("bad log start offset"));
        }
        let producers = ProducerTable::decode(&mut r)?;
        let producers_index = if version == VERSION { r.u64()? } else { 0 };
        r.finish()?;
        Ok(Self {
            log_start_offset,
            next_offset,
            producers,
            producers_index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_data_has_its_next_offset_at_the_log_start() {
        let producers = ProducerTable::new(4);
        let mut w = Writer::default();
        w.u8(VERSION_1);
        w.i64(7);
        producers.encode(&mut w);
        let data = SnapshotData::decode(&w.bytes).expect("decodes");
        assert_eq!(
            (data.log_start_offset, data.next_offset),
            (Offset(7), Offset(7))
        );
        let v3 = SnapshotData {
            log_start_offset: Offset(9),
            next_offset: Offset(7),
            producers,
            producers_index: 12,
        };
        assert_eq!(SnapshotData::decode(&v3.encode()), Ok(v3));
    }

    #[test]
    fn a_log_start_below_the_next_offset_is_refused() {
        let mut w = Writer::default();
        w.u8(VERSION_2);
        w.i64(3);
        w.i64(5);
        ProducerTable::new(4).encode(&mut w);
        assert!(SnapshotData::decode(&w.bytes).is_err());
    }
}
