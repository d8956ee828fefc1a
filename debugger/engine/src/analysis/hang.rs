//! Hangs of a kernel without lock events (an unmodified xv6), from what a source diagnosed at
//! stops of the guest ([`Diagnosis`]): a hart stuck in `acquire` on a lock another hart holds,
//! a reader-writer lock nobody can get through, processes asleep on something nobody will
//! wake, a kernel stuck before its scheduler. One stop can mislead (a spinning hart caught in a
//! timer handler, a holder about to release), so a hang is confirmed only when two stops at
//! least `deadlock_confirm_ns` apart show the same stuck state.
//!
//! Between stops, live snapshots raise a suspicion (`suspect`), and the monitor asks for a stop
//! to look. The reader-writer locks and sleeplock chains nobody gets through are worked out in
//! `hang_parts`.

use std::collections::HashMap;

use super::hang_parts::{chains, device_channel, rw_deadlocks, HangKind, HangReport};
use super::suspect::Suspect;
use super::watch::{DeadlockCycle, StallReason, StallReport, StalledHart, Watch};
use crate::model::{
    Diagnosis, HartId, HartRun, HartSnapshot, HartState, Held, LockEvidence, LockId, Outcome,
    RwLockSnapshot, Snapshot, Spin,
};

/// Stops further apart than this are not compared: the kernel had time to change.
const MAX_APART_NS: u64 = 30_000_000_000;
/// A lock as a stop saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LockLook {
    locked: bool,
    holder: Option<HartId>,
    n: Option<i64>,
    nts: Option<i64>,
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
#[derive(Clone)]
pub(crate) struct Hang {
    max_harts: usize,
    confirm_ns: u64,
    stall_ns: u64,
    prev: Option<Sample>,
    pub report: Option<HangReport>,
    pub deadlocks: Vec<DeadlockCycle>,
    pub stall: Option<StallReport>,
    live: Suspect,
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
            live: Suspect::default(),
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
        self.live.suspicion()
    }

    /// Feeds a snapshot at target time `t`.
    pub fn observe(&mut self, snap: &Snapshot, t: u64) {
        let panicked = snap.panic.is_some() || snap.outcome == Some(Outcome::Panic);
        if panicked {
            self.live.clear_suspicion();
            return;
        }
        match &snap.diagnosis {
            Some(d) => self.diagnosed(snap, d),
            None => self.live.observe(snap, t),
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
            suspicion: self.live.suspicion().map(str::to_string),
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
        // Stuck in the boot: every hart's registers the same at both stops (a slow boot
        // zeroing memory moves a pointer; a hart in a trap loop or a spin does not).
        let booting = cd.booting
            && pd.booting
            && cd.harts.iter().all(|h| {
                before(h.hart).is_some_and(|b| b.pc == h.pc && b.regs_digest == h.regs_digest)
            });
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
}

/// The lock's holder and `n` are the same at both stops, and it is held at both.
fn same_lock_state(p: &Sample, c: &Sample, l: LockId) -> bool {
    match (p.locks.get(&l), c.locks.get(&l)) {
        (Some(a), Some(b)) => a.locked && b.locked && a.holder == b.holder && a.n == b.n,
        _ => false,
    }
}
