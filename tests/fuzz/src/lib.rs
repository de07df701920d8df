//! What the fuzz targets share: fixing up checksums so that the fuzzer reaches what they
//! guard, and the seeds' encodings.

/// Writes a RecordBatch v2's true batch length and CRC-32C into its header.
pub fn fix_batch_header(batch: &mut [u8]) {
    const BATCH_LENGTH: usize = 8;
    const CRC: usize = 17;
    const ATTRIBUTES: usize = 21;
    let length = (batch.len() - BATCH_LENGTH - 4) as i32;
    batch[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A storage frame (`len | crc32 | payload`, as `oxbow_node::storage::frame` writes) around
/// `payload`.
pub fn storage_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits `input` into chunks, each a little-endian u16 length and that many bytes (the last
/// chunk takes what is left).
pub fn chunks(mut input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((length, rest)) = input.split_first_chunk::<2>() {
        let length = usize::from(u16::from_le_bytes(*length)).min(rest.len());
        let (chunk, rest) = rest.split_at(length);
        out.push(chunk);
        input = rest;
    }
    out
}

/// The inverse of [`chunks`].
pub fn join_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks {
        let length = u16::try_from(chunk.len()).expect("a chunk fits a u16 length");
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

pub mod cluster;
pub mod node;
pub mod requests;
pub mod seeds;

/// Replaces the panic hook with one that aborts (a crash, for the fuzzer) unless the panic
/// was raised inside the `raft` crate: raft-rs's own assertions about a peer that lies about
/// the log are kept on purpose (see the `peer_frame` target), so those panics unwind to the
/// target, which ends the run.
pub fn abort_unless_raft_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_raft = info
            .location()
            .is_some_and(|l| l.file().replace('\\', "/").contains("/raft-0."));
        if !in_raft {
            default(info);
            std::process::abort();
        }
    }));
}
