//! A group's index file, `g<group>-<segment>.idx`: the group's [`Structure`] and the metadata
//! of its segments as they stood when segment `<segment>` was closed (synced whole). Recovery
//! starts from the newest valid one and reads only the segments after it, so a restart does
//! not read the data it keeps. The file is written and synced at each roll, before the older
//! index files of the group are deleted; a torn or stale one is ignored (the checksum, and the
//! segment length it records, say so), and recovery then reads more segments.

use bytes::Bytes;
use oxbow_core::codec::{DecodeError, Reader, Writer};
use oxbow_core::ids::{GroupId, Offset};
use oxbow_core::io::Checkpoint;
use oxbow_core::raft::eraftpb::{ConfState, HardState, Snapshot};
use protobuf::Message as _;

use super::structure::{Point, Structure};

const MAGIC: u32 = 0x4f58_4958; // "OXIX"
const VERSION: u8 = 1;
const SUFFIX: &str = ".idx";

/// The file name of the index file written when `segment` of `group` was closed.
pub(crate) fn index_name(group: GroupId, segment: u64) -> String {
    format!("g{:020}-{segment:020}{SUFFIX}", group.0)
}

/// The group and segment an index file name stands for.
pub(crate) fn parse_index_name(name: &str) -> Option<(GroupId, u64)> {
    let stem = name.strip_prefix('g')?.strip_suffix(SUFFIX)?;
    let (group, number) = stem.split_once('-')?;
    if group.len() != 20 || number.len() != 20 {
        return None;
    }
    Some((GroupId(group.parse().ok()?), number.parse().ok()?))
}

/// What an index file records of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub(crate) number: u64,
    pub(crate) len: u64,
    pub(crate) max_index: u64,
    pub(crate) first_offset: Option<Offset>,
    pub(crate) max_timestamp: i64,
}

/// The content of an index file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IndexFile {
    /// The segment closed when it was written: it covers the frames of every segment up to it.
    pub(crate) through: u64,
    pub(crate) segments: Vec<SegmentMeta>,
    pub(crate) structure: Structure,
}

impl IndexFile {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(MAGIC);
        w.u8(VERSION);
        w.u64(self.through);
        w.u32(self.segments.len() as u32);
        for s in &self.segments {
            w.u64(s.number);
            w.u64(s.len);
            w.u64(s.max_index);
            w.i64(s.first_offset.map_or(-1, |o| o.0));
            w.i64(s.max_timestamp);
        }
        let st = &self.structure;
        w.u8(u8::from(st.seen));
        w.u64(st.hard_state.term);
        w.u64(st.hard_state.vote);
        w.u64(st.hard_state.commit);
        let meta = st.snapshot.get_metadata();
        w.u64(meta.index);
        w.u64(meta.term);
        w.bytes(
            &meta
                .get_conf_state()
                .write_to_bytes()
                .expect("conf state encodes"),
        );
        w.bytes(&st.snapshot.data);
        match &st.checkpoint {
            Some(c) => {
                w.u8(1);
                w.u64(c.index);
                w.u64(c.term);
                w.bytes(&c.data);
            }
            None => w.u8(0),
        }
        w.u32(st.terms.len() as u32);
        for (start, term) in &st.terms {
            w.u64(*start);
            w.u64(*term);
        }
        w.u64(st.last);
        w.u32(st.points.len() as u32);
        for p in &st.points {
            w.u64(p.index);
            w.u64(p.segment);
            w.u64(p.position);
        }
        w.u64(st.since_point);
        let crc = crc32fast::hash(&w.bytes);
        w.u32(crc);
        w.bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let body = bytes
            .len()
            .checked_sub(4)
            .ok_or(DecodeError("short index file"))?;
        // The last four bytes are the checksum of the rest, little-endian as the codec writes.
        let crc = u32::from_le_bytes(bytes[body..].try_into().expect("4"));
        if crc32fast::hash(&bytes[..body]) != crc {
            return Err(DecodeError("index file checksum"));
        }
        let mut r = Reader::new(&bytes[..body]);
        if r.u32()? != MAGIC || r.u8()? != VERSION {
            return Err(DecodeError("not an index file of this version"));
        }
        let through = r.u64()?;
        let mut segments = Vec::new();
        for _ in 0..r.u32()? {
            let number = r.u64()?;
            let len = r.u64()?;
            let max_index = r.u64()?;
            let first_offset = match r.i64()? {
                -1 => None,
                o => Some(Offset(o)),
            };
            let max_timestamp = r.i64()?;
            segments.push(SegmentMeta {
                number,
                len,
                max_index,
                first_offset,
                max_timestamp,
            });
        }
        let seen = r.u8()? == 1;
        let hard_state = HardState {
            term: r.u64()?,
            vote: r.u64()?,
            commit: r.u64()?,
            ..HardState::default()
        };
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = r.u64()?;
        meta.term = r.u64()?;
        meta.set_conf_state(
            ConfState::parse_from_bytes(r.bytes()?).map_err(|_| DecodeError("conf state"))?,
        );
        snapshot.data = Bytes::copy_from_slice(r.bytes()?);
        let checkpoint = match r.u8()? {
            0 => None,
            _ => Some(Checkpoint {
                index: r.u64()?,
                term: r.u64()?,
                data: Bytes::copy_from_slice(r.bytes()?),
            }),
        };
        let mut terms = Vec::new();
        for _ in 0..r.u32()? {
            terms.push((r.u64()?, r.u64()?));
        }
        let last = r.u64()?;
        let mut points = Vec::new();
        for _ in 0..r.u32()? {
            points.push(Point {
                index: r.u64()?,
                segment: r.u64()?,
                position: r.u64()?,
            });
        }
        let since_point = r.u64()?;
        r.finish()?;
        Ok(Self {
            through,
            segments,
            structure: Structure {
                seen,
                hard_state,
                snapshot,
                checkpoint,
                terms,
                last,
                points,
                since_point,
                gap: None,
            },
        })
    }
}
