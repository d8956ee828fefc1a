//! Calls in the kernel's code: the calls a function made before the point a frame is at, and
//! the argument a call passed in `a0`, as far as the instructions before it and the frame's
//! registers tell (`auipc`/`addi` pairs for constants, `mv a0, s1` for a saved pointer).

use super::regs::FrameRegs;
use crate::memory::GuestMemory;
use crate::symbols::{register_number, Insn, MemoryUse, Operand, Symbols};

/// Instructions looked back from a call for the one that set its argument.
const ARG_WINDOW: usize = 12;
/// Nested register copies followed when reconstructing an argument.
const ARG_DEPTH: u32 = 4;

/// One call made by a function: where it is, where it returns, what it called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSite {
    pub address: u64,
    /// The return address: the instruction after the call (symbolize `- 1`).
    pub ret: u64,
    pub target: u64,
}

/// True when the instruction ends straight-line code: a call, branch, jump or return.
fn ends_block(i: &Insn) -> bool {
    let m = i.mnemonic.as_str();
    i.is_call()
        || m.starts_with('b')
        || m.starts_with("c.b")
        || m.starts_with('j')
        || m.starts_with("c.j")
        || m == "ret"
}

/// The calls to any of `targets` in the function containing `before`, at addresses below
/// `before`, nearest first.
pub fn calls_before(symbols: &Symbols, before: u64, targets: &[u64]) -> Vec<CallSite> {
    calls_to(symbols, before, targets, before)
}

/// Every call to any of `targets` in the function containing `pc`, last first.
pub fn calls_in(symbols: &Symbols, pc: u64, targets: &[u64]) -> Vec<CallSite> {
    calls_to(symbols, pc, targets, u64::MAX)
}

fn calls_to(symbols: &Symbols, pc: u64, targets: &[u64], before: u64) -> Vec<CallSite> {
    let Ok(code) = symbols.function_instructions(pc) else {
        return Vec::new();
    };
    let mut out: Vec<CallSite> = code
        .iter()
        .filter(|i| i.address < before && i.is_call())
        .filter_map(|i| {
            let t = i.target?;
            targets.contains(&t).then_some(CallSite {
                address: i.address,
                ret: i.end(),
                target: t,
            })
        })
        .collect();
    out.reverse();
    out
}

/// The value `a0` held when the call at `call` was made, from the instructions just before it:
/// constants (`auipc`+`addi`, `li`), and copies of registers `regs` knows (callee-saved ones of
/// the frame, which the callee preserved). `mem` is read for a load from a known address.
pub fn argument_a0(
    symbols: &Symbols,
    call: u64,
    regs: Option<&FrameRegs>,
    mem: Option<&mut dyn GuestMemory>,
) -> Option<u64> {
    let code = symbols.function_instructions(call).ok()?;
    let at = code.iter().position(|i| i.address == call)?;
    let mut mem = mem;
    value_before(&code, at, "a0", regs, &mut mem, 0)
}

fn value_before(
    code: &[Insn],
    at: usize,
    reg: &str,
    regs: Option<&FrameRegs>,
    mem: &mut Option<&mut dyn GuestMemory>,
    depth: u32,
) -> Option<u64> {
    if reg == "zero" {
        return Some(0);
    }
    if depth > ARG_DEPTH {
        return None;
    }
    let start = at.saturating_sub(ARG_WINDOW);
    for j in (start..at).rev() {
        let i = &code[j];
        if ends_block(i) {
            break;
        }
        if i.dest() != Some(reg) {
            continue;
        }
        if matches!(i.memory(), Some((MemoryUse::Store, ..))) {
            continue;
        }
        if let Some(t) = i.target {
            return Some(t);
        }
        let m = i.mnemonic.trim_start_matches("c.");
        return match (m, &i.operands[1..]) {
            ("mv", [Operand::Reg(src)]) => value_before(code, j, src, regs, mem, depth + 1),
            ("addi" | "addi4spn" | "addiw", [Operand::Reg(src), Operand::Imm(imm)]) => {
                value_before(code, j, src, regs, mem, depth + 1)
                    .map(|v| v.wrapping_add_signed(*imm))
            }
            ("addi" | "addiw", [Operand::Imm(imm)]) => {
                value_before(code, j, reg, regs, mem, depth + 1)
                    .map(|v| v.wrapping_add_signed(*imm))
            }
            ("li", [Operand::Imm(imm)]) => Some(*imm as u64),
            ("lui", [Operand::Imm(imm)]) => Some(((*imm << 12) as i32) as i64 as u64),
            ("ld", _) => {
                let (_, base, disp, _) = i.memory()?;
                let addr =
                    value_before(code, j, &base, regs, mem, depth + 1)?.wrapping_add_signed(disp);
                let m = mem.as_deref_mut()?;
                let mut b = [0u8; 8];
                m.read(addr, &mut b).ok()?;
                Some(u64::from_le_bytes(b))
            }
            _ => None,
        };
    }
    // Not set in the window: the register's value on entry to the window, if the frame's
    // registers know it and it is one a call preserves.
    let n = register_number(reg)?;
    let preserved = matches!(n, 2 | 8 | 9 | 18..=27);
    if preserved {
        regs?.get(n)
    } else {
        None
    }
}
