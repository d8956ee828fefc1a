//! Stacks of a paged kernel: a hart's, and a sleeping process's from its saved context, read
//! through the page table where they are not in RAM (xv6's per-process kernel stacks live at
//! high virtual addresses, `KSTACK(p)`).

use crate::memory::GuestMemory;
use crate::model::{FrameKind, HartRegs, SavedContext, StackFrame};
use crate::sources::xv6::{Sv39, VirtMemory};
use crate::symbols::{RawFrame, RawFrameKind, Symbols, Unwind, UnwindLimits, UnwindStop};

/// Unwinds a stopped hart: first in RAM, as [`Symbols::unwind`] does; when the walk leaves RAM
/// and `satp` says Sv39, again through the hart's page table, accepting frame records anywhere
/// in the lower half of the address space. A kernel that runs on RAM alone walks as before.
pub fn unwind_hart(
    symbols: &Symbols,
    regs: &HartRegs,
    satp: Option<u64>,
    mem: &mut dyn GuestMemory,
    limits: &UnwindLimits,
) -> Unwind {
    let plain = symbols.unwind(regs, mem, limits);
    let left_ram = matches!(
        plain.stop,
        UnwindStop::BadFramePointer { .. } | UnwindStop::Memory { .. }
    );
    match satp.and_then(Sv39::from_satp) {
        Some(mut table) if left_ram => {
            let mut v = VirtMemory {
                mem,
                table: &mut table,
            };
            let paged = symbols.unwind(regs, &mut v, &limits.clone().paged());
            if paged.frames.len() >= plain.frames.len() {
                paged
            } else {
                plain
            }
        }
        _ => plain,
    }
}

/// A sleeping process's kernel stack from the context it saved when it switched away: its
/// `ra` returns into the scheduler's caller (`sched`), `s0` is that function's frame pointer.
/// `mem` must read virtual addresses (a [`VirtMemory`] over the kernel page table).
pub fn unwind_saved(
    symbols: &Symbols,
    ctx: &SavedContext,
    mem: &mut dyn GuestMemory,
    limits: &UnwindLimits,
) -> Unwind {
    let regs = HartRegs {
        pc: ctx.ra,
        ra: 0,
        sp: ctx.sp,
        fp: ctx.fp,
        ..HartRegs::default()
    };
    let mut u = symbols.unwind(&regs, mem, &limits.clone().paged());
    if let Some(f) = u.frames.first_mut() {
        f.kind = RawFrameKind::Return;
    }
    u
}

/// The model's frames of an unwind.
pub fn stack_frames(frames: &[RawFrame]) -> Vec<StackFrame> {
    frames
        .iter()
        .map(|f| StackFrame {
            pc: f.pc,
            kind: match f.kind {
                RawFrameKind::Pc => FrameKind::Pc,
                RawFrameKind::Return => FrameKind::Return,
                RawFrameKind::Trap => FrameKind::Trap,
            },
        })
        .collect()
}
