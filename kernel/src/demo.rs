//! `workload=demo`: what `cargo xtask demo` shows. Both halves of the lab at work on every
//! hart until QEMU stops, in phases of `secs=` seconds (default [`PHASE_SECS`]) that repeat:
//!
//! | phase | every hart | what it shows |
//! | --- | --- | --- |
//! | files | file-system-shaped work on the hashed cache (its own program mostly, any file now and then, a transaction every 4th step: inode blocks, the bitmap, a log header, data blocks with an indirect block after the 12th); a round on its own page list | every bucket busy; the per-hart and bucket locks calm |
//! | starter | the same work through the lab's solution and its starter side by side: its program read through the hashed cache and through the one-lock `bcache` cache, a round on its own list and one on the single `kmem` list | `kmem` and `bcache` spin by the million next to calm `kmem<i>` and buckets |
//! | steal | hands the pages it allocates to one hart (a pipe's reader freeing its writers' pages), so the others' lists run dry and steal; transactions pin more buffers, so buckets run out and take buffers from each other | the Steals columns climb |
//! | crowd | lists the root directory, with every other hart: one inode block and one directory block | their bucket locks and buffer sleeplocks contended, harts spinning |
//!
//! Every read is verified (block number and checksum, and the generation of the blocks a hart
//! wrote). Hart 0 prints what each phase did when it ends. docs/kernel.md has the design.

use crate::abi;
use crate::barrier::wait as barrier;
use crate::bio::{self, BufRef, Pin};
use crate::bootargs;
use crate::hart;
use crate::kalloc;
use crate::kalloctest::{self, BATCH};
use crate::stats;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use lockscope_abi::disk::{self, NBLOCKS};
use lockscope_abi::{name_str, Outcome, Phase, MAX_HARTS, MAX_LOCKS};

/// Seconds per phase without `secs=`.
pub const PHASE_SECS: u64 = 5;
/// The phases, in the order they repeat.
const PHASES: [Phase; 4] = [
    Phase::DemoFiles,
    Phase::DemoStarter,
    Phase::DemoSteal,
    Phase::DemoCrowd,
];
/// xv6's ROOTDEV.
const DEV: u32 = 1;

// ---- the file system's shape: xv6's mkfs layout on the 4096-block image ----

/// The log's header block; each hart commits through its own, so commits do not queue on one
/// buffer (the crowd phase is the moment of contention).
const LOG_HEADER: u32 = 2;
/// 13 blocks of 16 inodes (after the log: header and 30 blocks).
const INODE_START: u32 = 33;
const IPB: u32 = 16;
const BITMAP: u32 = 46;
/// The root directory's one data block.
const ROOT_DIR: u32 = 47;
const ROOT_INUM: u32 = 1;
const DATA_START: u32 = 48;
/// Direct blocks per inode; the indirect block is allocated after them, as mkfs does.
const NDIRECT: u32 = 12;
/// Sizes in blocks of the files every hart reads (the "programs"). Most opens pick the hart's
/// own one of the first [`HOT`] (each hart runs its program), the others any. The first [`HOT`]
/// are small, so that all of them (and their inode blocks) fit in either cache's 30 buffers.
const SHARED: [u32; 20] = [
    3, 4, 2, 3, 2, 3, 2, 3, 17, 9, 24, 13, 30, 7, 11, 19, 8, 26, 6, 15,
];
const HOT: usize = 8;
/// Each hart's own files, which only it writes.
const PRIVATE_FILES: usize = 2;
const PRIVATE_BLOCKS: u32 = 10;
const PRIVATE: usize = PRIVATE_FILES * PRIVATE_BLOCKS as usize;
/// Most buffers one transaction pins.
const MAX_PINS: usize = 4;

/// Blocks a file of `size` data blocks takes (its indirect block too).
const fn extent(size: u32) -> u32 {
    size + (size > NDIRECT) as u32
}

/// The first block of each shared file, allocated one after the other from [`DATA_START`].
const SHARED_START: [u32; SHARED.len()] = {
    let mut a = [0; SHARED.len()];
    let mut next = DATA_START;
    let mut i = 0;
    while i < SHARED.len() {
        a[i] = next;
        next += extent(SHARED[i]);
        i += 1;
    }
    a
};
const PRIVATE_START: u32 = SHARED_START[SHARED.len() - 1] + extent(SHARED[SHARED.len() - 1]);
const _: () = assert!(PRIVATE_START + (MAX_HARTS * PRIVATE) as u32 <= NBLOCKS);
const _: () = assert!(PRIVATE_BLOCKS <= NDIRECT);

/// Inode numbers spread over every inode block, as in a file system that has been used.
fn shared_inum(f: usize) -> u32 {
    2 + 10 * f as u32
}

fn private_inum(i: usize) -> u32 {
    7 + 10 * i as u32
}

fn inode_block(inum: u32) -> u32 {
    INODE_START + inum / IPB
}

/// Data block `j` of the file whose blocks start at `start`.
fn data_block(start: u32, j: u32) -> u32 {
    if j < NDIRECT {
        start + j
    } else {
        start + j + 1
    }
}

// ---- shared state ----

/// When the first phase began (`time` CSR).
static T0: AtomicU64 = AtomicU64::new(0);
/// Pages handed to the steal phase's collecting hart: a stack of pages linked through their
/// first word. Others push whole chains; only the collector takes, all at once.
static MAILBOX: AtomicPtr<u8> = AtomicPtr::new(null_mut());
static MAILBOX_PAGES: AtomicU64 = AtomicU64::new(0);
/// Pages the mailbox may hold before givers free their own again (32 MiB of 128).
const MAILBOX_MAX: u64 = 8192;
/// Pages a giver hands over per step once its list is dry: about one steal (128 pages) a step.
const GIVE: u64 = 128;
/// Pages a giver with a stock hands over per step, so that it runs dry early in the phase.
const GIVE_STOCK: u64 = 1024;
/// Pages lent to the starter's `kmem` list: a round's worth for every hart.
const STARTER_PAGES: usize = BATCH * MAX_HARTS;
/// Verification failures each hart prints before only counting them.
const MAX_REPORTS: u64 = 5;
static ERRORS: [AtomicU64; MAX_HARTS] = [const { AtomicU64::new(0) }; MAX_HARTS];

pub fn run() {
    let cfg = bootargs::config();
    let me = hart::id();
    let n = cfg.harts as usize;
    let len = cfg.secs.unwrap_or(PHASE_SECS) * crate::trap::timebase_hz();
    if me == 0 {
        crate::bcachetest::check_disk();
        bio::starter_init();
        kalloc::starter_lend(STARTER_PAGES);
        println!(
            "start demo: {n} harts, phases of {} s: files, starter, steal, crowd, repeated until QEMU stops",
            len / crate::trap::timebase_hz()
        );
        abi::set_phase(PHASES[0]);
        T0.store(hart::now(), Ordering::Relaxed);
    }
    barrier(n as u32);
    let t0 = T0.load(Ordering::Relaxed);
    let mut w = Worker {
        me,
        n,
        rng: 0x9e37_79b9_7f4a_7c15 ^ me as u64,
        pages: [null_mut(); BATCH],
        expect: [UNKNOWN; PRIVATE],
        writes: 0,
        txs: 0,
    };
    let mut report = (me == 0).then(|| Report::new(n));
    let mut step = 0u64;
    loop {
        let k = hart::now().wrapping_sub(t0) / len;
        let (cycle, phase) = (k / PHASES.len() as u64, PHASES[k as usize % PHASES.len()]);
        if let Some(r) = report.as_mut() {
            r.at(k);
        }
        w.step(phase, cycle, step);
        step += 1;
        crate::panic::check_halt();
    }
}

/// The generation of a private block not read yet in this boot (learned from its first read).
const UNKNOWN: u64 = u64::MAX;

/// Which buffer cache a read goes through.
#[derive(Clone, Copy)]
enum Cache {
    /// The lab's solution, the one the ABI shows.
    Hashed,
    /// The starter beside it (`bio::starter_bread`).
    Starter,
}

/// One hart's part.
struct Worker {
    me: usize,
    n: usize,
    rng: u64,
    pages: [*mut u8; BATCH],
    /// The generation each of this hart's blocks should have.
    expect: [u64; PRIVATE],
    writes: u64,
    txs: u64,
}

impl Worker {
    fn step(&mut self, phase: Phase, cycle: u64, step: u64) {
        // Buffers one transaction may pin: with every hart in one at once, some must stay free.
        let room = ((bio::NBUF - 2) / self.n)
            .saturating_sub(1)
            .clamp(1, MAX_PINS);
        let collector = (cycle % self.n as u64) as usize;
        if phase != Phase::DemoSteal || self.me == collector {
            self.collect();
        }
        match phase {
            Phase::DemoStarter => {
                // The same work through both, the lab's before and after side by side: each
                // hart reads its own program (different buckets of the hashed cache, the one
                // lock of the starter) and does a round on each allocator.
                self.cat_with(self.me % HOT, Cache::Hashed);
                self.cat_with(self.me % HOT, Cache::Starter);
                kalloctest::round(self.me, &mut self.pages);
                self.starter_round();
            }
            Phase::DemoSteal => {
                self.file_op(step, 2, room);
                if self.me == collector {
                    kalloctest::round(self.me, &mut self.pages);
                } else {
                    self.give_round();
                }
            }
            Phase::DemoCrowd => {
                for _ in 0..4 {
                    self.read(inode_block(ROOT_INUM), None);
                    self.read(ROOT_DIR, None);
                }
                kalloctest::round(self.me, &mut self.pages);
            }
            // The files phase.
            _ => {
                self.file_op(step, 4, room.min(2));
                kalloctest::round(self.me, &mut self.pages);
            }
        }
    }

    fn random(&mut self) -> u64 {
        // Knuth's MMIX LCG: plenty for picking files.
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.rng >> 33
    }

    fn beat(&self) {
        abi::add_ops(self.me, 1);
        abi::heartbeat(self.me);
    }

    /// Checks a block read against its stamp and, if known, the generation it should have.
    fn check(&self, b: &BufRef, want: Option<u64>) -> Option<u64> {
        let n = b.blockno();
        match disk::verify(b.data(), n) {
            Ok(g) if want.is_none_or(|w| w == g) => Some(g),
            Ok(g) => {
                self.failed(n, format_args!("generation {g:#x}, expected {want:#x?}"));
                None
            }
            Err(e) => {
                self.failed(n, format_args!("{e}"));
                None
            }
        }
    }

    #[cold]
    fn failed(&self, n: u32, what: core::fmt::Arguments) {
        abi::set_outcome(Outcome::Fail);
        if ERRORS[self.me].fetch_add(1, Ordering::Relaxed) < MAX_REPORTS {
            println!("demo FAIL: hart {}: block {n}: {what}", self.me);
        }
    }

    /// Reads block `n` through the hashed cache and checks it.
    fn read(&mut self, n: u32, want: Option<u64>) -> Option<u64> {
        self.read_with(n, want, Cache::Hashed)
    }

    fn read_with(&mut self, n: u32, want: Option<u64>, cache: Cache) -> Option<u64> {
        let b = match cache {
            Cache::Hashed => bio::bread(DEV, n),
            Cache::Starter => bio::starter_bread(DEV, n),
        };
        let g = self.check(&b, want);
        bio::brelse(b);
        self.beat();
        g
    }

    /// Every `tx_every`th step a transaction of `pins` blocks on an own file; otherwise a whole
    /// shared file read, usually a hot one.
    fn file_op(&mut self, step: u64, tx_every: u64, pins: usize) {
        if step % tx_every == tx_every - 1 {
            self.transaction(pins);
            return;
        }
        let r = self.random();
        let f = if !r.is_multiple_of(8) {
            self.me % HOT
        } else {
            (r / 8) as usize % SHARED.len()
        };
        self.cat_with(f, Cache::Hashed);
    }

    /// Reads shared file `f` as `cat` would: its inode, then its blocks in order (the indirect
    /// block before the 13th).
    fn cat_with(&mut self, f: usize, cache: Cache) {
        self.read_with(inode_block(shared_inum(f)), None, cache);
        let start = SHARED_START[f];
        for j in 0..SHARED[f] {
            if j == NDIRECT {
                self.read_with(start + NDIRECT, None, cache);
            }
            self.read_with(data_block(start, j), None, cache);
        }
    }

    /// A log-shaped write of `pins` blocks of one of this hart's files: the inode and the
    /// bitmap are read; each block is read, stamped with a new generation and pinned (xv6's
    /// `log_write`); the log header is written (the commit); then each block is written home
    /// and unpinned (the install).
    fn transaction(&mut self, pins: usize) {
        let file = self.txs as usize % PRIVATE_FILES;
        let idx = self.me * PRIVATE_FILES + file;
        let start = PRIVATE_START + idx as u32 * PRIVATE_BLOCKS;
        self.read(inode_block(private_inum(idx)), None);
        self.read(BITMAP, None);
        let mut pinned: [Option<(u32, u64, Pin)>; MAX_PINS] = [const { None }; MAX_PINS];
        for (k, slot) in pinned.iter_mut().enumerate().take(pins) {
            let j = ((self.txs as usize * pins + k) % PRIVATE_BLOCKS as usize) as u32;
            let e = file * PRIVATE_BLOCKS as usize + j as usize;
            let n = start + j;
            let mut b = bio::bread(DEV, n);
            let want = self.expect[e];
            self.check(&b, (want != UNKNOWN).then_some(want));
            self.writes += 1;
            let generation = ((self.me as u64 + 1) << 56) | self.writes;
            disk::stamp(b.data_mut(), n, generation);
            self.expect[e] = generation;
            *slot = Some((n, generation, bio::bpin(&b)));
            bio::brelse(b);
            self.beat();
        }
        let header = LOG_HEADER + self.me as u32;
        let mut h = bio::bread(DEV, header);
        self.check(&h, None);
        disk::stamp(
            h.data_mut(),
            header,
            ((self.me as u64 + 1) << 56) | self.txs,
        );
        bio::bwrite(&h);
        bio::brelse(h);
        for (n, generation, pin) in pinned.iter_mut().filter_map(Option::take) {
            // A hit: the pin kept the block cached.
            let b = bio::bread(DEV, n);
            self.check(&b, Some(generation));
            bio::bwrite(&b);
            bio::brelse(b);
            bio::bunpin(pin);
            self.beat();
        }
        self.txs += 1;
    }

    /// A round on the starter's single `kmem` list.
    fn starter_round(&mut self) {
        let mut got = 0;
        for p in self.pages.iter_mut() {
            let Some(page) = kalloc::starter_alloc() else {
                break;
            };
            // Touch it, as kalloctest does.
            // SAFETY: a page we own.
            unsafe { (page.add(4) as *mut u32).write_volatile(1) };
            *p = page;
            got += 1;
        }
        for p in &self.pages[..got] {
            // SAFETY: allocated above and no longer used.
            unsafe { kalloc::starter_free(*p) };
        }
        abi::add_ops(self.me, got as u64);
        abi::heartbeat(self.me);
    }

    /// Allocates pages (stealing when the own list is dry) and hands them to the collector
    /// through the mailbox, or frees them here when the mailbox is full. A hart still holding a
    /// stock (collected earlier) gives it away first.
    fn give_round(&mut self) {
        let stock = abi::kmem(self.me).free_pages().load(Ordering::Relaxed);
        let n = stock.clamp(GIVE, GIVE_STOCK);
        let (mut chain, mut tail, mut count) = (null_mut::<u8>(), null_mut::<u8>(), 0u64);
        for _ in 0..n {
            let Some(page) = kalloc::alloc() else {
                break;
            };
            // SAFETY: a page we own; its first word links the chain.
            unsafe { (page as *mut *mut u8).write(chain) };
            if tail.is_null() {
                tail = page;
            }
            chain = page;
            count += 1;
        }
        abi::add_ops(self.me, count);
        abi::heartbeat(self.me);
        if chain.is_null() {
            return;
        }
        if MAILBOX_PAGES.fetch_add(count, Ordering::Relaxed) + count > MAILBOX_MAX {
            MAILBOX_PAGES.fetch_sub(count, Ordering::Relaxed);
            free_chain(chain);
            return;
        }
        let mut head = MAILBOX.load(Ordering::Relaxed);
        loop {
            // SAFETY: the chain is still ours until the exchange publishes it.
            unsafe { (tail as *mut *mut u8).write(head) };
            match MAILBOX.compare_exchange_weak(head, chain, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
    }

    /// Frees every page in the mailbox to this hart's list.
    fn collect(&mut self) {
        let chain = MAILBOX.swap(null_mut(), Ordering::Acquire);
        if !chain.is_null() {
            let n = free_chain(chain);
            MAILBOX_PAGES.fetch_sub(n, Ordering::Relaxed);
            abi::add_ops(self.me, n);
            abi::heartbeat(self.me);
        }
    }
}

/// Frees a chain of pages linked through their first word; returns how many.
fn free_chain(mut p: *mut u8) -> u64 {
    let mut n = 0;
    while !p.is_null() {
        // SAFETY: every page of a chain is an allocated page that only its holder (us, now)
        // reaches; its first word is the link.
        let next = unsafe { (p as *const *mut u8).read() };
        // SAFETY: as above; nobody uses the page any more.
        unsafe { kalloc::free(p) };
        p = next;
        n += 1;
    }
    n
}

/// What hart 0 prints when a phase ends: its counters' growth.
struct Report {
    nharts: usize,
    /// The phase counter the snapshot was taken in.
    k: u64,
    then: Snapshot,
}

#[derive(Clone, Copy)]
struct Snapshot {
    hits: u64,
    misses: u64,
    buffer_steals: u64,
    page_steals: u64,
    nlocks: usize,
    /// Failed test-and-sets per lock id.
    spins: [u64; MAX_LOCKS],
}

impl Snapshot {
    fn take(nharts: usize) -> Self {
        let (hits, misses) = bio::lookups();
        let nlocks = (abi::root().nlocks().load(Ordering::Acquire) as usize).min(MAX_LOCKS);
        let mut spins = [0; MAX_LOCKS];
        for (id, s) in spins.iter_mut().enumerate().take(nlocks) {
            *s = stats::lock_stats(id as u32).spins;
        }
        Snapshot {
            hits,
            misses,
            buffer_steals: bio::steals(),
            page_steals: (0..nharts)
                .map(|h| abi::kmem(h).steals().load(Ordering::Relaxed))
                .sum(),
            nlocks,
            spins,
        }
    }
}

impl Report {
    fn new(nharts: usize) -> Self {
        Report {
            nharts,
            k: 0,
            then: Snapshot::take(nharts),
        }
    }

    /// Called by hart 0 at every step with the current phase counter: on a change, prints
    /// what the phase that ended did and publishes the new phase.
    fn at(&mut self, k: u64) {
        if k == self.k {
            return;
        }
        let now = Snapshot::take(self.nharts);
        self.print(&now);
        self.k = k;
        self.then = now;
        abi::set_phase(PHASES[k as usize % PHASES.len()]);
    }

    fn print(&self, now: &Snapshot) {
        let (a, b) = (&self.then, now);
        let (hits, misses) = (b.hits - a.hits, b.misses - a.misses);
        // Spins per kind of lock, by name.
        let mut kinds = [0u64; KINDS.len()];
        let mut top = (0, 0);
        for id in 0..b.nlocks {
            let d = b.spins[id] - if id < a.nlocks { a.spins[id] } else { 0 };
            let name = stats::lock_stats(id as u32).name;
            kinds[kind_of(name_str(&name).unwrap_or(""))] += d;
            if d > top.1 {
                top = (id, d);
            }
        }
        let top_name = stats::lock_stats(top.0 as u32).name;
        let most = if top.1 > 0 {
            name_str(&top_name).unwrap_or("?")
        } else {
            "none"
        };
        // One println, so the line comes out whole.
        println!(
            "demo: cycle {} {}: {} block reads, {}% hits, {} buffer steals, {} page steals; spins: {} {}, {} {}, {} {}, {} {}, {} {}, {} {}; most contended {most} ({} spins)",
            self.k / PHASES.len() as u64 + 1,
            PHASES[self.k as usize % PHASES.len()]
                .as_str()
                .trim_start_matches("demo-"),
            hits + misses,
            hits * 100 / (hits + misses).max(1),
            b.buffer_steals - a.buffer_steals,
            b.page_steals - a.page_steals,
            KINDS[0],
            kinds[0],
            KINDS[1],
            kinds[1],
            KINDS[2],
            kinds[2],
            KINDS[3],
            kinds[3],
            KINDS[4],
            kinds[4],
            KINDS[5],
            kinds[5],
            top.1,
        );
    }
}

/// The kinds of lock the report sums, by name.
const KINDS: [&str; 6] = [
    "kmem",
    "kmem<i>",
    "bcache",
    "bcache.bucket<i>",
    "buf<i>",
    "other",
];

fn kind_of(name: &str) -> usize {
    match name {
        "kmem" => 0,
        _ if name.starts_with("kmem") => 1,
        "bcache" => 2,
        _ if name.starts_with("bcache.bucket") => 3,
        _ if name.starts_with("buf") => 4,
        _ => 5,
    }
}
