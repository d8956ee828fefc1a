//! RISC-V instructions as the plan needs them: decoded with capstone into mnemonic and
//! operands, and the few questions the plan asks of them (a test-and-set? a store? a return? a
//! call, and to where?).

use capstone::Capstone;

use super::PluginError;

/// One decoded instruction.
#[derive(Clone, Debug)]
pub(super) struct Insn {
    pub addr: u64,
    pub len: u64,
    pub mnemonic: String,
    pub ops: Vec<Op>,
}

pub(super) use crate::symbols::Op;

impl Insn {
    pub fn reg(&self, i: usize) -> Option<&str> {
        match self.ops.get(i) {
            Some(Op::Reg(r)) => Some(r),
            _ => None,
        }
    }
    pub fn next(&self) -> u64 {
        self.addr + self.len
    }
    pub fn base(&self) -> Option<&str> {
        self.mem().map(|(b, _)| b)
    }
    /// The memory operand: (base register, displacement).
    pub fn mem(&self) -> Option<(&str, i64)> {
        self.ops.iter().find_map(|o| match o {
            Op::Mem { base, disp } => Some((base.as_str(), *disp)),
            _ => None,
        })
    }
    pub fn is_load(&self) -> bool {
        matches!(
            self.mnemonic.as_str(),
            "lb" | "lh"
                | "lw"
                | "ld"
                | "lbu"
                | "lhu"
                | "lwu"
                | "c.lw"
                | "c.ld"
                | "c.lwsp"
                | "c.ldsp"
        )
    }
    pub fn is_tas(&self) -> bool {
        let m = self.mnemonic.as_str();
        [
            "amoswap.w",
            "amoswap.d",
            "amoor.w",
            "amoor.d",
            "sc.w",
            "sc.d",
        ]
        .iter()
        .any(|p| m.starts_with(p))
            && self.reg(0).is_some_and(|r| r != "zero")
    }
    /// A test-and-set as compilers emit it for a lock outside the lock functions:
    /// `__sync_lock_test_and_set` is `amoswap.w.aq`, Rust's `swap(true, Acquire)` `amoor.w.aq`.
    /// (`sc` also appears in compare-and-swap loops of counters, so it is not reported.)
    pub fn is_raw_tas(&self) -> bool {
        let m = self.mnemonic.as_str();
        (m.starts_with("amoswap.") || m.starts_with("amoor.")) && m.contains(".aq") && self.is_tas()
    }
    pub fn is_store(&self) -> bool {
        matches!(
            self.mnemonic.as_str(),
            "sb" | "sh" | "sw" | "sd" | "c.sw" | "c.sd" | "c.swsp" | "c.sdsp"
        )
    }
    /// A store to the stack (a prologue's register save).
    pub fn is_stack_store(&self) -> bool {
        matches!(self.mnemonic.as_str(), "c.swsp" | "c.sdsp") || self.base() == Some("sp")
    }
    pub fn is_return(&self) -> bool {
        match self.mnemonic.as_str() {
            "ret" | "c.jr" => self.mnemonic == "ret" || self.reg(0) == Some("ra"),
            "jalr" => {
                self.reg(0) == Some("zero") && self.ops.iter().any(|o| o == &Op::Reg("ra".into()))
            }
            _ => false,
        }
    }
    /// A conditional branch on `reg` against zero: Some(taken_means_zero).
    pub fn branch_on_zero(&self, reg: &str) -> Option<(bool, u64)> {
        let target = |imm: i64| self.addr.wrapping_add_signed(imm);
        match (self.mnemonic.as_str(), self.ops.as_slice()) {
            ("beqz" | "c.beqz", [Op::Reg(r), Op::Imm(i)]) if r == reg => Some((true, target(*i))),
            ("bnez" | "c.bnez", [Op::Reg(r), Op::Imm(i)]) if r == reg => Some((false, target(*i))),
            ("beq", [Op::Reg(a), Op::Reg(b), Op::Imm(i)])
                if (a == reg && b == "zero") || (b == reg && a == "zero") =>
            {
                Some((true, target(*i)))
            }
            ("bne", [Op::Reg(a), Op::Reg(b), Op::Imm(i)])
                if (a == reg && b == "zero") || (b == reg && a == "zero") =>
            {
                Some((false, target(*i)))
            }
            _ => None,
        }
    }
    pub fn is_control(&self) -> bool {
        let m = self.mnemonic.as_str();
        m.starts_with('b')
            || m.starts_with("c.b")
            || m.starts_with('j')
            || m.starts_with("c.j")
            || m == "ret"
    }
    /// The static target of a direct jump or call: (target, links to ra).
    pub fn jump(&self) -> Option<(u64, bool)> {
        let t = |i: i64| self.addr.wrapping_add_signed(i);
        match (self.mnemonic.as_str(), self.ops.as_slice()) {
            ("jal", [Op::Imm(i)]) => Some((t(*i), true)),
            ("jal", [Op::Reg(rd), Op::Imm(i)]) => Some((t(*i), rd == "ra")),
            ("j" | "c.j", [Op::Imm(i)]) => Some((t(*i), false)),
            _ => None,
        }
    }
}

/// The symbols' capstone (RISC-V with compressed instructions and operand details).
pub(super) fn capstone() -> Result<Capstone, PluginError> {
    crate::symbols::capstone().map_err(|e| PluginError::Disassembler(e.to_string()))
}

/// Decodes `bytes` at `addr` with the symbols' decoder; undecodable halfwords are skipped.
pub(super) fn decode(cs: &Capstone, bytes: &[u8], addr: u64) -> Result<Vec<Insn>, PluginError> {
    let decoded = crate::symbols::decode_with(cs, bytes, addr)
        .map_err(|e| PluginError::Disassembler(e.to_string()))?;
    Ok(decoded
        .into_iter()
        .filter(|d| !d.mnemonic.starts_with('.'))
        .map(|d| Insn {
            addr: d.address,
            len: d.bytes.len() as u64,
            mnemonic: d.mnemonic,
            ops: d.ops,
        })
        .collect())
}

/// A code address an instruction computes statically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flow {
    /// A direct call or jump to the target; `true` when it links `ra` (a call).
    Jump(u64, bool),
    /// `auipc` + `addi`: the address is taken into a register (an indirect call may follow).
    AddressOf(u64),
}

/// The static control flow of `insn` (`prev` is the instruction before it, for `auipc` pairs).
pub(super) fn flow(prev: Option<&Insn>, insn: &Insn) -> Option<Flow> {
    if let Some((t, link)) = insn.jump() {
        return Some(Flow::Jump(t, link));
    }
    let (rd, base) = prev.and_then(auipc)?;
    match (insn.mnemonic.as_str(), insn.ops.as_slice()) {
        ("jalr", [Op::Reg(l), Op::Reg(rs), Op::Imm(imm)]) if rs == rd => {
            Some(Flow::Jump(base.wrapping_add_signed(*imm), l == "ra"))
        }
        ("jalr", [Op::Reg(rs), Op::Imm(imm)]) if rs == rd => {
            Some(Flow::Jump(base.wrapping_add_signed(*imm), true))
        }
        ("jalr", [Op::Mem { base: rs, disp }]) if rs == rd => {
            Some(Flow::Jump(base.wrapping_add_signed(*disp), true))
        }
        ("jalr", [Op::Reg(l), Op::Mem { base: rs, disp }]) if rs == rd => {
            Some(Flow::Jump(base.wrapping_add_signed(*disp), l == "ra"))
        }
        ("addi" | "c.addi", [Op::Reg(_), Op::Reg(rs), Op::Imm(imm)]) if rs == rd => {
            Some(Flow::AddressOf(base.wrapping_add_signed(*imm)))
        }
        _ => None,
    }
}

/// The value an `auipc rd, imm` puts in `rd`.
pub(super) fn auipc(i: &Insn) -> Option<(&str, u64)> {
    if i.mnemonic != "auipc" {
        return None;
    }
    let rd = i.reg(0)?;
    let Some(Op::Imm(imm)) = i.ops.get(1) else {
        return None;
    };
    let imm20 = ((imm & 0xfffff) << 44) >> 44;
    Some((rd, i.addr.wrapping_add_signed(imm20 << 12)))
}

/// The instruction reached only when the test-and-set at `insns[at]` succeeded: follow its
/// result register through copies and masks to the first branch on it.
pub(super) fn success_pc(insns: &[Insn], at: usize) -> Option<u64> {
    let mut regs: Vec<String> = vec![insns[at].reg(0)?.to_owned()];
    for i in insns.iter().skip(at + 1).take(12) {
        if let Some((zero_taken, target)) = regs.iter().find_map(|r| i.branch_on_zero(r)) {
            // amoswap/amoor: old value 0 means acquired; sc: 0 means the store happened.
            return Some(if zero_taken { target } else { i.next() });
        }
        if i.is_control() {
            return None;
        }
        let Some(rd) = i.reg(0) else { continue };
        if i.is_store() || i.mnemonic.starts_with("fence") {
            continue;
        }
        // A copy of a tracked value keeps it tracked (`sext.w a5,a5`, `zext.b a0,a2`,
        // `andi a0,a0,0xff`); compressed forms (`c.andi a0,0xff`) read their destination.
        let copy = matches!(
            i.mnemonic.as_str(),
            "zext.b"
                | "zext.h"
                | "zext.w"
                | "sext.w"
                | "sext.b"
                | "andi"
                | "c.andi"
                | "mv"
                | "c.mv"
                | "addiw"
                | "c.addiw"
        );
        let src = if i.mnemonic.starts_with("c.") && i.mnemonic != "c.mv" {
            Some(rd)
        } else {
            i.reg(1)
        };
        let tracked = |r: &str| regs.iter().any(|t| t == r);
        if copy && src.is_some_and(tracked) {
            if !tracked(rd) {
                regs.push(rd.to_owned());
            }
        } else {
            // Anything else that writes a tracked register ends its tracking.
            regs.retain(|r| r != rd);
            if regs.is_empty() {
                return None;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(addr: u64, len: u64, mnemonic: &str, ops: &[Op]) -> Insn {
        Insn {
            addr,
            len,
            mnemonic: mnemonic.into(),
            ops: ops.to_vec(),
        }
    }
    fn r(s: &str) -> Op {
        Op::Reg(s.into())
    }

    #[test]
    fn success_follows_the_result_through_copies() {
        // xv6: amoswap.w.aq a5,a5,(s1); sext.w a5,a5; bnez a5,loop; fence  -> the fence.
        let mem = Op::Mem {
            base: "s1".into(),
            disp: 0,
        };
        let xv6 = [
            insn(0x100, 4, "amoswap.w.aq", &[r("a5"), r("a5"), mem.clone()]),
            insn(0x104, 2, "sext.w", &[r("a5"), r("a5")]),
            insn(0x106, 2, "c.bnez", &[r("a5"), Op::Imm(-6)]),
            insn(0x108, 4, "fence", &[]),
        ];
        assert_eq!(success_pc(&xv6, 0), Some(0x108));
        // Rust: amoor.w.aq a2,a0,(a3); zext.b a2,a2; beqz a2,done  -> done.
        let rust = [
            insn(0x200, 4, "amoor.w.aq", &[r("a2"), r("a0"), mem.clone()]),
            insn(0x204, 4, "zext.b", &[r("a2"), r("a2")]),
            insn(0x208, 2, "c.beqz", &[r("a2"), Op::Imm(0x26)]),
        ];
        assert_eq!(success_pc(&rust, 0), Some(0x22e));
        // The result is overwritten before any branch: unknown.
        let lost = [
            insn(0x300, 4, "amoswap.w.aq", &[r("a5"), r("a5"), mem]),
            insn(0x304, 2, "li", &[r("a5"), Op::Imm(1)]),
            insn(0x306, 2, "c.bnez", &[r("a5"), Op::Imm(-6)]),
        ];
        assert_eq!(success_pc(&lost, 0), None);
    }
}
