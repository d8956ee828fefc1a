//! The per-hart event rings: their header, the events and their flags, and which events of a
//! ring survive a copy the writer overtook.

use bytemuck::{Pod, Zeroable};

/// Per-hart ring header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RingHeader {
    /// Index of the next event to write; starts at 0 (release ordering after the slot).
    pub write: u64,
    /// The hart (vCPU index) writing this ring.
    pub hart: u32,
    pub entries: u32,
}

/// Event kinds, in lock_stat's meaning.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An acquisition attempt that was abandoned before it succeeded (a trylock that failed).
    /// A normal acquisition's attempt is its `Contended` event, or its `Acquired` event when
    /// the first test-and-set succeeded: not writing a separate attempt saves a third of the
    /// events of an uncontended lock.
    Attempt = 1,
    /// The first test-and-set failed: the hart spins. `owner` holds it (or `NO_HART`). `time_ns`
    /// is when the spin began.
    Contended = 2,
    /// The lock is taken: `value` is the wait since the first attempt, `spins` failed
    /// test-and-sets (reader-writer locks: the times the function went back to waiting).
    Acquired = 3,
    /// The lock was released by this hart; `value` is the hold time.
    Released = 4,
    /// A sleeplock was taken (`lk->locked = 1`) by `thread`; `addr` is the sleeplock, `value`
    /// the wait since `acquiresleep` took its inner spinlock.
    SleepAcquired = 5,
    /// A sleeplock was released by `thread` (often on another hart than it was taken).
    SleepReleased = 6,
    /// A releasing store to a lock word this hart was not seen taking: the lock was taken by a
    /// test-and-set outside the watched acquire functions (a trylock, a raw test-and-set).
    /// Not a release: nothing is paired with it.
    UnseenRelease = 7,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Attempt,
            2 => Self::Contended,
            3 => Self::Acquired,
            4 => Self::Released,
            5 => Self::SleepAcquired,
            6 => Self::SleepReleased,
            7 => Self::UnseenRelease,
            _ => return None,
        })
    }
}

/// Event and watch flag: the acquisition is a trylock (no waiting, no order edge).
pub const FLAG_TRYLOCK: u8 = 1 << 0;
/// A read (shared) hold of a reader-writer lock.
pub const FLAG_READ: u8 = 1 << 1;
/// A write (exclusive) hold of a reader-writer lock.
pub const FLAG_WRITE: u8 = 1 << 2;
/// No call site was seen for this acquisition (an indirect call or an inlined acquire).
pub const FLAG_NO_SITE: u8 = 1 << 3;
/// A sleeplock acquisition that slept (its thread was switched out) before it got the lock.
pub const FLAG_SLEPT: u8 = 1 << 4;
/// A spinlock taken inside a reader-writer lock function (its inner lock): its site is the
/// call into the reader-writer function.
pub const FLAG_RW_INNER: u8 = 1 << 5;
/// A release whose hold time is unknown: the hold was taken past the [`MAX_HELD`] entries a
/// hart lists (a reader holding one rwlock a million times).
pub const FLAG_NO_HOLD: u8 = 1 << 6;

/// One event, 48 bytes. Event `i` of a ring lives in slot `i & (entries - 1)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Event {
    /// Plugin time (stops taken out), ns.
    pub time_ns: u64,
    /// The lock word, aligned down to 4 bytes (a sleeplock's own address for sleep events; a
    /// reader-writer lock's inner spinlock for read and write holds).
    pub addr: u64,
    /// Return address of the call into the lock function (symbolize `site - 1`), or 0.
    pub site: u64,
    /// By kind: `Acquired` the wait since the first attempt, ns; `Released` the hold time, ns;
    /// `SleepAcquired` the wait, ns; `Contended` the harts holding the lock then, one bit per
    /// hart (a reader-writer lock can have several readers).
    pub value: u64,
    /// `Acquired`, `Contended`: failed test-and-sets so far.
    pub spins: u32,
    /// Low 32 bits of this event's index.
    pub seq: u32,
    pub kind: u8,
    pub flags: u8,
    pub hart: u8,
    /// `Contended`: a hart holding the lock at that moment (the writer first), or [`NO_HART`].
    pub owner: u8,
    /// The thread running on the hart: index + 1 into the thread table, 0 when unknown (before
    /// the hart's first context switch, or a kernel without a switch function lockscope knows).
    pub thread: u32,
}

/// The indices of a ring that are intact after copying `[from, before)` while the writer moved
/// on to `after` (the seqlock rule of lockscope-abi's rings): `[max(from, after + 1 - entries),
/// before)`, empty when inverted.
pub fn ring_intact_range(from: u64, before: u64, after: u64, entries: u64) -> (u64, u64) {
    let oldest_safe = (after + 1).saturating_sub(entries);
    let first = from.max(oldest_safe).min(before);
    (first, before)
}
