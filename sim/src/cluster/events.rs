//! The event loop: scheduling, the nodes' drifting clocks, feeding a node its inputs, and
//! routing what it outputs over the simulated network and disks.

use oxbow_core::ids::NodeId;
use oxbow_core::io::{DiskRead, Input, Output, Response};
use oxbow_core::raft::eraftpb::Entry;
use oxbow_core::time::{Instant, Now};

use super::{Cluster, Event, Report, EPOCH_MS};

impl Cluster {
    pub(super) fn tick_us(&self, node: usize) -> u64 {
        let base = self.options.tick_ms * 1_000;
        (base as i64 * 1_000_000 / (1_000_000 + self.slots[node].drift_ppm)) as u64
    }

    pub(super) fn now_of(&self, node: usize) -> Now {
        let slot = &self.slots[node];
        let local_us = (self.now_us as i128 * (1_000_000 + slot.drift_ppm as i128) / 1_000_000)
            as u64
            + slot.mono_offset_us;
        Now {
            mono: Instant(local_us * 1_000),
            wall_ms: EPOCH_MS + (local_us / 1_000) as i64 + slot.wall_offset_ms,
        }
    }

    pub(super) fn schedule(&mut self, at_us: u64, event: Event) {
        self.event_seq += 1;
        self.events.insert((at_us, self.event_seq), event);
    }

    pub(super) fn mix(&mut self, words: &[u64]) {
        for w in words {
            for b in w.to_le_bytes() {
                self.hash ^= u64::from(b);
                self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    /// Runs both phases and checks the outcome.
    pub fn run(mut self) -> Report {
        let end = (self.options.safety_ms + self.options.liveness_ms) * 1_000;
        let mut next_check_us = 0;
        while let Some((&(at, seq), _)) = self.events.first_key_value() {
            if at > end {
                break;
            }
            let event = self.events.remove(&(at, seq)).expect("first");
            assert!(at >= self.now_us, "time never goes backwards");
            self.now_us = at;
            self.stats.events += 1;
            self.handle(event);
            if self.stats.events.is_multiple_of(5_000) {
                self.full_invariants();
            }
            if self.liveness && self.now_us >= next_check_us {
                next_check_us = self.now_us + 100_000;
                if self.converged() {
                    break;
                }
            }
        }
        self.finish()
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                if self.slots[node].incarnation != incarnation || self.slots[node].running.is_none()
                {
                    return;
                }
                self.mix(&[1, self.now_us, node as u64]);
                self.feed(node, Input::Tick);
                if let Some(running) = &self.slots[node].running {
                    self.stats.quiet_ticks += running.node.quiet_groups() as u64;
                }
                let at = self.now_us + self.tick_us(node);
                self.schedule(at, Event::Tick { node, incarnation });
            }
            Event::Deliver { to, from, messages } => {
                if self.blocked.contains(&(from, to)) || self.slots[to].running.is_none() {
                    return;
                }
                self.mix(&[
                    2,
                    self.now_us,
                    to as u64,
                    from as u64,
                    messages.len() as u64,
                ]);
                self.feed(
                    to,
                    Input::Peer {
                        from: NodeId(from as u64 + 1),
                        messages,
                    },
                );
            }
            Event::WriteDone {
                node,
                incarnation,
                seq,
                sync,
            } => {
                if self.slots[node].incarnation != incarnation {
                    return;
                }
                let Some(running) = self.slots[node].running.as_mut() else {
                    return;
                };
                if sync {
                    running
                        .log
                        .sync()
                        .expect("the simulated disk does not fail");
                }
                self.mix(&[3, self.now_us, node as u64, seq.0]);
                self.feed(node, Input::WriteDone { seq });
            }
            Event::EntriesRead {
                node,
                incarnation,
                group,
                low,
                entries,
            } => {
                if self.slots[node].incarnation != incarnation || self.slots[node].running.is_none()
                {
                    return;
                }
                self.mix(&[6, self.now_us, node as u64, group.0, low.0]);
                self.feed(
                    node,
                    Input::EntriesRead {
                        group,
                        low,
                        entries,
                    },
                );
            }
            Event::ClientSend { client } => self.client_send(client),
            Event::Admin => self.admin_send(),
            Event::Read { group } => self.read_send(group),
            Event::Crash => self.crash(),
            Event::Restart { node } => {
                // A node whose recovery failed (a violation: the run fails) stays down.
                if self.slots[node].running.is_none() && self.slots[node].disk.is_some() {
                    self.mix(&[5, self.now_us, node as u64]);
                    self.start(node);
                }
            }
            Event::Partition => self.partition(),
            Event::Heal => {
                self.mix(&[6, self.now_us]);
                self.blocked.clear();
            }
            Event::Liveness => self.enter_liveness(),
        }
    }

    pub(super) fn feed(&mut self, node: usize, input: Input) {
        let now = self.now_of(node);
        let mut out = Vec::new();
        self.slots[node]
            .running
            .as_mut()
            .expect("fed nodes run")
            .node
            .handle(now, input, &mut out);
        self.dispatch(node, out);
    }

    fn dispatch(&mut self, node: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, messages } => {
                    let to = (to.0 - 1) as usize;
                    self.mix(&[10, node as u64, to as u64, messages.len() as u64]);
                    if self.blocked.contains(&(node, to)) || self.net.chance(self.drop_rate()) {
                        continue;
                    }
                    let copies = if self.net.chance(self.duplicate_rate()) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let at = self.now_us
                            + self
                                .net
                                .between(self.options.latency_us.0, self.options.latency_us.1);
                        self.schedule(
                            at,
                            Event::Deliver {
                                to,
                                from: node,
                                messages: messages.clone(),
                            },
                        );
                    }
                }
                Output::Write(write) => {
                    self.mix(&[11, node as u64, write.seq.0, write.records.len() as u64]);
                    let latency = self.disk.between(
                        self.options.disk_latency_us.0,
                        self.options.disk_latency_us.1,
                    );
                    let incarnation = self.slots[node].incarnation;
                    let running = self.slots[node].running.as_mut().expect("running");
                    running
                        .log
                        .append(&write.records)
                        .expect("the simulated disk does not fail");
                    let at = running.disk_free_at.max(self.now_us) + latency;
                    running.disk_free_at = at;
                    self.schedule(
                        at,
                        Event::WriteDone {
                            node,
                            incarnation,
                            seq: write.seq,
                            sync: write.sync,
                        },
                    );
                }
                Output::ReadEntries(read) => {
                    self.mix(&[14, node as u64, read.group.0, read.from.0]);
                    let latency = self.disk.between(
                        self.options.disk_latency_us.0,
                        self.options.disk_latency_us.1,
                    );
                    let incarnation = self.slots[node].incarnation;
                    let entries = self.read_log(node, &read);
                    self.schedule(
                        self.now_us + latency,
                        Event::EntriesRead {
                            node,
                            incarnation,
                            group: read.group,
                            low: read.from,
                            entries,
                        },
                    );
                }
                Output::Reply { id, mut response } => {
                    self.mix(&[12, node as u64, id.0]);
                    // A fetch of records no longer in memory: the driver reads them.
                    if let Response::Fetch(Ok(data)) = &mut response {
                        if let Some(read) = data.read.take() {
                            let entries = self.read_log(node, &read);
                            data.batches = read.batches(entries);
                        }
                    }
                    if self.admin.in_flight.is_some_and(|(admin, _)| admin == id) {
                        self.admin_reply(response);
                    } else if let Some((group, _)) = self.reads.remove(&id) {
                        self.read_reply(group, response);
                    } else {
                        self.client_reply(id, response);
                    }
                }
                Output::Trace(event) => {
                    self.mix(&[13, node as u64]);
                    self.checker.trace(node, &event, &mut self.stats);
                }
            }
        }
    }

    fn drop_rate(&self) -> u64 {
        if self.liveness {
            0
        } else {
            self.options.drop_per_million
        }
    }

    fn duplicate_rate(&self) -> u64 {
        if self.liveness {
            0
        } else {
            self.options.duplicate_per_million
        }
    }

    /// Reads entries back from a running node's log.
    pub(super) fn read_log(&mut self, node: usize, read: &DiskRead) -> Vec<Entry> {
        self.stats.disk_reads += 1;
        let running = self.slots[node].running.as_mut().expect("running");
        running
            .log
            .read_entries(read.group, read.from.0, read.to.0, read.read_bytes)
            .expect("the simulated disk does not fail")
    }
}
