//! The nemesis: faults on the local cluster on a seeded schedule (a gap, a fault on one node or
//! now and then on a majority, its length, its healing), each recorded with its times; and at
//! the end, healing everything. It also notices nodes that exit on their own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::cli::NemesisKind;
use crate::cluster::LocalCluster;
use crate::rng::Stream;
use crate::workload::Clock;

/// One fault, or one exit of a node on its own.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// `kill`, `pause`, or `exit` (a node exited without being killed: a crash).
    pub kind: String,
    /// The nodes (1-based).
    pub nodes: Vec<usize>,
    /// When it began (ms since the run started).
    pub start_ms: u64,
    /// When it was healed (`None`: not yet).
    pub end_ms: Option<u64>,
    /// What else there is to say (an exit's status and log file).
    pub detail: String,
}

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
            let kind = match self.kind {
                NemesisKind::None => continue,
                NemesisKind::Kill => "kill",
                NemesisKind::Pause => "pause",
                NemesisKind::All => {
                    if rng.chance(1, 2) {
                        "kill"
                    } else {
                        "pause"
                    }
                }
            };
            // One node most of the time; a majority one time in four.
            let count = if n >= 3 && rng.chance(1, 4) {
                n / 2 + 1
            } else {
                1
            };
            let mut nodes: Vec<usize> = (0..n).collect();
            for i in 0..count {
                let j = i + rng.below((n - i) as u64) as usize;
                nodes.swap(i, j);
            }
            nodes.truncate(count);
            nodes.sort_unstable();
            let index = {
                let mut cluster = self.cluster.lock().expect("not poisoned");
                for &i in &nodes {
                    match kind {
                        "kill" => cluster.kill(i),
                        _ => cluster.pause(i),
                    }
                }
                let mut events = self.events.lock().expect("not poisoned");
                events.push(Event {
                    kind: kind.into(),
                    nodes: nodes.iter().map(|i| i + 1).collect(),
                    start_ms: self.clock.ms(),
                    end_ms: None,
                    detail: String::new(),
                });
                events.len() - 1
            };
            let stopped = self
                .wait(rng.between(self.length.0, self.length.1) * 1000)
                .await;
            {
                let mut cluster = self.cluster.lock().expect("not poisoned");
                for &i in &nodes {
                    match kind {
                        "kill" => cluster.start_node(i)?,
                        _ => cluster.resume(i),
                    }
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

/// The faults in force now, for the progress line.
pub fn current(events: &Events) -> String {
    let events = events.lock().expect("not poisoned");
    let now: Vec<String> = events
        .iter()
        .filter(|e| e.end_ms.is_none() && e.kind != "exit")
        .map(|e| format!("{} {:?}", e.kind, e.nodes))
        .collect();
    if now.is_empty() {
        "none".into()
    } else {
        now.join(", ")
    }
}
