//! Each way into a target, all producing the same [`crate::model`] (snapshots and lock events).
//!
//! A session's threads own a `Box<dyn Source>` and call it with whatever guest memory they have
//! (shared RAM, the gdb stub, a byte image); the analysis, the monitor, the TUI and `check` never
//! know which source fed them.
//!
//! - [`abi`]: our kernel, through `lockscope-abi` (its root descriptor, rings and tables).
//! - [`xv6`]: an unmodified xv6 kernel, through its DWARF types.
//! - [`plugin`]: lock events from lockscope's QEMU TCG plugin, read from its shared rings.
//!
//! [`detect`] says which kind of kernel an ELF is; [`open`] makes its source.

pub mod abi;
mod detect;
pub mod plugin;
pub mod xv6;

use crate::memory::GuestMemory;
use crate::model::{HartId, LockEvent, Snapshot};

pub use detect::{detect, open, DetectError, KernelKind, OpenOptions, POLLED_FREE_LIST_BUDGET};

/// Why a source could not read its target. Each source's own error converts into it.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Abi(#[from] crate::sources::abi::AbiError),
    #[error(transparent)]
    Xv6(#[from] xv6::Xv6Error),
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
}

/// New events from one drain, and what was lost, per hart.
#[derive(Debug, Default)]
pub struct Drained {
    pub lost: Vec<(HartId, u64)>,
}

/// One way into a target's state in guest memory.
pub trait Source: Send {
    /// For the dashboard header and `check`: "lockscope ABI v1", "xv6 (DWARF)".
    fn describe(&self) -> String;
    /// Ok(true) once the target can be read; Ok(false) while the kernel still boots.
    /// `from_boot`: the session saw the boot, so event streams start at their first event.
    fn ready(&mut self, mem: &mut dyn GuestMemory, from_boot: bool) -> Result<bool, SourceError>;
    /// Whether `drain` can ever produce events (the ABI rings; xv6 alone cannot).
    fn has_events(&self) -> bool;
    /// Moves new lock events into `out`, reading at most about `budget` bytes.
    fn drain(
        &mut self,
        mem: &mut dyn GuestMemory,
        budget: usize,
        out: &mut Vec<LockEvent>,
    ) -> Result<Drained, SourceError>;
    /// Counters and state now, stamped with target time `now_ns`.
    fn snapshot(&mut self, mem: &mut dyn GuestMemory, now_ns: u64)
        -> Result<Snapshot, SourceError>;
    /// A cheap look (a few bytes) for a recorded panic, made at every drain, so a panic is caught
    /// the moment the kernel records it. Our kernel: its panic record is complete. xv6:
    /// `panicked != 0`.
    fn panicked(&mut self, mem: &mut dyn GuestMemory) -> bool;
}
