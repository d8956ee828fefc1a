//! Instrumented spinlocks with xv6's semantics.
//!
//! Every lock has a name and a class and an entry in the ABI lock table. Interrupts stay off
//! while a hart holds any lock (push_off/pop_off). The holder updates the lock's counters
//! between acquisition and release, so plain read-modify-writes are exact. Events go to the
//! hart's ring unless `trace=off`.

use crate::abi::{self, a32, a64};
use crate::hart;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use lockscope_abi::{name_field, EventKind, HeldLock, MAX_HELD, MAX_LOCKS, NONE};

/// The lock word and identity, usable with explicit `acquire`/`release`.
pub struct RawSpinLock {
    locked: AtomicBool,
    /// Index into the ABI lock table, or [`NONE`] until registered.
    id: AtomicU32,
    name: &'static str,
    class: &'static str,
}

/// Serializes registration (rare: once per lock). A bare flag, since it cannot be a `RawSpinLock`.
static REGISTRY: AtomicBool = AtomicBool::new(false);

/// The caller's return address, read from the frame record of the function this is inlined
/// into. Needs frame pointers (`-C force-frame-pointers=yes`): `ra` is saved at `fp - 8`.
#[inline(always)]
pub fn caller_pc() -> u64 {
    let fp: usize;
    // SAFETY: reads s0, which is the frame pointer of the enclosing (non-inlined) function.
    unsafe { core::arch::asm!("mv {}, s0", out(reg) fp) };
    // SAFETY: with frame pointers forced, every function that makes calls saves ra at fp-8,
    // inside its own stack frame.
    unsafe { *((fp - 8) as *const u64) }
}

impl RawSpinLock {
    pub const fn new(name: &'static str, class: &'static str) -> Self {
        Self {
            locked: AtomicBool::new(false),
            id: AtomicU32::new(NONE),
            name,
            class,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// This lock's id in the ABI lock table, registering it on first use.
    pub fn id(&self) -> u32 {
        let id = self.id.load(Ordering::Acquire);
        if id != NONE {
            return id;
        }
        self.register()
    }

    #[cold]
    fn register(&self) -> u32 {
        while REGISTRY
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let mut id = self.id.load(Ordering::Acquire);
        if id == NONE {
            let root = abi::root();
            // SAFETY: `nlocks` is a field of the root static; only writers holding REGISTRY
            // change it.
            let nlocks = unsafe { a32(&raw mut (*root).nlocks) };
            let n = nlocks.load(Ordering::Relaxed);
            if n as usize >= MAX_LOCKS {
                REGISTRY.store(false, Ordering::Release);
                panic!(
                    "too many locks: {} has no room in the lock table",
                    self.name
                );
            }
            let info = abi::lock_info(n);
            // SAFETY: entry `n` is beyond `nlocks`, so no reader looks at it and no other
            // writer exists while we hold REGISTRY.
            unsafe {
                (*info).name = name_field(self.name);
                (*info).class = name_field(self.class);
                (*info).addr = &self.locked as *const AtomicBool as u64;
                (*info).holder = NONE;
            }
            // Readers see the entry complete once they see `nlocks` cover it.
            nlocks.store(n + 1, Ordering::Release);
            self.id.store(n, Ordering::Release);
            id = n;
        }
        REGISTRY.store(false, Ordering::Release);
        id
    }

    /// Does this hart hold the lock? Interrupts must be off.
    pub fn holding(&self) -> bool {
        let info = abi::lock_info(self.id());
        // SAFETY: field of a lock-table entry; only the holder sets it to its own id.
        let holder = unsafe { a32(&raw mut (*info).holder) }.load(Ordering::Relaxed);
        self.locked.load(Ordering::Relaxed) && holder == hart::id() as u32
    }

    /// Acquires the lock; the caller's pc is recorded.
    #[inline(never)]
    pub fn acquire(&self) {
        let pc = caller_pc();
        self.acquire_at(pc);
    }

    /// Releases the lock; the caller's pc is recorded.
    #[inline(never)]
    pub fn release(&self) {
        let pc = caller_pc();
        self.release_at(pc);
    }

    /// Acquires the lock on behalf of code at `pc`.
    pub fn acquire_at(&self, pc: u64) {
        hart::push_off();
        let me = hart::id();
        let id = self.id();
        if self.holding() {
            panic!("acquire {}", self.name);
        }
        let hs = abi::hart_state(me);
        let mut spins: u64 = 0;
        let mut spin_start = 0;
        // The lab's statslock: every failed test-and-set counts.
        if self.locked.swap(true, Ordering::Acquire) {
            spin_start = hart::now();
            // SAFETY: fields of this hart's own state; only this hart writes them.
            unsafe {
                a64(&raw mut (*hs).spin_pc).store(pc, Ordering::Relaxed);
                a64(&raw mut (*hs).spin_since).store(spin_start, Ordering::Relaxed);
                a32(&raw mut (*hs).spin_lock).store(id, Ordering::Release);
            }
            abi::record(me, EventKind::Spin, id, pc, spin_start);
            spins = 1;
            while self.locked.swap(true, Ordering::Acquire) {
                spins += 1;
                // A panicking hart stops the others; keep the spin state for the debugger.
                crate::panic::check_halt();
                core::hint::spin_loop();
            }
            // SAFETY: as above.
            unsafe { a32(&raw mut (*hs).spin_lock).store(NONE, Ordering::Relaxed) };
        }
        let now = hart::now();
        let info = abi::lock_info(id);
        // SAFETY: we hold the lock, so we are the only writer of its counters; fields of a
        // static, accessed atomically so a host reader sees whole values.
        unsafe {
            let add = |p: *mut u64, v: u64| {
                let a = a64(p);
                a.store(a.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
            };
            let max = |p: *mut u64, v: u64| {
                let a = a64(p);
                if v > a.load(Ordering::Relaxed) {
                    a.store(v, Ordering::Relaxed);
                }
            };
            add(&raw mut (*info).acquires, 1);
            if spins > 0 {
                let wait = now.wrapping_sub(spin_start);
                add(&raw mut (*info).contended, 1);
                add(&raw mut (*info).spins, spins);
                add(&raw mut (*info).wait_total, wait);
                max(&raw mut (*info).wait_max, wait);
            }
            a64(&raw mut (*info).acquired_at).store(now, Ordering::Relaxed);
            a32(&raw mut (*info).holder).store(me as u32, Ordering::Relaxed);
            push_held(me, id, pc, now);
        }
        let kind = if spins > 0 {
            EventKind::AcquiredContended
        } else {
            EventKind::Acquired
        };
        abi::record(me, kind, id, pc, now);
    }

    /// Releases the lock on behalf of code at `pc`.
    pub fn release_at(&self, pc: u64) {
        if !self.holding() {
            panic!("release {}", self.name);
        }
        let me = hart::id();
        let id = self.id();
        let now = hart::now();
        let info = abi::lock_info(id);
        // SAFETY: we still hold the lock: sole writer of its counters (see acquire_at).
        unsafe {
            let held = now.wrapping_sub(a64(&raw mut (*info).acquired_at).load(Ordering::Relaxed));
            let total = a64(&raw mut (*info).hold_total);
            total.store(
                total.load(Ordering::Relaxed).wrapping_add(held),
                Ordering::Relaxed,
            );
            let max = a64(&raw mut (*info).hold_max);
            if held > max.load(Ordering::Relaxed) {
                max.store(held, Ordering::Relaxed);
            }
            a32(&raw mut (*info).holder).store(NONE, Ordering::Relaxed);
            pop_held(me, id);
        }
        abi::record(me, EventKind::Released, id, pc, now);
        self.locked.store(false, Ordering::Release);
        hart::pop_off();
    }
}

/// xv6's sleeplock for a kernel with one thread per hart: a lock held for long stretches (a
/// buffer from `bread` to `brelse`, across disk I/O) with interrupts on, so the holder can take
/// the disk's completion interrupt. Waiting spins (there is nothing else to run), with
/// interrupts off like a spinlock's spin, so the ABI's held and spin state stay exact. It is a
/// [`RawSpinLock`] underneath and is recorded like one.
pub struct SleepLock {
    raw: RawSpinLock,
}

impl SleepLock {
    pub const fn new(name: &'static str, class: &'static str) -> Self {
        Self {
            raw: RawSpinLock::new(name, class),
        }
    }

    pub fn raw(&self) -> &RawSpinLock {
        &self.raw
    }

    /// Acquires the lock and turns interrupts back on (as they were); the caller's pc is recorded.
    #[inline(never)]
    pub fn acquire(&self) {
        let pc = caller_pc();
        self.raw.acquire_at(pc);
        // acquire_at left a push_off for the hold; a sleeplock holder keeps interrupts.
        hart::pop_off();
    }

    /// Releases the lock; the caller's pc is recorded.
    #[inline(never)]
    pub fn release(&self) {
        let pc = caller_pc();
        // release_at ends with the pop_off matching a spinlock's hold.
        hart::push_off();
        self.raw.release_at(pc);
    }

    /// xv6's holdingsleep.
    pub fn holding(&self) -> bool {
        hart::push_off();
        let h = self.raw.holding();
        hart::pop_off();
        h
    }
}

/// Pushes onto hart `me`'s held stack.
///
/// # Safety
/// `me` is the calling hart, with interrupts off.
unsafe fn push_held(me: usize, lock: u32, pc: u64, since: u64) {
    let hs = abi::hart_state(me);
    // SAFETY: this hart's own state (caller's contract).
    unsafe {
        let depth = a32(&raw mut (*hs).depth);
        let d = depth.load(Ordering::Relaxed);
        if (d as usize) < MAX_HELD {
            let e = &raw mut (*hs).held[d as usize];
            a64(&raw mut (*e).pc).store(pc, Ordering::Relaxed);
            a64(&raw mut (*e).since).store(since, Ordering::Relaxed);
            a32(&raw mut (*e).lock).store(lock, Ordering::Relaxed);
        }
        depth.store(d + 1, Ordering::Release);
    }
}

/// Removes `lock` from hart `me`'s held stack (usually the innermost entry; locks may be
/// released out of order).
///
/// # Safety
/// `me` is the calling hart, with interrupts off.
unsafe fn pop_held(me: usize, lock: u32) {
    let hs = abi::hart_state(me);
    // SAFETY: this hart's own state (caller's contract).
    unsafe {
        let depth = a32(&raw mut (*hs).depth);
        let d = depth.load(Ordering::Relaxed) as usize;
        let listed = d.min(MAX_HELD);
        let held = &raw mut (*hs).held;
        if let Some(i) = (0..listed).rev().find(|&i| (*held)[i].lock == lock) {
            for j in i..listed - 1 {
                let next: HeldLock = (*held)[j + 1];
                let e = &raw mut (*held)[j];
                a64(&raw mut (*e).pc).store(next.pc, Ordering::Relaxed);
                a64(&raw mut (*e).since).store(next.since, Ordering::Relaxed);
                a32(&raw mut (*e).lock).store(next.lock, Ordering::Relaxed);
            }
            // The stack overflowed earlier: the unlisted locks stay unlisted.
            a32(&raw mut (*held)[listed - 1].lock).store(NONE, Ordering::Relaxed);
        }
        depth.store(d.saturating_sub(1) as u32, Ordering::Release);
    }
}

/// A lock protecting a `T`; `lock()` returns a guard that releases on drop.
pub struct SpinLock<T> {
    raw: RawSpinLock,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serializes all access to `data`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(name: &'static str, class: &'static str, data: T) -> Self {
        Self {
            raw: RawSpinLock::new(name, class),
            data: UnsafeCell::new(data),
        }
    }

    pub fn raw(&self) -> &RawSpinLock {
        &self.raw
    }

    /// Acquires the lock; the caller's pc is recorded.
    #[inline(never)]
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let pc = caller_pc();
        self.raw.acquire_at(pc);
        SpinLockGuard { lock: self }
    }

    /// The data, for code that holds the lock through the raw API.
    ///
    /// # Safety
    /// The calling hart must hold the lock, and no guard may exist.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut_unchecked(&self) -> &mut T {
        // SAFETY: the caller holds the lock (contract), so access is exclusive.
        unsafe { &mut *self.data.get() }
    }
}

pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, and `&mut self` makes this unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    #[inline(never)]
    fn drop(&mut self) {
        let pc = caller_pc();
        self.lock.raw.release_at(pc);
    }
}

/// Registers the kernel's static locks in a fixed order, so ids are the same on every boot.
pub fn register_static_locks() {
    crate::console::CONS.raw().id();
    crate::trap::TICKSLOCK.raw().id();
}
