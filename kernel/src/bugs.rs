//! The `bug=` scenarios: classic locks-lab mistakes, reproduced on demand.
//!
//! Only `panic-test` exists so far; the buffer-cache scenarios arrive with the buffer cache.
//! A scenario runs from [`before_workload`] on the harts it needs and returns `true` if it took
//! over the hart (the hart then does not run the workload).

use crate::bootargs::Config;
use crate::hart;
use crate::spinlock::SpinLock;
use core::sync::atomic::Ordering;
use lockscope_abi::Bug;

/// Held by hart 0 when `panic-test` panics; hart 1 spins on it.
pub static PANIC_TEST_LOCK: SpinLock<()> = SpinLock::new("panictest", "bug", ());

pub fn before_workload(cfg: &Config) -> bool {
    match cfg.bug {
        Bug::PanicTest => panic_test(cfg),
        // Not implemented yet: the workload runs as if no bug was asked for.
        _ => false,
    }
}

/// Hart 0 takes `panictest`, waits until hart 1 spins on it, then panics two calls deep:
/// the record shows a backtrace, a held lock, and a hart stopped while spinning.
fn panic_test(cfg: &Config) -> bool {
    match hart::id() {
        0 => {
            let _g = PANIC_TEST_LOCK.lock();
            if cfg.harts > 1 {
                let id = PANIC_TEST_LOCK.raw().id();
                let hs = crate::abi::hart_state(1);
                let t0 = hart::now();
                let limit = crate::trap::timebase_hz();
                // SAFETY: reads a field of hart 1's ABI state.
                let spin = unsafe { crate::abi::a32(&raw mut (*hs).spin_lock) };
                while spin.load(Ordering::Acquire) != id && hart::now() - t0 < limit {
                    core::hint::spin_loop();
                }
            }
            panic_test_outer();
        }
        1 => {
            let _g = PANIC_TEST_LOCK.lock();
            // Reached only if hart 1 won the race for the lock; hart 0 panics anyway.
            true
        }
        _ => false,
    }
}

#[inline(never)]
fn panic_test_outer() -> ! {
    panic_test_inner(1)
}

#[inline(never)]
fn panic_test_inner(depth: u32) -> ! {
    panic!("panic-test (depth {depth})");
}
