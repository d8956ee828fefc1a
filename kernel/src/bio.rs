//! The buffer cache (lab part 2): [`NBUF`] buffers of one disk block each, found through a
//! hash table of [`NBUCKET`] buckets, each an intrusive doubly linked list (raw pointers, as in
//! xv6) under its own lock `bcache.bucket<i>`. `bcache=global` is the starter instead: one list
//! in least-recently-used order under the single lock `bcache`.
//!
//! The protocol, and why it cannot deadlock, is in docs/bcache.md. In short: a hit and a miss
//! that recycles a buffer of its own bucket hold only that bucket's lock; taking a buffer from
//! another bucket holds `bcache.evict` and then one bucket lock at a time. No path holds two
//! bucket locks, and no path takes `bcache.evict` while holding a bucket lock.
//!
//! The `bug=` variants of this file's code paths are marked with `bugs::active`.
//!
//! `workload=demo` also runs the starter beside the hashed cache: [`starter_bread`] goes
//! through the single `bcache` lock and list, over [`NSTARTER`] buffers of its own that the ABI
//! does not list (it shows the hashed cache; the starter's locks are in the lock table).

use crate::abi::{self, OwnedCounter};
use crate::bugs;
use crate::hart;
use crate::spinlock::{RawSpinLock, SleepLock};
use core::cell::UnsafeCell;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, Ordering};
use lockscope_abi::disk::BSIZE;
use lockscope_abi::{BcacheMode, Bug, NONE};

/// Buffers, as in xv6 (`MAXOPBLOCKS * 3`).
pub const NBUF: usize = 30;
/// Hash buckets: a prime, so block numbers in arithmetic progressions spread out.
pub const NBUCKET: usize = 13;
/// `blockno` of a buffer that holds no block.
pub const NOBLOCK: u32 = u32::MAX;
/// Buffers of the demo's starter cache (after the [`NBUF`] of the real one), as many as the
/// lab's starter has; a hart holds at most one at a time.
pub const NSTARTER: usize = NBUF;
/// The list index of the demo's starter cache (`bucket(STARTER)` is the `bcache` list).
const STARTER: usize = NBUCKET;

const BUCKET_NAMES: [&str; NBUCKET] = [
    "bcache.bucket0",
    "bcache.bucket1",
    "bcache.bucket2",
    "bcache.bucket3",
    "bcache.bucket4",
    "bcache.bucket5",
    "bcache.bucket6",
    "bcache.bucket7",
    "bcache.bucket8",
    "bcache.bucket9",
    "bcache.bucket10",
    "bcache.bucket11",
    "bcache.bucket12",
];

const BUF_NAMES: [&str; NBUF + NSTARTER] = [
    "buf0", "buf1", "buf2", "buf3", "buf4", "buf5", "buf6", "buf7", "buf8", "buf9", "buf10",
    "buf11", "buf12", "buf13", "buf14", "buf15", "buf16", "buf17", "buf18", "buf19", "buf20",
    "buf21", "buf22", "buf23", "buf24", "buf25", "buf26", "buf27", "buf28", "buf29", "sbuf0",
    "sbuf1", "sbuf2", "sbuf3", "sbuf4", "sbuf5", "sbuf6", "sbuf7", "sbuf8", "sbuf9", "sbuf10",
    "sbuf11", "sbuf12", "sbuf13", "sbuf14", "sbuf15", "sbuf16", "sbuf17", "sbuf18", "sbuf19",
    "sbuf20", "sbuf21", "sbuf22", "sbuf23", "sbuf24", "sbuf25", "sbuf26", "sbuf27", "sbuf28",
    "sbuf29",
];

/// A list node. It is the first field of [`Buf`], so a `*mut Link` of a buffer is its
/// `*mut Buf`; a bucket's head is a bare `Link`.
#[repr(C)]
struct Link {
    next: *mut Link,
    prev: *mut Link,
}

/// One buffer. The fields up to `last_use` belong to the holder of its bucket's lock (the
/// `bcache` lock in global mode); `valid` and `data` to the holder of `lock`.
#[repr(C)]
struct Buf {
    link: Link,
    dev: u32,
    blockno: u32,
    refcnt: u32,
    /// The bucket whose list holds it, or NONE while it moves between buckets.
    bucket: u32,
    /// `ticks` at last use (the lab's LRU key; what the ABI shows).
    timestamp: u64,
    /// The `time` CSR at last use: a tick is 10 ms, and thousands of lookups share one, so
    /// this orders uses within a tick.
    last_use: u64,
    valid: AtomicBool,
    lock: SleepLock,
    data: [u8; BSIZE],
}

impl Buf {
    const fn new(name: &'static str, class: &'static str) -> Self {
        Self {
            link: Link {
                next: null_mut(),
                prev: null_mut(),
            },
            dev: 0,
            blockno: NOBLOCK,
            refcnt: 0,
            bucket: NONE,
            timestamp: 0,
            last_use: 0,
            valid: AtomicBool::new(false),
            lock: SleepLock::new(name, class),
            data: [0; BSIZE],
        }
    }
}

struct Bufs(UnsafeCell<[Buf; NBUF + NSTARTER]>);

// SAFETY: every field is accessed under the lock that owns it (see `Buf`).
unsafe impl Sync for Bufs {}

static BUFS: Bufs = Bufs(UnsafeCell::new({
    let mut a = [const { Buf::new("", "") }; NBUF + NSTARTER];
    let mut i = 0;
    while i < NBUF + NSTARTER {
        a[i] = Buf::new(BUF_NAMES[i], if i < NBUF { "buf" } else { "sbuf" });
        i += 1;
    }
    a
}));

struct Bucket {
    lock: RawSpinLock,
    head: UnsafeCell<Link>,
}

impl Bucket {
    const fn new(name: &'static str, class: &'static str) -> Self {
        Self {
            lock: RawSpinLock::new(name, class),
            head: UnsafeCell::new(Link {
                next: null_mut(),
                prev: null_mut(),
            }),
        }
    }
}

// SAFETY: the list is only touched by the holder of `lock`.
unsafe impl Sync for Bucket {}

static BUCKETS: [Bucket; NBUCKET] = {
    let mut a = [const { Bucket::new("", "bcache.bucket") }; NBUCKET];
    let mut i = 0;
    while i < NBUCKET {
        a[i] = Bucket::new(BUCKET_NAMES[i], "bcache.bucket");
        i += 1;
    }
    a
};

/// `bcache=global`: the starter's single list and lock (with `bcache=hashed`, the demo's
/// starter cache).
static GLOBAL: Bucket = Bucket::new("bcache", "bcache");
/// Serializes taking a buffer from another bucket.
static EVICT: RawSpinLock = RawSpinLock::new("bcache.evict", "bcache.evict");

static READY: AtomicBool = AtomicBool::new(false);
static STARTER_READY: AtomicBool = AtomicBool::new(false);
static GLOBAL_MODE: AtomicBool = AtomicBool::new(false);

pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

fn global_mode() -> bool {
    GLOBAL_MODE.load(Ordering::Relaxed)
}

fn buf(i: usize) -> *mut Buf {
    assert!(i < NBUF + NSTARTER);
    // SAFETY: in bounds; no reference is formed.
    unsafe { (BUFS.0.get() as *mut Buf).add(i) }
}

fn index_of(b: *mut Buf) -> usize {
    (b as usize - BUFS.0.get() as usize) / core::mem::size_of::<Buf>()
}

/// The bucket (or the global list) that caches `blockno`.
fn home(blockno: u32) -> usize {
    if global_mode() {
        0
    } else {
        blockno as usize % NBUCKET
    }
}

fn bucket(k: usize) -> &'static Bucket {
    if global_mode() || k == STARTER {
        &GLOBAL
    } else {
        &BUCKETS[k]
    }
}

fn head(k: usize) -> *mut Link {
    bucket(k).head.get()
}

/// Hart 0, once, before the ABI root is published: registers the locks (in a fixed order, so
/// ids are stable), builds the lists and fills the ABI tables.
pub fn init(mode: BcacheMode) {
    let global = mode == BcacheMode::Global;
    GLOBAL_MODE.store(global, Ordering::Relaxed);
    let nbucket = if global { 1 } else { NBUCKET };
    let evict = if global {
        GLOBAL.lock.id();
        NONE
    } else {
        for b in &BUCKETS {
            b.lock.id();
        }
        EVICT.id()
    };
    for k in 0..nbucket {
        let h = head(k);
        // SAFETY: no other hart runs yet; the head is a static.
        unsafe {
            (*h).next = h;
            (*h).prev = h;
        }
        abi::bucket(k)
            .lock()
            .store(bucket(k).lock.id(), Ordering::Relaxed);
    }
    for i in 0..NBUF {
        let b = buf(i);
        // Round-robin, so every bucket starts with two or three buffers.
        let k = i % nbucket;
        // SAFETY: no other hart runs yet.
        unsafe {
            append(head(k), b);
            (*b).bucket = k as u32;
            abi::buf(i)
                .lock()
                .store((*b).lock.raw().id(), Ordering::Relaxed);
            publish(b);
        }
        add_nbuf(k, 1);
    }
    // Nobody reads the header before the root is published.
    let (buckets, bufs) = abi::bcache_tables();
    let h = abi::bcache_header();
    h.nbuf().store(NBUF as u32, Ordering::Relaxed);
    h.nbucket().store(nbucket as u32, Ordering::Relaxed);
    h.mode().store(mode as u32, Ordering::Relaxed);
    h.evict_lock().store(evict, Ordering::Relaxed);
    h.buckets().store(buckets, Ordering::Relaxed);
    h.bufs().store(bufs, Ordering::Relaxed);
    READY.store(true, Ordering::Release);
}

/// The locks of the cache, for the lab-format statistics.
pub fn locks() -> impl Iterator<Item = &'static RawSpinLock> {
    let global = global_mode();
    let n = if ready() && !global { NBUCKET } else { 0 };
    let one = (ready() && global).then_some(&GLOBAL.lock);
    let evict = (ready() && !global).then_some(&EVICT);
    one.into_iter()
        .chain(BUCKETS[..n].iter().map(|b| &b.lock))
        .chain(evict)
}

/// The demo's starter cache beside the hashed one: the single `bcache` lock over a list of the
/// [`NSTARTER`] `sbuf<i>` buffers, registering its locks. Hart 0, before other harts use it;
/// nothing to do with `bcache=global` (the cache is the starter already). Idempotent.
pub fn starter_init() {
    if !ready() || global_mode() || STARTER_READY.load(Ordering::Acquire) {
        return;
    }
    GLOBAL.lock.id();
    let h = head(STARTER);
    // SAFETY: nobody uses the starter list before STARTER_READY; the head is a static.
    unsafe {
        (*h).next = h;
        (*h).prev = h;
    }
    for i in NBUF..NBUF + NSTARTER {
        let b = buf(i);
        // SAFETY: as above: the buffer is on no list and nobody uses it yet.
        unsafe {
            append(h, b);
            (*b).bucket = STARTER as u32;
            (*b).lock.raw().id();
        }
    }
    STARTER_READY.store(true, Ordering::Release);
}

// ---- ABI mirror: written by the owner of the fields, one atomic store each ----

/// Mirrors a buffer's metadata into the ABI (not the starter's buffers: the ABI lists the
/// real cache).
///
/// # Safety
/// The caller holds the buffer's bucket lock, or owns the buffer (it is in no list).
unsafe fn publish(b: *mut Buf) {
    let i = index_of(b);
    if i >= NBUF {
        return;
    }
    let info = abi::buf(i);
    // SAFETY: the caller owns the fields (contract).
    let b = unsafe { &*b };
    info.dev().store(b.dev, Ordering::Relaxed);
    info.blockno().store(b.blockno, Ordering::Relaxed);
    info.refcnt().store(b.refcnt, Ordering::Relaxed);
    info.valid()
        .store(b.valid.load(Ordering::Relaxed) as u32, Ordering::Relaxed);
    info.timestamp().store(b.timestamp, Ordering::Relaxed);
    info.bucket().store(b.bucket, Ordering::Relaxed);
}

fn publish_valid(b: *mut Buf, valid: bool) {
    let i = index_of(b);
    if i < NBUF {
        abi::buf(i).valid().store(valid as u32, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy)]
enum Counter {
    Hits,
    Misses,
    Steals,
}

/// Adds one to a counter of bucket `k` (the starter's list has none). The caller holds bucket
/// `k`'s lock.
fn bump(k: usize, c: Counter) {
    if k == STARTER {
        return;
    }
    // The bucket's lock holder is the counters' only writer.
    let info = abi::bucket(k);
    match c {
        Counter::Hits => info.hits(),
        Counter::Misses => info.misses(),
        Counter::Steals => info.steals(),
    }
    .add(1);
}

/// Adds `d` to bucket `k`'s buffer count. The caller holds bucket `k`'s lock.
fn add_nbuf(k: usize, d: i32) {
    if k == STARTER {
        return;
    }
    let a = abi::bucket(k).nbuf();
    a.store(
        a.load(Ordering::Relaxed).wrapping_add_signed(d),
        Ordering::Relaxed,
    );
}

/// Hits and misses over all buckets so far.
pub fn lookups() -> (u64, u64) {
    let n = if global_mode() { 1 } else { NBUCKET };
    (0..n).fold((0, 0), |(h, m), k| {
        let info = abi::bucket(k);
        (
            h + info.hits().load(Ordering::Relaxed),
            m + info.misses().load(Ordering::Relaxed),
        )
    })
}

/// Buffers taken from another bucket so far.
pub fn steals() -> u64 {
    (0..NBUCKET)
        .map(|k| abi::bucket(k).steals().load(Ordering::Relaxed))
        .sum()
}

// ---- lists; the caller holds the list's lock ----

/// Adds `b` at the tail (init only).
///
/// # Safety
/// The caller owns the list and `b`.
unsafe fn append(head: *mut Link, b: *mut Buf) {
    let l = b as *mut Link;
    // SAFETY: the caller's contract; `head` is a well-formed circular list.
    unsafe {
        (*l).next = head;
        (*l).prev = (*head).prev;
        (*(*head).prev).next = l;
        (*head).prev = l;
    }
}

/// Takes `b` out of its list and clears its links (a stale link hides bugs a null one shows).
///
/// # Safety
/// The caller holds the lock of the list `b` is on.
unsafe fn unlink(b: *mut Buf) {
    let l = b as *mut Link;
    // SAFETY: the caller's contract; `b` is on a well-formed list.
    unsafe {
        (*(*l).prev).next = (*l).next;
        (*(*l).next).prev = (*l).prev;
        (*l).next = null_mut();
        (*l).prev = null_mut();
    }
}

/// Puts an unlinked `b` at the front of the list at `head`.
///
/// # Safety
/// The caller holds the list's lock and owns `b`, which is on no list.
unsafe fn push_front(head: *mut Link, b: *mut Buf) {
    let l = b as *mut Link;
    // SAFETY: the caller's contract.
    unsafe {
        if bugs::active(Bug::NullNext) {
            // The seed's prev/head mix-up: `b->next = b->prev` where `head->next` was meant.
            // unlink left b->prev null, so b->next stays null and the next walk of this list
            // loads through it.
            (*l).next = (*l).prev;
        } else {
            (*l).next = (*head).next;
        }
        (*l).prev = head;
        (*(*head).next).prev = l;
        (*head).next = l;
    }
}

/// The buffer caching (dev, blockno) in list `k`, or null.
///
/// # Safety
/// The caller holds list `k`'s lock.
unsafe fn lookup(k: usize, dev: u32, blockno: u32) -> *mut Buf {
    let head = head(k);
    // SAFETY: the caller's contract: the list is ours to walk.
    unsafe {
        let mut l = (*head).next;
        while l != head {
            let b = l as *mut Buf;
            if (*b).dev == dev && (*b).blockno == blockno {
                if cfg!(feature = "checks") && k != STARTER && home((*b).blockno) != k {
                    panic!(
                        "bcache: buf{} caches block {} in bucket {k}, but the block hashes to bucket {}",
                        index_of(b),
                        blockno,
                        home(blockno)
                    );
                }
                return b;
            }
            l = (*l).next;
        }
    }
    null_mut()
}

/// The LRU key: when the buffer was last used.
///
/// # Safety
/// The caller holds the lock of `b`'s list.
unsafe fn key(b: *mut Buf) -> (u64, u64) {
    // SAFETY: the caller's contract.
    unsafe { ((*b).timestamp, (*b).last_use) }
}

/// The least recently used buffer of list `k` that nobody holds, or null.
///
/// # Safety
/// The caller holds list `k`'s lock.
unsafe fn lru_free(k: usize) -> *mut Buf {
    let head = head(k);
    let mut best: *mut Buf = null_mut();
    // SAFETY: the caller's contract.
    unsafe {
        let mut l = (*head).next;
        while l != head {
            let b = l as *mut Buf;
            if (*b).refcnt == 0 && (best.is_null() || key(b) < key(best)) {
                best = b;
            }
            l = (*l).next;
        }
    }
    best
}

/// Records a use of `b` for the LRU.
///
/// # Safety
/// The caller holds the lock of `b`'s list (or owns `b`).
unsafe fn touch(b: *mut Buf) {
    if bugs::active(Bug::StaleTicks) {
        // The student's bget never updates the timestamp.
        return;
    }
    // SAFETY: the caller's contract.
    unsafe {
        (*b).timestamp = abi::ticks().load(Ordering::Relaxed);
        (*b).last_use = hart::now();
    }
}

/// A lookup found `b` in list `k`: take a reference.
///
/// # Safety
/// The caller holds list `k`'s lock.
unsafe fn hit(k: usize, b: *mut Buf, count: bool) {
    // SAFETY: the caller's contract.
    unsafe {
        (*b).refcnt += 1;
        if bugs::active(Bug::RefcntLeak) {
            // The student's hit path takes its reference twice (once on finding the buffer,
            // once more in the tail it shares with the miss path); brelse drops one.
            (*b).refcnt += 1;
        }
        touch(b);
        publish(b);
    }
    if count {
        bump(k, Counter::Hits);
    }
}

/// Makes the unheld buffer `b` of list `k` cache (dev, blockno), with one reference, at the
/// front of the list (a lookup right after a miss finds it first).
///
/// # Safety
/// The caller holds list `k`'s lock; `b` is on list `k` with `refcnt == 0`.
unsafe fn claim(k: usize, b: *mut Buf, dev: u32, blockno: u32) {
    // SAFETY: the caller's contract.
    unsafe {
        check_single_copy(k, b, dev, blockno);
        set_block(b, dev, blockno);
        unlink(b);
        push_front(head(k), b);
        publish(b);
    }
}

/// As [`claim`], for a buffer the caller owns (taken from another bucket, on no list).
///
/// # Safety
/// The caller holds list `k`'s lock and owns `b`.
unsafe fn claim_owned(k: usize, b: *mut Buf, dev: u32, blockno: u32) {
    // SAFETY: the caller's contract.
    unsafe {
        check_single_copy(k, b, dev, blockno);
        set_block(b, dev, blockno);
        (*b).bucket = k as u32;
        push_front(head(k), b);
        publish(b);
    }
    add_nbuf(k, 1);
}

/// # Safety
/// The caller holds list `k`'s lock and `b` is unheld.
unsafe fn set_block(b: *mut Buf, dev: u32, blockno: u32) {
    // SAFETY: the caller's contract.
    unsafe {
        (*b).dev = dev;
        (*b).blockno = blockno;
        (*b).valid.store(false, Ordering::Relaxed);
        (*b).refcnt = 1;
        touch(b);
    }
}

/// The invariant check: a block is cached in at most one buffer.
///
/// # Safety
/// The caller holds list `k`'s lock.
unsafe fn check_single_copy(k: usize, b: *mut Buf, dev: u32, blockno: u32) {
    if !cfg!(feature = "checks") {
        return;
    }
    // SAFETY: the caller's contract.
    let other = unsafe { lookup(k, dev, blockno) };
    if !other.is_null() && other != b {
        panic!(
            "bcache: block {blockno} would be cached twice (buf{} and buf{})",
            index_of(other),
            index_of(b)
        );
    }
}

/// Puts the owned, unlinked `b` on list `k`, holding no block and unheld.
///
/// # Safety
/// The caller holds list `k`'s lock and owns `b`.
unsafe fn park(k: usize, b: *mut Buf) {
    // SAFETY: the caller's contract.
    unsafe {
        (*b).blockno = NOBLOCK;
        (*b).valid.store(false, Ordering::Relaxed);
        (*b).refcnt = 0;
        (*b).bucket = k as u32;
        push_front(head(k), b);
        publish(b);
    }
    add_nbuf(k, 1);
}

/// Takes the unheld `b` off list `k`: the caller owns it afterwards.
///
/// # Safety
/// The caller holds list `k`'s lock; `b` is on it with `refcnt == 0`.
unsafe fn detach(k: usize, b: *mut Buf) {
    // SAFETY: the caller's contract.
    unsafe {
        unlink(b);
        (*b).bucket = NONE;
        (*b).blockno = NOBLOCK;
        (*b).valid.store(false, Ordering::Relaxed);
        publish(b);
    }
    add_nbuf(k, -1);
}

/// Finds or makes the buffer for (dev, blockno) and takes a reference to it.
#[inline(never)]
fn bget(dev: u32, blockno: u32) -> *mut Buf {
    if global_mode() {
        return bget_global(0, dev, blockno);
    }
    let k = home(blockno);
    let bk = &BUCKETS[k];
    bk.lock.acquire();
    // SAFETY: we hold bucket k's lock for the list operations.
    unsafe {
        let b = lookup(k, dev, blockno);
        if !b.is_null() {
            hit(k, b, true);
            bk.lock.release();
            return b;
        }
        bump(k, Counter::Misses);
        // black_box: not tail calls, so backtraces and held-lock pcs show bget.
        if bugs::active(Bug::DoubleAcquire) {
            return core::hint::black_box(recycle_relocking(k, dev, blockno));
        }
        if bugs::active(Bug::BucketOrder) {
            return core::hint::black_box(bget_holding_own_bucket(k, dev, blockno));
        }
        // Checking for the block and claiming a buffer happen under the one lock, so two
        // harts missing the same block cannot both load it.
        let b = lru_free(k);
        if !b.is_null() {
            claim(k, b, dev, blockno);
            bk.lock.release();
            return b;
        }
    }
    bk.lock.release();
    match steal(k, dev, blockno) {
        Some(b) => b,
        None => panic!("bget: no buffers"),
    }
}

/// Bucket `k` has no free buffer: take the least recently used free buffer of another bucket,
/// under `bcache.evict`, holding one bucket lock at a time. `None` if there is none anywhere.
#[inline(never)]
fn steal(k: usize, dev: u32, blockno: u32) -> Option<*mut Buf> {
    EVICT.acquire();
    let taken = loop {
        let mut best: Option<(usize, *mut Buf, (u64, u64))> = None;
        for i in (0..NBUCKET).filter(|&i| i != k) {
            BUCKETS[i].lock.acquire();
            // SAFETY: we hold bucket i's lock.
            unsafe {
                let c = lru_free(i);
                if !c.is_null() && best.is_none_or(|(_, _, kb)| key(c) < kb) {
                    best = Some((i, c, key(c)));
                }
            }
            BUCKETS[i].lock.release();
        }
        let Some((v, c, _)) = best else {
            break None;
        };
        BUCKETS[v].lock.acquire();
        // Only evict holders move buffers between buckets, so `c` is still on bucket v; a hit
        // may have taken it since the scan, in which case look again.
        // SAFETY: we hold bucket v's lock.
        let free = unsafe { (*c).refcnt == 0 };
        if free {
            // SAFETY: as above; `c` is unheld.
            unsafe { detach(v, c) };
        }
        BUCKETS[v].lock.release();
        if free {
            break Some(c);
        }
    };
    let bk = &BUCKETS[k];
    bk.lock.acquire();
    // SAFETY: we hold bucket k's lock, and own `taken` (on no list).
    let got = unsafe {
        let found = lookup(k, dev, blockno);
        if !found.is_null() {
            // Another hart loaded the block meanwhile, into a buffer its bucket freed.
            hit(k, found, false);
            if let Some(c) = taken {
                park(k, c);
            }
            Some(found)
        } else if let Some(c) = taken {
            claim_owned(k, c, dev, blockno);
            bump(k, Counter::Steals);
            Some(c)
        } else {
            // Nothing free elsewhere; a buffer of our own may have been released meanwhile.
            let c = lru_free(k);
            if !c.is_null() {
                claim(k, c, dev, blockno);
            }
            (!c.is_null()).then_some(c)
        }
    };
    bk.lock.release();
    EVICT.release();
    got
}

/// `bug=double-acquire`: the student's recycling helper takes the bucket lock itself, not
/// knowing that bget still holds it.
#[inline(never)]
fn recycle_relocking(k: usize, dev: u32, blockno: u32) -> *mut Buf {
    let bk = &BUCKETS[k];
    bk.lock.acquire();
    // Not reached: the acquire above panics with `acquire bcache.bucket<k>`.
    // SAFETY: we hold bucket k's lock.
    let b = unsafe {
        let b = lru_free(k);
        if !b.is_null() {
            claim(k, b, dev, blockno);
        }
        b
    };
    bk.lock.release();
    bk.lock.release();
    b
}

/// `bug=bucket-order`: the student finds the least recently used free buffer anywhere while
/// holding its own bucket's lock, taking every other bucket's lock in turn (and no
/// `bcache.evict`). Two harts missing in two buckets at once each hold one and wait for the
/// other's.
///
/// # Safety
/// The caller holds bucket `k`'s lock; this releases it.
#[inline(never)]
unsafe fn bget_holding_own_bucket(k: usize, dev: u32, blockno: u32) -> *mut Buf {
    loop {
        // SAFETY: we hold bucket k's lock.
        let own = unsafe { lru_free(k) };
        // SAFETY: as above.
        let mut best = (!own.is_null()).then(|| (k, own, unsafe { key(own) }));
        for i in (0..NBUCKET).filter(|&i| i != k) {
            BUCKETS[i].lock.acquire();
            // SAFETY: we hold bucket i's lock.
            unsafe {
                let c = lru_free(i);
                if !c.is_null() && best.is_none_or(|(_, _, kb)| key(c) < kb) {
                    best = Some((i, c, key(c)));
                }
            }
            BUCKETS[i].lock.release();
        }
        let Some((v, c, _)) = best else {
            BUCKETS[k].lock.release();
            panic!("bget: no buffers");
        };
        if v != k {
            BUCKETS[v].lock.acquire();
            // SAFETY: we hold buckets v and k.
            let free = unsafe { (*c).refcnt == 0 && (*c).bucket == v as u32 };
            if !free {
                BUCKETS[v].lock.release();
                continue;
            }
            // SAFETY: as above.
            unsafe { detach(v, c) };
            BUCKETS[v].lock.release();
            // SAFETY: we hold bucket k and own `c`.
            unsafe { claim_owned(k, c, dev, blockno) };
            bump(k, Counter::Steals);
        } else {
            // SAFETY: we hold bucket k; `c` is on it, unheld.
            unsafe { claim(k, c, dev, blockno) };
        }
        BUCKETS[k].lock.release();
        return c;
    }
}

/// The starter's bget: one lock, one list in least-recently-released order. `k` is 0 with
/// `bcache=global`, or [`STARTER`] for the demo's starter cache.
#[inline(never)]
fn bget_global(k: usize, dev: u32, blockno: u32) -> *mut Buf {
    GLOBAL.lock.acquire();
    // SAFETY: we hold the bcache lock.
    unsafe {
        let b = lookup(k, dev, blockno);
        if !b.is_null() {
            hit(k, b, true);
            GLOBAL.lock.release();
            return b;
        }
        bump(k, Counter::Misses);
        // Recycle the least recently used unused buffer: walk back from the tail.
        let head = head(k);
        let mut l = (*head).prev;
        while l != head {
            let b = l as *mut Buf;
            if (*b).refcnt == 0 {
                set_block(b, dev, blockno);
                publish(b);
                GLOBAL.lock.release();
                return b;
            }
            l = (*l).prev;
        }
    }
    GLOBAL.lock.release();
    panic!("bget: no buffers");
}

/// A buffer held by this hart, from [`bread`] to [`brelse`].
pub struct BufRef {
    b: *mut Buf,
}

impl BufRef {
    pub fn blockno(&self) -> u32 {
        // SAFETY: the block number does not change while we hold a reference.
        unsafe { (*self.b).blockno }
    }

    /// The buffer's index (its lock is `buf<index>`).
    pub fn index(&self) -> usize {
        index_of(self.b)
    }

    pub fn data(&self) -> &[u8; BSIZE] {
        // SAFETY: we hold the buffer's lock: the data is ours.
        unsafe { &(*self.b).data }
    }

    pub fn data_mut(&mut self) -> &mut [u8; BSIZE] {
        // SAFETY: as above, and `&mut self` makes this unique.
        unsafe { &mut (*self.b).data }
    }
}

/// A reference that keeps a buffer cached after [`brelse`], from [`bpin`] to [`bunpin`].
pub struct Pin {
    b: *mut Buf,
}

/// The buffer holding block `blockno` of `dev`, locked, with its data read from disk.
pub fn bread(dev: u32, blockno: u32) -> BufRef {
    let b = bget(dev, blockno);
    // SAFETY: bget gave us a reference to the buffer of `blockno`.
    unsafe { lock_and_fill(b, blockno) }
}

/// As [`bread`], through the demo's starter cache (the single `bcache` lock and list, beside
/// the hashed cache). [`starter_init`] must have run. [`brelse`] releases it.
pub fn starter_bread(dev: u32, blockno: u32) -> BufRef {
    let k = if global_mode() { 0 } else { STARTER };
    let b = bget_global(k, dev, blockno);
    // SAFETY: bget_global gave us a reference to the buffer of `blockno`.
    unsafe { lock_and_fill(b, blockno) }
}

/// Locks the buffer and reads its block from disk if it does not hold it yet.
///
/// # Safety
/// The caller holds a reference to `b`, which caches `blockno`.
#[inline(always)]
unsafe fn lock_and_fill(b: *mut Buf, blockno: u32) -> BufRef {
    // SAFETY: the reference keeps `b` this block's buffer; its lock guards `valid` and `data`.
    unsafe {
        (*b).lock.acquire();
        if !(*b).valid.load(Ordering::Relaxed) {
            crate::virtio_disk::read(blockno, &mut (*b).data);
            (*b).valid.store(true, Ordering::Relaxed);
            publish_valid(b, true);
        }
    }
    BufRef { b }
}

/// Writes the buffer's data to disk.
pub fn bwrite(r: &BufRef) {
    // SAFETY: we hold a reference; the lock is the buffer's.
    let b = r.b;
    if !unsafe { (*b).lock.holding() } {
        panic!("bwrite: buf{} is not locked by this hart", index_of(b));
    }
    // SAFETY: we hold the buffer's lock: the data is ours.
    unsafe { crate::virtio_disk::write((*b).blockno, &(*b).data) };
}

/// Unlocks the buffer and drops this hart's reference.
pub fn brelse(r: BufRef) {
    let b = r.b;
    // SAFETY: we hold a reference, so `b` is valid and stays in its bucket.
    unsafe {
        if !(*b).lock.holding() {
            panic!("brelse: buf{} is not locked by this hart", index_of(b));
        }
        (*b).lock.release();
    }
    drop_ref(b, "brelse");
}

/// Keeps the buffer cached until [`bunpin`] (xv6's log pins the blocks of a transaction).
pub fn bpin(r: &BufRef) -> Pin {
    let b = r.b;
    // SAFETY: we hold a reference, so `b` stays on its list; its list's lock guards refcnt.
    unsafe {
        let k = (*b).bucket as usize;
        bucket(k).lock.acquire();
        (*b).refcnt += 1;
        publish(b);
        bucket(k).lock.release();
    }
    Pin { b }
}

pub fn bunpin(p: Pin) {
    drop_ref(p.b, "bunpin");
}

fn drop_ref(b: *mut Buf, who: &str) {
    // SAFETY: the caller held a reference, so `b` is still on its list; we take the list's lock.
    unsafe {
        let k = (*b).bucket as usize;
        bucket(k).lock.acquire();
        if (*b).refcnt == 0 {
            panic!(
                "{who}: refcnt of block {} (buf{}) would go negative",
                (*b).blockno,
                index_of(b)
            );
        }
        (*b).refcnt -= 1;
        if (global_mode() || k == STARTER) && (*b).refcnt == 0 {
            // The starter keeps its list in order of last release, most recent first.
            unlink(b);
            push_front(head(k), b);
        }
        publish(b);
        bucket(k).lock.release();
    }
}

/// Moves one unheld buffer from bucket `from` to bucket `to` (dropping the block it caches).
/// bcachetest uses it to give each hart's bucket a spare buffer and to take it back. Returns
/// whether a buffer moved.
pub fn give(from: usize, to: usize) -> bool {
    if !ready() || global_mode() || from == to || from >= NBUCKET || to >= NBUCKET {
        return false;
    }
    if bugs::active(Bug::OrderInversion) {
        return give_holding_both(from, to);
    }
    EVICT.acquire();
    BUCKETS[from].lock.acquire();
    // SAFETY: we hold bucket `from`'s lock.
    let c = unsafe {
        let c = lru_free(from);
        if !c.is_null() {
            detach(from, c);
        }
        c
    };
    BUCKETS[from].lock.release();
    if !c.is_null() {
        BUCKETS[to].lock.acquire();
        // SAFETY: we hold bucket `to`'s lock and own `c`.
        unsafe { park(to, c) };
        BUCKETS[to].lock.release();
    }
    EVICT.release();
    !c.is_null()
}

/// `bug=order-inversion`: the student moves the buffer holding both bucket locks, in the
/// order the caller names them (and no `bcache.evict`). bcachetest gives (spare bucket ->
/// hart's bucket) before test0 and (hart's bucket -> spare bucket) before test1's second
/// part: the two orders never run at the same time, so it never hangs, but a lock-order
/// checker sees both.
#[inline(never)]
fn give_holding_both(from: usize, to: usize) -> bool {
    BUCKETS[from].lock.acquire();
    BUCKETS[to].lock.acquire();
    // SAFETY: we hold both buckets' locks.
    let c = unsafe {
        let c = lru_free(from);
        if !c.is_null() {
            detach(from, c);
            park(to, c);
        }
        c
    };
    BUCKETS[to].lock.release();
    BUCKETS[from].lock.release();
    !c.is_null()
}
