//! What each hart publishes for lockscope to read without a stop: its held locks and its state,
//! inside a seqlock.

use bytemuck::{Pod, Zeroable};

use crate::MAX_HELD;

/// Low bits of [`HeldEntry::addr`] and [`HartState::spin_addr`] (lock words are 4-byte
/// aligned): a read hold of a reader-writer lock.
pub const HELD_TAG_READ: u64 = 1;
/// A write hold of a reader-writer lock.
pub const HELD_TAG_WRITE: u64 = 2;
/// Both tag bits.
pub const HELD_TAG_MASK: u64 = 3;

/// One lock a hart holds: a spinlock, or a read or write hold of a reader-writer lock (the
/// [`HELD_TAG_READ`]/[`HELD_TAG_WRITE`] bit set in `addr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HeldEntry {
    pub addr: u64,
    pub site: u64,
    pub since_ns: u64,
}

/// What one hart is doing, published by the plugin for lockscope to read without a stop.
/// Written only by the vCPU's thread, inside a seqlock: `gen` is odd while it changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct HartState {
    /// Seqlock generation: odd while the fields below change.
    pub gen: u64,
    /// The lock word this hart spins on, or 0 (tagged with [`HELD_TAG_READ`] or
    /// [`HELD_TAG_WRITE`] when it waits for a read or write hold of a reader-writer lock).
    pub spin_addr: u64,
    /// When the spin began (the first, failed attempt).
    pub spin_since_ns: u64,
    /// Call site of the acquisition that spins.
    pub spin_site: u64,
    /// Failed test-and-sets of the current spin (updated outside the seqlock, at every attempt).
    pub spin_count: u64,
    /// Acquisitions seen (all locks).
    pub acquires: u64,
    /// Releases to lock words this hart was not seen taking ([`EventKind::UnseenRelease`]).
    pub unseen_releases: u64,
    /// Acquisitions without a call site ([`FLAG_NO_SITE`]).
    pub no_site: u64,
    /// Locks held, including those past [`MAX_HELD`].
    pub depth: u32,
    /// Held entries dropped because the list was full.
    pub held_overflow: u32,
    /// The thread running on this hart ([`Event::thread`]).
    pub thread: u32,
    /// Context switches seen on this hart.
    pub switches: u32,
    /// Outermost first; the first `min(depth, MAX_HELD)` are valid.
    pub held: [HeldEntry; MAX_HELD],
}

/// Byte offset of `gen` in [`HartState`].
pub const HART_GEN_OFFSET: usize = core::mem::offset_of!(HartState, gen);
