//! Dependency cycles between operations and reads of a transaction's own writes, as Jepsen's
//! Kafka checker (`jepsen.tests.kafka`) finds them.
//!
//! The vertices are the operations that succeeded: each acknowledged operation of several
//! sends and polls ([`Operation`], Jepsen's `:txn` and `:send` of several values; a
//! transaction only when it committed), each acknowledged send of its own, and each poll of
//! no operation. The edges, as Jepsen draws them (its `ww-graph` and `wr-graph`; its
//! `rw-graph` is left out of its search, here it is searched for measure):
//!
//! - **ww**: T1 wrote the record just before T2's in a partition's order (the dense order of
//!   [`Orders`]; records of writers outside the graph are passed over);
//! - **wr**: T2 polled a record T1 wrote;
//! - **rw**: T1's furthest record polled in a partition is just before one T2 wrote.
//!
//! Cycles are found per strongly connected component (Tarjan), one example cycle each:
//! `G0` (ww edges alone), `G1c` (ww and wr edges, at least one wr), `G-single` (exactly one
//! rw edge, the rest ww and wr) and `G2` (rw edges that no ww/wr path closes alone). They are
//! measured, not judged: Kafka's transactions do not isolate writes (records of open
//! transactions interleave in a partition), so Jepsen allows G0 always and G1c once ww edges
//! are inferred, and Kafka promises no serializability. What Kafka does forbid, and Jepsen
//! reports as invalid, is [`Anomaly::WriteReadCycle`] (a cycle of wr edges alone between
//! transactions: each read another's records before its own commit, which read_committed
//! cannot show) and [`Anomaly::PrecommittedRead`] (a transaction polled a record it sent).

mod graph;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use super::order::Orders;
use super::{Anomaly, Verdict, EXAMPLES};
use crate::history::{Completion, History, Outcome};
use graph::{Adjacency, Edge, Graph, Scratch, RW, WR, WW};

/// The cycle classes measured (Elle's names, as Jepsen reports them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cycle {
    /// Write-write dependencies alone.
    G0,
    /// Write-write and write-read dependencies, at least one write-read.
    G1c,
    /// Exactly one read-write anti-dependency, closed by write-write and write-read ones.
    GSingle,
    /// Read-write anti-dependencies that need more than one of them to close.
    G2,
}

impl Cycle {
    /// The class's stable key (Elle's).
    pub fn key(self) -> &'static str {
        match self {
            Self::G0 => "G0",
            Self::G1c => "G1c",
            Self::GSingle => "G-single",
            Self::G2 => "G2",
        }
    }

    /// The class's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::G0 => "write cycle",
            Self::G1c => "circular information flow",
            Self::GSingle => "read skew (one anti-dependency)",
            Self::G2 => "anti-dependency cycle",
        }
    }
}

/// A vertex: who did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vertex {
    /// An operation of several sends and polls, by id.
    Op(u64),
    /// A send of its own, by value.
    Send(u64),
    /// A poll of no operation, by index.
    Poll(usize),
}

/// The dependency graph of a history.
struct Dependencies<'h> {
    history: &'h History,
    vertices: Vec<Vertex>,
    graph: Graph,
    /// Per vertex: a transaction.
    txn: Vec<bool>,
}

/// Whether operation `id` succeeded: as recorded, else (sends alone) when every send did.
fn succeeded(history: &History, id: u64) -> bool {
    match history.operations.get(&id) {
        Some(op) => op.completion == Completion::Ok,
        None => history
            .sends
            .values()
            .filter(|s| s.op == Some(id))
            .all(|s| matches!(s.outcome, Outcome::Ok { .. })),
    }
}

impl<'h> Dependencies<'h> {
    fn of(history: &'h History, orders: &Orders) -> Self {
        let mut vertices = Vec::new();
        let mut ids: BTreeMap<(u8, u64), u32> = BTreeMap::new();
        let mut vertex = |v: Vertex| -> u32 {
            let key = match v {
                Vertex::Op(id) => (0, id),
                Vertex::Send(value) => (1, value),
                Vertex::Poll(index) => (2, index as u64),
            };
            *ids.entry(key).or_insert_with(|| {
                vertices.push(v);
                vertices.len() as u32 - 1
            })
        };
        let mut ok_ops: BTreeMap<u64, bool> = BTreeMap::new();
        let mut ok = |id: u64| *ok_ops.entry(id).or_insert_with(|| succeeded(history, id));
        // The writer of each value, when in the graph.
        let mut writer: BTreeMap<u64, u32> = BTreeMap::new();
        for send in history.sends.values() {
            let v = match send.op {
                Some(id) if ok(id) => vertex(Vertex::Op(id)),
                None if matches!(send.outcome, Outcome::Ok { .. }) => {
                    vertex(Vertex::Send(send.value))
                }
                _ => continue,
            };
            writer.insert(send.value, v);
        }
        let mut owner: BTreeMap<usize, u64> = BTreeMap::new();
        for (&id, op) in &history.operations {
            owner.extend(op.polls.iter().map(|&i| (i, id)));
        }
        let mut edges = Vec::new();
        // Per reader and partition: the furthest dense index polled.
        let mut furthest: BTreeMap<(u32, i32), usize> = BTreeMap::new();
        for (index, poll) in history.polls.iter().enumerate() {
            let reader = match owner.get(&index) {
                Some(&id) if ok(id) => vertex(Vertex::Op(id)),
                Some(_) => continue,
                None => vertex(Vertex::Poll(index)),
            };
            for &(partition, offset, value) in &poll.records {
                if let Some(&from) = writer.get(&value) {
                    edges.push(Edge {
                        from,
                        to: reader,
                        kind: WR,
                        witness: (partition, value, value),
                    });
                }
                if let Some(i) = orders.index(partition, offset) {
                    let entry = furthest.entry((reader, partition)).or_insert(i);
                    *entry = (*entry).max(i);
                }
            }
        }
        // Per partition: ww between consecutive writers in the graph, and for each dense
        // index the next record a writer in the graph wrote after it.
        let mut next_writer: BTreeMap<i32, Vec<Option<(u32, u64)>>> = BTreeMap::new();
        let partitions: std::collections::BTreeSet<i32> = furthest
            .keys()
            .map(|&(_, p)| p)
            .chain(orders.partitions())
            .collect();
        for partition in partitions {
            let values = orders.values(partition);
            let mut last: Option<(u32, u64)> = None;
            for &value in values {
                let Some(&w) = writer.get(&value) else {
                    continue;
                };
                if let Some((l, lv)) = last {
                    edges.push(Edge {
                        from: l,
                        to: w,
                        kind: WW,
                        witness: (partition, lv, value),
                    });
                }
                last = Some((w, value));
            }
            let mut next = vec![None; values.len()];
            for i in (0..values.len().saturating_sub(1)).rev() {
                next[i] = writer
                    .get(&values[i + 1])
                    .map(|&w| (w, values[i + 1]))
                    .or(next[i + 1]);
            }
            next_writer.insert(partition, next);
        }
        for (&(reader, partition), &i) in &furthest {
            if let Some(&Some((w, value))) = next_writer.get(&partition).and_then(|n| n.get(i)) {
                edges.push(Edge {
                    from: reader,
                    to: w,
                    kind: RW,
                    witness: (partition, orders.values(partition)[i], value),
                });
            }
        }
        let txn = vertices
            .iter()
            .map(|v| match v {
                Vertex::Op(id) => history.operations.get(id).is_some_and(|op| op.txn),
                _ => false,
            })
            .collect();
        let graph = Graph::new(vertices.len(), edges);
        Self {
            history,
            vertices,
            graph,
            txn,
        }
    }

    fn describe_vertex(&self, v: u32) -> String {
        let h = self.history;
        match self.vertices[v as usize] {
            Vertex::Op(id) => match h.operations.get(&id) {
                Some(op) if op.txn => format!("transaction {id} (process {})", op.process),
                Some(op) => format!("operation {id} (process {})", op.process),
                None => format!("operation {id}"),
            },
            Vertex::Send(value) => {
                format!("send of {value} (producer {})", h.sends[&value].producer)
            }
            Vertex::Poll(i) => format!(
                "poll of reader {} at {} ms",
                h.polls[i].reader, h.polls[i].at_ms
            ),
        }
    }

    /// A cycle as text: each vertex, and each edge with its witness.
    fn describe(&self, cycle: &[u32]) -> String {
        let mut text = self.describe_vertex(self.graph.edge(cycle[0]).from);
        for &e in cycle {
            let edge = self.graph.edge(e);
            let (p, a, b) = edge.witness;
            let how = match edge.kind {
                WW => format!("ww, partition {p}: {a} then {b}"),
                WR => format!("wr, partition {p}: {a} read"),
                _ => format!("rw, partition {p}: read up to {a}, {b} next"),
            };
            text.push_str(&format!(" -[{how}]-> {}", self.describe_vertex(edge.to)));
        }
        text
    }

    /// The edges of a kind in `kinds` from a member of `members` (one component of `of`) to
    /// another.
    fn edges_within(
        &self,
        adjacency: &Adjacency,
        of: &[u32],
        members: &[u32],
        kinds: u8,
    ) -> Vec<u32> {
        let component = of[members[0] as usize];
        members
            .iter()
            .flat_map(|&m| self.graph.out(adjacency, m))
            .filter(|&(e, to)| of[to as usize] == component && self.graph.edge(e).kind & kinds != 0)
            .map(|(e, _)| e)
            .collect()
    }
}

/// Finds the cycles and precommitted reads of `history` and puts them in `verdict`.
pub(super) fn check_cycles(history: &History, orders: &Orders, verdict: &mut Verdict) {
    check_precommitted_reads(history, verdict);
    let deps = Dependencies::of(history, orders);
    let g = &deps.graph;
    let mut scratch = Scratch::new(g.vertices());
    let measured = |verdict: &mut Verdict, class: Cycle, cycle: &[u32]| {
        let (count, examples) = verdict.cycles.entry(class).or_default();
        *count += 1;
        if examples.len() < EXAMPLES {
            examples.push(deps.describe(cycle));
        }
    };
    // G0: the ww graph's cycles.
    let ww = g.adjacency(WW, |_| true);
    let c = g.components(&ww);
    for members in &c.cyclic {
        let first = deps.edges_within(&ww, &c.of, members, WW).first().copied();
        let component = c.of[members[0] as usize];
        if let Some(cycle) =
            first.and_then(|e| g.cycle_through(&ww, (&c.of, component), e, &mut scratch))
        {
            measured(verdict, Cycle::G0, &cycle);
        }
    }
    // G1c: the ww+wr graph's cycles through a wr edge.
    let wwwr = g.adjacency(WW | WR, |_| true);
    let c1 = g.components(&wwwr);
    for members in &c1.cyclic {
        let first = deps
            .edges_within(&wwwr, &c1.of, members, WR)
            .first()
            .copied();
        let component = c1.of[members[0] as usize];
        if let Some(cycle) =
            first.and_then(|e| g.cycle_through(&wwwr, (&c1.of, component), e, &mut scratch))
        {
            measured(verdict, Cycle::G1c, &cycle);
        }
    }
    // Cycles of wr edges alone between transactions: invalid.
    let wr = g.adjacency(WR, |v| deps.txn[v as usize]);
    let cw = g.components(&wr);
    for members in &cw.cyclic {
        let first = deps.edges_within(&wr, &cw.of, members, WR).first().copied();
        let component = cw.of[members[0] as usize];
        if let Some(cycle) =
            first.and_then(|e| g.cycle_through(&wr, (&cw.of, component), e, &mut scratch))
        {
            verdict.report(Anomaly::WriteReadCycle, || deps.describe(&cycle));
        }
    }
    // G-single and G2: the whole graph's cycles through an rw edge.
    let all = g.adjacency(WW | WR | RW, |_| true);
    let ca = g.components(&all);
    /// rw edges tried per component for a G-single whose ends are not in one ww+wr component.
    const TRIES: usize = 8;
    for members in &ca.cyclic {
        let component = ca.of[members[0] as usize];
        let rw = deps.edges_within(&all, &ca.of, members, RW);
        let Some(&first) = rw.first() else {
            continue;
        };
        // One rw edge whose ends share a ww+wr component closes with ww and wr edges alone.
        let single = rw
            .iter()
            .find(|&&e| {
                let edge = g.edge(e);
                c1.of[edge.from as usize] == c1.of[edge.to as usize]
            })
            .and_then(|&e| {
                let edge = g.edge(e);
                g.cycle_through(&wwwr, (&c1.of, c1.of[edge.from as usize]), e, &mut scratch)
            })
            .or_else(|| {
                rw.iter()
                    .take(TRIES)
                    .find_map(|&e| g.cycle_through(&wwwr, (&ca.of, component), e, &mut scratch))
            });
        match single {
            Some(cycle) => measured(verdict, Cycle::GSingle, &cycle),
            None => {
                if let Some(cycle) = g.cycle_through(&all, (&ca.of, component), first, &mut scratch)
                {
                    measured(verdict, Cycle::G2, &cycle);
                }
            }
        }
    }
}

/// Jepsen's precommitted read: a transaction polled a record it sent itself (Kafka keeps a
/// transaction's records from every read_committed consumer until it commits, its own
/// included). One per transaction.
fn check_precommitted_reads(history: &History, verdict: &mut Verdict) {
    for (&id, op) in &history.operations {
        if !op.txn {
            continue;
        }
        let own = op.polls.iter().find_map(|&i| {
            history
                .polls
                .get(i)?
                .records
                .iter()
                .find(|&&(_, _, value)| history.sends.get(&value).is_some_and(|s| s.op == Some(id)))
        });
        if let Some(&(partition, offset, value)) = own {
            verdict.report(Anomaly::PrecommittedRead, || {
                format!(
                    "transaction {id} (process {}) polled its own {value} at {partition}@{offset}",
                    op.process
                )
            });
        }
    }
}
