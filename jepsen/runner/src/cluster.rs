//! A local cluster of real `oxbow node` processes on 127.0.0.1: their configuration files,
//! free ports (and the proxy's links, for partitions), data directories (on lazyfs mounts, for
//! power failures), starting, SIGKILL and restart, power loss, SIGSTOP and SIGCONT, and noticing
//! a node that exited on its own. Every process it started is killed when it is dropped, and then
//! every mount it made is unmounted.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oxbow_lazyfs::{LazyFs, Loss};

use crate::faketime::FakeClock;
use crate::proxy::{self, Grudge, Link, CLIENT};
use crate::small_disk::SmallDisk;

/// The peer secret of the local cluster (only 127.0.0.1 hears it).
const PEER_SECRET: &str = "oxbow-jepsen local cluster";

/// A listener on a port free now, below Linux's ephemeral range (32768 and up), so that no
/// outgoing connection takes it as its source port before the node binds it. Each runner
/// process walks its own stretch of 20000-31999.
fn bind_free(next: &mut u32) -> TcpListener {
    let start = (std::process::id() % 60) * 200;
    loop {
        let offset = *next;
        *next += 1;
        let port = (20_000 + (start + offset) % 12_000) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener;
        }
    }
}

/// A port free now, for a node to bind.
fn free_port(next: &mut u32) -> u16 {
    bind_free(next).local_addr().map_or(0, |a| a.port())
}

/// A listener of the proxy, bound at once (so no node takes its port), and its port.
fn proxy_listener(next: &mut u32) -> (TcpListener, u16) {
    let listener = bind_free(next);
    let port = listener.local_addr().map_or(0, |a| a.port());
    (listener, port)
}

/// One node's process state.
enum State {
    Running(Child),
    Paused(Child),
    Killed,
}

/// How the nodes run, beyond their addresses.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Each node's data directory is a lazyfs mount (over `node-N.backing/`), so that a power
    /// failure can lose what the node did not fsync.
    pub power: bool,
    /// `OXBOW_PLANTED_BUGS` for every node (`NAME,...`).
    pub planted_bugs: Option<String>,
    /// Top-level lines added to every node's configuration file.
    pub extra_config: Vec<String>,
    /// Each node runs under libfaketime on a wall clock of its own (`node-N.faketime`), which
    /// the clock nemesis moves.
    pub clock: bool,
    /// Each node's data lives on a tmpfs of its own ([`DISK_BYTES`], mounted on
    /// `node-N.disk/`), with a disk reserve of [`DISK_RESERVE_BYTES`], which the disk nemesis
    /// fills.
    pub disk: bool,
}

/// The size of each node's tmpfs with [`Setup::disk`].
pub const DISK_BYTES: u64 = 256 << 20;
/// Each node's `[log] disk_reserve_bytes` with [`Setup::disk`].
pub const DISK_RESERVE_BYTES: u64 = 16 << 20;

impl Setup {
    /// Node `i`'s data directory (0-based), in the cluster's directory `dir`: `node-N/`, or
    /// on its tmpfs `node-N.disk/data/` (unless a lazyfs mount on `node-N/` keeps its data
    /// there).
    fn data_dir(&self, dir: &Path, i: usize) -> PathBuf {
        if self.disk && !self.power {
            dir.join(format!("node-{}.disk", i + 1)).join("data")
        } else {
            dir.join(format!("node-{}", i + 1))
        }
    }

    /// Node `i`'s lazyfs backing directory: `node-N.backing/`, or on its tmpfs
    /// `node-N.disk/backing/`.
    fn backing_dir(&self, dir: &Path, i: usize) -> PathBuf {
        if self.disk {
            dir.join(format!("node-{}.disk", i + 1)).join("backing")
        } else {
            dir.join(format!("node-{}.backing", i + 1))
        }
    }
}

/// A cluster of `oxbow node` processes.
pub struct LocalCluster {
    binary: PathBuf,
    dir: PathBuf,
    /// Each node's Kafka port.
    kafka: Vec<u16>,
    /// Where clients reach each node (its Kafka port, or the proxy's).
    bootstrap: Vec<u16>,
    nodes: Vec<State>,
    /// What each node's start was (for its log): 1 for the first, then one more per restart.
    starts: Vec<u32>,
    setup: Setup,
    /// Each node's lazyfs mount (with `setup.power`).
    mounts: Vec<LazyFs>,
    /// Each node's wall clock (with `setup.clock`).
    clocks: Vec<FakeClock>,
    /// Each node's tmpfs (with `setup.disk`), under its lazyfs mount if any.
    disks: Vec<SmallDisk>,
}

/// A node that exited without being killed.
#[derive(Debug, Clone)]
pub struct Exit {
    /// The node (1-based).
    pub node: usize,
    /// Its exit status.
    pub status: String,
    /// Its log file.
    pub log: PathBuf,
}

impl LocalCluster {
    /// Writes the configuration of `nodes` nodes under `dir` and starts them. With `grudge`,
    /// every link between nodes and every client link goes through the runner's proxy
    /// (`proxy.rs`), which the grudge cuts.
    pub fn start(
        binary: &Path,
        dir: &Path,
        nodes: usize,
        grudge: Option<&Grudge>,
        setup: Setup,
    ) -> Result<Self, String> {
        if !binary.is_file() {
            return Err(format!(
                "the oxbow binary {} does not exist: build it with `cargo build --release -p oxbow-node --bin oxbow` and pass --binary target/release/oxbow",
                binary.display()
            ));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut next = 0;
        let kafka: Vec<u16> = (0..nodes).map(|_| free_port(&mut next)).collect();
        let peer: Vec<u16> = (0..nodes).map(|_| free_port(&mut next)).collect();
        // Where node i reaches node j's peer port, and where clients reach node j.
        let mut peer_via = vec![peer.clone(); nodes];
        let mut client_via = kafka.clone();
        let mut links = Vec::new();
        if grudge.is_some() {
            for (i, via) in peer_via.iter_mut().enumerate() {
                for (j, port) in via.iter_mut().enumerate().filter(|(j, _)| *j != i) {
                    let (listener, proxy) = proxy_listener(&mut next);
                    *port = proxy;
                    links.push(Link {
                        listener,
                        from: i,
                        to: j,
                        upstream: peer[j],
                    });
                }
            }
            for (j, port) in client_via.iter_mut().enumerate() {
                let (listener, proxy) = proxy_listener(&mut next);
                *port = proxy;
                links.push(Link {
                    listener,
                    from: CLIENT,
                    to: j,
                    upstream: kafka[j],
                });
            }
        }
        for i in 0..nodes {
            let mut text = format!(
                "node_id = {}\ndata_dir = {:?}\nkafka_listen = \"127.0.0.1:{}\"\nkafka_advertised = \"127.0.0.1:{}\"\npeer_listen = \"127.0.0.1:{}\"\npeer_secret = \"{PEER_SECRET}\"\n",
                i + 1,
                setup.data_dir(dir, i),
                kafka[i],
                client_via[i],
                peer[i],
            );
            for line in &setup.extra_config {
                let _ = writeln!(text, "{line}");
            }
            if setup.disk {
                let _ = write!(text, "[log]\ndisk_reserve_bytes = {DISK_RESERVE_BYTES}\n");
            }
            for j in (0..nodes).filter(|j| *j != i) {
                let _ = write!(
                    text,
                    "[[peers]]\nid = {}\npeer_address = \"127.0.0.1:{}\"\nkafka_address = \"127.0.0.1:{}\"\n",
                    j + 1,
                    peer_via[i][j],
                    client_via[j]
                );
            }
            let path = dir.join(format!("node-{}.toml", i + 1));
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        if let Some(grudge) = grudge {
            proxy::start(links, grudge)?;
        }
        let mut cluster = Self {
            binary: binary
                .canonicalize()
                .unwrap_or_else(|_| binary.to_path_buf()),
            dir: dir.to_path_buf(),
            kafka,
            bootstrap: client_via,
            nodes: (0..nodes).map(|_| State::Killed).collect(),
            starts: vec![0; nodes],
            setup,
            mounts: Vec::new(),
            clocks: Vec::new(),
            disks: Vec::new(),
        };
        if cluster.setup.disk {
            for i in 0..nodes {
                let disk = SmallDisk::mount(&dir.join(format!("node-{}.disk", i + 1)), DISK_BYTES)?;
                cluster.disks.push(disk);
            }
        }
        if cluster.setup.clock {
            for i in 0..nodes {
                let clock = FakeClock::new(&dir.join(format!("node-{}.faketime", i + 1)))?;
                cluster.clocks.push(clock);
            }
        }
        if cluster.setup.power {
            detach_stale_mounts();
            for i in 0..nodes {
                let backing = cluster.setup.backing_dir(dir, i);
                let mountpoint = dir.join(format!("node-{}", i + 1));
                std::fs::create_dir_all(&backing)
                    .map_err(|e| format!("cannot create {}: {e}", backing.display()))?;
                let mount = LazyFs::mount(&backing, &mountpoint).map_err(|e| {
                    format!(
                        "cannot mount lazyfs on {} (the power nemesis needs root and /dev/fuse): {e}",
                        mountpoint.display()
                    )
                })?;
                cluster.mounts.push(mount);
            }
        }
        for i in 0..nodes {
            cluster.start_node(i)?;
        }
        cluster.wait_listening(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// The Kafka addresses, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.bootstrap
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Nodes in the cluster.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node-{}.log", i + 1))
    }

    /// Starts node `i` (0-based), which must not be running.
    pub fn start_node(&mut self, i: usize) -> Result<(), String> {
        assert!(
            matches!(self.nodes[i], State::Killed),
            "node {i} is running"
        );
        let log_path = self.log_path(i);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        self.starts[i] += 1;
        let _ = std::io::Write::write_all(
            &mut log,
            format!(
                "=== oxbow-jepsen: start {} of node {}\n",
                self.starts[i],
                i + 1
            )
            .as_bytes(),
        );
        let mut command = Command::new(&self.binary);
        if let Some(bugs) = &self.setup.planted_bugs {
            command.env(PLANTED_BUGS_ENV, bugs);
        }
        if let Some(clock) = self.clocks.get(i) {
            command.envs(clock.env());
        }
        let child = command
            .args(["--log-level", "info", "node", "--config"])
            .arg(self.dir.join(format!("node-{}.toml", i + 1)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.nodes[i] = State::Running(child);
        Ok(())
    }

    /// Waits until every node accepts Kafka connections (or one exits).
    fn wait_listening(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.nodes.len() {
            loop {
                if let Some(exit) = self.exits().into_iter().next() {
                    return Err(self.start_failure(&exit));
                }
                if std::net::TcpStream::connect(("127.0.0.1", self.kafka[i])).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "node {} does not listen on 127.0.0.1:{} after {timeout:?}; its log is {}",
                        i + 1,
                        self.kafka[i],
                        self.log_path(i).display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Why node `exit` did not start: its status and the last line of its log, and when it
    /// refused planted bugs, the build that takes them.
    fn start_failure(&self, exit: &Exit) -> String {
        let log = std::fs::read_to_string(&exit.log).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let mut message = format!(
            "node {} exited at start ({}); its log is {}, which ends with: {last}",
            exit.node,
            exit.status,
            exit.log.display()
        );
        let refused = log.contains("--features planted-bugs");
        if let (Some(bugs), true) = (&self.setup.planted_bugs, refused) {
            let _ = write!(
                message,
                "\n--planted-bugs {bugs} needs an oxbow binary built with them: `cargo build --release -p oxbow-node --features planted-bugs`, then --binary target/release/oxbow ({} is a normal build)",
                self.binary.display()
            );
        }
        message
    }

    /// Cuts node `i`'s power: SIGKILLs it and drops every write its data directory holds
    /// unsynced. `None` without lazyfs mounts.
    pub fn power_off(&mut self, i: usize) -> Option<Loss> {
        self.kill(i);
        self.mounts.get(i).map(LazyFs::lose_unsynced)
    }

    /// Sets node `i`'s wall clock `offset_ms` from real time (no-op without clocks).
    pub fn set_clock(&self, i: usize, offset_ms: i64) -> Result<(), String> {
        match self.clocks.get(i) {
            Some(clock) => clock.set_offset_ms(offset_ms),
            None => Ok(()),
        }
    }

    /// Fills node `i`'s disk until at most `leave_bytes` are free; returns the filler's size
    /// (`None` without disks).
    pub fn fill_disk(&self, i: usize, leave_bytes: u64) -> Result<Option<u64>, String> {
        match self.disks.get(i) {
            Some(disk) => disk
                .fill(leave_bytes)
                .map(Some)
                .map_err(|e| format!("cannot fill the disk at {}: {e}", disk.path().display())),
            None => Ok(None),
        }
    }

    /// Removes node `i`'s filler (no-op without disks).
    pub fn drain_disk(&self, i: usize) -> Result<(), String> {
        match self.disks.get(i) {
            Some(disk) => disk
                .drain()
                .map_err(|e| format!("cannot drain the disk at {}: {e}", disk.path().display())),
            None => Ok(()),
        }
    }

    /// Free bytes on node `i`'s disk (`None` without disks).
    pub fn disk_free(&self, i: usize) -> Option<u64> {
        self.disks.get(i).and_then(|disk| disk.free_bytes().ok())
    }

    /// SIGKILLs node `i` if it runs (or is paused) and reaps it.
    pub fn kill(&mut self, i: usize) {
        match std::mem::replace(&mut self.nodes[i], State::Killed) {
            State::Running(mut child) | State::Paused(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            State::Killed => {}
        }
    }

    /// SIGSTOPs node `i` if it runs.
    pub fn pause(&mut self, i: usize) {
        if let State::Running(child) = std::mem::replace(&mut self.nodes[i], State::Killed) {
            signal(&child, "STOP");
            self.nodes[i] = State::Paused(child);
        }
    }

    /// SIGCONTs node `i` if it is paused.
    pub fn resume(&mut self, i: usize) {
        match std::mem::replace(&mut self.nodes[i], State::Killed) {
            State::Paused(child) => {
                signal(&child, "CONT");
                self.nodes[i] = State::Running(child);
            }
            other => self.nodes[i] = other,
        }
    }

    /// Resumes every paused node, starts every killed one, sets every clock right and empties
    /// every filled disk.
    pub fn heal(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.set_clock(i, 0)?;
            self.drain_disk(i)?;
            self.resume(i);
            if matches!(self.nodes[i], State::Killed) {
                self.start_node(i)?;
            }
        }
        Ok(())
    }

    /// Nodes that exited without being killed since the last call (each is then counted as
    /// killed, so `heal` starts it again).
    pub fn exits(&mut self) -> Vec<Exit> {
        let mut exits = Vec::new();
        for i in 0..self.nodes.len() {
            let State::Running(child) = &mut self.nodes[i] else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes[i] = State::Killed;
                exits.push(Exit {
                    node: i + 1,
                    status: status.to_string(),
                    log: self.log_path(i),
                });
            }
        }
        exits
    }
}

/// Sends `SIGNAL` (`STOP`, `CONT`) to `child` with kill(1): the crate forbids unsafe code,
/// so no libc::kill.
fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status();
}

/// The environment variable that plants bugs in a node built with them.
const PLANTED_BUGS_ENV: &str = "OXBOW_PLANTED_BUGS";

/// Detaches lazyfs mounts whose runner died (killed before it could unmount them: every call
/// on them fails with ENOTCONN), wherever they are; live mounts of other runs stay.
fn detach_stale_mounts() {
    for mount in oxbow_lazyfs::mounts_of_ours().unwrap_or_default() {
        if let Ok(true) = oxbow_lazyfs::unmount_stale(&mount) {
            println!(
                "detached a stale lazyfs mount at {} (its runner was killed)",
                mount.display()
            );
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for mount in self.mounts.drain(..) {
            let point = mount.mountpoint().to_path_buf();
            if let Err(e) = mount.unmount() {
                eprintln!(
                    "cannot unmount lazyfs at {}: {e}; `oxbow-lazyfs clean --mountpoint {}` detaches it",
                    point.display(),
                    point.display()
                );
            }
        }
        for disk in self.disks.drain(..) {
            let point = disk.path().to_path_buf();
            if let Err(e) = disk.unmount() {
                eprintln!(
                    "cannot unmount the tmpfs at {}: {e}; `umount --lazy {}` detaches it",
                    point.display(),
                    point.display()
                );
            }
        }
    }
}
