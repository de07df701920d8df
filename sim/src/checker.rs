//! The cluster checker: invariants checked as trace events arrive, and a final check of the
//! data read back against what clients were told.
//!
//! - Election safety (Raft §5.2): at most one leader per group and term.
//! - Log matching on the applied prefix (Raft §5.3): every node that applies index i of a group
//!   applies the same entry (term, offsets, batch CRC). This is also how a committed entry lost
//!   by a crash shows: the index gets re-used by a different entry. When a topic is compacted
//!   ([`Checker::batches_rewritten`]), the CRC is left out: each replica's log cleaner rewrites
//!   its own batches, and a node that restarts, or a follower fed from a cleaned leader's
//!   files, applies a cleaned batch (same term and offsets, other records) where its peers
//!   applied the original.
//! - Monotonic high watermark per node incarnation.
//! - Acknowledged writes (acks=all) are read back at their acknowledged offset; nothing is read
//!   twice, nothing is read that was never sent or whose send definitely failed.

use std::collections::{BTreeMap, BTreeSet};

use oxbow_core::ids::{GroupId, Offset, RaftIndex, Term};
use oxbow_core::io::TraceEvent;

use crate::cluster::Stats;
use crate::options::ClientKind;

const VIOLATIONS_KEPT: usize = 20;

/// See the module documentation.
#[derive(Default)]
pub struct Checker {
    /// What went wrong, for people (at most a few of each run are kept).
    pub violations: Vec<String>,
    violations_total: usize,
    leaders: BTreeMap<(GroupId, Term), usize>,
    applied: BTreeMap<(GroupId, RaftIndex), (Term, Offset, u32)>,
    high_watermarks: BTreeMap<(usize, GroupId), Offset>,
    acknowledged: Vec<(GroupId, Offset, String, u32)>,
    sent: BTreeSet<String>,
    failed: BTreeSet<String>,
    indeterminate: BTreeSet<String>,
    /// Per metadata log index, whether applying it changed the metadata.
    metadata: BTreeMap<RaftIndex, bool>,
    /// What readers saw during the run, by position.
    reads: BTreeMap<(GroupId, Offset), String>,
    /// Whether the log cleaner may rewrite batches (a compacted topic): log matching then
    /// compares terms and offsets, not CRCs.
    pub batches_rewritten: bool,
}

impl Checker {
    /// Records a violation.
    pub fn violation(&mut self, what: String) {
        self.violations_total += 1;
        if self.violations.len() < VIOLATIONS_KEPT {
            self.violations.push(what);
        }
    }

    /// A node (re)started: its high watermark starts again from its recovered state.
    pub fn node_started(&mut self, node: usize) {
        self.high_watermarks.retain(|(n, _), _| *n != node);
    }

    /// A trace event from `node`.
    pub fn trace(&mut self, node: usize, event: &TraceEvent, stats: &mut Stats) {
        match event {
            TraceEvent::BecameLeader { group, term } => {
                stats.elections += 1;
                if let Some(other) = self.leaders.insert((*group, *term), node) {
                    if other != node {
                        self.violation(format!(
                            "election safety: group {group} term {term} has two leaders, nodes {} and {}",
                            other + 1,
                            node + 1
                        ));
                    }
                }
            }
            TraceEvent::Applied {
                group,
                index,
                term,
                next_offset,
                crc,
            } => {
                let crc = if self.batches_rewritten { 0 } else { *crc };
                let entry = (*term, *next_offset, crc);
                if let Some(first) = self.applied.insert((*group, *index), entry) {
                    if first != entry {
                        self.violation(format!(
                            "log matching: group {group} index {index}: node {} applied (term, next offset, crc) \
                             {entry:?}, another node applied {first:?}",
                            node + 1
                        ));
                    }
                }
                self.high_watermark(node, *group, *next_offset);
            }
            TraceEvent::InstalledSnapshot {
                group, next_offset, ..
            } => {
                stats.snapshots_installed += 1;
                self.high_watermark(node, *group, *next_offset);
            }
            // The entries it replaced were checked on the nodes that applied them.
            TraceEvent::MetadataRestored { .. } => {}
            // A leader's admission of producer ids: what it refused, the producers' outcomes say.
            TraceEvent::ProducerTableFull { .. } | TraceEvent::ProducerTableHasRoom { .. } => {}
            // A coordinator's admission of new groups: the clients' answers say what it refused.
            TraceEvent::CoordinatorGroupsFull { .. }
            | TraceEvent::CoordinatorGroupsHaveRoom { .. } => {}
            TraceEvent::MetadataApplied { index, changed } => {
                if let Some(first) = self.metadata.insert(*index, *changed) {
                    if first != *changed {
                        self.violation(format!(
                            "metadata: node {} applied index {index} with changed={changed}, another node with changed={first}",
                            node + 1
                        ));
                    }
                }
            }
        }
    }

    fn high_watermark(&mut self, node: usize, group: GroupId, offset: Offset) {
        let previous = self.high_watermarks.insert((node, group), offset);
        if previous.is_some_and(|p| p > offset) {
            self.violation(format!(
                "monotonic high watermark: node {} group {group} went from {:?} to {offset:?}",
                node + 1,
                previous
            ));
        }
    }

    /// A value was sent (maybe again).
    pub fn sent(&mut self, value: &str) {
        self.sent.insert(value.to_string());
    }

    /// An attempt to write a value definitely failed. For clients that never retry a value,
    /// the value must then never be read.
    pub fn definitely_failed_attempt(&mut self, value: &str, kind: ClientKind) {
        if kind != ClientKind::Idempotent && !self.indeterminate.contains(value) {
            self.failed.insert(value.to_string());
        }
    }

    /// An attempt's outcome is unknown.
    pub fn indeterminate(&mut self, value: &str) {
        self.failed.remove(value);
        self.indeterminate.insert(value.to_string());
    }

    /// A write was acknowledged (acks=all) at `offset`.
    pub fn acknowledged(&mut self, group: GroupId, offset: Offset, value: &str, crc: u32) {
        self.acknowledged
            .push((group, offset, value.to_string(), crc));
    }

    /// A reader saw `value` at `offset` during the run: a read must only ever see what stays.
    pub fn read(&mut self, group: GroupId, offset: Offset, value: &str) {
        if let Some(first) = self.reads.insert((group, offset), value.to_string()) {
            if first != value {
                self.violation(format!(
                    "read anomaly: group {group} offset {offset:?} read as {first} and later as {value}"
                ));
            }
        }
    }

    /// Checks the run's reads against the final log of a group: every read at or past the log
    /// start saw the record that is there now (reading uncommitted data that a new leader then
    /// replaced shows up here).
    fn check_reads(
        &mut self,
        group: GroupId,
        log_start: Offset,
        by_offset: &BTreeMap<Offset, &str>,
    ) {
        let wrong: Vec<String> = self
            .reads
            .range((group, log_start)..=(group, Offset(i64::MAX)))
            .filter(|((_, offset), value)| by_offset.get(offset) != Some(&value.as_str()))
            .map(|((_, offset), value)| {
                format!(
                    "read anomaly: group {group} offset {offset:?} was read as {value}, the log holds {:?}",
                    by_offset.get(offset)
                )
            })
            .collect();
        for what in wrong {
            self.violation(what);
        }
    }

    /// The group's records as read back at the end, from `log_start` on.
    pub fn final_log(&mut self, group: GroupId, log_start: Offset, records: &[(Offset, String)]) {
        let mut expected = log_start;
        let mut seen: BTreeMap<&str, Offset> = BTreeMap::new();
        let mut by_offset: BTreeMap<Offset, &str> = BTreeMap::new();
        for (offset, value) in records {
            if *offset != expected {
                self.violation(format!(
                    "group {group}: read offset {offset:?} where {expected:?} was next"
                ));
            }
            expected = offset.plus(1);
            if let Some(first) = seen.insert(value, *offset) {
                self.violation(format!(
                    "duplicate: group {group} value {value} at offsets {first:?} and {offset:?}"
                ));
            }
            if !self.sent.contains(value.as_str()) {
                self.violation(format!(
                    "group {group}: read value {value} that was never sent"
                ));
            }
            if self.failed.contains(value.as_str()) {
                self.violation(format!(
                    "group {group}: read value {value} whose send definitely failed"
                ));
            }
            by_offset.insert(*offset, value);
        }
        self.check_reads(group, log_start, &by_offset);
        let batches_applied: BTreeMap<Offset, u32> = self
            .applied
            .range((group, RaftIndex(0))..=(group, RaftIndex(u64::MAX)))
            .filter(|(_, (_, _, crc))| *crc != 0)
            .map(|(_, (_, next, crc))| (*next, *crc))
            .collect();
        let lost: Vec<String> = self
            .acknowledged
            .iter()
            .filter(|(g, _, _, _)| *g == group)
            .filter_map(|(_, offset, value, crc)| {
                if *offset >= log_start {
                    match by_offset.get(offset) {
                        Some(v) if v == value => None,
                        other => Some(format!(
                            "lost acknowledged write: group {group} value {value} acknowledged at {offset:?}, read {other:?}"
                        )),
                    }
                } else if batches_applied.get(&offset.plus(1)) != Some(crc) {
                    Some(format!(
                        "lost acknowledged write: group {group} value {value} acknowledged at {offset:?} \
                         (below the log start now) was never applied there"
                    ))
                } else {
                    None
                }
            })
            .collect();
        for what in lost {
            self.violation(what);
        }
        if let Some(max) = batches_applied.keys().next_back() {
            if *max > expected {
                self.violation(format!(
                    "committed entry lost: group {group} once applied up to offset {max:?}, the log now ends at {expected:?}"
                ));
            }
        }
    }

    /// Ends the check; notes how many violations were not kept.
    pub fn finish(&mut self) {
        if self.violations_total > self.violations.len() {
            let more = self.violations_total - self.violations.len();
            self.violations
                .push(format!("... and {more} more violations"));
        }
    }
}
