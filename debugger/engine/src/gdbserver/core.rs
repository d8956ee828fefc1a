//! A saved stop as an ELF core file: `gdb-multiarch kernel CORE` opens it with no server.
//!
//! One `NT_PRSTATUS` note per hart (thread `LWP hart+1`, the focus hart first, so gdb selects
//! it) in RISC-V's `elf_prstatus` layout, which BFD reads for bare-metal and Linux cores alike,
//! and the RAM as `PT_LOAD` segments at the kernel's virtual addresses: every run the focus
//! hart's Sv39 table maps into saved RAM (the direct map, and for xv6 the kernel stacks and
//! the trampoline), or RAM at its physical addresses when paging is off.
//!
//! The ELF container is written with `object`'s ELF writer. The note descriptors are filled
//! by hand: they are Linux's C structs (`elf_prstatus`, `elf_prpsinfo`), which no crate
//! provides for RISC-V.

use std::io::Write;
use std::ops::Range;

use object::elf;
use object::read::elf::FileHeader as _;
use object::write::elf::{FileHeader, ProgramHeader, Writer};
use object::write::StreamingBuffer;
use object::Endianness;
use thiserror::Error;

use super::stop::PostMortemStop;
use super::sv39::{for_each_mapping, AddressSpace, PAGE};
use crate::symbols::Symbols;

/// `sizeof(struct elf_prstatus)` on RV64 Linux, and where its fields are.
const PRSTATUS_SIZE: usize = 376;
const PR_CURSIG: usize = 12;
const PR_PID: usize = 32;
const PR_REG: usize = 112;
/// `sizeof(struct elf_prpsinfo)` on RV64 Linux.
const PRPSINFO_SIZE: usize = 136;
const PR_FNAME: usize = 40;
const PR_PSARGS: usize = 56;
const SIGTRAP: u16 = 5;
/// Bounds the segment count well under ELF's 16-bit `e_phnum`.
const MAX_SEGMENTS: usize = 16 * 1024;
/// Bytes copied from the saved RAM at a time.
const CHUNK: u64 = 1 << 20;

#[derive(Debug, Error)]
pub enum CoreError {
    #[error("writing the core file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the stop has no hart with saved registers: nothing to put in a core file")]
    NoHarts,
    #[error("the page table maps more than {MAX_SEGMENTS} separate runs of RAM: the saved satp or RAM is corrupt")]
    TooManySegments,
    #[error("reading saved RAM at {addr:#x}: {reason}")]
    Ram { addr: u64, reason: String },
    #[error("ELF writer: {0}")]
    Elf(String),
}

/// What a core file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreSummary {
    pub threads: usize,
    /// `(virtual address, physical address, length)` of each `PT_LOAD` segment.
    pub segments: Vec<(u64, u64, u64)>,
    pub bytes: u64,
}

/// The runs of saved RAM the focus hart could address, at the addresses it used.
fn segments(stop: &mut PostMortemStop) -> Result<Vec<(u64, u64, u64)>, CoreError> {
    let ram = stop.ram_range.clone();
    let focus = stop.ordered().first().map(|h| AddressSpace {
        satp: h.regs.csr(0x180),
        privilege: h.regs.privilege,
    });
    let mut out = Vec::new();
    match focus {
        Some(AddressSpace {
            satp: Some(satp), ..
        }) if !focus.is_some_and(|s| s.is_physical()) => {
            let mut runs = Vec::new();
            // A table outside the saved RAM leaves only the physical view.
            let _ = for_each_mapping(stop.ram.as_mut(), satp, &mut |va, pa, len| {
                runs.push((va, pa, len))
            });
            for (va, pa, len) in runs {
                if let Some(r) = clip(pa..pa.saturating_add(len), &ram) {
                    out.push((va + (r.start - pa), r.start, r.end - r.start));
                }
                if out.len() > MAX_SEGMENTS {
                    return Err(CoreError::TooManySegments);
                }
            }
        }
        _ => {}
    }
    if out.is_empty() {
        out.push((ram.start, ram.start, ram.end - ram.start));
    }
    Ok(out)
}

fn clip(r: Range<u64>, to: &Range<u64>) -> Option<Range<u64>> {
    let start = r.start.max(to.start);
    let end = r.end.min(to.end);
    (start < end).then_some(start..end)
}

fn note(out: &mut Vec<u8>, kind: u32, desc: &[u8]) {
    let name = b"CORE\0";
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(name);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// `pr_fname` is 16 bytes; BFD reads all 16 (no terminating zero needed), and gdb compares
/// them with the executable's file name.
const FNAME_LEN: usize = 16;

fn notes(stop: &PostMortemStop, program: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ps = vec![0u8; PRPSINFO_SIZE];
    // The kernel's file name, as gdb compares it with the executable it was given.
    let fname = &program.as_bytes()[..program.len().min(FNAME_LEN)];
    ps[PR_FNAME..PR_FNAME + fname.len()].copy_from_slice(fname);
    let args = format!("lockscope post-mortem: {}", stop.reason);
    let args = &args.as_bytes()[..args.len().min(79)];
    ps[PR_PSARGS..PR_PSARGS + args.len()].copy_from_slice(args);
    note(&mut out, elf::NT_PRPSINFO.0, &ps);
    for (i, h) in stop.ordered().into_iter().enumerate() {
        let mut d = vec![0u8; PRSTATUS_SIZE];
        if i == 0 {
            d[PR_CURSIG..PR_CURSIG + 2].copy_from_slice(&SIGTRAP.to_le_bytes());
        }
        d[PR_PID..PR_PID + 4].copy_from_slice(&(h.hart + 1).to_le_bytes());
        // elf_gregset_t: pc, then x1..x31.
        let mut regs = [0u64; 32];
        regs[0] = h.regs.pc;
        for (n, r) in regs.iter_mut().enumerate().skip(1) {
            *r = h.regs.x(n);
        }
        for (n, r) in regs.iter().enumerate() {
            d[PR_REG + 8 * n..PR_REG + 8 * n + 8].copy_from_slice(&r.to_le_bytes());
        }
        note(&mut out, elf::NT_PRSTATUS.0, &d);
    }
    out
}

/// The kernel's `e_flags` (float ABI, compressed instructions), so the core matches it.
fn kernel_flags(symbols: &Symbols) -> elf::FileFlags {
    let default = elf::EF_RISCV_RVC | elf::EF_RISCV_FLOAT_ABI_DOUBLE;
    // From the bytes held (a kernel taken from a recording has no file).
    match elf::FileHeader64::<Endianness>::parse(symbols.elf_bytes()) {
        Ok(h) => match h.endian() {
            Ok(e) => h.e_flags(e),
            Err(_) => default,
        },
        Err(_) => default,
    }
}

/// Writes `stop` as an ELF core file for the kernel `symbols` describes.
pub fn write_core(
    stop: &mut PostMortemStop,
    symbols: &Symbols,
    out: impl Write,
) -> Result<CoreSummary, CoreError> {
    if stop.harts.is_empty() {
        return Err(CoreError::NoHarts);
    }
    let segs = segments(stop)?;
    let program = symbols
        .path()
        .file_name()
        .map_or_else(|| "kernel".into(), |n| n.to_string_lossy().into_owned());
    let note_data = notes(stop, &program);
    let elf_err = |e: object::write::Error| CoreError::Elf(e.to_string());

    let mut buffer = StreamingBuffer::new(std::io::BufWriter::with_capacity(1 << 20, out));
    let mut w = Writer::new(Endianness::Little, true, &mut buffer);
    w.reserve_file_header();
    w.reserve_program_headers(segs.len() as u32 + 1);
    let note_off = w.reserve(note_data.len() as u64, 4);
    let offsets: Vec<u64> = segs
        .iter()
        .map(|&(_, _, len)| w.reserve(len, PAGE))
        .collect();

    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_CORE,
        e_machine: elf::EM_RISCV,
        e_entry: 0,
        e_flags: kernel_flags(symbols),
    })
    .map_err(elf_err)?;
    w.write_align_program_headers();
    w.write_program_header(&ProgramHeader {
        p_type: elf::PT_NOTE,
        p_flags: elf::ProgramFlags(0),
        p_offset: note_off,
        p_vaddr: 0,
        p_paddr: 0,
        p_filesz: note_data.len() as u64,
        p_memsz: 0,
        p_align: 4,
    });
    for (&(va, pa, len), &off) in segs.iter().zip(&offsets) {
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_LOAD,
            p_flags: elf::PF_R | elf::PF_W | elf::PF_X,
            p_offset: off,
            p_vaddr: va,
            p_paddr: pa,
            p_filesz: len,
            p_memsz: len,
            p_align: PAGE,
        });
    }
    w.write_align(4);
    w.write(&note_data);
    let mut chunk = vec![0u8; CHUNK as usize];
    let mut bytes = 0;
    for &(_, pa, len) in &segs {
        w.write_align(PAGE);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK) as usize;
            let at = pa + done;
            stop.ram
                .read(at, &mut chunk[..n])
                .map_err(|e| CoreError::Ram {
                    addr: at,
                    reason: e.to_string(),
                })?;
            w.write(&chunk[..n]);
            done += n as u64;
        }
        bytes += len;
    }
    drop(w);
    buffer.result()?;
    let mut inner = buffer.into_inner();
    inner.flush()?;
    Ok(CoreSummary {
        threads: stop.harts.len(),
        segments: segs,
        bytes,
    })
}
