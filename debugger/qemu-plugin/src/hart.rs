//! Per-vCPU state and what the spinlock instructions do to it.
//!
//! Each vCPU's table is touched only by the thread running that vCPU (MTTCG), or by the single
//! TCG thread in turn; nothing here locks or allocates. Between a lock's acquisition and its
//! release the plugin reads a clock and writes a few per-hart fields (the Acquired event and the
//! held entry); hold times and counters are folded at release.
//!
//! What belongs to the guest thread rather than the hart (pending call sites, reader-writer
//! functions in progress, a sleeplock acquisition in progress) is in [`Thread`], which moves
//! with the thread at a context switch (`thread.rs`); the reader-writer functions are in
//! `rw.rs`.

use std::mem::offset_of;
use std::sync::atomic::Ordering;

use lockscope_plugin_abi::{self as abi, Event, EventKind, HartState, HeldEntry};

use crate::frame::RwFrame;
use crate::shared::Shared;

/// Depth of the call-site stack (an interrupt between a call and its acquisition nests one).
pub const SITE_STACK: usize = 16;
/// Reader-writer functions in progress on one thread (an interrupt can nest one).
pub const RW_STACK: usize = 4;
/// Reader-writer holds a thread can carry across a context switch.
pub const CARRIED: usize = 4;

/// What belongs to the guest thread running on a hart, and moves with it when it is switched
/// out and in again, possibly on another hart.
#[derive(Clone, Copy)]
pub struct Thread {
    /// Return addresses of calls into acquire functions whose acquisition has not happened yet.
    pub sites: [u64; SITE_STACK],
    pub nsites: usize,
    /// Reader-writer lock functions in progress, innermost last.
    pub rw: [RwFrame; RW_STACK],
    pub nrw: usize,
    /// A sleeplock acquisition in progress: its call site, and when its inner spinlock was
    /// first taken (0 until then).
    pub sleep_pending: bool,
    pub sleep_site: u64,
    pub sleep_since: u64,
    /// It was switched out while acquiring the sleeplock.
    pub slept: bool,
    /// Reader-writer holds taken off a hart's held list when the thread was switched out.
    pub carried: [HeldEntry; CARRIED],
    pub ncarried: usize,
}

impl Thread {
    pub const EMPTY: Thread = Thread {
        sites: [0; SITE_STACK],
        nsites: 0,
        rw: [RwFrame::NONE; RW_STACK],
        nrw: 0,
        sleep_pending: false,
        sleep_site: 0,
        sleep_since: 0,
        slept: false,
        carried: [HeldEntry {
            addr: 0,
            site: 0,
            since_ns: 0,
        }; CARRIED],
        ncarried: 0,
    };

    /// The reader-writer function whose inner spinlock an acquisition made now takes: the
    /// innermost one, when no call into an acquire function was made since it was entered (an
    /// interrupt's acquisitions push their own call site).
    pub fn rw_inner(&mut self) -> Option<&mut RwFrame> {
        let n = self.nsites;
        match self.nrw {
            0 => None,
            k => Some(&mut self.rw[k - 1]).filter(|f| f.mark == n),
        }
    }
}

/// Where the call site of the acquisition in progress came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SiteFrom {
    None,
    Stack,
    RwInner,
}

/// One vCPU's private state.
pub struct Hart {
    /// Next event index of this hart's ring.
    write: u64,
    /// The acquisition in progress: its lock word (0 when none), site, flags, attempts.
    acq_addr: u64,
    acq_site: u64,
    acq_flags: u8,
    acq_from: SiteFrom,
    attempts: u32,
    first_ns: u64,
    /// Held locks, outermost first: `listed` in `held`, `unlisted` more past its end.
    held: [HeldEntry; abi::MAX_HELD],
    listed: usize,
    unlisted: u32,
    overflow: u32,
    acquires: u64,
    no_site: u64,
    unseen: u64,
    /// The thread running here, and its index + 1 in the thread table (0: unknown).
    pub thread: Thread,
    pub thread_index: u32,
    pub switches: u32,
}

impl Hart {
    pub const fn new() -> Self {
        Self {
            write: 0,
            acq_addr: 0,
            acq_site: 0,
            acq_flags: 0,
            acq_from: SiteFrom::None,
            attempts: 0,
            first_ns: 0,
            held: [HeldEntry {
                addr: 0,
                site: 0,
                since_ns: 0,
            }; abi::MAX_HELD],
            listed: 0,
            unlisted: 0,
            overflow: 0,
            acquires: 0,
            no_site: 0,
            unseen: 0,
            thread: Thread::EMPTY,
            thread_index: 0,
            switches: 0,
        }
    }
}

impl Default for Hart {
    fn default() -> Self {
        Self::new()
    }
}

/// The context of one callback: this vCPU's table, the file and the hart.
pub struct Ctx<'a> {
    pub h: &'a mut Hart,
    pub s: &'a Shared,
    pub hart: u32,
}

/// What a release found in the held list.
pub enum Found {
    /// A listed entry, taken at this time.
    Listed(u64),
    /// One of the holds past the list's end (hold time unknown).
    Unlisted,
    /// No hold of it on this hart.
    Unseen,
}

#[allow(clippy::too_many_arguments)]
pub fn event(
    kind: EventKind,
    t: u64,
    addr: u64,
    site: u64,
    value: u64,
    spins: u32,
    flags: u8,
    owner: u8,
) -> Event {
    Event {
        time_ns: t,
        addr,
        site,
        value,
        spins,
        seq: 0,
        kind: kind as u8,
        flags,
        hart: 0,
        owner,
        thread: 0,
    }
}

impl Ctx<'_> {
    /// Plugin time: the host's monotonic clock with the stops lockscope saw taken out, so a
    /// breakpoint never looks like a long hold. Read only by the callbacks that stamp something.
    pub fn now(&self) -> u64 {
        lockscope_plugin_abi::monotonic_ns().saturating_sub(self.s.stopped_total())
    }

    pub fn emit(&mut self, mut e: Event) {
        let i = self.h.write;
        e.seq = i as u32;
        e.hart = self.hart as u8;
        e.thread = self.h.thread_index;
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

    /// A call into an acquire function: remember where it came from.
    pub fn call(&mut self, ret: u64) {
        let t = &mut self.h.thread;
        if t.nsites == SITE_STACK {
            // An acquire that never completed (a panic path) left entries: drop the oldest.
            t.sites.copy_within(1.., 0);
            t.nsites -= 1;
            for f in &mut t.rw[..t.nrw] {
                f.mark = f.mark.saturating_sub(1);
            }
        }
        t.sites[t.nsites] = ret;
        t.nsites += 1;
    }

    /// Publishes "spinning on `key` since `since`, from `site`" (clearing it when `key` is 0).
    pub fn publish_spin(&self, key: u64, since: u64, site: u64) {
        let s = self.s;
        s.hart_begin(self.hart);
        s.hart_u64(self.hart, offset_of!(HartState, spin_since_ns))
            .store(since, Ordering::Relaxed);
        s.hart_u64(self.hart, offset_of!(HartState, spin_site))
            .store(site, Ordering::Relaxed);
        s.hart_u64(self.hart, offset_of!(HartState, spin_addr))
            .store(key, Ordering::Relaxed);
        s.hart_end(self.hart);
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
                let site = self.h.acq_site;
                self.publish_spin(addr, since, site);
                let f = self.h.acq_flags;
                let mask = if owner == abi::NO_HART { 0 } else { 1 << owner };
                self.emit(event(
                    EventKind::Contended,
                    since,
                    addr,
                    site,
                    mask,
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
            let (a, site, f) = (h.acq_addr, h.acq_site, h.acq_flags);
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
        let t = &mut h.thread;
        let (site, from, flags) = if let Some(f) = t.rw_inner() {
            (f.site, SiteFrom::RwInner, flags | abi::FLAG_RW_INNER)
        } else if t.nsites > 0 {
            (t.sites[t.nsites - 1], SiteFrom::Stack, flags)
        } else {
            (0, SiteFrom::None, flags)
        };
        h.acq_site = site;
        h.acq_from = from;
        h.acq_flags = flags;
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
        let (site, mut flags) = (h.acq_site, h.acq_flags);
        match h.acq_from {
            SiteFrom::Stack => h.thread.nsites -= 1,
            SiteFrom::None => {
                h.no_site += 1;
                flags |= abi::FLAG_NO_SITE;
            }
            SiteFrom::RwInner => {}
        }
        let spins = h.attempts - 1;
        let wait = if spins > 0 {
            now - h.first_ns.min(now)
        } else {
            0
        };
        let t = &mut h.thread;
        if t.sleep_pending && t.sleep_since == 0 {
            t.sleep_since = now;
        }
        let inner = h.acq_from == SiteFrom::RwInner;
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
        if inner {
            self.rw_inner_acquired(addr, now);
        }
    }

    /// Pushes a held entry and publishes it (clearing the spin state when `was_spinning`).
    pub fn push_held(&mut self, key: u64, site: u64, now: u64, was_spinning: bool) {
        self.h.acquires += 1;
        self.list_held(
            HeldEntry {
                addr: key,
                site,
                since_ns: now,
            },
            was_spinning,
        );
    }

    /// Adds `e` to the held list and publishes it.
    pub fn list_held(&mut self, e: HeldEntry, was_spinning: bool) {
        let h = &mut *self.h;
        let d = h.listed;
        if d < abi::MAX_HELD {
            h.held[d] = e;
            h.listed += 1;
        } else {
            h.unlisted += 1;
            h.overflow += 1;
        }
        let (depth, overflow) = (h.listed as u32 + h.unlisted, h.overflow);
        let s = self.s;
        s.hart_begin(self.hart);
        if d < abi::MAX_HELD {
            s.set_held(self.hart, d, &e);
        }
        s.set_depth(self.hart, depth, overflow);
        if was_spinning {
            s.hart_u64(self.hart, offset_of!(HartState, spin_addr))
                .store(0, Ordering::Relaxed);
        }
        s.hart_end(self.hart);
    }

    /// Removes listed held entry `i` and publishes the list.
    pub fn unlist_held(&mut self, i: usize) -> HeldEntry {
        let h = &mut *self.h;
        let e = h.held[i];
        let listed = h.listed;
        h.held.copy_within(i + 1..listed, i);
        h.listed -= 1;
        let (d, o) = (h.listed as u32 + h.unlisted, h.overflow);
        let s = self.s;
        s.hart_begin(self.hart);
        for j in i..listed - 1 {
            s.set_held(self.hart, j, &h.held[j]);
        }
        s.set_held(self.hart, listed - 1, &HeldEntry::default());
        s.set_depth(self.hart, d, o);
        s.hart_end(self.hart);
        e
    }

    /// Takes the hold of `key` off the held list. Holds past the list's end are newer than every
    /// listed one, so a release of the same lock as the newest listed hold, or of one not
    /// listed, while some are unlisted, is one of those (releases come in reverse order).
    pub fn take_held(&mut self, key: u64) -> Found {
        let h = &mut *self.h;
        let found = (0..h.listed).rev().find(|&i| h.held[i].addr == key);
        match found {
            Some(i) if !(h.unlisted > 0 && i + 1 == h.listed) => {
                Found::Listed(self.unlist_held(i).since_ns)
            }
            _ if h.unlisted > 0 => {
                h.unlisted -= 1;
                let (d, o) = (h.listed as u32 + h.unlisted, h.overflow);
                self.s.hart_begin(self.hart);
                self.s.set_depth(self.hart, d, o);
                self.s.hart_end(self.hart);
                Found::Unlisted
            }
            _ => Found::Unseen,
        }
    }

    /// Writes the release of `key` (a spinlock, or a tagged reader-writer hold) at `now`: a
    /// `Released` with its hold time, or an `UnseenRelease` when this hart was not seen taking it.
    pub fn released(&mut self, key: u64, site: u64, flags: u8, now: u64) {
        let addr = key & !abi::HELD_TAG_MASK;
        match self.take_held(key) {
            Found::Listed(since) => {
                self.emit(event(
                    EventKind::Released,
                    now,
                    addr,
                    site,
                    now.saturating_sub(since),
                    0,
                    flags,
                    abi::NO_HART,
                ));
            }
            Found::Unlisted => {
                self.emit(event(
                    EventKind::Released,
                    now,
                    addr,
                    site,
                    0,
                    0,
                    flags | abi::FLAG_NO_HOLD,
                    abi::NO_HART,
                ));
            }
            Found::Unseen => {
                self.h.unseen += 1;
                self.emit(event(
                    EventKind::UnseenRelease,
                    now,
                    addr,
                    site,
                    0,
                    0,
                    flags,
                    abi::NO_HART,
                ));
            }
        }
    }

    /// A releasing store or AMO to `vaddr` in a release function.
    pub fn release(&mut self, vaddr: u64) {
        let addr = vaddr & !3;
        let now = self.now();
        self.released(addr, 0, 0, now);
        // Counters are folded here, outside the critical section.
        self.publish_counters();
        self.rw_inner_released(addr, now);
    }

    /// A call into a sleeplock acquire function.
    pub fn sleep_call(&mut self, ret: u64) {
        let t = &mut self.h.thread;
        t.sleep_pending = true;
        t.sleep_site = ret;
        t.sleep_since = 0;
        t.slept = false;
    }

    /// A store in a sleeplock function: `lk->locked` when its address matches the inner
    /// spinlock this hart holds last.
    pub fn sleep_store(&mut self, vaddr: u64, acquire: bool) {
        let (lk_off, locked_off) = (self.s.sleep_lk_off, self.s.sleep_locked_off);
        let h = &mut *self.h;
        if h.listed == 0 || vaddr < locked_off {
            return;
        }
        let base = vaddr - locked_off;
        if h.held[h.listed - 1].addr != (base + lk_off) & !3 {
            return;
        }
        let now = self.now();
        let t = &mut self.h.thread;
        if acquire {
            let (site, mut flags) = if t.sleep_pending {
                (t.sleep_site, 0)
            } else {
                (0, abi::FLAG_NO_SITE)
            };
            let wait = if t.sleep_pending && t.sleep_since != 0 {
                now.saturating_sub(t.sleep_since)
            } else {
                0
            };
            if t.slept {
                flags |= abi::FLAG_SLEPT;
            }
            t.sleep_pending = false;
            t.slept = false;
            self.emit(event(
                EventKind::SleepAcquired,
                now,
                base,
                site,
                wait,
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

    /// Takes the reader-writer holds off this hart's held list, for the thread that is
    /// switched out to carry (xv6's holders keep interrupts off, so in practice none).
    pub fn carry_rw_holds(&mut self) {
        let mut i = 0;
        while i < self.h.listed {
            let e = self.h.held[i];
            if e.addr & abi::HELD_TAG_MASK == 0 {
                i += 1;
                continue;
            }
            self.unlist_held(i);
            let t = &mut self.h.thread;
            if t.ncarried < CARRIED {
                t.carried[t.ncarried] = e;
                t.ncarried += 1;
            }
        }
    }

    /// Lists the reader-writer holds the thread that is switched in carries.
    pub fn restore_rw_holds(&mut self) {
        let n = std::mem::take(&mut self.h.thread.ncarried);
        for k in 0..n {
            let e = self.h.thread.carried[k];
            self.list_held(e, false);
        }
    }
}
