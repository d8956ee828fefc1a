//! Loading the ELF: checks, symbol table, loaded segments, text ranges.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use object::{
    Architecture, Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionFlags, SectionKind,
};

use super::dwarf::{
    demangle, load_sections, DwarfReader, LineTables, SiteFilter, SourceFrame, SourcePaths,
};
use super::error::SymbolsError;
use super::memo::Memo;
use crate::memory::{GuestMemory, MemoryError};

/// Larger files are refused before reading them: a kernel ELF with full DWARF is a few MiB.
const MAX_ELF_SIZE: u64 = 1 << 30;

/// What a symbol names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolKind {
    /// An `STT_FUNC` symbol.
    Function,
    /// An untyped label in an executable section (assembly entry points, trap vectors).
    Code,
    /// Anything in a non-executable section.
    Data,
}

/// One entry of the ELF symbol table, with local labels (`.L*`) and mapping symbols (`$x`,
/// `$d`) already left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Demangled, without the hash: `lockscope_kernel::bio::bget`.
    pub name: String,
    /// As in the ELF: `_ZN16lockscope_kernel3bio4bget17h...E`.
    pub raw_name: String,
    pub address: u64,
    /// 0 when the ELF does not say; lookups then end it at the next symbol.
    pub size: u64,
    pub kind: SymbolKind,
    pub global: bool,
}

/// A symbol and the offset of an address inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolHit<'a> {
    pub symbol: &'a Symbol,
    pub offset: u64,
}

impl fmt::Display for SymbolHit<'_> {
    /// `name` or `name+0x1c`, as gdb and objdump print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.offset == 0 {
            write!(f, "{}", self.symbol.name)
        } else {
            write!(f, "{}+{:#x}", self.symbol.name, self.offset)
        }
    }
}

/// An executable address range (a text section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextRange {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

impl TextRange {
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// A loadable segment: `file` bytes of the ELF at `addr`, then zeros up to `mem_size`.
#[derive(Clone, Debug)]
struct Segment {
    addr: u64,
    mem_size: u64,
    file: std::ops::Range<usize>,
}

/// The kernel ELF: symbols, loaded image, DWARF, and memoized lookups. See the module docs.
///
/// This file holds the ELF side (checks, symbol table, loaded image); source lines come from
/// the [`super::dwarf`] module it uses (see `lines.rs`), disassembly and unwinding from their
/// own files.
pub struct Symbols {
    pub(super) path: PathBuf,
    data: Vec<u8>,
    segments: Vec<Segment>,
    text: Vec<TextRange>,
    symbols: Vec<Symbol>,
    /// Indices into `symbols` of code symbols, sorted by address then preference.
    code_order: Vec<u32>,
    /// Indices into `symbols` of every symbol, sorted the same way.
    all_order: Vec<u32>,
    by_name: HashMap<String, u32>,
    /// Line tables and inlined frames, when the ELF has DWARF.
    pub(super) dwarf: Option<LineTables>,
    pub(super) paths: SourcePaths,
    pub(super) site_filter: SiteFilter,
    /// Per pc: its frames, with paths resolved.
    pub(super) frames: Memo<u64, [SourceFrame]>,
    /// Per return address: the frame that took a lock.
    pub(super) sites: Memo<u64, SourceFrame>,
    /// Per function start: (instruction address, frame set before it runs).
    pub(super) frame_setup: Memo<u64, [(u64, bool)]>,
}

impl fmt::Debug for Symbols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Symbols")
            .field("path", &self.path)
            .field("symbols", &self.symbols.len())
            .field("text", &self.text)
            .field("dwarf", &self.dwarf.is_some())
            .finish_non_exhaustive()
    }
}

impl Symbols {
    /// Loads a RISC-V 64 kernel ELF. Fails with an actionable error when the file is not an
    /// ELF, not RISC-V 64, or stripped. An ELF without DWARF loads; its line lookups then fail
    /// with [`SymbolsError::NoDebugInfo`].
    pub fn load(path: impl AsRef<Path>) -> Result<Symbols, SymbolsError> {
        let path = path.as_ref();
        let io = |source| SymbolsError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(SymbolsError::NotAFile {
                path: path.to_owned(),
            });
        }
        if meta.len() > MAX_ELF_SIZE {
            return Err(SymbolsError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
                limit: MAX_ELF_SIZE,
            });
        }
        let data = std::fs::read(path).map_err(io)?;
        Self::from_bytes(path, data)
    }

    /// Like [`Symbols::load`], over bytes already in memory; `path` names them in messages and
    /// anchors the source root.
    pub fn from_bytes(path: impl AsRef<Path>, data: Vec<u8>) -> Result<Symbols, SymbolsError> {
        let path = path.as_ref().to_owned();
        if data.len() < 4 || &data[..4] != b"\x7fELF" {
            return Err(SymbolsError::NotElf { path });
        }
        let malformed = |e: object::Error| SymbolsError::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        };
        let file = object::File::parse(&*data).map_err(malformed)?;
        if file.architecture() != Architecture::Riscv64 {
            return Err(SymbolsError::WrongArch {
                path,
                arch: describe_arch(file.architecture()),
            });
        }

        let mut segments = Vec::new();
        for seg in file.segments() {
            let (offset, size) = seg.file_range();
            let file_range = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(size).ok())
                .and_then(|(o, s)| Some(o..o.checked_add(s)?))
                .filter(|r| r.end <= data.len())
                .ok_or_else(|| SymbolsError::Malformed {
                    path: path.clone(),
                    reason: format!("segment at {:#x} lies outside the file", seg.address()),
                })?;
            if seg.address().checked_add(seg.size()).is_none() || (size > seg.size()) {
                return Err(SymbolsError::Malformed {
                    path,
                    reason: format!("segment at {:#x} has an impossible size", seg.address()),
                });
            }
            segments.push(Segment {
                addr: seg.address(),
                mem_size: seg.size(),
                file: file_range,
            });
        }

        let mut text = Vec::new();
        let mut exec_sections = Vec::new();
        for section in file.sections() {
            if section.kind() == SectionKind::Text && section.size() > 0 {
                let Some(end) = section.address().checked_add(section.size()) else {
                    continue;
                };
                exec_sections.push(section.index());
                text.push(TextRange {
                    name: section.name().unwrap_or("?").to_owned(),
                    start: section.address(),
                    end,
                });
            }
        }
        text.sort_by_key(|t| t.start);

        let mut symbols = Vec::new();
        let mut raw_count = 0usize;
        for sym in file.symbols() {
            raw_count += 1;
            let Some(section) = sym.section_index() else {
                continue;
            };
            if !sym.is_definition() {
                continue;
            }
            let Ok(raw) = sym.name() else { continue };
            if raw.is_empty() || raw.starts_with(".L") || raw.starts_with('$') {
                continue;
            }
            let in_text = exec_sections.contains(&section);
            let kind = match (sym.kind(), in_text) {
                (object::SymbolKind::Text, _) => SymbolKind::Function,
                (object::SymbolKind::Section | object::SymbolKind::File, _) => continue,
                (_, true) => SymbolKind::Code,
                (_, false) => SymbolKind::Data,
            };
            // Symbols of non-loaded sections (debug info) are not addresses.
            let loaded = file.section_by_index(section).is_ok_and(|s| {
                matches!(s.flags(), SectionFlags::Elf { sh_flags, .. }
                    if sh_flags.contains(object::elf::SHF_ALLOC))
            });
            if !loaded {
                continue;
            }
            symbols.push(Symbol {
                name: demangle(raw),
                raw_name: raw.to_owned(),
                address: sym.address(),
                size: sym.size(),
                kind,
                global: sym.is_global(),
            });
        }
        if raw_count == 0 || !symbols.iter().any(|s| s.kind != SymbolKind::Data) {
            return Err(SymbolsError::Stripped { path });
        }
        if symbols.len() > u32::MAX as usize {
            return Err(SymbolsError::Malformed {
                path,
                reason: "too many symbols".into(),
            });
        }

        let rank = |s: &Symbol| (s.size == 0, s.kind != SymbolKind::Function, !s.global);
        let mut all_order: Vec<u32> = (0..symbols.len() as u32).collect();
        all_order.sort_by(|&a, &b| {
            let (a, b) = (&symbols[a as usize], &symbols[b as usize]);
            (a.address, rank(a)).cmp(&(b.address, rank(b)))
        });
        let code_order: Vec<u32> = all_order
            .iter()
            .copied()
            .filter(|&i| symbols[i as usize].kind != SymbolKind::Data)
            .collect();
        let mut by_name = HashMap::new();
        // Preferred symbols first, so a name shared by several keeps the best one.
        for &i in &all_order {
            let s = &symbols[i as usize];
            by_name.entry(s.raw_name.clone()).or_insert(i);
            by_name.entry(s.name.clone()).or_insert(i);
        }

        let dwarf = LineTables::load(&file, &path)?;
        drop(file);
        let paths = SourcePaths::for_elf(&path);
        Ok(Symbols {
            path,
            data,
            segments,
            text,
            symbols,
            code_order,
            all_order,
            by_name,
            dwarf,
            paths,
            site_filter: SiteFilter::default(),
            frames: Memo::default(),
            sites: Memo::default(),
            frame_setup: Memo::default(),
        })
    }

    /// Identifies this exact build: FNV-1a over the whole file, in hex. A trace records it so
    /// that a replay symbolizes only with the ELF it was recorded from.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in &self.data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole ELF file, for readers of what this type does not parse itself (the DWARF
    /// type reader, `symbols/types.rs`).
    pub(crate) fn elf_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The ELF's DWARF sections, freshly loaded for a reader of its own (the line tables here
    /// keep theirs inside `addr2line`); `None` without `.debug_info`.
    #[allow(dead_code)] // the type reader parses the ELF itself (`elf_bytes`); only tests use this
    pub(crate) fn dwarf_sections(&self) -> Result<Option<gimli::Dwarf<DwarfReader>>, SymbolsError> {
        let file = object::File::parse(&*self.data).map_err(|e| SymbolsError::Malformed {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        load_sections(&file, &self.path)
    }

    /// Every symbol kept from the symbol table (no `.L*` labels, no mapping symbols).
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols
    }

    /// A symbol by its raw (`_ZN...`, `LOCKSCOPE_ROOT`) or demangled name.
    pub fn symbol(&self, name: &str) -> Result<&Symbol, SymbolsError> {
        self.by_name
            .get(name)
            .map(|&i| &self.symbols[i as usize])
            .ok_or_else(|| SymbolsError::NoSuchSymbol {
                name: name.to_owned(),
                path: self.path.clone(),
            })
    }

    /// The ABI root descriptor ([`lockscope_abi::ROOT_SYMBOL`]).
    pub fn abi_root(&self) -> Result<&Symbol, SymbolsError> {
        self.symbol(lockscope_abi::ROOT_SYMBOL)
    }

    /// The function a panicking hart ends in ([`lockscope_abi::PANIC_HALT_SYMBOL`]).
    pub fn panic_halt(&self) -> Result<&Symbol, SymbolsError> {
        self.symbol(lockscope_abi::PANIC_HALT_SYMBOL)
    }

    /// The executable sections, sorted by address.
    pub fn text_ranges(&self) -> &[TextRange] {
        &self.text
    }

    /// True when `addr` is inside an executable section.
    pub fn is_text(&self, addr: u64) -> bool {
        self.text_range(addr).is_some()
    }

    pub(super) fn text_range(&self, addr: u64) -> Option<&TextRange> {
        let i = self.text.partition_point(|t| t.start <= addr);
        self.text[..i].last().filter(|t| t.contains(addr))
    }

    pub(super) fn not_text(&self, pc: u64) -> SymbolsError {
        let text = self
            .text
            .iter()
            .map(|t| format!("{:#x}..{:#x}", t.start, t.end))
            .collect::<Vec<_>>()
            .join(", ");
        SymbolsError::NotText {
            pc,
            path: self.path.clone(),
            text,
        }
    }

    /// The function (or code label) containing `pc`, and the offset of `pc` in it.
    pub fn function_at(&self, pc: u64) -> Option<SymbolHit<'_>> {
        self.function_extent(pc).map(|(hit, _)| hit)
    }

    /// The function containing `pc` and the end of its code: its size, or for an unsized
    /// label the next symbol or the end of the section.
    pub(super) fn function_extent(&self, pc: u64) -> Option<(SymbolHit<'_>, u64)> {
        let range = self.text_range(pc)?;
        let (hit, end) = self.lookup(&self.code_order, pc, range.end)?;
        (hit.symbol.address >= range.start).then_some((hit, end))
    }

    /// The symbol, code or data, containing `addr`.
    pub fn symbol_at(&self, addr: u64) -> Option<SymbolHit<'_>> {
        if let Some(range) = self.text_range(addr) {
            return self
                .lookup(&self.code_order, addr, range.end)
                .map(|(h, _)| h);
        }
        let seg = self.segments.iter().find(|s| s.contains(addr))?;
        self.lookup(&self.all_order, addr, seg.addr + seg.mem_size)
            .map(|(h, _)| h)
    }

    fn lookup(&self, order: &[u32], addr: u64, limit: u64) -> Option<(SymbolHit<'_>, u64)> {
        let sym = |i: usize| &self.symbols[order[i] as usize];
        let after = order.partition_point(|&i| self.symbols[i as usize].address <= addr);
        let last = after.checked_sub(1)?;
        let base = sym(last).address;
        let best = order.partition_point(|&i| self.symbols[i as usize].address < base);
        let symbol = sym(best);
        let end = if symbol.size > 0 {
            base.saturating_add(symbol.size)
        } else {
            // An unsized label runs to the next symbol or the end of its section.
            order
                .get(after)
                .map(|&i| self.symbols[i as usize].address)
                .unwrap_or(limit)
                .min(limit)
        };
        (addr < end).then_some((
            SymbolHit {
                symbol,
                offset: addr - base,
            },
            end,
        ))
    }

    /// Copies `buf.len()` bytes at virtual address `addr` from the ELF's loaded image (zeros for
    /// `.bss`), as the kernel sees them before it runs.
    pub fn read_static_into(&self, addr: u64, buf: &mut [u8]) -> Result<(), SymbolsError> {
        let len = buf.len() as u64;
        let end = addr.saturating_add(len);
        let not_in_image = || SymbolsError::NotInImage {
            addr,
            end,
            path: self.path.clone(),
        };
        let seg = self
            .segments
            .iter()
            .find(|s| s.contains(addr) && end - s.addr <= s.mem_size)
            .ok_or_else(not_in_image)?;
        let start = (addr - seg.addr) as usize;
        let file = &self.data[seg.file.clone()];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = file.get(start + i).copied().unwrap_or(0);
        }
        Ok(())
    }

    /// `len` bytes of the loaded image at `addr`. The length is checked against the segment
    /// before anything is allocated.
    pub fn read_static(&self, addr: u64, len: usize) -> Result<Vec<u8>, SymbolsError> {
        let end = addr.saturating_add(len as u64);
        if !self
            .segments
            .iter()
            .any(|s| s.contains(addr) && end - s.addr <= s.mem_size)
        {
            return Err(SymbolsError::NotInImage {
                addr,
                end,
                path: self.path.clone(),
            });
        }
        let mut buf = vec![0; len];
        self.read_static_into(addr, &mut buf)?;
        Ok(buf)
    }

    /// A plain-data value from the loaded image, e.g. the constant part of the ABI root.
    pub fn read_static_pod<T: bytemuck::Pod>(&self, addr: u64) -> Result<T, SymbolsError> {
        let mut value = T::zeroed();
        self.read_static_into(addr, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// The ELF's loaded image as [`GuestMemory`], e.g. to disassemble the code as built.
    pub fn elf_memory(&self) -> ElfMemory<'_> {
        ElfMemory(self)
    }
}

impl Segment {
    fn contains(&self, addr: u64) -> bool {
        self.addr <= addr && addr - self.addr < self.mem_size
    }
}

/// [`GuestMemory`] over the ELF's loaded image.
pub struct ElfMemory<'a>(&'a Symbols);

impl GuestMemory for ElfMemory<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.0
            .read_static_into(addr, buf)
            .map_err(|e| MemoryError::Failed {
                addr,
                len: buf.len(),
                reason: e.to_string(),
            })
    }
}

/// "an x86_64", "a 32-bit RISC-V (RV32)": completes "... is {} ELF".
fn describe_arch(arch: Architecture) -> String {
    match arch {
        Architecture::X86_64 | Architecture::X86_64_X32 => "an x86_64".into(),
        Architecture::I386 => "an x86 (i386)".into(),
        Architecture::Aarch64 | Architecture::Aarch64_Ilp32 => "an AArch64".into(),
        Architecture::Arm => "an ARM (32-bit)".into(),
        Architecture::Riscv32 => "a 32-bit RISC-V (RV32)".into(),
        Architecture::Unknown => "an ELF of unknown architecture, not a RISC-V".into(),
        other => format!("a {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Symbols {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/symbols")
            .join(name);
        Symbols::load(path).expect("loading a fixture ELF")
    }

    #[test]
    fn a_dwarf_reader_gets_the_elf_and_its_sections() {
        let s = fixture("fixture.elf");
        assert_eq!(&s.elf_bytes()[..4], b"\x7fELF");
        let dwarf = s.dwarf_sections().unwrap().expect("the fixture has DWARF");
        let mut units = dwarf.units();
        assert!(
            units.next().unwrap().is_some(),
            "at least one compilation unit"
        );
        let bare = fixture("fixture-nodwarf.elf");
        assert!(bare.dwarf_sections().unwrap().is_none());
    }
}
