//! Hangs of a kernel without lock events (an unmodified xv6), from what a source diagnosed at
//! stops of the guest ([`Diagnosis`]): a hart stuck in `acquire` on a lock another hart holds,
//! a reader-writer lock nobody can get through, processes asleep on something nobody will
//! wake, a kernel stuck before its scheduler. One stop can mislead (a spinning hart caught in a
//! timer handler, a holder about to release), so a hang is confirmed only when two stops at
//! least `deadlock_confirm_ns` apart show the same stuck state.
//!
//! Between stops, live snapshots raise a suspicion ([`Hang::suspicion`]): a lock held by the
//! same hart while nobody acquires it and its `nts` climbs, `ticks` frozen, a reader-writer lock
//! whose fields never move, a process asleep on a free sleeplock, a kernel that never starts.
//! The monitor then asks for a stop to look.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::watch::{DeadlockCycle, StallReason, StallReport, StalledHart, Watch};
use crate::model::{
    Diagnosis, FieldValue, HartId, HartRun, HartSnapshot, HartState, Held, LockEvidence, LockId,
    Outcome, ProcRef, RwLockSnapshot, Snapshot, Spin,
};

/// Stops further apart than this are not compared: the kernel had time to change.
const MAX_APART_NS: u64 = 30_000_000_000;
/// A lock held by one hart, unacquired by others, this long while its `nts` climbs.
const HELD_WITH_SPINS_NS: u64 = 300_000_000;
/// ... or this long without the lab's counters to tell.
const HELD_NS: u64 = 1_000_000_000;
/// `ticks` frozen this long (hart 0 stuck with interrupts off).
const TICKS_FROZEN_NS: u64 = 1_500_000_000;
/// A reader-writer lock's fields unchanged (and not all zero) this long.
const RW_FROZEN_NS: u64 = 1_000_000_000;
/// A process asleep on a free sleeplock this long.
const LOST_WAKEUP_NS: u64 = 1_000_000_000;
/// Every process asleep, harts idle, someone on a channel only another process can wake.
const ALL_ASLEEP_NS: u64 = 2_000_000_000;
/// No hart reached its scheduler this long after the first snapshot.
const BOOT_NS: u64 = 3_000_000_000;

/// A reader or writer stuck in a reader-writer lock's acquire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RwWaiter {
    pub hart: HartId,
    pub function: String,
    /// Return address into the caller of the acquire.
    pub site: Option<u64>,
    /// An earlier call of the same acquire still on the hart's stack: it holds the lock.
    pub earlier: Option<u64>,
}

/// A reader-writer lock nobody can get through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RwDeadlock {
    pub rwlock: String,
    /// Its fields at the last stop, as the student defined them.
    pub fields: Vec<FieldValue>,
    pub readers: Vec<RwWaiter>,
    pub writers: Vec<RwWaiter>,
    /// The fields read as counts: readers inside, writers waiting, a writer inside (by name:
    /// `readers`/`nreader`, `waiting`/`wwait`, `writer`/`writing`).
    pub readers_inside: Option<i64>,
    pub writers_waiting: Option<i64>,
    pub writer_inside: Option<i64>,
}

/// One process in a chain of sleeplock waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepLink {
    pub pid: i64,
    pub name: String,
    pub chan_name: Option<String>,
    /// The sleeplock it sleeps on, when its channel is one.
    pub sleeplock: Option<String>,
    /// That sleeplock's holder.
    pub holder: Option<ProcRef>,
    /// The sleeplock is free: nobody will wake this process (a lost wakeup).
    pub free: bool,
}

/// Processes waiting on each other's sleeplocks, or on one nobody will release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepChain {
    pub links: Vec<SleepLink>,
    /// The last link's holder is the first link's process.
    pub cycle: bool,
}

/// What kind of hang the stops show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HangKind {
    /// Harts waiting on each other's spinlocks (the cycles are in the deadlock list).
    Deadlock,
    /// A reader-writer lock nobody can get through.
    RwDeadlock,
    /// Processes waiting on each other's sleeplocks.
    SleepDeadlock,
    /// Stuck without a cycle: a lock nobody holds, a wakeup that never comes, everyone asleep.
    Stall,
    /// Stuck before any hart reached the kernel's scheduler.
    Boot,
}

/// What the stops say about a hang.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangReport {
    /// The last stop's diagnosis.
    pub diagnosis: Diagnosis,
    /// Target time of the earlier stop it was compared with, when it was.
    pub compared_with_ns: Option<u64>,
    /// The same stuck state at two stops far enough apart.
    pub confirmed: bool,
    pub kind: Option<HangKind>,
    pub rw: Vec<RwDeadlock>,
    pub chains: Vec<SleepChain>,
    /// Every process is asleep and no hart runs one.
    pub all_asleep: bool,
    /// What raised the suspicion that led to the stops, when one did.
    pub suspicion: Option<String>,
}

/// A lock as a stop saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LockLook {
    locked: bool,
    holder: Option<HartId>,
    n: Option<i64>,
    nts: Option<i64>,
}

/// Since when live snapshots have shown a lock held by one holder with the same `n`.
#[derive(Clone, Copy, Debug)]
struct HeldSince {
    holder: Option<HartId>,
    n: Option<i64>,
    nts: Option<i64>,
    since: u64,
}

/// A stop as the hang analysis keeps it.
#[derive(Clone, Debug)]
struct Sample {
    diagnosis: Diagnosis,
    locks: HashMap<LockId, LockLook>,
    rwlocks: Vec<RwLockSnapshot>,
    runnable: usize,
}

impl Sample {
    fn of(snap: &Snapshot, d: &Diagnosis) -> Sample {
        Sample {
            diagnosis: d.clone(),
            locks: snap
                .locks
                .iter()
                .map(|l| {
                    (
                        l.meta.id,
                        LockLook {
                            locked: l.locked.unwrap_or(false),
                            holder: l.holder,
                            n: l.lab.map(|c| c.n),
                            nts: l.lab.map(|c| c.nts),
                        },
                    )
                })
                .collect(),
            rwlocks: snap.rwlocks.clone(),
            runnable: snap
                .processes
                .iter()
                .filter(|p| {
                    let s = p.state.to_ascii_uppercase();
                    s.contains("RUNNABLE") || s.contains("RUNNING")
                })
                .count(),
        }
    }
}

/// The hang analysis' state. See the module docs.
pub(crate) struct Hang {
    max_harts: usize,
    confirm_ns: u64,
    stall_ns: u64,
    prev: Option<Sample>,
    pub report: Option<HangReport>,
    pub deadlocks: Vec<DeadlockCycle>,
    pub stall: Option<StallReport>,
    // Suspicion, from live snapshots.
    first_ns: Option<u64>,
    held: HashMap<LockId, HeldSince>,
    ticks: Option<(u64, u64)>,
    rw: HashMap<String, (Vec<Option<i64>>, u64)>,
    free_sleep: HashMap<i64, (u64, u64)>,
    asleep_since: Option<u64>,
    suspicion: Option<String>,
}

impl Hang {
    pub fn new(max_harts: usize, confirm_ns: u64, stall_ns: u64) -> Self {
        Hang {
            max_harts,
            confirm_ns,
            stall_ns,
            prev: None,
            report: None,
            deadlocks: Vec::new(),
            stall: None,
            first_ns: None,
            held: HashMap::new(),
            ticks: None,
            rw: HashMap::new(),
            free_sleep: HashMap::new(),
            asleep_since: None,
            suspicion: None,
        }
    }

    pub fn clear(&mut self) {
        *self = Hang::new(self.max_harts, self.confirm_ns, self.stall_ns);
    }

    /// The guest runs again: what the last stop confirmed no longer holds; the stop stays to be
    /// compared with the next one.
    pub fn resumed(&mut self) {
        self.deadlocks.clear();
        self.stall = None;
        if let Some(r) = &mut self.report {
            if !r.confirmed {
                self.report = None;
            }
        }
    }

    /// Why the live snapshots look hung, if they do: a stop should look.
    pub fn suspicion(&self) -> Option<&str> {
        self.suspicion.as_deref()
    }

    /// Feeds a snapshot at target time `t`.
    pub fn observe(&mut self, snap: &Snapshot, t: u64) {
        let panicked = snap.panic.is_some() || snap.outcome == Some(Outcome::Panic);
        if panicked {
            self.suspicion = None;
            return;
        }
        match &snap.diagnosis {
            Some(d) => self.diagnosed(snap, d),
            None => self.watch_live(snap, t),
        }
    }

    /// A snapshot from a stop with its diagnosis: compare it with the previous stop.
    fn diagnosed(&mut self, snap: &Snapshot, d: &Diagnosis) {
        let cur = Sample::of(snap, d);
        let prev = self.prev.take().filter(|p| {
            d.time_ns >= p.diagnosis.time_ns.saturating_add(self.confirm_ns)
                && d.time_ns - p.diagnosis.time_ns <= MAX_APART_NS
        });
        self.deadlocks.clear();
        self.stall = None;
        let mut report = HangReport {
            diagnosis: d.clone(),
            compared_with_ns: prev.as_ref().map(|p| p.diagnosis.time_ns),
            confirmed: false,
            kind: None,
            rw: Vec::new(),
            chains: Vec::new(),
            all_asleep: false,
            suspicion: self.suspicion.clone(),
        };
        if let Some(p) = &prev {
            self.compare(snap, p, &cur, &mut report);
        } else {
            // One stop: what it shows, unconfirmed.
            report.chains = chains(d, None);
            report.rw = rw_deadlocks(d, None, &snap.rwlocks);
        }
        self.prev = Some(cur);
        self.report = Some(report);
    }

    fn compare(&mut self, snap: &Snapshot, p: &Sample, c: &Sample, report: &mut HangReport) {
        let (pd, cd) = (&p.diagnosis, &c.diagnosis);
        let apart = cd.time_ns - pd.time_ns;
        let before = |h: HartId| pd.harts.iter().find(|x| x.hart == h);
        // Harts in acquire on the same lock at both stops, its holder unchanged and nobody
        // having acquired it in between.
        let mut waits: Vec<(HartId, LockId, u64)> = Vec::new();
        let mut unknown: Vec<(HartId, u64)> = Vec::new();
        for h in &cd.harts {
            let (
                HartState::Acquiring { lock, site, .. },
                Some(HartState::Acquiring {
                    lock: lock_before, ..
                }),
            ) = (&h.state, before(h.hart).map(|x| &x.state))
            else {
                continue;
            };
            // A return address, as the watch keeps spin sites (symbolize `- 1`).
            let at = site.unwrap_or(h.pc + 1);
            match (lock, lock_before) {
                (Some(l), Some(lb)) if l == lb && same_lock_state(p, c, *l) => {
                    waits.push((h.hart, *l, at))
                }
                (None, None) => unknown.push((h.hart, at)),
                (Some(l), None) | (None, Some(l)) if same_lock_state(p, c, *l) => {
                    waits.push((h.hart, *l, at))
                }
                _ => {}
            }
        }
        // Spinners whose lock no location told: the one held lock whose `nts` climbed while
        // nobody acquired it.
        let climbing: Vec<LockId> = c
            .locks
            .iter()
            .filter(|(id, now)| {
                let Some(then) = p.locks.get(id) else {
                    return false;
                };
                now.locked
                    && then.locked
                    && now.holder == then.holder
                    && now.n.is_some()
                    && now.n == then.n
                    && now.nts > then.nts
            })
            .map(|(id, _)| *id)
            .collect();
        let mut evidence: HashMap<HartId, LockEvidence> = HashMap::new();
        if unknown.len() == 1 && climbing.len() == 1 {
            let (h, at) = unknown[0];
            waits.push((h, climbing[0], at));
            evidence.insert(h, LockEvidence::CounterClimb);
        }

        // Deadlock cycles: the watch's search over the stuck waits, as if the stop showed
        // them spinning since the first stop.
        let mut synth = snap.clone();
        synth.harts = cd
            .harts
            .iter()
            .map(|h| {
                let base = snap.harts.iter().find(|x| x.hart == h.hart);
                HartSnapshot {
                    hart: h.hart,
                    run: base.map_or(HartRun::Running, |b| b.run),
                    held: h
                        .held
                        .iter()
                        .map(|x| Held {
                            lock: x.lock,
                            pc: x.site.unwrap_or(0),
                            since_ns: None,
                        })
                        .collect(),
                    spinning: waits
                        .iter()
                        .find(|w| w.0 == h.hart)
                        .map(|&(_, lock, pc)| Spin {
                            lock,
                            pc,
                            since_ns: pd.time_ns,
                        }),
                    cpu: base.and_then(|b| b.cpu.clone()),
                    ..Default::default()
                }
            })
            .collect();
        let mut w = Watch::new(self.max_harts, self.confirm_ns, self.stall_ns);
        w.observe(&synth, cd.time_ns, true);
        self.deadlocks = w.deadlocks.clone();
        for d in &mut self.deadlocks {
            d.first_seen_ns = pd.time_ns;
            d.seen_for_ns = apart;
        }
        // Instances share their name string (every bucket lock is "bcache.bucket"): say which.
        for e in self.deadlocks.iter_mut().flat_map(|d| d.edges.iter_mut()) {
            if let Some(path) = snap.lock(e.lock).and_then(|l| l.path.as_deref()) {
                if path != e.lock_name {
                    e.lock_name = path.to_string();
                }
            }
        }
        let in_cycle = |h: HartId| {
            self.deadlocks
                .iter()
                .any(|d| d.edges.iter().any(|e| e.waiter == h))
        };

        // Stuck waits outside any cycle: on a lock nobody holds, or held by a hart that is not
        // waiting itself yet never lets go.
        let mut stalled: Vec<StalledHart> = waits
            .iter()
            .filter(|w| !in_cycle(w.0))
            .map(|&(hart, lock, at)| StalledHart {
                hart,
                reason: StallReason::SpinningTooLong {
                    lock,
                    holder: c.locks.get(&lock).and_then(|l| l.holder),
                },
                for_ns: apart,
                heartbeat: None,
                pc: Some(at - 1),
            })
            .collect();

        report.rw = rw_deadlocks(cd, Some((pd, &p.rwlocks)), &snap.rwlocks);
        report.chains = chains(cd, Some(pd));
        let runs_nothing = |d: &Diagnosis| {
            d.harts
                .iter()
                .all(|h| matches!(h.state, HartState::Idle) || h.process.is_none())
        };
        report.all_asleep = c.runnable == 0
            && p.runnable == 0
            && runs_nothing(cd)
            && runs_nothing(pd)
            && !cd.sleepers.is_empty()
            && cd
                .sleepers
                .iter()
                .any(|s| !device_channel(s.chan_name.as_deref()));
        let stuck_sleepers = report
            .chains
            .iter()
            .any(|ch| ch.cycle || ch.links.iter().any(|l| l.free));
        let booting = cd.booting && pd.booting && {
            let same: Vec<bool> = cd
                .harts
                .iter()
                .map(|h| before(h.hart).is_some_and(|b| b.pc == h.pc || b.state == h.state))
                .collect();
            same.iter().all(|&s| s)
        };
        if booting {
            stalled = cd
                .harts
                .iter()
                .map(|h| StalledHart {
                    hart: h.hart,
                    reason: StallReason::NoProgress,
                    for_ns: apart,
                    heartbeat: None,
                    pc: Some(h.interrupted_pc.unwrap_or(h.pc)),
                })
                .collect();
        } else if stalled.is_empty() && (report.all_asleep || stuck_sleepers) {
            stalled = cd
                .harts
                .iter()
                .map(|h| StalledHart {
                    hart: h.hart,
                    reason: if h.process.is_none() {
                        StallReason::NothingToRun
                    } else {
                        StallReason::NoProgress
                    },
                    for_ns: apart,
                    heartbeat: None,
                    pc: Some(h.interrupted_pc.unwrap_or(h.pc)),
                })
                .collect();
        }
        report.kind = if booting {
            Some(HangKind::Boot)
        } else if !self.deadlocks.is_empty() {
            Some(HangKind::Deadlock)
        } else if !report.rw.is_empty() {
            Some(HangKind::RwDeadlock)
        } else if report.chains.iter().any(|c| c.cycle) {
            Some(HangKind::SleepDeadlock)
        } else if !stalled.is_empty() {
            Some(HangKind::Stall)
        } else {
            None
        };
        report.confirmed = report.kind.is_some();
        if !stalled.is_empty() && matches!(report.kind, Some(HangKind::Stall | HangKind::Boot)) {
            self.stall = Some(StallReport {
                system_hang: booting || report.all_asleep || stalled.len() == cd.harts.len(),
                harts: stalled,
            });
        }
        // A lock told by climbing counters: say so on the hart.
        for (h, e) in evidence {
            if let Some(x) = report.diagnosis.harts.iter_mut().find(|x| x.hart == h) {
                if let HartState::Acquiring { lock, evidence, .. } = &mut x.state {
                    *lock = waits.iter().find(|w| w.0 == h).map(|w| w.1);
                    *evidence = Some(e);
                }
            }
        }
    }

    /// Live snapshots: raise a suspicion that a stop should look at.
    fn watch_live(&mut self, snap: &Snapshot, t: u64) {
        let first = *self.first_ns.get_or_insert(t);
        let mut why: Option<String> = None;
        let mut note = |s: String| {
            if why.is_none() {
                why = Some(s);
            }
        };
        // A lock held by one holder that nobody acquires, while spins climb.
        let mut seen = Vec::new();
        for l in &snap.locks {
            if l.locked != Some(true) {
                continue;
            }
            let id = l.meta.id;
            seen.push(id);
            let (n, nts) = (l.lab.map(|c| c.n), l.lab.map(|c| c.nts));
            let fresh = HeldSince {
                holder: l.holder,
                n,
                nts,
                since: t,
            };
            let e = self.held.entry(id).or_insert(fresh);
            if e.holder != l.holder || e.n != n {
                *e = fresh;
                continue;
            }
            let held_for = t.saturating_sub(e.since);
            let spun = nts.is_some() && nts > e.nts;
            if (spun && held_for >= HELD_WITH_SPINS_NS) || held_for >= HELD_NS {
                let who = l.holder.map_or("no hart".into(), |h| format!("hart{h}"));
                note(format!(
                    "{} held by {who} for {} ms{}",
                    l.meta.name,
                    held_for / 1_000_000,
                    if spun { " while others spin on it" } else { "" }
                ));
            }
        }
        self.held.retain(|id, _| seen.contains(id));
        // The timer stopped counting.
        if let Some(ticks) = snap.ticks.filter(|&k| k > 0) {
            match self.ticks {
                Some((k, since)) if k == ticks => {
                    if t.saturating_sub(since) >= TICKS_FROZEN_NS {
                        note(format!("ticks stuck at {ticks}"));
                    }
                }
                _ => self.ticks = Some((ticks, t)),
            }
        }
        // A reader-writer lock whose fields never move, someone in it.
        for r in &snap.rwlocks {
            let values: Vec<Option<i64>> = r.fields.iter().map(|f| f.value).collect();
            let busy = values.iter().any(|v| v.is_some_and(|v| v != 0));
            let e = self.rw.entry(r.path.clone()).or_insert((values.clone(), t));
            if e.0 != values || !busy {
                *e = (values, t);
            } else if t.saturating_sub(e.1) >= RW_FROZEN_NS {
                note(format!(
                    "{}'s fields unchanged for {} ms",
                    r.path,
                    (t - e.1) / 1_000_000
                ));
            }
        }
        // Asleep on a free sleeplock: nobody will wake them.
        let mut on_free = Vec::new();
        for p in &snap.processes {
            let Some(ch) = p.chan else { continue };
            if let Some(s) = snap.sleeplocks.iter().find(|s| s.addr == ch && !s.locked) {
                on_free.push(p.pid);
                let e = self.free_sleep.entry(p.pid).or_insert((ch, t));
                if e.0 != ch {
                    *e = (ch, t);
                } else if t.saturating_sub(e.1) >= LOST_WAKEUP_NS {
                    note(format!(
                        "pid {} asleep on {} while it is free",
                        p.pid, s.path
                    ));
                }
            }
        }
        self.free_sleep.retain(|pid, _| on_free.contains(pid));
        // Everyone asleep, someone on a channel only another process can wake.
        let asleep = !snap.processes.is_empty()
            && snap
                .processes
                .iter()
                .all(|p| p.state.to_ascii_uppercase().contains("SLEEP"))
            && snap
                .processes
                .iter()
                .any(|p| !device_channel(p.chan_name.as_deref()));
        if asleep {
            let since = *self.asleep_since.get_or_insert(t);
            if t.saturating_sub(since) >= ALL_ASLEEP_NS {
                note("every process is asleep, some on what only a process can wake".into());
            }
        } else {
            self.asleep_since = None;
        }
        // No hart ever reached the scheduler.
        let started = snap
            .harts
            .iter()
            .any(|h| !matches!(h.run, HartRun::Offline | HartRun::Booting));
        if !started && t.saturating_sub(first) >= BOOT_NS {
            note(format!(
                "no hart reached the scheduler {} s after the start",
                (t - first) / 1_000_000_000
            ));
        }
        self.suspicion = why;
    }
}

/// The lock's holder and `n` are the same at both stops, and it is held at both.
fn same_lock_state(p: &Sample, c: &Sample, l: LockId) -> bool {
    match (p.locks.get(&l), c.locks.get(&l)) {
        (Some(a), Some(b)) => a.locked && b.locked && a.holder == b.holder && a.n == b.n,
        _ => false,
    }
}

/// Channels a device or the timer wakes: the console's input, `ticks`.
fn device_channel(name: Option<&str>) -> bool {
    name.is_some_and(|n| {
        let n = n.to_ascii_lowercase();
        n == "ticks" || n.starts_with("cons") || n.starts_with("uart")
    })
}

/// The value of the first field whose name matches, for the wording of a rw deadlock.
fn field(fields: &[FieldValue], want: impl Fn(&str) -> bool) -> Option<i64> {
    fields
        .iter()
        .find(|f| want(&f.name.to_ascii_lowercase()))
        .and_then(|f| f.value)
}

/// Reader-writer locks with harts stuck in their acquire (at both stops, the lock's fields
/// unchanged, when `prev` is given).
fn rw_deadlocks(
    d: &Diagnosis,
    prev: Option<(&Diagnosis, &[RwLockSnapshot])>,
    rwlocks: &[RwLockSnapshot],
) -> Vec<RwDeadlock> {
    let mut out: Vec<RwDeadlock> = Vec::new();
    for h in &d.harts {
        let HartState::RwWaiting {
            rwlock,
            writer,
            function,
            site,
            earlier,
        } = &h.state
        else {
            continue;
        };
        if let Some((p, before)) = prev {
            let same = p.harts.iter().any(|x| {
                x.hart == h.hart
                    && matches!(&x.state, HartState::RwWaiting { rwlock: r, writer: w, .. } if r == rwlock && w == writer)
            });
            let values = |all: &[RwLockSnapshot]| {
                all.iter()
                    .find(|r| &r.path == rwlock)
                    .map(|r| r.fields.iter().map(|f| f.value).collect::<Vec<_>>())
            };
            if !same || values(before) != values(rwlocks) {
                continue;
            }
        }
        let fields = rwlocks
            .iter()
            .find(|r| &r.path == rwlock)
            .map(|r| r.fields.clone())
            .unwrap_or_default();
        let i = match out.iter().position(|r| &r.rwlock == rwlock) {
            Some(i) => i,
            None => {
                out.push(RwDeadlock {
                    rwlock: rwlock.clone(),
                    readers_inside: field(&fields, |n| n.contains("read") && !n.contains("wait")),
                    writers_waiting: field(&fields, |n| n.contains("wait")),
                    writer_inside: field(&fields, |n| {
                        (n.contains("writ") || n.contains("wlock") || n.contains("wheld"))
                            && !n.contains("wait")
                            && !n.contains("pid")
                    }),
                    fields,
                    readers: Vec::new(),
                    writers: Vec::new(),
                });
                out.len() - 1
            }
        };
        let w = RwWaiter {
            hart: h.hart,
            function: function.clone(),
            site: *site,
            earlier: *earlier,
        };
        if *writer {
            out[i].writers.push(w);
        } else {
            out[i].readers.push(w);
        }
    }
    out
}

/// Chains of sleepers following sleeplock holders, from each process asleep on a sleeplock
/// (at both stops, when `prev` is given).
fn chains(d: &Diagnosis, prev: Option<&Diagnosis>) -> Vec<SleepChain> {
    let stuck = |pid: i64, chan: Option<u64>| {
        prev.is_none_or(|p| p.sleepers.iter().any(|s| s.pid == pid && s.chan == chan))
    };
    let link = |pid: i64| -> Option<SleepLink> {
        let s = d.sleepers.iter().find(|s| s.pid == pid)?;
        if !stuck(s.pid, s.chan) {
            return None;
        }
        let on = s.sleeplock.as_ref();
        Some(SleepLink {
            pid: s.pid,
            name: s.name.clone(),
            chan_name: s.chan_name.clone(),
            sleeplock: on.map(|o| o.path.clone()),
            holder: on.and_then(|o| o.holder.clone()),
            free: on.is_some_and(|o| !o.locked),
        })
    };
    let mut out: Vec<SleepChain> = Vec::new();
    for s in &d.sleepers {
        if s.sleeplock.is_none() {
            continue;
        }
        let Some(first) = link(s.pid) else { continue };
        let mut links = vec![first];
        let mut cycle = false;
        while links.len() <= d.sleepers.len() {
            let Some(next) = links.last().and_then(|l| l.holder.as_ref()).map(|h| h.pid) else {
                break;
            };
            if links.iter().any(|l| l.pid == next) {
                cycle = next == links[0].pid;
                break;
            }
            match link(next) {
                Some(l) => links.push(l),
                None => break,
            }
        }
        // A chain is worth telling when it loops or ends at a free sleeplock; each cycle once.
        let ends_free = links.last().is_some_and(|l| l.free);
        let dup = cycle
            && out.iter().any(|c| {
                c.cycle && c.links.len() == links.len() && c.links.iter().any(|l| l.pid == s.pid)
            });
        if (cycle || ends_free) && !dup {
            out.push(SleepChain { links, cycle });
        }
    }
    out
}
