//! One file's unsynced state: the writes and truncations made since its last fsync, held in
//! memory over the durable bytes of the backing file.
//!
//! The file a reader sees is the backing file's bytes below `durable_limit`, zeros from there on,
//! cut or extended to `size`, with the pending extents laid over it. An fsync
//! ([`Overlay::apply`]) makes the backing file exactly that; losing the overlay leaves the
//! backing file as it was at the last fsync.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The unsynced state of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overlay {
    /// The file's length as readers see it.
    size: u64,
    /// Backing bytes at or above this offset were cut by a pending truncation: they read as zeros.
    durable_limit: u64,
    /// Pending writes, by offset: non-overlapping, none reaching past `size`.
    extents: BTreeMap<u64, Vec<u8>>,
    /// The sum of the extents' lengths.
    bytes: u64,
}

impl Overlay {
    /// No pending change over a backing file of `backing_len` bytes.
    pub(crate) fn new(backing_len: u64) -> Self {
        Self {
            size: backing_len,
            durable_limit: backing_len,
            extents: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// The file's length as readers see it.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held in pending extents (what the memory bound counts).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records a write of `data` at `offset`.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // Cut every extent that overlaps [offset, end): they are contiguous in the map.
        let overlapping: Vec<u64> = self
            .extents
            .range(..end)
            .rev()
            .take_while(|(start, bytes)| **start + bytes.len() as u64 > offset)
            .map(|(start, _)| *start)
            .collect();
        for start in overlapping {
            let bytes = self.extents.remove(&start).expect("listed");
            self.bytes -= bytes.len() as u64;
            let extent_end = start + bytes.len() as u64;
            if start < offset {
                let head = bytes[..(offset - start) as usize].to_vec();
                self.bytes += head.len() as u64;
                self.extents.insert(start, head);
            }
            if extent_end > end {
                let tail = bytes[(end - start) as usize..].to_vec();
                self.bytes += tail.len() as u64;
                self.extents.insert(end, tail);
            }
        }
        self.bytes += data.len() as u64;
        // Appends are the common case: grow the extent that ends where this write starts.
        let merged_into = self
            .extents
            .range_mut(..offset)
            .next_back()
            .filter(|(start, bytes)| **start + bytes.len() as u64 == offset);
        let start = match merged_into {
            Some((start, bytes)) => {
                bytes.extend_from_slice(data);
                *start
            }
            None => {
                self.extents.insert(offset, data.to_vec());
                offset
            }
        };
        if let Some(next) = self.extents.remove(&end) {
            self.extents
                .get_mut(&start)
                .expect("inserted")
                .extend_from_slice(&next);
        }
        self.size = self.size.max(end);
    }

    /// Records a truncation (or extension) to `len` bytes.
    pub(crate) fn truncate(&mut self, len: u64) {
        self.size = len;
        self.durable_limit = self.durable_limit.min(len);
        let beyond: Vec<u64> = self.extents.range(len..).map(|(start, _)| *start).collect();
        for start in beyond {
            let bytes = self.extents.remove(&start).expect("listed");
            self.bytes -= bytes.len() as u64;
        }
        if let Some((start, bytes)) = self.extents.range_mut(..len).next_back() {
            let keep = (len - *start) as usize;
            if bytes.len() > keep {
                self.bytes -= (bytes.len() - keep) as u64;
                bytes.truncate(keep);
            }
        }
    }

    /// Reads up to `len` bytes at `offset` of the file as readers see it, `backing` holding its
    /// durable bytes.
    pub(crate) fn read(&self, backing: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let backing_len = backing.metadata()?.len();
        read_layered(
            backing,
            backing_len.min(self.durable_limit),
            self.size,
            &self.extents,
            offset,
            len,
        )
    }

    /// Writes the pending state to `backing` (without syncing it): afterwards the backing
    /// file's bytes are what readers saw.
    pub(crate) fn apply(&self, backing: &File) -> io::Result<()> {
        let backing_len = backing.metadata()?.len();
        if self.durable_limit < backing_len {
            backing.set_len(self.durable_limit)?;
        }
        if self.size != backing_len.min(self.durable_limit) {
            backing.set_len(self.size)?;
        }
        for (start, bytes) in &self.extents {
            backing.write_all_at(bytes, *start)?;
        }
        Ok(())
    }
}

/// Reads a file made of `backing`'s first `durable` bytes, zeros up to `size`, and `extents`
/// over them.
fn read_layered(
    backing: &File,
    durable: u64,
    size: u64,
    extents: &BTreeMap<u64, Vec<u8>>,
    offset: u64,
    len: u64,
) -> io::Result<Vec<u8>> {
    let end = size.min(offset.saturating_add(len));
    if offset >= end {
        return Ok(Vec::new());
    }
    let mut out = vec![0; (end - offset) as usize];
    let durable_end = durable.min(end);
    if offset < durable_end {
        let want = &mut out[..(durable_end - offset) as usize];
        let mut filled = 0;
        while filled < want.len() {
            match backing.read_at(&mut want[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    // Extents starting before `offset` may still reach into the range: begin at the last one
    // that starts at or before it.
    let first = extents
        .range(..=offset)
        .next_back()
        .map(|(start, _)| *start)
        .unwrap_or(offset);
    for (start, bytes) in extents.range(first..end) {
        let extent_end = start + bytes.len() as u64;
        let from = (*start).max(offset);
        let to = extent_end.min(end);
        if from < to {
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn backing(content: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(content).unwrap();
        file
    }

    fn read_all(overlay: &Overlay, file: &File) -> Vec<u8> {
        overlay.read(file, 0, u64::MAX).unwrap()
    }

    #[test]
    fn writes_overlay_the_backing_bytes_and_merge() {
        let file = backing(b"0123456789");
        let mut overlay = Overlay::new(10);
        overlay.write(2, b"ab");
        overlay.write(4, b"cd");
        overlay.write(12, b"xy");
        assert_eq!(read_all(&overlay, &file), b"01abcd6789\0\0xy");
        assert_eq!(overlay.extents.len(), 2, "adjacent writes merge");
        overlay.write(3, b"ZZZZZZZZZZ");
        assert_eq!(read_all(&overlay, &file), b"01aZZZZZZZZZZy");
        assert_eq!(overlay.bytes(), 12);
        assert_eq!(overlay.read(&file, 5, 3).unwrap(), b"ZZZ");
        assert_eq!(overlay.read(&file, 14, 3).unwrap(), b"");
    }

    #[test]
    fn a_truncation_hides_the_cut_backing_bytes_even_when_the_file_grows_again() {
        let file = backing(b"0123456789");
        let mut overlay = Overlay::new(10);
        overlay.write(8, b"abcd");
        overlay.truncate(4);
        assert_eq!(read_all(&overlay, &file), b"0123");
        assert_eq!(overlay.bytes(), 0);
        overlay.truncate(8);
        overlay.write(6, b"x");
        assert_eq!(read_all(&overlay, &file), b"0123\0\0x\0");
        overlay.apply(&file).unwrap();
        let mut reread = Overlay::new(file.metadata().unwrap().len());
        assert_eq!(read_all(&reread, &file), b"0123\0\0x\0");
        reread.truncate(2);
        reread.apply(&file).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 2);
    }

    #[test]
    fn apply_makes_the_backing_file_what_readers_saw() {
        let file = backing(b"0123456789");
        let mut overlay = Overlay::new(10);
        overlay.truncate(3);
        overlay.write(5, b"tail");
        let seen = read_all(&overlay, &file);
        overlay.apply(&file).unwrap();
        assert_eq!(read_all(&Overlay::new(9), &file), seen);
        assert_eq!(seen, b"012\0\0tail");
    }

    /// A small xorshift generator: the test needs varied operations, not good randomness.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random writes, truncations, fsyncs and losses against a model of the bytes readers see
    /// and the bytes on disk.
    #[test]
    fn random_operations_match_a_model_of_visible_and_durable_bytes() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let file = backing(b"");
            let mut overlay = Overlay::new(0);
            let (mut visible, mut durable) = (Vec::<u8>::new(), Vec::<u8>::new());
            for step in 0..300 {
                match rng.below(10) {
                    0..=5 => {
                        let offset = rng.below(visible.len() as u64 + 64) as usize;
                        let data: Vec<u8> =
                            (0..rng.below(40)).map(|_| rng.below(256) as u8).collect();
                        overlay.write(offset as u64, &data);
                        // An empty write does not extend a file.
                        if !data.is_empty() {
                            if visible.len() < offset + data.len() {
                                visible.resize(offset + data.len(), 0);
                            }
                            visible[offset..offset + data.len()].copy_from_slice(&data);
                        }
                    }
                    6 => {
                        let len = rng.below(visible.len() as u64 + 32) as usize;
                        overlay.truncate(len as u64);
                        visible.resize(len, 0);
                    }
                    7 | 8 => {
                        overlay.apply(&file).unwrap();
                        durable = visible.clone();
                        overlay = Overlay::new(durable.len() as u64);
                    }
                    _ => {
                        visible = durable.clone();
                        overlay = Overlay::new(durable.len() as u64);
                    }
                }
                let what = format!("seed {seed} step {step}");
                assert_eq!(overlay.size(), visible.len() as u64, "{what}");
                assert_eq!(read_all(&overlay, &file), visible, "{what}");
                let offset = rng.below(visible.len() as u64 + 8);
                let len = rng.below(64);
                let end = (offset + len).min(visible.len() as u64).max(offset) as usize;
                let expected = visible.get(offset as usize..end).unwrap_or_default();
                assert_eq!(
                    overlay.read(&file, offset, len).unwrap(),
                    expected,
                    "{what}"
                );
                let extents: u64 = overlay.extents.values().map(|e| e.len() as u64).sum();
                assert_eq!(overlay.bytes(), extents, "{what}");
                let mut on_disk = Vec::new();
                let mut reader = &file;
                reader.rewind().unwrap();
                reader.read_to_end(&mut on_disk).unwrap();
                assert_eq!(
                    on_disk, durable,
                    "{what}: the backing file holds the durable bytes"
                );
            }
        }
    }
}
