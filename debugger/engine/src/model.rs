//! The engine's model of a target: what a kernel's locks, harts, allocator and buffer cache look
//! like at one moment, and the lock events between moments.
//!
//! Nothing here knows how it was read. The lockscope kernel fills it from its ABI (shared RAM or
//! the gdb stub); other kernels may fill only part of it (an unmodified xv6 read through DWARF has
//! counters, holders and registers but no event ring), so every source-specific field is optional
//! and the analysis copes with its absence. Times are nanoseconds of target time.

use serde::{Deserialize, Serialize};

mod diagnosis;

mod event;
mod xv6;

pub use diagnosis::{
    AccessDiagnosis, AccessKind, AccessName, Diagnosis, HartDiagnosis, HartState, HeldLock,
    LockEvidence, SleepOn, SleeperDiagnosis,
};
pub use event::{EventKind, LockEvent, LockMode};
pub use xv6::{
    FieldValue, Finding, FindingKind, ProcessSnapshot, RwLockSnapshot, SavedContext,
    SleeplockSnapshot,
};

/// Index into [`Snapshot::locks`].
pub type LockId = u32;
/// A hart (CPU) number, as the kernel numbers them.
pub type HartId = u32;

/// Name and class of one lock. Instances of a class (the 13 bucket locks) share the class name
/// but keep their own identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockMeta {
    pub id: LockId,
    pub name: String,
    pub class: String,
}

/// Exact per-lock counters, as the kernel keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockCounters {
    pub acquires: u64,
    pub contended: u64,
    /// Failed test-and-set attempts (the lab's `#test-and-set`).
    pub spins: u64,
    pub wait_total_ns: u64,
    pub wait_max_ns: u64,
    pub hold_total_ns: u64,
    pub hold_max_ns: u64,
}

impl LockCounters {
    /// Adds another lock's counters into this one (for class totals).
    pub fn merge(&mut self, o: &LockCounters) {
        self.acquires = self.acquires.saturating_add(o.acquires);
        self.contended = self.contended.saturating_add(o.contended);
        self.spins = self.spins.saturating_add(o.spins);
        self.wait_total_ns = self.wait_total_ns.saturating_add(o.wait_total_ns);
        self.wait_max_ns = self.wait_max_ns.max(o.wait_max_ns);
        self.hold_total_ns = self.hold_total_ns.saturating_add(o.hold_total_ns);
        self.hold_max_ns = self.hold_max_ns.max(o.hold_max_ns);
    }
}

/// One lock at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    pub meta: LockMeta,
    pub counters: LockCounters,
    /// The hart holding it, when the source knows.
    pub holder: Option<HartId>,
    /// Where the lock is in the kernel's variables (`bcache.bucket[4].lock`); `None` for a lock
    /// known only from a registry (one in kalloc'd memory, such as a pipe's).
    #[serde(default)]
    pub path: Option<String>,
    /// Its address, when the source reads locks in memory.
    #[serde(default)]
    pub addr: Option<u64>,
    /// The lock word, when the source reads it (held with no holder yet is possible mid-acquire).
    #[serde(default)]
    pub locked: Option<bool>,
    /// The lab's own counters as the kernel keeps them (`int`s that can wrap negative).
    #[serde(default)]
    pub lab: Option<LabCounts>,
    /// Which one of its class the lock is: the indices of its variable path
    /// (`bcache.bucket[4].lock` -> `[4]`, a 2-D array gives two) or the trailing number of its
    /// name (`bcache.bucket4` -> `[4]`); empty when there is none. Lock order uses it to tell
    /// whether nested instances of one class are taken in a fixed order ([`index_from_path`],
    /// [`index_from_name`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index: Vec<u32>,
}

/// Longest instance index kept (a path with more array levels keeps its first ones).
const MAX_INDEX_LEN: usize = 4;

/// The array indices of a variable path, outermost first: `bcache.bucket[4].lock` -> `[4]`,
/// `grid[1][2].lk` -> `[1, 2]`; empty when it has none (or one is not a plain number).
pub fn index_from_path(path: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']') else {
            return Vec::new();
        };
        match rest[open + 1..open + close].parse::<u32>() {
            Ok(i) if out.len() < MAX_INDEX_LEN => out.push(i),
            Ok(_) => {}
            Err(_) => return Vec::new(),
        }
        rest = &rest[open + close + 1..];
    }
    out
}

/// The number a name ends with: `bcache.bucket4` -> `[4]`, `kmem12` -> `[12]`; empty when it
/// ends otherwise (or the number does not fit 32 bits).
pub fn index_from_name(name: &str) -> Vec<u32> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits == name.len() {
        return Vec::new();
    }
    name[name.len() - digits..]
        .parse::<u32>()
        .map_or_else(|_| Vec::new(), |i| vec![i])
}

/// The xv6 lab's per-lock counters, raw: `n` is `#acquire()`, `nts` is `#test-and-set`
/// (`#fetch-and-add` in 2020). [`LockCounters::acquires`] and [`LockCounters::spins`] hold the
/// same counts read as unsigned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabCounts {
    pub n: i64,
    pub nts: i64,
}

/// What a hart is doing, as far as the source can tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HartRun {
    Offline,
    Booting,
    Running,
    /// Done with its work, waiting for interrupts.
    Idle,
    /// Stopped because another hart panicked.
    Halted,
    /// This hart panicked.
    Panicked,
    #[default]
    Unknown,
}

/// One lock a hart holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub lock: LockId,
    /// Return address into the code that acquired it (symbolize `pc - 1`).
    pub pc: u64,
    pub since_ns: Option<u64>,
}

/// The lock a hart is spinning on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spin {
    pub lock: LockId,
    /// Return address into the code that is spinning (symbolize `pc - 1`).
    pub pc: u64,
    pub since_ns: u64,
}

/// Registers of a stopped hart, read through the gdb stub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartRegs {
    pub pc: u64,
    pub ra: u64,
    pub sp: u64,
    /// s0, the frame pointer.
    pub fp: u64,
    /// Privilege level (0 U, 1 S, 3 M), when the stub reports it.
    pub privilege: Option<u8>,
    pub scause: Option<u64>,
    pub sepc: Option<u64>,
    pub stval: Option<u64>,
}

/// Every general register of a stopped hart and the CSRs saved with it: what a post-mortem
/// gdb server or a core file needs beyond [`HartRegs`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullRegs {
    /// x0..x31 (x0 is 0).
    pub x: Vec<u64>,
    pub pc: u64,
    /// Privilege level (0 U, 1 S, 3 M), when the stub reports it.
    pub privilege: Option<u8>,
    /// `(CSR number, value)`: satp (0x180), sstatus, sepc, scause, stval, ... as saved.
    pub csrs: Vec<(u16, u64)>,
}

impl FullRegs {
    pub fn csr(&self, number: u16) -> Option<u64> {
        self.csrs
            .iter()
            .find(|(n, _)| *n == number)
            .map(|&(_, v)| v)
    }

    /// x`n`, or 0 when it was not saved.
    pub fn x(&self, n: usize) -> u64 {
        self.x.get(n).copied().unwrap_or(0)
    }
}

/// How a stack frame's address relates to the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameKind {
    /// The hart's pc: the instruction about to run, or that faulted.
    Pc,
    /// A return address: symbolize `pc - 1` to land in the call.
    Return,
    /// The pc a trap interrupted (`sepc`): the faulting instruction itself.
    Trap,
}

/// One frame of an unwound stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackFrame {
    pub pc: u64,
    pub kind: FrameKind,
}

impl StackFrame {
    /// The address to symbolize.
    pub fn lookup_pc(&self) -> u64 {
        match self.kind {
            FrameKind::Pc | FrameKind::Trap => self.pc,
            FrameKind::Return => self.pc.saturating_sub(1),
        }
    }
}

/// One hart at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartSnapshot {
    pub hart: HartId,
    pub run: HartRun,
    /// Progress counter; a running hart whose heartbeat stops has stalled.
    pub heartbeat: Option<u64>,
    /// Held locks, outermost first.
    pub held: Vec<Held>,
    /// True when the hart holds more locks than the source could list.
    pub held_truncated: bool,
    pub spinning: Option<Spin>,
    /// Workload operations completed.
    pub ops: Option<u64>,
    /// Present when the hart was stopped and its registers were read.
    pub regs: Option<HartRegs>,
    /// The kernel's own per-CPU record (xv6's `struct cpu`), when the source reads it.
    #[serde(default)]
    pub cpu: Option<CpuState>,
}

/// A process as other records refer to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    /// Index in the process table.
    pub slot: u32,
    pub pid: i64,
    pub name: String,
}

/// xv6's `struct cpu` of one hart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuState {
    /// `cpus[i].proc`: the process running on it; `None` in the scheduler.
    pub proc: Option<ProcRef>,
    /// Depth of `push_off` nesting.
    pub noff: i64,
    /// Were interrupts enabled before the outermost `push_off`?
    pub intena: bool,
}

/// Page allocator counters of one hart's free list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmemList {
    pub hart: HartId,
    pub free_pages: u64,
    pub allocs: u64,
    pub frees: u64,
    pub steals: u64,
    pub pages_stolen: u64,
    pub lock: Option<LockId>,
}

/// The page allocator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmemSnapshot {
    /// `percpu` or `global`.
    pub mode: String,
    pub lists: Vec<KmemList>,
    /// Where each list's head is (`kmem[2].freelist`), parallel to `lists`, when the source
    /// knows.
    #[serde(default)]
    pub list_paths: Vec<String>,
    /// Free pages right after boot (all of RAM above the kernel), to compare with the total.
    #[serde(default)]
    pub pages_at_start: Option<u64>,
    /// True when free pages were counted by walking the lists and a walk stopped early (a
    /// corrupt or too long list); the counts are then lower bounds.
    #[serde(default)]
    pub incomplete: bool,
}

/// One hash bucket of the buffer cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSnapshot {
    pub index: u32,
    pub lock: Option<LockId>,
    pub nbuf: u32,
    pub hits: u64,
    pub misses: u64,
    pub steals: u64,
}

/// One buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufSnapshot {
    pub index: u32,
    pub dev: u32,
    pub blockno: u32,
    pub refcnt: u32,
    pub valid: bool,
    /// `ticks` at last use.
    pub last_use_ticks: u64,
    pub bucket: Option<u32>,
    pub lock: Option<LockId>,
    /// xv6's `disk` flag: the disk owns the buffer (a read or write is in flight).
    #[serde(default)]
    pub disk: Option<bool>,
    /// The pid holding its sleeplock, when it is held.
    #[serde(default)]
    pub holder_pid: Option<i64>,
    #[serde(default)]
    pub addr: Option<u64>,
}

/// The buffer cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BcacheSnapshot {
    /// `hashed` or `global`.
    pub mode: String,
    pub evict_lock: Option<LockId>,
    pub buckets: Vec<BucketSnapshot>,
    pub bufs: Vec<BufSnapshot>,
    /// The source has no hit, miss or steal counts (the bucket fields are then 0).
    #[serde(default)]
    pub counts_unavailable: bool,
    /// How the source found the buckets, for the view's title: `bcache.bucket[13]: lock + head`.
    #[serde(default)]
    pub layout: Option<String>,
}

/// The trap that led to a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrapInfo {
    pub scause: u64,
    pub sepc: u64,
    pub stval: u64,
}

/// A kernel panic as the kernel recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicSnapshot {
    pub hart: HartId,
    pub message: String,
    pub trap: Option<TrapInfo>,
    /// Where the panic was raised.
    pub pc: u64,
    pub fp: u64,
    /// Return addresses of the kernel's own frame-pointer backtrace, innermost first.
    pub frames: Vec<u64>,
    pub time_ns: Option<u64>,
}

/// How the kernel was booted, when the source knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetConfig {
    pub bootargs: String,
    pub workload: Option<String>,
    pub kalloc: Option<String>,
    pub bcache: Option<String>,
    pub bug: Option<String>,
    pub trace_on: bool,
    pub nharts: u32,
}

/// Where the workload is, and its verdict once it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Running,
    Pass,
    Fail,
    Panic,
}

/// Everything known about a target at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Target time of the snapshot.
    pub time_ns: u64,
    pub ticks: Option<u64>,
    pub config: TargetConfig,
    /// Workload phase name (`kalloctest`, `bcachetest-test0`, ...), when known.
    pub phase: Option<String>,
    pub outcome: Option<Outcome>,
    /// Indexed by [`LockId`].
    pub locks: Vec<LockState>,
    pub harts: Vec<HartSnapshot>,
    pub kmem: Option<KmemSnapshot>,
    pub bcache: Option<BcacheSnapshot>,
    pub panic: Option<PanicSnapshot>,
    /// The process table, when the source reads one (xv6's `proc[]`); unused slots left out.
    #[serde(default)]
    pub processes: Vec<ProcessSnapshot>,
    #[serde(default)]
    pub sleeplocks: Vec<SleeplockSnapshot>,
    /// Reader-writer spinlocks and the fields their author gave them.
    #[serde(default)]
    pub rwlocks: Vec<RwLockSnapshot>,
    /// Broken invariants and lab pitfalls the source found in this state.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// What the source worked out at a stop of the guest (registers, stacks and variables):
    /// only in the snapshot read at a stop, and only from a source that can (xv6 via DWARF).
    #[serde(default)]
    pub diagnosis: Option<Diagnosis>,
}

impl Snapshot {
    pub fn lock(&self, id: LockId) -> Option<&LockState> {
        self.locks.get(id as usize)
    }

    /// The lock's name, or `lock#N` for an id the table does not have.
    pub fn lock_name(&self, id: LockId) -> String {
        let Some(l) = self.lock(id) else {
            return format!("lock#{id}");
        };
        // Several locks of one name (a student's bucket locks all named "buf_table_lock"):
        // the variable says which one.
        match l.path.as_deref() {
            Some(path)
                if path != l.meta.name
                    && self
                        .locks
                        .iter()
                        .any(|o| o.meta.id != l.meta.id && o.meta.name == l.meta.name) =>
            {
                format!("{} ({path})", l.meta.name)
            }
            _ => l.meta.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_indices_from_paths_and_names() {
        assert_eq!(index_from_path("bcache.bucket[4].lock"), [4]);
        assert_eq!(index_from_path("grid[1][2].lk"), [1, 2]);
        assert_eq!(index_from_path("bcache.lock"), Vec::<u32>::new());
        assert_eq!(index_from_path("a[x].lock"), Vec::<u32>::new());
        assert_eq!(index_from_path("a[3"), Vec::<u32>::new());
        assert_eq!(index_from_name("bcache.bucket12"), [12]);
        assert_eq!(index_from_name("kmem0"), [0]);
        assert_eq!(index_from_name("bcache.evict"), Vec::<u32>::new());
        assert_eq!(index_from_name("42"), Vec::<u32>::new());
        assert_eq!(index_from_name("x99999999999"), Vec::<u32>::new());
    }
}
