//! bcachetest (the lab's bcachetest) and the mixed workload.
//!
//! test0: every hart reads its own two blocks over and over; they hash to the hart's own bucket,
//! so a correct hashed cache never makes two harts meet on a bucket lock. `tot` is the growth
//! of the `bcache*` locks' failed test-and-sets over the measured phase.
//!
//! test1: every hart alternates a hot block with a stream of private cold blocks (writing every
//! fourth and reading it back), then all harts read a shared range at once, then every written
//! block is read back from disk. Every read is checked against the block's stamp. Blocks used:
//!
//! | what | blocks (13 buckets: bucket = block % 13) |
//! | --- | --- |
//! | test0, hart h | rows 1..3, column h |
//! | hot, hart h | row 4, column h |
//! | cold, hart h | rows 8..136, column h (128 blocks) |
//! | shared | rows 138..170, columns 8..12 (160 blocks) |
//!
//! where row r, column c is block 13 r + c: everything of hart h is in bucket h.
//! See docs/kernel.md for the thresholds and docs/bcache.md for why the layout is so.

use crate::abi;
use crate::barrier::wait as barrier;
use crate::bio::{self, BufRef, NBUCKET};
use crate::bootargs;
use crate::hart;
use crate::kalloc;
use crate::stats;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use lockscope_abi::disk::{self, NBLOCKS};
use lockscope_abi::{Outcome, Phase, MAX_HARTS};

/// test0 fails when `tot` is above this, as in the lab.
pub const TOT_MAX: u64 = 500;
/// xv6's ROOTDEV.
const DEV: u32 = 1;
const ROW: u32 = NBUCKET as u32;
const T0_ROW: u32 = 1;
const T0_BLOCKS: u32 = 2;
const HOT_ROW: u32 = 4;
const COLD_ROW: u32 = 8;
const COLD: usize = 128;
const SHARED_ROW: u32 = COLD_ROW + COLD as u32 + 2;
const SHARED_ROWS: u32 = 32;
const SHARED_COL: u32 = 8;
const SHARED_COLS: u32 = 5;
const SHARED: u64 = (SHARED_ROWS * SHARED_COLS) as u64;
/// Every how many test1 operations a hart writes its cold block.
const WRITE_EVERY: u64 = 4;
/// test1 operations per hart (each part) when `ops=` is not given.
const T1_OPS: u64 = 256;
/// Warm-up rounds of test0 before measuring anyway.
const MAX_WARMUP: u32 = 10;
/// Failed checks each hart prints before only counting them.
const MAX_REPORTS: u64 = 5;
/// An `EXPECT` entry for a block not read yet in this boot (a previous boot may have written
/// it, so its generation is learned from the first read).
const UNKNOWN: u64 = u64::MAX;

const _: () = assert!(((SHARED_ROW + SHARED_ROWS) * ROW) <= NBLOCKS);
const _: () = assert!(SHARED_COL as usize + SHARED_COLS as usize <= NBUCKET);

/// The generation each hart's cold blocks should have (row h is hart h's alone).
static EXPECT: [[AtomicU64; COLD]; MAX_HARTS] =
    [const { [const { AtomicU64::new(UNKNOWN) }; COLD] }; MAX_HARTS];
static READS: [AtomicU64; MAX_HARTS] = [const { AtomicU64::new(0) }; MAX_HARTS];
static WRITES: [AtomicU64; MAX_HARTS] = [const { AtomicU64::new(0) }; MAX_HARTS];
static ERRORS: [AtomicU64; MAX_HARTS] = [const { AtomicU64::new(0) }; MAX_HARTS];
/// Hart 0's bookkeeping between barriers.
static MARK: AtomicU64 = AtomicU64::new(0);
static SETTLED: AtomicBool = AtomicBool::new(false);
static TOT_BEFORE: AtomicU64 = AtomicU64::new(0);
static PART_A: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static T1_START: AtomicU64 = AtomicU64::new(0);
static FREE_BEFORE: AtomicU64 = AtomicU64::new(0);

fn block(row: u32, col: u32) -> u32 {
    row * ROW + col
}

/// The bucket of hart `h`'s blocks, and the bucket its spare buffer comes from.
fn own_bucket(h: usize) -> usize {
    h
}

fn spare_bucket(h: usize) -> usize {
    SHARED_COL as usize + h % SHARED_COLS as usize
}

/// Row h belongs to hart h alone.
fn expect(h: usize, j: usize) -> &'static AtomicU64 {
    &EXPECT[h][j]
}

/// Checks a buffer against its stamp and, if given, the generation it should have. Counts and
/// prints failures. Returns the generation found if the block is intact.
fn check(h: usize, b: &BufRef, want: Option<u64>) -> Option<u64> {
    READS[h].fetch_add(1, Ordering::Relaxed);
    let n = b.blockno();
    let bad = |what: core::fmt::Arguments| {
        if ERRORS[h].fetch_add(1, Ordering::Relaxed) < MAX_REPORTS {
            println!("bcachetest: hart {h}: block {n} (buf{}): {what}", b.index());
        }
        None
    };
    match disk::verify(b.data(), n) {
        Ok(g) if want.is_none_or(|w| w == g) => Some(g),
        Ok(g) => bad(format_args!(
            "holds generation {g:#x}, expected {:#x}: a write was lost or a stale copy read",
            want.unwrap_or(0)
        )),
        Err(e) => bad(format_args!("{e}")),
    }
}

/// Reads a block and checks it.
fn read_checked(h: usize, blockno: u32, want: Option<u64>) {
    let b = bio::bread(DEV, blockno);
    check(h, &b, want);
    bio::brelse(b);
    abi::add_ops(h, 1);
}

/// Hart 0, before anything else: the disk holds a lockscope image.
pub fn check_disk() {
    if crate::virtio_disk::nblocks() < NBLOCKS {
        println!(
            "bcachetest: the disk has {} blocks of {} bytes, the image has {NBLOCKS}: attach target/kernel/disk.img (made by `cargo xtask build`)",
            crate::virtio_disk::nblocks(),
            disk::BSIZE
        );
        crate::exit::fail(lockscope_abi::exit::BOOTARGS);
    }
    let b = bio::bread(DEV, 0);
    let r = disk::verify(b.data(), 0);
    bio::brelse(b);
    if let Err(e) = r {
        println!("bcachetest: disk block 0: {e}");
        crate::exit::fail(lockscope_abi::exit::BOOTARGS);
    }
}

/// One test1 operation of hart `h`: the hot block, then cold block `i % COLD`, written and
/// read back every [`WRITE_EVERY`]th time.
fn hot_cold_op(h: usize, i: u64) {
    let col = own_bucket(h) as u32;
    read_checked(h, block(HOT_ROW, col), Some(0));
    let j = (i % COLD as u64) as usize;
    let n = block(COLD_ROW + j as u32, col);
    let mut b = bio::bread(DEV, n);
    let want = expect(h, j).load(Ordering::Relaxed);
    let got = check(h, &b, (want != UNKNOWN).then_some(want));
    if want == UNKNOWN {
        if let Some(g) = got {
            expect(h, j).store(g, Ordering::Relaxed);
        }
    }
    abi::add_ops(h, 1);
    if i % WRITE_EVERY != WRITE_EVERY - 1 {
        bio::brelse(b);
        return;
    }
    let seq = WRITES[h].fetch_add(1, Ordering::Relaxed) + 1;
    let generation = ((h as u64 + 1) << 56) | seq;
    disk::stamp(b.data_mut(), n, generation);
    bio::bwrite(&b);
    expect(h, j).store(generation, Ordering::Relaxed);
    // Pinned, the read-back must find this very buffer.
    let pin = bio::bpin(&b);
    bio::brelse(b);
    read_checked(h, n, Some(generation));
    bio::bunpin(pin);
    abi::add_ops(h, 1);
}

/// Reads back every cold block hart `h` wrote (most from disk by now).
fn read_back_written(h: usize) {
    for j in 0..COLD {
        let want = expect(h, j).load(Ordering::Relaxed);
        if want != UNKNOWN && want != 0 {
            read_checked(
                h,
                block(COLD_ROW + j as u32, own_bucket(h) as u32),
                Some(want),
            );
        }
    }
}

fn hit_rate(hits: u64, misses: u64) -> u64 {
    hits * 100 / (hits + misses).max(1)
}

pub fn run() {
    let cfg = bootargs::config();
    let me = hart::id();
    let n = cfg.harts;
    if me == 0 {
        check_disk();
        abi::set_phase(Phase::Test0);
        println!("start test0: {n} harts, {T0_BLOCKS} blocks each, read over and over");
    }
    barrier(n);

    // test0. A spare buffer for each hart's bucket, from buckets test0 does not use.
    bio::give(spare_bucket(me), own_bucket(me));
    let mine = |j: u32| block(T0_ROW + j, own_bucket(me) as u32);
    // Warm-up: the first reads miss. Measure once a whole round went by without a miss.
    let mut warmup = 0;
    loop {
        barrier(n);
        if me == 0 {
            MARK.store(bio::lookups().1, Ordering::Relaxed);
        }
        barrier(n);
        for j in 0..T0_BLOCKS {
            read_checked(me, mine(j), Some(0));
        }
        warmup += 1;
        barrier(n);
        if me == 0 {
            let quiet = bio::lookups().1 == MARK.load(Ordering::Relaxed);
            SETTLED.store(quiet || warmup >= MAX_WARMUP, Ordering::Relaxed);
        }
        barrier(n);
        if SETTLED.load(Ordering::Relaxed) {
            break;
        }
    }
    if me == 0 {
        TOT_BEFORE.store(stats::spins(bio::locks()), Ordering::Relaxed);
        let (h, m) = bio::lookups();
        PART_A[0].store(h, Ordering::Relaxed);
        PART_A[1].store(m, Ordering::Relaxed);
        println!("test0: cache settled after {warmup} warm-up rounds");
    }
    barrier(n);
    let tb = crate::trap::timebase_hz();
    let deadline = hart::now() + cfg.secs() * tb;
    let mut reads = 0u64;
    loop {
        match cfg.ops {
            Some(target) if reads >= target => break,
            None if hart::now() >= deadline => break,
            _ => {}
        }
        for j in 0..T0_BLOCKS {
            read_checked(me, mine(j), Some(0));
        }
        reads += T0_BLOCKS as u64;
        abi::heartbeat(me);
        crate::panic::check_halt();
    }
    barrier(n);
    if me == 0 {
        println!("test0 results:");
        stats::print_section(kalloc::locks().chain(bio::locks()));
        stats::print_top5();
        let tot = stats::spins(bio::locks()) - TOT_BEFORE.load(Ordering::Relaxed);
        println!("tot= {tot}");
        let (h, m) = bio::lookups();
        let (h, m) = (
            h - PART_A[0].load(Ordering::Relaxed),
            m - PART_A[1].load(Ordering::Relaxed),
        );
        println!(
            "test0: {} hits, {} misses: hit rate {}%",
            h,
            m,
            hit_rate(h, m)
        );
        let test0_ok = tot <= TOT_MAX;
        if test0_ok {
            println!("test0: OK");
        } else {
            println!("test0: FAIL: tot= {tot} is over the threshold {TOT_MAX}");
        }
        MARK.store(test0_ok as u64, Ordering::Relaxed);
    }

    // test1, part A: hot and cold, in each hart's own bucket.
    let ops = cfg.ops.unwrap_or(T1_OPS);
    if me == 0 {
        abi::set_phase(Phase::Test1);
        println!(
            "start test1: {n} harts, {ops} hot/cold operations each, then {ops} shared reads each"
        );
        let (h, m) = bio::lookups();
        PART_A[0].store(h, Ordering::Relaxed);
        PART_A[1].store(m, Ordering::Relaxed);
        T1_START.store(hart::now(), Ordering::Relaxed);
    }
    // test1's report counts its own reads.
    READS[me].store(0, Ordering::Relaxed);
    barrier(n);
    for i in 0..ops {
        hot_cold_op(me, i);
        abi::heartbeat(me);
        crate::panic::check_halt();
    }
    barrier(n);
    if me == 0 {
        let (h, m) = bio::lookups();
        PART_A[2].store(h, Ordering::Relaxed);
        PART_A[3].store(m, Ordering::Relaxed);
    }
    // Part B: the shared range, with the spare buffers back where they came from.
    bio::give(own_bucket(me), spare_bucket(me));
    barrier(n);
    for i in 0..ops {
        // Even steps: every hart reads the same block (concurrent misses of one block); odd
        // steps: the harts read different blocks of one bucket (its buffers run out).
        let idx = if i % 2 == 0 {
            (i * 37) % SHARED
        } else {
            (i * 37 + me as u64 * SHARED_COLS as u64) % SHARED
        } as u32;
        let b = block(
            SHARED_ROW + idx / SHARED_COLS,
            SHARED_COL + idx % SHARED_COLS,
        );
        read_checked(me, b, Some(0));
        abi::heartbeat(me);
        crate::panic::check_halt();
    }
    barrier(n);
    read_back_written(me);
    barrier(n);

    if me == 0 {
        let ms = (hart::now() - T1_START.load(Ordering::Relaxed)) * 1000 / tb;
        let (ah, am) = (
            PART_A[2].load(Ordering::Relaxed) - PART_A[0].load(Ordering::Relaxed),
            PART_A[3].load(Ordering::Relaxed) - PART_A[1].load(Ordering::Relaxed),
        );
        let mut errors = 0;
        for h in 0..n as usize {
            let e = ERRORS[h].load(Ordering::Relaxed);
            errors += e;
            println!(
                "test1: hart {h}: {} reads, {} writes, {}",
                READS[h].load(Ordering::Relaxed),
                WRITES[h].load(Ordering::Relaxed),
                if e == 0 {
                    "all verified"
                } else {
                    "FAILED CHECKS"
                }
            );
        }
        println!(
            "test1: hot/cold part: {ah} hits, {am} misses: hit rate {}%",
            hit_rate(ah, am)
        );
        let (h, m) = bio::lookups();
        println!(
            "test1: took {ms} ms; bcache totals: {h} hits, {m} misses, {} steals: hit rate {}%",
            bio::steals(),
            hit_rate(h, m)
        );
        let test1_ok = errors == 0;
        if test1_ok {
            println!("test1 OK");
        } else {
            println!("test1 FAIL: {errors} reads did not verify");
        }
        let ok = test1_ok && MARK.load(Ordering::Relaxed) != 0;
        println!("bcachetest {}", if ok { "OK" } else { "FAIL" });
        finish(ok);
    }
}

/// `workload=mixed`: kalloctest rounds and test1's hot/cold operations interleaved on every
/// hart, for `secs=` seconds (or `ops=` of each).
pub fn mixed() {
    let cfg = bootargs::config();
    let me = hart::id();
    let n = cfg.harts;
    if me == 0 {
        check_disk();
        abi::set_phase(Phase::Mixed);
        println!(
            "start mixed: {n} harts, kalloctest rounds and buffer-cache operations interleaved"
        );
        FREE_BEFORE.store(kalloc::audit().0, Ordering::Relaxed);
    }
    barrier(n);
    let mut pages = [core::ptr::null_mut::<u8>(); crate::kalloctest::BATCH];
    let deadline = hart::now() + cfg.secs() * crate::trap::timebase_hz();
    let mut i = 0u64;
    loop {
        match cfg.ops {
            Some(target) if i >= target => break,
            None if hart::now() >= deadline => break,
            _ => {}
        }
        crate::kalloctest::round(me, &mut pages);
        hot_cold_op(me, i);
        i += 1;
    }
    barrier(n);
    read_back_written(me);
    barrier(n);
    if me == 0 {
        let (after, problem) = kalloc::audit();
        let before = FREE_BEFORE.load(Ordering::Relaxed);
        stats::print_section(kalloc::locks().chain(bio::locks()));
        stats::print_top5();
        let mut errors = 0;
        for h in 0..n as usize {
            errors += ERRORS[h].load(Ordering::Relaxed);
            println!(
                "mixed: hart {h}: {} block reads, {} writes",
                READS[h].load(Ordering::Relaxed),
                WRITES[h].load(Ordering::Relaxed)
            );
        }
        let (h, m) = bio::lookups();
        println!(
            "mixed: free pages before {before} after {after}; bcache {h} hits, {m} misses: hit rate {}%",
            hit_rate(h, m)
        );
        let ok = if let Some(p) = problem {
            println!("mixed FAIL: {p}");
            false
        } else if after != before {
            println!("mixed FAIL: free pages not conserved ({before} before, {after} after)");
            false
        } else if errors > 0 {
            println!("mixed FAIL: {errors} block reads did not verify");
            false
        } else {
            println!("mixed OK");
            true
        };
        finish(ok);
    }
}

fn finish(ok: bool) {
    abi::set_phase(Phase::Done);
    abi::set_outcome(if ok { Outcome::Pass } else { Outcome::Fail });
    if bootargs::config().exit {
        if ok {
            crate::exit::pass();
        }
        crate::exit::fail(lockscope_abi::exit::FAIL);
    }
}
