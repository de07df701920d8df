//! Frames of the segment log: `len: u32 LE | crc32: u32 LE | payload`, where the CRC (CRC-32,
//! crc32fast) covers the payload. A payload is one [`WalRecord`] element (one entry, one hard
//! state, one snapshot) or a durability marker ([`Frame::Synced`]). A group's removal is no
//! frame: its segment files are deleted.

use bytes::Bytes;
use oxbow_core::codec::{DecodeError, Reader, Writer};
use oxbow_core::ids::GroupId;
use oxbow_core::io::Checkpoint;
use oxbow_core::raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use protobuf::Message as _;

/// Bytes before the payload.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload accepted on read; a longer length field is corruption.
pub const FRAME_PAYLOAD_MAX: usize = 64 << 20;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;
// Kind 4 was a group's removal in the layout with one log for every group.
const KIND_SYNCED: u8 = 5;
const KIND_CHECKPOINT: u8 = 6;

/// One decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// One Raft entry of a group; replaces the entry at its index and every later one.
    Entry(GroupId, Entry),
    /// A group's hard state.
    HardState(GroupId, HardState),
    /// A group's snapshot; `install` replaces the whole log, otherwise entries up to its index go.
    Snapshot {
        /// The group.
        group: GroupId,
        /// The snapshot.
        snapshot: Snapshot,
        /// Whether it replaces the log.
        install: bool,
    },
    /// A partition's applied state at an index (see [`oxbow_core::io::Checkpoint`]).
    Checkpoint(GroupId, Checkpoint),
    /// Every byte of this segment before the given position was synced before this frame was
    /// written. Recovery uses it to tell damage (a bad frame below a synced position) from a
    /// torn write (a bad frame nothing durable follows).
    Synced(u64),
}

/// Appends one framed entry to `out` and returns the frame's start position in `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let mut w = Writer::default();
    match frame {
        Frame::Entry(group, entry) => {
            w.u8(KIND_ENTRY);
            w.u64(group.0);
            w.u64(entry.index);
            w.u64(entry.term);
            w.i32(entry.get_entry_type() as i32);
            w.bytes(&entry.context);
            w.bytes(&entry.data);
        }
        Frame::HardState(group, hs) => {
            w.u8(KIND_HARD_STATE);
            w.u64(group.0);
            w.u64(hs.term);
            w.u64(hs.vote);
            w.u64(hs.commit);
        }
        Frame::Snapshot {
            group,
            snapshot,
            install,
        } => {
            w.u8(KIND_SNAPSHOT);
            w.u64(group.0);
            w.u8(u8::from(*install));
            let meta = snapshot.get_metadata();
            w.u64(meta.index);
            w.u64(meta.term);
            let conf = meta
                .get_conf_state()
                .write_to_bytes()
                .expect("conf state encodes");
            w.bytes(&conf);
            w.bytes(&snapshot.data);
        }
        Frame::Checkpoint(group, checkpoint) => {
            w.u8(KIND_CHECKPOINT);
            w.u64(group.0);
            w.u64(checkpoint.index);
            w.u64(checkpoint.term);
            w.bytes(&checkpoint.data);
        }
        Frame::Synced(position) => {
            w.u8(KIND_SYNCED);
            w.u64(0);
            w.u64(*position);
        }
    }
    let payload = w.bytes;
    assert!(
        payload.len() <= FRAME_PAYLOAD_MAX,
        "frame larger than the log accepts"
    );
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    start
}

/// Why the bytes at some position are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the frame needs: a torn write at the tail.
    Truncated,
    /// The length field is impossible.
    BadLength,
    /// The checksum does not match: torn or corrupt.
    BadChecksum,
    /// The checksum matched but the payload does not decode (written by a different version).
    Undecodable(DecodeError),
}

/// Decodes the frame at the start of `bytes`; returns it and its total length.
pub fn decode(bytes: &[u8]) -> Result<(Frame, usize), FrameError> {
    let (crc, payload) = split(bytes)?;
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::BadChecksum);
    }
    let frame =
        decode_payload(payload, &Bytes::copy_from_slice).map_err(FrameError::Undecodable)?;
    Ok((frame, FRAME_HEADER_LEN + payload.len()))
}

/// Decodes the frame at `at` in `buffer` as [`decode`] does, but an entry's data and context
/// are slices of `buffer`, not copies (the read path: the bytes read from the file are the
/// bytes served).
pub fn decode_shared(buffer: &Bytes, at: usize) -> Result<(Frame, usize), FrameError> {
    let bytes = buffer.get(at..).ok_or(FrameError::Truncated)?;
    let (crc, payload) = split(bytes)?;
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::BadChecksum);
    }
    let frame =
        decode_payload(payload, &|sub| buffer.slice_ref(sub)).map_err(FrameError::Undecodable)?;
    Ok((frame, FRAME_HEADER_LEN + payload.len()))
}

/// The total length of the frame whose header starts `bytes`, if the header is plausible.
pub fn frame_len(bytes: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().expect("4")) as usize;
    (len > 0 && len <= FRAME_PAYLOAD_MAX).then_some(FRAME_HEADER_LEN + len)
}

/// The frame at the start of `bytes` if it is a valid one (exactly when [`decode`] accepts it),
/// checked in the order that is cheap on garbage: the payload's structure before its checksum.
/// A scan through damaged bytes tries every position, and most positions claim a length that
/// fits in what is left; checksumming that length at each of them would cost time quadratic in
/// the segment's size, where the structure (frame kind, exact field lengths) fails at once.
pub fn decode_if_valid(bytes: &[u8]) -> Option<(Frame, usize)> {
    let (crc, payload) = split(bytes).ok()?;
    let frame = decode_payload(payload, &Bytes::copy_from_slice).ok()?;
    (crc32fast::hash(payload) == crc).then_some((frame, FRAME_HEADER_LEN + payload.len()))
}

/// The checksum and payload of the frame at the start of `bytes`, by its header.
fn split(bytes: &[u8]) -> Result<(u32, &[u8]), FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4"));
    if len == 0 || len > FRAME_PAYLOAD_MAX {
        return Err(FrameError::BadLength);
    }
    let Some(payload) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Err(FrameError::Truncated);
    };
    Ok((crc, payload))
}

/// `share` turns a slice of `payload` into the `Bytes` an entry keeps.
fn decode_payload(payload: &[u8], share: &dyn Fn(&[u8]) -> Bytes) -> Result<Frame, DecodeError> {
    let mut r = Reader::new(payload);
    let kind = r.u8()?;
    let group = GroupId(r.u64()?);
    let frame = match kind {
        KIND_ENTRY => {
            let index = r.u64()?;
            let term = r.u64()?;
            let entry_type = match r.i32()? {
                0 => EntryType::EntryNormal,
                1 => EntryType::EntryConfChange,
                2 => EntryType::EntryConfChangeV2,
                _ => return Err(DecodeError("unknown entry type")),
            };
            let context = share(r.bytes()?);
            let data = share(r.bytes()?);
            Frame::Entry(
                group,
                Entry {
                    index,
                    term,
                    entry_type,
                    context,
                    data,
                    ..Entry::default()
                },
            )
        }
        KIND_HARD_STATE => {
            let term = r.u64()?;
            let vote = r.u64()?;
            let commit = r.u64()?;
            Frame::HardState(
                group,
                HardState {
                    term,
                    vote,
                    commit,
                    ..HardState::default()
                },
            )
        }
        KIND_SNAPSHOT => {
            let install = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError("bad install flag")),
            };
            let mut snapshot = Snapshot::default();
            let meta = snapshot.mut_metadata();
            meta.index = r.u64()?;
            meta.term = r.u64()?;
            let conf =
                ConfState::parse_from_bytes(r.bytes()?).map_err(|_| DecodeError("conf state"))?;
            meta.set_conf_state(conf);
            snapshot.data = Bytes::copy_from_slice(r.bytes()?);
            Frame::Snapshot {
                group,
                snapshot,
                install,
            }
        }
        KIND_CHECKPOINT => Frame::Checkpoint(
            group,
            Checkpoint {
                index: r.u64()?,
                term: r.u64()?,
                data: Bytes::copy_from_slice(r.bytes()?),
            },
        ),
        KIND_SYNCED => Frame::Synced(r.u64()?),
        _ => return Err(DecodeError("unknown frame kind")),
    };
    r.finish()?;
    Ok(frame)
}
