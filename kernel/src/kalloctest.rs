//! The kalloctest workload (lab part 1's test1): every hart grows and shrinks many pages in
//! parallel, then hart 0 prints lock statistics in the lab's format and checks the result.

use crate::abi;
use crate::barrier::wait as barrier;
use crate::bootargs;
use crate::hart;
use crate::kalloc;
use crate::stats;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use lockscope_abi::{Outcome, Phase, MAX_HARTS};

/// Pages each hart holds at once before freeing them all (one round).
pub const BATCH: usize = 32;

/// `tot` (failed test-and-sets on the kmem locks during the measured phase) above this fails
/// the test. The lab's test1 uses 10; see docs/kernel.md for the numbers behind this one.
pub const TOT_MAX: u64 = 10;

/// Warm-up rounds before measuring anyway (the allocator settles in a few).
const MAX_WARMUP: u32 = 100;

/// Hart 0's warm-up bookkeeping: steals before the current round; whether the round had none.
static STEALS_MARK: AtomicU64 = AtomicU64::new(0);
static SETTLED: AtomicU32 = AtomicU32::new(0);
/// Sum of the kmem locks' failed test-and-sets when the measured phase began.
static TOT_BEFORE: AtomicU64 = AtomicU64::new(0);
/// Free pages (walked) when kalloctest began.
static FREE_BEFORE: AtomicU64 = AtomicU64::new(0);
/// Per-hart operations and time (timebase ticks) in the measured phase.
static MEASURED_OPS: [AtomicU64; MAX_HARTS] = [const { AtomicU64::new(0) }; MAX_HARTS];
static ELAPSED: [AtomicU64; MAX_HARTS] = [const { AtomicU64::new(0) }; MAX_HARTS];

/// Steals done by all harts so far. Exact when no hart is inside the allocator.
fn total_steals() -> u64 {
    (0..MAX_HARTS)
        .map(|h| abi::kmem(h).steals().load(Ordering::Relaxed))
        .sum()
}

pub fn run() {
    let cfg = bootargs::config();
    let me = hart::id();
    let n = cfg.harts;
    if me == 0 {
        abi::set_phase(Phase::Kalloctest);
        println!("start kalloctest: {n} harts, {BATCH} pages per round");
    }
    let mut pages = [core::ptr::null_mut::<u8>(); BATCH];
    if me == 0 {
        // Before the warm-up, which is where the first steals happen.
        FREE_BEFORE.store(kalloc::audit().0, Ordering::Relaxed);
    }
    // Warm-up: kinit gave every page to hart 0, so the first allocations steal, and a thief may
    // take from a hart that stole just before (leaving it short, so it steals again). Those
    // steals are the design working; the measured phase starts once a whole round went by
    // without any. From then on every hart's list holds at least a round's worth of pages and
    // nobody steals again.
    let mut warmup = 0;
    barrier(n);
    loop {
        if me == 0 {
            STEALS_MARK.store(total_steals(), Ordering::Relaxed);
        }
        barrier(n);
        round(me, &mut pages);
        warmup += 1;
        barrier(n);
        if me == 0 {
            let quiet = total_steals() == STEALS_MARK.load(Ordering::Relaxed);
            SETTLED.store((quiet || warmup >= MAX_WARMUP) as u32, Ordering::Relaxed);
        }
        barrier(n);
        if SETTLED.load(Ordering::Relaxed) != 0 {
            break;
        }
    }
    if me == 0 {
        TOT_BEFORE.store(kmem_spins(), Ordering::Relaxed);
        println!("kalloctest: allocator settled after {warmup} warm-up rounds");
    }
    barrier(n);

    let tb = crate::trap::timebase_hz();
    let t0 = hart::now();
    let deadline = t0 + cfg.secs() * tb;
    let mut ops = 0u64;
    loop {
        match cfg.ops {
            Some(target) if ops >= target => break,
            None if hart::now() >= deadline => break,
            _ => {}
        }
        round(me, &mut pages);
        ops += BATCH as u64;
    }
    ELAPSED[me].store(hart::now() - t0, Ordering::Relaxed);
    MEASURED_OPS[me].store(ops, Ordering::Relaxed);
    barrier(n);

    if me == 0 {
        report(n as usize, FREE_BEFORE.load(Ordering::Relaxed));
    }
}

/// One round: allocate a batch of pages, touching each, then free them all.
pub fn round(me: usize, pages: &mut [*mut u8; BATCH]) {
    for p in pages.iter_mut() {
        let page = kalloc::alloc().expect("kalloctest: out of memory");
        // Touch it, as the lab's test does after sbrk.
        // SAFETY: a page we own.
        unsafe { (page.add(4) as *mut u32).write_volatile(1) };
        *p = page;
    }
    for p in pages.iter() {
        // SAFETY: allocated above and no longer used.
        unsafe { kalloc::free(*p) };
    }
    abi::add_ops(me, BATCH as u64);
    abi::heartbeat(me);
    crate::panic::check_halt();
}

/// Failed test-and-sets on the kmem locks so far.
fn kmem_spins() -> u64 {
    stats::spins(kalloc::locks())
}

fn report(n: usize, before: u64) {
    // First, so the kmem counters printed below are final: nothing takes a kmem lock after.
    let (after, problem) = kalloc::audit();
    let all = stats::print_section(kalloc::locks());
    // Like the lab's test1: the counters' growth over the measured phase.
    let tot = all - TOT_BEFORE.load(Ordering::Relaxed);
    stats::print_top5();
    println!("tot= {tot}");

    let tb = crate::trap::timebase_hz();
    let mut total_rate = 0;
    for (h, elapsed) in ELAPSED.iter().enumerate().take(n) {
        let ops = MEASURED_OPS[h].load(Ordering::Relaxed);
        let ticks = elapsed.load(Ordering::Relaxed).max(1);
        let rate = ops * tb / ticks;
        total_rate += rate;
        println!(
            "kalloctest: hart {h}: {ops} ops in {} ms: {rate} ops/s",
            ticks * 1000 / tb
        );
    }
    println!("kalloctest: total {total_rate} ops/s");

    println!("kalloctest: free pages before {before} after {after}");
    let cfg = bootargs::config();
    let ok = if let Some(p) = problem {
        println!("kalloctest FAIL: {p}");
        false
    } else if after != before {
        println!("kalloctest FAIL: free pages not conserved ({before} before, {after} after)");
        false
    } else if tot > TOT_MAX {
        println!("kalloctest FAIL: tot= {tot} is over the threshold {TOT_MAX}");
        false
    } else {
        println!("kalloctest OK");
        true
    };
    abi::set_phase(Phase::Done);
    abi::set_outcome(if ok { Outcome::Pass } else { Outcome::Fail });
    if cfg.exit {
        if ok {
            crate::exit::pass();
        }
        crate::exit::fail(lockscope_abi::exit::FAIL);
    }
}
