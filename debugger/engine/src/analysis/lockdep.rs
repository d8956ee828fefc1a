//! Lockdep's rule for nested instances of one class: they are safe only when every nesting seen
//! follows one fixed order of the instances (by index ascending or descending, parent before
//! child or child before parent), or when the nestings that disagree happen under a common gate
//! lock. A cycle in the instance graph is not needed: a stealing `bget` that holds its own bucket
//! while scanning `(b + i) % 13` shows dozens of nested bucket edges and no cycle in a whole run,
//! yet two harts stealing toward each other deadlock.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use super::classes::Instance;
use super::order::OrderGraph;
use crate::model::LockId;

/// Pairs of edges compared for a common gate, at most, per class.
const PAIR_BUDGET: u64 = 1_000_000;

/// Which way one nesting of two instances of a class went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NestOrder {
    /// The lower index held, the higher taken.
    Ascending,
    Descending,
    /// The lock of a structure held, the lock of one of its members taken.
    ParentFirst,
    ChildFirst,
}

impl NestOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            NestOrder::Ascending => "ascending index",
            NestOrder::Descending => "descending index",
            NestOrder::ParentFirst => "parent before child",
            NestOrder::ChildFirst => "child before parent",
        }
    }
}

/// Nestings of one class that follow no fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OrderBreak {
    pub class: String,
    /// Distinct nested edges each way: the way most went first.
    pub seen: [(NestOrder, u64); 2],
    /// The witness: an edge that went the less common way, then one that went the other.
    pub minority: u32,
    pub majority: u32,
    /// Non-empty when every disagreeing pair compared held these locks: then the nestings
    /// cannot interleave.
    pub common_gates: Vec<LockId>,
}

/// The way edge `from -> to` went, when both are instances of one class and comparable.
fn nest_order(from: &Instance, to: &Instance) -> Option<NestOrder> {
    if from.class != to.class {
        return None;
    }
    if from.is_parent_of(to) {
        return Some(NestOrder::ParentFirst);
    }
    if to.is_parent_of(from) {
        return Some(NestOrder::ChildFirst);
    }
    if from.shape != to.shape
        || from.index.is_empty()
        || from.index.len() != to.index.len()
        || from.index == to.index
    {
        return None;
    }
    Some(if from.index < to.index {
        NestOrder::Ascending
    } else {
        NestOrder::Descending
    })
}

/// Every class whose nested instances disagree on their order. `instances` is indexed by lock
/// id; `in_cycles` are edges already reported in an unguarded cycle (a class is not reported
/// again when each of its disagreeing edges is one of them).
pub(crate) fn order_breaks(
    g: &OrderGraph,
    instances: &[Option<Instance>],
    in_cycles: &FxHashSet<u32>,
) -> Vec<OrderBreak> {
    let inst = |id: LockId| instances.get(id as usize).and_then(|x| x.as_ref());
    // (class, index or hierarchy) -> edges each way.
    let mut groups: BTreeMap<(&str, bool), [Vec<u32>; 2]> = BTreeMap::new();
    for (i, e) in g.edges.iter().enumerate() {
        if e.from == e.to {
            continue;
        }
        let (Some(f), Some(t)) = (inst(e.from), inst(e.to)) else {
            continue;
        };
        let Some(o) = nest_order(f, t) else {
            continue;
        };
        let (hierarchy, way) = match o {
            NestOrder::Ascending => (false, 0),
            NestOrder::Descending => (false, 1),
            NestOrder::ParentFirst => (true, 0),
            NestOrder::ChildFirst => (true, 1),
        };
        groups.entry((f.class.as_str(), hierarchy)).or_default()[way].push(i as u32);
    }
    let mut out = Vec::new();
    for ((class, hierarchy), [a, b]) in groups {
        if a.is_empty() || b.is_empty() {
            continue;
        }
        let names = if hierarchy {
            [NestOrder::ParentFirst, NestOrder::ChildFirst]
        } else {
            [NestOrder::Ascending, NestOrder::Descending]
        };
        // The less common way breaks the order the rest follow.
        let (mut few, mut most, few_name, most_name) = if b.len() <= a.len() {
            (b, a, names[1], names[0])
        } else {
            (a, b, names[0], names[1])
        };
        let by_time = |v: &mut Vec<u32>| v.sort_by_key(|&i| (g.edges[i as usize].first.time_ns, i));
        by_time(&mut few);
        by_time(&mut most);
        let seen = [(most_name, most.len() as u64), (few_name, few.len() as u64)];
        // A pair of disagreeing edges is news unless both are in a reported cycle; it can
        // deadlock unless both held a common gate.
        let gates = |i: u32| g.edges[i as usize].gates.ids();
        let mut budget = PAIR_BUDGET;
        let (mut open, mut gated) = (None, None);
        'pairs: for &m in &few {
            for &j in &most {
                if in_cycles.contains(&m) && in_cycles.contains(&j) {
                    continue;
                }
                if budget == 0 {
                    // Out of budget: report a pair as it is (a gate dropped can only make a
                    // report appear, never hide one).
                    open = gated.take().map(|(m, j, _)| (m, j)).or(Some((m, j)));
                    break 'pairs;
                }
                budget -= 1;
                let common: Vec<LockId> = gates(m)
                    .iter()
                    .copied()
                    .filter(|x| gates(j).contains(x))
                    .collect();
                if common.is_empty() {
                    open = Some((m, j));
                    break 'pairs;
                }
                gated.get_or_insert((m, j, common));
            }
        }
        let (minority, majority, common_gates) = match (open, gated) {
            (Some((m, j)), _) => (m, j, Vec::new()),
            (None, Some(pair)) => pair,
            (None, None) => continue,
        };
        out.push(OrderBreak {
            class: class.to_string(),
            seen,
            minority,
            majority,
            common_gates,
        });
    }
    out
}
