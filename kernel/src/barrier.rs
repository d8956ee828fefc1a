//! A reusable barrier for the workloads' phases. Lock-free, so it adds nothing to the lock
//! statistics the workloads measure.

use core::sync::atomic::{AtomicU32, Ordering};

/// Harts arrived in the current generation, and the generation.
static ARRIVED: AtomicU32 = AtomicU32::new(0);
static GENERATION: AtomicU32 = AtomicU32::new(0);

/// Waits until all `n` harts have arrived. The last hart to arrive starts the next generation.
pub fn wait(n: u32) {
    let generation = GENERATION.load(Ordering::Acquire);
    if ARRIVED.fetch_add(1, Ordering::AcqRel) + 1 == n {
        ARRIVED.store(0, Ordering::Relaxed);
        GENERATION.store(generation.wrapping_add(1), Ordering::Release);
        return;
    }
    // Waiting for slower harts is not a stall: beat once per timer tick, as idle harts do.
    let me = crate::hart::id();
    let tick = crate::trap::timebase_hz() / 100;
    let mut next_beat = crate::hart::now() + tick;
    while GENERATION.load(Ordering::Acquire) == generation {
        crate::panic::check_halt();
        if crate::hart::now() >= next_beat {
            crate::abi::heartbeat(me);
            next_beat += tick;
        }
        core::hint::spin_loop();
    }
}
