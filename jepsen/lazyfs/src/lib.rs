//! A FUSE filesystem that loses what was not fsynced, on command: the `power` nemesis of the
//! Jepsen runner (issue 18), after Jepsen's LazyFS.
//!
//! SIGKILL alone cannot show a missing fsync: the killed process's writes sit in the kernel's page
//! cache and the restarted process reads them back. [`LazyFs`] mounts a passthrough of a backing
//! directory whose file data writes are held in memory per file (LazyFS's page cache) until the
//! file is fsynced; [`LazyFs::lose_unsynced`] then discards them, as a power failure would.
//!
//! # The model
//!
//! - **Reads** see every write, pending or not: the backing file's durable bytes with the pending
//!   writes laid over them. Files are opened with `FOPEN_DIRECT_IO` and attributes are not cached,
//!   so the kernel holds no copy of its own.
//! - **Writes** are pending: held in memory, not written to the backing file.
//! - **Truncations** (`ftruncate`, `set_len`, `O_TRUNC`) are pending too: the size readers see
//!   changes at once, and bytes cut off read as zeros if the file grows again; an fsync applies
//!   the truncation, losing the pending state forgets it.
//! - **`fsync` and `fdatasync`** on a file (through any of its handles) write its pending data
//!   and truncations to the backing file and fsync (or fdatasync) the backing file. A `close` or a
//!   `flush` is not an fsync. `fsync` on a directory is passed through.
//! - **[`LazyFs::lose_unsynced`]** drops every file's pending state: what is left is the backing
//!   files as they were at their last fsync. Kill the processes using the mount first (a power
//!   failure stops them too): a process that keeps a file open sees it shrink under it, and the
//!   kernel may keep its own idea of the file's size for its `O_APPEND` writes.
//! - **The memory bound**: at most [`Options::pending_bytes_max`] bytes of pending writes (256 MiB
//!   by default). A write that would pass it first writes every pending file back to its backing
//!   file, unsynced, as the kernel's dirty page writeback would: those bytes are no longer
//!   losable, so the model then under-approximates what a power failure loses.
//!   [`LazyFs::written_back_bytes`] tells whether it happened.
//!
//! # Use
//!
//! The `power` nemesis: kill the processes using the mount, lose what they did not fsync,
//! restart them on what is left.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::path::Path;
//! use oxbow_lazyfs::LazyFs;
//!
//! let lazy = LazyFs::mount(Path::new("/srv/n1-backing"), Path::new("/srv/n1"))?;
//! // ... start `oxbow node` with `data_dir = "/srv/n1/data"`, run the workload, then:
//! // SIGKILL the node, and
//! let loss = lazy.lose_unsynced();
//! println!("lost {} bytes in {} files", loss.bytes, loss.files);
//! // ... restart the node on the same data_dir; at the end:
//! lazy.unmount()?;
//! # Ok(())
//! # }
//! ```
//!
//! The `oxbow-lazyfs` binary does the same by hand: `oxbow-lazyfs mount --backing DIR
//! --mountpoint DIR` serves until SIGINT or SIGTERM and loses unsynced writes on SIGUSR1;
//! `oxbow-lazyfs clean --mountpoint DIR` detaches a mount left by a killed process.
//!
//! # Limits
//!
//! - **Space**: pending bytes are counted as used in `statfs` (`df`), and a write that would
//!   not fit in the backing file system's free space with every other pending byte fails with
//!   `ENOSPC`, as on a file system that allocates at write time; overwrites of pending bytes
//!   count as new, so it fails a little early.
//! - **Metadata is durable at once.** `create`, `mkdir`, `rename`, `unlink`, `rmdir`, `chmod`,
//!   `chown` and `utimes` pass straight through to the backing directory. A real power failure may
//!   also lose directory entries not made durable by an fsync of their directory; this model
//!   never does, so it cannot catch a missing directory fsync.
//! - Pending data is lost whole, never torn: a real disk may keep a prefix of an unsynced write,
//!   or some of its pages and not others.
//! - No `fallocate` (refused with `EOPNOTSUPP`), symbolic or hard links, device nodes or extended
//!   attributes; `mmap` of a file is refused by the kernel (direct I/O). oxbow's node needs none.
//! - Requests are served by one thread under one lock: fine for a test cluster, not fast.
//! - Mounting needs root (or `CAP_SYS_ADMIN`) and `/dev/fuse`: it calls mount(2) directly, with no
//!   `fusermount` and no libfuse.

mod fs;
mod overlay;

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use rustix::mount::UnmountFlags;

use crate::fs::{LazyFilesystem, Shared};

/// The name the mount carries in `/proc/mounts` (its source, and its type `fuse.oxbow-lazyfs`).
pub const FS_NAME: &str = "oxbow-lazyfs";

/// How long [`LazyFs::unmount`] waits for the session thread to end.
const SESSION_END_TIMEOUT: Duration = Duration::from_secs(10);

/// Mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The most bytes of pending (unsynced) writes held in memory; past it, pending data is
    /// written back to the backing files, unsynced and no longer losable.
    pub pending_bytes_max: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pending_bytes_max: 256 << 20,
        }
    }
}

/// What [`LazyFs::lose_unsynced`] discarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loss {
    /// Files that had pending writes or truncations.
    pub files: usize,
    /// Bytes of pending writes.
    pub bytes: u64,
}

/// A mounted lazy filesystem. Dropping it unmounts it.
pub struct LazyFs {
    shared: Arc<Shared>,
    mountpoint: PathBuf,
    /// The mount's device number: its minor names its FUSE connection in fusectl.
    dev: u64,
    session: Option<BackgroundSession>,
}

impl LazyFs {
    /// Mounts a lazy view of `backing` on `mountpoint`, with default [`Options`].
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<LazyFs> {
        Self::mount_with(backing, mountpoint, Options::default())
    }

    /// Mounts a lazy view of `backing` (an existing directory) on `mountpoint` (created if
    /// missing; neither may contain the other), served by a background thread; returns once the
    /// mount answers. A stale mount of ours left on `mountpoint` by a killed process is detached
    /// first.
    pub fn mount_with(backing: &Path, mountpoint: &Path, options: Options) -> io::Result<LazyFs> {
        let backing = backing.canonicalize()?;
        if !backing.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("backing {} is not a directory", backing.display()),
            ));
        }
        unmount_stale(mountpoint)?;
        std::fs::create_dir_all(mountpoint)?;
        let mountpoint = mountpoint.canonicalize()?;
        // The session would serve a lookup of the mount in the backing directory by looking it
        // up in the mount: itself, waiting for itself.
        if mountpoint.starts_with(&backing) || backing.starts_with(&mountpoint) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the mountpoint {} and the backing directory {} must not contain each other",
                    mountpoint.display(),
                    backing.display()
                ),
            ));
        }
        let before = std::fs::metadata(&mountpoint)?.dev();
        let shared = Arc::new(Shared::new(backing, options.pending_bytes_max));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(FS_NAME.to_string()),
            MountOption::Subtype(FS_NAME.to_string()),
        ];
        config.acl = SessionACL::All;
        config.n_threads = Some(1);
        let session = fuser::spawn_mount(LazyFilesystem(shared.clone()), &mountpoint, &config)?;
        let mut lazy = LazyFs {
            shared,
            mountpoint,
            dev: 0,
            session: Some(session),
        };
        // The first access waits for the session to answer the kernel's INIT.
        lazy.dev = std::fs::metadata(&lazy.mountpoint)?.dev();
        if lazy.dev == before {
            return Err(io::Error::other(format!(
                "{} is not a new mount after mounting",
                lazy.mountpoint.display()
            )));
        }
        Ok(lazy)
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Discards every write and truncation not yet made durable by an fsync of its file: what a
    /// power failure would lose.
    pub fn lose_unsynced(&self) -> Loss {
        self.shared.lose_unsynced()
    }

    /// Bytes of pending writes held now.
    pub fn unsynced_bytes(&self) -> u64 {
        self.shared.unsynced_bytes()
    }

    /// Bytes written back unsynced because the memory bound was reached (no longer losable).
    pub fn written_back_bytes(&self) -> u64 {
        self.shared.written_back_bytes()
    }

    /// Unmounts. If a process still uses the mount, the FUSE connection is aborted (its calls
    /// fail with `ENOTCONN`) and the mount detached, so that nothing stays mounted. The processes
    /// that used it may have been SIGKILLed: their files are closed, nothing is busy.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // Busy (a process has a file open there, or sits in it): a forced unmount aborts the
        // FUSE connection, so that the session thread ends, and a lazy one detaches the mount.
        let result = rustix::mount::unmount(&self.mountpoint, UnmountFlags::empty())
            .or_else(|_| rustix::mount::unmount(&self.mountpoint, UnmountFlags::FORCE))
            .or_else(|_| rustix::mount::unmount(&self.mountpoint, UnmountFlags::DETACH))
            .or_else(|e| match e {
                // Not mounted (any more).
                rustix::io::Errno::INVAL => Ok(()),
                e => Err(io::Error::from(e)),
            });
        let deadline = Instant::now() + SESSION_END_TIMEOUT;
        while !session.guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if session.guard.is_finished() {
            let _ = session.join();
        } else {
            // Last resort: abort the connection through fusectl, and detach the thread rather
            // than hang (its mount is gone already).
            let _ = abort_connection(self.dev);
            drop(session);
        }
        result
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        let _ = self.unmount_inner();
    }
}

/// Detaches a stale mount of ours (its process died: calls fail with `ENOTCONN`) from
/// `mountpoint`. Returns whether there was one; fails if a live filesystem is mounted there.
pub fn unmount_stale(mountpoint: &Path) -> io::Result<bool> {
    let absolute = match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf())
            .join(name),
        _ => mountpoint.to_path_buf(),
    };
    let ours = mounts_of_ours()?
        .into_iter()
        .filter(|mount| *mount == absolute)
        .count();
    if ours == 0 {
        return Ok(false);
    }
    match std::fs::metadata(&absolute) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTCONN.raw_os_error()) => {}
        Err(e) => return Err(e),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is mounted by a live {FS_NAME}", absolute.display()),
            ))
        }
    }
    for _ in 0..ours {
        rustix::mount::unmount(&absolute, UnmountFlags::DETACH)?;
    }
    Ok(true)
}

/// Mount points of every `oxbow-lazyfs` mount, from `/proc/self/mountinfo`.
pub fn mounts_of_ours() -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut mounts = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mountpoint options [optional...] - type source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        let (Some(fstype), Some(source)) = (right.next(), right.next()) else {
            continue;
        };
        if fstype.starts_with("fuse") && source == FS_NAME {
            if let Some(point) = left.split(' ').nth(4) {
                mounts.push(PathBuf::from(unescape(point)));
            }
        }
    }
    Ok(mounts)
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4).unwrap_or_default();
        if bytes[i] == b'\\'
            && digits.len() == 3
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let code = digits
                .iter()
                .fold(0u32, |code, d| code * 8 + u32::from(d - b'0'));
            out.push(code as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Aborts the FUSE connection of the mount with device number `dev` through fusectl (mounting
/// fusectl if needed): every pending and later call on the mount fails, and the session ends.
fn abort_connection(dev: u64) -> io::Result<()> {
    let connections = Path::new("/sys/fs/fuse/connections");
    let abort = connections
        .join(rustix::fs::minor(dev).to_string())
        .join("abort");
    if !abort.exists() {
        let _ = rustix::mount::mount(
            "fusectl",
            connections,
            "fusectl",
            rustix::mount::MountFlags::empty(),
            None,
        );
    }
    File::options().write(true).open(abort)?.write_all(b"1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape(r"/tmp/end\"), r"/tmp/end\");
    }
}
