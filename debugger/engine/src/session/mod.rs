//! Live sessions: boot or attach to QEMU, feed a [`crate::monitor::Monitor`] from shared RAM
//! and the gdb stub, publish views through a [`SessionHandle`].

mod handle;

pub use handle::{Command, SessionHandle};
