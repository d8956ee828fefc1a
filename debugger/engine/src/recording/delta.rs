//! Counters over a range of a recording: what the lab's tests measure over each test. As
//! numbers ([`Timeline::range_delta`], for scripts) and as a whole [`View`] whose counters are
//! the changes over the range ([`delta_view`], what the dashboard shows for a selected range).

use std::collections::HashMap;

use serde::Serialize;

use super::timeline::{Position, Timeline};
use crate::analysis::{ClassRow, LockRow, TimeStats};
use crate::analysis::{HistView, Site};
use crate::monitor::View;

/// Counter changes of one lock (or class) over a range.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CounterDelta {
    pub name: String,
    pub class: String,
    pub acquires: u64,
    pub contended: u64,
    /// The lab's `#test-and-set`.
    pub spins: u64,
    pub wait_ns: u64,
    pub hold_ns: u64,
}

/// Counter deltas over `[t0, t1]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RangeDelta {
    pub t0_ns: u64,
    pub t1_ns: u64,
    pub locks: Vec<CounterDelta>,
    pub classes: Vec<CounterDelta>,
}

impl Timeline {
    /// Per-lock and per-class counter changes between two positions (what the lab's tests
    /// measure over each test).
    pub fn range_delta(&self, p0: Position, p1: Position) -> RangeDelta {
        let (p0, p1) = (p0.min(p1), p0.max(p1));
        let (a, b) = (self.monitor_at(p0), self.monitor_at(p1));
        let (ra, rb) = (a.analyzer().lock_rows(), b.analyzer().lock_rows());
        let delta = |name: &str,
                     class: &str,
                     x: Option<(u64, u64, u64, u64, u64)>,
                     y: (u64, u64, u64, u64, u64)| {
            let x = x.unwrap_or_default();
            // Counters that went down mean a new boot: count from zero.
            let d = |new: u64, old: u64| if new >= old { new - old } else { new };
            CounterDelta {
                name: name.to_owned(),
                class: class.to_owned(),
                acquires: d(y.0, x.0),
                contended: d(y.1, x.1),
                spins: d(y.2, x.2),
                wait_ns: d(y.3, x.3),
                hold_ns: d(y.4, x.4),
            }
        };
        let key = |r: &crate::analysis::LockRow| {
            (
                r.acquires,
                r.contended,
                r.spins,
                r.wait.total_ns,
                r.hold.total_ns,
            )
        };
        let locks: Vec<CounterDelta> = rb
            .iter()
            .map(|r| {
                let old = ra.iter().find(|o| o.id == r.id).map(key);
                delta(&r.name, &r.class, old, key(r))
            })
            .collect();
        let mut classes: Vec<CounterDelta> = Vec::new();
        for l in &locks {
            let class = if l.class.is_empty() {
                &l.name
            } else {
                &l.class
            };
            match classes.iter_mut().find(|c| c.name == *class) {
                Some(c) => {
                    c.acquires += l.acquires;
                    c.contended += l.contended;
                    c.spins += l.spins;
                    c.wait_ns += l.wait_ns;
                    c.hold_ns += l.hold_ns;
                }
                None => classes.push(CounterDelta {
                    name: class.clone(),
                    class: class.clone(),
                    ..l.clone()
                }),
            }
        }
        RangeDelta {
            t0_ns: self.time_of(p0),
            t1_ns: self.time_of(p1),
            locks,
            classes,
        }
    }
}

/// `new - old`, or `new` when the counter went down (a new boot counts from zero).
fn d(new: u64, old: u64) -> u64 {
    if new >= old {
        new - old
    } else {
        new
    }
}

/// A maximum (or minimum) over the range: the value at its end when it changed inside the
/// range (then it happened there); unknown otherwise.
fn changed(new: Option<u64>, old: Option<u64>) -> Option<u64> {
    match (new, old) {
        (Some(n), Some(o)) if n != o => Some(n),
        (Some(n), None) => Some(n),
        _ => None,
    }
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

fn hist(new: &HistView, old: &HistView) -> HistView {
    let before: HashMap<u64, u64> = old.buckets.iter().map(|b| (b.lo_ns, b.count)).collect();
    let mut buckets: Vec<_> = new
        .buckets
        .iter()
        .map(|b| {
            let mut b = *b;
            b.count = d(b.count, before.get(&b.lo_ns).copied().unwrap_or(0));
            b
        })
        .collect();
    // Trim empty buckets at both ends, as `Log2Hist::view` does.
    while buckets.last().is_some_and(|b| b.count == 0) {
        buckets.pop();
    }
    let first = buckets
        .iter()
        .position(|b| b.count != 0)
        .unwrap_or(buckets.len());
    buckets.drain(..first);
    HistView {
        samples: buckets.iter().map(|b| b.count).sum(),
        buckets,
    }
}

fn time(new: &TimeStats, old: &TimeStats) -> TimeStats {
    let count = d(new.count, old.count);
    let total_ns = d(new.total_ns, old.total_ns);
    TimeStats {
        count,
        total_ns,
        avg_ns: (count > 0).then(|| total_ns / count),
        max_ns: changed(new.max_ns, old.max_ns),
        min_ns: changed(new.min_ns, old.min_ns),
        exact: new.exact,
        hist: hist(&new.hist, &old.hist),
    }
}

fn sites(new: &[Site], old: &[Site]) -> Vec<Site> {
    let mut out: Vec<Site> = new
        .iter()
        .map(|s| {
            let o = old.iter().find(|o| o.pc == s.pc);
            Site {
                pc: s.pc,
                count: d(s.count, o.map_or(0, |o| o.count)),
                wait_total_ns: d(s.wait_total_ns, o.map_or(0, |o| o.wait_total_ns)),
                wait_max_ns: changed(Some(s.wait_max_ns), o.map(|o| o.wait_max_ns)).unwrap_or(0),
            }
        })
        .filter(|s| s.count > 0)
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.pc.cmp(&b.pc)));
    out
}

fn lock_row(new: &LockRow, old: Option<&LockRow>) -> LockRow {
    let Some(old) = old else {
        return new.clone();
    };
    let (acquires, contended) = (
        d(new.acquires, old.acquires),
        d(new.contended, old.contended),
    );
    LockRow {
        acquires,
        contended,
        spins: d(new.spins, old.spins),
        contention_pct: pct(contended, acquires),
        wait: time(&new.wait, &old.wait),
        hold: time(&new.hold, &old.hold),
        top_sites: sites(&new.top_sites, &old.top_sites),
        sites_other: sites(
            std::slice::from_ref(&new.sites_other),
            std::slice::from_ref(&old.sites_other),
        )
        .pop()
        .unwrap_or(Site {
            pc: new.sites_other.pc,
            ..Site::default()
        }),
        events: d(new.events, old.events),
        ..new.clone()
    }
}

fn class_row(new: &ClassRow, old: Option<&ClassRow>) -> ClassRow {
    let Some(old) = old else {
        return new.clone();
    };
    let (acquires, contended) = (
        d(new.acquires, old.acquires),
        d(new.contended, old.contended),
    );
    ClassRow {
        acquires,
        contended,
        spins: d(new.spins, old.spins),
        contention_pct: pct(contended, acquires),
        wait: time(&new.wait, &old.wait),
        hold: time(&new.hold, &old.hold),
        top_sites: sites(&new.top_sites, &old.top_sites),
        ..new.clone()
    }
}

/// The view at the end of a range with every counter replaced by its change over the range:
/// acquisitions, contentions, spins (`#test-and-set`), wait and hold totals and averages, their
/// histograms and contention sites, buffer-cache hits, misses and steals, allocations and
/// steals, events. State stays as at the end (holders, spins, occupancy, free pages). A maximum
/// (or minimum) is shown only when it changed inside the range: then it happened there.
pub fn delta_view(before: &View, after: &View) -> View {
    let mut v = after.clone();
    let r = &mut v.report;
    let old = &before.report;
    for l in &mut r.locks {
        *l = lock_row(l, old.locks.iter().find(|o| o.id == l.id));
    }
    for c in &mut r.classes {
        *c = class_row(c, old.classes.iter().find(|o| o.class == c.class));
    }
    for h in &mut r.harts {
        let o = old.harts.iter().find(|o| o.hart == h.hart);
        h.ops = match (h.ops, o.and_then(|o| o.ops)) {
            (Some(n), Some(o)) => Some(d(n, o)),
            (n, _) => n,
        };
        h.events = d(h.events, o.map_or(0, |o| o.events));
        h.lost = d(h.lost, o.map_or(0, |o| o.lost));
    }
    if let (Some(b), Some(ob)) = (&mut r.bcache, &old.bcache) {
        for k in &mut b.buckets {
            if let Some(o) = ob.buckets.iter().find(|o| o.index == k.index) {
                k.hits = d(k.hits, o.hits);
                k.misses = d(k.misses, o.misses);
                k.steals = d(k.steals, o.steals);
                k.hit_rate =
                    (k.hits + k.misses > 0).then(|| k.hits as f64 / (k.hits + k.misses) as f64);
            }
        }
        b.hits = d(b.hits, ob.hits);
        b.misses = d(b.misses, ob.misses);
        b.steals = d(b.steals, ob.steals);
        b.hit_rate = (b.hits + b.misses > 0).then(|| b.hits as f64 / (b.hits + b.misses) as f64);
    }
    if let (Some(k), Some(ok)) = (&mut r.kmem, &old.kmem) {
        for l in &mut k.lists {
            if let Some(o) = ok.lists.iter().find(|o| o.hart == l.hart) {
                l.allocs = d(l.allocs, o.allocs);
                l.frees = d(l.frees, o.frees);
                l.steals = d(l.steals, o.steals);
                l.pages_stolen = d(l.pages_stolen, o.pages_stolen);
            }
        }
        k.steals = d(k.steals, ok.steals);
        k.pages_stolen = d(k.pages_stolen, ok.pages_stolen);
    }
    v.events_total = d(after.events_total, before.events_total);
    v.lost_total = d(after.lost_total, before.lost_total);
    v
}
