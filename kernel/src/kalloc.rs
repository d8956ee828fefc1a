//! The page allocator (lab part 1): one free list per hart, each under its own `kmem<i>` lock,
//! stealing half of another hart's list when the own list runs dry. `kalloc=global` is the
//! starter: one list under one `kmem` lock.

use crate::abi::{self, OwnedCounter};
use crate::hart;
use crate::layout::{kernel_end, pg_round_up, PGSIZE};
use crate::spinlock::SpinLock;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use lockscope_abi::{KallocMode, MAX_HARTS};

/// A free page's first word: the next free page.
struct Run {
    next: *mut Run,
}

struct FreeList {
    head: *mut Run,
    /// Pages on the list; mirrored to the ABI's `KmemHart::free_pages`.
    count: u64,
}

// SAFETY: the pointers are to free pages, owned by whoever holds the list's lock.
unsafe impl Send for FreeList {}

const EMPTY: FreeList = FreeList {
    head: core::ptr::null_mut(),
    count: 0,
};

const NAMES: [&str; MAX_HARTS] = [
    "kmem0", "kmem1", "kmem2", "kmem3", "kmem4", "kmem5", "kmem6", "kmem7",
];

static PERCPU: [SpinLock<FreeList>; MAX_HARTS] = {
    let mut i = 0;
    let mut a = [const { SpinLock::new("", "kmem", EMPTY) }; MAX_HARTS];
    while i < MAX_HARTS {
        a[i] = SpinLock::new(NAMES[i], "kmem", EMPTY);
        i += 1;
    }
    a
};

static GLOBAL: SpinLock<FreeList> = SpinLock::new("kmem", "kmem", EMPTY);

/// `KallocMode` as u32, set once at init.
static MODE: AtomicU32 = AtomicU32::new(KallocMode::Percpu as u32);
/// Harts whose lists exist (the harts that run).
static NLISTS: AtomicUsize = AtomicUsize::new(1);
/// Bounds of the memory the allocator manages, for sanity checks in `free`.
static START: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);

/// Junk byte written over a page when it is freed (xv6 uses 1).
const JUNK_FREE: u8 = 1;
/// Junk byte written over a page when it is handed out (xv6 uses 5).
const JUNK_ALLOC: u8 = 5;

fn global_mode() -> bool {
    MODE.load(Ordering::Relaxed) == KallocMode::Global as u32
}

/// Mirrors list `list`'s count into the ABI. The caller holds the list's lock.
fn set_free(list: usize, n: u64) {
    abi::kmem(list).free_pages().store(n, Ordering::Relaxed);
}

/// Hart 0, once: registers the locks and gives every page from the kernel's end to `end` to
/// the boot hart's list (or the global list), as the lab's kinit does.
pub fn init(mode: KallocMode, nharts: usize, end: usize) {
    MODE.store(mode as u32, Ordering::Relaxed);
    NLISTS.store(nharts.clamp(1, MAX_HARTS), Ordering::Relaxed);
    let start = pg_round_up(kernel_end());
    START.store(start, Ordering::Relaxed);
    END.store(end, Ordering::Relaxed);
    let lists = if global_mode() { 1 } else { nharts };
    for i in 0..lists {
        let id = list(i).raw().id();
        abi::kmem(i).lock().store(id, Ordering::Relaxed);
    }
    let mut pa = start;
    while pa + PGSIZE <= end {
        // SAFETY: RAM past the kernel image that nothing uses yet.
        unsafe { free(pa as *mut u8) };
        pa += PGSIZE;
    }
}

/// The list a hart allocates from and frees to.
fn list(i: usize) -> &'static SpinLock<FreeList> {
    if global_mode() {
        &GLOBAL
    } else {
        &PERCPU[i]
    }
}

fn my_list() -> usize {
    if global_mode() {
        0
    } else {
        hart::id()
    }
}

/// Checks that `pa` is a page this allocator manages and junk-fills it (with `checks`).
///
/// # Safety
/// As for [`free`].
unsafe fn prepare_free(pa: *mut u8) {
    let a = pa as usize;
    if !a.is_multiple_of(PGSIZE)
        || a < START.load(Ordering::Relaxed)
        || a >= END.load(Ordering::Relaxed)
    {
        panic!("kfree {a:#x}");
    }
    if cfg!(feature = "checks") {
        // SAFETY: a page of managed RAM that the caller gives up.
        unsafe { core::ptr::write_bytes(pa, JUNK_FREE, PGSIZE) };
    }
}

/// Checks that a page just taken off a list was left alone while free, and junk-fills it
/// (with `checks`).
fn prepare_alloc(page: *mut Run) -> *mut u8 {
    let pa = page as *mut u8;
    if cfg!(feature = "checks") {
        check_free_pattern(pa);
        // SAFETY: the page is now exclusively ours.
        unsafe { core::ptr::write_bytes(pa, JUNK_ALLOC, PGSIZE) };
    }
    pa
}

/// Puts the free page `pa` at the head of the held list `l`.
///
/// # Safety
/// `pa` is a free page nobody else can reach.
unsafe fn push(l: &mut FreeList, pa: *mut u8) {
    let r = pa as *mut Run;
    // SAFETY: the page is free and ours until it is on the list.
    unsafe { (*r).next = l.head };
    l.head = r;
    l.count += 1;
}

/// Takes the head of the held list `l`, or null.
fn pop(l: &mut FreeList) -> *mut Run {
    let r = l.head;
    if !r.is_null() {
        // SAFETY: `r` is on the list, which the caller holds.
        l.head = unsafe { (*r).next };
        l.count -= 1;
    }
    r
}

/// Frees the page at `pa` to this hart's list.
///
/// # Safety
/// `pa` must be a page this allocator manages that nobody uses any more (from [`alloc`], or
/// free RAM at init).
pub unsafe fn free(pa: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { prepare_free(pa) };
    // Interrupts off so the hart id stays right until the lock (which also disables them).
    hart::push_off();
    let i = my_list();
    {
        let mut l = list(i).lock();
        // SAFETY: the caller gave the page up.
        unsafe { push(&mut l, pa) };
        set_free(i, l.count);
        abi::kmem(i).frees().add(1);
    }
    hart::pop_off();
}

/// Allocates one page, or `None` when all lists are empty.
pub fn alloc() -> Option<*mut u8> {
    hart::push_off();
    let i = my_list();
    let mut page = {
        let mut l = list(i).lock();
        let r = pop(&mut l);
        if !r.is_null() {
            set_free(i, l.count);
            abi::kmem(i).allocs().add(1);
        }
        r
    };
    if page.is_null() && !global_mode() {
        page = if crate::bugs::active(lockscope_abi::Bug::KmemStealRace) {
            steal_racy(i)
        } else {
            steal(i)
        };
    }
    hart::pop_off();
    (!page.is_null()).then(|| prepare_alloc(page))
}

/// The starter's single list `kmem` beside the per-hart lists, for the demo: with
/// `kalloc=percpu` it is otherwise unused, holds only the pages [`starter_lend`] gave it, and
/// has no ABI entry (its lock is in the lock table). With `kalloc=global` it is the allocator.
pub fn starter_alloc() -> Option<*mut u8> {
    let page = {
        let mut l = GLOBAL.lock();
        let r = pop(&mut l);
        if !r.is_null() && global_mode() {
            set_free(0, l.count);
            abi::kmem(0).allocs().add(1);
        }
        r
    };
    (!page.is_null()).then(|| prepare_alloc(page))
}

/// Frees a page to the starter's list (see [`starter_alloc`]).
///
/// # Safety
/// As for [`free`].
pub unsafe fn starter_free(pa: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { prepare_free(pa) };
    let mut l = GLOBAL.lock();
    // SAFETY: the caller gave the page up.
    unsafe { push(&mut l, pa) };
    if global_mode() {
        set_free(0, l.count);
        abi::kmem(0).frees().add(1);
    }
}

/// Moves up to `n` pages from this hart's list to the starter's, registering its lock `kmem`.
/// Returns the pages moved (0 with `kalloc=global`, where the two are one list).
pub fn starter_lend(n: usize) -> usize {
    GLOBAL.raw().id();
    if global_mode() {
        return 0;
    }
    let mut moved = 0;
    while moved < n {
        let Some(pa) = alloc() else { break };
        // SAFETY: just allocated, unused.
        unsafe { starter_free(pa) };
        moved += 1;
    }
    moved
}

/// A free page holds JUNK_FREE everywhere but its `next` word. Anything else means someone
/// wrote to it while it was free, or it was handed out twice.
fn check_free_pattern(pa: *mut u8) {
    let words = pa as *const u64;
    let junk = u64::from_ne_bytes([JUNK_FREE; 8]);
    for w in 1..PGSIZE / 8 {
        // SAFETY: inside the page we just took off a free list.
        let v = unsafe { words.add(w).read_volatile() };
        if v != junk {
            panic!(
                "kalloc: page {:#x} was written while free (word {w} = {v:#x}): double allocation or use after free",
                pa as usize
            );
        }
    }
}

/// Most pages one steal takes. Cutting half of a long list means walking it under the victim's
/// lock: at boot hart 0 holds every page, and walking 15,000 nodes there made the victim (and
/// the other thieves) spin tens of thousands of times. 128 pages is four kalloctest rounds.
pub const STEAL_MAX: u64 = 128;

/// Our list is empty: take half of another hart's list (at most [`STEAL_MAX`] pages), visiting
/// the others round-robin starting after ourselves. Returns one page for the caller and puts the rest on our list.
///
/// Never holds two kmem locks at once (two harts stealing from each other would deadlock).
/// `bug=kmem-steal-race` replaces it with [`steal_racy`].
fn steal(me: usize) -> *mut Run {
    let n = NLISTS.load(Ordering::Relaxed);
    for k in 1..n {
        let victim = (me + k) % n;
        let (batch, taken) = {
            let mut v = list(victim).lock();
            if v.count == 0 {
                continue;
            }
            let take = v.count.div_ceil(2).min(STEAL_MAX);
            let first = v.head;
            let mut last = first;
            for _ in 1..take {
                // SAFETY: the victim's list has `count >= take` nodes; we hold its lock.
                last = unsafe { (*last).next };
            }
            // SAFETY: as above; `last` is the take-th node.
            unsafe {
                v.head = (*last).next;
                (*last).next = core::ptr::null_mut();
            }
            v.count -= take;
            set_free(victim, v.count);
            (first, take)
        };
        // SAFETY: the batch is a detached chain of `taken` free pages, ours alone now.
        return unsafe { adopt(me, batch, taken) };
    }
    core::ptr::null_mut()
}

/// Keeps the first page of a stolen batch for the caller and lists the rest on `me`'s list.
///
/// # Safety
/// `batch` heads a chain of `taken` pages that no list or other hart can reach.
unsafe fn adopt(me: usize, batch: *mut Run, taken: u64) -> *mut Run {
    // SAFETY: the caller's promise.
    let rest = unsafe { (*batch).next };
    let mut l = list(me).lock();
    if !rest.is_null() {
        let mut tail = rest;
        // SAFETY: walking the detached chain.
        unsafe {
            while !(*tail).next.is_null() {
                tail = (*tail).next;
            }
            (*tail).next = l.head;
        }
        l.head = rest;
    }
    l.count += taken - 1;
    set_free(me, l.count);
    let stats = abi::kmem(me);
    stats.steals().add(1);
    stats.pages_stolen().add(taken);
    stats.allocs().add(1);
    batch
}

/// `bug=kmem-steal-race`: the student reads the victim's list under its lock, drops the lock
/// to walk the pages it will take, and takes the lock again to cut them off. Meanwhile the
/// victim allocates from the head it read (a page handed out twice) or frees onto it (a page
/// lost when the head is overwritten), and its count goes wrong. Walking outside the lock, the
/// student saw no reason for [`STEAL_MAX`] and takes a full half: at boot that is a walk of
/// thousands of pages, while the victim keeps allocating.
#[inline(never)]
fn steal_racy(me: usize) -> *mut Run {
    let n = NLISTS.load(Ordering::Relaxed);
    for k in 1..n {
        let victim = (me + k) % n;
        let (first, take) = {
            let v = list(victim).lock();
            if v.count == 0 {
                continue;
            }
            (v.head, v.count.div_ceil(2))
        };
        // The walk, without the victim's lock.
        let mut last = first;
        for _ in 1..take {
            // SAFETY: not safe at all: this is the bug. The pages stay mapped RAM, so the walk
            // itself cannot fault; it may follow links the victim is rewriting.
            let next = unsafe { (*last).next };
            if next.is_null() {
                break;
            }
            last = next;
        }
        // On real hardware the walk misses the cache at every page (~100 ns each, 1.5 ms for the
        // 15,000 pages of the first steal); under QEMU it is quick, and the race would show only
        // now and then. Hold the window open as long as the real walk would take.
        let walk = take * crate::trap::timebase_hz() / 10_000_000;
        let t0 = hart::now();
        while hart::now().wrapping_sub(t0) < walk {
            core::hint::spin_loop();
        }
        {
            let mut v = list(victim).lock();
            // SAFETY: as above.
            unsafe {
                v.head = (*last).next;
                (*last).next = core::ptr::null_mut();
            }
            v.count = v.count.wrapping_sub(take);
            set_free(victim, v.count);
        }
        // SAFETY: not so: the victim may still reach these pages. That is the bug.
        return unsafe { adopt(me, first, take) };
    }
    core::ptr::null_mut()
}

/// A free list that is not what its count says.
#[derive(Clone, Copy, Debug)]
pub enum ListProblem {
    /// The list holds a different number of pages than its count.
    Count {
        list: usize,
        count: u64,
        walked: u64,
    },
    /// A link points outside the memory the allocator manages.
    Link {
        list: usize,
        page: usize,
        next: usize,
    },
}

impl core::fmt::Display for ListProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ListProblem::Count {
                list,
                count,
                walked,
            } => write!(
                f,
                "list {list} counts {count} pages but holds {walked}: pages lost or on two lists"
            ),
            ListProblem::Link { list, page, next } => write!(
                f,
                "list {list}: page {page:#x} links to {next:#x}, outside free memory: a free page was written"
            ),
        }
    }
}

/// Free pages on all lists, counted by walking them, and the first list that disagrees with
/// its count. Takes each lock in turn, so it is exact only when nobody allocates.
pub fn audit() -> (u64, Option<ListProblem>) {
    let lists = if global_mode() {
        1
    } else {
        NLISTS.load(Ordering::Relaxed)
    };
    let (start, end) = (START.load(Ordering::Relaxed), END.load(Ordering::Relaxed));
    let mut pages = 0;
    let mut problem = None;
    for i in 0..lists {
        let l = list(i).lock();
        let mut walked = 0u64;
        let mut p = l.head;
        // At most count + 1 steps: enough to see a mismatch, and a cycle cannot trap us.
        while !p.is_null() && walked <= l.count {
            let a = p as usize;
            if !a.is_multiple_of(PGSIZE) || a < start || a >= end {
                problem = problem.or(Some(ListProblem::Link {
                    list: i,
                    page: 0,
                    next: a,
                }));
                break;
            }
            walked += 1;
            // SAFETY: `p` is a page of managed memory on a list we hold.
            let next = unsafe { (*p).next };
            if !next.is_null()
                && (!(next as usize).is_multiple_of(PGSIZE)
                    || (next as usize) < start
                    || (next as usize) >= end)
            {
                problem = problem.or(Some(ListProblem::Link {
                    list: i,
                    page: a,
                    next: next as usize,
                }));
                break;
            }
            p = next;
        }
        if walked != l.count {
            problem = problem.or(Some(ListProblem::Count {
                list: i,
                count: l.count,
                walked,
            }));
        }
        pages += walked;
    }
    (pages, problem)
}

/// The kmem locks in use, for the lab-format stats.
pub fn locks() -> impl Iterator<Item = &'static crate::spinlock::RawSpinLock> {
    let lists = if global_mode() {
        1
    } else {
        NLISTS.load(Ordering::Relaxed)
    };
    (0..lists).map(|i| list(i).raw())
}
