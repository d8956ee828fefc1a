//! The lock-order report: cycles in the instance graph, classes whose nested instances follow no
//! fixed order, re-entered reads, and spinlocks held across a sleeplock.

use rustc_hash::FxHashSet;

use super::analyzer::Analyzer;
use super::classes::Instance;
use super::lockdep::order_breaks;
use super::mode_state::SleepHolding;
use super::order::{EdgeSite, OrderEdge};
use super::views::{Inversion, InversionKind, LockOrderReport, OrderEdgeView};
use crate::model::LockId;

/// Inversions reported at most per query.
const MAX_ORDER_CYCLES: usize = 256;
/// Edge visits allowed to the search for order cycles longer than 2, per query.
const ORDER_CYCLE_STEPS: u64 = 1_000_000;

impl Analyzer {
    /// Potential deadlocks seen in the events so far: cycles in the lock-order graph, then
    /// classes whose nested instances follow no fixed order (lockdep's rule, needs a snapshot
    /// to know classes), then reads re-entered by the hart holding them.
    pub fn lock_order(&self) -> LockOrderReport {
        let g = &self.events.order;
        let (cycles, truncated) = g.cycles(
            self.config.max_order_cycle_len,
            MAX_ORDER_CYCLES,
            ORDER_CYCLE_STEPS,
        );
        let mut report = LockOrderReport {
            edges: g.edges.len(),
            search_truncated: truncated,
            ..LockOrderReport::default()
        };
        let mut in_cycles: FxHashSet<u32> = FxHashSet::default();
        for c in cycles {
            let edges: Vec<OrderEdgeView> = c
                .iter()
                .map(|&i| self.edge_view(&g.edges[i as usize]))
                .collect();
            let common = common_gates(&edges);
            let inv = Inversion {
                locks: edges.iter().map(|e| e.from).collect(),
                names: edges.iter().map(|e| e.from_name.clone()).collect(),
                guarded: !common.is_empty(),
                common_gates: common,
                edges,
                kind: InversionKind::Cycle,
                class: None,
                orders_seen: Vec::new(),
                writer_waiting: None,
            };
            if inv.guarded {
                report.guarded.push(inv);
            } else {
                in_cycles.extend(c.iter().copied());
                report.inversions.push(inv);
            }
        }
        let instances = self.instances();
        for b in order_breaks(g, &instances, &in_cycles) {
            let edges: Vec<OrderEdgeView> = [b.minority, b.majority]
                .iter()
                .map(|&i| self.edge_view(&g.edges[i as usize]))
                .collect();
            let inv = Inversion {
                locks: edges.iter().map(|e| e.from).collect(),
                names: edges.iter().map(|e| e.from_name.clone()).collect(),
                guarded: !b.common_gates.is_empty(),
                common_gates: b.common_gates,
                edges,
                kind: InversionKind::InstanceOrder,
                class: Some(b.class),
                orders_seen: b.seen.to_vec(),
                writer_waiting: None,
            };
            if inv.guarded {
                report.guarded.push(inv);
            } else {
                report.inversions.push(inv);
            }
        }
        for r in &self.events.rereads {
            let name = self.lock_name(r.lock);
            report.inversions.push(Inversion {
                locks: vec![r.lock],
                names: vec![name.clone()],
                edges: vec![OrderEdgeView {
                    from: r.lock,
                    from_name: name.clone(),
                    to: r.lock,
                    to_name: name,
                    count: r.count,
                    first: EdgeSite {
                        hart: r.hart,
                        from_pc: r.first_pc,
                        to_pc: r.again_pc,
                        time_ns: r.time_ns,
                    },
                    gates: Vec::new(),
                }],
                guarded: false,
                common_gates: Vec::new(),
                kind: InversionKind::RecursiveRead,
                class: self.class_of(r.lock),
                orders_seen: Vec::new(),
                writer_waiting: r.writer_waiting,
            });
        }
        report
    }

    /// Spinlocks held while their hart took a sleeplock, with names.
    pub fn sleep_holding(&self) -> Vec<SleepHolding> {
        self.events
            .sleeps
            .iter()
            .map(|s| SleepHolding {
                lock_name: self.lock_name(s.lock),
                sleeplock_name: self.sleeplock_name(s.sleeplock),
                ..s.clone()
            })
            .collect()
    }

    /// A sleeplock by its inner spinlock: its path when the snapshot lists it.
    fn sleeplock_name(&self, inner: LockId) -> String {
        self.last
            .as_ref()
            .and_then(|s| s.sleeplocks.iter().find(|x| x.lock == Some(inner)))
            .map_or_else(
                || self.lock_name(inner),
                |x| x.name.clone().unwrap_or_else(|| x.path.clone()),
            )
    }

    /// Every lock of the last snapshot as an instance of its class, by id.
    fn instances(&self) -> Vec<Option<Instance>> {
        self.last.as_ref().map_or_else(Vec::new, |s| {
            s.locks.iter().map(|l| Some(Instance::of(l))).collect()
        })
    }

    pub(super) fn class_of(&self, id: LockId) -> Option<String> {
        let l = self.last.as_ref()?.lock(id)?;
        Some(super::classes::lock_class(l))
    }

    fn edge_view(&self, e: &OrderEdge) -> OrderEdgeView {
        OrderEdgeView {
            from: e.from,
            from_name: self.lock_name(e.from),
            to: e.to,
            to_name: self.lock_name(e.to),
            count: e.count,
            first: e.first,
            gates: e.gates.ids().to_vec(),
        }
    }
}

/// The gates every edge shares.
fn common_gates(edges: &[OrderEdgeView]) -> Vec<LockId> {
    let mut common: Vec<LockId> = edges[0].gates.clone();
    for e in &edges[1..] {
        common.retain(|g| e.gates.contains(g));
    }
    common
}

#[cfg(test)]
mod scratch {
    #[test]
    fn scratch_edges() {
        let Ok(p) = std::env::var("SCRATCH_TRACE") else {
            return;
        };
        let mut r = crate::trace::TraceReader::open(std::path::Path::new(&p)).unwrap();
        let mut a = super::Analyzer::default();
        a.replay(&mut r).unwrap();
        let inst = a.instances();
        let mut same = 0;
        for e in &a.events.order.edges {
            let (f, t) = (
                inst.get(e.from as usize).cloned().flatten(),
                inst.get(e.to as usize).cloned().flatten(),
            );
            let (fc, tc) = (
                f.map(|x| x.class).unwrap_or_default(),
                t.map(|x| x.class).unwrap_or_default(),
            );
            if fc == tc {
                same += 1;
            }
            println!(
                "{} -> {} ({} -> {}) count {} gates {:?}",
                a.lock_name(e.from),
                a.lock_name(e.to),
                fc,
                tc,
                e.count,
                e.gates.ids()
            );
        }
        println!("same-class edges: {same}");
    }
}
