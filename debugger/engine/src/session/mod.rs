//! Live sessions: boot or attach to QEMU, feed a [`crate::monitor::Monitor`] from the target's
//! source (through shared RAM and the gdb stub), publish views through a [`SessionHandle`].
//!
//! - `live`: [`Session`]: start-up as a list of steps, and the end.
//! - `target`: reaching the target: boot (with gdb-port retry) or attach; `launch`: the QEMU a
//!   session starts.
//! - One file per thread: `probe`, `gdb`, `engine`, `console`, `qemu_wait`; what they share:
//!   `reading` (the source), `clock` (target time), `messages`.
//! - `handle`: where a UI takes views and sends commands; `options`, `error`.
//! - `registry`: the per-user list of `lockscope qemu` sessions that `attach` joins; `tail`:
//!   following a console log QEMU writes; `threads`: starting the threads.

mod clock;
mod console;
mod engine;
mod error;
mod gdb;
mod handle;
mod launch;
mod live;
mod messages;
mod options;
mod probe;
mod qemu_wait;
mod reading;
pub mod registry;
mod stop_ram;
mod tail;
mod target;
mod threads;

pub use error::SessionError;
pub use handle::{Command, SessionHandle};
pub use live::{Finished, Session, SessionInfo};
pub use options::{Joined, LineConsole, LineRun, RecordOptions, SessionOptions, Target};
