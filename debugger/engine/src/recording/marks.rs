//! Marks on the timeline: contention bursts, losses, panics, deadlocks, stalls, inversions,
//! found while the timeline replays the recording once.

use serde::Serialize;

use crate::monitor::Monitor;

/// A place on the timeline: the state after this many elements.
pub type Position = u64;

/// What a mark on the timeline is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarkKind {
    /// Contended acquisitions per second well above the recording's usual rate.
    ContentionBurst,
    /// Events lost (a ring overran).
    Lost,
    Panic,
    /// A deadlock became confirmed.
    Deadlock,
    Stall,
    /// A lock-order inversion became possible (its last edge was first taken).
    Inversion,
}

/// One mark: where, what, and a line to show.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mark {
    pub time_ns: u64,
    pub position: Position,
    pub kind: MarkKind,
    pub what: String,
}

/// What the open pass watches for marks.
#[derive(Default)]
pub(crate) struct MarkWatch {
    pub panic: bool,
    deadlock: bool,
    stall: bool,
    inversions: Vec<Vec<u32>>,
    /// (time, total contended acquisitions) at each snapshot.
    contended: Vec<(u64, Position, u64)>,
}

impl MarkWatch {
    pub fn snapshot(&mut self, m: &Monitor, p: Position, t: u64, marks: &mut Vec<Mark>) {
        let a = m.analyzer();
        if let Some(snap) = a.snapshot() {
            if let (Some(panic), false) = (&snap.panic, self.panic) {
                self.panic = true;
                marks.push(Mark {
                    time_ns: panic.time_ns.unwrap_or(t),
                    position: p,
                    kind: MarkKind::Panic,
                    what: format!("hart {} panicked: {}", panic.hart, panic.message),
                });
            }
            let total = snap
                .locks
                .iter()
                .fold(0u64, |s, l| s.saturating_add(l.counters.contended));
            self.contended.push((t, p, total));
        }
        let confirmed = a.deadlocks().iter().find(|c| c.confirmed);
        if let (Some(c), false) = (confirmed, self.deadlock) {
            marks.push(Mark {
                time_ns: t,
                position: p,
                kind: MarkKind::Deadlock,
                what: c.describe(|pc| format!("{pc:#x}")),
            });
        }
        self.deadlock = confirmed.is_some();
        let stalled = a.stall().filter(|s| !s.harts.is_empty());
        if let (Some(s), false) = (stalled, self.stall) {
            let harts: Vec<String> = s.harts.iter().map(|h| format!("hart {}", h.hart)).collect();
            marks.push(Mark {
                time_ns: t,
                position: p,
                kind: MarkKind::Stall,
                what: format!("stalled: {}", harts.join(", ")),
            });
        }
        self.stall = stalled.is_some();
    }

    /// New lock-order inversions, dated by the first occurrence of their last edge.
    pub fn inversions(&mut self, m: &Monitor, p: Position, marks: &mut Vec<Mark>) {
        for inv in m.analyzer().lock_order().inversions {
            if self.inversions.contains(&inv.locks) {
                continue;
            }
            let t = inv.edges.iter().map(|e| e.first.time_ns).max().unwrap_or(0);
            marks.push(Mark {
                time_ns: t,
                position: p,
                kind: MarkKind::Inversion,
                what: format!("lock-order inversion: {}", inv.names.join(" -> ")),
            });
            self.inversions.push(inv.locks);
        }
    }

    /// Runs of snapshot intervals whose contention rate is over 4x the recording's mean (and
    /// at least 100/s): a mark at the start of each.
    pub fn bursts(&self, marks: &mut Vec<Mark>) {
        let c = &self.contended;
        let (Some(first), Some(last)) = (c.first(), c.last()) else {
            return;
        };
        let span = last.0.saturating_sub(first.0);
        if span == 0 {
            return;
        }
        let mean = last.2.saturating_sub(first.2) as f64 * 1e9 / span as f64;
        let threshold = (mean * 4.0).max(100.0);
        let mut inside = false;
        for w in c.windows(2) {
            let (t0, _, n0) = w[0];
            let (t1, p1, n1) = w[1];
            let dt = t1.saturating_sub(t0);
            let rate = if dt == 0 || n1 < n0 {
                0.0
            } else {
                (n1 - n0) as f64 * 1e9 / dt as f64
            };
            let hot = rate >= threshold;
            if hot && !inside {
                marks.push(Mark {
                    time_ns: t1,
                    position: p1,
                    kind: MarkKind::ContentionBurst,
                    what: format!("{rate:.0} contended acquisitions/s (mean {mean:.0}/s)"),
                });
            }
            inside = hot;
        }
    }
}
