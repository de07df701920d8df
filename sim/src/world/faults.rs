//! The fault schedule of a world's safety phase: crashes (losing unsynced bytes, perhaps
//! tearing the last frame, perhaps damaging synced bytes the node must refuse to start on),
//! restarts, wall-clock jumps and network partitions, and the healing that ends the phase.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use oxbow_node::storage::{is_last_segment, is_read_at_start, provably_synced, Disk as _, SimDisk};

use super::node::NodeState;
use super::{Trace, WorldOptions, WorldStats, CLIENT};
use crate::rng::Stream;

/// The fault schedule's streams and state, from one step of the world to the next.
pub(super) struct Faults {
    faults: Stream,
    tear_rng: Stream,
    next_crash: Option<u64>,
    next_partition: Option<u64>,
    jumps: Stream,
    next_jump: Option<u64>,
    down: BTreeMap<usize, u64>,
    /// Nodes whose disk the driver damaged: down for good.
    pub(super) failed: BTreeSet<usize>,
    damage_rng: Stream,
    /// Links cut by the current partition: (from, to, one way only).
    held: Vec<(usize, usize, bool)>,
    one_way: Stream,
    client_cut: Stream,
    /// The node hosts' names, by index.
    names: Vec<String>,
    /// The hosts a partition can cut, by index: the nodes, then the client.
    hosts: Vec<String>,
    client: usize,
    heal_partition_at: u64,
    healed: bool,
}

impl Faults {
    /// The schedule of `options`, for the nodes `names`.
    pub(super) fn new(options: &WorldOptions, names: &[String]) -> Self {
        let mut faults = Stream::new(options.seed, "world-fault-schedule");
        let tear_rng = Stream::new(options.seed, "world-tears");
        let next_crash = options.crash_every_ms.map(|(a, b)| faults.between(a, b));
        let next_partition = options
            .partition_every_ms
            .map(|(a, b)| faults.between(a, b));
        let mut jumps = Stream::new(options.seed, "world-clock-jumps");
        let next_jump = options.jump_every_ms.map(|(a, b)| jumps.between(a, b));
        let damage_rng = Stream::new(options.seed, "world-damage-where");
        let one_way = Stream::new(options.seed, "world-one-way");
        let client_cut = Stream::new(options.seed, "world-client-partitions");
        let hosts: Vec<String> = names.iter().cloned().chain([CLIENT.to_string()]).collect();
        Self {
            faults,
            tear_rng,
            next_crash,
            next_partition,
            jumps,
            next_jump,
            down: BTreeMap::new(),
            failed: BTreeSet::new(),
            damage_rng,
            held: Vec::new(),
            one_way,
            client_cut,
            names: names.to_vec(),
            hosts,
            client: options.nodes,
            heal_partition_at: 0,
            healed: false,
        }
    }

    /// Injects what is due at `now` (ms): restarts and partition ends; in the safety phase new
    /// crashes, clock jumps and partitions; once it is over, healing everything.
    pub(super) fn step(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        now: u64,
        options: &WorldOptions,
        states: &[NodeState],
        stats: &mut WorldStats,
        trace: &Trace,
    ) {
        let Self {
            faults,
            tear_rng,
            next_crash,
            next_partition,
            jumps,
            next_jump,
            down,
            failed,
            damage_rng,
            held,
            one_way,
            client_cut,
            names,
            hosts,
            client,
            heal_partition_at,
            healed,
        } = self;
        // Restarts and partition ends that are due.
        let due: Vec<usize> = down
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            down.remove(&i);
            trace.line(&format!("{now:>7} driver restart {}", names[i]));
            sim.bounce(names[i].as_str());
        }
        if !held.is_empty() && *heal_partition_at <= now {
            heal(sim, hosts, held);
            trace.line(&format!("{now:>7} driver heal partition"));
        }
        if now >= options.safety_ms {
            if !*healed {
                *healed = true;
                heal(sim, hosts, held);
                for (i, _) in std::mem::take(down) {
                    sim.bounce(names[i].as_str());
                }
                trace.line(&format!("{now:>7} driver heal everything"));
            }
            return;
        }
        if next_crash.is_some_and(|at| at <= now) {
            let (a, b) = options.crash_every_ms.expect("scheduled");
            *next_crash = Some(now + faults.between(a, b));
            // Keep a majority up, so the cluster can make progress.
            let out: BTreeSet<usize> = down.keys().chain(&*failed).copied().collect();
            if out.len() < (options.nodes - 1) / 2 {
                let up: Vec<usize> = (0..options.nodes).filter(|i| !out.contains(i)).collect();
                let victim = up[faults.below(up.len() as u64) as usize];
                crash_silently(sim, hosts, held, victim);
                let lost = states[victim]
                    .disk
                    .with(|d| d.crash(tear_rng.rng(), options.tear));
                let back = now + faults.between(options.down_ms.0, options.down_ms.1);
                down.insert(victim, back);
                stats.crashes += 1;
                trace.line(&format!(
                    "{now:>7} driver crash {} (lost {lost} unsynced bytes), back at {back}",
                    names[victim]
                ));
                if options
                    .damage_at_crash
                    .is_some_and(|k| stats.crashes >= k && failed.is_empty())
                {
                    let damage = states[victim]
                        .disk
                        .with(|d| damage_synced_byte(d, damage_rng));
                    if let Some(damage) = damage {
                        trace.line(&format!(
                            "{now:>7} driver damages {}'s disk: {damage}",
                            names[victim]
                        ));
                        *states[victim].damaged.lock().expect("not poisoned") = Some(damage);
                        failed.insert(victim);
                        stats.damaged += 1;
                    }
                }
            }
        }
        if next_jump.is_some_and(|at| at <= now) {
            let (a, b) = options.jump_every_ms.expect("scheduled");
            *next_jump = Some(now + jumps.between(a, b));
            let node = jumps.below(options.nodes as u64) as usize;
            // Up to ten minutes either way, as NTP stepping a bad clock might.
            let by = jumps.between(0, 1_200_000) as i64 - 600_000;
            states[node].wall_jump_ms.fetch_add(by, Ordering::SeqCst);
            stats.clock_jumps += 1;
            trace.line(&format!(
                "{now:>7} driver wall clock of {} jumps by {by} ms",
                names[node]
            ));
        }
        if next_partition.is_some_and(|at| at <= now) {
            let (a, b) = options.partition_every_ms.expect("scheduled");
            *next_partition = Some(now + faults.between(a, b));
            if held.is_empty() {
                // One node alone, or a minority against a majority.
                let mut order: Vec<usize> = (0..options.nodes).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, faults.below(i as u64 + 1) as usize);
                }
                let minority = if faults.chance(500_000) {
                    1
                } else {
                    1 + faults.below(((options.nodes - 1) / 2) as u64) as usize
                };
                let (side, rest) = order.split_at(minority);
                // A third of the partitions are one way: the side's messages to the rest are
                // lost (turmoil drops them mid-stream), while the rest still reach the side.
                let oneway = one_way.chance(333_333);
                // A third of the two-way partitions also cut the client off with the minority:
                // it reaches only nodes that may have lost their leadership, as a client in the
                // wrong data centre does.
                let with_client = !oneway && client_cut.chance(333_333);
                if with_client {
                    for y in rest {
                        sim.hold(CLIENT, names[*y].as_str());
                        held.push((*client, *y, false));
                    }
                }
                for x in side {
                    for y in rest {
                        if oneway {
                            sim.partition_oneway(names[*x].as_str(), names[*y].as_str());
                        } else {
                            sim.hold(names[*x].as_str(), names[*y].as_str());
                        }
                        held.push((*x, *y, oneway));
                    }
                }
                *heal_partition_at =
                    now + faults.between(options.partition_ms.0, options.partition_ms.1);
                stats.partitions += 1;
                let side: Vec<&str> = side.iter().map(|i| names[*i].as_str()).collect();
                trace.line(&format!(
                    "{now:>7} driver partition {side:?}{} from the rest{} until {heal_partition_at}",
                    if with_client { " and the client" } else { "" },
                    if oneway { " (one way)" } else { "" }
                ));
            }
        }
    }
}

/// Crashes host `victim` with its links out cut for the moment of the crash, so that what
/// its dropped tasks send as they go (their sockets' FINs) is lost, as in a power cut, and so
/// are its messages still in flight. Tokio drops a crashed runtime's tasks in an order that
/// follows process-wide task ids, which depend on what else ran in the process (an earlier run,
/// another run on another thread): delivered, those FINs made a seed's trace differ between a
/// fresh process and a sweep's. A partition in progress over a link is put back after.
fn crash_silently(
    sim: &mut turmoil::Sim<'_>,
    hosts: &[String],
    held: &[(usize, usize, bool)],
    victim: usize,
) {
    let others: Vec<usize> = (0..hosts.len()).filter(|&y| y != victim).collect();
    for &y in &others {
        sim.partition_oneway(hosts[victim].as_str(), hosts[y].as_str());
    }
    sim.crash(hosts[victim].as_str());
    for &y in &others {
        let (from, to) = (hosts[victim].as_str(), hosts[y].as_str());
        let both_ways = held
            .iter()
            .any(|&(a, b, oneway)| !oneway && ((a, b) == (victim, y) || (a, b) == (y, victim)));
        let cut_out = held
            .iter()
            .any(|&(a, b, oneway)| oneway && (a, b) == (victim, y));
        if cut_out {
            continue; // a one-way partition of this direction goes on
        }
        sim.repair_oneway(from, to);
        if both_ways {
            sim.hold(from, to);
        }
    }
}

/// Ends a partition: held links deliver what they held; one-way cuts are repaired.
fn heal(sim: &mut turmoil::Sim<'_>, names: &[String], held: &mut Vec<(usize, usize, bool)>) {
    for (a, b, oneway) in held.drain(..) {
        if oneway {
            sim.repair_oneway(names[a].as_str(), names[b].as_str());
        } else {
            sim.release(names[a].as_str(), names[b].as_str());
        }
    }
}

/// Flips one byte the node's recovery can prove was synced (the storage's own
/// `provably_synced`), in a segment recovery reads at start (after the group's newest index
/// file: damage in the segments it covers is found when they are read back, which the
/// storage's own tests cover). Returns what was done, or `None` if no byte qualifies yet.
fn damage_synced_byte(disk: &mut SimDisk, rng: &mut Stream) -> Option<String> {
    let names = disk.list().expect("a simulated disk lists");
    let mut candidates = Vec::new();
    for name in names.iter().filter(|n| is_read_at_start(&names, n)) {
        let bytes = disk.read(name).expect("a listed file reads");
        let below = provably_synced(&bytes, 0, is_last_segment(&names, name));
        if below > 0 {
            candidates.push((name.clone(), below));
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (name, below) = &candidates[rng.below(candidates.len() as u64) as usize];
    let position = rng.below(*below) as usize;
    assert!(disk.corrupt(name, position), "the byte exists");
    Some(format!("byte {position} of {name} flipped"))
}
