//! What live snapshots of a kernel without lock events make suspicious, so that a stop should
//! look: a lock held by the same hart while nobody acquires it and its `nts` climbs, `ticks`
//! frozen, a reader-writer lock whose fields never move, a process asleep on a free sleeplock,
//! every process asleep on something only another process can wake, a kernel that never
//! reaches its scheduler. Cheap: a few comparisons per lock and process per snapshot.

use std::collections::HashMap;

use super::hang_parts::device_channel;
use crate::model::{HartId, HartRun, LockId, Snapshot};

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

/// Since when live snapshots have shown a lock held by one holder with the same `n`.
#[derive(Clone, Copy, Debug)]
struct HeldSince {
    holder: Option<HartId>,
    n: Option<i64>,
    nts: Option<i64>,
    since: u64,
}

/// The suspicion's state between live snapshots.
#[derive(Clone, Default)]
pub(crate) struct Suspect {
    first_ns: Option<u64>,
    held: HashMap<LockId, HeldSince>,
    ticks: Option<(u64, u64)>,
    rw: HashMap<String, (Vec<Option<i64>>, u64)>,
    free_sleep: HashMap<i64, (u64, u64)>,
    asleep_since: Option<u64>,
    suspicion: Option<String>,
}

impl Suspect {
    /// Why the live snapshots look hung, if they do.
    pub fn suspicion(&self) -> Option<&str> {
        self.suspicion.as_deref()
    }

    pub fn clear_suspicion(&mut self) {
        self.suspicion = None;
    }

    /// A live snapshot at target time `t`.
    pub fn observe(&mut self, snap: &Snapshot, t: u64) {
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
