//! The hot path: pairing lock events per hart into wait and hold times, contention sites and
//! lock-order edges. Flat arrays indexed by hart and by a dense lock slot; no allocation per
//! event once a lock and a hart have been seen.

use serde::{Deserialize, Serialize};

use super::held::HeldEv;
use super::hist::Log2Hist;
use super::mode_state::{ReRead, RwHeld, RwSpin, SleepHolding, RW_HOLDS};
use super::order::OrderGraph;
use crate::model::{EventKind, HartId, LockEvent, LockId, LockMode};

/// Lock ids at or above this are not lockscope ids (the ring stores them in 16 bits).
pub const LOCK_ID_LIMIT: u32 = 1 << 16;
/// Depth of the held stack rebuilt per hart; deeper nesting puts the hart out of sync.
pub(crate) const STACK: usize = 16;
const NO_LOCK: u32 = u32::MAX;
const NO_SLOT: u32 = u32::MAX;

/// What the feed did that the analysis could not use, and why. All counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestStats {
    /// Events ingested and used.
    pub events: u64,
    /// Events the feeder reported lost (`note_lost`).
    pub lost: u64,
    /// Events dropped because their hart is beyond `max_harts`.
    pub dropped_bad_hart: u64,
    /// Events dropped because their lock id is beyond [`LOCK_ID_LIMIT`].
    pub dropped_bad_lock: u64,
    /// Events dropped because `max_locks` distinct locks are already tracked.
    pub dropped_untracked_lock: u64,
    /// Releases of a lock the hart was not known to hold, on a hart in sync.
    pub unmatched_releases: u64,
    /// Contended acquisitions whose `Spin` was not seen (lost); no wait time taken from them.
    pub unmatched_contended: u64,
    /// Spins on, or acquisitions of, a lock the hart already holds.
    pub double_acquires: u64,
    /// Times a hart nested deeper than the rebuilt stack holds (it then goes out of sync).
    pub stack_overflows: u64,
    /// Lock-order occurrences not recorded because the edge table was full.
    pub order_edge_overflow: u64,
    /// Rebuilt held entries dropped because a snapshot showed the hart holding nothing and the
    /// next one came without their release: it was lost without a gap being reported.
    pub stale_held_dropped: u64,
    /// Contended acquisitions counted in a lock's "other sites" because its site table was full.
    pub site_overflow: u64,
    /// Trylock acquisitions (they add no lock-order edge).
    #[serde(default)]
    pub trylocks: u64,
    /// Reader-writer events (read or write holds).
    #[serde(default)]
    pub rw_events: u64,
    /// Releases of a reader-writer hold no hart was known to have.
    #[serde(default)]
    pub unmatched_rw_releases: u64,
    /// Sleeplock events.
    #[serde(default)]
    pub sleep_events: u64,
    /// Occurrences of findings (re-entered reads, spinlocks held across a sleeplock) beyond the
    /// distinct ones kept.
    #[serde(default)]
    pub findings_overflow: u64,
}

/// Durations measured from events: exact min, a histogram, and sums for locks with no counters.
#[derive(Clone, Debug)]
pub(crate) struct Durations {
    pub n: u64,
    pub total: u64,
    pub min: u64,
    pub max: u64,
    pub hist: Log2Hist,
}

impl Default for Durations {
    fn default() -> Self {
        Self {
            n: 0,
            total: 0,
            min: u64::MAX,
            max: 0,
            hist: Log2Hist::default(),
        }
    }
}

impl Durations {
    #[inline]
    pub(crate) fn add(&mut self, d: u64) {
        self.n += 1;
        self.total = self.total.saturating_add(d);
        self.min = self.min.min(d);
        self.max = self.max.max(d);
        self.hist.add(d);
    }

    pub fn min(&self) -> Option<u64> {
        (self.n > 0).then_some(self.min)
    }

    pub fn merge(&mut self, o: &Durations) {
        self.n = self.n.saturating_add(o.n);
        self.total = self.total.saturating_add(o.total);
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.hist.merge(&o.hist);
    }
}

/// One contention point: where harts spun on a lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// Return address into the code that spun (symbolize `pc - 1`).
    pub pc: u64,
    /// Contended acquisitions that spun here.
    pub count: u64,
    pub wait_total_ns: u64,
    pub wait_max_ns: u64,
}

impl Site {
    fn add(&mut self, wait: u64) {
        self.count += 1;
        self.wait_total_ns = self.wait_total_ns.saturating_add(wait);
        self.wait_max_ns = self.wait_max_ns.max(wait);
    }
}

/// What the events say about one lock.
#[derive(Clone, Debug)]
pub(crate) struct LockEvents {
    pub id: LockId,
    /// Events of this lock ingested.
    pub events: u64,
    pub acquires: u64,
    pub contended: u64,
    pub spins: u64,
    pub wait: Durations,
    pub hold: Durations,
    /// Bounded by `max_sites_per_lock`; the rest go to `sites_other`.
    pub sites: Vec<Site>,
    pub sites_other: Site,
}

impl LockEvents {
    fn new(id: LockId) -> Self {
        Self {
            id,
            events: 0,
            acquires: 0,
            contended: 0,
            spins: 0,
            wait: Durations::default(),
            hold: Durations::default(),
            sites: Vec::new(),
            sites_other: Site::default(),
        }
    }

    #[inline]
    pub(crate) fn add_site(&mut self, pc: u64, wait: u64, max_sites: usize, overflow: &mut u64) {
        if let Some(s) = self.sites.iter_mut().find(|s| s.pc == pc) {
            s.add(wait);
        } else if self.sites.len() < max_sites {
            let mut s = Site {
                pc,
                ..Site::default()
            };
            s.add(wait);
            self.sites.push(s);
        } else {
            self.sites_other.add(wait);
            *overflow += 1;
        }
    }
}

/// One hart's replay state.
#[derive(Clone, Debug)]
pub(crate) struct HartEvents {
    spin_lock: u32,
    spin_ns: u64,
    spin_pc: u64,
    pub stack: [HeldEv; STACK],
    pub depth: usize,
    /// The rebuilt stack is complete: lock-order edges are taken from this hart. False from the
    /// start and after a gap, until snapshots prove the stack complete (see `observe_hart`).
    in_sync: bool,
    /// Counts snapshots that showed the hart holding nothing; stamped on pushed entries.
    epoch: u32,
    /// Set when the last snapshot showed the hart holding nothing after its last gap: every
    /// entry of epoch up to this one was released before that snapshot was read.
    pending: Option<u32>,
    pub events: u64,
    pub lost: u64,
    /// Reader-writer holds (see `modes.rs`), outside the spinlock stack.
    pub(crate) rw: [RwHeld; RW_HOLDS],
    pub(crate) rw_len: usize,
    pub(crate) rw_spin: Option<RwSpin>,
}

impl HartEvents {
    fn new() -> Self {
        Self {
            spin_lock: NO_LOCK,
            spin_ns: 0,
            spin_pc: 0,
            stack: [HeldEv::default(); STACK],
            depth: 0,
            in_sync: false,
            epoch: 0,
            pending: None,
            events: 0,
            lost: 0,
            rw: [RwHeld::default(); RW_HOLDS],
            rw_len: 0,
            rw_spin: None,
        }
    }

    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    pub fn held(&self) -> &[HeldEv] {
        &self.stack[..self.depth]
    }

    fn holds(&self, lock: LockId) -> bool {
        self.held().iter().any(|h| h.lock == lock)
    }

    /// Drops entries of epoch `marked` or older that `held` does not list; returns how many.
    fn prune(&mut self, marked: u32, held: &[LockId]) -> u64 {
        let mut n = 0;
        for i in 0..self.depth {
            let e = self.stack[i];
            // Epochs wrap; an entry is never 2^31 snapshots old.
            let old = marked.wrapping_sub(e.epoch) < 1 << 31;
            if !old || held.contains(&e.lock) {
                self.stack[n] = e;
                n += 1;
            }
        }
        let dropped = (self.depth - n) as u64;
        self.depth = n;
        dropped
    }

    /// Forgets everything that depended on events before a gap.
    fn lose_sync(&mut self) {
        self.spin_lock = NO_LOCK;
        self.depth = 0;
        self.in_sync = false;
        self.pending = None;
        self.rw_len = 0;
        self.rw_spin = None;
    }
}

/// Everything the events have built.
#[derive(Clone)]
pub(crate) struct EventState {
    max_harts: usize,
    max_locks: usize,
    max_sites: usize,
    pub harts: Vec<HartEvents>,
    slot_of: Vec<u32>,
    pub locks: Vec<LockEvents>,
    pub order: OrderGraph,
    pub stats: IngestStats,
    /// Lock ids that are processes' own locks (from snapshots): taking one means the hart may
    /// be switching threads, so its reader-writer holds may belong to a thread now elsewhere.
    proc_locks: Vec<bool>,
    pub(crate) sleeps: Vec<SleepHolding>,
    pub(crate) rereads: Vec<ReRead>,
    /// Code ranges of the kernel's own documented lock protocols.
    protocol_sites: Vec<(u64, u64)>,
}

impl EventState {
    pub fn new(max_harts: usize, max_locks: usize, max_sites: usize, max_edges: usize) -> Self {
        Self {
            max_harts,
            max_locks,
            max_sites,
            harts: Vec::new(),
            slot_of: Vec::new(),
            locks: Vec::new(),
            order: OrderGraph::new(max_edges),
            stats: IngestStats::default(),
            proc_locks: Vec::new(),
            sleeps: Vec::new(),
            rereads: Vec::new(),
            protocol_sites: Vec::new(),
        }
    }

    /// See [`super::AnalysisConfig::protocol_sites`].
    pub fn with_protocol_sites(mut self, sites: Vec<(u64, u64)>) -> Self {
        self.protocol_sites = sites;
        self
    }

    /// The acquisition at `pc` follows the kernel's own protocol (no order edge, no finding).
    pub(crate) fn protocol_site(&self, pc: u64) -> bool {
        self.protocol_sites.iter().any(|&(s, e)| s <= pc && pc < e)
    }

    pub(crate) fn max_sites(&self) -> usize {
        self.max_sites
    }

    /// The processes' own locks, from the last snapshot that lists processes.
    pub fn set_proc_locks(&mut self, locks: impl Iterator<Item = LockId>) {
        self.proc_locks.iter_mut().for_each(|x| *x = false);
        for l in locks {
            let i = l as usize;
            if l >= LOCK_ID_LIMIT {
                continue;
            }
            if self.proc_locks.len() <= i {
                self.proc_locks.resize(i + 1, false);
            }
            self.proc_locks[i] = true;
        }
    }

    pub fn lock(&self, id: LockId) -> Option<&LockEvents> {
        let s = *self.slot_of.get(id as usize)?;
        self.locks.get(s as usize)
    }

    pub fn hart(&self, id: HartId) -> Option<&HartEvents> {
        self.harts.get(id as usize)
    }

    fn hart_mut(&mut self, id: HartId) -> Option<&mut HartEvents> {
        let h = id as usize;
        if h >= self.max_harts {
            return None;
        }
        if h >= self.harts.len() {
            self.harts.resize_with(h + 1, HartEvents::new);
        }
        Some(&mut self.harts[h])
    }

    #[cold]
    fn new_slot(&mut self, lock: LockId) -> Option<usize> {
        if lock >= LOCK_ID_LIMIT {
            self.stats.dropped_bad_lock += 1;
            return None;
        }
        if self.locks.len() >= self.max_locks {
            self.stats.dropped_untracked_lock += 1;
            return None;
        }
        let i = lock as usize;
        if self.slot_of.len() <= i {
            self.slot_of.resize(i + 1, NO_SLOT);
        }
        self.slot_of[i] = self.locks.len() as u32;
        self.locks.push(LockEvents::new(lock));
        Some(self.locks.len() - 1)
    }

    #[inline]
    fn slot(&mut self, lock: LockId) -> Option<usize> {
        match self.slot_of.get(lock as usize) {
            Some(&s) if s != NO_SLOT => Some(s as usize),
            _ => self.new_slot(lock),
        }
    }

    pub fn note_lost(&mut self, hart: HartId, n: u64) {
        if n == 0 {
            return;
        }
        self.stats.lost = self.stats.lost.saturating_add(n);
        if let Some(h) = self.hart_mut(hart) {
            h.lost = h.lost.saturating_add(n);
            h.lose_sync();
        }
    }

    pub fn note_trace_start(&mut self, hart: HartId) {
        if let Some(h) = self.hart_mut(hart) {
            h.lose_sync();
            h.in_sync = true;
        }
    }

    /// A snapshot shows `hart` holding `held` (complete unless `truncated`).
    ///
    /// The feed drains the rings before it reads a snapshot, so when snapshot k shows the hart
    /// holding nothing, every entry pushed so far was released before k was read, and every lock
    /// acquired in events lost before k was too. By the next snapshot the drain in between has
    /// delivered those releases: entries still there lost theirs unnoticed and are dropped, and
    /// the stack is complete from then on. No snapshot time is needed, only the feed's order.
    pub fn observe_hart(&mut self, hart: HartId, held: &[LockId], truncated: bool) -> u64 {
        let Some(h) = self.hart_mut(hart) else {
            return 0;
        };
        let mut dropped = 0;
        // A truncated list may omit a lock the hart holds: keep waiting for a complete one.
        if !truncated {
            if let Some(marked) = h.pending.take() {
                dropped = h.prune(marked, held);
                h.in_sync = true;
            }
        }
        if held.is_empty() && !truncated {
            h.pending = Some(h.epoch);
            h.epoch = h.epoch.wrapping_add(1);
        }
        self.stats.stale_held_dropped += dropped;
        dropped
    }

    /// Forgets every hart's replay state (a new trace); keeps the statistics.
    pub fn forget_harts(&mut self) {
        for h in &mut self.harts {
            h.lose_sync();
        }
    }

    pub fn ingest(&mut self, events: &[LockEvent]) {
        for e in events {
            self.ingest_one(e);
        }
    }

    #[inline]
    fn ingest_one(&mut self, e: &LockEvent) {
        let h = e.hart as usize;
        if h >= self.harts.len() && self.hart_mut(e.hart).is_none() {
            self.stats.dropped_bad_hart += 1;
            return;
        }
        if e.mode == Some(LockMode::Sleep) {
            // A sleeplock names its inner spinlock but is no hold of it: no statistics.
            if e.lock < LOCK_ID_LIMIT {
                self.stats.events += 1;
                self.harts[h].events += 1;
                self.ingest_sleep(e);
            } else {
                self.stats.dropped_bad_lock += 1;
            }
            return;
        }
        let Some(slot) = self.slot(e.lock) else {
            return;
        };
        self.stats.events += 1;
        if let Some(mode) = e.mode {
            self.harts[h].events += 1;
            self.locks[slot].events += 1;
            self.ingest_rw(slot, e, mode == LockMode::Write);
            return;
        }
        if e.trylock {
            self.stats.trylocks += 1;
        }
        let protocol = self.protocol_site(e.pc);
        let hart = &mut self.harts[h];
        let lk = &mut self.locks[slot];
        hart.events += 1;
        lk.events += 1;
        let order_ok = hart.in_sync && !e.trylock && !protocol;
        match e.kind {
            EventKind::Spin => {
                lk.spins += 1;
                if hart.holds(e.lock) {
                    self.stats.double_acquires += 1;
                } else if order_ok {
                    record_order(&mut self.order, &mut self.stats, hart, e);
                }
                hart.spin_lock = e.lock;
                hart.spin_ns = e.time_ns;
                hart.spin_pc = e.pc;
            }
            EventKind::Acquired { contended } => {
                lk.acquires += 1;
                // A spin that ended here already gave its lock-order edges.
                let mut ordered = false;
                if contended {
                    lk.contended += 1;
                    if hart.spin_lock == e.lock {
                        let wait = e.time_ns.saturating_sub(hart.spin_ns);
                        lk.wait.add(wait);
                        lk.add_site(
                            hart.spin_pc,
                            wait,
                            self.max_sites,
                            &mut self.stats.site_overflow,
                        );
                        ordered = true;
                    } else {
                        self.stats.unmatched_contended += 1;
                    }
                }
                hart.spin_lock = NO_LOCK;
                if hart.holds(e.lock) {
                    if !ordered {
                        self.stats.double_acquires += 1;
                    }
                } else if !ordered && order_ok {
                    record_order(&mut self.order, &mut self.stats, hart, e);
                }
                if hart.rw_len > 0 && self.proc_locks.get(e.lock as usize) == Some(&true) {
                    // The hart may be switching threads: its reader-writer holds may now
                    // belong to a thread elsewhere (their releases there find them).
                    hart.rw_len = 0;
                }
                if hart.depth == STACK {
                    self.stats.stack_overflows += 1;
                    hart.lose_sync();
                } else {
                    hart.stack[hart.depth] = HeldEv {
                        lock: e.lock,
                        epoch: hart.epoch,
                        pc: e.pc,
                        since_ns: e.time_ns,
                    };
                    hart.depth += 1;
                }
            }
            EventKind::Released => {
                let held = &hart.stack[..hart.depth];
                if let Some(p) = held.iter().rposition(|x| x.lock == e.lock) {
                    lk.hold
                        .add(e.time_ns.saturating_sub(hart.stack[p].since_ns));
                    hart.stack.copy_within(p + 1..hart.depth, p);
                    hart.depth -= 1;
                } else if hart.in_sync() {
                    self.stats.unmatched_releases += 1;
                }
            }
        }
    }
}

impl EventState {
    /// Records the order edges of `e` from everything hart `h` holds.
    pub(crate) fn record_order_of(&mut self, h: usize, e: &LockEvent) {
        record_order(&mut self.order, &mut self.stats, &self.harts[h], e);
    }
}

/// Edges from every lock `hart` holds (reader-writer holds included) to `e.lock`.
#[inline]
fn record_order(order: &mut OrderGraph, stats: &mut IngestStats, hart: &HartEvents, e: &LockEvent) {
    if hart.rw_len == 0 {
        record_from(order, stats, hart.held(), e);
        return;
    }
    let mut all = [HeldEv::default(); STACK + RW_HOLDS];
    let mut n = 0;
    for x in hart.rw_holds() {
        all[n] = HeldEv {
            lock: x.lock,
            epoch: 0,
            pc: x.pc,
            since_ns: x.since_ns,
        };
        n += 1;
    }
    for x in hart.held() {
        all[n] = *x;
        n += 1;
    }
    record_from(order, stats, &all[..n], e);
}

#[inline]
fn record_from(order: &mut OrderGraph, stats: &mut IngestStats, held: &[HeldEv], e: &LockEvent) {
    for i in 0..held.len() {
        if held[i].lock != e.lock && !order.record(held, i, e.lock, e.hart, e.pc, e.time_ns) {
            stats.order_edge_overflow += 1;
        }
    }
}
