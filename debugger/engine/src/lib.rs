//! lockscope's engine: everything lockscope knows, without a screen.
//!
//! - [`gdb`]: our own client for the gdb Remote Serial Protocol, tuned to QEMU's stub.
//! - [`symbols`]: ELF and DWARF symbolization and RISC-V disassembly.
//! - [`reader`]: decodes the lockscope ABI (`lockscope-abi`) out of guest memory.
//! - [`model`]: the source-independent model of a target.
//! - [`analysis`]: statistics, deadlock and lock-order analysis over the model.
//! - [`monitor`]: feeds in, symbolized views out: what the TUI and `check` show.
//! - [`qemu`]: how to boot the lockscope kernel in QEMU.
//! - [`session`]: live sessions that feed a monitor and publish its views to a UI.
//! - [`feed`]: what any source (live or recorded) delivers; [`trace`] records and replays it.

pub mod analysis;
pub mod feed;
pub mod gdb;
pub mod memory;
pub mod model;
pub mod monitor;
pub mod qemu;
pub mod reader;
pub mod report;
pub mod session;
pub mod sources;
pub mod symbols;
pub mod trace;
