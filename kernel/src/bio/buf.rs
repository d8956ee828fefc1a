//! A buffer: its fields, the static array of all of them (the cache's and the demo starter's),
//! and the few functions that read and write the fields a list's lock owns, given the buffer as
//! a [`Node`] (this hart holds its list, or owns it) or as a [`Counted`] reference.

use super::list::{Link, Node};
use super::{NBUF, NOBLOCK, NSTARTER};
use crate::spinlock::SleepLock;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use lockscope_abi::disk::BSIZE;
use lockscope_abi::NONE;

const BUF_NAMES: [&str; NBUF + NSTARTER] = [
    "buf0", "buf1", "buf2", "buf3", "buf4", "buf5", "buf6", "buf7", "buf8", "buf9", "buf10",
    "buf11", "buf12", "buf13", "buf14", "buf15", "buf16", "buf17", "buf18", "buf19", "buf20",
    "buf21", "buf22", "buf23", "buf24", "buf25", "buf26", "buf27", "buf28", "buf29", "sbuf0",
    "sbuf1", "sbuf2", "sbuf3", "sbuf4", "sbuf5", "sbuf6", "sbuf7", "sbuf8", "sbuf9", "sbuf10",
    "sbuf11", "sbuf12", "sbuf13", "sbuf14", "sbuf15", "sbuf16", "sbuf17", "sbuf18", "sbuf19",
    "sbuf20", "sbuf21", "sbuf22", "sbuf23", "sbuf24", "sbuf25", "sbuf26", "sbuf27", "sbuf28",
    "sbuf29",
];

/// One buffer. The fields up to `last_use` belong to the holder of its list's lock (a
/// bucket's, or `bcache`); `valid` and `data` to the holder of `lock`.
#[repr(C)]
pub(super) struct Buf {
    /// First, so a buffer's link pointer is its buffer pointer (`list.rs`).
    pub(super) link: Link,
    pub(super) dev: u32,
    pub(super) blockno: u32,
    pub(super) refcnt: u32,
    /// The list that holds it, or NONE while it moves between lists; kept by `list.rs`. An
    /// atomic, so that a hart may read it without the lock (its value says whose lock it is).
    pub(super) bucket: AtomicU32,
    /// `ticks` at last use (the lab's LRU key; what the ABI shows).
    pub(super) timestamp: u64,
    /// The `time` CSR at last use: a tick is 10 ms, and thousands of lookups share one, so
    /// this orders uses within a tick.
    pub(super) last_use: u64,
    pub(super) valid: AtomicBool,
    pub(super) lock: SleepLock,
    pub(super) data: [u8; BSIZE],
}

impl Buf {
    const fn new(name: &'static str, class: &'static str) -> Self {
        Self {
            link: Link::new(),
            dev: 0,
            blockno: NOBLOCK,
            refcnt: 0,
            bucket: AtomicU32::new(NONE),
            timestamp: 0,
            last_use: 0,
            valid: AtomicBool::new(false),
            lock: SleepLock::new(name, class),
            data: [0; BSIZE],
        }
    }
}

struct Bufs(UnsafeCell<[Buf; NBUF + NSTARTER]>);

// SAFETY: every field is accessed under the lock that owns it (see `Buf`), or is an atomic.
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

pub(super) fn buf(i: usize) -> *mut Buf {
    assert!(i < NBUF + NSTARTER);
    BUFS.0.get().cast::<Buf>().wrapping_add(i)
}

pub(super) fn index_of(b: *mut Buf) -> usize {
    (b as usize - BUFS.0.get() as usize) / core::mem::size_of::<Buf>()
}

/// Buffer `i`'s own lock.
pub(super) fn buf_lock(i: usize) -> &'static SleepLock {
    // SAFETY: `buf` checks that `i` is a buffer of BUFS, a static; a lock is shared by design.
    unsafe { &(*buf(i)).lock }
}

/// The LRU key: when the buffer was last used.
pub(super) fn key(b: Node<'_>) -> (u64, u64) {
    let b = b.buf();
    // SAFETY: `b` is a node (on a list we hold, or loose and ours): its list-owned fields are
    // ours.
    unsafe { ((*b).timestamp, (*b).last_use) }
}

pub(super) fn refcnt(b: Node<'_>) -> u32 {
    // SAFETY: as in `key`.
    unsafe { (*b.buf()).refcnt }
}

pub(super) fn set_refcnt(b: Node<'_>, n: u32) {
    // SAFETY: as in `key`.
    unsafe { (*b.buf()).refcnt = n };
}

/// Makes the unheld `b` hold no block.
pub(super) fn clear_block(b: Node<'_>) {
    let p = b.buf();
    // SAFETY: as in `key`; `valid` is the buffer lock holder's, but nobody holds it (refcnt 0),
    // and it is an atomic.
    unsafe {
        (*p).blockno = NOBLOCK;
        (*p).valid.store(false, Ordering::Relaxed);
    }
}

/// A buffer this hart holds a reference to (one of its `refcnt`): it stays on its list, with
/// its block, until the reference is dropped. Made only where the reference is taken.
pub(super) struct Counted(pub(super) *mut Buf);

impl Counted {
    /// The number of the list it is on.
    pub(super) fn list(&self) -> usize {
        // SAFETY: a buffer of BUFS (made from a node), and `bucket` is an atomic.
        unsafe { (*self.0).bucket.load(Ordering::Relaxed) as usize }
    }

    /// Its own lock.
    pub(super) fn lock(&self) -> &'static SleepLock {
        // SAFETY: a buffer of BUFS, a static; a lock is shared by design.
        unsafe { &(*self.0).lock }
    }

    /// Whether `data` holds the block; the buffer lock holder's.
    pub(super) fn valid(&self) -> &'static AtomicBool {
        // SAFETY: a buffer of BUFS, a static; `valid` is an atomic.
        unsafe { &(*self.0).valid }
    }

    pub(super) fn blockno(&self) -> u32 {
        // SAFETY: a buffer of BUFS; its block changes only while `refcnt` is 0, and our
        // reference keeps it above.
        unsafe { (*self.0).blockno }
    }
}
