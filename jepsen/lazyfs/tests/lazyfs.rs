//! The lazy filesystem through a real FUSE mount: what an fsync keeps and a loss drops, sizes,
//! truncations, renames, the memory bound, and unmounting (also of a killed process's mount).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, is_mounted, wait_for, within, Mounted};
use oxbow_lazyfs::{LazyFs, Loss, Options};
use rustix::process::{kill_process, Pid, Signal};

fn content(i: usize) -> Vec<u8> {
    format!("file {i} ").repeat(100 + i).into_bytes()
}

fn read(path: PathBuf) -> Vec<u8> {
    within("read", move || fs::read(path)).expect("read")
}

fn len(path: PathBuf) -> u64 {
    within("stat", move || fs::metadata(path))
        .expect("stat")
        .len()
}

#[test]
fn synced_files_survive_a_loss_and_unsynced_ones_come_back_empty() {
    let m = Mounted::new();
    let paths: Vec<PathBuf> = (0..6).map(|i| m.path(&format!("f{i}"))).collect();
    let written = paths.clone();
    within("write", move || -> std::io::Result<()> {
        for (i, path) in written.iter().enumerate() {
            let mut file = File::create(path)?;
            file.write_all(&content(i))?;
            if i % 2 == 0 {
                file.sync_all()?;
            }
        }
        Ok(())
    })
    .expect("write");
    let unsynced: u64 = (1..6).step_by(2).map(|i| content(i).len() as u64).sum();
    assert_eq!(m.lazy().unsynced_bytes(), unsynced);
    for (i, path) in paths.iter().enumerate() {
        assert_eq!(read(path.clone()), content(i), "f{i} reads back");
        assert_eq!(len(path.clone()), content(i).len() as u64);
        // The backing directory holds what a power failure would keep.
        let durable = fs::read(m.backing(&format!("f{i}"))).expect("backing file exists");
        let expected = if i % 2 == 0 { content(i) } else { Vec::new() };
        assert_eq!(durable, expected, "f{i} in the backing directory");
    }

    let loss = m.lazy().lose_unsynced();
    assert_eq!(
        loss,
        Loss {
            files: 3,
            bytes: unsynced
        }
    );
    assert_eq!(m.lazy().unsynced_bytes(), 0);
    for (i, path) in paths.iter().enumerate() {
        let expected = if i % 2 == 0 { content(i) } else { Vec::new() };
        assert_eq!(read(path.clone()), expected, "f{i} after the loss");
        assert_eq!(len(path.clone()), expected.len() as u64);
    }
    assert_eq!(m.lazy().lose_unsynced(), Loss::default());
}

#[test]
fn a_synced_prefix_survives_and_the_appends_after_it_are_lost() {
    let m = Mounted::new();
    let path = m.path("log");
    let prefix = b"durable record\n".repeat(10);
    let tail = b"pending record\n".repeat(5);
    let (p, pre, t) = (path.clone(), prefix.clone(), tail.clone());
    within("append", move || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&p)?;
        file.write_all(&pre)?;
        file.sync_data()?;
        file.write_all(&t)?;
        Ok(())
    })
    .expect("append");
    let all = [prefix.clone(), tail.clone()].concat();
    assert_eq!(read(path.clone()), all);
    assert_eq!(len(path.clone()), all.len() as u64);
    assert_eq!(fs::read(m.backing("log")).unwrap(), prefix);
    assert_eq!(m.lazy().unsynced_bytes(), tail.len() as u64);

    assert_eq!(m.lazy().lose_unsynced().bytes, tail.len() as u64);
    assert_eq!(read(path.clone()), prefix);
    assert_eq!(len(path.clone()), prefix.len() as u64);

    // A new append goes where the file now ends.
    let p = path.clone();
    within("append again", move || -> std::io::Result<()> {
        let mut file = OpenOptions::new().append(true).open(&p)?;
        file.write_all(b"after\n")?;
        file.sync_all()
    })
    .expect("append again");
    assert_eq!(read(path), [prefix, b"after\n".to_vec()].concat());
    assert_eq!(m.lazy().unsynced_bytes(), 0);
}

#[test]
fn a_truncation_is_pending_until_an_fsync() {
    let m = Mounted::new();
    let path = m.path("t");
    let original: Vec<u8> = (0..100u8).collect();
    let (p, o) = (path.clone(), original.clone());
    within("write", move || -> std::io::Result<()> {
        let mut file = File::create(&p)?;
        file.write_all(&o)?;
        file.sync_all()?;
        file.set_len(10)
    })
    .expect("write and truncate");
    assert_eq!(len(path.clone()), 10);
    assert_eq!(read(path.clone()), &original[..10]);
    assert_eq!(fs::metadata(m.backing("t")).unwrap().len(), 100);

    // Growing again reads zeros where the cut bytes were.
    let p = path.clone();
    within("extend", move || {
        OpenOptions::new().write(true).open(&p)?.set_len(50)
    })
    .expect("extend");
    let mut expected = original[..10].to_vec();
    expected.resize(50, 0);
    assert_eq!(read(path.clone()), expected);

    // One file with pending truncations and no pending bytes (the extension is zeros, held
    // as the file's size, not as written bytes).
    assert_eq!(m.lazy().lose_unsynced(), Loss { files: 1, bytes: 0 });
    assert_eq!(read(path.clone()), original, "the truncation was lost");

    let p = path.clone();
    within("truncate durably", move || -> std::io::Result<()> {
        let file = OpenOptions::new().write(true).open(&p)?;
        file.set_len(10)?;
        file.sync_all()
    })
    .expect("truncate durably");
    assert_eq!(m.lazy().lose_unsynced(), Loss::default());
    assert_eq!(read(path), &original[..10]);
    assert_eq!(fs::metadata(m.backing("t")).unwrap().len(), 10);
}

#[test]
fn renames_and_unlinks_pass_through_and_pending_data_moves_with_its_file() {
    let m = Mounted::new();
    let root = m.mountpoint.path().to_path_buf();
    within("metadata operations", move || -> std::io::Result<()> {
        // The node's pattern for small files: write a temporary, fsync, rename, fsync the dir.
        let mut file = File::create(root.join("a.tmp"))?;
        file.write_all(b"a")?;
        file.sync_all()?;
        fs::rename(root.join("a.tmp"), root.join("a"))?;
        File::open(&root)?.sync_all()?;
        // Unsynced data follows a rename.
        File::create(root.join("b"))?.write_all(b"unsynced")?;
        fs::rename(root.join("b"), root.join("c"))?;
        fs::rename(root.join("c"), root.join("c"))?;
        // Directories.
        fs::create_dir(root.join("d"))?;
        let mut inner = File::create(root.join("d/x"))?;
        inner.write_all(b"x")?;
        inner.sync_all()?;
        fs::rename(root.join("d"), root.join("e"))?;
        // A file with pending data, unlinked.
        File::create(root.join("gone"))?.write_all(b"never synced")?;
        fs::remove_file(root.join("gone"))?;
        Ok(())
    })
    .expect("metadata operations");
    assert_eq!(read(m.path("a")), b"a");
    assert!(!m.backing("a.tmp").exists());
    assert_eq!(fs::read(m.backing("a")).unwrap(), b"a");
    assert_eq!(read(m.path("c")), b"unsynced");
    assert!(m.backing("c").exists() && !m.backing("b").exists());
    assert_eq!(read(m.path("e/x")), b"x");
    assert_eq!(fs::read(m.backing("e/x")).unwrap(), b"x");
    assert!(!m.backing("gone").exists());
    assert_eq!(m.lazy().unsynced_bytes(), 8, "only c's bytes are pending");

    let names = |dir: PathBuf| -> Vec<String> {
        let mut names: Vec<String> = within("list", move || fs::read_dir(dir))
            .expect("read_dir")
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(m.mountpoint.path().to_path_buf()), ["a", "c", "e"]);
    assert_eq!(
        names(m.mountpoint.path().to_path_buf()),
        names(m.backing.path().to_path_buf())
    );

    assert_eq!(m.lazy().lose_unsynced(), Loss { files: 1, bytes: 8 });
    assert_eq!(
        read(m.path("c")),
        b"",
        "c exists (metadata is durable) but its data was lost"
    );

    let root = m.mountpoint.path().to_path_buf();
    within("remove", move || -> std::io::Result<()> {
        fs::remove_file(root.join("e/x"))?;
        fs::remove_dir(root.join("e"))
    })
    .expect("remove");
    assert!(!m.backing("e").exists());
}

#[test]
fn past_the_memory_bound_pending_data_is_written_back_and_no_longer_losable() {
    let m = Mounted::with(Options {
        pending_bytes_max: 4096,
    });
    let (first, second) = (vec![1u8; 3000], vec![2u8; 3000]);
    let (root, f, s) = (
        m.mountpoint.path().to_path_buf(),
        first.clone(),
        second.clone(),
    );
    within("write", move || -> std::io::Result<()> {
        File::create(root.join("first"))?.write_all(&f)?;
        File::create(root.join("second"))?.write_all(&s)
    })
    .expect("write");
    assert_eq!(m.lazy().unsynced_bytes(), 3000);
    assert_eq!(m.lazy().written_back_bytes(), 3000);
    assert_eq!(fs::read(m.backing("first")).unwrap(), first);
    assert_eq!(m.lazy().lose_unsynced().bytes, 3000);
    assert_eq!(read(m.path("first")), first);
    assert_eq!(read(m.path("second")), b"");
}

#[test]
fn unmounting_leaves_no_mount_even_with_a_file_open() {
    let mut m = Mounted::new();
    let point = m.mountpoint.path().to_path_buf();
    assert!(is_mounted(&point));
    m.lazy.take().unwrap().unmount().expect("unmount");
    assert!(!is_mounted(&point));

    // Dropped with a file still open on it: the connection is aborted and the mount detached.
    let mut m = Mounted::new();
    let point = m.mountpoint.path().to_path_buf();
    let p = m.path("open");
    let mut open = within("open", move || {
        let mut file = File::create(&p)?;
        file.write_all(b"held")?;
        Ok::<_, std::io::Error>(file)
    })
    .expect("open");
    let lazy = m.lazy.take().unwrap();
    within("unmount while busy", move || drop(lazy));
    assert!(!is_mounted(&point));
    let mut buf = Vec::new();
    let read = within("read after unmount", move || open.read_to_end(&mut buf));
    assert!(read.is_err(), "the open file's connection is gone");
}

fn signal(child: &Child, signal: Signal) {
    let pid = Pid::from_raw(child.id() as i32).expect("a child's pid");
    kill_process(pid, signal).expect("kill");
}

#[test]
fn a_stale_mount_left_by_a_killed_process_is_cleaned_up() {
    let backing = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    let point = mountpoint.path().to_path_buf();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_oxbow-lazyfs"))
            .arg("mount")
            .arg("--backing")
            .arg(backing.path())
            .arg("--mountpoint")
            .arg(&point)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn oxbow-lazyfs")
    };

    // The binary loses unsynced data on SIGUSR1.
    let mut child = spawn();
    assert!(eventually(Duration::from_secs(10), || is_mounted(&point)));
    let p = point.join("f");
    within("write", move || -> std::io::Result<()> {
        let mut file = File::create(&p)?;
        file.write_all(b"synced")?;
        file.sync_all()?;
        file.write_all(b" and not")
    })
    .expect("write");
    assert_eq!(read(point.join("f")), b"synced and not");
    signal(&child, Signal::USR1);
    assert!(eventually(Duration::from_secs(10), || {
        read(point.join("f")) == b"synced"
    }));

    // SIGKILLed, it leaves its mount behind, dead (ENOTCONN)...
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(is_mounted(&point));
    let stale = within("stat a stale mount", {
        let point = point.clone();
        move || fs::metadata(point)
    });
    assert_eq!(stale.unwrap_err().raw_os_error(), Some(107), "ENOTCONN");
    // ...which the next mount detaches first.
    let lazy = LazyFs::mount(backing.path(), &point).expect("mount over a stale mount");
    assert_eq!(read(point.join("f")), b"synced");
    lazy.unmount().unwrap();
    assert!(!is_mounted(&point));

    // `oxbow-lazyfs clean` detaches one too, and SIGTERM unmounts.
    let mut child = spawn();
    assert!(eventually(Duration::from_secs(10), || is_mounted(&point)));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut clean = Command::new(env!("CARGO_BIN_EXE_oxbow-lazyfs"))
        .arg("clean")
        .arg("--mountpoint")
        .arg(&point)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(&mut clean, Duration::from_secs(10)));
    assert!(!is_mounted(&point));
    let mut child = spawn();
    assert!(eventually(Duration::from_secs(10), || is_mounted(&point)));
    signal(&child, Signal::TERM);
    assert!(wait_for(&mut child, Duration::from_secs(10)));
    assert!(!is_mounted(&point));
}

#[test]
fn a_mount_inside_its_backing_directory_is_refused() {
    let backing = tempfile::tempdir().unwrap();
    let inside = backing.path().join("mnt");
    let refused = within("mount", move || {
        LazyFs::mount(backing.path(), &inside).map(drop)
    });
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
}

/// A 1 MiB tmpfs, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.0.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn pending_bytes_take_space_and_a_write_that_cannot_fit_fails_with_enospc() {
    let disk = SmallDisk(tempfile::tempdir().unwrap());
    rustix::mount::mount(
        "oxbow-lazyfs-test",
        disk.0.path(),
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=1m",
    )
    .expect("mount a tmpfs");
    let mountpoint = tempfile::tempdir().unwrap();
    let lazy = LazyFs::mount(disk.0.path(), mountpoint.path()).expect("mount");
    let free = |path: PathBuf| {
        let s = within("statvfs", move || rustix::fs::statvfs(&path)).unwrap();
        s.f_bavail * s.f_frsize
    };
    let before = free(mountpoint.path().to_path_buf());
    let path = mountpoint.path().join("big");
    let written = within("write", move || -> std::io::Result<()> {
        let mut file = File::create(&path)?;
        file.write_all(&vec![7; 512 << 10])?;
        file.write_all(&vec![7; 768 << 10])
    });
    assert_eq!(written.unwrap_err().raw_os_error(), Some(28), "ENOSPC");
    assert_eq!(lazy.unsynced_bytes(), 512 << 10);
    let after = free(mountpoint.path().to_path_buf());
    // statfs takes the pending bytes' blocks (512 KiB, whole 4 KiB blocks) off what the
    // backing tmpfs has free, which the write did not touch.
    assert_eq!(
        before - after,
        512 << 10,
        "pending bytes count as used: {before} -> {after}"
    );
    lazy.unmount().unwrap();
}
