//! Our kernel through the lockscope ABI (`lockscope-abi`), read out of guest memory into the
//! engine's model.
//!
//! The way in is any [`GuestMemory`](crate::memory::GuestMemory): shared RAM while the guest
//! runs, the gdb stub while it is stopped, or a byte image. Like probe-rs reading RTT, the reader
//! finds the control block by its ELF symbol, validates every count, pointer and length before
//! following it, copies a wrapped ring in two chunks, and never blocks the target.
//!
//! - `layout`: the root descriptor, validated once: where every table is.
//! - `rings`: draining the per-hart event rings without stopping the writers.
//! - `reader`: [`AbiReader`], snapshots and events.
//! - `source`: [`AbiSource`], the reader as a [`Source`](super::Source).
//! - [`synthetic`]: a kernel image built from the ABI structs, for tests and benchmarks.

mod error;
mod layout;
mod pod;
mod reader;
mod rings;
mod source;
pub mod synthetic;

pub use error::AbiError;
pub use layout::Layout;
pub use reader::AbiReader;
pub use rings::DrainStats;
pub use source::AbiSource;

#[cfg(test)]
mod tests;
