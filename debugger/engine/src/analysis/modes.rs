//! Events with a mode: reader-writer holds and sleeplocks, off the spinlock hot path.
//!
//! A reader-writer hold is kept per hart beside (not in) the spinlock stack, because snapshots
//! list only spinlocks and a thread may release its hold on another hart. Two rules come from
//! them: a read taken again by a hart that already holds the lock for reading (a deadlock under
//! writer priority if a writer starts waiting in between), and a spinlock held when the hart
//! takes a sleeplock (xv6's `sched` panics with "sched locks" the first time that sleeplock is
//! contended).

use super::events::{EventState, HartEvents};
use super::mode_state::{ReRead, RwHeld, RwSpin, SleepHolding, RW_HOLDS};
use crate::model::{EventKind, HartId, LockEvent, LockId};

/// Distinct findings of each kind kept; more are counted only.
const MAX_FINDINGS: usize = 64;

impl HartEvents {
    pub(crate) fn rw_holds(&self) -> &[RwHeld] {
        &self.rw[..self.rw_len]
    }

    fn push_rw(&mut self, h: RwHeld) -> bool {
        if self.rw_len == RW_HOLDS {
            self.rw.copy_within(1.., 0);
            self.rw_len -= 1;
            self.rw[self.rw_len] = h;
            self.rw_len += 1;
            return false;
        }
        self.rw[self.rw_len] = h;
        self.rw_len += 1;
        true
    }

    fn take_rw(&mut self, lock: LockId, write: bool) -> Option<RwHeld> {
        let p = self
            .rw_holds()
            .iter()
            .rposition(|x| x.lock == lock && x.write == write)?;
        let h = self.rw[p];
        self.rw.copy_within(p + 1..self.rw_len, p);
        self.rw_len -= 1;
        Some(h)
    }
}

impl EventState {
    /// A reader-writer event (`e.mode` is read or write) of the lock in `slot`.
    #[cold]
    pub(crate) fn ingest_rw(&mut self, slot: usize, e: &LockEvent, write: bool) {
        self.stats.rw_events += 1;
        let h = e.hart as usize;
        let order_ok = self.harts[h].in_sync() && !e.trylock;
        match e.kind {
            EventKind::Spin => {
                self.locks[slot].spins += 1;
                if order_ok {
                    self.record_order_of(h, e);
                }
                self.harts[h].rw_spin = Some(RwSpin {
                    lock: e.lock,
                    write,
                    since_ns: e.time_ns,
                    pc: e.pc,
                });
            }
            EventKind::Acquired { contended } => {
                let max_sites = self.max_sites();
                let hart = &mut self.harts[h];
                let lk = &mut self.locks[slot];
                lk.acquires += 1;
                let mut ordered = false;
                if contended {
                    lk.contended += 1;
                    match hart.rw_spin {
                        Some(s) if s.lock == e.lock && s.write == write => {
                            let wait = e.time_ns.saturating_sub(s.since_ns);
                            lk.wait.add(wait);
                            lk.add_site(s.pc, wait, max_sites, &mut self.stats.site_overflow);
                            ordered = true;
                        }
                        _ => self.stats.unmatched_contended += 1,
                    }
                }
                hart.rw_spin = None;
                let again = (!write)
                    .then(|| {
                        hart.rw_holds()
                            .iter()
                            .rev()
                            .find(|x| x.lock == e.lock && !x.write)
                            .copied()
                    })
                    .flatten();
                if let Some(first) = again.filter(|_| hart.in_sync()) {
                    self.note_reread(e, first.pc);
                }
                if !ordered && order_ok {
                    self.record_order_of(h, e);
                }
                let pushed = self.harts[h].push_rw(RwHeld {
                    lock: e.lock,
                    write,
                    pc: e.pc,
                    since_ns: e.time_ns,
                });
                if !pushed {
                    self.stats.stack_overflows += 1;
                }
            }
            EventKind::Released => {
                // The releasing hart's own hold, else one taken on another hart (the thread
                // moved).
                let held = self.harts[h].take_rw(e.lock, write).or_else(|| {
                    self.harts
                        .iter_mut()
                        .find_map(|other| other.take_rw(e.lock, write))
                });
                match held {
                    Some(x) => self.locks[slot]
                        .hold
                        .add(e.time_ns.saturating_sub(x.since_ns)),
                    None => self.stats.unmatched_rw_releases += 1,
                }
            }
        }
    }

    fn note_reread(&mut self, e: &LockEvent, first_pc: u64) {
        let writer_waiting = self
            .harts
            .iter()
            .enumerate()
            .find(|(i, o)| {
                *i != e.hart as usize && o.rw_spin.is_some_and(|s| s.lock == e.lock && s.write)
            })
            .map(|(i, _)| i as HartId);
        if let Some(r) = self
            .rereads
            .iter_mut()
            .find(|r| r.lock == e.lock && r.again_pc == e.pc)
        {
            r.count += 1;
            if r.writer_waiting.is_none() {
                r.writer_waiting = writer_waiting;
            }
            return;
        }
        if self.rereads.len() < MAX_FINDINGS {
            self.rereads.push(ReRead {
                lock: e.lock,
                hart: e.hart,
                first_pc,
                again_pc: e.pc,
                time_ns: e.time_ns,
                count: 1,
                writer_waiting,
            });
        } else {
            self.stats.findings_overflow += 1;
        }
    }

    /// A sleeplock event (`e.lock` is its inner spinlock). Taking one while holding any other
    /// spinlock is flagged.
    #[cold]
    pub(crate) fn ingest_sleep(&mut self, e: &LockEvent) {
        self.stats.sleep_events += 1;
        let hart = &self.harts[e.hart as usize];
        if !matches!(e.kind, EventKind::Acquired { .. })
            || !hart.in_sync()
            || self.protocol_site(e.pc)
        {
            return;
        }
        // `acquiresleep` holds the sleeplock's own inner spinlock when it takes it, and
        // `sleep(chan, lk)` gives that one up: any other is held across a possible sleep.
        let held: Vec<(LockId, u64)> = hart
            .held()
            .iter()
            .filter(|x| x.lock != e.lock)
            .map(|x| (x.lock, x.pc))
            .collect();
        for (lock, held_pc) in held {
            if let Some(s) = self
                .sleeps
                .iter_mut()
                .find(|s| s.lock == lock && s.pc == e.pc)
            {
                s.count += 1;
                continue;
            }
            if self.sleeps.len() >= MAX_FINDINGS {
                self.stats.findings_overflow += 1;
                continue;
            }
            self.sleeps.push(SleepHolding {
                lock,
                lock_name: String::new(),
                held_pc,
                sleeplock: e.lock,
                sleeplock_name: String::new(),
                pc: e.pc,
                hart: e.hart,
                time_ns: e.time_ns,
                count: 1,
            });
        }
    }
}
