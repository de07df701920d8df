//! The FUSE filesystem: a passthrough of the backing directory whose file data writes wait in
//! [`Overlay`]s until an fsync.
//!
//! Requests are served one at a time (one session thread), under one lock, so the state below is
//! simple: inode numbers of our own mapped to paths under the backing directory, open handles
//! holding a backing file each, and the overlays of files with unsynced changes.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use crate::overlay::Overlay;
use crate::Loss;

/// Attributes and entries are not cached by the kernel: sizes change under it when unsynced
/// data is lost.
const TTL: Duration = Duration::ZERO;

/// State shared by the session thread and the [`crate::LazyFs`] handle.
pub(crate) struct Shared {
    backing: PathBuf,
    pending_bytes_max: u64,
    state: Mutex<State>,
}

struct Node {
    /// Relative to the backing directory; `None` once unlinked (it may still be open).
    path: Option<PathBuf>,
}

struct Handle {
    ino: u64,
    file: File,
}

#[derive(Default)]
struct State {
    nodes: HashMap<u64, Node>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    overlays: HashMap<u64, Overlay>,
    pending_bytes: u64,
    written_back_bytes: u64,
}

impl Shared {
    pub(crate) fn new(backing: PathBuf, pending_bytes_max: u64) -> Self {
        let mut state = State {
            next_ino: 2,
            next_fh: 1,
            ..State::default()
        };
        state.nodes.insert(
            INodeNo::ROOT.0,
            Node {
                path: Some(PathBuf::new()),
            },
        );
        state.inos.insert(PathBuf::new(), INodeNo::ROOT.0);
        Self {
            backing,
            pending_bytes_max,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Discards every unsynced change.
    pub(crate) fn lose_unsynced(&self) -> Loss {
        let mut state = self.lock();
        let overlays = std::mem::take(&mut state.overlays);
        state.pending_bytes = 0;
        Loss {
            files: overlays.len(),
            bytes: overlays.values().map(Overlay::bytes).sum(),
        }
    }

    pub(crate) fn unsynced_bytes(&self) -> u64 {
        self.lock().pending_bytes
    }

    pub(crate) fn written_back_bytes(&self) -> u64 {
        self.lock().written_back_bytes
    }

    /// The absolute backing path of `ino`.
    fn path(&self, state: &State, ino: INodeNo) -> Result<PathBuf, Errno> {
        match state.nodes.get(&ino.0) {
            Some(Node { path: Some(path) }) => Ok(self.backing.join(path)),
            _ => Err(Errno::ENOENT),
        }
    }

    /// The relative path of `name` in directory `parent`.
    fn child(state: &State, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        match state.nodes.get(&parent.0) {
            Some(Node { path: Some(path) }) => Ok(path.join(name)),
            _ => Err(Errno::ENOENT),
        }
    }

    /// A backing file of `ino` to write to: an open handle's, or the path opened again.
    fn writable(&self, state: &State, ino: u64) -> io::Result<File> {
        if let Some(handle) = state.handles.values().find(|h| h.ino == ino) {
            if let Ok(file) = handle.file.try_clone() {
                return Ok(file);
            }
        }
        let path = self
            .path(state, INodeNo(ino))
            .map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
        OpenOptions::new().write(true).open(path)
    }

    fn attr(state: &State, ino: u64, meta: &Metadata) -> FileAttr {
        let time = |secs: i64, nsecs: i64| {
            if secs >= 0 {
                UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
            } else {
                UNIX_EPOCH
            }
        };
        let size = state.overlays.get(&ino).map_or(meta.size(), Overlay::size);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512).max(meta.blocks()),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    fn ino_for(state: &mut State, path: &Path) -> u64 {
        if let Some(ino) = state.inos.get(path) {
            return *ino;
        }
        let ino = state.next_ino;
        state.next_ino += 1;
        state.nodes.insert(
            ino,
            Node {
                path: Some(path.to_path_buf()),
            },
        );
        state.inos.insert(path.to_path_buf(), ino);
        ino
    }

    /// `path` no longer names its inode: forget the inode now, or when its last handle closes.
    fn unlinked(state: &mut State, path: &Path) {
        let Some(ino) = state.inos.remove(path) else {
            return;
        };
        if state.handles.values().any(|h| h.ino == ino) {
            if let Some(node) = state.nodes.get_mut(&ino) {
                node.path = None;
            }
        } else {
            Self::forget_node(state, ino);
        }
    }

    fn forget_node(state: &mut State, ino: u64) {
        state.nodes.remove(&ino);
        if let Some(overlay) = state.overlays.remove(&ino) {
            state.pending_bytes -= overlay.bytes();
        }
    }

    /// Writes every overlay to its backing file without syncing it (the memory bound is reached).
    fn write_back_all(&self, state: &mut State) -> io::Result<()> {
        let inos: Vec<u64> = state.overlays.keys().copied().collect();
        for ino in inos {
            let file = self.writable(state, ino)?;
            let overlay = state.overlays.remove(&ino).expect("listed");
            if let Err(e) = overlay.apply(&file) {
                state.overlays.insert(ino, overlay);
                return Err(e);
            }
            state.pending_bytes -= overlay.bytes();
            state.written_back_bytes += overlay.bytes();
        }
        Ok(())
    }

    fn overlay<'s>(state: &'s mut State, ino: u64, file: &File) -> io::Result<&'s mut Overlay> {
        Ok(match state.overlays.entry(ino) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Overlay::new(file.metadata()?.len())),
        })
    }

    /// Records a pending truncation of `ino` to `len`.
    fn truncate(&self, state: &mut State, ino: u64, len: u64) -> io::Result<()> {
        let file = self.writable(state, ino)?;
        if !state.overlays.contains_key(&ino) && file.metadata()?.len() == len {
            return Ok(());
        }
        let overlay = Self::overlay(state, ino, &file)?;
        let before = overlay.bytes();
        overlay.truncate(len);
        let after = overlay.bytes();
        state.pending_bytes = state.pending_bytes - before + after;
        Ok(())
    }

    fn open_handle(state: &mut State, ino: u64, file: File) -> FileHandle {
        let fh = state.next_fh;
        state.next_fh += 1;
        state.handles.insert(fh, Handle { ino, file });
        FileHandle(fh)
    }
}

/// The filesystem the session serves.
pub(crate) struct LazyFilesystem(pub(crate) Arc<Shared>);

/// Where `path` is after `from` was renamed to `to`, if it was at or under `from`.
fn moved_path(path: &Path, from: &Path, to: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(from).ok()?;
    // Joining an empty path would add a trailing slash, which names a directory.
    Some(if rest.as_os_str().is_empty() {
        to.to_path_buf()
    } else {
        to.join(rest)
    })
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

/// The open flag bits FUSE passes through, as rustix spells them.
fn has_flag(flags: i32, flag: rustix::fs::OFlags) -> bool {
    flags as u32 & flag.bits() != 0
}

impl Filesystem for LazyFilesystem {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let shared = &self.0;
        let mut state = shared.lock();
        let result = Shared::child(&state, parent, name).and_then(|child| {
            let meta = fs::symlink_metadata(shared.backing.join(&child)).map_err(errno)?;
            let ino = Shared::ino_for(&mut state, &child);
            Ok(Shared::attr(&state, ino, &meta))
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let shared = &self.0;
        let state = shared.lock();
        let meta = match fh.and_then(|fh| state.handles.get(&fh.0)) {
            Some(handle) => handle.file.metadata().map_err(errno),
            None => shared
                .path(&state, ino)
                .and_then(|path| fs::symlink_metadata(path).map_err(errno)),
        };
        match meta {
            Ok(meta) => reply.attr(&TTL, &Shared::attr(&state, ino.0, &meta)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let shared = &self.0;
        let mut state = shared.lock();
        let result = (|| -> Result<FileAttr, Errno> {
            let file = match fh.and_then(|fh| state.handles.get(&fh.0)) {
                Some(handle) => handle.file.try_clone().map_err(errno)?,
                None => File::open(shared.path(&state, ino)?).map_err(errno)?,
            };
            if let Some(mode) = mode {
                file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(errno)?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::fchown(&file, uid, gid).map_err(errno)?;
            }
            if atime.is_some() || mtime.is_some() {
                let resolve = |t: TimeOrNow| match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                let mut times = fs::FileTimes::new();
                if let Some(atime) = atime {
                    times = times.set_accessed(resolve(atime));
                }
                if let Some(mtime) = mtime {
                    times = times.set_modified(resolve(mtime));
                }
                file.set_times(times).map_err(errno)?;
            }
            if let Some(size) = size {
                if file.metadata().map_err(errno)?.is_dir() {
                    return Err(Errno::EISDIR);
                }
                shared.truncate(&mut state, ino.0, size).map_err(errno)?;
            }
            let meta = file.metadata().map_err(errno)?;
            Ok(Shared::attr(&state, ino.0, &meta))
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let shared = &self.0;
        let mut state = shared.lock();
        let result = Shared::child(&state, parent, name).and_then(|child| {
            let path = shared.backing.join(&child);
            fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(&path)
                .map_err(errno)?;
            let meta = fs::symlink_metadata(&path).map_err(errno)?;
            let ino = Shared::ino_for(&mut state, &child);
            Ok(Shared::attr(&state, ino, &meta))
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let shared = &self.0;
        let mut state = shared.lock();
        let result = Shared::child(&state, parent, name).and_then(|child| {
            fs::remove_file(shared.backing.join(&child)).map_err(errno)?;
            Shared::unlinked(&mut state, &child);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let shared = &self.0;
        let mut state = shared.lock();
        let result = Shared::child(&state, parent, name).and_then(|child| {
            fs::remove_dir(shared.backing.join(&child)).map_err(errno)?;
            Shared::unlinked(&mut state, &child);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let shared = &self.0;
        let mut state = shared.lock();
        let result = (|| -> Result<(), Errno> {
            let from = Shared::child(&state, parent, name)?;
            let to = Shared::child(&state, newparent, newname)?;
            if from == to {
                // rename(2) to itself does nothing (and must not forget the file's inode).
                return fs::symlink_metadata(shared.backing.join(&from))
                    .map(drop)
                    .map_err(errno);
            }
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                shared.backing.join(&from),
                rustix::fs::CWD,
                shared.backing.join(&to),
                rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
            )
            .map_err(|e| Errno::from_i32(e.raw_os_error()))?;
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            if !exchange {
                Shared::unlinked(&mut state, &to);
            }
            // Move every node at or under `from` to `to`, and the other way for an exchange.
            let mut moved = Vec::new();
            for (ino, node) in &state.nodes {
                let Some(path) = &node.path else { continue };
                if let Some(new) = moved_path(path, &from, &to) {
                    moved.push((*ino, path.clone(), new));
                } else if exchange {
                    if let Some(new) = moved_path(path, &to, &from) {
                        moved.push((*ino, path.clone(), new));
                    }
                }
            }
            for (_, old, _) in &moved {
                state.inos.remove(old);
            }
            for (ino, _, new) in moved {
                state.inos.insert(new.clone(), ino);
                state.nodes.get_mut(&ino).expect("listed").path = Some(new);
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let shared = &self.0;
        let mut state = shared.lock();
        let result = (|| -> Result<FileHandle, Errno> {
            let path = shared.path(&state, ino)?;
            // Handles are read-write whatever the caller asked, so that an fsync through any of
            // them can write the file's pending data; the kernel has checked the caller's access.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .or_else(|_| File::open(&path))
                .map_err(errno)?;
            if has_flag(flags.0, rustix::fs::OFlags::TRUNC) {
                shared.truncate(&mut state, ino.0, 0).map_err(errno)?;
            }
            Ok(Shared::open_handle(&mut state, ino.0, file))
        })();
        match result {
            Ok(fh) => reply.opened(fh, FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let shared = &self.0;
        let mut state = shared.lock();
        let result = (|| -> Result<(FileAttr, FileHandle), Errno> {
            let child = Shared::child(&state, parent, name)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .create_new(has_flag(flags, rustix::fs::OFlags::EXCL))
                .mode(mode & !umask & 0o7777)
                .open(shared.backing.join(&child))
                .map_err(errno)?;
            let ino = Shared::ino_for(&mut state, &child);
            if has_flag(flags, rustix::fs::OFlags::TRUNC) {
                shared.truncate(&mut state, ino, 0).map_err(errno)?;
            }
            let meta = file.metadata().map_err(errno)?;
            let attr = Shared::attr(&state, ino, &meta);
            Ok((attr, Shared::open_handle(&mut state, ino, file)))
        })();
        match result {
            Ok((attr, fh)) => {
                reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.0.lock();
        let result = match state.handles.get(&fh.0) {
            None => Err(Errno::EBADF),
            Some(handle) => match state.overlays.get(&ino.0) {
                Some(overlay) => overlay.read(&handle.file, offset, size.into()),
                None => handle
                    .file
                    .metadata()
                    .and_then(|m| Overlay::new(m.len()).read(&handle.file, offset, size.into())),
            }
            .map_err(errno),
        };
        match result {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let shared = &self.0;
        let mut state = shared.lock();
        let result = (|| -> io::Result<()> {
            let file = match state.handles.get(&fh.0) {
                Some(handle) => handle.file.try_clone()?,
                None => {
                    return Err(io::Error::from_raw_os_error(
                        rustix::io::Errno::BADF.raw_os_error(),
                    ))
                }
            };
            let len = data.len() as u64;
            // Pending bytes will need room on the backing file system: a write fails when it
            // could not be written back (counting every pending byte as new, which overwrites
            // are not), as it would on a file system that allocates at write time.
            let free = rustix::fs::statvfs(&shared.backing)
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                .map_err(io::Error::from)?;
            if state.pending_bytes + len > free {
                return Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::NOSPC.raw_os_error(),
                ));
            }
            if state.pending_bytes + len > shared.pending_bytes_max {
                shared.write_back_all(&mut state)?;
                if len > shared.pending_bytes_max {
                    // Too big to hold at all: straight to the backing file, unsynced.
                    use std::os::unix::fs::FileExt;
                    file.write_all_at(data, offset)?;
                    state.written_back_bytes += len;
                    return Ok(());
                }
            }
            let overlay = Shared::overlay(&mut state, ino.0, &file)?;
            let before = overlay.bytes();
            overlay.write(offset, data);
            let after = overlay.bytes();
            state.pending_bytes = state.pending_bytes - before + after;
            Ok(())
        })();
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close is not an fsync: pending data stays pending.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.0.lock();
        state.handles.remove(&fh.0);
        let unlinked = matches!(state.nodes.get(&ino.0), Some(Node { path: None }));
        if unlinked && !state.handles.values().any(|h| h.ino == ino.0) {
            Shared::forget_node(&mut state, ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let shared = &self.0;
        let mut state = shared.lock();
        let result = (|| -> io::Result<()> {
            let file = match state.handles.get(&fh.0) {
                Some(handle) => handle.file.try_clone()?,
                None => shared.writable(&state, ino.0)?,
            };
            if let Some(overlay) = state.overlays.get(&ino.0) {
                overlay.apply(&file)?;
                let overlay = state.overlays.remove(&ino.0).expect("present");
                state.pending_bytes -= overlay.bytes();
            }
            if datasync {
                file.sync_data()
            } else {
                file.sync_all()
            }
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let shared = &self.0;
        let state = shared.lock();
        let result = (|| -> Result<Vec<(u64, FileType, std::ffi::OsString)>, Errno> {
            let path = shared.path(&state, ino)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (INodeNo::ROOT.0, FileType::Directory, "..".into()),
            ];
            let mut children = Vec::new();
            for entry in fs::read_dir(path).map_err(errno)? {
                let entry = entry.map_err(errno)?;
                let kind = entry
                    .file_type()
                    .ok()
                    .and_then(FileType::from_std)
                    .unwrap_or(FileType::RegularFile);
                children.push((entry.ino(), kind, entry.file_name()));
            }
            children.sort_by(|a, b| a.2.cmp(&b.2));
            entries.extend(children);
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                for (index, (entry_ino, kind, name)) in
                    entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(entry_ino), index as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let shared = &self.0;
        let state = shared.lock();
        let result = shared.path(&state, ino).and_then(|path| {
            File::open(path)
                .and_then(|dir| dir.sync_all())
                .map_err(errno)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let pending = self.0.unsynced_bytes();
        match rustix::fs::statvfs(&self.0.backing) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree
                    .saturating_sub(pending.div_ceil(s.f_frsize.max(1))),
                s.f_bavail
                    .saturating_sub(pending.div_ceil(s.f_frsize.max(1))),
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_path_and_its_descendants_move_without_a_trailing_slash() {
        let (from, to) = (Path::new("data/a.tmp"), Path::new("data/a"));
        let moved = moved_path(Path::new("data/a.tmp"), from, to).unwrap();
        assert_eq!(moved.as_os_str(), "data/a");
        let moved = moved_path(Path::new("d/x/y"), Path::new("d/x"), Path::new("e")).unwrap();
        assert_eq!(moved.as_os_str(), "e/y");
        assert_eq!(
            moved_path(Path::new("data/ab"), Path::new("data/a"), to),
            None
        );
    }
}
