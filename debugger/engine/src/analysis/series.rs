//! Rates and sparkline history from exact counters, sampled by snapshots.
//!
//! Time is cut into fixed intervals of target time. The counter delta between two snapshots is
//! put in the interval of the later one, and each interval remembers the time of the snapshot
//! before its first delta, so a rate is exact: the deltas of the intervals covering the window
//! divided by the time from that snapshot (or the lock's baseline) to the last one.

use serde::{Deserialize, Serialize};

use crate::model::{LockCounters, Snapshot};

const ACQ: usize = 0;
const CONT: usize = 1;
const SPIN: usize = 2;
/// Time of the snapshot the slot's first delta starts from.
const START: usize = 3;
type Slot = [u64; 4];

/// Per-second rates over the sliding window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// The target time the rates are measured over; shorter than the window right after the
    /// first snapshot or a counter reset.
    pub span_ns: u64,
    pub acquires_per_s: f64,
    pub contended_per_s: f64,
    pub spins_per_s: f64,
}

#[derive(Clone, Debug)]
struct LockSeries {
    last: LockCounters,
    /// When counting started (first sight or last reset).
    baseline_ns: u64,
    /// Closed intervals, a ring; `head` is the next to write.
    ring: Vec<Slot>,
    head: usize,
    filled: usize,
    current: Slot,
}

impl LockSeries {
    fn new(len: usize, c: LockCounters, time_ns: u64) -> Self {
        Self {
            last: c,
            baseline_ns: time_ns,
            ring: vec![[0; 4]; len],
            head: 0,
            filled: 0,
            current: [0; 4],
        }
    }

    /// Ends the current interval (which started at `start_ns`), then `empty_after` intervals
    /// with no snapshot; the next one starts at `next_start_ns`.
    fn close(&mut self, start_ns: u64, empty_after: u64, next_start_ns: u64) {
        let mut cur = std::mem::take(&mut self.current);
        cur[START] = start_ns;
        self.push(cur);
        for _ in 0..empty_after.min(self.ring.len() as u64) {
            self.push([0, 0, 0, next_start_ns]);
        }
    }

    fn push(&mut self, s: Slot) {
        let len = self.ring.len();
        self.ring[self.head] = s;
        self.head = (self.head + 1) % len;
        self.filled = (self.filled + 1).min(len);
    }

    /// The newest `n` closed intervals, oldest first.
    fn newest(&self, n: usize) -> impl Iterator<Item = &Slot> {
        let len = self.ring.len();
        let n = n.min(self.filled);
        (0..n).map(move |k| &self.ring[(self.head + len - n + k) % len])
    }
}

#[derive(Clone)]
pub(crate) struct Series {
    interval_ns: u64,
    /// Intervals in the window, the current one included.
    window_slots: usize,
    history_len: usize,
    ring_len: usize,
    max_locks: usize,
    current_slot: Option<u64>,
    /// Time of the snapshot before the current interval's first delta.
    current_start_ns: u64,
    last_time_ns: Option<u64>,
    locks: Vec<Option<LockSeries>>,
    /// Locks whose counters went down since the last snapshot (a reboot): their series restarted.
    pub resets: u64,
}

impl Series {
    pub fn new(interval_ns: u64, window_ns: u64, history_len: usize, max_locks: usize) -> Self {
        let window_slots = window_ns.div_ceil(interval_ns).max(1) as usize;
        Self {
            interval_ns,
            window_slots,
            history_len,
            ring_len: history_len.max(window_slots).max(1),
            max_locks,
            current_slot: None,
            current_start_ns: 0,
            last_time_ns: None,
            locks: Vec::new(),
            resets: 0,
        }
    }

    pub fn clear(&mut self) {
        self.current_slot = None;
        self.last_time_ns = None;
        self.locks.clear();
    }

    /// `t` is the snapshot's time, made monotonic by the caller (who clears on a new boot).
    pub fn observe(&mut self, snap: &Snapshot, t: u64) {
        let slot = t / self.interval_ns;
        match (self.current_slot, self.last_time_ns) {
            (Some(cur), Some(prev)) if slot > cur => {
                let empty = slot - cur - 1;
                for ls in self.locks.iter_mut().flatten() {
                    ls.close(self.current_start_ns, empty, prev);
                }
                self.current_start_ns = prev;
            }
            (None, _) | (_, None) => self.current_start_ns = t,
            _ => {}
        }
        self.current_slot = Some(slot);
        self.last_time_ns = Some(t);

        let n = snap.locks.len().min(self.max_locks);
        if self.locks.len() < n {
            self.locks.resize_with(n, || None);
        }
        for (i, l) in snap.locks.iter().take(n).enumerate() {
            let c = l.counters;
            let Some(ls) = &mut self.locks[i] else {
                self.locks[i] = Some(LockSeries::new(self.ring_len, c, t));
                continue;
            };
            let p = ls.last;
            if c.acquires < p.acquires || c.contended < p.contended || c.spins < p.spins {
                self.resets += 1;
                *ls = LockSeries::new(self.ring_len, c, t);
                continue;
            }
            ls.current[ACQ] = ls.current[ACQ].saturating_add(c.acquires - p.acquires);
            ls.current[CONT] = ls.current[CONT].saturating_add(c.contended - p.contended);
            ls.current[SPIN] = ls.current[SPIN].saturating_add(c.spins - p.spins);
            ls.last = c;
        }
    }

    fn lock(&self, id: usize) -> Option<&LockSeries> {
        self.locks.get(id)?.as_ref()
    }

    pub fn rates(&self, id: usize) -> Option<Rates> {
        let ls = self.lock(id)?;
        let now = self.last_time_ns?;
        let closed = (self.window_slots - 1).min(ls.filled);
        let mut sum = ls.current;
        let mut start = self.current_start_ns;
        for (i, s) in ls.newest(closed).enumerate() {
            if i == 0 {
                start = s[START];
            }
            for k in [ACQ, CONT, SPIN] {
                sum[k] = sum[k].saturating_add(s[k]);
            }
        }
        let span = now.saturating_sub(start.max(ls.baseline_ns));
        if span == 0 {
            return None;
        }
        let per_s = |v: u64| v as f64 * 1e9 / span as f64;
        Some(Rates {
            span_ns: span,
            acquires_per_s: per_s(sum[ACQ]),
            contended_per_s: per_s(sum[CONT]),
            spins_per_s: per_s(sum[SPIN]),
        })
    }

    /// Contended and acquired counts per closed interval, oldest first.
    pub fn history(&self, id: usize) -> (Vec<u64>, Vec<u64>) {
        match self.lock(id) {
            Some(ls) => (
                ls.newest(self.history_len).map(|s| s[CONT]).collect(),
                ls.newest(self.history_len).map(|s| s[ACQ]).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }
}
