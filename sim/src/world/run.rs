//! The driver of a world run: builds the turmoil world (its nodes and the client host),
//! steps it one millisecond at a time with the fault schedule between steps, and checks what
//! happened (the cluster checker, the damaged disks' refusals, and the history).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbow_jepsen::history::History;
use oxbow_jepsen::txn::TxnHistory;
use oxbow_node::producer_ids::MemoryStore;
use oxbow_node::storage::SharedSimDisk;

use super::faults::Faults;
use super::node::{add_node, node_configs, NodeState};
use super::workload::workload;
use super::{
    node_name, Trace, WorldOptions, WorldReport, WorldStats, CLIENT, EPOCH_MS, KAFKA_PORT, TICK_MS,
};
use crate::checker::Checker;
use crate::cluster::Stats;

/// What a run prints to standard error as it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Nothing.
    Quiet,
    /// A line every 10 simulated seconds.
    Progress,
    /// Every trace line (and the progress).
    Trace,
}

/// Runs one world.
pub fn run_world(options: WorldOptions, output: Output) -> WorldReport {
    let trace = Trace::new(output == Output::Trace);
    let mut sim = turmoil::Builder::new()
        .rng_seed(options.seed)
        .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS as u64))
        .tick_duration(Duration::from_millis(TICK_MS))
        .simulation_duration(Duration::from_millis(
            options.safety_ms + options.liveness_ms + 60_000,
        ))
        .min_message_latency(Duration::from_millis(options.latency_ms.0))
        .max_message_latency(Duration::from_millis(options.latency_ms.1))
        .tcp_capacity(1 << 20)
        .build();
    let names: Vec<String> = (0..options.nodes).map(node_name).collect();
    let addresses: Vec<IpAddr> = names.iter().map(|n| sim.lookup(n.as_str())).collect();
    let configs = node_configs(&options, &addresses);
    let states: Vec<NodeState> = configs
        .into_iter()
        .enumerate()
        .map(|(index, config)| NodeState {
            index,
            config,
            disk: SharedSimDisk::new(),
            producer_ids: MemoryStore::default(),
            starts: Arc::new(AtomicU64::new(0)),
            wall_jump_ms: Arc::new(AtomicI64::new(0)),
            damaged: Arc::new(Mutex::new(None)),
            refusals: Arc::new(AtomicU64::new(0)),
        })
        .collect();
    let mut checker = Checker::default();
    checker.batches_rewritten = options.compaction.is_some();
    let cluster = Arc::new(Mutex::new((checker, Stats::default())));
    for state in &states {
        add_node(&mut sim, state.clone(), &options, &trace, &cluster);
    }
    let history = Arc::new(Mutex::new(History::default()));
    let txn_history = Arc::new(Mutex::new(TxnHistory::default()));
    let bootstrap = addresses
        .iter()
        .map(|a| SocketAddr::new(*a, KAFKA_PORT).to_string())
        .collect::<Vec<_>>()
        .join(",");
    {
        let options = options.clone();
        let histories = (history.clone(), txn_history.clone());
        let trace = trace.clone();
        sim.client(CLIENT, async move {
            workload(options, bootstrap, histories, trace)
                .await
                .map_err(Into::into)
        });
    }

    let mut stats = WorldStats::default();
    let mut violations = Vec::new();
    let mut faults = Faults::new(&options, &names);
    let end = options.safety_ms + options.liveness_ms;
    loop {
        let done = match sim.step() {
            Ok(done) => done,
            Err(e) => {
                violations.push(format!("the simulation failed: {e}"));
                break;
            }
        };
        let now = sim.elapsed().as_millis() as u64;
        if output != Output::Quiet && now.is_multiple_of(10_000) {
            eprintln!(
                "progress: {now} of at most {} simulated ms ({} sends so far)",
                options.safety_ms + options.liveness_ms,
                history.lock().expect("not poisoned").sends.len()
            );
        }
        if done {
            break;
        }
        if now >= end {
            violations.push(format!(
                "liveness: the workload did not finish within {} ms of healing",
                options.liveness_ms
            ));
            break;
        }
        faults.step(&mut sim, now, &options, &states, &mut stats, &trace);
    }
    stats.simulated_ms = sim.elapsed().as_millis() as u64;
    drop(sim);
    {
        let (checker, cluster_stats) = &mut *cluster.lock().expect("not poisoned");
        checker.finish();
        violations.append(&mut checker.violations);
        stats.elections = cluster_stats.elections;
    }
    for i in &faults.failed {
        if states[*i].refusals.load(Ordering::SeqCst) == 0 {
            violations.push(format!(
                "{}'s disk was damaged, but it never refused to start",
                names[*i]
            ));
        }
    }
    let history = std::mem::take(&mut *history.lock().expect("not poisoned"));
    stats.group_deliveries = history.group.deliveries.len() as u64;
    stats.group_commits = history.group.commits.len() as u64;
    let verdict = oxbow_jepsen::checker::check(&history);
    stats.sent = verdict.sent;
    stats.acknowledged = verdict.acknowledged;
    stats.failed = verdict.failed;
    stats.indeterminate = verdict.indeterminate;
    stats.records_read = verdict.records_read;
    stats.lost_leader_only = verdict.lost_leader_only;
    stats.trimmed = verdict.trimmed;
    stats.compacted = verdict.compacted;
    stats.trims = history
        .trims
        .iter()
        .filter(|t| t.low_watermark.is_some())
        .count() as u64;
    violations.extend(verdict.lines());
    if options.txn.is_some() {
        let txn_history = std::mem::take(&mut *txn_history.lock().expect("not poisoned"));
        let verdict = oxbow_jepsen::txn::check(&txn_history);
        stats.txn_attempts = txn_history.txns.len() as u64;
        stats.txn_committed = verdict.counts.committed;
        // Named, so that a test can tell the transactional checker's findings.
        violations.extend(
            verdict
                .lines()
                .into_iter()
                .map(|l| format!("transactions: {l}")),
        );
    }
    WorldReport {
        trace_hash: trace.hash(),
        options,
        violations,
        stats,
    }
}
