//! Where a function keeps its frame record, read from its prologue: with frame pointers, gcc and
//! LLVM save `ra` at `s0 - 8` and the caller's `s0` at `s0 - 16`, except in a leaf function,
//! where gcc saves only `s0`, at `s0 - 8`, and the return address stays in `ra`. And where a trap
//! vector saves the interrupted code's `ra`, so that a leaf function a trap interrupted can be
//! unwound too.

use super::elf::Symbols;
use super::insn::{Insn, MemoryUse, Operand};

/// Instructions of a prologue scanned at most.
const MAX_PROLOGUE: usize = 64;

/// Offsets from a frame pointer (the CFA) of the saved `ra` and caller's `s0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RecordLayout {
    /// `None` in a leaf function: the return address is still in `ra`.
    pub ra: Option<i64>,
    pub s0: i64,
}

impl Default for RecordLayout {
    fn default() -> Self {
        RecordLayout {
            ra: Some(-8),
            s0: -16,
        }
    }
}

fn ends_prologue(i: &Insn) -> bool {
    let m = i.mnemonic.as_str();
    i.is_call()
        || m.starts_with('b')
        || m.starts_with("c.b")
        || m.starts_with('j')
        || m.starts_with("c.j")
        || m == "ret"
}

/// The stack allocated before the first control transfer, and the offsets (from the new `sp`)
/// where `ra` and `s0` are stored.
fn saves(code: &[Insn]) -> (u64, Option<i64>, Option<i64>) {
    let (mut frame, mut ra, mut s0) = (0u64, None, None);
    for i in code.iter().take(MAX_PROLOGUE) {
        if ends_prologue(i) {
            break;
        }
        match (i.mnemonic.as_str(), i.operands.as_slice()) {
            ("addi" | "c.addi" | "c.addi16sp", [Operand::Reg(d), .., Operand::Imm(imm)])
                if d == "sp" && *imm < 0 && frame == 0 =>
            {
                frame = imm.unsigned_abs();
            }
            _ => {
                if let Some((MemoryUse::Store, base, disp, Some(8))) = i.memory() {
                    match (base.as_str(), i.operands.first()) {
                        ("sp", Some(Operand::Reg(r))) if r == "ra" => ra = ra.or(Some(disp)),
                        ("sp", Some(Operand::Reg(r))) if r == "s0" || r == "fp" => {
                            s0 = s0.or(Some(disp))
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    (frame, ra, s0)
}

impl Symbols {
    /// The frame record layout of the function containing `pc`; the usual one when the
    /// prologue does not say.
    pub(super) fn record_layout(&self, pc: u64) -> RecordLayout {
        let Ok(code) = self.function_instructions(pc) else {
            return RecordLayout::default();
        };
        match saves(&code) {
            (frame, ra, Some(s0)) if frame > 0 => RecordLayout {
                ra: ra.map(|o| o - frame as i64),
                s0: s0 - frame as i64,
            },
            _ => RecordLayout::default(),
        }
    }

    /// Where the trap vector containing `pc` stores the interrupted code's `ra`: an offset from
    /// the `sp` it calls the handler with.
    pub(super) fn vector_saved_ra(&self, pc: u64) -> Option<i64> {
        let code = self.function_instructions(pc).ok()?;
        saves(&code).1
    }
}
