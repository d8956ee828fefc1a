//! The cache as the debugger sees it: the ABI's buffer table and bucket counters, each written
//! by the owner of what it mirrors, one atomic store at a time. The starter's list and buffers
//! of the demo are not in it (the ABI shows the hashed cache; their locks are in the lock
//! table).

use super::buf::{index_of, Buf};
use super::list::Node;
use super::{global_mode, NBUCKET, NBUF, STARTER};
use crate::abi::{self, OwnedCounter};
use core::sync::atomic::Ordering;

/// Mirrors a buffer's metadata into the ABI.
pub(super) fn publish(b: Node<'_>) {
    let b: *mut Buf = b.buf();
    let i = index_of(b);
    if i >= NBUF {
        return;
    }
    let info = abi::buf(i);
    // SAFETY: `b` is a node: its fields are ours to read; `valid` and `bucket` are atomics.
    let (dev, blockno, refcnt, valid, timestamp, bucket) = unsafe {
        (
            (*b).dev,
            (*b).blockno,
            (*b).refcnt,
            (*b).valid.load(Ordering::Relaxed),
            (*b).timestamp,
            (*b).bucket.load(Ordering::Relaxed),
        )
    };
    info.dev().store(dev, Ordering::Relaxed);
    info.blockno().store(blockno, Ordering::Relaxed);
    info.refcnt().store(refcnt, Ordering::Relaxed);
    info.valid().store(valid as u32, Ordering::Relaxed);
    info.timestamp().store(timestamp, Ordering::Relaxed);
    info.bucket().store(bucket, Ordering::Relaxed);
}

/// Mirrors `valid`; the buffer lock holder's.
pub(super) fn publish_valid(b: *mut Buf, valid: bool) {
    let i = index_of(b);
    if i < NBUF {
        abi::buf(i).valid().store(valid as u32, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy)]
pub(super) enum Counter {
    Hits,
    Misses,
    Steals,
}

/// Adds one to a counter of bucket `k` (the starter's list has none). The caller holds bucket
/// `k`'s lock.
pub(super) fn bump(k: usize, c: Counter) {
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
pub(super) fn add_nbuf(k: usize, d: i32) {
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
