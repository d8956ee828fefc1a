//! What a source reads from an xv6-shaped kernel's own structures: its processes, sleeplocks
//! and reader-writer locks, and the broken invariants and lab pitfalls it finds in them.

use serde::{Deserialize, Serialize};

use super::{HartId, LockId, ProcRef};

/// Registers a process saved when it last switched away (xv6's `p->context`): where its
/// kernel stack can be unwound from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedContext {
    pub ra: u64,
    pub sp: u64,
    /// s0, the frame pointer.
    pub fp: u64,
}

/// One process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSnapshot {
    /// Index in the process table.
    pub slot: u32,
    pub pid: i64,
    pub name: String,
    /// As the kernel's enum names it: `SLEEPING`, `RUNNABLE`, `RUNNING`...
    pub state: String,
    /// What a sleeping process sleeps on.
    pub chan: Option<u64>,
    /// The channel as a known object: `buf 3 (block 33)`, `ticks`, `sleeplock log.lock`.
    pub chan_name: Option<String>,
    pub killed: bool,
    /// The hart running it (from the per-CPU records).
    pub hart: Option<HartId>,
    /// Virtual address of its kernel stack (translate through the kernel page table).
    pub kstack: Option<u64>,
    pub context: Option<SavedContext>,
    /// Its own lock (`proc[i].lock`).
    pub lock: Option<LockId>,
}

/// One sleeplock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleeplockSnapshot {
    pub path: String,
    pub name: Option<String>,
    pub addr: u64,
    pub locked: bool,
    pub holder: Option<ProcRef>,
    /// Its inner spinlock.
    pub lock: Option<LockId>,
}

/// One field of a structure whose fields its author chose, flattened: `readers[2]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldValue {
    pub name: String,
    /// The value of an integer, enum or pointer field.
    pub value: Option<i64>,
    /// As shown: `3`, `0x80012000`, `WRITING`, `?` when unreadable.
    pub text: String,
}

/// A reader-writer spinlock (the 2025 lab's `struct rwspinlock`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RwLockSnapshot {
    pub path: String,
    pub addr: u64,
    /// Its inner spinlock.
    pub lock: Option<LockId>,
    /// Every other field, as the student defined it.
    pub fields: Vec<FieldValue>,
}

/// What a finding is about. Each one makes a lab's "OK" meaningless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A lock's name points into a stack (a local buffer of a function that returned).
    LockNameOnStack,
    /// A lock's name points into kalloc'd memory.
    LockNameOnHeap,
    /// A lock's name points nowhere valid, or at something that is not a string.
    LockNameInvalid,
    /// An allocator or buffer-cache lock whose name the lab's `statslock` does not count.
    LockNameNotCounted,
    /// A spinlock used (counts, or held) that `initlock` never named.
    LockUninitialised,
    /// A used spinlock missing from the lab's `locks[]` registry.
    LockNotRegistered,
    /// A registry entry that does not point at a lock in memory.
    RegistryEntryInvalid,
    /// `n` or `nts` wrapped negative.
    CounterWrapped,
    /// A lock's `cpu` is neither null nor one of `cpus[]`.
    HolderInvalid,
    /// A block cached in two buffers.
    BlockCachedTwice,
    /// A bucket list that loops back on itself.
    BucketCycle,
    /// A bucket list pointer that does not land on a buffer.
    BucketStrayPointer,
    /// A buffer on two bucket lists.
    BufInTwoBuckets,
    /// A free page on two free lists.
    PageOnTwoLists,
    /// A free list that reaches a page twice (a double `kfree`).
    PageTwiceOnList,
    /// A free list pointer that is not a free page.
    FreeListStrayPointer,
}

/// Something wrong in the target's state that its own tests may not notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The variable path (or `name@address`) of what it is about.
    pub path: String,
    pub message: String,
}
