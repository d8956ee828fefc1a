//! What a source of target data delivers to the engine, one item at a time.
//!
//! A live session (shared RAM or gdb polling), a recorded trace and a test fixture all produce the
//! same stream of [`Feed`] items, so the engine and everything above it cannot tell them apart.
//! Recording a session is writing this stream down (see [`crate::trace`]).

use serde::{Deserialize, Serialize};

use crate::model::{FullRegs, HartId, HartRegs, LockEvent, Snapshot, StackFrame};

/// Why the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// A hart reached the kernel's panic-halt function.
    Panic,
    /// lockscope stopped it to look (a deadlock or stall, or the user asked).
    Interrupted,
    /// lockscope stopped it briefly to look at a suspected hang: it runs again unless the
    /// look confirms the hang.
    Sample,
    /// Another breakpoint or signal.
    Other,
}

/// One hart of a stopped guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartStop {
    pub hart: HartId,
    pub regs: HartRegs,
    /// The unwound call chain, innermost (the pc) first.
    pub frames: Vec<StackFrame>,
    /// Every general register and the saved CSRs, for the post-mortem gdb server and core
    /// files. Absent in recordings made before it was captured.
    #[serde(default)]
    pub full: Option<FullRegs>,
}

/// The registers and stacks of every hart at one stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopInfo {
    pub reason: StopReason,
    /// The hart the stop is about: for a capture lockscope asked for, the panicking (or a
    /// deadlocked or stalled) hart; otherwise the one the stub named. A post-mortem gdb selects
    /// it first.
    pub hart: Option<HartId>,
    pub harts: Vec<HartStop>,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    /// QEMU exited with this status (the kernel's verdict through the SiFive test device).
    Exited { status: i32 },
    /// The connection or the process was lost; the reason says what happened.
    Lost { reason: String },
    /// The user or the command ended it.
    Detached,
}

/// One item from a source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Feed {
    /// Counters and per-hart state (boxed: it is most of a feed's size, and feeds are moved
    /// through channels).
    Snapshot(Box<Snapshot>),
    /// New ring events, with how many were lost since the previous batch, per hart.
    Events {
        events: Vec<LockEvent>,
        lost: Vec<(HartId, u64)>,
    },
    /// These harts' rings are read from their first event ever (the session saw the boot), so
    /// nothing was held before the first event.
    TraceStart {
        harts: Vec<HartId>,
    },
    /// Console output (any text; not necessarily whole lines).
    Console(String),
    /// The guest stopped; registers and backtraces of every hart.
    Stop(StopInfo),
    /// The guest runs again.
    Resumed,
    /// The cost of one look at a running guest through the gdb stub.
    Pause {
        nanos: u64,
    },
    End(Ending),
}
