//! lockscope's engine: everything lockscope knows, without a screen.
//!
//! The short list at the crate root is what a front end needs: start a [`Session`] (or feed a
//! [`Monitor`] from a [`TraceReader`]), take [`View`]s from its [`SessionHandle`], and print a
//! [`CheckReport`]. The modules hold the rest:
//!
//! - [`session`]: live sessions that read a target and publish views to a UI.
//! - [`monitor`]: feeds in, symbolized views out: what the TUI and `check` show.
//! - [`diagnose`]: a stopped kernel diagnosed to the lock, hart and line (DWARF, stacks).
//! - [`analysis`]: statistics, deadlock and lock-order analysis over the model, and the verdict.
//! - [`report`]: `lockscope check`'s result, for people and as JSON.
//! - [`sources`]: each way into a target (the lockscope ABI; an unmodified xv6 kernel through
//!   DWARF), producing the [`model`].
//! - [`feed`]: what any source (live or recorded) delivers; [`recording`] records it (format
//!   version 2, with a timeline for replay); [`trace`] reads version 1.
//! - [`export`]: recordings as Perfetto traces.
//! - [`gdbserver`]: the gdb proxy beside the user's gdb, the post-mortem server, core files.
//! - [`symbols`]: ELF and DWARF symbolization, disassembly and unwinding.
//! - [`gdb`]: our own client for the gdb Remote Serial Protocol, tuned to QEMU's stub.
//! - [`qemu`]: how to boot the kernel in QEMU, for sessions, tests and xtask alike.
//! - [`memory`]: guest memory, whatever the way in.

pub mod analysis;
pub mod diagnose;
pub mod export;
pub mod feed;
pub mod gdb;
pub mod gdbserver;
pub mod memory;
pub mod model;
pub mod monitor;
pub mod qemu;
pub mod recording;
pub mod report;
pub mod session;
pub mod sources;
pub mod symbols;
pub mod trace;

pub use analysis::{Check, Severity, Verdict};
pub use feed::{Ending, Feed, StopReason};
pub use monitor::{Monitor, MonitorConfig, SourceKind, TargetState, View};
pub use qemu::{ExitVerdict, QemuConfig};
pub use report::CheckReport;
pub use session::{
    Command, Finished, Session, SessionError, SessionHandle, SessionOptions, Target,
};
pub use sources::{KernelKind, Source};
pub use symbols::Symbols;
pub use trace::TraceReader;
