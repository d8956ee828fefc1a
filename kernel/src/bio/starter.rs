//! The lab's starter cache: one list under the single lock `bcache`, in order of last release
//! (xv6's bio.c). It is the whole cache with `bcache=global`; with `bcache=hashed`,
//! `workload=demo` runs it beside the hashed cache: [`starter_bread`] goes through the `bcache`
//! lock and list over [`NSTARTER`] buffers of its own, `sbuf0`..`sbuf29`, which the ABI's
//! buffer table does not list. Its `brelse` is the cache's (`drop_ref` keeps the order).

use super::list::Loose;
use super::mirror::{bump, publish, Counter};
use super::{
    buf, global_mode, held, hit, lock_and_fill, lookup, ready, refcnt, set_block, Bucket, BufRef,
    Counted, NBUCKET, NBUF,
};
use core::sync::atomic::{AtomicBool, Ordering};

/// Buffers of the demo's starter cache (after the [`NBUF`] of the real one), as many as the
/// lab's starter has; a hart holds at most one at a time.
pub const NSTARTER: usize = NBUF;
/// The list number of the demo's starter cache (its list is the `bcache` list).
pub(super) const STARTER: usize = NBUCKET;

/// The starter's single list and lock (with `bcache=hashed`, the demo's starter cache).
pub(super) static GLOBAL: Bucket = Bucket::new("bcache", "bcache");

static STARTER_READY: AtomicBool = AtomicBool::new(false);

/// The demo's starter cache beside the hashed one: the single `bcache` lock over a list of the
/// [`NSTARTER`] `sbuf<i>` buffers, registering its locks. Hart 0, before other harts use it;
/// nothing to do with `bcache=global` (the cache is the starter already). Idempotent.
pub fn starter_init() {
    if !ready() || global_mode() || STARTER_READY.load(Ordering::Acquire) {
        return;
    }
    GLOBAL.lock.id();
    // SAFETY: nobody uses the starter list before STARTER_READY.
    let l = unsafe { held(STARTER) };
    l.init();
    for i in NBUF..NBUF + NSTARTER {
        // SAFETY: as above: the buffer is on no list and nobody uses it yet.
        let b = unsafe { Loose::new(buf(i)) };
        l.push_back(b);
        super::buf_lock(i).raw().id();
    }
    STARTER_READY.store(true, Ordering::Release);
}

/// As [`bread`](super::bread), through the demo's starter cache (the single `bcache` lock and
/// list, beside the hashed cache). [`starter_init`] must have run.
/// [`brelse`](super::brelse) releases it.
pub fn starter_bread(dev: u32, blockno: u32) -> BufRef {
    let k = if global_mode() { 0 } else { STARTER };
    let b = bget_global(k, dev, blockno);
    lock_and_fill(b, blockno)
}

/// The starter's bget: one lock, one list in least-recently-released order. `k` is 0 with
/// `bcache=global`, or [`STARTER`] for the demo's starter cache.
#[inline(never)]
pub(super) fn bget_global(k: usize, dev: u32, blockno: u32) -> Counted {
    GLOBAL.lock.acquire();
    // SAFETY: we hold the bcache lock until the releases below.
    let l = unsafe { held(k) };
    if let Some(b) = lookup(&l, dev, blockno) {
        hit(&l, b, true);
        GLOBAL.lock.release();
        return Counted(b.buf());
    }
    bump(k, Counter::Misses);
    // Recycle the least recently used unused buffer: walk back from the tail.
    // SAFETY: nothing changes the list during the walk.
    if let Some(b) = unsafe { l.iter_back() }.find(|&b| refcnt(b) == 0) {
        set_block(b, dev, blockno);
        publish(b);
        GLOBAL.lock.release();
        return Counted(b.buf());
    }
    GLOBAL.lock.release();
    panic!("bget: no buffers");
}
