//! What a Raft snapshot carries: partition metadata only, never records.
//!
//! A follower that installs one starts its log at `log_start_offset`; the records before it are
//! gone on that replica, exactly like Kafka's `logStartOffset` after retention.

use crate::codec::{DecodeError, Reader, Writer};
use crate::epoch_history::EpochHistory;
use crate::ids::Offset;
use crate::producer::ProducerTable;

/// Version 2 added `next_offset`; version 1 data had it equal to the log start offset.
/// Version 3 added `producers_index`; earlier data had it at the snapshot's index (0 here).
/// Version 4 holds the producer table with its clock and each producer's last write time
/// (`ProducerTable::encode`); earlier versions hold it without (`decode_without_times`).
/// Version 5 added the leader-epoch history (`EpochHistory::encode`); earlier data has none,
/// and the epochs are learnt from the entries applied after it.
/// Version 6 holds the producer table with its open and aborted transactions; earlier ones
/// have none (`decode_without_txns`).
const VERSION: u8 = 6;
const VERSION_5: u8 = 5;
const VERSION_4: u8 = 4;
const VERSION_3: u8 = 3;
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
    /// The leader-epoch history as of `producers_index` (as applied, like the producer table;
    /// replaying the entries up to it again changes nothing, since their terms are not above
    /// its latest epoch).
    pub epochs: EpochHistory,
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
        self.epochs.encode(&mut w);
        w.bytes
    }

    /// Decodes bytes written by [`SnapshotData::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if ![
            VERSION, VERSION_5, VERSION_4, VERSION_3, VERSION_2, VERSION_1,
        ]
        .contains(&version)
        {
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
        let producers = if version >= VERSION {
            ProducerTable::decode(&mut r)?
        } else if version >= VERSION_4 {
            ProducerTable::decode_without_txns(&mut r)?
        } else {
            ProducerTable::decode_without_times(&mut r)?
        };
        let producers_index = if version >= VERSION_3 { r.u64()? } else { 0 };
        let epochs = if version >= VERSION_5 {
            EpochHistory::decode(&mut r)?
        } else {
            EpochHistory::new()
        };
        r.finish()?;
        Ok(Self {
            log_start_offset,
            next_offset,
            producers,
            producers_index,
            epochs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ProducerEpoch, ProducerId, RaftIndex, Sequence, Term};
    use crate::producer::{AppendTime, ProducerBatch, SequenceCheck};

    /// A producer table as versions 1 to 3 wrote it: its bound, then producer 5 (epoch 0) with
    /// one batch of records 0 to 2 at offset 10, entry 4 of term 1.
    fn table_without_times(w: &mut Writer) {
        w.u32(16);
        w.u32(1);
        w.i64(5);
        w.i16(0);
        w.u8(1);
        w.i32(0);
        w.i32(2);
        w.i64(10);
        w.i64(12);
        w.u64(4);
        w.u64(1);
    }

    #[test]
    fn version_1_data_has_its_next_offset_at_the_log_start() {
        let mut w = Writer::default();
        w.u8(VERSION_1);
        w.i64(7);
        table_without_times(&mut w);
        let data = SnapshotData::decode(&w.bytes).expect("decodes");
        assert_eq!(
            (data.log_start_offset, data.next_offset),
            (Offset(7), Offset(7))
        );
        let mut epochs = EpochHistory::new();
        epochs.on_entry(Term(3), Offset(7));
        epochs.on_entry(Term(5), Offset(8));
        let v5 = SnapshotData {
            log_start_offset: Offset(9),
            next_offset: Offset(7),
            producers: data.producers,
            producers_index: 12,
            epochs,
        };
        assert_eq!(SnapshotData::decode(&v5.encode()), Ok(v5));
    }

    #[test]
    fn version_3_data_keeps_its_producers_which_get_the_first_clock() {
        let mut w = Writer::default();
        w.u8(VERSION_3);
        w.i64(20);
        w.i64(13);
        table_without_times(&mut w);
        w.u64(4);
        let data = SnapshotData::decode(&w.bytes).expect("decodes");
        assert_eq!(data.producers_index, 4);
        let mut producers = data.producers;
        producers.invariants();
        assert_eq!((producers.len(), producers.clock_ms()), (1, None));
        let retry = ProducerBatch {
            producer_id: ProducerId(5),
            epoch: ProducerEpoch(0),
            first_sequence: Sequence(0),
            count: 3,
            transactional: false,
            txn_start_ms: None,
        };
        let day: u64 = 86_400_000;
        let at = producers.next_append_time(5 * day as i64, day);
        assert!(matches!(
            producers.check(&retry, &at, 16),
            Ok(SequenceCheck::Duplicate(m)) if m.base_offset == Offset(10) && m.index == RaftIndex(4) && m.term == Term(1)
        ));
        // The first stamped entry starts the clock: the producer wrote then, not long before.
        producers.advance(&at);
        assert_eq!(producers.len(), 1);
        producers.invariants();
        let later = AppendTime {
            time_ms: 6 * day as i64 - 1,
            expiration_ms: day,
        };
        producers.advance(&later);
        assert_eq!(producers.len(), 1, "a day has not passed");
        producers.advance(&AppendTime {
            time_ms: 6 * day as i64,
            expiration_ms: day,
        });
        assert!(producers.is_empty(), "a day without a write: forgotten");
    }

    /// Version 4 data (no epoch history) still decodes, with no epoch known.
    #[test]
    fn version_4_data_has_no_epochs() {
        let mut w = Writer::default();
        w.u8(VERSION_4);
        w.i64(20);
        w.i64(13);
        w.u8(0); // an empty producer table as it was written then: no clock,
        w.u32(0); // no producer, and no transactions
        w.u64(4);
        let data = SnapshotData::decode(&w.bytes).expect("decodes");
        assert_eq!(
            (
                data.log_start_offset,
                data.next_offset,
                data.producers_index
            ),
            (Offset(20), Offset(13), 4)
        );
        assert_eq!(data.epochs, EpochHistory::new());
    }

    #[test]
    fn a_log_start_below_the_next_offset_is_refused() {
        let mut w = Writer::default();
        w.u8(VERSION_2);
        w.i64(3);
        w.i64(5);
        table_without_times(&mut w);
        assert!(SnapshotData::decode(&w.bytes).is_err());
    }
}
