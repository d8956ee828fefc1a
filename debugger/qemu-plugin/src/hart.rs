//! Per-vCPU state and what each watched instruction does to it.
//!
//! Each vCPU's table is touched only by the thread running that vCPU (MTTCG), or by the single
//! TCG thread in turn; nothing here locks or allocates. Between a lock's acquisition and its
//! release the plugin reads a clock and writes a few per-hart fields (the Acquired event and the
//! held entry); hold times are folded at release.

use std::mem::offset_of;
use std::sync::atomic::Ordering;

use lockscope_plugin_abi::{self as abi, Event, EventKind, HartState, HeldEntry};

use crate::shared::Shared;

/// Depth of the call-site stack (an interrupt between a call and its acquisition nests one).
const SITE_STACK: usize = 16;

/// One vCPU's private state.
pub struct Hart {
    /// Next event index of this hart's ring.
    write: u64,
    /// The acquisition in progress: its lock word (0 when none), first attempt, attempts.
    acq_addr: u64,
    acq_site: u64,
    acq_flags: u8,
    attempts: u32,
    first_ns: u64,
    sites: [u64; SITE_STACK],
    nsites: usize,
    held: [HeldEntry; abi::MAX_HELD],
    /// Locks held, including those that did not fit in `held`.
    depth: u32,
    overflow: u32,
    acquires: u64,
    no_site: u64,
    unseen: u64,
    /// Call site of a sleeplock acquisition in progress, until this hart releases a spinlock
    /// (the sleeper may then sleep and resume elsewhere) or the sleeplock is taken.
    sleep_site: u64,
    rw: Rw,
}

/// A reader-writer lock function in progress on this hart.
#[derive(Clone, Copy)]
struct Rw {
    /// `FLAG_READ` or `FLAG_WRITE`; 0 when none is in progress.
    flags: u8,
    release: bool,
    site: u64,
    start_ns: u64,
    /// The first spinlock taken inside: the rw lock (`rw->lk` is its first field).
    addr: u64,
    /// Spinlock acquisitions inside: more than one on the acquire side means it waited.
    inner: u32,
}

const NO_RW: Rw = Rw {
    flags: 0,
    release: false,
    site: 0,
    start_ns: 0,
    addr: 0,
    inner: 0,
};

impl Hart {
    pub const fn new() -> Self {
        Self {
            write: 0,
            acq_addr: 0,
            acq_site: 0,
            acq_flags: 0,
            attempts: 0,
            first_ns: 0,
            sites: [0; SITE_STACK],
            nsites: 0,
            held: [HeldEntry {
                addr: 0,
                site: 0,
                since_ns: 0,
            }; abi::MAX_HELD],
            depth: 0,
            overflow: 0,
            acquires: 0,
            no_site: 0,
            unseen: 0,
            sleep_site: 0,
            rw: NO_RW,
        }
    }
}

impl Default for Hart {
    fn default() -> Self {
        Self::new()
    }
}

/// The context of one callback: this vCPU's table, the file and the time.
pub struct Ctx<'a> {
    pub h: &'a mut Hart,
    pub s: &'a Shared,
    pub hart: u32,
}

#[allow(clippy::too_many_arguments)]
fn event(
    kind: EventKind,
    t: u64,
    addr: u64,
    site: u64,
    wait: u64,
    spins: u32,
    flags: u8,
    owner: u8,
) -> Event {
    Event {
        time_ns: t,
        addr,
        site,
        wait_ns: wait,
        spins,
        seq: 0,
        kind: kind as u8,
        flags,
        hart: 0,
        owner,
        _pad: 0,
    }
}

impl Ctx<'_> {
    /// Plugin time: the host's monotonic clock with the stops lockscope saw taken out, so a
    /// breakpoint never looks like a long hold. Read only by the callbacks that stamp something.
    fn now(&self) -> u64 {
        crate::monotonic_ns().saturating_sub(self.s.stopped_total())
    }

    fn emit(&mut self, mut e: Event) {
        let i = self.h.write;
        e.seq = i as u32;
        e.hart = self.hart as u8;
        self.s.push_event(self.hart, i, &e);
        self.h.write = i + 1;
    }

    fn publish_counters(&self) {
        let s = self.s;
        s.hart_u64(self.hart, offset_of!(HartState, acquires))
            .store(self.h.acquires, Ordering::Relaxed);
        s.hart_u64(self.hart, offset_of!(HartState, no_site))
            .store(self.h.no_site, Ordering::Relaxed);
        s.hart_u64(self.hart, offset_of!(HartState, unseen_releases))
            .store(self.h.unseen, Ordering::Relaxed);
    }

    /// A call into an acquire function: remember where it came from. A call from inside a
    /// reader-writer lock function is marked in bit 0 of the entry (return addresses are even).
    pub fn call(&mut self, ret: u64, flags: u32) {
        let in_rw = flags & abi::WATCH_IN_RW != 0;
        if in_rw && self.h.rw.flags == 0 {
            // Inside a reader-writer function whose call this hart did not see (the thread
            // was moved here between the call and its push_off): follow it without a site.
            self.rw_call(0, flags);
        }
        let ret = ret | in_rw as u64;
        let h = &mut *self.h;
        if h.nsites == SITE_STACK {
            // An acquire that never completed (a panic path) left entries: drop the oldest.
            h.sites.copy_within(1.., 0);
            h.nsites -= 1;
        }
        h.sites[h.nsites] = ret;
        h.nsites += 1;
    }

    /// A call into a sleeplock acquire function.
    pub fn sleep_call(&mut self, ret: u64) {
        self.h.sleep_site = ret;
    }

    /// One test-and-set on `vaddr` (its store half). The clock is read only when it matters:
    /// at the second attempt (the acquisition is contended: its spin starts now, one loop
    /// iteration after the first attempt) and at the acquisition.
    pub fn tas(&mut self, vaddr: u64, flags: u8) {
        let addr = vaddr & !3;
        if self.h.acq_addr == addr {
            self.h.attempts = self.h.attempts.saturating_add(1);
            let spins = self.h.attempts - 1;
            if spins == 1 {
                // The first attempt failed: a contended acquisition, spinning since then.
                let since = self.now();
                self.h.first_ns = since;
                let owner = self.s.owner_of(addr).map_or(abi::NO_HART, |o| o as u8);
                let site = self.h.acq_site & !1;
                let s = self.s;
                s.hart_begin(self.hart);
                s.hart_u64(self.hart, offset_of!(HartState, spin_since_ns))
                    .store(since, Ordering::Relaxed);
                s.hart_u64(self.hart, offset_of!(HartState, spin_site))
                    .store(site, Ordering::Relaxed);
                s.hart_u64(self.hart, offset_of!(HartState, spin_addr))
                    .store(addr, Ordering::Relaxed);
                s.hart_end(self.hart);
                let f = self.h.acq_flags;
                self.emit(event(
                    EventKind::Contended,
                    since,
                    addr,
                    site,
                    0,
                    1,
                    f,
                    owner,
                ));
            }
            self.s
                .hart_u64(self.hart, offset_of!(HartState, spin_count))
                .store(spins as u64, Ordering::Relaxed);
            return;
        }
        // A new acquisition. One left unfinished (a trylock that failed) is written as the
        // attempt it was; a normal acquisition's attempt is its Contended or Acquired event.
        if self.h.acq_addr != 0 {
            let now = self.now();
            let h = &*self.h;
            let (a, site, f) = (h.acq_addr, h.acq_site & !1, h.acq_flags);
            self.emit(event(
                EventKind::Attempt,
                now,
                a,
                site,
                0,
                0,
                f,
                abi::NO_HART,
            ));
        }
        let h = &mut *self.h;
        h.acq_addr = addr;
        h.attempts = 1;
        h.acq_flags = flags;
        h.acq_site = match h.nsites {
            0 => 0,
            n => h.sites[n - 1],
        };
    }

    /// The acquisition in progress succeeded (its success instruction ran, or acquire returned).
    pub fn acquired(&mut self) {
        if self.h.acq_addr == 0 {
            return;
        }
        let now = self.now();
        let h = &mut *self.h;
        let addr = h.acq_addr;
        h.acq_addr = 0;
        let mut flags = h.acq_flags;
        let raw = if h.nsites > 0 {
            h.nsites -= 1;
            h.sites[h.nsites]
        } else {
            h.no_site += 1;
            flags |= abi::FLAG_NO_SITE;
            0
        };
        let (site, in_rw) = (raw & !1, raw & 1 != 0);
        let spins = h.attempts - 1;
        let wait = if spins > 0 {
            now - h.first_ns.min(now)
        } else {
            0
        };
        self.push_held(addr, site, now, spins > 0);
        self.emit(event(
            EventKind::Acquired,
            now,
            addr,
            site,
            wait,
            spins,
            flags,
            abi::NO_HART,
        ));
        if in_rw {
            self.rw_inner(addr);
        }
    }

    /// A spinlock taken inside a reader-writer lock function: the first names the rw lock; a
    /// second one on the acquire side means the function waited (contended).
    fn rw_inner(&mut self, addr: u64) {
        let rw = &mut self.h.rw;
        if rw.flags == 0 {
            return;
        }
        if rw.inner == 0 {
            rw.addr = addr;
        }
        rw.inner = rw.inner.saturating_add(1);
        if rw.release || rw.inner != 2 || rw.addr != addr {
            return;
        }
        let (since, site, flags) = (rw.start_ns, rw.site, rw.flags);
        // The holder that made it wait: a writer, else a reader.
        let owner = self
            .s
            .owner_of(addr | abi::HELD_TAG_WRITE)
            .or_else(|| self.s.owner_of(addr | abi::HELD_TAG_READ))
            .map_or(abi::NO_HART, |o| o as u8);
        let s = self.s;
        s.hart_begin(self.hart);
        s.hart_u64(self.hart, offset_of!(HartState, spin_since_ns))
            .store(since, Ordering::Relaxed);
        s.hart_u64(self.hart, offset_of!(HartState, spin_site))
            .store(site, Ordering::Relaxed);
        s.hart_u64(self.hart, offset_of!(HartState, spin_addr))
            .store(addr, Ordering::Relaxed);
        s.hart_end(self.hart);
        self.emit(event(
            EventKind::Contended,
            since,
            addr,
            site,
            0,
            1,
            flags,
            owner,
        ));
    }

    /// A call into a reader-writer lock function.
    pub fn rw_call(&mut self, ret: u64, flags: u32) {
        let now = self.now();
        self.h.rw = Rw {
            flags: (flags as u8) & (abi::FLAG_READ | abi::FLAG_WRITE),
            release: flags & abi::WATCH_RELEASE_SIDE != 0,
            site: ret,
            start_ns: now,
            addr: 0,
            inner: 0,
        };
        if self.h.rw.flags == 0 {
            self.h.rw.flags = abi::FLAG_WRITE;
        }
    }

    /// A reader-writer lock function returns: the read or write hold begins or ends.
    pub fn rw_return(&mut self) {
        let rw = std::mem::replace(&mut self.h.rw, NO_RW);
        if rw.flags == 0 || rw.addr == 0 {
            return;
        }
        let now = self.now();
        if rw.release {
            // A thread may hold a reader-writer lock across a sleep and release it on another
            // hart, so rw holds are not kept in the per-hart held list: lockscope pairs them
            // by lock address (the hold time is computed there).
            self.emit(event(
                EventKind::Released,
                now,
                rw.addr,
                rw.site,
                0,
                0,
                rw.flags,
                abi::NO_HART,
            ));
            return;
        }
        let spins = rw.inner.saturating_sub(1);
        let wait = if spins > 0 {
            now.saturating_sub(rw.start_ns)
        } else {
            0
        };
        if spins > 0 {
            let s = self.s;
            s.hart_begin(self.hart);
            s.hart_u64(self.hart, offset_of!(HartState, spin_addr))
                .store(0, Ordering::Relaxed);
            s.hart_end(self.hart);
        }
        self.h.acquires += 1;
        let flags = if rw.site == 0 {
            rw.flags | abi::FLAG_NO_SITE
        } else {
            rw.flags
        };
        self.emit(event(
            EventKind::Acquired,
            now,
            rw.addr,
            rw.site,
            wait,
            spins,
            flags,
            abi::NO_HART,
        ));
    }

    /// Pushes a held entry and publishes it (clearing the spin state when `was_spinning`).
    fn push_held(&mut self, key: u64, site: u64, now: u64, was_spinning: bool) {
        let h = &mut *self.h;
        h.acquires += 1;
        let d = h.depth as usize;
        let entry = HeldEntry {
            addr: key,
            site,
            since_ns: now,
        };
        if d < abi::MAX_HELD {
            h.held[d] = entry;
        } else {
            h.overflow += 1;
        }
        h.depth += 1;
        let (depth, overflow) = (h.depth, h.overflow);
        let s = self.s;
        s.hart_begin(self.hart);
        if d < abi::MAX_HELD {
            s.set_held(self.hart, d, &entry);
        }
        s.set_depth(self.hart, depth, overflow);
        if was_spinning {
            s.hart_u64(self.hart, offset_of!(HartState, spin_addr))
                .store(0, Ordering::Relaxed);
        }
        s.hart_end(self.hart);
    }

    /// Removes listed held entry `i` and publishes the list.
    fn pop_held(&mut self, i: usize) {
        let h = &mut *self.h;
        let listed = (h.depth as usize).min(abi::MAX_HELD);
        h.held.copy_within(i + 1..listed, i);
        h.depth -= 1;
        let (d, o) = (h.depth, h.overflow);
        let s = self.s;
        s.hart_begin(self.hart);
        for j in i..listed - 1 {
            s.set_held(self.hart, j, &h.held[j]);
        }
        s.set_held(self.hart, listed - 1, &HeldEntry::default());
        s.set_depth(self.hart, d, o);
        s.hart_end(self.hart);
    }

    /// A releasing store or AMO to `vaddr` in a release function.
    pub fn release(&mut self, vaddr: u64) {
        let addr = vaddr & !3;
        let now = self.now();
        let h = &mut *self.h;
        // The sleeper (if any) may now sleep and resume on another hart.
        h.sleep_site = 0;
        let listed = (h.depth as usize).min(abi::MAX_HELD);
        let Some(i) = (0..listed).rev().find(|&i| h.held[i].addr == addr) else {
            if h.depth as usize > abi::MAX_HELD {
                // Most likely one of the unlisted ones.
                h.depth -= 1;
                let (d, o) = (h.depth, h.overflow);
                self.s.hart_begin(self.hart);
                self.s.set_depth(self.hart, d, o);
                self.s.hart_end(self.hart);
                self.emit(event(
                    EventKind::Released,
                    now,
                    addr,
                    0,
                    0,
                    0,
                    0,
                    abi::NO_HART,
                ));
                return;
            }
            h.unseen += 1;
            self.publish_counters();
            self.emit(event(
                EventKind::UnseenRelease,
                now,
                addr,
                0,
                0,
                0,
                0,
                abi::NO_HART,
            ));
            return;
        };
        let since = h.held[i].since_ns;
        self.pop_held(i);
        // Counters are folded here, outside the critical section.
        self.publish_counters();
        let hold = now.saturating_sub(since);
        self.emit(event(
            EventKind::Released,
            now,
            addr,
            0,
            hold,
            0,
            0,
            abi::NO_HART,
        ));
    }

    /// A store in a sleeplock function: `lk->locked` when its address matches the inner
    /// spinlock this hart holds last.
    pub fn sleep_store(&mut self, vaddr: u64, acquire: bool) {
        let (lk_off, locked_off) = (self.s.sleep_lk_off, self.s.sleep_locked_off);
        let h = &mut *self.h;
        let listed = (h.depth as usize).min(abi::MAX_HELD);
        if listed == 0 || vaddr < locked_off {
            return;
        }
        let base = vaddr - locked_off;
        if h.held[listed - 1].addr != (base + lk_off) & !3 {
            return;
        }
        let now = self.now();
        let h = &mut *self.h;
        if acquire {
            let site = std::mem::take(&mut h.sleep_site);
            let flags = if site == 0 { abi::FLAG_NO_SITE } else { 0 };
            self.emit(event(
                EventKind::SleepAcquired,
                now,
                base,
                site,
                0,
                0,
                flags,
                abi::NO_HART,
            ));
        } else {
            self.emit(event(
                EventKind::SleepReleased,
                now,
                base,
                0,
                0,
                0,
                0,
                abi::NO_HART,
            ));
        }
    }
}
