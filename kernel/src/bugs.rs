//! The `bug=` scenarios: classic locks-lab mistakes, reproduced on demand.
//!
//! `panic-test` runs from [`before_workload`] on the harts it needs and returns `true` if it
//! took over the hart (the hart then does not run the workload). The others are small variants
//! of the real code paths, compiled in and off unless selected: the code asks [`active`].
//!
//! | bug | where | what the student sees |
//! | --- | --- | --- |
//! | `bucket-order` | `bio::buggy::bget_holding_own_bucket` | two harts deadlock on two bucket locks |
//! | `refcnt-leak` | `bio::hit` | `panic: bget: no buffers` |
//! | `double-acquire` | `bio::buggy::recycle_relocking` | `panic: acquire bcache.bucket<N>` |
//! | `null-next` | `bio::list::Held::link_front` | kerneltrap, scause 0xd (load page fault), small stval |
//! | `stale-ticks` | `bio::touch` | the hit rate collapses; the tests pass |
//! | `order-inversion` | `bio::buggy::give_holding_both` | nothing, but a lock-order checker objects |
//! | `kmem-steal-race` | `kalloc::steal_racy` | pages lost or handed out twice |

use crate::bootargs::Config;
use crate::hart;
use crate::spinlock::SpinLock;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use lockscope_abi::{Bug, Workload};

static BUG: AtomicU32 = AtomicU32::new(Bug::None as u32);

/// Hart 0, once, before other harts run.
pub fn init(cfg: &Config) {
    BUG.store(cfg.bug as u32, Ordering::Relaxed);
}

/// Is scenario `b` selected?
#[inline(always)]
pub fn active(b: Bug) -> bool {
    BUG.load(Ordering::Relaxed) == b as u32
}

/// Does `workload` run the code `bug` changes? (`bug=kmem-steal-race` needs stealing, that is
/// kalloctest, mixed or the demo; the buffer-cache bugs need the cache, and `order-inversion`
/// bcachetest, which moves spare buffers.)
pub fn exercised_by(bug: Bug, workload: Workload) -> bool {
    match bug {
        Bug::None | Bug::PanicTest => true,
        Bug::KmemStealRace => matches!(
            workload,
            Workload::Kalloctest | Workload::Mixed | Workload::Demo
        ),
        Bug::OrderInversion => workload == Workload::Bcachetest,
        b if b.in_bcache() => workload.needs_disk(),
        _ => true,
    }
}

/// Held by hart 0 when `panic-test` panics; hart 1 spins on it.
pub static PANIC_TEST_LOCK: SpinLock<()> = SpinLock::new("panictest", "bug", ());
/// Set once hart 0 holds `panictest`, so hart 1 never takes it first.
static PANIC_TEST_HELD: AtomicBool = AtomicBool::new(false);

pub fn before_workload(cfg: &Config) -> bool {
    match cfg.bug {
        Bug::PanicTest => panic_test(cfg),
        _ => false,
    }
}

/// Hart 0 takes `panictest`, waits until hart 1 spins on it, then panics two calls deep:
/// the record shows a backtrace, a held lock, and a hart stopped while spinning.
fn panic_test(cfg: &Config) -> bool {
    match hart::id() {
        0 => {
            let _g = PANIC_TEST_LOCK.lock();
            PANIC_TEST_HELD.store(true, Ordering::Release);
            if cfg.harts > 1 {
                let id = PANIC_TEST_LOCK.raw().id();
                let t0 = hart::now();
                // Generous: on a loaded host a vCPU can wait seconds for a host core.
                let limit = 10 * crate::trap::timebase_hz();
                let spin = crate::abi::hart(1).spin_lock();
                while spin.load(Ordering::Acquire) != id && hart::now() - t0 < limit {
                    core::hint::spin_loop();
                }
            }
            panic_test_outer();
        }
        1 => {
            while !PANIC_TEST_HELD.load(Ordering::Acquire) {
                crate::panic::check_halt();
                core::hint::spin_loop();
            }
            let _g = PANIC_TEST_LOCK.lock();
            // Not reached: hart 0 panics holding the lock, and this hart halts spinning.
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
