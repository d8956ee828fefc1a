//! Why a session could not start.

use thiserror::Error;

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
    Detect(#[from] crate::sources::DetectError),
    #[error(transparent)]
    Source(#[from] crate::sources::SourceError),
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    #[error("cannot record the session: {0}")]
    Recording(#[from] crate::recording::RecordingError),
    #[error(transparent)]
    RamDir(#[from] crate::qemu::ram_dir::RamDirError),
    #[error(transparent)]
    Line(#[from] crate::qemu::LineError),
    #[error(transparent)]
    Proxy(#[from] crate::gdbserver::proxy::ProxyError),
    #[error(transparent)]
    Registry(#[from] super::registry::RegistryError),
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
