//! Frame-pointer unwinding of a stopped hart.
//!
//! The kernel is built with `-C force-frame-pointers=yes`, so every Rust function keeps a frame
//! record: on entry it saves `ra` at `s0 - 8` and the caller's `s0` at `s0 - 16`, with `s0` the
//! stack pointer at entry. Walking `s0` gives the return addresses. The innermost function may
//! be stopped before its prologue set `s0` or after its epilogue restored it; then `s0` is still
//! (or again) the caller's and `ra` holds the return address, which the prologue scan detects.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use super::disasm::{decode, Decoded, Op, MAX_BACK};
use super::dwarf::SourceFrame;
use super::elf::{SymbolKind, Symbols};
use super::error::SymbolsError;
use super::memo::cached;
use crate::memory::GuestMemory;
use crate::model::HartRegs;

/// Bounds every address the unwinder follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwindLimits {
    /// Guest RAM: every frame record must lie inside it.
    pub ram: Range<u64>,
    /// Frames returned at most, the innermost included.
    pub max_depth: usize,
    /// Largest accepted distance between consecutive frame pointers.
    pub max_frame_size: u64,
    /// Virtual address ranges outside RAM where frame records may also lie: kernel stacks
    /// mapped high through the page table (xv6's `KSTACK`s). Reading them takes a memory that
    /// translates (`VirtMemory`); see [`UnwindLimits::paged`].
    pub stacks: Vec<Range<u64>>,
}

impl UnwindLimits {
    /// QEMU `virt` RAM at 0x8000_0000 of `ram_size` bytes, 64 frames, frames up to 64 KiB.
    pub fn qemu_virt(ram_size: u64) -> Self {
        UnwindLimits {
            ram: 0x8000_0000..0x8000_0000u64.saturating_add(ram_size),
            max_depth: 64,
            max_frame_size: 64 << 10,
            stacks: Vec::new(),
        }
    }

    /// These limits, also accepting frame records anywhere in the lower half of an Sv39
    /// address space (below 2^38), where a paged kernel maps its stacks. For a walk through a
    /// memory that translates virtual addresses: an unmapped frame pointer then fails its read
    /// and ends the walk.
    pub fn paged(mut self) -> Self {
        self.stacks = vec![SV39_LOWER_HALF];
        self
    }

    /// True when a frame record ending at `fp` may lie here.
    fn accepts(&self, fp: u64) -> bool {
        let inside = |r: &Range<u64>| fp >= r.start.saturating_add(16) && fp <= r.end;
        inside(&self.ram) || self.stacks.iter().any(inside)
    }
}

/// The lower half of an Sv39 address space, above page 0: where xv6 maps its kernel stacks.
pub const SV39_LOWER_HALF: Range<u64> = 0x1000..(1 << 38);

impl Default for UnwindLimits {
    /// [`UnwindLimits::qemu_virt`] with the 128 MiB lockscope boots with.
    fn default() -> Self {
        Self::qemu_virt(128 << 20)
    }
}

/// How a raw frame's address relates to the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawFrameKind {
    /// The hart's pc: the instruction about to run (or that faulted).
    Pc,
    /// A return address: the instruction after a call. Symbolize `pc - 1`.
    Return,
    /// The pc a trap interrupted (`HartRegs::sepc`), found where the chain passes through a
    /// trap vector. The instruction itself (the fault), so symbolize `pc`.
    Trap,
}

/// One frame of an unwind, before symbolization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub pc: u64,
    pub kind: RawFrameKind,
    /// The frame pointer of the frame record this return address was read from.
    pub fp: Option<u64>,
}

impl RawFrame {
    /// The address to symbolize: the pc itself, or inside the call for a return address.
    pub fn lookup_pc(&self) -> u64 {
        match self.kind {
            RawFrameKind::Pc | RawFrameKind::Trap => self.pc,
            RawFrameKind::Return => self.pc.saturating_sub(1),
        }
    }
}

/// Why the walk ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnwindStop {
    /// A zero frame pointer or return address: the outermost frame was reached.
    EndOfChain,
    /// [`UnwindLimits::max_depth`] frames were collected.
    DepthLimit,
    /// The pc is not in the kernel's text, so nothing is known about its frame.
    PcNotText,
    /// A return address outside the text: the stack is corrupt or the chain ran off its end.
    ReturnNotText { ra: u64 },
    /// A frame pointer that cannot be followed.
    BadFramePointer { fp: u64, reason: &'static str },
    /// Guest memory could not be read.
    Memory { addr: u64, reason: String },
}

impl fmt::Display for UnwindStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnwindStop::EndOfChain => f.write_str("end of the frame chain"),
            UnwindStop::DepthLimit => f.write_str("depth limit reached"),
            UnwindStop::PcNotText => f.write_str("the pc is not in the kernel's code"),
            UnwindStop::ReturnNotText { ra } => {
                write!(f, "return address {ra:#x} is not in the kernel's code")
            }
            UnwindStop::BadFramePointer { fp, reason } => {
                write!(f, "frame pointer {fp:#x} {reason}")
            }
            UnwindStop::Memory { addr, reason } => {
                write!(f, "reading the frame record at {addr:#x} failed: {reason}")
            }
        }
    }
}

/// The result of a walk: frames innermost first, and why it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unwind {
    pub frames: Vec<RawFrame>,
    pub stop: UnwindStop,
}

impl Unwind {
    /// The walk reached the outermost frame.
    pub fn complete(&self) -> bool {
        self.stop == UnwindStop::EndOfChain
    }
}

impl Symbols {
    /// Walks the frame-pointer chain of a stopped hart from its `pc`, `ra`, `sp` and `fp`
    /// (`sp` 0 when unknown), reading frame records through `mem`. Every frame pointer is
    /// checked (aligned, inside `limits.ram`, strictly increasing, frames no larger than
    /// `limits.max_frame_size`) and every return address must be in the text; the walk stops
    /// at the first that is not, and says why. Never panics, whatever the registers and memory.
    ///
    /// A trap vector (code that never sets up a frame, like `kernelvec`) in the middle of the
    /// chain means a trap interrupted the code below it. That code's own pc is not in any
    /// frame record, so when `regs.sepc` is given it is inserted there as a
    /// [`RawFrameKind::Trap`] frame; the chain then goes on with the interrupted code's caller.
    pub fn unwind(
        &self,
        regs: &HartRegs,
        mem: &mut dyn GuestMemory,
        limits: &UnwindLimits,
    ) -> Unwind {
        let mut frames = vec![RawFrame {
            pc: regs.pc,
            kind: RawFrameKind::Pc,
            fp: None,
        }];
        let stop = self.walk(regs, mem, limits, &mut frames);
        Unwind { frames, stop }
    }

    fn walk(
        &self,
        regs: &HartRegs,
        mem: &mut dyn GuestMemory,
        limits: &UnwindLimits,
        frames: &mut Vec<RawFrame>,
    ) -> UnwindStop {
        if !self.is_text(regs.pc) {
            return UnwindStop::PcNotText;
        }
        let mut trap_pc = regs.sepc.filter(|&p| self.is_text(p));
        // A leaf function keeps its return address in `ra`: valid for the innermost frame when
        // its own frame is set, and for the code a trap interrupted (from the vector's save
        // area).
        let mut leaf_ra = self.frame_is_set(regs.pc).then_some(regs.ra);
        if !self.frame_is_set(regs.pc) {
            // Prologue, epilogue or a frameless function: the return address is still in ra
            // and fp belongs to the caller.
            if frames.len() >= limits.max_depth {
                return UnwindStop::DepthLimit;
            }
            if regs.ra == 0 {
                return UnwindStop::EndOfChain;
            }
            if !self.is_text(regs.ra) {
                return UnwindStop::ReturnNotText { ra: regs.ra };
            }
            frames.push(RawFrame {
                pc: regs.ra,
                kind: RawFrameKind::Return,
                fp: None,
            });
            if let Some(stop) = self.trap_frame(frames, &mut trap_pc, regs.fp, limits) {
                return stop;
            }
        }
        let mut fp = regs.fp;
        if regs.sp != 0 && fp != 0 && fp < regs.sp {
            return UnwindStop::BadFramePointer {
                fp,
                reason: "is below the stack pointer",
            };
        }
        loop {
            if frames.len() >= limits.max_depth {
                return UnwindStop::DepthLimit;
            }
            if fp == 0 {
                return UnwindStop::EndOfChain;
            }
            if !fp.is_multiple_of(8) {
                return UnwindStop::BadFramePointer {
                    fp,
                    reason: "is not 8-byte aligned",
                };
            }
            if !limits.accepts(fp) {
                return UnwindStop::BadFramePointer {
                    fp,
                    reason: "is outside guest RAM",
                };
            }
            // The record belongs to the function of the last frame found (unknown past a trap
            // vector whose interrupted pc is not known: the usual layout then).
            let layout = frames
                .last()
                .filter(|f| !self.is_trap_vector(f.pc))
                .map(|f| self.record_layout(f.lookup_pc()))
                .unwrap_or_default();
            let read = |mem: &mut dyn GuestMemory, off: i64| -> Result<u64, UnwindStop> {
                let addr = fp.wrapping_add_signed(off);
                let mut w = [0u8; 8];
                mem.read(addr, &mut w)
                    .map(|_| u64::from_le_bytes(w))
                    .map_err(|e| UnwindStop::Memory {
                        addr,
                        reason: e.to_string(),
                    })
            };
            let next_fp = match read(mem, layout.s0) {
                Ok(v) => v,
                Err(stop) => return stop,
            };
            let ra = match layout.ra {
                Some(off) => match read(mem, off) {
                    Ok(v) => v,
                    Err(stop) => return stop,
                },
                None => match leaf_ra {
                    Some(ra) => ra,
                    None => return UnwindStop::EndOfChain,
                },
            };
            leaf_ra = None;
            if ra == 0 {
                return UnwindStop::EndOfChain;
            }
            if !self.is_text(ra) {
                return UnwindStop::ReturnNotText { ra };
            }
            frames.push(RawFrame {
                pc: ra,
                kind: RawFrameKind::Return,
                fp: Some(fp),
            });
            let trapped_at = frames.len();
            if let Some(stop) = self.trap_frame(frames, &mut trap_pc, next_fp, limits) {
                return stop;
            }
            if frames.len() > trapped_at {
                // The vector called the handler with sp at `fp`: the interrupted code's `ra`
                // is in its save area there.
                leaf_ra = self.vector_saved_ra(ra).and_then(|off| {
                    let mut w = [0u8; 8];
                    mem.read(fp.wrapping_add_signed(off), &mut w).ok()?;
                    Some(u64::from_le_bytes(w))
                });
            }
            if next_fp == 0 {
                return UnwindStop::EndOfChain;
            }
            if next_fp <= fp {
                return UnwindStop::BadFramePointer {
                    fp: next_fp,
                    reason: "does not increase along the chain",
                };
            }
            if next_fp - fp > limits.max_frame_size {
                return UnwindStop::BadFramePointer {
                    fp: next_fp,
                    reason: "is further from the previous frame than any frame is large",
                };
            }
            fp = next_fp;
        }
    }

    /// After a return address into a trap vector, with the chain going on below it (`next_fp`
    /// not 0), pushes the interrupted pc once. `Some` when the depth limit is reached.
    fn trap_frame(
        &self,
        frames: &mut Vec<RawFrame>,
        trap_pc: &mut Option<u64>,
        next_fp: u64,
        limits: &UnwindLimits,
    ) -> Option<UnwindStop> {
        let ra = frames.last()?.pc;
        if next_fp == 0 || trap_pc.is_none() || !self.is_trap_vector(ra) {
            return None;
        }
        if frames.len() >= limits.max_depth {
            return Some(UnwindStop::DepthLimit);
        }
        frames.push(RawFrame {
            pc: trap_pc.take()?,
            kind: RawFrameKind::Trap,
            fp: None,
        });
        None
    }

    /// True when the code at `pc` is a trap vector: code that never sets up a frame record
    /// and is either an assembly label (not a typed function, like `kernelvec`) or returns from
    /// a trap (`sret`/`mret`). Being frameless is not enough: the precompiled `core` has
    /// frameless functions (`panic_fmt`) that are ordinary calls.
    fn is_trap_vector(&self, pc: u64) -> bool {
        let Some((func, end)) = self.function_extent(pc) else {
            return false;
        };
        let start = func.symbol.address;
        let table = self.frame_setup(start, end);
        if table.is_empty() || table.iter().any(|&(_, framed)| framed) {
            return false;
        }
        if func.symbol.kind == SymbolKind::Code {
            return true;
        }
        const SRET: [u8; 4] = 0x1020_0073u32.to_le_bytes();
        const MRET: [u8; 4] = 0x3020_0073u32.to_le_bytes();
        let len = (end - start).min(64 << 10) as usize;
        let Ok(code) = self.read_static(start, len) else {
            return false;
        };
        code.windows(4).step_by(2).any(|w| w == SRET || w == MRET)
    }

    fn frame_setup(&self, start: u64, end: u64) -> Arc<[(u64, bool)]> {
        cached(&self.frame_setup, start, || {
            self.scan_frame_setup(start, end).into()
        })
    }

    /// The frames of one raw frame (see [`Symbols::frames`]), looked up at
    /// [`RawFrame::lookup_pc`].
    pub fn raw_frame_frames(&self, raw: &RawFrame) -> Result<Arc<[SourceFrame]>, SymbolsError> {
        self.frames(raw.lookup_pc())
    }

    /// True when, about to run the instruction at `pc`, the function containing it has set
    /// `s0` to its own frame. False before the prologue's `addi s0, sp, N`, after the
    /// epilogue's `ld s0, N(sp)`, and in functions that never set `s0` (assembly). A pc that
    /// cannot be analyzed counts as framed: a stop deep inside a function is the common case.
    pub fn frame_is_set(&self, pc: u64) -> bool {
        let Some((func, end)) = self.function_extent(pc) else {
            return true;
        };
        let table = self.frame_setup(func.symbol.address, end);
        match table.binary_search_by_key(&pc, |&(a, _)| a) {
            Ok(i) => table[i].1,
            Err(_) => true,
        }
    }

    /// For each instruction of the function at `start`: whether `s0` is its frame before the
    /// instruction runs. Linear, so it follows the layout LLVM emits: prologue, body, and
    /// epilogues that each end in a return or jump, after which the body's state resumes.
    fn scan_frame_setup(&self, start: u64, end: u64) -> Vec<(u64, bool)> {
        let end = end.min(start.saturating_add(MAX_BACK));
        let Ok(bytes) = self.read_static(start, (end - start) as usize) else {
            return Vec::new();
        };
        let Ok(code) = decode(&bytes, start) else {
            return Vec::new();
        };
        let mut table = Vec::with_capacity(code.len());
        let (mut framed, mut ever_framed) = (false, false);
        for d in &code {
            table.push((d.address, framed));
            if sets_frame(d) {
                framed = true;
                ever_framed = true;
            } else if restores_frame(d) {
                framed = false;
            } else if ends_path(d) {
                framed = ever_framed;
            }
        }
        table
    }
}

fn is_fp(r: &str) -> bool {
    matches!(r, "s0" | "fp" | "x8")
}

fn is_sp(r: &str) -> bool {
    matches!(r, "sp" | "x2")
}

/// `addi s0, sp, N` / `c.addi4spn s0, sp, N` / `mv s0, sp`.
fn sets_frame(d: &Decoded) -> bool {
    d.reg(0).is_some_and(is_fp) && d.reg(1).is_some_and(is_sp)
}

/// `ld s0, N(sp)` / `c.ldsp s0, N(sp)`.
fn restores_frame(d: &Decoded) -> bool {
    if !d.reg(0).is_some_and(is_fp) {
        return false;
    }
    match (d.mnemonic.as_str(), d.ops.as_slice()) {
        ("ld", [_, Op::Mem { base, .. }]) => is_sp(base),
        ("c.ldsp", [_, _, Op::Reg(base)]) => is_sp(base),
        _ => false,
    }
}

/// A return, tail call or unconditional jump: the next instruction is not reached from here.
fn ends_path(d: &Decoded) -> bool {
    match d.mnemonic.as_str() {
        "ret" | "c.jr" | "jr" | "c.j" | "j" => true,
        "jalr" | "jal" => d.reg(0) == Some("zero"),
        _ => false,
    }
}
