//! ELF and DWARF symbols, RISC-V disassembly and frame-pointer unwinding for the kernel ELF.
//!
//! [`Symbols::load`] reads the ELF once (`object`), keeps its symbol table, loaded segments and
//! text ranges, and builds an `addr2line` context over its DWARF. Lookups are memoized per pc, so
//! the lock-site lookups the analysis makes per event stay cheap. `Symbols` is `Send + Sync`;
//! share it behind an `Arc`.
//!
//! - Symbol table: [`Symbols::symbol`], [`Symbols::function_at`], [`Symbols::symbol_at`].
//! - Static data by virtual address: [`Symbols::read_static`], [`Symbols::elf_memory`].
//! - Source lines and inlined frames: [`Symbols::frames`], [`Symbols::return_frames`],
//!   [`Symbols::lock_site`], [`Symbols::location`], [`Symbols::source_context`].
//! - Disassembly: [`Symbols::disassemble_around`].
//! - Unwinding a stopped hart: [`Symbols::unwind`].
//! - C types, globals and variables in scope from DWARF: [`types::Types`].

mod disasm;
mod dwarf;
mod elf;
mod source;
pub mod types;
mod unwind;

use std::path::PathBuf;

use thiserror::Error;

use crate::memory::MemoryError;

pub use disasm::{Disassembly, Instruction};
pub use dwarf::{demangle, Frame, Location, SiteFilter};
pub use elf::{ElfMemory, Symbol, SymbolHit, SymbolKind, Symbols, TextRange};
pub use source::SourceContext;
pub use types::{Global, TypeId, TypeKind, Types, TypesError};
pub use unwind::{RawFrame, RawFrameKind, Unwind, UnwindLimits, UnwindStop};

/// Where `cargo xtask build` puts the kernel ELF, quoted in error messages.
pub const KERNEL_ELF_HINT: &str =
    "target/kernel/riscv64gc-unknown-none-elf/release/lockscope-kernel";

/// Why loading or querying the kernel ELF failed. Every message says what to do.
#[derive(Debug, Error)]
pub enum SymbolsError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a regular file; lockscope needs the RISC-V kernel ELF, e.g. {KERNEL_ELF_HINT}", path.display())]
    NotAFile { path: PathBuf },
    #[error("{} is {size} bytes, more than the {limit} bytes lockscope accepts for a kernel ELF; is it the right file? lockscope needs e.g. {KERNEL_ELF_HINT}", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{} is not an ELF file; lockscope needs the RISC-V kernel ELF, e.g. {KERNEL_ELF_HINT}", path.display())]
    NotElf { path: PathBuf },
    #[error("{} is {arch} ELF; lockscope needs the RISC-V kernel ELF, e.g. {KERNEL_ELF_HINT}", path.display())]
    WrongArch { path: PathBuf, arch: String },
    #[error("{} is a malformed ELF file ({reason}); rebuild the kernel with `cargo xtask build`", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("{} has no symbol table (it was stripped); rebuild without strip: no `strip` in the kernel's Cargo profile and no `-C strip=...`", path.display())]
    Stripped { path: PathBuf },
    #[error("{} has no DWARF debug info, so source lines and inlined frames are unavailable; set `debug = true` in [profile.release] of kernel/Cargo.toml and rebuild", path.display())]
    NoDebugInfo { path: PathBuf },
    #[error("the DWARF debug info of {} is malformed ({source}); rebuild the kernel with `cargo xtask build`", path.display())]
    Dwarf {
        path: PathBuf,
        #[source]
        source: gimli::Error,
    },
    #[error("symbol `{name}` is not in {}; is this the lockscope kernel ELF ({KERNEL_ELF_HINT})?", path.display())]
    NoSuchSymbol { name: String, path: PathBuf },
    #[error("address range {addr:#x}..{end:#x} is not in the loaded image of {}; the address is corrupt or does not belong to this ELF", path.display())]
    NotInImage { addr: u64, end: u64, path: PathBuf },
    #[error("{pc:#x} is not in the code of {} (text: {text}); the address is corrupt or QEMU runs a different kernel than this ELF", path.display())]
    NotText {
        pc: u64,
        path: PathBuf,
        text: String,
    },
    #[error("the RISC-V disassembler failed: {0}")]
    Disassembler(String),
    #[error(transparent)]
    Memory(#[from] MemoryError),
}
