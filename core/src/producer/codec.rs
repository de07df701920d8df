//! The producer table's encoding, in checkpoints and snapshot data, and the decoding of every
//! earlier encoding (before transactions, before producers expired by time).

use std::collections::VecDeque;

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{Offset, ProducerEpoch, ProducerId, RaftIndex, Sequence, Term};

use super::{
    AbortedTxn, BatchMetadata, OpenTxn, ProducerEntry, ProducerTable, BATCHES_KEPT, NO_TIME,
};

impl ProducerTable {
    /// Appends the table's encoding: the clock, then per producer its id, epoch, last write
    /// time, batches and open transaction's first offset, then the aborted transactions.
    /// (Tables written before transactions are read by
    /// [`ProducerTable::decode_without_txns`], before producers expired by time by
    /// [`ProducerTable::decode_without_times`].)
    pub fn encode(&self, w: &mut Writer) {
        match self.clock_ms {
            None => w.u8(0),
            Some(clock) => {
                w.u8(1);
                w.i64(clock);
            }
        }
        w.u32(u32::try_from(self.producers.len()).expect("producers fit u32"));
        for (id, entry) in &self.producers {
            w.i64(id.0);
            w.i16(entry.epoch.0);
            if self.clock_ms.is_some() {
                w.i64(entry.last_write_ms);
            }
            encode_batches(w, &entry.batches);
            match entry.open_txn {
                None => w.u8(0),
                Some(open) => {
                    w.u8(1);
                    w.i64(open.first_offset.0);
                    w.i64(open.start_ms);
                }
            }
        }
        w.u32(u32::try_from(self.aborted.len()).expect("aborted transactions fit u32"));
        for a in &self.aborted {
            w.i64(a.producer_id.0);
            w.i64(a.first_offset.0);
            w.i64(a.last_offset.0);
        }
    }

    /// Reads a table written by [`ProducerTable::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::decode_with(r, true)
    }

    /// Reads a table written before transactions (snapshot data versions 4 and 5, checkpoint
    /// versions 3 and 4): no open or aborted transactions.
    pub fn decode_without_txns(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::decode_with(r, false)
    }

    fn decode_with(r: &mut Reader<'_>, txns: bool) -> Result<Self, DecodeError> {
        let clock_ms = match r.u8()? {
            0 => None,
            1 => Some(r.i64()?),
            _ => return Err(DecodeError("bad producer table clock")),
        };
        if clock_ms.is_some_and(|clock| clock < 0) {
            return Err(DecodeError("negative producer table clock"));
        }
        let count = r.u32()?;
        let mut table = Self {
            clock_ms,
            ..Self::new()
        };
        for _ in 0..count {
            let id = ProducerId(r.i64()?);
            let epoch = ProducerEpoch(r.i16()?);
            let last_write_ms = match clock_ms {
                None => NO_TIME,
                Some(clock) => {
                    let last = r.i64()?;
                    if last < 0 || last > clock {
                        return Err(DecodeError("producer write time outside the clock"));
                    }
                    last
                }
            };
            let batches = decode_batches(r, txns)?;
            table.insert_decoded(id, epoch, batches, last_write_ms)?;
            if txns {
                let open_txn = match r.u8()? {
                    0 => None,
                    1 => Some(OpenTxn {
                        first_offset: Offset(r.i64()?),
                        start_ms: r.i64()?,
                    }),
                    _ => return Err(DecodeError("bad open transaction tag")),
                };
                if let Some(open) = open_txn {
                    let first = open.first_offset;
                    let entry = table.producers.get_mut(&id).expect("inserted");
                    if first.0 < 0 || entry.batches.back().is_none_or(|b| b.last_offset < first) {
                        return Err(DecodeError("an open transaction without its batches"));
                    }
                    entry.open_txn = Some(open);
                    table.open_txns.insert((first, id));
                }
            }
        }
        if txns {
            for _ in 0..r.u32()? {
                let a = AbortedTxn {
                    producer_id: ProducerId(r.i64()?),
                    first_offset: Offset(r.i64()?),
                    last_offset: Offset(r.i64()?),
                };
                let in_order = table
                    .aborted
                    .back()
                    .is_none_or(|b| b.last_offset < a.last_offset);
                if a.first_offset.0 < 0 || a.first_offset >= a.last_offset || !in_order {
                    return Err(DecodeError("aborted transactions out of order"));
                }
                table.aborted.push_back(a);
            }
        }
        Ok(table)
    }

    /// Reads a table in the encoding written before producers expired by time (snapshot data
    /// versions 1 to 3, checkpoint versions 1 and 2): the bound on producers it was written
    /// with, then per producer its id, epoch and batches. It has no clock: its producers count
    /// as writing at the first append time applied.
    pub fn decode_without_times(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let producers_max = r.u32()?;
        let count = r.u32()?;
        if producers_max == 0 || count > producers_max {
            return Err(DecodeError("producer table over its bound"));
        }
        let mut table = Self::new();
        for _ in 0..count {
            let id = ProducerId(r.i64()?);
            let epoch = ProducerEpoch(r.i16()?);
            let batches = decode_batches(r, false)?;
            table.insert_decoded(id, epoch, batches, NO_TIME)?;
        }
        Ok(table)
    }

    fn insert_decoded(
        &mut self,
        id: ProducerId,
        epoch: ProducerEpoch,
        batches: VecDeque<BatchMetadata>,
        last_write_ms: i64,
    ) -> Result<(), DecodeError> {
        if id.0 < 0 {
            return Err(DecodeError("negative producer id"));
        }
        for pair in batches.iter().collect::<Vec<_>>().windows(2) {
            if pair[0].last_offset >= pair[1].base_offset || pair[0].index >= pair[1].index {
                return Err(DecodeError("producer batches out of order"));
            }
        }
        let entry = ProducerEntry {
            epoch,
            batches,
            last_write_ms,
            open_txn: None,
        };
        if self.producers.insert(id, entry).is_some() {
            return Err(DecodeError("producer id twice"));
        }
        self.by_last_write.insert((last_write_ms, id));
        Ok(())
    }
}

fn encode_batches(w: &mut Writer, batches: &VecDeque<BatchMetadata>) {
    w.u8(u8::try_from(batches.len()).expect("at most 5"));
    for b in batches {
        w.i32(b.first_sequence.0);
        w.i32(b.last_sequence.0);
        w.i64(b.base_offset.0);
        w.i64(b.last_offset.0);
        w.u64(b.index.0);
        w.u64(b.term.0);
    }
}

/// Reads a producer's batches; none only where a marker may have moved it to a later epoch
/// (`may_be_empty`, tables with transactions).
fn decode_batches(
    r: &mut Reader<'_>,
    may_be_empty: bool,
) -> Result<VecDeque<BatchMetadata>, DecodeError> {
    let n = r.u8()? as usize;
    if (n == 0 && !may_be_empty) || n > BATCHES_KEPT {
        return Err(DecodeError("producer entry with a bad batch count"));
    }
    let mut batches = VecDeque::with_capacity(BATCHES_KEPT);
    for _ in 0..n {
        batches.push_back(BatchMetadata {
            first_sequence: Sequence(r.i32()?),
            last_sequence: Sequence(r.i32()?),
            base_offset: Offset(r.i64()?),
            last_offset: Offset(r.i64()?),
            index: RaftIndex(r.u64()?),
            term: Term(r.u64()?),
        });
    }
    Ok(batches)
}
