//! What the kernel image says about addresses: which are string constants, globals, the boot
//! stacks, the heap above the kernel, or nothing valid. Copied out of the ELF at open, so the
//! source does not hold on to the symbols.

use std::ops::Range;

use object::{Object, ObjectSection, ObjectSymbol, SectionFlags};

use super::Xv6Error;
use crate::memory::GuestMemory;
use crate::symbols::Symbols;

/// Longest lock or process name read (xv6 names are a few characters; `char name[16]`).
pub(super) const MAX_NAME: usize = 64;
/// Lowest virtual address of xv6's per-process kernel stacks region (just below MAXVA = 2^38).
const KSTACK_REGION: Range<u64> = 0x3f_0000_0000..(1 << 38);

/// Where a pointer points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Place {
    Null,
    /// Read-only data of the image: a string constant.
    Constant,
    /// Inside a global variable (`names+16`), not a stack.
    Global(String),
    /// Inside a boot stack (`stack0+8152`) or a process's kernel stack.
    Stack(String),
    /// Kalloc'd memory above the kernel.
    Heap,
    /// Anywhere else: not RAM, not the image.
    Invalid,
}

struct DataSymbol {
    addr: u64,
    size: u64,
    name: String,
}

pub(super) struct Image {
    /// Non-writable, non-executable loaded sections, with their bytes.
    rodata: Vec<(u64, Vec<u8>)>,
    /// Writable loaded sections (.data, .bss, ...).
    data: Vec<Range<u64>>,
    text: Vec<Range<u64>>,
    /// First byte after the kernel (`end`, else the end of the last loaded section).
    pub end: u64,
    symbols: Vec<DataSymbol>,
    /// The first bytes of the text, to check that the running kernel is this ELF.
    pub text_probe: (u64, Vec<u8>),
    pub ram: Range<u64>,
}

fn in_ranges(ranges: &[Range<u64>], a: u64) -> bool {
    ranges.iter().any(|r| r.contains(&a))
}

impl Image {
    pub(super) fn new(symbols: &Symbols, ram: Range<u64>) -> Result<Image, Xv6Error> {
        let bytes = symbols.elf_bytes();
        let file = object::File::parse(bytes).map_err(|e| Xv6Error::Malformed {
            path: symbols.path().to_owned(),
            reason: e.to_string(),
        })?;
        let mut rodata = Vec::new();
        let mut data = Vec::new();
        let mut text = Vec::new();
        let mut last_end = 0;
        for s in file.sections() {
            let SectionFlags::Elf { sh_flags, .. } = s.flags() else {
                continue;
            };
            if !sh_flags.contains(object::elf::SHF_ALLOC) || s.size() == 0 {
                continue;
            }
            let Some(end) = s.address().checked_add(s.size()) else {
                continue;
            };
            last_end = last_end.max(end);
            let range = s.address()..end;
            if sh_flags.contains(object::elf::SHF_EXECINSTR) {
                text.push(range);
            } else if sh_flags.contains(object::elf::SHF_WRITE) {
                data.push(range);
            } else if let Ok(d) = s.data() {
                // Bounded by the ELF's size, which `Symbols::load` bounded.
                rodata.push((s.address(), d.to_vec()));
            }
        }
        let mut syms: Vec<DataSymbol> = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Data && s.size() > 0)
            .filter_map(|s| {
                Some(DataSymbol {
                    addr: s.address(),
                    size: s.size(),
                    name: s.name().ok()?.to_owned(),
                })
            })
            .collect();
        syms.sort_by_key(|s| s.addr);
        let end = symbols.symbol("end").map(|s| s.address).unwrap_or(last_end);
        let text_probe = text
            .iter()
            .min_by_key(|r| r.start)
            .and_then(|r| {
                let len = (r.end - r.start).min(64) as usize;
                Some((r.start, symbols.read_static(r.start, len).ok()?))
            })
            .unwrap_or((0, Vec::new()));
        Ok(Image {
            rodata,
            data,
            text,
            end,
            symbols: syms,
            text_probe,
            ram,
        })
    }

    /// The data symbol containing `addr`, as `name` or `name+off`.
    pub(super) fn symbol_at(&self, addr: u64) -> Option<String> {
        let i = self.symbols.partition_point(|s| s.addr <= addr);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        let off = addr - s.addr;
        (off < s.size).then(|| {
            if off == 0 {
                s.name.clone()
            } else {
                format!("{}+{off}", s.name)
            }
        })
    }

    /// First page above the kernel: where kalloc's pages start.
    pub(super) fn heap_start(&self) -> u64 {
        self.end.div_ceil(4096) * 4096
    }

    pub(super) fn place(&self, addr: u64) -> Place {
        if addr == 0 {
            return Place::Null;
        }
        if self
            .rodata
            .iter()
            .any(|(a, d)| addr >= *a && addr - a < d.len() as u64)
        {
            return Place::Constant;
        }
        if in_ranges(&self.data, addr) {
            return match self.symbol_at(addr) {
                Some(s) if s.starts_with("stack") => Place::Stack(s),
                Some(s) => Place::Global(s),
                None => Place::Global(format!("{addr:#x}")),
            };
        }
        if KSTACK_REGION.contains(&addr) {
            return Place::Stack("a process's kernel stack".into());
        }
        if addr >= self.heap_start() && addr < self.ram.end {
            return Place::Heap;
        }
        Place::Invalid
    }

    /// A string constant of the image, read from the ELF.
    pub(super) fn constant_str(&self, addr: u64) -> Option<String> {
        let (a, d) = self
            .rodata
            .iter()
            .find(|(a, d)| addr >= *a && addr - a < d.len() as u64)?;
        let start = (addr - a) as usize;
        let tail = &d[start..d.len().min(start + MAX_NAME)];
        c_string(tail)
    }

    /// True when `addr..addr+len` is guest RAM or a loaded section: memory worth reading.
    pub(super) fn readable(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        (addr >= self.ram.start && end <= self.ram.end)
            || self
                .data
                .iter()
                .chain(&self.text)
                .any(|r| addr >= r.start && end <= r.end)
    }
}

/// The NUL-terminated printable string at the start of `bytes`; `None` when it has no NUL
/// within `bytes` or holds other than printable ASCII.
pub(super) fn c_string(bytes: &[u8]) -> Option<String> {
    let n = bytes.iter().position(|&b| b == 0)?;
    let s = &bytes[..n];
    s.iter()
        .all(|b| (0x20..0x7f).contains(b))
        .then(|| String::from_utf8_lossy(s).into_owned())
}

/// What the bytes at `addr` read as now: the string, or a short description of the garbage.
pub(super) fn read_now(mem: &mut dyn GuestMemory, image: &Image, addr: u64) -> String {
    if let Some(s) = image.constant_str(addr) {
        return format!("{s:?}");
    }
    let mut buf = [0u8; 24];
    // Shorter reads near the end of a region.
    for len in [24usize, 8, 1] {
        if mem.read(addr, &mut buf[..len]).is_ok() {
            let b = &buf[..len];
            return match c_string(b) {
                Some(s) if s.is_empty() => "\"\" (an empty string)".into(),
                Some(s) => format!("{s:?}"),
                None => {
                    let hex: Vec<String> = b.iter().take(8).map(|x| format!("{x:02x}")).collect();
                    format!("bytes {} (not a string)", hex.join(" "))
                }
            };
        }
    }
    "nothing readable".into()
}
