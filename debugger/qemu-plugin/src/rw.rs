//! Reader-writer locks (the 2025 lab's `read_acquire`, `read_release`, `write_acquire`,
//! `write_release`): read and write holds of one lock, named by the rw lock's inner spinlock
//! (`rw->lk`, its first field).
//!
//! A call into an rw function opens a frame on the calling thread (it moves with the thread at
//! a context switch, so a thread switched out between its call and its `push_off`, or between
//! its `pop_off` and its return, is still followed). The spinlock acquisitions made inside (no
//! call into an acquire function since the frame opened: an interrupt's have their own call
//! sites) are the rw lock's inner lock; they carry the rw function's call site. On the acquire
//! side the hold begins at the inner lock's release that is followed by the function's return
//! (lockscope watches the calls of release that go back to waiting: `RwWait`); on the release
//! side it ends at the inner lock's release. A function whose hold starts or ends at its
//! return instead (no such inner release: [`abi::WATCH_AT_RETURN`]) has its returns watched.
//! Holds are listed on the hart's held list tagged read or write.

use std::mem::offset_of;
use std::sync::atomic::Ordering;

use lockscope_plugin_abi::{self as abi, EventKind, HartState};

use crate::frame::RwFrame;
use crate::hart::{event, Ctx, RW_STACK};

impl Ctx<'_> {
    /// A call into a reader-writer lock function (no clock read: the wait starts at its first
    /// inner acquisition, which reads one anyway).
    pub fn rw_call(&mut self, ret: u64, flags: u32) {
        let t = &mut self.h.thread;
        if t.nrw == RW_STACK {
            // Frames left by functions that never finished (a panic path): drop the oldest.
            t.rw.copy_within(1.., 0);
            t.nrw -= 1;
        }
        let mut rw = (flags as u8) & (abi::FLAG_READ | abi::FLAG_WRITE);
        if rw == 0 {
            rw = abi::FLAG_WRITE;
        }
        t.rw[t.nrw] = RwFrame {
            flags: rw,
            release: flags & abi::WATCH_RELEASE_SIDE != 0,
            at_return: flags & abi::WATCH_AT_RETURN != 0,
            site: ret,
            mark: t.nsites,
            ..RwFrame::NONE
        };
        t.nrw += 1;
    }

    /// The spinlock acquisition just written was inside a reader-writer function.
    pub fn rw_inner_acquired(&mut self, addr: u64, now: u64) {
        let Some(f) = self.h.thread.rw_inner() else {
            return;
        };
        if f.addr == 0 {
            f.addr = addr;
            f.start_ns = now;
        }
        if f.addr != addr {
            return;
        }
        f.inner = f.inner.saturating_add(1);
        // A second inner acquisition on the acquire side without an `RwWait` before it: the
        // function waited in a way lockscope did not find statically. Say so now.
        if !f.release && f.inner == 2 && f.waits == 0 {
            f.waits = 1;
            let f = *f;
            self.rw_contended(&f, f.start_ns);
        }
    }

    /// A release of the spinlock `addr` just written: inside a reader-writer function, the
    /// read or write hold begins (acquire side) or ends (release side) here.
    pub fn rw_inner_released(&mut self, addr: u64, now: u64) {
        let Some(f) = self.h.thread.rw_inner() else {
            return;
        };
        if f.at_return || f.addr != addr {
            return;
        }
        if !f.release && f.waiting {
            // Released to wait for the rw lock: the function goes on.
            f.waiting = false;
            return;
        }
        let f = *f;
        self.h.thread.nrw -= 1;
        self.rw_hold(&f, now);
    }

    /// The return of a reader-writer function whose hold begins or ends there.
    pub fn rw_return(&mut self) {
        let t = &mut self.h.thread;
        let Some(f) = t.nrw.checked_sub(1).map(|k| t.rw[k]) else {
            return;
        };
        if !f.at_return {
            return;
        }
        t.nrw -= 1;
        if f.addr == 0 {
            // No inner spinlock was taken: the rw lock is unknown.
            return;
        }
        let now = self.now();
        self.rw_hold(&f, now);
    }

    /// A call of release that goes back to waiting, in a reader-writer acquire function.
    pub fn rw_wait(&mut self) {
        let Some(f) = self.h.thread.rw_inner() else {
            return;
        };
        if f.release || f.addr == 0 {
            return;
        }
        f.waiting = true;
        f.waits = f.waits.saturating_add(1);
        let f = *f;
        if f.waits == 1 {
            let now = self.now();
            self.rw_contended(&f, now);
        }
        self.s
            .hart_u64(self.hart, offset_of!(HartState, spin_count))
            .store(f.waits as u64, Ordering::Relaxed);
    }

    /// The read or write hold of frame `f` begins or ends at `now`.
    fn rw_hold(&mut self, f: &RwFrame, now: u64) {
        if f.release {
            self.released(f.key(), f.site, f.flags, now);
            return;
        }
        let wait = if f.waits > 0 {
            now.saturating_sub(f.start_ns)
        } else {
            0
        };
        let flags = if f.site == 0 {
            f.flags | abi::FLAG_NO_SITE
        } else {
            f.flags
        };
        self.push_held(f.key(), f.site, now, f.waits > 0);
        self.emit(event(
            EventKind::Acquired,
            now,
            f.addr,
            f.site,
            wait,
            f.waits,
            flags,
            abi::NO_HART,
        ));
    }

    /// The reader-writer acquisition of `f` waits, since `since`: publish the spin and write
    /// `Contended` with the harts holding the rw lock (every reader, or the writer).
    fn rw_contended(&mut self, f: &RwFrame, since: u64) {
        let (mask, owner) = self.s.rw_owners(f.addr);
        self.publish_spin(f.key(), since, f.site);
        self.emit(event(
            EventKind::Contended,
            since,
            f.addr,
            f.site,
            mask,
            1,
            f.flags,
            owner,
        ));
    }
}
