//! What a stopped hart waits on: the spinlock its `acquire` spins on, told by the DWARF location
//! of acquire's lock parameter, or by the address operand of the atomic instruction the hart is
//! on (the pc is as often on the `nts` counter's `amoadd` at `lk+24` as on the `amoswap` of
//! `locked`); the reader-writer lock its `read_acquire`/`write_acquire` spins in; and where it
//! most likely took each lock it holds.

use super::calls::{argument_a0, calls_before};
use super::regs::{FrameRegs, RegContext};
use crate::memory::GuestMemory;
use crate::model::{HeldLock, LockEvidence, LockId};
use crate::symbols::types::{Place, TypeId, Types};
use crate::symbols::{MemoryUse, RawFrame, RawFrameKind, Symbols};

/// Frames of a stack looked at for the lock implementation (the pc may be in `push_off`,
/// `mycpu` or `holding`, called from acquire).
const LOOK_DEEP: usize = 4;

/// What the diagnosis must know of the kernel's spinlocks.
pub struct LockShape<'a> {
    /// The spinlock struct (any unit's copy).
    pub spinlock: TypeId,
    /// Offsets of the words an acquire touches atomically: `locked`, and the lab's `nts`, `n`.
    pub words: Vec<u64>,
    /// The lock starting at an address, and whether it is held: `None` for no known lock.
    pub lock_at: &'a dyn Fn(u64) -> Option<(LockId, bool)>,
    /// Functions of the spinlock implementation (`acquire`, `release`, `push_off`, ...): never
    /// where a lock is taken or waited on, only how.
    pub implementation: &'a [&'a str],
}

/// The function names (inlined ones included) at a frame, innermost first.
pub fn frame_functions(symbols: &Symbols, f: &RawFrame) -> Vec<String> {
    symbols
        .raw_frame_frames(f)
        .map(|fs| fs.iter().filter_map(|s| s.function.clone()).collect())
        .unwrap_or_default()
}

/// The first of the innermost frames whose function is `name`.
pub fn find_frame(symbols: &Symbols, frames: &[RawFrame], name: &str) -> Option<usize> {
    frames
        .iter()
        .take(LOOK_DEEP)
        .position(|f| frame_functions(symbols, f).iter().any(|n| n == name))
}

/// The return address into the caller of frame `k`, when the caller is on the stack.
pub fn caller_site(frames: &[RawFrame], k: usize) -> Option<u64> {
    frames
        .get(k + 1)
        .filter(|f| f.kind == RawFrameKind::Return)
        .map(|f| f.pc)
}

/// The value of a pointer variable at a frame.
fn pointer_at(
    types: &Types,
    pc: u64,
    regs: &FrameRegs,
    mem: &mut dyn GuestMemory,
    wanted: &dyn Fn(TypeId) -> bool,
) -> Vec<(String, String, u64)> {
    let Ok(scope) = types.scope_at(pc) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in &scope.frames {
        for v in &f.variables {
            let Some(target) = v.ty.and_then(|t| types.pointee(t)).flatten() else {
                continue;
            };
            if !wanted(target) {
                continue;
            }
            let mut ctx = RegContext {
                regs,
                mem: &mut *mem,
            };
            let value = match types.evaluate(&v.location, scope.frame_base.as_ref(), &mut ctx) {
                Ok(Place::Register(r)) => regs.get(r as usize),
                Ok(Place::Value(x)) => Some(x),
                Ok(Place::Address(a)) => {
                    let mut b = [0u8; 8];
                    mem.read(a, &mut b).ok().map(|_| u64::from_le_bytes(b))
                }
                _ => None,
            };
            if let Some(x) = value {
                out.push((v.name.clone(), f.function.clone().unwrap_or_default(), x));
            }
        }
    }
    out
}

/// The lock a hart spinning in the acquire at frame `k` waits on, and how it was told.
pub fn spin_lock(
    symbols: &Symbols,
    types: &Types,
    shape: &LockShape<'_>,
    frames: &[RawFrame],
    regs: &[FrameRegs],
    k: usize,
    mem: &mut dyn GuestMemory,
) -> Option<(LockId, LockEvidence)> {
    // On an atomic instruction of acquire itself: its address operand is a word of the lock.
    if k == 0 {
        if let (Some(f), Some(r)) = (frames.first(), regs.first()) {
            if let Ok(insn) = symbols.instruction_at(f.pc) {
                if let Some((MemoryUse::Atomic, base, disp, _)) = insn.memory() {
                    if let Some(addr) = r.named(&base).map(|b| b.wrapping_add_signed(disp)) {
                        for off in &shape.words {
                            if let Some((id, true)) = (shape.lock_at)(addr.wrapping_sub(*off)) {
                                return Some((
                                    id,
                                    LockEvidence::AtomicOperand {
                                        instruction: insn.text.clone(),
                                    },
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    // The DWARF location of acquire's lock parameter at its pc, then of the caller's lock
    // pointers at the call.
    let is_lock = |t: TypeId| types.same(t, shape.spinlock);
    for j in [k, k + 1] {
        let (Some(f), Some(r)) = (frames.get(j), regs.get(j)) else {
            continue;
        };
        let found = pointer_at(types, f.lookup_pc(), r, mem, &is_lock);
        let held: Vec<_> = found
            .iter()
            .filter_map(|(name, func, v)| {
                let (id, locked) = (shape.lock_at)(*v)?;
                Some((id, locked, name, func))
            })
            .collect();
        // A held lock first: the one spun on is held by someone.
        if let Some((id, _, name, func)) = held.iter().find(|h| h.1).or(held.first()) {
            return Some((
                *id,
                LockEvidence::Variable {
                    name: (*name).clone(),
                    function: (*func).clone(),
                },
            ));
        }
    }
    None
}

/// Where a hart most likely took each lock in `held`: for each frame on its stack, and each
/// function inlined there, outside the lock implementation, the calls of `acquire` that
/// function made before the hart's current position. A call whose argument can be told (a
/// constant, a preserved register) matches its lock exactly; the nearest other call of each
/// function goes to the remaining locks, innermost first. Without lock events this is an
/// inference.
pub fn held_sites(
    symbols: &Symbols,
    shape: &LockShape<'_>,
    acquire: u64,
    frames: &[RawFrame],
    regs: &[FrameRegs],
    held: &[(LockId, u64)],
    mem: &mut dyn GuestMemory,
) -> Vec<HeldLock> {
    let innermost = |addr: u64| -> Option<String> {
        symbols
            .frames(addr)
            .ok()
            .and_then(|f| f.first().and_then(|s| s.function.clone()))
    };
    let mut sites: Vec<(u64, Option<u64>)> = Vec::new();
    for (k, f) in frames.iter().enumerate() {
        // Calls strictly before the one this frame is in (a return address is past its call;
        // the innermost frame's pc is at an instruction).
        let (before, call_here) = match f.kind {
            RawFrameKind::Return => (f.pc.saturating_sub(1), Some(f.pc)),
            _ => (f.pc, None),
        };
        let calls: Vec<_> = calls_before(symbols, before, &[acquire])
            .into_iter()
            .filter(|c| Some(c.ret) != call_here)
            .map(|c| (c, innermost(c.address)))
            .collect();
        for func in frame_functions(symbols, f) {
            if shape.implementation.contains(&func.as_str()) {
                continue;
            }
            let mut unexplained = false;
            for (c, _) in calls
                .iter()
                .filter(|(_, f)| f.as_deref() == Some(func.as_str()))
            {
                let arg = argument_a0(symbols, c.address, regs.get(k), Some(&mut *mem));
                // Only the nearest unexplained call per function: earlier ones were most
                // likely released before it (acquire-release pairs).
                if arg.is_none() {
                    if unexplained {
                        continue;
                    }
                    unexplained = true;
                }
                sites.push((c.ret, arg));
            }
        }
    }
    let mut out: Vec<HeldLock> = held
        .iter()
        .map(|&(lock, _)| HeldLock { lock, site: None })
        .collect();
    let mut used = vec![false; sites.len()];
    for (h, &(_, addr)) in out.iter_mut().zip(held) {
        if let Some(i) = sites
            .iter()
            .enumerate()
            .position(|(i, (_, a))| !used[i] && *a == Some(addr))
        {
            used[i] = true;
            h.site = Some(sites[i].0);
        }
    }
    for h in out.iter_mut().filter(|h| h.site.is_none()) {
        if let Some(i) = sites
            .iter()
            .enumerate()
            .position(|(i, (_, a))| !used[i] && a.is_none())
        {
            used[i] = true;
            h.site = Some(sites[i].0);
        }
    }
    out
}
