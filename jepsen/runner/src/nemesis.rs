//! The nemesis: faults on the local cluster on a seeded schedule (a gap, a fault on one node or
//! now and then on a majority: kill, pause, power failure; a partition of the links through the
//! proxy; a clock jump or strobe, or a full disk, on one node; its length, its healing), each
//! recorded with its times; and at the end, healing everything. It also notices nodes that exit
//! on their own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::cli::NemesisKind;
use crate::cluster::{LocalCluster, DISK_RESERVE_BYTES};
use crate::proxy::Grudge;
use crate::rng::Stream;
use crate::workload::Clock;

/// One fault, or one exit of a node on its own.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// `kill`, `pause`, `partition`, `power`, `clock`, `disk`, or `exit` (a node exited
    /// without being killed: a crash).
    pub kind: String,
    /// The nodes (1-based).
    pub nodes: Vec<usize>,
    /// When it began (ms since the run started).
    pub start_ms: u64,
    /// When it was healed (`None`: not yet).
    pub end_ms: Option<u64>,
    /// What else there is to say (a partition's sides, what a power failure lost, a clock's
    /// jump or strobe, a disk's free space, an exit's status and log file).
    pub detail: String,
}

/// How often a strobing clock flips.
const STROBE_MS: u64 = 100;

/// The events of a run, shared with the progress line and the report.
pub type Events = Arc<Mutex<Vec<Event>>>;

/// What the nemesis needs.
pub struct Nemesis {
    /// The fault kind.
    pub kind: NemesisKind,
    /// The cluster it hits.
    pub cluster: Arc<Mutex<LocalCluster>>,
    /// The run's seed.
    pub seed: u64,
    /// Seconds between faults.
    pub gap: (u64, u64),
    /// Seconds a fault lasts.
    pub length: (u64, u64),
    /// Where events go.
    pub events: Events,
    /// The run's clock.
    pub clock: Clock,
    /// Set when the faults must stop.
    pub stop: Arc<AtomicBool>,
    /// The proxy's grudge, when the cluster's links go through it.
    pub grudge: Option<Grudge>,
}

impl Nemesis {
    /// Runs faults until `stop`, then heals every node. Errors are failures to start a node.
    pub async fn run(self) -> Result<(), String> {
        let mut rng = Stream::new(self.seed, "nemesis");
        let n = self.cluster.lock().expect("not poisoned").len();
        loop {
            if self.wait(rng.between(self.gap.0, self.gap.1) * 1000).await {
                break;
            }
            let kinds: &[&str] = match self.kind {
                NemesisKind::None => continue,
                NemesisKind::Kill => &["kill"],
                NemesisKind::Pause => &["pause"],
                NemesisKind::Partition => &["partition"],
                NemesisKind::Power => &["power"],
                NemesisKind::Clock => &["clock"],
                NemesisKind::Disk => &["disk"],
                NemesisKind::All => &["kill", "pause", "partition", "power", "clock", "disk"],
            };
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            let mut order: Vec<usize> = (0..n).collect();
            for i in 0..n {
                let j = i + rng.below((n - i) as u64) as usize;
                order.swap(i, j);
            }
            let (nodes, detail) = if kind == "partition" {
                let grudge = self
                    .grudge
                    .as_ref()
                    .expect("partitions go through the proxy");
                let (cuts, detail) = partition(&order, &mut rng);
                grudge.cut(cuts);
                let mut nodes: Vec<usize> = order.clone();
                nodes.sort_unstable();
                (nodes, detail)
            } else {
                // One node most of the time; a majority one time in four (clocks and disks:
                // one node). Power fails on every node one time in four too, as when a whole
                // rack goes dark: then what no node synced is gone for good.
                let count = match kind {
                    "clock" | "disk" => 1,
                    "power" if rng.chance(1, 4) => n,
                    _ if n >= 3 && rng.chance(1, 4) => n / 2 + 1,
                    _ => 1,
                };
                let mut nodes: Vec<usize> = order[..count].to_vec();
                nodes.sort_unstable();
                (nodes, String::new())
            };
            let mut detail = detail;
            // A strobing clock: its node and the offset it flips to and from.
            let mut strobe = None;
            let index = {
                let mut cluster = self.cluster.lock().expect("not poisoned");
                let mut losses = Vec::new();
                for &i in &nodes {
                    match kind {
                        "kill" => cluster.kill(i),
                        "pause" => cluster.pause(i),
                        "clock" => {
                            let offset_ms = rng.between(5, 300) as i64
                                * 1000
                                * if rng.chance(1, 2) { -1 } else { 1 };
                            cluster.set_clock(i, offset_ms)?;
                            detail = if rng.chance(1, 3) {
                                strobe = Some((i, offset_ms));
                                format!(
                                    "node {}'s wall clock strobes between 0 and {:+} s every {STROBE_MS} ms",
                                    i + 1,
                                    offset_ms / 1000
                                )
                            } else {
                                format!(
                                    "node {}'s wall clock jumped {:+} s",
                                    i + 1,
                                    offset_ms / 1000
                                )
                            };
                        }
                        "disk" => {
                            // Below the reserve most of the time; one time in four, full.
                            let leave = if rng.chance(1, 4) {
                                0
                            } else {
                                DISK_RESERVE_BYTES / 2
                            };
                            let filler = cluster.fill_disk(i, leave)?.unwrap_or(0);
                            detail = format!(
                                "node {}'s disk filled: {} KiB free (reserve {} KiB), filler {} MiB",
                                i + 1,
                                cluster.disk_free(i).unwrap_or(0) >> 10,
                                DISK_RESERVE_BYTES >> 10,
                                filler >> 20
                            );
                        }
                        "power" => {
                            let loss = cluster.power_off(i).unwrap_or_default();
                            losses.push(format!(
                                "node {} lost {} unsynced bytes in {} files",
                                i + 1,
                                loss.bytes,
                                loss.files
                            ));
                        }
                        _ => {}
                    }
                }
                if !losses.is_empty() {
                    detail = losses.join("; ");
                }
                let mut events = self.events.lock().expect("not poisoned");
                events.push(Event {
                    kind: kind.into(),
                    nodes: nodes.iter().map(|i| i + 1).collect(),
                    start_ms: self.clock.ms(),
                    end_ms: None,
                    detail,
                });
                events.len() - 1
            };
            let length_ms = rng.between(self.length.0, self.length.1) * 1000;
            let stopped = match strobe {
                Some((node, offset_ms)) => self.strobe(length_ms, node, offset_ms).await?,
                None => self.wait(length_ms).await,
            };
            {
                let mut cluster = self.cluster.lock().expect("not poisoned");
                for &i in &nodes {
                    match kind {
                        "kill" | "power" => cluster.start_node(i)?,
                        "pause" => cluster.resume(i),
                        "clock" => cluster.set_clock(i, 0)?,
                        "disk" => cluster.drain_disk(i)?,
                        _ => {}
                    }
                }
                if let Some(grudge) = &self.grudge {
                    grudge.heal();
                }
                self.events.lock().expect("not poisoned")[index].end_ms = Some(self.clock.ms());
            }
            if stopped {
                break;
            }
        }
        self.heal()
    }

    /// Waits `ms`, noting nodes that exit on their own; true when told to stop.
    async fn wait(&self, ms: u64) -> bool {
        let until = self.clock.ms() + ms;
        while self.clock.ms() < until {
            if self.stop.load(Ordering::SeqCst) {
                return true;
            }
            self.note_exits();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits `ms` while node `node`'s wall clock flips between `offset_ms` and real time every
    /// [`STROBE_MS`]; true when told to stop.
    async fn strobe(&self, ms: u64, node: usize, offset_ms: i64) -> Result<bool, String> {
        let until = self.clock.ms() + ms;
        let mut shifted = false;
        while self.clock.ms() < until {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(true);
            }
            self.note_exits();
            shifted = !shifted;
            let offset = if shifted { offset_ms } else { 0 };
            self.cluster
                .lock()
                .expect("not poisoned")
                .set_clock(node, offset)?;
            tokio::time::sleep(Duration::from_millis(STROBE_MS)).await;
        }
        Ok(self.stop.load(Ordering::SeqCst))
    }

    /// Records each node that exited on its own (a crash: a finding) and starts it again.
    fn note_exits(&self) {
        let mut cluster = self.cluster.lock().expect("not poisoned");
        for exit in cluster.exits() {
            let now = self.clock.ms();
            println!(
                "[{:>6.1}s] node {} exited on its own ({}): see {}",
                now as f64 / 1000.0,
                exit.node,
                exit.status,
                exit.log.display()
            );
            self.events.lock().expect("not poisoned").push(Event {
                kind: "exit".into(),
                nodes: vec![exit.node],
                start_ms: now,
                end_ms: Some(now),
                detail: format!("{}; log {}", exit.status, exit.log.display()),
            });
            if let Err(e) = cluster.start_node(exit.node - 1) {
                println!("cannot start node {} again: {e}", exit.node);
            }
        }
    }

    /// Every node running again: the healing phase begins.
    fn heal(&self) -> Result<(), String> {
        self.note_exits();
        if let Some(grudge) = &self.grudge {
            grudge.heal();
        }
        let mut cluster = self.cluster.lock().expect("not poisoned");
        cluster.heal()?;
        let now = self.clock.ms();
        for event in self.events.lock().expect("not poisoned").iter_mut() {
            if event.end_ms.is_none() {
                event.end_ms = Some(now);
            }
        }
        Ok(())
    }
}

/// A partition of the nodes in `order` (a random permutation): the directions it cuts, and
/// what it is. Nodes are 0-based here, 1-based in the description.
fn partition(order: &[usize], rng: &mut Stream) -> (Vec<(usize, usize)>, String) {
    let n = order.len();
    let name = |nodes: &[usize]| {
        let mut nodes: Vec<usize> = nodes.iter().map(|i| i + 1).collect();
        nodes.sort_unstable();
        format!("{nodes:?}")
    };
    let between = |a: &[usize], b: &[usize]| -> Vec<(usize, usize)> {
        let mut cuts = Vec::new();
        for &x in a {
            for &y in b {
                cuts.push((x, y));
                cuts.push((y, x));
            }
        }
        cuts
    };
    match rng.below(3) {
        // A minority (one node, or up to half less one) from the rest.
        0 => {
            let size = 1 + rng.below(((n - 1) / 2).max(1) as u64) as usize;
            let (minority, majority) = order.split_at(size.min(n - 1));
            (
                between(minority, majority),
                format!("isolated {} from {}", name(minority), name(majority)),
            )
        }
        // A bridge: two sides that do not reach each other, and one node that reaches both.
        1 if n >= 3 => {
            let bridge = order[0];
            let rest = &order[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            (
                between(a, b),
                format!("bridge {}: {} | {}", bridge + 1, name(a), name(b)),
            )
        }
        // One way: a node's bytes do not reach the others, or theirs do not reach it.
        _ => {
            let node = order[0];
            let others = &order[1..];
            if rng.chance(1, 2) {
                (
                    others.iter().map(|&o| (node, o)).collect(),
                    format!("one way: {} does not reach {}", node + 1, name(others)),
                )
            } else {
                (
                    others.iter().map(|&o| (o, node)).collect(),
                    format!("one way: {} do not reach {}", name(others), node + 1),
                )
            }
        }
    }
}

/// The faults in force now, for the progress line.
pub fn current(events: &Events) -> String {
    let events = events.lock().expect("not poisoned");
    let now: Vec<String> = events
        .iter()
        .filter(|e| e.end_ms.is_none() && e.kind != "exit")
        .map(|e| match e.kind.as_str() {
            "partition" => format!("partition ({})", e.detail),
            "power" | "clock" | "disk" => format!("{} {:?} ({})", e.kind, e.nodes, e.detail),
            _ => format!("{} {:?}", e.kind, e.nodes),
        })
        .collect();
    if now.is_empty() {
        "none".into()
    } else {
        now.join(", ")
    }
}
