//! The `disk` nemesis's disks: each node's data lives on a file system of its own, a `tmpfs`
//! of a fixed size mounted for the run (root is needed, as for Jepsen's own nemeses; nothing
//! else of the machine is touched). Filling one writes a filler file beside the node's data
//! until only a little space is left, below the node's `disk_reserve_bytes`, so its leaders
//! refuse produce with KAFKA_STORAGE_ERROR (or none at all, so its writes meet ENOSPC);
//! draining removes the filler. Unmounting drops what it held.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The filler file's name, beside the node's data directory.
const FILLER: &str = "filler";

/// One node's small file system.
pub struct SmallDisk {
    mountpoint: PathBuf,
    mounted: bool,
}

impl SmallDisk {
    /// Mounts a `tmpfs` of `size_bytes` at `mountpoint` (created if missing; a tmpfs left
    /// there by a runner that was killed is detached first).
    pub fn mount(mountpoint: &Path, size_bytes: u64) -> Result<Self, String> {
        let fail = |e: io::Error| format!("cannot mount a tmpfs on {}: {e}", mountpoint.display());
        std::fs::create_dir_all(mountpoint).map_err(fail)?;
        let mountpoint = mountpoint.canonicalize().map_err(fail)?;
        while is_mounted(&mountpoint) {
            println!(
                "detaching a stale tmpfs at {} (its runner was killed)",
                mountpoint.display()
            );
            umount(&mountpoint).map_err(fail)?;
        }
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(&mountpoint)
            .status()
            .map_err(fail)?;
        if !status.success() {
            return Err(format!(
                "mount -t tmpfs on {} failed ({status}): the disk nemesis needs root",
                mountpoint.display()
            ));
        }
        Ok(Self {
            mountpoint,
            mounted: true,
        })
    }

    /// Where the node's files go.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Free bytes for an unprivileged writer.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.mountpoint)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Writes the filler until at most `leave_bytes` are free (or the disk is full). Returns
    /// the filler's size.
    pub fn fill(&self, leave_bytes: u64) -> io::Result<u64> {
        let mut filler = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.mountpoint.join(FILLER))?;
        let chunk = vec![0u8; 1 << 20];
        loop {
            let free = self.free_bytes()?;
            if free <= leave_bytes {
                break;
            }
            let len = usize::try_from((free - leave_bytes).min(chunk.len() as u64))
                .expect("at most a chunk");
            match filler.write_all(&chunk[..len]) {
                Ok(()) => {}
                // Full: the node took the rest meanwhile.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                    break
                }
                Err(e) => return Err(e),
            }
        }
        Ok(filler.metadata()?.len())
    }

    /// Removes the filler.
    pub fn drain(&self) -> io::Result<()> {
        match std::fs::remove_file(self.mountpoint.join(FILLER)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Unmounts (the node must be stopped, and a lazyfs mount over it unmounted); what it held
    /// is gone.
    pub fn unmount(mut self) -> io::Result<()> {
        self.mounted = false;
        umount(&self.mountpoint)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            self.mounted = false;
            let _ = umount(&self.mountpoint);
        }
    }
}

/// `umount --lazy`.
fn umount(mountpoint: &Path) -> io::Result<()> {
    let status = Command::new("umount")
        .arg("--lazy")
        .arg(mountpoint)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "umount {} failed ({status})",
            mountpoint.display()
        )))
    }
}

/// Whether a tmpfs is mounted at `mountpoint` (absolute), from `/proc/self/mounts`.
pub fn is_mounted(mountpoint: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let wanted = mountpoint.display().to_string();
    text.lines().any(|line| {
        let mut fields = line.split(' ');
        let (_, point, fstype) = (fields.next(), fields.next(), fields.next());
        point == Some(wanted.as_str()) && fstype == Some("tmpfs")
    })
}

#[cfg(test)]
mod tests {
    use super::SmallDisk;

    /// Filling leaves the asked space free (a write beyond it fails), and draining gives it
    /// back; unmounting leaves no mount behind.
    #[test]
    fn a_small_disk_fills_to_what_is_left_and_drains() {
        let dir = std::env::temp_dir().join(format!("oxbow-jepsen-disk-{}", std::process::id()));
        let mountpoint = dir.join("disk");
        let disk = SmallDisk::mount(&mountpoint, 8 << 20).expect("mount (as root)");
        let before = disk.free_bytes().expect("free");
        assert!(before > 7 << 20, "{before}");
        let filler = disk.fill(1 << 20).expect("fill");
        let free = disk.free_bytes().expect("free");
        assert!(free <= 1 << 20, "{free}");
        assert!(filler >= before - (1 << 20) - (64 << 10), "{filler}");
        let too_big = std::fs::write(disk.path().join("data"), vec![1u8; 2 << 20]);
        assert_eq!(too_big.err().and_then(|e| e.raw_os_error()), Some(28));
        disk.drain().expect("drain");
        std::fs::write(disk.path().join("data"), vec![1u8; 2 << 20]).expect("room again");
        let point = disk.path().to_path_buf();
        disk.unmount().expect("unmount");
        assert!(!super::is_mounted(&point));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
