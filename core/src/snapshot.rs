//! What a Raft snapshot carries: partition metadata only, never records.
//!
//! A follower that installs one starts its log at `log_start_offset`; the records before it are
//! gone on that replica, exactly like Kafka's `logStartOffset` after retention.

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::Offset;
use crate::producer::ProducerTable;

const VERSION: u8 = 1;

/// Partition metadata at a snapshot's Raft index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotData {
    /// Offset of the first record after the snapshot's index: the new log start offset.
    pub log_start_offset: Offset,
    /// The idempotent-producer table at the snapshot's index.
    pub producers: ProducerTable,
}

impl SnapshotData {
    /// Encodes for `raft::eraftpb::Snapshot::data`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        w.i64(self.log_start_offset.0);
        self.producers.encode(&mut w);
        w.bytes
    }

    /// Decodes bytes written by [`SnapshotData::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown snapshot data version"));
        }
        let log_start_offset = Offset(r.i64()?);
        if log_start_offset.0 < 0 {
            return Err(DecodeError("negative log start offset"));
        }
        let producers = ProducerTable::decode(&mut r)?;
        r.finish()?;
        Ok(Self {
            log_start_offset,
            producers,
        })
    }
}
