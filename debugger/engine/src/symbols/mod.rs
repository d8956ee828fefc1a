//! ELF and DWARF symbols, RISC-V disassembly and frame-pointer unwinding for the kernel ELF.
//!
//! [`Symbols::load`] reads the ELF once (`object`), keeps its symbol table, loaded segments and
//! text ranges, and builds an `addr2line` context over its DWARF. Lookups are memoized per pc, so
//! the lock-site lookups the analysis makes per event stay cheap. `Symbols` is `Send + Sync`;
//! share it behind an `Arc`.
//!
//! - `elf`: the ELF side. Symbol table: [`Symbols::symbol`], [`Symbols::function_at`],
//!   [`Symbols::symbol_at`]; static data by virtual address: [`Symbols::read_static`],
//!   [`Symbols::elf_memory`].
//! - `dwarf/`: DWARF on its own (sections, line tables and inlined frames, source paths, lock
//!   sites); the ELF side uses it, never the reverse.
//! - `lines`: source lines and inlined frames: [`Symbols::frames`], [`Symbols::return_frames`],
//!   [`Symbols::lock_site`], [`Symbols::location`]; `source`: [`Symbols::source_context`].
//! - `disasm`: [`Symbols::disassemble_around`]; `unwind`: unwinding a stopped hart,
//!   [`Symbols::unwind`].
//! - `insn`: instructions with operands, for analyses: [`Symbols::function_instructions`].
//! - `memo`: the bounded memo tables, `error`: [`SymbolsError`].
//! - [`types`]: C types, globals and variables in scope from DWARF ([`types::Types`]).

mod code;
mod disasm;
mod dwarf;
mod elf;
mod error;
mod frame_record;
mod insn;
mod lines;
mod memo;
mod source;
pub mod types;
mod unwind;

pub(crate) use disasm::{capstone, decode_with, Op};
pub use disasm::{Disassembly, Instruction};
pub use dwarf::{demangle, Location, SiteFilter, SourceFrame};
pub use elf::{ElfMemory, Symbol, SymbolHit, SymbolKind, Symbols, TextRange};
pub use error::{SymbolsError, KERNEL_ELF_HINT};
pub use insn::{register_number, Insn, MemoryUse, Operand};
pub use source::SourceContext;
pub use types::{Global, TypeId, TypeKind, Types, TypesError};
pub use unwind::{RawFrame, RawFrameKind, Unwind, UnwindLimits, UnwindStop};
