//! The `bug=` variants that replace a whole function of the cache's protocol, as students
//! wrote them; `crate::bugs` selects them. The one-line variants stay in the code they change:
//! `refcnt-leak` in [`hit`](super::hit), `stale-ticks` in [`touch`](super::touch), `null-next`
//! in the list's `link_front`. (The file is not `bugs.rs`: the debugger's deadlock chain names
//! sites by file name, and that would read as `kernel/src/bugs.rs`.)
//!
//! | `bug=` | here | what it does wrong |
//! | --- | --- | --- |
//! | `double-acquire` | [`recycle_relocking`] | takes the bucket lock bget already holds |
//! | `bucket-order` | [`bget_holding_own_bucket`] | scans every bucket holding its own: deadlocks |
//! | `order-inversion` | [`give_holding_both`] | holds two bucket locks, in either order |

use super::list::Held;
use super::mirror::{bump, Counter};
use super::{
    claim, claim_owned, detach, held, key, lru_free, park, refcnt, Buf, Counted, BUCKETS, NBUCKET,
};
use core::sync::atomic::Ordering;

/// `bug=double-acquire`: the student's recycling helper takes the bucket lock itself, not
/// knowing that bget still holds it.
#[inline(never)]
pub(super) fn recycle_relocking(k: usize, dev: u32, blockno: u32) -> Counted {
    let bk = &BUCKETS[k];
    bk.lock.acquire();
    // Not reached: the acquire above panics with `acquire bcache.bucket<k>`.
    // SAFETY: we hold bucket k's lock until the releases below.
    let l = unsafe { held(k) };
    let b = lru_free(&l);
    if let Some(b) = b {
        claim(&l, b, dev, blockno);
    }
    bk.lock.release();
    bk.lock.release();
    match b {
        Some(b) => Counted(b.buf()),
        None => panic!("bget: no buffers"),
    }
}

/// `bug=bucket-order`: the student finds the least recently used free buffer anywhere while
/// holding its own bucket's lock (`own`, which this releases), taking every other bucket's
/// lock in turn (and no `bcache.evict`). Two harts missing in two buckets at once each hold one
/// and wait for the other's.
#[inline(never)]
pub(super) fn bget_holding_own_bucket(own: Held<'static>, dev: u32, blockno: u32) -> Counted {
    let k = own.k();
    loop {
        let mut best = lru_free(&own).map(|c| (k, c.buf(), key(c)));
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
            BUCKETS[k].lock.release();
            panic!("bget: no buffers");
        };
        let c = if v != k {
            BUCKETS[v].lock.acquire();
            // SAFETY: we hold bucket v's lock until the releases below.
            let l = unsafe { held(v) };
            // With no bcache.evict, another hart may have moved `c` since the scan.
            let Some(n) = on(&l, c).filter(|&n| refcnt(n) == 0) else {
                BUCKETS[v].lock.release();
                continue;
            };
            let n = detach(&l, n);
            BUCKETS[v].lock.release();
            let n = claim_owned(&own, n, dev, blockno);
            bump(k, Counter::Steals);
            n.buf()
        } else {
            // SAFETY: `c` is on bucket k: found there, under the lock we have held since.
            let n = unsafe { own.assume(c) };
            claim(&own, n, dev, blockno);
            c
        };
        BUCKETS[k].lock.release();
        return Counted(c);
    }
}

/// `c`, a buffer of a list scanned earlier, if it is still on the held list.
fn on<'h>(l: &'h Held<'_>, c: *mut Buf) -> Option<super::list::Node<'h>> {
    // SAFETY: a buffer of BUFS (it was on a list); `bucket` is an atomic.
    let k = unsafe { (*c).bucket.load(Ordering::Relaxed) };
    // SAFETY: the list operations write `bucket` under the lock of the list the buffer joins
    // or leaves; we hold this one, so if it names this list, the buffer is on it.
    (k == l.k() as u32).then(|| unsafe { l.assume(c) })
}

/// `bug=order-inversion`: the student moves the buffer holding both bucket locks, in the
/// order the caller names them (and no `bcache.evict`). bcachetest gives (spare bucket ->
/// hart's bucket) before test0 and (hart's bucket -> spare bucket) before test1's second
/// part: the two orders never run at the same time, so it never hangs, but a lock-order
/// checker sees both.
#[inline(never)]
pub(super) fn give_holding_both(from: usize, to: usize) -> bool {
    BUCKETS[from].lock.acquire();
    BUCKETS[to].lock.acquire();
    // SAFETY: we hold both buckets' locks until the releases below.
    let (src, dst) = unsafe { (held(from), held(to)) };
    let c = lru_free(&src);
    if let Some(c) = c {
        park(&dst, detach(&src, c));
    }
    BUCKETS[to].lock.release();
    BUCKETS[from].lock.release();
    c.is_some()
}
