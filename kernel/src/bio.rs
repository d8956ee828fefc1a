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
//! This file is the cache and its protocol. Beside it, in `bio/`:
//! - `buf.rs`: a buffer, the array of all of them, and the accessors of their fields;
//! - `list.rs`: the lists' raw-pointer operations, behind a hold of the list's lock;
//! - `buggy.rs`: the `bug=` variants that replace a whole function of the protocol (the
//!   one-line ones are marked with `bugs::active` where they are: [`hit`], [`touch`], the
//!   list's `link_front`);
//! - `starter.rs`: the single-lock starter, for `bcache=global` and for the demo, which runs it
//!   beside the hashed cache over [`NSTARTER`] buffers of its own;
//! - `mirror.rs`: the cache's state in the ABI, for the debugger.
//!
//! A buffer's fields up to `last_use` belong to the holder of its list's lock. Code that
//! touches them has a [`Held`] of the list, made (`unsafe`: the promise that the lock is held)
//! right after acquiring the lock, and the buffer as a [`Node`] of it. With those, the list
//! operations and the field accessors are safe to call, and so the protocol functions are safe
//! code apart from that promise and a few documented [`Held::assume`]s.

mod buf;
mod buggy;
mod list;
mod mirror;
mod starter;

pub use mirror::{lookups, steals};
pub use starter::{starter_bread, starter_init, NSTARTER};

use crate::abi;
use crate::bugs;
use crate::hart;
use crate::spinlock::RawSpinLock;
use buf::{buf, buf_lock, clear_block, index_of, key, refcnt, set_refcnt, Buf, Counted};
use core::sync::atomic::{AtomicBool, Ordering};
use list::{Held, List, Loose, Node};
use lockscope_abi::disk::BSIZE;
use lockscope_abi::{BcacheMode, Bug, NONE};
use mirror::{add_nbuf, bump, publish, publish_valid, Counter};
use starter::{GLOBAL, STARTER};

/// Buffers, as in xv6 (`MAXOPBLOCKS * 3`).
pub const NBUF: usize = 30;
/// Hash buckets: a prime, so block numbers in arithmetic progressions spread out.
pub const NBUCKET: usize = 13;
/// `blockno` of a buffer that holds no block.
pub const NOBLOCK: u32 = u32::MAX;

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

/// A list and the lock that owns it and its buffers' fields.
struct Bucket {
    lock: RawSpinLock,
    list: List,
}

impl Bucket {
    const fn new(name: &'static str, class: &'static str) -> Self {
        Self {
            lock: RawSpinLock::new(name, class),
            list: List::new(),
        }
    }
}

static BUCKETS: [Bucket; NBUCKET] = {
    let mut a = [const { Bucket::new("", "bcache.bucket") }; NBUCKET];
    let mut i = 0;
    while i < NBUCKET {
        a[i] = Bucket::new(BUCKET_NAMES[i], "bcache.bucket");
        i += 1;
    }
    a
};

/// Serializes taking a buffer from another bucket.
static EVICT: RawSpinLock = RawSpinLock::new("bcache.evict", "bcache.evict");

static READY: AtomicBool = AtomicBool::new(false);
static GLOBAL_MODE: AtomicBool = AtomicBool::new(false);

pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

fn global_mode() -> bool {
    GLOBAL_MODE.load(Ordering::Relaxed)
}

/// The bucket (or the global list) that caches `blockno`.
fn home(blockno: u32) -> usize {
    if global_mode() {
        0
    } else {
        blockno as usize % NBUCKET
    }
}

/// List `k`: bucket `k`, or the `bcache` list (`bcache=global`, or the demo's starter).
fn bucket(k: usize) -> &'static Bucket {
    if global_mode() || k == STARTER {
        &GLOBAL
    } else {
        &BUCKETS[k]
    }
}

/// This hart's hold on list `k`.
///
/// # Safety
/// As [`List::held`]: the calling hart holds list `k`'s lock (or runs alone), from now until
/// after the last use of the result and of the nodes it gives.
unsafe fn held(k: usize) -> Held<'static> {
    // SAFETY: the caller's contract.
    unsafe { bucket(k).list.held(k) }
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
        // SAFETY: no other hart runs yet.
        unsafe { held(k) }.init();
        abi::bucket(k)
            .lock()
            .store(bucket(k).lock.id(), Ordering::Relaxed);
    }
    for i in 0..NBUF {
        // Round-robin, so every bucket starts with two or three buffers.
        let k = i % nbucket;
        // SAFETY: no other hart runs yet: the list is ours, and so is the buffer, on no list.
        let (l, b) = unsafe { (held(k), Loose::new(buf(i))) };
        let b = l.push_back(b);
        abi::buf(i)
            .lock()
            .store(buf_lock(i).raw().id(), Ordering::Relaxed);
        publish(b);
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

// ---- the fields a list's lock owns, through a hold of the list ----

/// The buffer caching (dev, blockno) in the held list, if any.
fn lookup<'h>(l: &'h Held<'_>, dev: u32, blockno: u32) -> Option<Node<'h>> {
    // SAFETY: nothing changes the list during the walk.
    for n in unsafe { l.iter() } {
        let b = n.buf();
        // SAFETY: `n` is on the list we hold, so its fields are ours to read.
        if unsafe { (*b).dev == dev && (*b).blockno == blockno } {
            let k = l.k();
            if cfg!(feature = "checks") && k != STARTER && home(blockno) != k {
                panic!(
                    "bcache: buf{} caches block {} in bucket {k}, but the block hashes to bucket {}",
                    index_of(b),
                    blockno,
                    home(blockno)
                );
            }
            return Some(n);
        }
    }
    None
}

/// The least recently used buffer of the held list that nobody holds.
fn lru_free<'h>(l: &'h Held<'_>) -> Option<Node<'h>> {
    let mut best: Option<Node<'h>> = None;
    // SAFETY: nothing changes the list during the walk.
    for n in unsafe { l.iter() } {
        // SAFETY: `n` is on the list we hold: its fields are ours to read.
        if unsafe { (*n.buf()).refcnt } == 0 && best.is_none_or(|m| key(n) < key(m)) {
            best = Some(n);
        }
    }
    best
}

/// Records a use of `b` for the LRU.
fn touch(b: Node<'_>) {
    if bugs::active(Bug::StaleTicks) {
        // The student's bget never updates the timestamp.
        return;
    }
    let b = b.buf();
    // SAFETY: `b` is a node: its list-owned fields are ours.
    unsafe {
        (*b).timestamp = abi::ticks().load(Ordering::Relaxed);
        (*b).last_use = hart::now();
    }
}

/// Makes the unheld `b` cache (dev, blockno), with one reference.
fn set_block(b: Node<'_>, dev: u32, blockno: u32) {
    let p = b.buf();
    // SAFETY: `b` is a node: its list-owned fields are ours; `valid` is the buffer lock
    // holder's, but nobody holds it (refcnt 0), and it is an atomic.
    unsafe {
        (*p).dev = dev;
        (*p).blockno = blockno;
        (*p).valid.store(false, Ordering::Relaxed);
        (*p).refcnt = 1;
    }
    touch(b);
}

/// A lookup found `b` in the held list: take a reference.
fn hit(l: &Held<'_>, b: Node<'_>, count: bool) {
    set_refcnt(b, refcnt(b) + 1);
    if bugs::active(Bug::RefcntLeak) {
        // The student's hit path takes its reference twice (once on finding the buffer, once
        // more in the tail it shares with the miss path); brelse drops one.
        set_refcnt(b, refcnt(b) + 1);
    }
    touch(b);
    publish(b);
    if count {
        bump(l.k(), Counter::Hits);
    }
}

/// Makes the unheld buffer `b` of the held list cache (dev, blockno), with one reference, at
/// the front of the list (a lookup right after a miss finds it first).
fn claim(l: &Held<'_>, b: Node<'_>, dev: u32, blockno: u32) {
    check_single_copy(l, b.buf(), dev, blockno);
    set_block(b, dev, blockno);
    let b = l.to_front(b);
    publish(b);
}

/// As [`claim`], for a buffer taken from another bucket.
fn claim_owned<'h>(l: &'h Held<'_>, b: Loose, dev: u32, blockno: u32) -> Node<'h> {
    check_single_copy(l, b.node().buf(), dev, blockno);
    set_block(b.node(), dev, blockno);
    let b = l.push_front(b);
    publish(b);
    add_nbuf(l.k(), 1);
    b
}

/// The invariant check: a block is cached in at most one buffer.
fn check_single_copy(l: &Held<'_>, b: *mut Buf, dev: u32, blockno: u32) {
    if !cfg!(feature = "checks") {
        return;
    }
    if let Some(other) = lookup(l, dev, blockno).filter(|o| o.buf() != b) {
        panic!(
            "bcache: block {blockno} would be cached twice (buf{} and buf{})",
            index_of(other.buf()),
            index_of(b)
        );
    }
}

/// Puts the owned `b` on the held list, holding no block and unheld.
fn park(l: &Held<'_>, b: Loose) {
    clear_block(b.node());
    set_refcnt(b.node(), 0);
    let b = l.push_front(b);
    publish(b);
    add_nbuf(l.k(), 1);
}

/// Takes the unheld `b` off the held list: the caller owns it afterwards.
fn detach(l: &Held<'_>, b: Node<'_>) -> Loose {
    let b = l.unlink(b);
    clear_block(b.node());
    publish(b.node());
    add_nbuf(l.k(), -1);
    b
}

// ---- the protocol ----

/// Finds or makes the buffer for (dev, blockno) and takes a reference to it.
#[inline(never)]
fn bget(dev: u32, blockno: u32) -> Counted {
    if global_mode() {
        return starter::bget_global(0, dev, blockno);
    }
    let k = home(blockno);
    let bk = &BUCKETS[k];
    bk.lock.acquire();
    // SAFETY: we hold bucket k's lock until the releases below.
    let l = unsafe { held(k) };
    if let Some(b) = lookup(&l, dev, blockno) {
        hit(&l, b, true);
        bk.lock.release();
        return Counted(b.buf());
    }
    bump(k, Counter::Misses);
    // black_box: not tail calls, so backtraces and held-lock pcs show bget.
    if bugs::active(Bug::DoubleAcquire) {
        return core::hint::black_box(buggy::recycle_relocking(k, dev, blockno));
    }
    if bugs::active(Bug::BucketOrder) {
        return core::hint::black_box(buggy::bget_holding_own_bucket(l, dev, blockno));
    }
    // Checking for the block and claiming a buffer happen under the one lock, so two harts
    // missing the same block cannot both load it.
    if let Some(b) = lru_free(&l) {
        claim(&l, b, dev, blockno);
        bk.lock.release();
        return Counted(b.buf());
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
fn steal(k: usize, dev: u32, blockno: u32) -> Option<Counted> {
    EVICT.acquire();
    let taken = loop {
        let mut best: Option<(usize, *mut Buf, (u64, u64))> = None;
        for i in (0..NBUCKET).filter(|&i| i != k) {
            BUCKETS[i].lock.acquire();
            // SAFETY: we hold bucket i's lock until the release below.
            let l = unsafe { held(i) };
            if let Some(c) = lru_free(&l) {
                if best.is_none_or(|(_, _, kb)| key(c) < kb) {
                    best = Some((i, c.buf(), key(c)));
                }
            }
            BUCKETS[i].lock.release();
        }
        let Some((v, c, _)) = best else {
            break None;
        };
        BUCKETS[v].lock.acquire();
        // SAFETY: we hold bucket v's lock until the release below.
        let l = unsafe { held(v) };
        // Only evict holders move buffers between buckets, so `c` is still on bucket v; a hit
        // may have taken it since the scan, in which case look again.
        // SAFETY: `c` is on bucket v, as just said.
        let c = unsafe { l.assume(c) };
        let taken = (refcnt(c) == 0).then(|| detach(&l, c));
        BUCKETS[v].lock.release();
        if taken.is_some() {
            break taken;
        }
    };
    let bk = &BUCKETS[k];
    bk.lock.acquire();
    // SAFETY: we hold bucket k's lock until the release below.
    let l = unsafe { held(k) };
    let got = if let Some(found) = lookup(&l, dev, blockno) {
        // Another hart loaded the block meanwhile, into a buffer its bucket freed.
        hit(&l, found, false);
        if let Some(c) = taken {
            park(&l, c);
        }
        Some(Counted(found.buf()))
    } else if let Some(c) = taken {
        let c = claim_owned(&l, c, dev, blockno);
        bump(k, Counter::Steals);
        Some(Counted(c.buf()))
    } else {
        // Nothing free elsewhere; a buffer of our own may have been released meanwhile.
        lru_free(&l).map(|c| {
            claim(&l, c, dev, blockno);
            Counted(c.buf())
        })
    };
    bk.lock.release();
    EVICT.release();
    got
}

/// A buffer held by this hart, from [`bread`] to [`brelse`].
pub struct BufRef {
    b: Counted,
}

impl BufRef {
    pub fn blockno(&self) -> u32 {
        self.b.blockno()
    }

    /// The buffer's index (its lock is `buf<index>`).
    pub fn index(&self) -> usize {
        index_of(self.b.0)
    }

    pub fn data(&self) -> &[u8; BSIZE] {
        // SAFETY: we hold the buffer's lock: the data is ours.
        unsafe { &(*self.b.0).data }
    }

    pub fn data_mut(&mut self) -> &mut [u8; BSIZE] {
        // SAFETY: as above, and `&mut self` makes this unique.
        unsafe { &mut (*self.b.0).data }
    }
}

/// A reference that keeps a buffer cached after [`brelse`], from [`bpin`] to [`bunpin`].
pub struct Pin {
    b: Counted,
}

/// The buffer holding block `blockno` of `dev`, locked, with its data read from disk.
pub fn bread(dev: u32, blockno: u32) -> BufRef {
    let b = bget(dev, blockno);
    lock_and_fill(b, blockno)
}

/// Locks the buffer and reads its block from disk if it does not hold it yet. The caller's
/// reference keeps `b` the buffer of `blockno`.
#[inline(always)]
fn lock_and_fill(b: Counted, blockno: u32) -> BufRef {
    b.lock().acquire();
    // From here `valid` and `data` are ours.
    let mut r = BufRef { b };
    if !r.b.valid().load(Ordering::Relaxed) {
        crate::virtio_disk::read(blockno, r.data_mut());
        r.b.valid().store(true, Ordering::Relaxed);
        publish_valid(r.b.0, true);
    }
    r
}

/// Writes the buffer's data to disk.
pub fn bwrite(r: &BufRef) {
    if !r.b.lock().holding() {
        panic!("bwrite: buf{} is not locked by this hart", r.index());
    }
    crate::virtio_disk::write(r.blockno(), r.data());
}

/// Unlocks the buffer and drops this hart's reference.
pub fn brelse(r: BufRef) {
    let lock = r.b.lock();
    if !lock.holding() {
        panic!("brelse: buf{} is not locked by this hart", r.index());
    }
    lock.release();
    drop_ref(r.b, "brelse");
}

/// Keeps the buffer cached until [`bunpin`] (xv6's log pins the blocks of a transaction).
pub fn bpin(r: &BufRef) -> Pin {
    let k = r.b.list();
    bucket(k).lock.acquire();
    // SAFETY: we hold list k's lock until the release below.
    let l = unsafe { held(k) };
    // SAFETY: our reference keeps the buffer on its list, k.
    let b = unsafe { l.assume(r.b.0) };
    set_refcnt(b, refcnt(b) + 1);
    publish(b);
    bucket(k).lock.release();
    Pin {
        b: Counted(b.buf()),
    }
}

pub fn bunpin(p: Pin) {
    drop_ref(p.b, "bunpin");
}

fn drop_ref(r: Counted, who: &str) {
    let k = r.list();
    bucket(k).lock.acquire();
    // SAFETY: we hold list k's lock until the release below.
    let l = unsafe { held(k) };
    // SAFETY: our reference keeps the buffer on its list, k.
    let b = unsafe { l.assume(r.0) };
    if refcnt(b) == 0 {
        panic!(
            "{who}: refcnt of block {} (buf{}) would go negative",
            r.blockno(),
            index_of(r.0)
        );
    }
    set_refcnt(b, refcnt(b) - 1);
    let b = if (global_mode() || k == STARTER) && refcnt(b) == 0 {
        // The starter keeps its list in order of last release, most recent first.
        l.to_front(b)
    } else {
        b
    };
    publish(b);
    bucket(k).lock.release();
}

/// Moves one unheld buffer from bucket `from` to bucket `to` (dropping the block it caches).
/// bcachetest uses it to give each hart's bucket a spare buffer and to take it back. Returns
/// whether a buffer moved.
pub fn give(from: usize, to: usize) -> bool {
    if !ready() || global_mode() || from == to || from >= NBUCKET || to >= NBUCKET {
        return false;
    }
    if bugs::active(Bug::OrderInversion) {
        return buggy::give_holding_both(from, to);
    }
    EVICT.acquire();
    BUCKETS[from].lock.acquire();
    // SAFETY: we hold bucket `from`'s lock until the release below.
    let l = unsafe { held(from) };
    let c = lru_free(&l).map(|c| detach(&l, c));
    BUCKETS[from].lock.release();
    let moved = c.is_some();
    if let Some(c) = c {
        BUCKETS[to].lock.acquire();
        // SAFETY: we hold bucket `to`'s lock until the release below.
        park(&unsafe { held(to) }, c);
        BUCKETS[to].lock.release();
    }
    EVICT.release();
    moved
}
