//! RISC-V disassembly with capstone (RV64 + compressed), with absolute targets and symbols.

use std::fmt;

use capstone::arch::riscv::{ArchExtraMode, ArchMode, RiscVOperand};
use capstone::arch::{BuildsCapstone, BuildsCapstoneExtraMode};
use capstone::Capstone;

use super::elf::Symbols;
use super::error::SymbolsError;
use crate::memory::GuestMemory;

/// Decoding starts at most this far before the pc (at the function start); functions are
/// far smaller, so this only bounds what a corrupt symbol could make us read.
pub(super) const MAX_BACK: u64 = 64 << 10;
/// Caps on the instructions asked for either side of the pc.
const MAX_CONTEXT: usize = 4096;

/// One decoded instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub address: u64,
    pub bytes: Vec<u8>,
    /// As capstone names it; compressed instructions keep their `c.` prefix.
    pub mnemonic: String,
    /// As capstone prints them, except that a pc-relative branch or jump target is shown as
    /// its absolute address and symbol: `a3, 0x80000046 <symbols_fixture::spin::...+0x26>`.
    pub operands: String,
    /// Where a branch, jump or call goes, or the address an `auipc` pair computes.
    pub target: Option<u64>,
    /// The target as `name+0x1c`, when a symbol covers it.
    pub target_symbol: Option<String>,
    /// This is the instruction at (or containing) the pc asked about.
    pub at_pc: bool,
}

impl fmt::Display for Instruction {
    /// `0x80000088: e7 80 c0 f9  jalr ra, ra, -0x64  # 0x80000020 <...acquire>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes: Vec<String> = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        write!(
            f,
            "{:#x}: {:<11} {} {}",
            self.address,
            bytes.join(" "),
            self.mnemonic,
            self.operands
        )?;
        // Branch targets are already in the operands; annotate the rest (auipc pairs, jalr).
        if let Some(t) = self
            .target
            .filter(|t| !self.operands.contains(&format!("{t:#x}")))
        {
            write!(f, "  # {t:#x}")?;
            if let Some(s) = &self.target_symbol {
                write!(f, " <{s}>")?;
            }
        }
        Ok(())
    }
}

/// Instructions around a pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disassembly {
    pub pc: u64,
    /// The pc as `function+0x24`, when a symbol covers it.
    pub function: Option<String>,
    pub instructions: Vec<Instruction>,
    /// Decoding started at a known instruction boundary (the function or section start), so
    /// the instructions before the pc are real. When false, decoding started at the pc.
    pub synced: bool,
    /// The pc is the first byte of an instruction. False for a pc inside one (a corrupt pc, or
    /// a return address minus one).
    pub pc_on_boundary: bool,
}

/// An operand with register names resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Reg(String),
    Imm(i64),
    Mem { base: String, disp: i64 },
}

/// One instruction as decoded, before presentation.
#[derive(Clone, Debug)]
pub(crate) struct Decoded {
    pub address: u64,
    pub bytes: Vec<u8>,
    pub mnemonic: String,
    pub op_str: String,
    pub ops: Vec<Op>,
}

impl Decoded {
    pub fn end(&self) -> u64 {
        self.address + self.bytes.len() as u64
    }

    pub fn reg(&self, i: usize) -> Option<&str> {
        match self.ops.get(i) {
            Some(Op::Reg(r)) => Some(r),
            _ => None,
        }
    }
}

/// Branches and jumps whose last operand is an offset from their own address.
const PC_RELATIVE: &[&str] = &[
    "jal", "j", "c.j", "c.jal", "beq", "bne", "blt", "bge", "bltu", "bgeu", "beqz", "bnez", "blez",
    "bgez", "bltz", "bgtz", "bgt", "ble", "bgtu", "bleu", "c.beqz", "c.bnez",
];

/// A RISC-V capstone with compressed instructions and operand details.
pub(crate) fn capstone() -> Result<Capstone, SymbolsError> {
    Capstone::new()
        .riscv()
        .mode(ArchMode::RiscV64)
        // Without it capstone stops at the first compressed instruction.
        .extra_mode([ArchExtraMode::RiscVC].into_iter())
        .detail(true)
        .build()
        .map_err(|e| SymbolsError::Disassembler(e.to_string()))
}

/// Decodes all of `bytes` (at `addr`) in order. Bytes capstone cannot decode become a
/// `.2byte` pseudo-instruction, and decoding resumes two bytes on.
pub(super) fn decode(bytes: &[u8], addr: u64) -> Result<Vec<Decoded>, SymbolsError> {
    decode_with(&capstone()?, bytes, addr)
}

/// [`decode`] with a capstone the caller keeps (decoding many functions).
pub(crate) fn decode_with(
    cs: &Capstone,
    bytes: &[u8],
    addr: u64,
) -> Result<Vec<Decoded>, SymbolsError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < bytes.len() {
        let insns = cs
            .disasm_all(&bytes[off..], addr + off as u64)
            .map_err(|e| SymbolsError::Disassembler(e.to_string()))?;
        let mut advanced = 0usize;
        for insn in insns.iter() {
            let detail = cs
                .insn_detail(insn)
                .map_err(|e| SymbolsError::Disassembler(e.to_string()))?;
            let reg = |r| cs.reg_name(r).unwrap_or_else(|| "?".into());
            let ops = detail
                .arch_detail()
                .operands()
                .into_iter()
                .filter_map(|op| match op {
                    capstone::arch::ArchOperand::RiscVOperand(op) => Some(op),
                    #[allow(unreachable_patterns)] // other arches, when capstone enables them
                    _ => None,
                })
                .filter_map(|op| match op {
                    RiscVOperand::Reg(r) => Some(Op::Reg(reg(r))),
                    RiscVOperand::Imm(i) => Some(Op::Imm(i)),
                    RiscVOperand::Mem(m) => Some(Op::Mem {
                        base: reg(m.base()),
                        disp: m.disp(),
                    }),
                    RiscVOperand::Invalid => None,
                })
                .collect();
            out.push(Decoded {
                address: insn.address(),
                bytes: insn.bytes().to_vec(),
                mnemonic: insn.mnemonic().unwrap_or("?").to_owned(),
                op_str: insn.op_str().unwrap_or("").to_owned(),
                ops,
            });
            advanced += insn.len();
        }
        off += advanced;
        if off < bytes.len() {
            // Undecodable: show two bytes as data (RISC-V instructions are 2-byte aligned).
            let n = 2.min(bytes.len() - off);
            let raw = &bytes[off..off + n];
            let value = raw.iter().rev().fold(0u32, |v, b| (v << 8) | u32::from(*b));
            out.push(Decoded {
                address: addr + off as u64,
                bytes: raw.to_vec(),
                mnemonic: if n == 2 { ".2byte" } else { ".byte" }.into(),
                op_str: format!("{value:#x}"),
                ops: Vec::new(),
            });
            off += n;
        }
    }
    Ok(out)
}

/// The value an `auipc rd, imm` puts in `rd`.
pub(super) fn auipc_value(d: &Decoded) -> Option<(&str, u64)> {
    if d.mnemonic != "auipc" {
        return None;
    }
    let rd = d.reg(0)?;
    let Some(Op::Imm(imm)) = d.ops.get(1) else {
        return None;
    };
    // A 20-bit field, which capstone may report unsigned: sign-extend it.
    let imm20 = ((imm & 0xfffff) << 44) >> 44;
    Some((rd, d.address.wrapping_add_signed(imm20 << 12)))
}

impl Symbols {
    /// Disassembles `before` instructions before `pc`, the one at `pc`, and `after` after it,
    /// reading code through `mem` (the live guest, or [`Symbols::elf_memory`] for the code as
    /// built). Decoding starts at the start of the function containing `pc` (a variable-length
    /// ISA cannot be decoded backwards), so the instructions before `pc` are the real ones.
    pub fn disassemble_around(
        &self,
        pc: u64,
        before: usize,
        after: usize,
        mem: &mut dyn GuestMemory,
    ) -> Result<Disassembly, SymbolsError> {
        let (before, after) = (before.min(MAX_CONTEXT), after.min(MAX_CONTEXT));
        let function = self.function_at(pc);
        let text = self.text_range(pc);
        let (start, synced) = match (function, text) {
            (Some(f), _) if f.offset <= MAX_BACK => (f.symbol.address, true),
            (_, Some(t)) if pc - t.start <= MAX_BACK => (t.start, true),
            _ => (pc, false),
        };
        // Four bytes per instruction after the pc is enough even if none is compressed.
        let mut end = pc.saturating_add(4 * (after as u64 + 1));
        if let Some(t) = text {
            end = end.min(t.end);
        }
        let mut bytes = vec![0u8; (end - start) as usize];
        if let Err(e) = mem.read(start, &mut bytes) {
            // Memory may end soon after the pc (a region's edge): settle for less after it.
            let shorter = [pc + 4, pc + 2]
                .into_iter()
                .filter(|&e| e < end)
                .find(|&e| {
                    bytes.truncate((e - start) as usize);
                    mem.read(start, &mut bytes).is_ok()
                });
            if shorter.is_none() {
                return Err(e.into());
            }
        }
        let decoded = decode(&bytes, start)?;

        let Some(at) = decoded.iter().position(|d| d.address <= pc && pc < d.end()) else {
            return Err(self.not_text(pc));
        };
        let first = at.saturating_sub(before);
        let last = (at + after + 1).min(decoded.len());
        let mut instructions = Vec::with_capacity(last - first);
        for i in first..last {
            let d = &decoded[i];
            let prev = i.checked_sub(1).map(|p| &decoded[p]);
            instructions.push(self.present(d, prev, i == at));
        }
        Ok(Disassembly {
            pc,
            function: function.map(|f| f.to_string()),
            instructions,
            synced,
            pc_on_boundary: decoded[at].address == pc,
        })
    }

    fn present(&self, d: &Decoded, prev: Option<&Decoded>, at_pc: bool) -> Instruction {
        let mut operands = d.op_str.clone();
        let mut target = None;
        if PC_RELATIVE.contains(&d.mnemonic.as_str()) {
            if let Some(Op::Imm(off)) = d.ops.last() {
                let t = d.address.wrapping_add_signed(*off);
                let shown = match self.symbol_at(t) {
                    Some(hit) => format!("{t:#x} <{hit}>"),
                    None => format!("{t:#x}"),
                };
                operands = match operands.rfind(", ") {
                    Some(i) => format!("{}, {shown}", &operands[..i]),
                    None => shown,
                };
                target = Some(t);
            }
        } else if let Some((rd, base)) = prev.and_then(auipc_value) {
            // auipc + addi/jalr/load/store: a pc-relative address or call.
            target = match (d.mnemonic.as_str(), d.ops.as_slice()) {
                ("addi" | "jalr", [Op::Reg(_), Op::Reg(rs), Op::Imm(imm)]) if rs == rd => {
                    Some(base.wrapping_add_signed(*imm))
                }
                (_, [Op::Reg(_), Op::Mem { base: rs, disp }]) if rs == rd => {
                    Some(base.wrapping_add_signed(*disp))
                }
                _ => None,
            };
        }
        let target_symbol = target
            .and_then(|t| self.symbol_at(t))
            .map(|h| h.to_string());
        Instruction {
            address: d.address,
            bytes: d.bytes.clone(),
            mnemonic: d.mnemonic.clone(),
            operands,
            target,
            target_symbol,
            at_pc,
        }
    }
}
