//! A function's instructions with their operands and targets, decoded once from the ELF.

use std::sync::Arc;

use super::disasm::{auipc_value, decode, Op, MAX_BACK};
use super::elf::Symbols;
use super::error::SymbolsError;
use super::insn::{Insn, Operand};
use super::memo::try_cached;

impl Symbols {
    /// Every instruction of the function containing `pc`, decoded from the ELF's code, with
    /// call and `auipc`-pair targets. Memoized per function.
    pub fn function_instructions(&self, pc: u64) -> Result<Arc<[Insn]>, SymbolsError> {
        let Some((func, end)) = self.function_extent(pc) else {
            return Err(self.not_text(pc));
        };
        let start = func.symbol.address;
        try_cached(&self.instructions, start, || {
            let end = end.min(start.saturating_add(MAX_BACK));
            let bytes = self.read_static(start, (end - start) as usize)?;
            let decoded = decode(&bytes, start)?;
            let mut out = Vec::with_capacity(decoded.len());
            for (i, d) in decoded.iter().enumerate() {
                let operands: Vec<Operand> = d
                    .ops
                    .iter()
                    .map(|o| match o {
                        Op::Reg(r) => Operand::Reg(r.clone()),
                        Op::Imm(i) => Operand::Imm(*i),
                        Op::Mem { base, disp } => Operand::Mem {
                            base: base.clone(),
                            disp: *disp,
                        },
                    })
                    .collect();
                let mut target = None;
                let pc_relative = matches!(d.mnemonic.as_str(), "jal" | "j" | "c.j" | "c.jal")
                    || d.mnemonic.starts_with('b')
                    || d.mnemonic.starts_with("c.b");
                if pc_relative {
                    if let Some(Op::Imm(off)) = d.ops.last() {
                        target = Some(d.address.wrapping_add_signed(*off));
                    }
                } else if let Some((rd, base)) =
                    i.checked_sub(1).and_then(|p| auipc_value(&decoded[p]))
                {
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
                let text = if d.op_str.is_empty() {
                    d.mnemonic.clone()
                } else {
                    format!("{} {}", d.mnemonic, d.op_str)
                };
                out.push(Insn {
                    address: d.address,
                    len: d.bytes.len() as u8,
                    mnemonic: d.mnemonic.clone(),
                    text,
                    operands,
                    target,
                });
            }
            Ok(out.into())
        })
    }

    /// The instruction at `pc` (which must start one), from the ELF's code.
    pub fn instruction_at(&self, pc: u64) -> Result<Insn, SymbolsError> {
        let all = self.function_instructions(pc)?;
        all.iter()
            .find(|i| i.address == pc)
            .cloned()
            .ok_or_else(|| self.not_text(pc))
    }
}
