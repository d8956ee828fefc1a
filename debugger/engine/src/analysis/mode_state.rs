//! The records of events with a mode (reader-writer holds, sleeplocks): kept per hart and per
//! analysis by `events`, maintained by `modes`.

use serde::{Deserialize, Serialize};

use crate::model::{HartId, LockId};

/// Reader-writer holds remembered per hart; an older one is forgotten beyond this.
pub(crate) const RW_HOLDS: usize = 8;

/// One reader-writer hold of a hart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RwHeld {
    pub lock: LockId,
    pub write: bool,
    pub pc: u64,
    pub since_ns: u64,
}

/// A reader-writer acquisition that is waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RwSpin {
    pub lock: LockId,
    pub write: bool,
    pub since_ns: u64,
    pub pc: u64,
}

/// A spinlock held while its hart took a sleeplock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepHolding {
    /// The spinlock held.
    pub lock: LockId,
    pub lock_name: String,
    /// Where it was acquired (return address).
    pub held_pc: u64,
    /// The sleeplock, by its inner spinlock.
    pub sleeplock: LockId,
    pub sleeplock_name: String,
    /// The call into the sleeplock's acquire (return address): `acquiresleep`'s caller.
    pub pc: u64,
    /// The first occurrence.
    pub hart: HartId,
    pub time_ns: u64,
    /// Occurrences of this (spinlock, site).
    pub count: u64,
}

/// A read of a reader-writer lock taken by a hart already reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReRead {
    pub lock: LockId,
    pub hart: HartId,
    /// Where the hold it already had was taken, and where the second read was.
    pub first_pc: u64,
    pub again_pc: u64,
    pub time_ns: u64,
    pub count: u64,
    /// A hart that was waiting to write the lock at that moment (as far as the events ingested
    /// by then tell).
    pub writer_waiting: Option<HartId>,
}
