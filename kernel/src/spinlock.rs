//! Instrumented spinlocks with xv6's semantics.
//!
//! Every lock has a name and a class and an entry in the ABI lock table. Interrupts stay off
//! while a hart holds any lock (push_off/pop_off). The holder updates the lock's counters
//! between acquisition and release, so plain read-modify-writes are exact. Events go to the
//! hart's ring unless `trace=off`.

use crate::abi::{self, OwnedCounter};
use crate::arch;
use crate::hart;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use lockscope_abi::{name_field, EventKind, MAX_HELD, MAX_LOCKS, NAME_LEN, NONE};

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
            // Only writers holding REGISTRY change it.
            let nlocks = abi::root().nlocks();
            let n = nlocks.load(Ordering::Relaxed);
            if n as usize >= MAX_LOCKS {
                REGISTRY.store(false, Ordering::Release);
                panic!(
                    "too many locks: {} has no room in the lock table",
                    self.name
                );
            }
            // Entry `n` is beyond `nlocks`, so no reader looks at it yet, and no other writer
            // exists while we hold REGISTRY.
            let info = abi::lock(n);
            abi::store_bytes(info.name(), &name_field::<NAME_LEN>(self.name));
            abi::store_bytes(info.class(), &name_field::<NAME_LEN>(self.class));
            info.addr()
                .store(&self.locked as *const AtomicBool as u64, Ordering::Relaxed);
            info.holder().store(NONE, Ordering::Relaxed);
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
        // Only the holder sets it to its own id.
        let holder = abi::lock(self.id()).holder().load(Ordering::Relaxed);
        self.locked.load(Ordering::Relaxed) && holder == hart::id() as u32
    }

    /// Acquires the lock; the caller's pc is recorded.
    #[inline(never)]
    pub fn acquire(&self) {
        let pc = arch::caller_pc();
        self.acquire_at(pc);
    }

    /// Releases the lock; the caller's pc is recorded.
    #[inline(never)]
    pub fn release(&self) {
        let pc = arch::caller_pc();
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
        let hs = abi::hart(me);
        let mut spins: u64 = 0;
        let mut spin_start = 0;
        // The lab's statslock: every failed test-and-set counts.
        if self.locked.swap(true, Ordering::Acquire) {
            spin_start = hart::now();
            // This hart's own state: `spin_lock` last, so a reader that sees it sees the rest.
            hs.spin_pc().store(pc, Ordering::Relaxed);
            hs.spin_since().store(spin_start, Ordering::Relaxed);
            hs.spin_lock().store(id, Ordering::Release);
            abi::record(me, EventKind::Spin, id, pc, spin_start);
            spins = 1;
            while self.locked.swap(true, Ordering::Acquire) {
                spins += 1;
                // A panicking hart stops the others; keep the spin state for the debugger.
                crate::panic::check_halt();
                core::hint::spin_loop();
            }
            hs.spin_lock().store(NONE, Ordering::Relaxed);
        }
        let now = hart::now();
        // We hold the lock, so we are the only writer of its counters.
        let info = abi::lock(id);
        info.acquires().add(1);
        if spins > 0 {
            let wait = now.wrapping_sub(spin_start);
            info.contended().add(1);
            info.spins().add(spins);
            info.wait_total().add(wait);
            info.wait_max().raise_to(wait);
        }
        info.acquired_at().store(now, Ordering::Relaxed);
        info.holder().store(me as u32, Ordering::Relaxed);
        push_held(me, id, pc, now);
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
        // We still hold the lock: the only writer of its counters (see acquire_at).
        let info = abi::lock(id);
        let held = now.wrapping_sub(info.acquired_at().load(Ordering::Relaxed));
        info.hold_total().add(held);
        info.hold_max().raise_to(held);
        info.holder().store(NONE, Ordering::Relaxed);
        pop_held(me, id);
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
        let pc = arch::caller_pc();
        self.raw.acquire_at(pc);
        // acquire_at left a push_off for the hold; a sleeplock holder keeps interrupts.
        hart::pop_off();
    }

    /// Releases the lock; the caller's pc is recorded.
    #[inline(never)]
    pub fn release(&self) {
        let pc = arch::caller_pc();
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

/// Pushes onto hart `me`'s held stack. `me` is the calling hart, with interrupts off: the
/// stack's only writer.
fn push_held(me: usize, lock: u32, pc: u64, since: u64) {
    let hs = abi::hart(me);
    let d = hs.depth().load(Ordering::Relaxed);
    if let Some(e) = hs.held().get(d as usize) {
        e.pc().store(pc, Ordering::Relaxed);
        e.since().store(since, Ordering::Relaxed);
        e.lock().store(lock, Ordering::Relaxed);
    }
    // After the entry it covers.
    hs.depth().store(d + 1, Ordering::Release);
}

/// Removes `lock` from hart `me`'s held stack (usually the innermost entry; locks may be
/// released out of order). `me` is the calling hart, with interrupts off.
fn pop_held(me: usize, lock: u32) {
    let hs = abi::hart(me);
    let d = hs.depth().load(Ordering::Relaxed) as usize;
    let held = &hs.held()[..d.min(MAX_HELD)];
    if let Some(i) = held
        .iter()
        .rposition(|e| e.lock().load(Ordering::Relaxed) == lock)
    {
        for j in i..held.len() - 1 {
            let (e, next) = (&held[j], &held[j + 1]);
            e.pc()
                .store(next.pc().load(Ordering::Relaxed), Ordering::Relaxed);
            e.since()
                .store(next.since().load(Ordering::Relaxed), Ordering::Relaxed);
            e.lock()
                .store(next.lock().load(Ordering::Relaxed), Ordering::Relaxed);
        }
        // The stack overflowed earlier: the unlisted locks stay unlisted.
        held[held.len() - 1].lock().store(NONE, Ordering::Relaxed);
    }
    hs.depth()
        .store(d.saturating_sub(1) as u32, Ordering::Release);
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
        let pc = arch::caller_pc();
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
        let pc = arch::caller_pc();
        self.lock.raw.release_at(pc);
    }
}

/// Registers the kernel's static locks in a fixed order, so ids are the same on every boot.
pub fn register_static_locks() {
    crate::console::CONS.raw().id();
    crate::trap::TICKSLOCK.raw().id();
}
