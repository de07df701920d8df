//! The end of a run: whether the healed cluster converged, every node's full invariants, and
//! the final read of every group from its leader, handed to the checker.

use kafka_protocol::records::RecordBatchDecoder;
use oxbow_core::ids::{GroupId, Offset, RequestId};
use oxbow_core::io::{FetchData, FetchError, FetchRequest, Input, Output, Request, Response};
use oxbow_core::node::GroupStatus;

use super::{Cluster, Report, SCRATCH_PARTITIONS};

impl Cluster {
    /// Asks a running node for a fetch directly (not through the workload).
    fn fetch_direct(
        &mut self,
        node: usize,
        group: GroupId,
        offset: Offset,
        max_bytes: u32,
    ) -> Result<FetchData, FetchError> {
        let now = self.now_of(node);
        let mut out = Vec::new();
        let running = self.slots[node].running.as_mut().expect("running");
        let request = Request::Fetch(FetchRequest {
            group,
            offset,
            max_bytes,
            current_leader_epoch: -1,
            read_committed: false,
        });
        running.node.handle(
            now,
            Input::Request {
                id: RequestId(u64::MAX),
                request,
            },
            &mut out,
        );
        match out.into_iter().next() {
            Some(Output::Reply {
                response: Response::Fetch(result),
                ..
            }) => result.map(|mut data| {
                if let Some(read) = data.read.take() {
                    let entries = self.read_log(node, &read);
                    data.batches = read.batches(entries);
                }
                data
            }),
            other => panic!("a fetch answers at once with a fetch response, not {other:?}"),
        }
    }

    fn status(&self, node: usize, group: GroupId) -> Option<GroupStatus> {
        self.slots[node].running.as_ref()?.node.group_status(group)
    }

    fn serving_leader(&self, group: GroupId) -> Option<usize> {
        (0..self.options.nodes).find(|node| self.status(*node, group).is_some_and(|s| s.serving))
    }

    /// Healed and caught up: every node up, every group led, every node at the leader's high
    /// watermark, and every group has acknowledged a write since healing.
    pub(super) fn converged(&self) -> bool {
        self.convergence_problem().is_none()
    }

    fn convergence_problem(&self) -> Option<String> {
        if let Some(down) = self.slots.iter().position(|s| s.running.is_none()) {
            return Some(format!("node {} is down", down + 1));
        }
        if self.admin_command().is_some() {
            return Some(format!("admin step {} is not done", self.admin.step));
        }
        // Every node applied the metadata to the end: the scratch topic's groups are gone
        // and none of the disk's groups is left unclaimed.
        for (node, slot) in self.slots.iter().enumerate() {
            let running = slot.running.as_ref().expect("all up");
            let scratch =
                self.options.groups + 1..=self.options.groups + u64::from(SCRATCH_PARTITIONS);
            if let Some(g) = scratch
                .clone()
                .find(|g| running.node.group_status(GroupId(*g)).is_some())
            {
                return Some(format!("node {}: deleted group {g} still runs", node + 1));
            }
            if running.node.parked_groups().next().is_some() {
                return Some(format!("node {}: groups parked after replay", node + 1));
            }
        }
        for g in 1..=self.options.groups {
            let group = GroupId(g);
            let Some(leader) = self.serving_leader(group) else {
                return Some(format!("group {group} has no serving leader"));
            };
            let high_watermark = |node| self.status(node, group).map(|s| s.high_watermark);
            let all: Vec<_> = (0..self.options.nodes).map(high_watermark).collect();
            if all.iter().any(|h| *h != high_watermark(leader)) {
                return Some(format!("group {group}: high watermarks differ: {all:?}"));
            }
            if !self.live_acks.contains(&group) {
                return Some(format!("group {group} acknowledged no write since healing"));
            }
        }
        None
    }

    /// Every node's linear-time invariants (the cheap ones run after every input).
    pub(super) fn full_invariants(&self) {
        for slot in &self.slots {
            if let Some(running) = &slot.running {
                running.node.invariants();
                running.log.invariants();
            }
        }
    }

    pub(super) fn finish(mut self) -> Report {
        self.full_invariants();
        if let Some(problem) = self.convergence_problem() {
            self.checker.violation(format!(
                "liveness: not converged {} ms after healing: {problem}",
                self.options.liveness_ms
            ));
        } else {
            for g in 1..=self.options.groups {
                self.verify_group(GroupId(g));
            }
        }
        self.checker.finish();
        Report {
            trace_hash: self.hash,
            violations: self.checker.violations.clone(),
            stats: self.stats,
            options: self.options,
        }
    }

    /// Reads a group back from its leader and hands every record to the checker.
    fn verify_group(&mut self, group: GroupId) {
        let leader = self.serving_leader(group).expect("converged");
        let log_start = self
            .status(leader, group)
            .expect("serving")
            .log_start_offset;
        let mut records = Vec::new();
        let mut offset = log_start;
        loop {
            let data = match self.fetch_direct(leader, group, offset, 1 << 20) {
                Ok(data) => data,
                Err(error) => {
                    self.checker.violation(format!(
                        "group {group}: final read at {offset:?} failed: {error:?}"
                    ));
                    return;
                }
            };
            let mut next = offset;
            for batch in &data.batches {
                let decoded =
                    RecordBatchDecoder::decode(&mut batch.clone()).expect("stored batches decode");
                for record in decoded.records.into_iter().filter(|r| r.offset >= offset.0) {
                    let value = record
                        .value
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_default();
                    records.push((Offset(record.offset), value));
                    next = Offset(record.offset + 1);
                }
            }
            if next >= data.high_watermark || data.batches.is_empty() {
                break;
            }
            offset = next;
        }
        self.stats.records_verified += records.len() as u64;
        self.checker.final_log(group, log_start, &records);
    }
}
