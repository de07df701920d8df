//! The file operations the segment log needs, with a real and a simulated implementation.
//!
//! [`FsDisk`] is a directory on the real file system. [`SimDisk`] is memory with the failure
//! model of a real disk: appended bytes are not durable until synced, a crash loses the unsynced
//! tail of every file (and may keep a torn prefix of it), and stored bytes can be corrupted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rand_core::RngCore;

/// A flat directory of append-only files.
pub trait Disk {
    /// File names, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>>;
    /// `len` bytes at `position`.
    fn read_at(&mut self, name: &str, position: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The length of a file.
    fn size(&mut self, name: &str) -> io::Result<u64>;
    /// Appends to a file, creating it if missing. Not durable until [`Disk::sync`].
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended to `name`, and its existence, durable.
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Makes everything appended to each of `names`, and their existence, durable (a group
    /// commit over several files; a disk may sync them in parallel).
    fn sync_all(&mut self, names: &[String]) -> io::Result<()> {
        names.iter().try_for_each(|name| self.sync(name))
    }
    /// Cuts a file to `len` bytes, durably.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Removes a file.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` if it exists, atomically and durably: after a
    /// crash at any point `to` is either its old file or the whole of `from` (which must be
    /// synced first: the rename makes no bytes durable).
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// Bytes free for this directory's files, if the disk can tell (a simulated one cannot).
    fn free_bytes(&self) -> Option<u64> {
        None
    }
    /// The size of the file system holding this directory, if the disk can tell.
    fn total_bytes(&self) -> Option<u64> {
        None
    }
}

/// A directory on the real file system. At most `open_files_max` files are open at once: the
/// least recently used is closed to open another (and opened again when next used; an fsync
/// through a new handle still covers every byte written through the old one).
pub struct FsDisk {
    dir: PathBuf,
    /// Open files, with the use count of their last use.
    open: BTreeMap<String, (File, u64)>,
    open_files_max: usize,
    uses: u64,
    dir_dirty: bool,
}

/// Files a node keeps open by default (`[log] open_files_max`).
pub const OPEN_FILES_MAX: usize = 1_024;

impl FsDisk {
    /// Opens (creating if needed) the directory, keeping at most [`OPEN_FILES_MAX`] files open.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::with_open_files_max(dir, OPEN_FILES_MAX)
    }

    /// Opens (creating if needed) the directory, keeping at most `open_files_max` files open.
    pub fn with_open_files_max(dir: &Path, open_files_max: usize) -> io::Result<Self> {
        assert!(open_files_max >= 2);
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            open: BTreeMap::new(),
            open_files_max,
            uses: 0,
            dir_dirty: false,
        })
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.open.len()
    }

    fn file(&mut self, name: &str) -> io::Result<&mut File> {
        self.uses += 1;
        if !self.open.contains_key(name) {
            if self.open.len() >= self.open_files_max {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(n, _)| n.clone())
                    .expect("full");
                self.open.remove(&oldest);
            }
            let path = self.dir.join(name);
            let existed = path.exists();
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)?;
            self.dir_dirty |= !existed;
            self.open.insert(name.to_string(), (file, self.uses));
        }
        let (file, used) = self.open.get_mut(name).expect("inserted");
        *used = self.uses;
        Ok(file)
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        if self.dir_dirty {
            File::open(&self.dir)?.sync_all()?;
            self.dir_dirty = false;
        }
        Ok(())
    }
}

impl Disk for FsDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let file = self.file(name)?;
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn read_at(&mut self, name: &str, position: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0; len];
        let file = self.file(name)?;
        file.seek(SeekFrom::Start(position))?;
        file.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    fn size(&mut self, name: &str) -> io::Result<u64> {
        Ok(self.file(name)?.metadata()?.len())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.file(name)?.write_all(bytes)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.file(name)?.sync_data()?;
        self.sync_dir()
    }

    /// One thread per file beyond the first: the file system merges concurrent fsyncs into
    /// one journal commit, so a group commit over several partitions' files costs about one.
    fn sync_all(&mut self, names: &[String]) -> io::Result<()> {
        if names.len() <= 1 || names.len() >= self.open_files_max {
            return names.iter().try_for_each(|name| self.sync(name));
        }
        for name in names {
            self.file(name)?;
        }
        let files: Vec<&File> = names.iter().map(|n| &self.open[n.as_str()].0).collect();
        let (first, rest) = files.split_first().expect("two or more");
        std::thread::scope(|scope| {
            let others: Vec<_> = rest
                .iter()
                .map(|file| scope.spawn(move || file.sync_data()))
                .collect();
            let mut result = first.sync_data();
            for other in others {
                let synced = other
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked")));
                result = result.and(synced);
            }
            result
        })?;
        self.sync_dir()
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let file = self.file(name)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn free_bytes(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(&self.dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    fn total_bytes(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(&self.dir).ok()?;
        Some(stat.f_blocks.saturating_mul(stat.f_frsize))
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        std::fs::remove_file(self.dir.join(name))?;
        self.dir_dirty = true;
        self.sync_dir()
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        // An open handle of `to` would go on reading the file it replaces.
        self.open.remove(from);
        self.open.remove(to);
        std::fs::rename(self.dir.join(from), self.dir.join(to))?;
        self.dir_dirty = true;
        self.sync_dir()
    }
}

#[derive(Clone, Debug, Default)]
struct SimFile {
    bytes: Vec<u8>,
    /// The prefix that survives a crash.
    synced_len: usize,
}

/// A simulated disk. Deterministic: the only randomness is the RNG passed to [`SimDisk::crash`].
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    files: BTreeMap<String, SimFile>,
    /// Counts operations, for tests that want to know the disk was used.
    pub operations: u64,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loses every unsynced byte. With `tear`, each file may keep a random prefix of its
    /// unsynced tail (a torn write), which recovery must cut. Returns how many bytes were lost.
    pub fn crash(&mut self, rng: &mut impl RngCore, tear: bool) -> u64 {
        let mut lost = 0;
        for file in self.files.values_mut() {
            let unsynced = file.bytes.len() - file.synced_len;
            let kept = if tear && unsynced > 0 {
                (rng.next_u64() % unsynced as u64) as usize
            } else {
                0
            };
            lost += (unsynced - kept) as u64;
            file.bytes.truncate(file.synced_len + kept);
            file.synced_len = file.bytes.len();
        }
        self.files.retain(|_, f| !f.bytes.is_empty());
        lost
    }

    /// Flips one byte of a stored file (bit rot). Returns false if the file is shorter.
    pub fn corrupt(&mut self, name: &str, position: usize) -> bool {
        match self.files.get_mut(name) {
            Some(file) if position < file.bytes.len() => {
                file.bytes[position] ^= 0x5a;
                true
            }
            _ => false,
        }
    }

    /// Bytes stored in a file, synced or not.
    pub fn len(&self, name: &str) -> Option<usize> {
        self.files.get(name).map(|f| f.bytes.len())
    }

    /// Bytes of a file guaranteed to survive a crash.
    pub fn synced_len(&self, name: &str) -> Option<usize> {
        self.files.get(name).map(|f| f.synced_len)
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

impl Disk for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files.keys().cloned().collect())
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        self.operations += 1;
        self.files
            .get(name)
            .map(|f| f.bytes.clone())
            .ok_or_else(|| not_found(name))
    }

    fn size(&mut self, name: &str) -> io::Result<u64> {
        self.files
            .get(name)
            .map(|f| f.bytes.len() as u64)
            .ok_or_else(|| not_found(name))
    }

    fn read_at(&mut self, name: &str, position: u64, len: usize) -> io::Result<Vec<u8>> {
        self.operations += 1;
        let file = self.files.get(name).ok_or_else(|| not_found(name))?;
        let start = usize::try_from(position).map_err(|_| io::Error::other("position"))?;
        file.bytes
            .get(start..start + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.operations += 1;
        self.files
            .entry(name.to_string())
            .or_default()
            .bytes
            .extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.operations += 1;
        let file = self.files.get_mut(name).ok_or_else(|| not_found(name))?;
        file.synced_len = file.bytes.len();
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.operations += 1;
        let file = self.files.get_mut(name).ok_or_else(|| not_found(name))?;
        let len = usize::try_from(len).map_err(|_| io::Error::other("length"))?;
        file.bytes.truncate(len);
        file.synced_len = file.synced_len.min(len);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.operations += 1;
        self.files
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }

    /// Durable at once, as removal is (the model's metadata operations are); the bytes of
    /// `from` not synced stay unsynced under their new name.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.operations += 1;
        let file = self.files.remove(from).ok_or_else(|| not_found(from))?;
        self.files.insert(to.to_string(), file);
        Ok(())
    }
}

/// A [`SimDisk`] shared between a node and the simulator that hosts it: the node's storage
/// writes through it, and the simulator crashes or corrupts it between incarnations.
#[derive(Clone, Debug, Default)]
pub struct SharedSimDisk(pub std::sync::Arc<std::sync::Mutex<SimDisk>>);

impl SharedSimDisk {
    /// An empty shared disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the disk.
    pub fn with<T>(&self, f: impl FnOnce(&mut SimDisk) -> T) -> T {
        f(&mut self.0.lock().expect("not poisoned"))
    }
}

impl Disk for SharedSimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        self.with(|d| d.list())
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        self.with(|d| d.read(name))
    }

    fn read_at(&mut self, name: &str, position: u64, len: usize) -> io::Result<Vec<u8>> {
        self.with(|d| d.read_at(name, position, len))
    }

    fn size(&mut self, name: &str) -> io::Result<u64> {
        self.with(|d| d.size(name))
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.with(|d| d.append(name, bytes))
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.with(|d| d.sync(name))
    }

    fn sync_all(&mut self, names: &[String]) -> io::Result<()> {
        self.with(|d| d.sync_all(names))
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.with(|d| d.truncate(name, len))
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.with(|d| d.remove(name))
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.with(|d| d.rename(from, to))
    }
}
