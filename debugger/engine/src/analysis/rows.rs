//! The analysis' rows: per lock, per class, per hart, the buffer cache and the page allocator.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::analyzer::Analyzer;
use super::classes::lock_class;
use super::events::{Durations, Site};
use super::series::Rates;
use super::views::{
    BcacheView, BucketRow, ClassRow, HartRow, HeldRow, KmemView, LockRow, TimeStats, WaitRow,
};
use crate::model::{HartId, HartRun, LockCounters, LockId};

impl Analyzer {
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
            class: state.map_or_else(String::new, lock_class),
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
