//! A directed graph whose edges carry a kind (ww, wr, rw) and a witness, with what the cycle
//! search needs: adjacency over some kinds of edges, Tarjan's strongly connected components
//! (iterative, so deep graphs cannot overflow the stack) and shortest paths that stay inside
//! one component. Each step is linear in the graph's size, so a history of 10^5 operations
//! and 10^6 records is searched in well under a second.

/// A write-write dependency: the edge's source wrote the record before the target's, next in
/// the partition's order (among operations of the graph).
pub(super) const WW: u8 = 1;
/// A write-read dependency: the target read a record the source wrote.
pub(super) const WR: u8 = 2;
/// A read-write anti-dependency: the source read a partition up to a record and the target
/// wrote the next one.
pub(super) const RW: u8 = 4;

/// One dependency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Edge {
    /// Source vertex.
    pub from: u32,
    /// Target vertex.
    pub to: u32,
    /// `WW`, `WR` or `RW`.
    pub kind: u8,
    /// What shows it: the partition and two values (ww: the source's and the target's; wr:
    /// the value read, twice; rw: the last value read and the next one written).
    pub witness: (i32, u64, u64),
}

/// Every edge, sorted, one per (source, target, kind).
pub(super) struct Graph {
    vertices: usize,
    edges: Vec<Edge>,
}

/// The out-edges of each vertex over some kinds (compressed rows: indexes into the edges).
pub(super) struct Adjacency {
    start: Vec<usize>,
    edges: Vec<u32>,
}

/// Each vertex's component, and the components of more than one vertex (no edge joins a
/// vertex to itself, so only those hold cycles).
pub(super) struct Components {
    pub of: Vec<u32>,
    pub cyclic: Vec<Vec<u32>>,
}

/// Reusable marks for the shortest-path searches (stamped, so each search costs only what
/// it visits).
pub(super) struct Scratch {
    stamp: Vec<u32>,
    parent: Vec<u32>,
    round: u32,
}

impl Graph {
    /// A graph of `vertices` vertices with `edges` (duplicates of one source, target and kind
    /// keep the first witness, self-loops are dropped).
    pub fn new(vertices: usize, mut edges: Vec<Edge>) -> Self {
        edges.retain(|e| e.from != e.to);
        edges.sort_by_key(|e| (e.from, e.to, e.kind));
        edges.dedup_by_key(|e| (e.from, e.to, e.kind));
        Self { vertices, edges }
    }

    /// How many vertices.
    pub fn vertices(&self) -> usize {
        self.vertices
    }

    /// Edge `index`.
    pub fn edge(&self, index: u32) -> &Edge {
        &self.edges[index as usize]
    }

    /// The adjacency over the edges whose kind is in `kinds`, between vertices that `keep`.
    pub fn adjacency(&self, kinds: u8, keep: impl Fn(u32) -> bool) -> Adjacency {
        let mut start = Vec::with_capacity(self.vertices + 1);
        let mut edges = Vec::new();
        let mut next = 0;
        for vertex in 0..self.vertices {
            start.push(edges.len());
            while next < self.edges.len() && self.edges[next].from as usize == vertex {
                let e = &self.edges[next];
                if e.kind & kinds != 0 && keep(e.from) && keep(e.to) {
                    edges.push(next as u32);
                }
                next += 1;
            }
        }
        start.push(edges.len());
        Adjacency { start, edges }
    }

    /// The out-edges of `vertex` in `adjacency`: (edge index, target).
    pub fn out<'a>(
        &'a self,
        adjacency: &'a Adjacency,
        vertex: u32,
    ) -> impl Iterator<Item = (u32, u32)> + 'a {
        let v = vertex as usize;
        adjacency.edges[adjacency.start[v]..adjacency.start[v + 1]]
            .iter()
            .map(move |&e| (e, self.edges[e as usize].to))
    }

    /// Tarjan's strongly connected components of `adjacency`.
    pub fn components(&self, adjacency: &Adjacency) -> Components {
        const NONE: u32 = u32::MAX;
        let n = self.vertices;
        let mut index = vec![NONE; n];
        let mut low = vec![0u32; n];
        let mut on_stack = vec![false; n];
        let mut of = vec![NONE; n];
        let mut stack: Vec<u32> = Vec::new();
        let mut cyclic = Vec::new();
        let mut next_index = 0u32;
        let mut next_component = 0u32;
        // The depth-first walk: (vertex, position in its out-edges).
        let mut walk: Vec<(u32, usize)> = Vec::new();
        for root in 0..n as u32 {
            if index[root as usize] != NONE {
                continue;
            }
            walk.push((root, adjacency.start[root as usize]));
            index[root as usize] = next_index;
            low[root as usize] = next_index;
            next_index += 1;
            stack.push(root);
            on_stack[root as usize] = true;
            while let Some(&mut (v, ref mut at)) = walk.last_mut() {
                let vi = v as usize;
                if *at < adjacency.start[vi + 1] {
                    let w = self.edges[adjacency.edges[*at] as usize].to;
                    *at += 1;
                    let wi = w as usize;
                    if index[wi] == NONE {
                        index[wi] = next_index;
                        low[wi] = next_index;
                        next_index += 1;
                        stack.push(w);
                        on_stack[wi] = true;
                        walk.push((w, adjacency.start[wi]));
                    } else if on_stack[wi] {
                        low[vi] = low[vi].min(index[wi]);
                    }
                    continue;
                }
                walk.pop();
                if let Some(&(parent, _)) = walk.last() {
                    low[parent as usize] = low[parent as usize].min(low[vi]);
                }
                if low[vi] == index[vi] {
                    let mut members = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w as usize] = false;
                        of[w as usize] = next_component;
                        members.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if members.len() > 1 {
                        members.sort_unstable();
                        cyclic.push(members);
                    }
                    next_component += 1;
                }
            }
        }
        Components { of, cyclic }
    }

    /// A shortest path from `from` to `to` over `adjacency` through vertices of component
    /// `component` in `of` only: its edges, in order.
    pub fn path(
        &self,
        adjacency: &Adjacency,
        (of, component): (&[u32], u32),
        from: u32,
        to: u32,
        scratch: &mut Scratch,
    ) -> Option<Vec<u32>> {
        scratch.round += 1;
        let round = scratch.round;
        let mut queue = std::collections::VecDeque::from([from]);
        scratch.stamp[from as usize] = round;
        while let Some(v) = queue.pop_front() {
            if v == to {
                let mut edges = Vec::new();
                let mut at = to;
                while at != from {
                    let e = scratch.parent[at as usize];
                    edges.push(e);
                    at = self.edges[e as usize].from;
                }
                edges.reverse();
                return Some(edges);
            }
            for (e, w) in self.out(adjacency, v) {
                let wi = w as usize;
                if of[wi] == component && scratch.stamp[wi] != round {
                    scratch.stamp[wi] = round;
                    scratch.parent[wi] = e;
                    queue.push_back(w);
                }
            }
        }
        None
    }

    /// A cycle through `edge` (its target back to its source) inside component `component`
    /// of `of`: the edge, then the path back.
    pub fn cycle_through(
        &self,
        adjacency: &Adjacency,
        within: (&[u32], u32),
        edge: u32,
        scratch: &mut Scratch,
    ) -> Option<Vec<u32>> {
        let e = self.edges[edge as usize];
        let back = self.path(adjacency, within, e.to, e.from, scratch)?;
        Some(std::iter::once(edge).chain(back).collect())
    }
}

impl Scratch {
    /// Marks for a graph of `vertices` vertices.
    pub fn new(vertices: usize) -> Self {
        Self {
            stamp: vec![0; vertices],
            parent: vec![0; vertices],
            round: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: u32, to: u32, kind: u8) -> Edge {
        Edge {
            from,
            to,
            kind,
            witness: (0, 0, 0),
        }
    }

    #[test]
    fn components_and_paths_follow_the_chosen_kinds() {
        // 0 -ww-> 1 -ww-> 2 -wr-> 0; 2 -ww-> 3 -rw-> 2; 4 alone; a self-loop on 4 dropped.
        let g = Graph::new(
            5,
            vec![
                edge(0, 1, WW),
                edge(1, 2, WW),
                edge(2, 0, WR),
                edge(2, 3, WW),
                edge(3, 2, RW),
                edge(4, 4, WW),
                edge(0, 1, WW),
            ],
        );
        assert_eq!(g.edges.len(), 5);
        let all = g.adjacency(WW | WR | RW, |_| true);
        let c = g.components(&all);
        assert_eq!(c.cyclic, vec![vec![0, 1, 2, 3]]);
        let ww = g.adjacency(WW, |_| true);
        assert!(g.components(&ww).cyclic.is_empty());
        let wwwr = g.adjacency(WW | WR, |_| true);
        let c2 = g.components(&wwwr);
        assert_eq!(c2.cyclic, vec![vec![0, 1, 2]]);
        // Leaving vertex 1 out breaks the ww+wr cycle.
        let without_1 = g.adjacency(WW | WR, |v| v != 1);
        assert!(g.components(&without_1).cyclic.is_empty());
        let mut scratch = Scratch::new(g.vertices());
        let path = g
            .path(&all, (&c.of, c.of[0]), 0, 3, &mut scratch)
            .expect("0 reaches 3");
        let hops: Vec<(u32, u32)> = path
            .iter()
            .map(|&e| (g.edge(e).from, g.edge(e).to))
            .collect();
        assert_eq!(hops, vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(g.path(&wwwr, (&c2.of, c2.of[0]), 0, 3, &mut scratch), None);
        let rw_edge = (0..g.edges.len() as u32)
            .find(|&e| g.edge(e).kind == RW)
            .expect("an rw edge");
        let cycle = g
            .cycle_through(&all, (&c.of, c.of[0]), rw_edge, &mut scratch)
            .expect("3 -rw-> 2 -ww-> 3");
        assert_eq!(cycle.len(), 2);
        assert_eq!((g.edge(cycle[1]).from, g.edge(cycle[1]).kind), (2, WW));
    }

    #[test]
    fn a_long_chain_closed_into_one_cycle_is_one_component() {
        let n = 200_000u32;
        let edges = (0..n).map(|v| edge(v, (v + 1) % n, WW)).collect();
        let g = Graph::new(n as usize, edges);
        let adjacency = g.adjacency(WW, |_| true);
        let c = g.components(&adjacency);
        assert_eq!(c.cyclic.len(), 1);
        assert_eq!(c.cyclic[0].len(), n as usize);
        let mut scratch = Scratch::new(g.vertices());
        let cycle = g
            .cycle_through(&adjacency, (&c.of, c.of[0]), 0, &mut scratch)
            .expect("a cycle");
        assert_eq!(cycle.len(), n as usize);
    }
}
