//! Instructions with their operands, for analyses that reason about what code does: the base
//! register of a faulting load, the address an atomic works on, the calls a function makes and
//! the value it passes in `a0`. Decoded by [`Symbols::function_instructions`] (`code`).
//!
//! [`Symbols::function_instructions`]: super::Symbols::function_instructions

/// One operand, register names as capstone spells them (`a5`, `s0`, `zero`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    Reg(String),
    Imm(i64),
    Mem { base: String, disp: i64 },
}

/// One decoded instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insn {
    pub address: u64,
    pub len: u8,
    /// As capstone names it; compressed instructions keep their `c.` prefix.
    pub mnemonic: String,
    /// Mnemonic and operands as capstone prints them: `lw a3, 0x48(a5)`.
    pub text: String,
    pub operands: Vec<Operand>,
    /// Where a call or jump goes, or the address an `auipc` pair computes (`la`, `call`).
    pub target: Option<u64>,
}

/// What an instruction does to memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryUse {
    Load,
    Store,
    Atomic,
}

impl Insn {
    /// The address an instruction one past this one starts at.
    pub fn end(&self) -> u64 {
        self.address + u64::from(self.len)
    }

    /// The register written first (the destination), when the first operand is one.
    pub fn dest(&self) -> Option<&str> {
        match self.operands.first() {
            Some(Operand::Reg(r)) => Some(r),
            _ => None,
        }
    }

    /// A load, store or atomic: what it does, its base register and displacement, and the
    /// bytes it moves. Compressed forms (`c.lw a3, 0x48(a5)`, operands `a3, 0x48, a5` in some
    /// capstone versions) are normalized.
    pub fn memory(&self) -> Option<(MemoryUse, String, i64, Option<u8>)> {
        let m = self.mnemonic.trim_start_matches("c.");
        let stem = m.split('.').next().unwrap_or(m);
        let (kind, size) = match stem {
            "lb" | "lbu" => (MemoryUse::Load, Some(1)),
            "lh" | "lhu" => (MemoryUse::Load, Some(2)),
            "lw" | "lwu" | "lwsp" | "flw" | "flwsp" => (MemoryUse::Load, Some(4)),
            "ld" | "ldsp" | "fld" | "fldsp" => (MemoryUse::Load, Some(8)),
            "sb" => (MemoryUse::Store, Some(1)),
            "sh" => (MemoryUse::Store, Some(2)),
            "sw" | "swsp" | "fsw" | "fswsp" => (MemoryUse::Store, Some(4)),
            "sd" | "sdsp" | "fsd" | "fsdsp" => (MemoryUse::Store, Some(8)),
            s if s.starts_with("amo") || s == "lr" || s == "sc" => {
                let size = match m.split('.').nth(1) {
                    Some("w") => Some(4),
                    Some("d") => Some(8),
                    _ => None,
                };
                (MemoryUse::Atomic, size)
            }
            _ => return None,
        };
        let (base, disp) = match self.operands.as_slice() {
            [.., Operand::Mem { base, disp }] => (base.clone(), *disp),
            [_, Operand::Imm(disp), Operand::Reg(base)] => (base.clone(), *disp),
            // amoswap.w rd, rs2, (rs1) as three registers.
            [Operand::Reg(_), Operand::Reg(_), Operand::Reg(base)] if kind == MemoryUse::Atomic => {
                (base.clone(), 0)
            }
            [Operand::Reg(_), Operand::Reg(base)] if kind == MemoryUse::Atomic => (base.clone(), 0),
            _ => return None,
        };
        let base = match base.as_str() {
            "x0" => "zero".to_string(),
            _ => base,
        };
        Some((kind, base, disp, size))
    }

    /// True for a call: `jal ra, f`, `jalr ra, ...` (an `auipc ra` pair), `c.jal`, `c.jalr`.
    pub fn is_call(&self) -> bool {
        match self.mnemonic.as_str() {
            "jal" | "jalr" => self.dest() == Some("ra") || self.operands.len() == 1,
            "c.jal" | "c.jalr" => true,
            _ => false,
        }
    }
}

/// The RISC-V integer register number of a name (`a5` is 15), for reading saved registers.
pub fn register_number(name: &str) -> Option<usize> {
    const ABI: [&str; 32] = [
        "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4",
        "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4",
        "t5", "t6",
    ];
    if name == "fp" {
        return Some(8);
    }
    if let Some(i) = ABI.iter().position(|r| *r == name) {
        return Some(i);
    }
    name.strip_prefix('x')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n < 32)
}
