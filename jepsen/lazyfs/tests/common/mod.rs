//! Helpers for the lazy filesystem's tests: a mount on temporary directories, and deadlines so
//! that a FUSE failure fails a test instead of hanging it.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oxbow_lazyfs::{LazyFs, Options};

/// How long any one step through the mount may take.
pub const STEP: Duration = Duration::from_secs(30);

/// A lazy filesystem mounted on a temporary directory over another. The mount goes first, so
/// that it is unmounted before the directories are removed.
pub struct Mounted {
    pub lazy: Option<LazyFs>,
    pub backing: tempfile::TempDir,
    pub mountpoint: tempfile::TempDir,
}

impl Mounted {
    pub fn new() -> Self {
        Self::with(Options::default())
    }

    pub fn with(options: Options) -> Self {
        let backing = tempfile::tempdir().expect("backing dir");
        let mountpoint = tempfile::tempdir().expect("mountpoint");
        let (b, m) = (
            backing.path().to_path_buf(),
            mountpoint.path().to_path_buf(),
        );
        let lazy = within("mount", move || LazyFs::mount_with(&b, &m, options)).expect("mount");
        Self {
            lazy: Some(lazy),
            backing,
            mountpoint,
        }
    }

    pub fn lazy(&self) -> &LazyFs {
        self.lazy.as_ref().expect("mounted")
    }

    /// A path through the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.mountpoint.path().join(name)
    }

    /// The same path in the backing directory (what survives a power failure, once lost).
    pub fn backing(&self, name: &str) -> PathBuf {
        self.backing.path().join(name)
    }
}

/// Runs `f` on a thread of its own and fails if it takes longer than [`STEP`].
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    match receive.recv_timeout(STEP) {
        Ok(value) => value,
        Err(_) => panic!("{what} took longer than {STEP:?}: is FUSE stuck?"),
    }
}

/// Whether anything is mounted on `path`, according to /proc/mounts.
pub fn is_mounted(path: &Path) -> bool {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .any(|point| Path::new(point) == path)
}

/// Waits for `child` to exit, killing it after `timeout`; returns whether it exited by itself
/// with success.
pub fn wait_for(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}
