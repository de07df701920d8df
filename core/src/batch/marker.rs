//! Transaction markers: the control batches a partition's leader writes when a transaction
//! ends (Kafka's `EndTransactionMarker`), one record whose key is the marker's type (COMMIT or
//! ABORT) and whose value is the coordinator's epoch.
//!
//! A marker batch is transactional and control, carries the transaction's producer id and
//! epoch, no sequence, and a single record: key `(version 0: i16, type: i16)`, value
//! `(version 0: i16, coordinator epoch: i32)`, no headers.

use bytes::{BufMut, BytesMut};

use super::{
    records, Batch, ATTRIBUTES, ATTRIBUTE_COMPRESSION_MASK, ATTRIBUTE_CONTROL,
    ATTRIBUTE_TRANSACTIONAL, BASE_OFFSET, BATCH_LENGTH, CRC, HEADER_LEN, PARTITION_LEADER_EPOCH,
};
use crate::ids::{ProducerEpoch, ProducerId};

/// Kafka's control record type of an ABORT marker.
const ABORT: i16 = 0;
/// Kafka's control record type of a COMMIT marker.
const COMMIT: i16 = 1;

/// What a transaction marker says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The transaction's producer id.
    pub producer_id: ProducerId,
    /// The transaction's producer epoch.
    pub epoch: ProducerEpoch,
    /// COMMIT (true) or ABORT (false).
    pub commit: bool,
    /// The epoch of the coordinator that wrote it (Kafka's coordinator epoch).
    pub coordinator_epoch: i32,
}

/// The record of a marker: attributes, timestamp and offset deltas 0, a 4-byte key, a 6-byte
/// value, no headers; its length (16) first. Varints are zigzag: 4 is 8, 6 is 12, 16 is 32.
fn record(commit: bool, coordinator_epoch: i32) -> [u8; 17] {
    let mut r = [0u8; 17];
    r[0] = 32; // record length 16
    r[1] = 0; // attributes
    r[2] = 0; // timestamp delta
    r[3] = 0; // offset delta
    r[4] = 8; // key length 4
    r[5..7].copy_from_slice(&0i16.to_be_bytes()); // key version
    let kind = if commit { COMMIT } else { ABORT };
    r[7..9].copy_from_slice(&kind.to_be_bytes());
    r[9] = 12; // value length 6
    r[10..12].copy_from_slice(&0i16.to_be_bytes()); // value version
    r[12..16].copy_from_slice(&coordinator_epoch.to_be_bytes());
    r[16] = 0; // no headers
    r
}

impl Marker {
    /// The marker as a batch at offset 0 with leader epoch -1 (the leader stamps both), its
    /// timestamp `timestamp_ms`.
    pub fn batch(&self, timestamp_ms: i64) -> Batch {
        assert!(self.producer_id.0 >= 0 && self.epoch.0 >= 0);
        let record = record(self.commit, self.coordinator_epoch);
        let mut b = BytesMut::with_capacity(HEADER_LEN + record.len());
        b.put_i64(0); // base offset
        b.put_i32((HEADER_LEN + record.len() - BATCH_LENGTH - 4) as i32);
        b.put_i32(-1); // partition leader epoch
        b.put_u8(2); // magic
        b.put_u32(0); // CRC, below
        b.put_i16(ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_CONTROL);
        b.put_i32(0); // last offset delta
        b.put_i64(timestamp_ms); // base timestamp
        b.put_i64(timestamp_ms); // max timestamp
        b.put_i64(self.producer_id.0);
        b.put_i16(self.epoch.0);
        b.put_i32(-1); // base sequence
        b.put_i32(1); // record count
        b.put_slice(&record);
        let crc = crc32c::crc32c(&b[ATTRIBUTES..]);
        b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        debug_assert_eq!(&b[BASE_OFFSET..BASE_OFFSET + 8], &[0; 8]);
        debug_assert_eq!(
            &b[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4],
            &(-1i32).to_be_bytes()
        );
        let batch = Batch::trusted(b.freeze());
        assert_eq!(batch.marker(), Some(*self));
        batch
    }
}

impl Batch {
    /// The transaction marker this batch is, if it is one (a control batch of the layout
    /// [`Marker::batch`] writes; any other control batch is not a marker oxbow knows).
    pub fn marker(&self) -> Option<Marker> {
        if !self.is_control() || !self.is_transactional() || self.record_count() != 1 {
            return None;
        }
        if self.attributes() & ATTRIBUTE_COMPRESSION_MASK != 0 {
            return None;
        }
        // Its one record, whatever its timestamp delta (a log cleaner that gives the marker a
        // delete horizon moves it, KIP-534): key `(0, type)`, value `(0, coordinator
        // epoch)`, no headers.
        let mut found = None;
        let plain = self.bytes.get(HEADER_LEN..)?;
        records::each_stored(plain, (1, self.last_offset_delta()), |seen| {
            found = Some((seen.key, seen.tail));
        })
        .ok()?;
        let (key, tail) = found?;
        let key = key?;
        if key.len() != 4 || tail.len() != 13 || tail[0] != 8 || tail[5] != 12 || tail[12] != 0 {
            return None;
        }
        let kind = i16::from_be_bytes([key[2], key[3]]);
        let commit = match kind {
            COMMIT => true,
            ABORT => false,
            _ => return None,
        };
        let coordinator_epoch = i32::from_be_bytes(tail[8..12].try_into().ok()?);
        Some(Marker {
            producer_id: self.producer_id(),
            epoch: self.producer_epoch(),
            commit,
            coordinator_epoch,
        })
    }

    /// The marker this batch was before a log cleaner emptied it, if it is an emptied
    /// control batch: a COMMIT one (its coordinator epoch unknown, -1). The cleaner
    /// (`crate::clean`) empties only COMMIT markers, once no record of their transaction is
    /// left, so applying it closes its transaction as the original did.
    pub fn removed_marker(&self) -> Option<Marker> {
        (self.is_control() && self.is_transactional() && self.record_count() == 0).then(|| Marker {
            producer_id: self.producer_id(),
            epoch: self.producer_epoch(),
            commit: true,
            coordinator_epoch: -1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::TimestampType;
    use crate::ids::{Offset, Term};
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn markers_are_what_kafka_clients_read_as_markers() {
        for commit in [true, false] {
            let marker = Marker {
                producer_id: ProducerId(1 << 62 | 5),
                epoch: ProducerEpoch(3),
                commit,
                coordinator_epoch: 9,
            };
            let stamped = marker.batch(1_700_000_000_000).stamp(
                Offset(41),
                Term(4),
                TimestampType::CreateTime,
                0,
            );
            assert_eq!(stamped.marker(), Some(marker));
            assert_eq!(stamped.next_offset(), Offset(42));
            let decoded = RecordBatchDecoder::decode(&mut stamped.bytes().clone()).expect("decode");
            assert_eq!(decoded.records.len(), 1);
            let r = &decoded.records[0];
            assert!(r.control && r.transactional);
            assert_eq!(
                (r.offset, r.producer_id, r.producer_epoch),
                (41, 1 << 62 | 5, 3)
            );
            let key = r.key.as_ref().expect("a key");
            assert_eq!(&key[..], &[0, 0, 0, u8::from(commit)]);
            let value = r.value.as_ref().expect("a value");
            assert_eq!(&value[..], &[0, 0, 0, 0, 0, 9]);
        }
    }

    #[test]
    fn other_batches_are_not_markers() {
        let data = Batch::trusted(crate::batch::testing::batch(1, 7, 0, 0));
        assert_eq!(data.marker(), None);
    }
}
