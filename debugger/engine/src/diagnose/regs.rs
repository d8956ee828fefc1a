//! The registers of every frame of a stopped hart's stack, so that DWARF locations can be
//! evaluated in callers too: `lk` of an `acquire` the hart is three calls into, the variables of
//! the function a trap interrupted.
//!
//! Written here because the kernels have no usable CFI at run time and gimli's unwinder needs it:
//! with frame pointers, a function's prologue (`addi sp,sp,-N; sd s1,off(sp); addi s0,sp,N`)
//! says where it saved each callee-saved register, relative to its frame pointer. Walking the
//! frames outward, a caller's callee-saved registers are the callee's saved copies, or still the
//! live values if the callee never saved them; caller-saved registers are unknown in callers. A
//! trap vector's save area gives back every register it stored of the interrupted code.

use crate::memory::GuestMemory;
use crate::model::FullRegs;
use crate::symbols::types::FrameContext;
use crate::symbols::{register_number, Insn, MemoryUse, Operand, RawFrame, RawFrameKind, Symbols};

/// Registers a callee must preserve (ra is restored by the return itself): s0-s11, sp.
const CALLEE_SAVED: [usize; 13] = [2, 8, 9, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27];
/// Instructions of a prologue or trap vector scanned at most.
const MAX_SCAN: usize = 256;

/// One frame's registers: the values known and the frame's CFA (its caller's `sp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRegs {
    pub x: [u64; 32],
    /// Bit `n` set when `x[n]` is known in this frame.
    pub known: u32,
    /// The canonical frame address: `s0` of a function past its prologue.
    pub cfa: Option<u64>,
}

impl FrameRegs {
    /// Every register as the stub gave it.
    pub fn from_stop(full: &FullRegs) -> Self {
        let mut x = [0u64; 32];
        for (i, v) in full.x.iter().take(32).enumerate() {
            x[i] = *v;
        }
        let known = if full.x.len() >= 32 { !0 } else { 1 };
        FrameRegs {
            x,
            known,
            cfa: None,
        }
    }

    pub fn get(&self, n: usize) -> Option<u64> {
        match n {
            0 => Some(0),
            1..=31 if self.known & (1 << n) != 0 => Some(self.x[n]),
            _ => None,
        }
    }

    /// A register by name (`a5`, `s1`, `zero`).
    pub fn named(&self, name: &str) -> Option<u64> {
        self.get(register_number(name)?)
    }

    fn set(&mut self, n: usize, v: u64) {
        if (1..32).contains(&n) {
            self.x[n] = v;
            self.known |= 1 << n;
        }
    }

    fn forget_caller_saved(&mut self) {
        let mut keep = 1u32;
        for r in CALLEE_SAVED {
            keep |= 1 << r;
        }
        self.known &= keep;
    }
}

/// A frame's registers and memory, for [`crate::symbols::types::Types::evaluate`].
pub struct RegContext<'a> {
    pub regs: &'a FrameRegs,
    pub mem: &'a mut dyn GuestMemory,
}

impl FrameContext for RegContext<'_> {
    fn register(&mut self, dwarf_reg: u16) -> Option<u64> {
        self.regs.get(dwarf_reg as usize)
    }

    fn cfa(&mut self) -> Option<u64> {
        self.regs.cfa
    }

    fn read_memory(&mut self, addr: u64, size: u8) -> Option<u64> {
        let n = usize::from(size).clamp(1, 8);
        let mut b = [0u8; 8];
        self.mem.read(addr, &mut b[..n]).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// What a prologue or a trap vector does before its first call: the stack it allocates and
/// where it stores each register (offsets from the new `sp`).
#[derive(Debug, Default)]
struct Saves {
    frame: u64,
    /// (register, offset from the allocated sp).
    stores: Vec<(usize, i64)>,
    /// Stores relative to `s0` once it is the frame pointer (offsets from the CFA).
    from_fp: Vec<(usize, i64)>,
}

fn scan_saves(code: &[Insn], limit: Option<u64>) -> Saves {
    let mut s = Saves::default();
    let mut fp_set = false;
    for i in code.iter().take(MAX_SCAN) {
        if limit.is_some_and(|l| i.address >= l) {
            break;
        }
        let m = i.mnemonic.as_str();
        if i.is_call()
            || m.starts_with('b')
            || m.starts_with("c.b")
            || m.starts_with('j')
            || m.starts_with("c.j")
            || m == "ret"
            || m == "mret"
            || m == "sret"
        {
            break;
        }
        match (m, i.operands.as_slice()) {
            ("addi" | "c.addi" | "c.addi16sp", [Operand::Reg(d), .., Operand::Imm(imm)])
                if d == "sp" && *imm < 0 && s.frame == 0 =>
            {
                s.frame = imm.unsigned_abs();
            }
            ("addi" | "c.addi4spn", [Operand::Reg(d), Operand::Reg(b), Operand::Imm(_)])
                if (d == "s0" || d == "fp") && b == "sp" =>
            {
                fp_set = true;
            }
            _ => {
                if let Some((MemoryUse::Store, base, disp, Some(8))) = i.memory() {
                    let Some(Operand::Reg(src)) = i.operands.first() else {
                        continue;
                    };
                    let Some(r) = register_number(src) else {
                        continue;
                    };
                    if base == "sp" {
                        s.stores.push((r, disp));
                    } else if fp_set && (base == "s0" || base == "fp") {
                        s.from_fp.push((r, disp));
                    }
                }
            }
        }
    }
    s
}

fn read_word(mem: &mut dyn GuestMemory, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read(addr, &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// The registers of each frame of `frames` (innermost first, as [`Symbols::unwind`] returns
/// them with their frame pointers), starting from the stop's registers. `out[k]` belongs to
/// `frames[k]`.
pub fn frame_registers(
    symbols: &Symbols,
    frames: &[RawFrame],
    stop: &FrameRegs,
    mem: &mut dyn GuestMemory,
) -> Vec<FrameRegs> {
    let mut out: Vec<FrameRegs> = Vec::with_capacity(frames.len());
    let mut cur = stop.clone();
    for (k, f) in frames.iter().enumerate() {
        let lookup = f.lookup_pc();
        let framed = symbols.frame_is_set(lookup);
        cur.cfa = if framed { cur.get(8) } else { None };
        out.push(cur.clone());
        let Some(next) = frames.get(k + 1) else {
            break;
        };
        let mut caller = cur.clone();
        caller.forget_caller_saved();
        if next.kind == RawFrameKind::Trap {
            // `f` returns into a trap vector: the interrupted code's registers are in the
            // vector's save area, at the sp it called the handler with: the handler's CFA,
            // which is the frame pointer `next`'s record... the vector frame is `f` itself.
            if let Some(regs) = trapped(symbols, f, &cur, mem) {
                caller = regs;
            }
        } else if let Some(cfa) = cur.cfa {
            // This frame's prologue saved the caller's callee-saved registers below its CFA.
            if let Ok(code) = symbols.function_instructions(lookup) {
                let saves = scan_saves(&code, Some(lookup));
                let sp = cfa.wrapping_sub(saves.frame);
                for (r, off) in saves.stores {
                    if r != 1 && r != 2 {
                        if let Some(v) = read_word(mem, sp.wrapping_add_signed(off)) {
                            caller.set(r, v);
                        }
                    }
                }
                for (r, off) in saves.from_fp {
                    if r != 1 && r != 2 {
                        if let Some(v) = read_word(mem, cfa.wrapping_add_signed(off)) {
                            caller.set(r, v);
                        }
                    }
                }
            }
            caller.set(2, cfa);
            // The frame record is what the unwinder followed: it is the truth for s0.
            if let Some(fp) = next.fp.or(Some(cfa)) {
                if let Some(v) = read_word(mem, fp.wrapping_sub(16)) {
                    caller.set(8, v);
                }
            }
        }
        cur = caller;
    }
    out
}

/// The registers of the code a trap interrupted, from the save area of the vector the frame
/// `vector` returns into. `regs` are the vector frame's registers: its `sp` is the save area.
fn trapped(
    symbols: &Symbols,
    vector: &RawFrame,
    regs: &FrameRegs,
    mem: &mut dyn GuestMemory,
) -> Option<FrameRegs> {
    // The vector called the handler with sp = the save area; the handler's frame pointer (its
    // CFA) is that sp, and the unwinder read this return address from its frame record.
    let area = vector.fp?;
    let code = symbols
        .function_instructions(vector.pc.checked_sub(1)?)
        .ok()?;
    let saves = scan_saves(&code, Some(vector.pc));
    let mut out = regs.clone();
    out.forget_caller_saved();
    for (r, off) in &saves.stores {
        if let Some(v) = read_word(mem, area.wrapping_add_signed(*off)) {
            out.set(*r, v);
        }
    }
    // The interrupted code's sp is above the save area; a stored `sp` is the lowered one.
    out.set(2, area.wrapping_add(saves.frame));
    // s0 is untouched by the vector: the handler saved it in its frame record.
    if let Some(v) = read_word(mem, area.wrapping_sub(16)) {
        out.set(8, v);
    }
    Some(out)
}
