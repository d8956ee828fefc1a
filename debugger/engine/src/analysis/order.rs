//! The lock-order graph, lockdep style but per lock instance: an edge A -> B each time a hart
//! acquires B while holding A, with the first sites seen and the "gate" locks that were held
//! around every occurrence.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::held::HeldEv;
use crate::model::{HartId, LockId};

/// Gate locks remembered per edge. A first occurrence under more held locks keeps the outermost
/// ones: dropping a gate can only make a report appear, never hide one.
const GATES: usize = 7;

/// Where and when an order edge A -> B was first seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSite {
    pub hart: HartId,
    /// Return address into the code that acquired A.
    pub from_pc: u64,
    /// Return address into the code that acquired (or started spinning on) B.
    pub to_pc: u64,
    pub time_ns: u64,
}

/// The other locks held around every occurrence of an edge so far (an intersection).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GateSet {
    ids: [LockId; GATES],
    len: u8,
}

impl GateSet {
    fn first(held: &[HeldEv], from_ix: usize) -> Self {
        let mut g = GateSet {
            ids: [0; GATES],
            len: 0,
        };
        for (j, h) in held.iter().enumerate() {
            if j != from_ix && (g.len as usize) < GATES {
                g.ids[g.len as usize] = h.lock;
                g.len += 1;
            }
        }
        g
    }

    /// Keeps only the gates also held (other than the edge's source) this time.
    #[inline]
    fn retain_held(&mut self, held: &[HeldEv], from_ix: usize) {
        let mut n = 0;
        for k in 0..self.len as usize {
            let g = self.ids[k];
            let still = held
                .iter()
                .enumerate()
                .any(|(j, h)| j != from_ix && h.lock == g);
            if still {
                self.ids[n] = g;
                n += 1;
            }
        }
        self.len = n as u8;
    }

    pub fn ids(&self) -> &[LockId] {
        &self.ids[..self.len as usize]
    }
}

/// One edge of the order graph.
#[derive(Clone, Debug)]
pub(crate) struct OrderEdge {
    pub from: LockId,
    pub to: LockId,
    pub count: u64,
    /// The earliest occurrence by target time.
    pub first: EdgeSite,
    pub gates: GateSet,
}

/// A bounded order graph.
#[derive(Clone)]
pub(crate) struct OrderGraph {
    index: FxHashMap<u64, u32>,
    pub edges: Vec<OrderEdge>,
    max_edges: usize,
}

#[inline]
fn key(from: LockId, to: LockId) -> u64 {
    ((from as u64) << 32) | to as u64
}

/// A cycle in the order graph, as indices into [`OrderGraph::edges`], starting at its lowest lock.
pub(crate) type EdgeCycle = Vec<u32>;

impl OrderGraph {
    pub fn new(max_edges: usize) -> Self {
        Self {
            index: FxHashMap::default(),
            edges: Vec::new(),
            max_edges,
        }
    }

    /// Records `held[from_ix].lock -> to`. Returns false when the edge is new and the table is
    /// full.
    #[inline]
    pub fn record(
        &mut self,
        held: &[HeldEv],
        from_ix: usize,
        to: LockId,
        hart: HartId,
        to_pc: u64,
        time_ns: u64,
    ) -> bool {
        let from = held[from_ix].lock;
        if let Some(&ix) = self.index.get(&key(from, to)) {
            let e = &mut self.edges[ix as usize];
            e.count += 1;
            if e.gates.len != 0 {
                e.gates.retain_held(held, from_ix);
            }
            if time_ns < e.first.time_ns {
                e.first = EdgeSite {
                    hart,
                    from_pc: held[from_ix].pc,
                    to_pc,
                    time_ns,
                };
            }
            return true;
        }
        self.insert(held, from_ix, to, hart, to_pc, time_ns)
    }

    #[cold]
    fn insert(
        &mut self,
        held: &[HeldEv],
        from_ix: usize,
        to: LockId,
        hart: HartId,
        to_pc: u64,
        time_ns: u64,
    ) -> bool {
        if self.edges.len() >= self.max_edges {
            return false;
        }
        let from = held[from_ix].lock;
        self.index.insert(key(from, to), self.edges.len() as u32);
        self.edges.push(OrderEdge {
            from,
            to,
            count: 1,
            first: EdgeSite {
                hart,
                from_pc: held[from_ix].pc,
                to_pc,
                time_ns,
            },
            gates: GateSet::first(held, from_ix),
        });
        true
    }

    pub fn edge(&self, from: LockId, to: LockId) -> Option<u32> {
        self.index.get(&key(from, to)).copied()
    }

    /// Every elementary cycle of length 2 (all of them), then of length 3..=`max_len` found
    /// within `step_budget` edge visits. Returns the cycles and whether the search was cut short
    /// (by the budget or by `max_cycles`).
    pub fn cycles(
        &self,
        max_len: usize,
        max_cycles: usize,
        step_budget: u64,
    ) -> (Vec<EdgeCycle>, bool) {
        let mut out = Vec::new();
        let mut truncated = false;
        for (i, e) in self.edges.iter().enumerate() {
            if e.from < e.to {
                if let Some(j) = self.edge(e.to, e.from) {
                    if out.len() >= max_cycles {
                        return (out, true);
                    }
                    out.push(vec![i as u32, j]);
                }
            }
        }
        if max_len < 3 || self.edges.is_empty() {
            return (out, truncated);
        }

        // Out-edges by source, for the depth-first search.
        let mut by_from: Vec<u32> = (0..self.edges.len() as u32).collect();
        by_from.sort_unstable_by_key(|&i| {
            let e = &self.edges[i as usize];
            (e.from, e.to)
        });
        let out_edges = |node: LockId| -> &[u32] {
            let lo = by_from.partition_point(|&i| self.edges[i as usize].from < node);
            let hi = by_from.partition_point(|&i| self.edges[i as usize].from <= node);
            &by_from[lo..hi]
        };

        let mut search = CycleSearch {
            graph: self,
            max_len,
            max_cycles,
            steps_left: step_budget,
            path: Vec::with_capacity(max_len),
            truncated: false,
        };
        let mut starts: Vec<LockId> = self.edges.iter().map(|e| e.from).collect();
        starts.sort_unstable();
        starts.dedup();
        for s in starts {
            search.from(s, s, &out_edges, &mut out);
            if search.truncated {
                break;
            }
        }
        truncated |= search.truncated;
        (out, truncated)
    }
}

struct CycleSearch<'a> {
    graph: &'a OrderGraph,
    max_len: usize,
    max_cycles: usize,
    steps_left: u64,
    path: Vec<u32>,
    truncated: bool,
}

impl CycleSearch<'_> {
    /// Extends the path from `node`, through locks above `start` only, so each cycle is found
    /// once, from its lowest lock.
    fn from<'e>(
        &mut self,
        start: LockId,
        node: LockId,
        out_edges: &impl Fn(LockId) -> &'e [u32],
        out: &mut Vec<EdgeCycle>,
    ) {
        for &ei in out_edges(node) {
            if self.steps_left == 0 || out.len() >= self.max_cycles {
                self.truncated = true;
                return;
            }
            self.steps_left -= 1;
            let to = self.graph.edges[ei as usize].to;
            let len = self.path.len() + 1;
            if to == start {
                if len >= 3 {
                    let mut c = self.path.clone();
                    c.push(ei);
                    out.push(c);
                }
            } else if to > start && len < self.max_len && !self.on_path(to) {
                self.path.push(ei);
                self.from(start, to, out_edges, out);
                self.path.pop();
                if self.truncated {
                    return;
                }
            }
        }
    }

    fn on_path(&self, lock: LockId) -> bool {
        self.path
            .iter()
            .any(|&ei| self.graph.edges[ei as usize].to == lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(locks: &[LockId]) -> Vec<HeldEv> {
        locks
            .iter()
            .map(|&lock| HeldEv {
                lock,
                epoch: 0,
                pc: 0x1000 + lock as u64,
                since_ns: 0,
            })
            .collect()
    }

    #[test]
    fn gates_shrink_to_the_locks_held_every_time() {
        let mut g = OrderGraph::new(16);
        g.record(&held(&[9, 8, 1]), 2, 2, 0, 0x2, 10);
        g.record(&held(&[9, 1]), 1, 2, 1, 0x2, 20);
        let e = &g.edges[g.edge(1, 2).unwrap() as usize];
        assert_eq!(e.count, 2);
        assert_eq!(e.gates.ids(), &[9]);
        g.record(&held(&[1]), 0, 2, 1, 0x2, 5);
        let e = &g.edges[g.edge(1, 2).unwrap() as usize];
        assert!(e.gates.ids().is_empty());
        assert_eq!(e.first.time_ns, 5, "earliest occurrence is kept");
    }

    #[test]
    fn table_is_bounded() {
        let mut g = OrderGraph::new(2);
        assert!(g.record(&held(&[1]), 0, 2, 0, 0, 0));
        assert!(g.record(&held(&[1]), 0, 3, 0, 0, 0));
        assert!(!g.record(&held(&[1]), 0, 4, 0, 0, 0));
        assert!(
            g.record(&held(&[1]), 0, 2, 0, 0, 0),
            "known edges still count"
        );
        assert_eq!(g.edges.len(), 2);
    }

    #[test]
    fn finds_two_and_three_cycles_once_each() {
        let mut g = OrderGraph::new(64);
        for (a, b) in [(1, 2), (2, 1), (3, 4), (4, 5), (5, 3), (6, 7)] {
            g.record(&held(&[a]), 0, b, 0, 0, 0);
        }
        let (cycles, truncated) = g.cycles(4, 100, 10_000);
        assert!(!truncated);
        let mut as_locks: Vec<Vec<LockId>> = cycles
            .iter()
            .map(|c| c.iter().map(|&i| g.edges[i as usize].from).collect())
            .collect();
        as_locks.sort();
        assert_eq!(as_locks, vec![vec![1, 2], vec![3, 4, 5]]);
    }

    #[test]
    fn search_stops_at_its_budget() {
        let mut g = OrderGraph::new(10_000);
        // A dense graph among 30 locks has very many cycles.
        for a in 0..30 {
            for b in 0..30 {
                if a != b {
                    g.record(&held(&[a]), 0, b, 0, 0, 0);
                }
            }
        }
        let (cycles, truncated) = g.cycles(4, 1000, 5000);
        assert!(truncated);
        assert!(cycles.len() <= 1000);
    }
}
