//! gdb Remote Serial Protocol client, tuned to QEMU 7.2's stub.
//!
//! No maintained RSP *client* crate exists (`gdbstub` is a server), hence this module:
//!
//! - [`codec`]: framing, checksums, escapes and run lengths, with no I/O; [`hex`]: hex fields.
//! - [`stop`]: stop replies (`S`, `T`, `W`, `X`, `O`).
//! - [`target_xml`]: the target description that numbers registers for `p`.
//! - [`client`]: [`GdbClient`], a blocking TCP client with timeouts on every wait.
//! - [`bench`]: measures the pause a polling session imposes on the guest.
//!
//! docs/gdb-client.md describes QEMU's quirks and how the client copes with each.

pub mod bench;
pub mod client;
pub mod codec;
pub mod error;
pub mod hex;
pub mod stop;
pub mod target_xml;
pub mod thread;

pub use client::{
    Config, CoreRegisters, Features, GdbClient, HartRegisters, Paused, RunState, Stats, Stop,
    StopCause, MAX_READ_PER_PAUSE, QEMU_MAX_READ,
};
pub use error::GdbError;
pub use stop::{BreakKind, SignalStop, StopReply};
pub use thread::ThreadId;
