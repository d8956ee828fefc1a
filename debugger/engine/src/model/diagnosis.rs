//! What a source works out at a stop of the guest, from every hart's registers, the stacks and
//! the kernel's variables: where each hart is and what it waits for, which locks it holds, who
//! sleeps on what, and for a panic from a trap, which access faulted. Filled by a source that
//! can read a stopped target through DWARF (an unmodified xv6 kernel); the analysis turns it into
//! deadlocks, hangs and stalls, confirmed across two stops.

use serde::{Deserialize, Serialize};

use super::{HartId, LockId, ProcRef, StackFrame, TrapInfo};

/// Everything diagnosed at one stop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// Target time of the stop.
    pub time_ns: u64,
    /// Every hart the stub showed, by hart id.
    pub harts: Vec<HartDiagnosis>,
    /// Sleeping processes and where they sleep.
    pub sleepers: Vec<SleeperDiagnosis>,
    /// The faulting access behind a panic from a trap.
    pub access: Option<AccessDiagnosis>,
    /// No hart has reached the kernel's scheduler: the kernel is stuck in its boot, maybe
    /// before its console works.
    pub booting: bool,
}

/// One hart at a stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartDiagnosis {
    pub hart: HartId,
    /// The pc the stub reported.
    pub pc: u64,
    /// 0 U, 1 S, 3 M, when the stub says.
    pub privilege: Option<u8>,
    /// Stopped in machine mode (a timer handler of an older xv6): the pc it interrupted
    /// (`mepc`), where the hart really is.
    pub interrupted_pc: Option<u64>,
    /// The stack from where the hart really is, innermost first; process stacks are read
    /// through the kernel's page table.
    pub frames: Vec<StackFrame>,
    pub state: HartState,
    /// Every spinlock whose holder is this hart.
    pub held: Vec<HeldLock>,
    /// The process it runs (`cpus[h].proc`).
    pub process: Option<ProcRef>,
    /// `scause`, `sepc` and `stval` at the stop: the last trap the hart took.
    #[serde(default)]
    pub last_trap: Option<TrapInfo>,
    /// A digest of every general register and the pc: equal at two stops, the hart made no
    /// progress in between (a hart zeroing memory moves a pointer, one spinning does not).
    #[serde(default)]
    pub regs_digest: u64,
}

/// What a hart is doing at a stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HartState {
    /// In the kernel's `panic()`: it printed its message and spins.
    Panicked,
    /// In the spinlock's acquire.
    Acquiring {
        /// The lock it waits on, when one of the ways to tell gave a held lock.
        lock: Option<LockId>,
        evidence: Option<LockEvidence>,
        /// Return address into acquire's caller: where it waits (symbolize `pc - 1`).
        site: Option<u64>,
    },
    /// In a reader-writer lock's acquire (the student's `read_acquire`/`write_acquire`).
    RwWaiting {
        /// The lock's variable path, as in [`super::RwLockSnapshot::path`].
        rwlock: String,
        writer: bool,
        function: String,
        /// Return address into the caller of the acquire function.
        site: Option<u64>,
        /// An earlier call of the same acquire by an outer frame of this stack, still on it
        /// (return address): the hart most likely holds the lock already (a re-entry).
        #[serde(default)]
        earlier: Option<u64>,
    },
    /// Waiting for an interrupt in the scheduler: nothing to run.
    Idle,
    /// Running kernel code.
    Running,
    /// The pc is not in the kernel's code.
    Outside,
}

/// How the lock a hart waits on was told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LockEvidence {
    /// The DWARF location of acquire's lock parameter (or a caller's variable) at the pc.
    Variable { name: String, function: String },
    /// The address operand of the atomic instruction the hart is on.
    AtomicOperand { instruction: String },
    /// The only held lock whose `nts` climbed between two stops (the lab's counter).
    CounterClimb,
}

/// A spinlock a hart holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLock {
    pub lock: LockId,
    /// Return address of the `acquire` call that most likely took it: the nearest call of
    /// acquire before the hart's position in the frames on its stack. Without lock events this
    /// is an inference; `None` when no frame on the stack calls acquire.
    pub site: Option<u64>,
}

/// A sleeping process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleeperDiagnosis {
    pub slot: u32,
    pub pid: i64,
    pub name: String,
    pub chan: Option<u64>,
    pub chan_name: Option<String>,
    /// Its kernel stack from its saved context, innermost first.
    pub frames: Vec<StackFrame>,
    /// Why the stack ends early, when it does.
    pub unwind_error: Option<String>,
    /// The sleeplock it sleeps on, when its channel is one.
    pub sleeplock: Option<SleepOn>,
}

/// A sleeplock someone sleeps on, at the stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepOn {
    pub path: String,
    pub locked: bool,
    pub holder: Option<ProcRef>,
}

/// What a faulting instruction accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessKind {
    Load,
    Store,
    /// An atomic memory operation (AMO, LR/SC).
    Atomic,
    /// The instruction fetch itself faulted (a jump to a bad address).
    Fetch,
}

/// The faulting access of a trap, named through DWARF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessDiagnosis {
    /// The faulting instruction (`sepc`).
    pub pc: u64,
    /// As disassembled: `lw a3, 0x48(a5)`.
    pub instruction: String,
    pub kind: AccessKind,
    /// Bytes accessed, when the instruction says.
    pub size: Option<u8>,
    /// The base register of the address (`a5`; `zero` for an absolute address).
    pub base_register: Option<String>,
    /// Its value at the fault, when it could be read back (from the trap frame).
    pub base_value: Option<u64>,
    /// The displacement in the instruction.
    pub offset: i64,
    /// The faulting address (`stval`).
    pub address: u64,
    /// The variable in the base register at the pc, as DWARF says: the verdict.
    pub named: Option<AccessName>,
    /// When the base register names nothing (gcc folded a NULL into `ld a5,88(zero)`): the
    /// pointer variables live at the pc whose pointee has a member at that offset. Guesses.
    pub candidates: Vec<AccessName>,
    /// Why the access is not named, when it is not.
    pub note: Option<String>,
}

/// A pointer variable and the member an access reaches through it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessName {
    pub variable: String,
    /// The function (or inlined function) whose variable it is.
    pub function: Option<String>,
    /// `struct buf *`.
    pub pointer_type: String,
    /// `struct buf`, when it points to a struct or union.
    pub pointee: Option<String>,
    /// `refcnt`, `lock.lk.name`: the member at the offset, when there is one.
    pub member: Option<String>,
    /// The offset in the pointee.
    pub member_offset: u64,
    /// The pointer's value at the fault, when known.
    pub value: Option<u64>,
}
