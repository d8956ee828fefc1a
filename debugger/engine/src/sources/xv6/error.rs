//! Why an xv6 kernel could not be opened or read.

use std::path::PathBuf;

use thiserror::Error;

use crate::memory::MemoryError;
use crate::symbols::types::TypesError;

/// Why an xv6 kernel could not be opened or read.
#[derive(Debug, Error)]
pub enum Xv6Error {
    #[error("{} has no DWARF debug info: rebuild with -g (xv6's Makefile has -ggdb in CFLAGS; check that your CFLAGS still has it)", path.display())]
    NoDebugInfo { path: PathBuf },
    #[error("{} is neither a lockscope kernel (no LOCKSCOPE_ROOT symbol) nor an xv6-shaped kernel: lockscope looked in its DWARF for {looked_for}; pass the kernel ELF (kernel/kernel in an xv6 tree)", path.display())]
    NotXv6 {
        path: PathBuf,
        looked_for: &'static str,
    },
    #[error("{} is a malformed ELF ({reason}); rebuild the kernel", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error(transparent)]
    Types(TypesError),
    #[error("the kernel running in QEMU is not {}: its code at {addr:#x} differs from the ELF's; pass the ELF QEMU was started with (rebuild with `make` if the tree changed)", path.display())]
    WrongKernel { path: PathBuf, addr: u64 },
    #[error(
        "this kernel has no `kernel_pagetable` variable, so kernel stacks cannot be translated"
    )]
    NoPageTable,
    #[error("the kernel page table at {root:#x} (from `kernel_pagetable`) is not in guest RAM: the kernel has not built it yet, or RAM is not what the ELF says")]
    BadPageTable { root: u64 },
    #[error(transparent)]
    Memory(#[from] MemoryError),
}
