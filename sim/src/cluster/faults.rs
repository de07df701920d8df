//! Nodes starting and failing: a node's configuration, its start (recovery from its disk),
//! crashes that lose unsynced bytes, network partitions, and the healing that starts the
//! liveness phase.

use oxbow_core::ids::NodeId;
use oxbow_core::node::{Node, NodeConfig};
use oxbow_node::storage::{SegmentLog, SegmentLogOptions};

use super::{Cluster, Event, Running};

impl Cluster {
    fn node_config(&self, node: usize) -> NodeConfig {
        let voters: Vec<NodeId> = (0..self.options.nodes)
            .map(|n| NodeId(n as u64 + 1))
            .collect();
        // Every partition comes from the metadata group, as on a production node.
        let mut config = NodeConfig::new(NodeId(node as u64 + 1), Vec::new());
        config.metadata_voters = voters;
        config.retain_entries_max = Some(self.options.retain_entries_max);
        config.log_cache_bytes = self.options.log_cache_bytes;
        config.offset_index_interval_bytes = 2_048;
        // A few spans: the sparse index is thinned, and reads of a thinned index (from memory
        // and from a checkpoint after a crash) are checked, in every run.
        config.index_points_max = 2;
        config.catch_up_read_bytes = 16 << 10;
        config.checkpoint_bytes = 4_096;
        config.checkpoint_ticks = 20;
        // Every few admin changes and leader no-ops: the metadata log's snapshots are taken,
        // restored after crashes and sent to nodes behind them in every run.
        config.metadata_entries_max = 3;
        config.snapshot_retry_ticks = 30;
        config.pending_requests_max = 64;
        config.planted = self.options.planted;
        config
    }

    pub(super) fn start(&mut self, node: usize) {
        let config = self.node_config(node);
        let slot = &mut self.slots[node];
        let disk = slot.disk.take().expect("a stopped node has its disk");
        let options = SegmentLogOptions {
            segment_bytes_max: 16 << 10,
            planted: self.options.planted,
        };
        let (log, durable, report) = match SegmentLog::open(disk, options) {
            Ok(opened) => opened,
            Err(error) => {
                self.checker
                    .violation(format!("node {}: recovery failed: {error}", node + 1));
                return;
            }
        };
        if !report.cuts.is_empty() {
            self.stats.tails_cut += 1;
        }
        let seed = self.options.seed;
        let node_core = Node::new(config, seed, slot.incarnation, durable, &self.logger);
        slot.running = Some(Running {
            node: node_core,
            log,
            disk_free_at: 0,
        });
        self.checker.node_started(node);
        let incarnation = slot.incarnation;
        let at = self.now_us + self.tick_us(node);
        self.schedule(at, Event::Tick { node, incarnation });
    }

    pub(super) fn crash(&mut self) {
        if self.liveness {
            return;
        }
        let node = self.faults.below(self.options.nodes as u64) as usize;
        if let Some(running) = self.slots[node].running.take() {
            self.mix(&[4, self.now_us, node as u64]);
            self.stats.crashes += 1;
            let mut disk = running.log.into_disk();
            self.stats.bytes_lost += disk.crash(self.faults.rng(), self.options.tear);
            let slot = &mut self.slots[node];
            slot.disk = Some(disk);
            slot.incarnation += 1;
            // Reads at the crashed node get no answer; the readers go on with their schedule.
            self.reads.retain(|_, (_, at)| *at != node);
            if self.admin.in_flight.is_some_and(|(_, at)| at == node) {
                self.admin.in_flight = None;
                self.admin_later();
            }
            // Requests in flight at the crashed node get no answer: their outcome is unknown.
            for client in 0..self.clients.len() {
                if self.clients[client]
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.node == node)
                {
                    let flight = self.clients[client].in_flight.take().expect("checked");
                    self.requests.remove(&flight.request);
                    self.checker.indeterminate(&flight.value);
                    self.after_attempt(client, false);
                }
            }
            let down = self
                .faults
                .between(self.options.down_ms.0, self.options.down_ms.1)
                * 1_000;
            self.schedule(self.now_us + down, Event::Restart { node });
        }
        if let Some((low, high)) = self.options.crash_every_ms {
            let at = self.now_us + self.faults.between(low, high) * 1_000;
            self.schedule(at, Event::Crash);
        }
    }

    pub(super) fn partition(&mut self) {
        if self.liveness {
            return;
        }
        self.blocked.clear();
        let n = self.options.nodes;
        let victim = self.faults.below(n as u64) as usize;
        match self.faults.below(3) {
            // Isolate one node (a minority) both ways.
            0 | 1 => {
                for other in (0..n).filter(|o| *o != victim) {
                    self.blocked.insert((victim, other));
                    self.blocked.insert((other, victim));
                }
            }
            // One-way: the victim hears nobody but is heard.
            _ => {
                for other in (0..n).filter(|o| *o != victim) {
                    self.blocked.insert((other, victim));
                }
            }
        }
        self.mix(&[7, self.now_us, victim as u64, self.blocked.len() as u64]);
        let heal_at = self.now_us
            + self
                .faults
                .between(self.options.partition_ms.0, self.options.partition_ms.1)
                * 1_000;
        self.schedule(heal_at, Event::Heal);
        if let Some((low, high)) = self.options.partition_every_ms {
            let at = heal_at + self.faults.between(low, high) * 1_000;
            self.schedule(at, Event::Partition);
        }
    }

    pub(super) fn enter_liveness(&mut self) {
        self.liveness = true;
        self.blocked.clear();
        for node in 0..self.options.nodes {
            if self.slots[node].running.is_none() {
                self.schedule(self.now_us, Event::Restart { node });
            }
        }
    }
}
