//! Diagnosing a stopped kernel to the lock, hart and line: the reasoning a source does at a
//! stop of the guest, from every hart's registers, its stacks and the kernel's DWARF.
//!
//! Nothing here knows which kernel it reads: a source (the xv6 reader) gives the registers,
//! memory, DWARF types and what its locks look like, and fills [`crate::model::Diagnosis`]
//! with the answers; the analysis confirms them across stops and the monitor puts them in
//! words.
//!
//! - `regs`: the registers of every frame of a stack (prologue saves, trap save areas), so that
//!   DWARF locations can be evaluated in callers and in the code a trap interrupted.
//! - `stack`: unwinding through the page table (process kernel stacks), saved contexts.
//! - `access`: the faulting access of a trap, named through DWARF.
//! - `calls`: the calls a function made and the argument it passed.
//! - `waits`: the lock a spinning hart waits on, and where it took the locks it holds.
//! - `message`: the message a hart passed to `panic()`.

mod access;
mod calls;
mod message;
mod regs;
mod stack;
mod waits;

#[cfg(test)]
mod tests;

pub use access::{member_path, name_access, Trap};
pub use calls::{argument_a0, calls_before, calls_in, CallSite};
pub use message::panic_message;
pub use regs::{frame_registers, FrameRegs, RegContext};
pub use stack::{stack_frames, unwind_hart, unwind_saved};
pub use waits::{caller_site, find_frame, frame_functions, held_sites, spin_lock, LockShape};
