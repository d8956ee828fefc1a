//! Threads across context switches. The context switch (xv6's `swtch(&old, &new)`) stores the
//! outgoing thread's registers into its context and loads the incoming one's: the addresses of
//! those two accesses name the two threads (`p->context`, or a hart's scheduler in
//! `cpus[i].context`). At the store the hart's [`Thread`] state is parked under the outgoing
//! context; at the load the incoming thread's is taken out, on whichever hart it resumes. So
//! call sites pending across a sleep, reader-writer functions in progress and sleeplock
//! acquisitions follow their thread, and every event names the thread that made it.
//!
//! The table is shared by all vCPU threads. A slot's key is claimed once (compare-and-swap, at
//! a thread's first switch) and never changes; its state is written by the hart that switches
//! the thread out and read by the one that switches it in, which the guest itself orders (xv6
//! holds `p->lock` across the switch); a release/acquire pair on the slot's version makes that
//! ordering visible to Rust. Only context switches touch it: nothing on the lock paths.

use std::cell::UnsafeCell;
use std::mem::offset_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use lockscope_plugin_abi::{self as abi, HartState};

use crate::hart::{Ctx, Thread};

const SLOTS: usize = abi::MAX_THREADS as usize;

struct Slot {
    key: AtomicU64,
    version: AtomicU32,
    state: UnsafeCell<Thread>,
}

struct Table([Slot; SLOTS]);

// SAFETY: `key` and `version` are atomics; `state` is written only by the hart switching its
// thread out and read only by the hart switching it in, ordered by the guest's own lock and
// made visible through `version` (release store after writing, acquire load before reading).
unsafe impl Sync for Table {}

static TABLE: Table = Table(
    [const {
        Slot {
            key: AtomicU64::new(0),
            version: AtomicU32::new(0),
            state: UnsafeCell::new(Thread::EMPTY),
        }
    }; SLOTS],
);

/// Threads that found the table full (their state is not carried across switches).
static FULL: AtomicU64 = AtomicU64::new(0);

/// The slot of context `key`, claiming a free one for a new thread; `None` when full.
fn slot(key: u64) -> Option<usize> {
    // Contexts are 8-aligned structs a few hundred bytes apart: mix the bits before masking.
    let start = (key >> 3).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros());
    for i in 0..SLOTS {
        let j = (start as usize + i) % SLOTS;
        let s = &TABLE.0[j];
        match s.key.load(Ordering::Acquire) {
            k if k == key => return Some(j),
            0 => match s
                .key
                .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(j),
                Err(k) if k == key => return Some(j),
                Err(_) => continue,
            },
            _ => continue,
        }
    }
    FULL.fetch_add(1, Ordering::Relaxed);
    None
}

impl Ctx<'_> {
    /// The context switch stores the outgoing thread's context at `key`: park its state.
    pub fn switch_out(&mut self, key: u64) {
        if self.h.thread.sleep_pending {
            self.h.thread.slept = true;
        }
        self.carry_rw_holds();
        let state = std::mem::replace(&mut self.h.thread, Thread::EMPTY);
        if let Some(j) = slot(key) {
            self.s.set_thread_key(j as u32 + 1, key);
            let s = &TABLE.0[j];
            // SAFETY: see `Table`: only this hart touches the slot's state now.
            unsafe { *s.state.get() = state };
            s.version.fetch_add(1, Ordering::Release);
        }
        self.h.thread_index = 0;
    }

    /// The context switch loads the incoming thread's context from `key`: its state runs here
    /// from now on.
    pub fn switch_in(&mut self, key: u64) {
        let (index, state) = match slot(key) {
            Some(j) => {
                self.s.set_thread_key(j as u32 + 1, key);
                let s = &TABLE.0[j];
                s.version.load(Ordering::Acquire);
                // SAFETY: see `Table`: the hart that parked it is done with it.
                (j as u32 + 1, unsafe { *s.state.get() })
            }
            None => (0, Thread::EMPTY),
        };
        self.h.thread = state;
        self.h.thread_index = index;
        self.h.switches = self.h.switches.wrapping_add(1);
        self.restore_rw_holds();
        let s = self.s;
        s.hart_begin(self.hart);
        s.hart_u64(self.hart, offset_of!(HartState, thread)).store(
            index as u64 | (self.h.switches as u64) << 32,
            Ordering::Relaxed,
        );
        s.hart_end(self.hart);
    }
}
