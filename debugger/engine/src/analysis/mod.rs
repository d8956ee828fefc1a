//! Analysis of snapshots and events: statistics, deadlocks, lock order.
//!
//! The [`Analyzer`] is fed [`Snapshot`]s ([`Analyzer::observe`]) and batches of [`LockEvent`]s
//! ([`Analyzer::ingest`], with [`Analyzer::note_lost`] for gaps), in any mix, and answers with
//! plain serializable views. It knows neither where the data came from nor how to symbolize: it
//! keeps pcs. It works without events (counters, holders and per-hart state only): then the
//! event-only parts (histograms, minimums, sites, lock order) are empty.
//!
//! Memory is bounded by [`AnalysisConfig`] whatever the feed: locks, harts, sites per lock,
//! order edges and history are capped, and what did not fit is counted in [`IngestStats`].
//!
//! [`Analyzer::apply`] takes the engine's [`Feed`] items, so a live session, a recorded trace
//! ([`Analyzer::replay`]) and a test fixture go through the same path.

mod events;
mod hist;
mod order;
mod scause;
mod series;
mod views;
mod watch;

use std::collections::BTreeMap;
use std::io::Read;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use events::{IngestStats, Site, LOCK_ID_LIMIT};
pub use hist::{HistBucket, HistView, Log2Hist};
pub use order::EdgeSite;
pub use scause::{decode_scause, Scause};
pub use series::Rates;
pub use views::*;
pub use watch::{DeadlockCycle, StallReason, StallReport, StalledHart, WaitEdge};

use crate::feed::{Feed, StopInfo};
use crate::model::{HartId, HartRun, LockCounters, LockEvent, LockId, Outcome, Snapshot};
use crate::trace::{TraceError, TraceReader};
use events::{Durations, EventState};
use series::Series;
use watch::Watch;

/// Target time going back further than this (or with counters going down) is a new boot;
/// less is jitter in the source's estimate of target time.
const NEW_BOOT_BACKSTEP_NS: u64 = 1_000_000_000;
/// Inversions reported at most per query.
const MAX_ORDER_CYCLES: usize = 256;
/// Edge visits allowed to the search for order cycles longer than 2, per query.
const ORDER_CYCLE_STEPS: u64 = 1_000_000;

/// Tuning of the analysis. Times are target time in nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalysisConfig {
    /// Window of the rates.
    pub rate_window_ns: u64,
    /// Length of one history (sparkline) interval.
    pub history_interval_ns: u64,
    /// History intervals kept per lock.
    pub history_len: usize,
    /// A deadlock seen in live snapshots is confirmed once seen unchanged this long.
    pub deadlock_confirm_ns: u64,
    /// A running hart whose heartbeat keeps its value this long (or that spins this long) has
    /// stalled.
    pub stall_ns: u64,
    /// Contention sites shown per lock.
    pub top_sites: usize,
    /// Contention sites tracked per lock.
    pub max_sites_per_lock: usize,
    /// Distinct locks tracked from events.
    pub max_locks: usize,
    /// Harts tracked; events and state of harts with higher ids are dropped.
    pub max_harts: usize,
    /// Edges kept in the lock-order graph.
    pub max_order_edges: usize,
    /// Longest lock-order cycle searched for.
    pub max_order_cycle_len: usize,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            rate_window_ns: 5_000_000_000,
            history_interval_ns: 500_000_000,
            history_len: 60,
            deadlock_confirm_ns: 200_000_000,
            stall_ns: 2_000_000_000,
            top_sites: 5,
            max_sites_per_lock: 32,
            max_locks: 4096,
            max_harts: 64,
            max_order_edges: 65_536,
            max_order_cycle_len: 4,
        }
    }
}

/// A configuration the analysis cannot run with.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("analysis setting {name} = {value} is out of range: use {allowed}")]
    OutOfRange {
        name: &'static str,
        value: u64,
        allowed: &'static str,
    },
}

impl AnalysisConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |name, value: u64, lo: u64, hi: u64, allowed| {
            if value < lo || value > hi {
                Err(ConfigError::OutOfRange {
                    name,
                    value,
                    allowed,
                })
            } else {
                Ok(())
            }
        };
        check(
            "history_interval_ns",
            self.history_interval_ns,
            1_000,
            u64::MAX,
            "at least 1000 (1 us)",
        )?;
        check(
            "rate_window_ns",
            self.rate_window_ns,
            self.history_interval_ns,
            self.history_interval_ns.saturating_mul(4096),
            "between history_interval_ns and 4096 of them",
        )?;
        check("history_len", self.history_len as u64, 1, 4096, "1..=4096")?;
        check("top_sites", self.top_sites as u64, 0, 4096, "0..=4096")?;
        check(
            "max_sites_per_lock",
            self.max_sites_per_lock as u64,
            1,
            4096,
            "1..=4096",
        )?;
        check(
            "max_locks",
            self.max_locks as u64,
            1,
            LOCK_ID_LIMIT as u64,
            "1..=65536",
        )?;
        check("max_harts", self.max_harts as u64, 1, 1024, "1..=1024")?;
        check(
            "max_order_edges",
            self.max_order_edges as u64,
            1,
            1 << 22,
            "1..=4194304",
        )?;
        check(
            "max_order_cycle_len",
            self.max_order_cycle_len as u64,
            2,
            8,
            "2..=8",
        )?;
        Ok(())
    }
}

/// Whether a snapshot can be trusted as one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Read while harts ran (shared RAM): fields may come from slightly different moments.
    Live,
    /// Read while the target was stopped (gdb all-stop): one consistent moment.
    Stopped,
}

/// The analysis state.
#[derive(Clone)]
pub struct Analyzer {
    config: AnalysisConfig,
    events: EventState,
    series: Series,
    watch: Watch,
    last: Option<Snapshot>,
    /// Target time of the newest snapshot, never going back within one boot.
    clock_ns: Option<u64>,
    /// Between a [`Feed::Stop`] and [`Feed::Resumed`]: snapshots are consistent.
    target_stopped: bool,
    last_stop: Option<StopInfo>,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self::build(AnalysisConfig::default())
    }
}

impl Analyzer {
    pub fn new(config: AnalysisConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(c: AnalysisConfig) -> Self {
        Self {
            events: EventState::new(
                c.max_harts,
                c.max_locks,
                c.max_sites_per_lock,
                c.max_order_edges,
            ),
            series: Series::new(
                c.history_interval_ns,
                c.rate_window_ns,
                c.history_len,
                c.max_locks,
            ),
            watch: Watch::new(c.max_harts, c.deadlock_confirm_ns, c.stall_ns),
            last: None,
            clock_ns: None,
            target_stopped: false,
            last_stop: None,
            config: c,
        }
    }

    pub fn config(&self) -> &AnalysisConfig {
        &self.config
    }

    /// Forgets everything (a new boot, a new target).
    pub fn reset(&mut self) {
        *self = Self::build(self.config.clone());
    }

    /// Feeds lock events. Per hart they must be in ring order; harts may be interleaved in any
    /// way. Allocates nothing per event once its hart and lock have been seen.
    pub fn ingest(&mut self, events: &[LockEvent]) {
        self.events.ingest(events);
    }

    /// `n` events of `hart` were lost just before the next events of that hart that will be
    /// ingested. Its partial pairs and rebuilt held stack are dropped, and its lock-order edges
    /// pause until a snapshot shows it holding nothing and the next snapshot arrives.
    pub fn note_lost(&mut self, hart: HartId, n: u64) {
        self.events.note_lost(hart, n);
    }

    /// The next event of `hart` is the first it ever recorded (its ring is read from index 0):
    /// it held nothing before, so its lock order counts from the start. Without this a hart's
    /// lock order counts once snapshots have proven its rebuilt stack complete.
    pub fn note_trace_start(&mut self, hart: HartId) {
        self.events.note_trace_start(hart);
    }

    /// Feeds a snapshot. The feed must drain the rings before reading each snapshot (events
    /// drained before a snapshot was read are ingested before it is observed): rebuilding held
    /// stacks after a gap relies on that order, not on the snapshot's time.
    pub fn observe(&mut self, snap: &Snapshot, consistency: Consistency) {
        let stopped = consistency == Consistency::Stopped;
        let mut t = snap.time_ns;
        if let (Some(last), Some(clock)) = (&self.last, self.clock_ns) {
            if t < clock {
                let counters_down = snap
                    .locks
                    .iter()
                    .zip(&last.locks)
                    .any(|(now, before)| now.counters.acquires < before.counters.acquires);
                if counters_down || clock - t > NEW_BOOT_BACKSTEP_NS {
                    // A new boot. Counters and liveness start over; the event statistics stay,
                    // the replay state of every hart does not.
                    self.series.clear();
                    self.watch.clear();
                    self.events.forget_harts();
                } else {
                    // The source's time estimate jittered back: keep the clock monotonic.
                    t = clock;
                }
            }
        }
        self.clock_ns = Some(t);
        self.series.observe(snap, t);
        self.watch.observe(snap, t, stopped);
        let mut held = Vec::new();
        for h in &snap.harts {
            held.clear();
            held.extend(h.held.iter().map(|x| x.lock));
            self.events.observe_hart(h.hart, &held, h.held_truncated);
        }
        match &mut self.last {
            Some(l) => l.clone_from(snap),
            None => self.last = Some(snap.clone()),
        }
    }

    /// Applies one item of a source's feed. Snapshots between [`Feed::Stop`] and
    /// [`Feed::Resumed`] are taken as consistent; an event batch's losses are applied before its
    /// events (the reader reports the events lost before each ring's new ones; a slot it rejects
    /// mid-ring goes unreported, and snapshots heal what that breaks).
    pub fn apply(&mut self, feed: &Feed) {
        match feed {
            Feed::Snapshot(s) => {
                let c = if self.target_stopped {
                    Consistency::Stopped
                } else {
                    Consistency::Live
                };
                self.observe(s, c);
            }
            Feed::Events { events, lost } => {
                for &(hart, n) in lost {
                    self.note_lost(hart, n);
                }
                self.ingest(events);
            }
            Feed::Stop(info) => {
                self.target_stopped = true;
                match &mut self.last_stop {
                    Some(s) => s.clone_from(info),
                    None => self.last_stop = Some(info.clone()),
                }
            }
            Feed::TraceStart { harts } => {
                for &h in harts {
                    self.note_trace_start(h);
                }
            }
            Feed::Resumed => {
                self.target_stopped = false;
                self.last_stop = None;
            }
            Feed::Console(_) | Feed::Pause { .. } | Feed::End(_) => {}
        }
    }

    /// Applies every item of a recorded trace; returns how many.
    pub fn replay<R: Read>(&mut self, trace: &mut TraceReader<R>) -> Result<u64, TraceError> {
        let mut n = 0;
        while let Some(feed) = trace.next_feed()? {
            self.apply(&feed);
            n += 1;
        }
        Ok(n)
    }

    /// The registers and unwound stacks of the last stop, while the target is stopped.
    pub fn last_stop(&self) -> Option<&StopInfo> {
        self.last_stop.as_ref()
    }

    /// The last snapshot observed.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.last.as_ref()
    }

    pub fn ingest_stats(&self) -> &IngestStats {
        &self.events.stats
    }

    fn lock_name(&self, id: LockId) -> String {
        match &self.last {
            Some(s) => s.lock_name(id),
            None => format!("lock#{id}"),
        }
    }

    /// Every lock known from the last snapshot or from events, by id.
    pub fn lock_rows(&self) -> Vec<LockRow> {
        let snap = self.last.as_ref();
        let n_snap = snap.map_or(0, |s| s.locks.len());
        let mut rows: Vec<LockRow> = (0..n_snap as LockId).map(|id| self.lock_row(id)).collect();
        let mut extra: Vec<LockId> = self
            .events
            .locks
            .iter()
            .map(|l| l.id)
            .filter(|&id| id as usize >= n_snap)
            .collect();
        extra.sort_unstable();
        rows.extend(extra.into_iter().map(|id| self.lock_row(id)));
        rows
    }

    /// One lock's row (also for an id nothing is known about: then it is all zeros).
    pub fn lock_row(&self, id: LockId) -> LockRow {
        let snap = self.last.as_ref();
        let state = snap.and_then(|s| s.lock(id));
        let ev = self.events.lock(id);
        let empty = Durations::default();
        let (wait_ev, hold_ev) = ev.map_or((&empty, &empty), |e| (&e.wait, &e.hold));
        let (acquires, contended, spins, wait, hold) = match state {
            Some(st) => {
                let c = &st.counters;
                let releases = c.acquires.saturating_sub(st.holder.is_some() as u64);
                (
                    c.acquires,
                    c.contended,
                    c.spins,
                    time_stats(c.contended, c.wait_total_ns, c.wait_max_ns, true, wait_ev),
                    time_stats(releases, c.hold_total_ns, c.hold_max_ns, true, hold_ev),
                )
            }
            None => {
                let (a, co, sp) = ev.map_or((0, 0, 0), |e| (e.acquires, e.contended, e.spins));
                (
                    a,
                    co,
                    sp,
                    time_stats(wait_ev.n, wait_ev.total, wait_ev.max, false, wait_ev),
                    time_stats(hold_ev.n, hold_ev.total, hold_ev.max, false, hold_ev),
                )
            }
        };
        let (history_contended, history_acquires) = self.series.history(id as usize);
        let (top_sites, sites_other) = match ev {
            Some(e) => (top_sites(&e.sites, self.config.top_sites), e.sites_other),
            None => (Vec::new(), Site::default()),
        };
        LockRow {
            id,
            name: state.map_or_else(|| format!("lock#{id}"), |s| s.meta.name.clone()),
            class: state.map_or_else(String::new, |s| s.meta.class.clone()),
            acquires,
            contended,
            spins,
            contention_pct: pct(contended, acquires),
            counters_exact: state.is_some(),
            wait,
            hold,
            rates: self.series.rates(id as usize),
            history_contended,
            history_acquires,
            holder: state.and_then(|s| s.holder),
            waiters: snap.map_or_else(Vec::new, |s| {
                s.harts
                    .iter()
                    .filter(|h| h.spinning.is_some_and(|sp| sp.lock == id))
                    .map(|h| h.hart)
                    .collect()
            }),
            top_sites,
            sites_other,
            events: ev.map_or(0, |e| e.events),
        }
    }

    /// Locks grouped by class (a lock with no class is its own group), sorted by class name.
    pub fn class_rows(&self) -> Vec<ClassRow> {
        let rows = self.lock_rows();
        let mut groups: BTreeMap<String, Vec<&LockRow>> = BTreeMap::new();
        for r in &rows {
            let key = if r.class.is_empty() {
                r.name.clone()
            } else {
                r.class.clone()
            };
            groups.entry(key).or_default().push(r);
        }
        groups
            .into_iter()
            .map(|(class, members)| self.class_row(class, &members))
            .collect()
    }

    fn class_row(&self, class: String, members: &[&LockRow]) -> ClassRow {
        let mut c = LockCounters::default();
        let (mut wait_ev, mut hold_ev) = (Durations::default(), Durations::default());
        let (mut wait_n, mut hold_n) = (0u64, 0u64);
        let mut exact = true;
        let mut rates: Option<Rates> = None;
        let mut history: Vec<u64> = Vec::new();
        let mut sites: FxHashMap<u64, Site> = FxHashMap::default();
        for r in members {
            c.acquires = c.acquires.saturating_add(r.acquires);
            c.contended = c.contended.saturating_add(r.contended);
            c.spins = c.spins.saturating_add(r.spins);
            c.wait_total_ns = c.wait_total_ns.saturating_add(r.wait.total_ns);
            c.wait_max_ns = c.wait_max_ns.max(r.wait.max_ns.unwrap_or(0));
            c.hold_total_ns = c.hold_total_ns.saturating_add(r.hold.total_ns);
            c.hold_max_ns = c.hold_max_ns.max(r.hold.max_ns.unwrap_or(0));
            wait_n = wait_n.saturating_add(r.wait.count);
            hold_n = hold_n.saturating_add(r.hold.count);
            exact &= r.counters_exact;
            if let Some(e) = self.events.lock(r.id) {
                wait_ev.merge(&e.wait);
                hold_ev.merge(&e.hold);
                for s in e.sites.iter().chain(std::iter::once(&e.sites_other)) {
                    if s.count == 0 {
                        continue;
                    }
                    let m = sites.entry(s.pc).or_insert(Site {
                        pc: s.pc,
                        ..Site::default()
                    });
                    m.count = m.count.saturating_add(s.count);
                    m.wait_total_ns = m.wait_total_ns.saturating_add(s.wait_total_ns);
                    m.wait_max_ns = m.wait_max_ns.max(s.wait_max_ns);
                }
            }
            if let Some(x) = r.rates {
                let sum = rates.get_or_insert(Rates {
                    span_ns: x.span_ns,
                    ..Rates::default()
                });
                sum.span_ns = sum.span_ns.min(x.span_ns);
                sum.acquires_per_s += x.acquires_per_s;
                sum.contended_per_s += x.contended_per_s;
                sum.spins_per_s += x.spins_per_s;
            }
            // Histories share the interval clock and end at the same interval: align the ends.
            let h = &r.history_contended;
            if h.len() > history.len() {
                let mut longer = vec![0; h.len() - history.len()];
                longer.append(&mut history);
                history = longer;
            }
            let off = history.len() - h.len();
            for (i, v) in h.iter().enumerate() {
                history[off + i] = history[off + i].saturating_add(*v);
            }
        }
        let sites: Vec<Site> = sites.into_values().collect();
        ClassRow {
            class,
            locks: members.iter().map(|r| r.id).collect(),
            acquires: c.acquires,
            contended: c.contended,
            spins: c.spins,
            contention_pct: pct(c.contended, c.acquires),
            wait: time_stats(wait_n, c.wait_total_ns, c.wait_max_ns, exact, &wait_ev),
            hold: time_stats(hold_n, c.hold_total_ns, c.hold_max_ns, exact, &hold_ev),
            rates,
            history_contended: history,
            top_sites: top_sites(&sites, self.config.top_sites),
        }
    }

    /// Every hart: from the last snapshot, or from events alone when there is none.
    pub fn hart_rows(&self) -> Vec<HartRow> {
        let Some(snap) = &self.last else {
            return self.hart_rows_from_events();
        };
        let t = snap.time_ns;
        snap.harts
            .iter()
            .map(|h| {
                let ev = self.events.hart(h.hart);
                let watch = self.watch.hart(h.hart);
                HartRow {
                    hart: h.hart,
                    run: h.run,
                    held: h
                        .held
                        .iter()
                        .map(|x| HeldRow {
                            lock: x.lock,
                            name: snap.lock_name(x.lock),
                            pc: x.pc,
                            since_ns: x.since_ns,
                            held_for_ns: x.since_ns.map(|s| t.saturating_sub(s)),
                        })
                        .collect(),
                    held_truncated: h.held_truncated,
                    waiting: h.spinning.map(|s| WaitRow {
                        lock: s.lock,
                        name: snap.lock_name(s.lock),
                        pc: s.pc,
                        since_ns: s.since_ns,
                        for_ns: t.saturating_sub(s.since_ns),
                        holder: snap.lock(s.lock).and_then(|l| l.holder).or_else(|| {
                            snap.harts
                                .iter()
                                .find(|o| o.held.iter().any(|x| x.lock == s.lock))
                                .map(|o| o.hart)
                        }),
                    }),
                    heartbeat: h.heartbeat,
                    heartbeat_advancing: self.watch.advancing(h.hart, t),
                    heartbeat_still_ns: watch
                        .filter(|w| w.heartbeat.is_some())
                        .map(|w| t.saturating_sub(w.heartbeat_since_ns)),
                    ops: h.ops,
                    pc: h.regs.map(|r| r.pc),
                    events: ev.map_or(0, |e| e.events),
                    lost: ev.map_or(0, |e| e.lost),
                    order_in_sync: ev.is_some_and(|e| e.in_sync()),
                }
            })
            .collect()
    }

    fn hart_rows_from_events(&self) -> Vec<HartRow> {
        self.events
            .harts
            .iter()
            .enumerate()
            .filter(|(_, e)| e.events > 0 || e.lost > 0)
            .map(|(i, e)| HartRow {
                hart: i as HartId,
                run: HartRun::Unknown,
                held: e
                    .held()
                    .iter()
                    .map(|x| HeldRow {
                        lock: x.lock,
                        name: self.lock_name(x.lock),
                        pc: x.pc,
                        since_ns: Some(x.since_ns),
                        held_for_ns: None,
                    })
                    .collect(),
                held_truncated: !e.in_sync(),
                waiting: None,
                heartbeat: None,
                heartbeat_advancing: None,
                heartbeat_still_ns: None,
                ops: None,
                pc: None,
                events: e.events,
                lost: e.lost,
                order_in_sync: e.in_sync(),
            })
            .collect()
    }

    /// The buffer cache, when the last snapshot has one.
    pub fn bcache(&self) -> Option<BcacheView> {
        let snap = self.last.as_ref()?;
        let b = snap.bcache.as_ref()?;
        let mut in_use: FxHashMap<u32, u32> = FxHashMap::default();
        for buf in &b.bufs {
            if let (Some(bucket), true) = (buf.bucket, buf.refcnt > 0) {
                *in_use.entry(bucket).or_default() += 1;
            }
        }
        let buckets: Vec<BucketRow> = b
            .buckets
            .iter()
            .map(|k| BucketRow {
                index: k.index,
                lock: k.lock,
                lock_name: k.lock.map(|l| snap.lock_name(l)),
                nbuf: k.nbuf,
                in_use: in_use.get(&k.index).copied().unwrap_or(0),
                hits: k.hits,
                misses: k.misses,
                steals: k.steals,
                hit_rate: ratio(k.hits, k.misses),
            })
            .collect();
        let sum =
            |f: fn(&BucketRow) -> u64| buckets.iter().fold(0u64, |a, r| a.saturating_add(f(r)));
        let (hits, misses) = (sum(|r| r.hits), sum(|r| r.misses));
        Some(BcacheView {
            mode: b.mode.clone(),
            evict_lock: b.evict_lock,
            nbuf: sum(|r| r.nbuf as u64),
            in_use: sum(|r| r.in_use as u64),
            hits,
            misses,
            steals: sum(|r| r.steals),
            hit_rate: ratio(hits, misses),
            buckets,
        })
    }

    /// The page allocator, when the last snapshot has it.
    pub fn kmem(&self) -> Option<KmemView> {
        let k = self.last.as_ref()?.kmem.as_ref()?;
        let sum = |f: fn(&crate::model::KmemList) -> u64| {
            k.lists.iter().fold(0u64, |a, l| a.saturating_add(f(l)))
        };
        Some(KmemView {
            mode: k.mode.clone(),
            free_pages: sum(|l| l.free_pages),
            steals: sum(|l| l.steals),
            pages_stolen: sum(|l| l.pages_stolen),
            lists: k.lists.clone(),
        })
    }

    /// Deadlock cycles in the last snapshot, suspected and confirmed.
    pub fn deadlocks(&self) -> &[DeadlockCycle] {
        &self.watch.deadlocks
    }

    /// Stalled harts in the last snapshot.
    pub fn stall(&self) -> Option<&StallReport> {
        self.watch.stall.as_ref()
    }

    /// Lock-order inversions (potential deadlocks) seen in the events so far.
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
        for c in cycles {
            let edges: Vec<OrderEdgeView> = c
                .iter()
                .map(|&i| {
                    let e = &g.edges[i as usize];
                    OrderEdgeView {
                        from: e.from,
                        from_name: self.lock_name(e.from),
                        to: e.to,
                        to_name: self.lock_name(e.to),
                        count: e.count,
                        first: e.first,
                        gates: e.gates.ids().to_vec(),
                    }
                })
                .collect();
            let mut common: Vec<LockId> = edges[0].gates.clone();
            for e in &edges[1..] {
                common.retain(|g| e.gates.contains(g));
            }
            let inv = Inversion {
                locks: edges.iter().map(|e| e.from).collect(),
                names: edges.iter().map(|e| e.from_name.clone()).collect(),
                guarded: !common.is_empty(),
                common_gates: common,
                edges,
            };
            if inv.guarded {
                report.guarded.push(inv);
            } else {
                report.inversions.push(inv);
            }
        }
        report
    }

    /// The panic in the last snapshot, if any.
    pub fn panic(&self) -> Option<PanicView> {
        let snap = self.last.as_ref()?;
        let p = snap.panic.as_ref()?;
        Some(PanicView {
            hart: p.hart,
            message: p.message.clone(),
            trap: p.trap.map(|t| TrapView {
                scause: decode_scause(t.scause),
                sepc: t.sepc,
                stval: t.stval,
            }),
            pc: p.pc,
            fp: p.fp,
            frames: p.frames.clone(),
            time_ns: p.time_ns,
            harts: snap
                .harts
                .iter()
                .map(|h| {
                    let stop = self
                        .last_stop
                        .as_ref()
                        .and_then(|s| s.harts.iter().find(|x| x.hart == h.hart));
                    HartRegsRow {
                        hart: h.hart,
                        run: h.run,
                        regs: h.regs.or(stop.map(|x| x.regs)),
                        frames: stop.map_or_else(Vec::new, |x| x.frames.clone()),
                    }
                })
                .collect(),
        })
    }

    /// Everything, for `--json` and for tests.
    pub fn report(&self) -> Report {
        Report {
            time_ns: self.last.as_ref().map(|s| s.time_ns),
            locks: self.lock_rows(),
            classes: self.class_rows(),
            harts: self.hart_rows(),
            bcache: self.bcache(),
            kmem: self.kmem(),
            deadlocks: self.watch.deadlocks.clone(),
            stall: self.watch.stall.clone(),
            lock_order: self.lock_order(),
            panic: self.panic(),
            ingest: self.events.stats.clone(),
        }
    }

    /// The verdict of `lockscope check`: panic, then confirmed deadlock, then stall, then a
    /// failed workload, then an unguarded lock-order inversion, else ok.
    pub fn check(&self) -> Check {
        let snap = self.last.as_ref();
        let panic = self.panic();
        let panicked = panic.is_some()
            || snap.is_some_and(|s| {
                s.outcome == Some(Outcome::Panic)
                    || s.harts.iter().any(|h| h.run == HartRun::Panicked)
            });
        let confirmed: Vec<DeadlockCycle> = self
            .watch
            .deadlocks
            .iter()
            .filter(|c| c.confirmed)
            .cloned()
            .collect();
        let stall = self.watch.stall.clone();
        let order = self.lock_order();
        let hex = |pc: u64| format!("{pc:#x}");

        let (verdict, summary) = if panicked {
            let s = match &panic {
                Some(p) => {
                    let mut s = format!("panic on hart {}: {}", p.hart, p.message);
                    if let Some(t) = &p.trap {
                        s.push_str(&format!(
                            " ({} at sepc {:#x}, stval {:#x})",
                            t.scause, t.sepc, t.stval
                        ));
                    }
                    s
                }
                None => "a hart panicked but the kernel left no panic record".to_string(),
            };
            (Verdict::Panic, s)
        } else if let Some(c) = confirmed.first() {
            let more = match confirmed.len() {
                1 => String::new(),
                n => format!(" (and {} more cycles)", n - 1),
            };
            let kind = if c.self_deadlock {
                "self-deadlock"
            } else {
                "deadlock"
            };
            (
                Verdict::Deadlock,
                format!("{kind}: {}{more}", c.describe(hex)),
            )
        } else if let Some(st) = stall.as_ref().filter(|s| !s.harts.is_empty()) {
            let parts: Vec<String> = st
                .harts
                .iter()
                .map(|h| {
                    let what = match h.reason {
                        StallReason::NoProgress => "made no progress".to_string(),
                        StallReason::SpinningTooLong { lock, .. } => {
                            format!("spun on {}", self.lock_name(lock))
                        }
                    };
                    let pc =
                        h.pc.map_or_else(String::new, |pc| format!(" at pc {pc:#x}"));
                    format!("hart {} {what} for {} ms{pc}", h.hart, h.for_ns / 1_000_000)
                })
                .collect();
            let hang = if st.system_hang { "system hang: " } else { "" };
            (Verdict::Stall, format!("{hang}{}", parts.join("; ")))
        } else if snap.is_some_and(|s| s.outcome == Some(Outcome::Fail)) {
            (
                Verdict::Fail,
                "the workload's own check failed (see the console for what it found)".to_string(),
            )
        } else if let Some(inv) = order.inversions.first() {
            let sites: Vec<String> = inv
                .edges
                .iter()
                .map(|e| {
                    format!(
                        "{} -> {} (hart {}, {:#x} then {:#x})",
                        e.from_name, e.to_name, e.first.hart, e.first.from_pc, e.first.to_pc
                    )
                })
                .collect();
            (
                Verdict::LockOrderInversion,
                format!("lock-order inversion: {}", sites.join(" vs ")),
            )
        } else {
            (
                Verdict::Ok,
                "no panic, deadlock, stall or lock-order inversion".to_string(),
            )
        };
        Check {
            schema: CHECK_SCHEMA,
            verdict,
            severity: verdict.severity(),
            summary,
            time_ns: snap.map(|s| s.time_ns),
            outcome: snap.and_then(|s| s.outcome),
            panic,
            suspected_deadlocks: self.watch.deadlocks.len() - confirmed.len(),
            deadlocks: confirmed,
            stall,
            guarded_inversions: order.guarded.len(),
            inversions: order.inversions,
            ingest: self.events.stats.clone(),
        }
    }
}

fn time_stats(count: u64, total: u64, max: u64, exact: bool, ev: &Durations) -> TimeStats {
    TimeStats {
        count,
        total_ns: total,
        avg_ns: (count > 0).then(|| total / count),
        max_ns: (count > 0).then_some(max),
        min_ns: ev.min(),
        exact,
        hist: ev.hist.view(),
    }
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let all = hits as f64 + misses as f64;
    (all > 0.0).then(|| hits as f64 / all)
}

fn top_sites(sites: &[Site], n: usize) -> Vec<Site> {
    let mut v: Vec<Site> = sites.to_vec();
    v.sort_unstable_by(|a, b| b.count.cmp(&a.count).then(a.pc.cmp(&b.pc)));
    v.truncate(n);
    v
}
