//! Reading guest memory, whatever the way in (shared RAM, the gdb stub, the ELF image).

use thiserror::Error;

/// Why a read of guest memory failed.
#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("address range {addr:#x}..{end:#x} is outside guest RAM {base:#x}..{limit:#x}: the value is corrupt or the kernel does not match the ELF")]
    OutOfRange {
        addr: u64,
        end: u64,
        base: u64,
        limit: u64,
    },
    #[error("reading {len} bytes at {addr:#x} failed: {reason}")]
    Failed {
        addr: u64,
        len: usize,
        reason: String,
    },
}

/// A way to read guest physical memory.
pub trait GuestMemory {
    /// Fills `buf` from guest address `addr`, or fails without partial results.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
}
