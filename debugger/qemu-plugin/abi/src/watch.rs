//! The watch table: which guest instructions the plugin instruments, and what each does.

use bytemuck::{Pod, Zeroable};

/// What a watch entry makes the plugin do when its instruction runs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    /// A call into an acquire function: push `aux` (the return address) as the call site.
    Call = 1,
    /// A test-and-set on a lock word (amoswap/amoor/sc) in an acquire function: one attempt.
    /// `aux` is the instruction reached only after it succeeded, or 0 when unknown.
    Tas = 2,
    /// The instruction reached only after a successful test-and-set: the lock is taken.
    Acquired = 3,
    /// A return of an acquire function: the last attempt succeeded (used when a `Tas` has no
    /// known success instruction).
    Return = 4,
    /// The releasing store or AMO on the lock word in a release function.
    Release = 5,
    /// A store in a sleeplock's acquire function (`lk->locked = 1` is the one whose address
    /// matches the held inner spinlock).
    SleepAcquireStore = 6,
    /// A store in a sleeplock's release function (`lk->locked = 0`).
    SleepReleaseStore = 7,
    /// A call into a sleeplock acquire function: remember the call site for the sleeplock.
    SleepCall = 8,
    /// A call into a reader-writer lock function (`read_acquire`, `write_release`, ...): `aux`
    /// is the return address, `flags` says read or write and [`WATCH_RELEASE_SIDE`]. The rw
    /// lock is the first spinlock the function then takes (xv6's `rw->lk`, its first field).
    RwCall = 9,
    /// A return of a reader-writer lock function whose hold begins or ends at its return
    /// ([`WATCH_AT_RETURN`]).
    RwReturn = 10,
    /// The store of the outgoing thread's context in the context switch (xv6 `swtch`:
    /// `sd ra, 0(a0)`): its address names the thread that stops running on this hart.
    SwitchOut = 11,
    /// The load of the incoming thread's context at the same offset (`ld ra, 0(a1)`): the
    /// thread that runs on this hart from now on.
    SwitchIn = 12,
    /// A call of a release function inside a reader-writer acquire function that is followed by
    /// more waiting (not by the function's return): the function waits for the rw lock.
    RwWait = 13,
}

/// `Watch::flags` of `RwCall`/`RwReturn`: a release function (`read_release`, `write_release`).
pub const WATCH_RELEASE_SIDE: u32 = 1 << 8;
/// `Watch::flags` of an `RwCall`: the hold begins (or ends) when the function returns, not at
/// the release of its inner spinlock (the function has no inner release that is followed by its
/// return); its returns are `RwReturn` watches.
pub const WATCH_AT_RETURN: u32 = 1 << 10;

impl WatchKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Call,
            2 => Self::Tas,
            3 => Self::Acquired,
            4 => Self::Return,
            5 => Self::Release,
            6 => Self::SleepAcquireStore,
            7 => Self::SleepReleaseStore,
            8 => Self::SleepCall,
            9 => Self::RwCall,
            10 => Self::RwReturn,
            11 => Self::SwitchOut,
            12 => Self::SwitchIn,
            13 => Self::RwWait,
            _ => return None,
        })
    }
}

/// One instruction to instrument. The table is sorted by `pc`; one pc may have several entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Watch {
    /// Guest virtual address of the instruction.
    pub pc: u64,
    /// Kind-specific: see [`WatchKind`] (a call's return address; `SwitchOut`/`SwitchIn`:
    /// the displacement of the access, so the context's address is `vaddr - aux`).
    pub aux: u64,
    /// A [`WatchKind`].
    pub kind: u32,
    /// `FLAG_*` bits carried into the events this instruction causes (trylock, read, write).
    pub flags: u32,
}
