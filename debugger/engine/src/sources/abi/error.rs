//! Why the lockscope ABI could not be read.

use thiserror::Error;

use crate::memory::MemoryError;

/// Why the ABI could not be read.
#[derive(Debug, Error)]
pub enum AbiError {
    #[error("{symbol} at {addr:#x} has magic {found:#018x}, not {expected:#018x}: this is not a lockscope kernel, or the ELF does not match the kernel that is running")]
    BadMagic {
        symbol: &'static str,
        addr: u64,
        found: u64,
        expected: u64,
    },
    #[error("the kernel uses lockscope ABI version {kernel}, this lockscope reads version {reader}: rebuild both from one checkout (cargo xtask build)")]
    Version { kernel: u32, reader: u32 },
    #[error("corrupt ABI field {field} = {value:#x}: {problem}")]
    Corrupt {
        field: String,
        value: u64,
        problem: String,
    },
    #[error("the kernel has not filled in its ABI root yet (still booting): retry in a moment")]
    NotReady,
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

impl AbiError {
    pub(crate) fn corrupt(
        field: impl Into<String>,
        value: u64,
        problem: impl Into<String>,
    ) -> Self {
        AbiError::Corrupt {
            field: field.into(),
            value,
            problem: problem.into(),
        }
    }
}
