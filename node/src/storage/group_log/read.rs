//! Reading entries back from a group's segments: a walk forward from the sparse index's point
//! at or below the first index wanted, taking each frame that is the next live entry (see
//! [`super::structure`]). Each chunk is one read of the file, and the entries share its buffer:
//! the bytes read are the bytes served.

use bytes::Bytes;
use oxbow_core::raft::eraftpb::Entry;

use super::{frame_error_text, read_damage, segment_name, GroupLog};
use crate::storage::disk::Disk;
use crate::storage::frame::{self, Frame, FrameError};
use crate::storage::segment_log::{io_error, StorageError};

/// Bytes read from a file at least at once.
const CHUNK: u64 = 256 << 10;

impl GroupLog {
    /// Reads entries `from..=to` back, stopping once `max_bytes` of entry data are collected
    /// (at least one entry is read), or at the end of the log. Entries at or below the
    /// snapshot read as none.
    pub(crate) fn read_entries<D: Disk>(
        &mut self,
        disk: &mut D,
        from: u64,
        to: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.flush(disk)?;
        let to = to.min(self.structure.last);
        let mut entries = Vec::new();
        if from > to || from <= self.structure.snapshot_index() {
            return Ok(entries);
        }
        let Some(start) = self.structure.start_for(from) else {
            return Ok(entries);
        };
        let mut bytes = 0u64;
        let mut expected = from;
        let (mut segment, mut position) = (start.segment, start.position);
        'segments: while let Some(len) = self.segments.get(&segment).map(|s| s.len) {
            let file = segment_name(self.group, segment);
            while position < len {
                let want = CHUNK
                    .max(max_bytes.saturating_sub(bytes).min(64 << 20))
                    .min(len - position);
                let mut read = |want: usize| {
                    disk.read_at(&file, position, want)
                        .map(Bytes::from)
                        .map_err(io_error("read", &file))
                };
                let mut buffer = read(want as usize)?;
                // A first frame longer than the chunk: read it whole (a bad length is found
                // as damage when the frame is decoded below).
                if let Some(first_len) = frame::frame_len(&buffer) {
                    if first_len > buffer.len() && first_len as u64 <= len - position {
                        buffer = read(first_len)?;
                    }
                }
                let mut at = 0usize;
                while at < buffer.len() {
                    match frame::decode_shared(&buffer, at) {
                        Ok((frame, frame_len)) => {
                            at += frame_len;
                            let Frame::Entry(group, entry) = frame else {
                                continue;
                            };
                            // Planted bug `serve-stale-frames`: any frame at the next index.
                            let live = self.structure.term_of(entry.index) == Some(entry.term)
                                || self.planted.serve_stale_frames();
                            if group != self.group || entry.index != expected || !live {
                                continue; // replaced, or before the first wanted
                            }
                            bytes += entry.data.len() as u64;
                            entries.push(entry);
                            expected += 1;
                            if expected > to || bytes >= max_bytes {
                                break 'segments;
                            }
                        }
                        // The rest of this frame is past the chunk: the next chunk starts here.
                        Err(FrameError::Truncated) if at > 0 => break,
                        Err(e) => {
                            return Err(read_damage(
                                &file,
                                position + at as u64,
                                &frame_error_text(&e),
                                len,
                            ))
                        }
                    }
                }
                position += at as u64;
            }
            match self.segments.range(segment + 1..).next() {
                Some((next, _)) => (segment, position) = (*next, 0),
                None => break,
            }
        }
        Ok(entries)
    }
}
