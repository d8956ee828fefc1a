//! Live sessions: boot or attach to QEMU, feed a [`crate::monitor::Monitor`] from shared RAM
//! and the gdb stub, publish views through a [`SessionHandle`].

mod handle;
mod launch;
mod live;

use thiserror::Error;

pub use handle::{Command, SessionHandle};
pub use launch::{free_port, Qemu};
pub use live::{Session, SessionOptions, Target};

/// Why a session could not start.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error(transparent)]
    Qemu(#[from] crate::qemu::QemuError),
    #[error(transparent)]
    Gdb(#[from] crate::gdb::GdbError),
    #[error(transparent)]
    Symbols(#[from] crate::symbols::SymbolsError),
    #[error(transparent)]
    Abi(#[from] crate::reader::AbiError),
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("QEMU exited during start-up ({status}): {stderr}\n  command: {command}")]
    QemuDied {
        status: String,
        stderr: String,
        command: String,
    },
    #[error("QEMU did not create its shared RAM file: this QEMU may not support memory-backend-file with share=on; use `--gdb-poll` to read through the gdb stub instead")]
    NoSharedRam,
    #[error("bad session setting: {0}")]
    Config(String),
}
