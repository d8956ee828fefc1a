//! What an xv6 kernel shows only when stopped: which hart panicked and with what message, the
//! trap behind it and the access that faulted, what each hart waits on and which locks it holds
//! (the lock's `cpu` is the hart's `&cpus[h]`), and where each sleeping process sleeps (its
//! kernel stack through the page table). Fills [`Snapshot::panic`] and
//! [`Snapshot::diagnosis`]; the analysis confirms hangs across stops.

use std::collections::HashMap;

use super::layout;
use super::Xv6Source;
use crate::diagnose::{
    caller_site, calls_in, find_frame, frame_functions, frame_registers, held_sites, name_access,
    panic_message, spin_lock, stack_frames, unwind_hart, unwind_saved, FrameRegs, LockShape,
    RegContext, Trap,
};
use crate::feed::HartStop;
use crate::memory::GuestMemory;
use crate::model::{
    Diagnosis, FullRegs, HartDiagnosis, HartRun, HartState, Held, LockId, PanicSnapshot, SleepOn,
    SleeperDiagnosis, Snapshot, TrapInfo,
};
use crate::sources::{Source, StopView};
use crate::symbols::types::{Place, TypeId, Types};
use crate::symbols::{RawFrame, RawFrameKind, Symbols, UnwindLimits};

use super::sv39::{Sv39, VirtMemory};

/// The spinlock implementation's functions in xv6: how a lock is taken, never where.
const IMPLEMENTATION: &[&str] = &[
    "acquire", "release", "holding", "push_off", "pop_off", "mycpu", "cpuid", "myproc", "panic",
    "printf",
];
/// The C name of the spinlock acquire.
const ACQUIRE: &str = "acquire";
/// xv6's panic.
const PANIC: &str = "panic";
/// Frames looked at for a reader-writer lock's acquire.
const RW_DEPTH: usize = 4;
const SATP: u16 = 0x180;
const MEPC: u16 = 0x341;

/// A hart's stack and the registers of each frame.
struct Walked {
    frames: Vec<RawFrame>,
    regs: Vec<FrameRegs>,
    interrupted: Option<u64>,
    table: Option<Sv39>,
}

/// Every register the stop gave, or the few [`crate::model::HartRegs`] has.
fn full_regs(h: &HartStop) -> FullRegs {
    match &h.full {
        Some(f) if f.x.len() >= 32 => f.clone(),
        _ => {
            let mut x = vec![0u64; 32];
            x[1] = h.regs.ra;
            x[2] = h.regs.sp;
            x[8] = h.regs.fp;
            FullRegs {
                x,
                pc: h.regs.pc,
                privilege: h.regs.privilege,
                csrs: Vec::new(),
            }
        }
    }
}

/// Reads `mem` by virtual address when the hart translates, else as is.
fn with_table<R>(
    mem: &mut dyn GuestMemory,
    table: Option<&mut Sv39>,
    f: impl FnOnce(&mut dyn GuestMemory) -> R,
) -> R {
    match table {
        Some(t) => f(&mut VirtMemory { mem, table: t }),
        None => f(mem),
    }
}

impl Xv6Source {
    /// See the module docs.
    pub(super) fn diagnose(
        &mut self,
        mem: &mut dyn GuestMemory,
        stop: &StopView<'_>,
        snap: &mut Snapshot,
    ) {
        let symbols = stop.symbols;
        let types = self.types.clone();
        let kernel_table = self.kernel_page_table(mem).ok();
        let by_addr: HashMap<u64, (LockId, bool)> = snap
            .locks
            .iter()
            .filter_map(|l| Some((l.addr?, (l.meta.id, l.locked.unwrap_or(false)))))
            .collect();
        let lock_at = |a: u64| by_addr.get(&a).copied();
        let sl = &self.core.spinlock;
        let words = [
            Some(sl.locked.offset),
            sl.nts.map(|f| f.offset),
            sl.n.map(|f| f.offset),
        ]
        .into_iter()
        .flatten()
        .collect();
        let shape = LockShape {
            spinlock: sl.ty,
            words,
            lock_at: &lock_at,
            implementation: IMPLEMENTATION,
        };
        let acquire = symbols.symbol(ACQUIRE).ok().map(|s| s.address);
        let rw_types = layout::rwlock_types(&types, sl.ty);

        let mut harts = Vec::with_capacity(stop.harts.len());
        let mut walks = Vec::with_capacity(stop.harts.len());
        for hs in stop.harts {
            let w = self.walk(symbols, hs, mem, stop.limits, kernel_table.clone());
            let mut table = w.table.clone();
            let d = with_table(mem, table.as_mut(), |m| {
                self.hart_state(symbols, &types, &shape, &rw_types, acquire, hs, &w, snap, m)
            });
            harts.push(d);
            walks.push(w);
        }
        let booting = snap
            .harts
            .iter()
            .all(|h| matches!(h.run, HartRun::Offline | HartRun::Booting));

        // Held locks in the hart rows too, for the views and the wait-for graph.
        for d in &harts {
            if let Some(h) = snap.harts.iter_mut().find(|h| h.hart == d.hart) {
                h.held = d
                    .held
                    .iter()
                    .map(|x| Held {
                        lock: x.lock,
                        pc: x.site.unwrap_or(0),
                        since_ns: None,
                    })
                    .collect();
            }
        }

        let sleepers = self.sleepers(symbols, mem, kernel_table, stop.limits, snap);
        let mut diagnosis = Diagnosis {
            time_ns: snap.time_ns,
            harts,
            sleepers,
            access: None,
            booting,
        };
        if snap.outcome == Some(crate::model::Outcome::Panic) || self.panicked(mem) {
            self.fill_panic(symbols, &types, stop, &walks, &mut diagnosis, snap, mem);
        }
        snap.diagnosis = Some(diagnosis);
    }

    /// A hart's stack from where it really is (`mepc` when it was stopped in a machine-mode
    /// handler), with every frame's registers.
    fn walk(
        &self,
        symbols: &Symbols,
        hs: &HartStop,
        mem: &mut dyn GuestMemory,
        limits: &UnwindLimits,
        kernel_table: Option<Sv39>,
    ) -> Walked {
        let full = full_regs(hs);
        let satp = full
            .csr(SATP)
            .or(hs.full.as_ref().and_then(|f| f.csr(SATP)));
        let interrupted = (hs.regs.privilege == Some(3))
            .then(|| full.csr(MEPC))
            .flatten()
            .filter(|&p| symbols.is_text(p));
        let mut regs = hs.regs;
        if let Some(p) = interrupted {
            regs.pc = p;
        }
        let unwind = unwind_hart(symbols, &regs, satp, mem, limits);
        // The hart's own table, else the kernel's (machine mode runs untranslated, but the
        // stack it interrupted is the kernel's).
        let mut table = satp.and_then(Sv39::from_satp).or(kernel_table);
        let mut stop_regs = FrameRegs::from_stop(&full);
        if interrupted.is_some() {
            stop_regs.x[0] = 0;
        }
        let regs = with_table(mem, table.as_mut(), |m| {
            frame_registers(symbols, &unwind.frames, &stop_regs, m)
        });
        Walked {
            frames: unwind.frames,
            regs,
            interrupted,
            table,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn hart_state(
        &self,
        symbols: &Symbols,
        types: &Types,
        shape: &LockShape<'_>,
        rw_types: &[TypeId],
        acquire: Option<u64>,
        hs: &HartStop,
        w: &Walked,
        snap: &Snapshot,
        mem: &mut dyn GuestMemory,
    ) -> HartDiagnosis {
        let pc = w.frames.first().map_or(hs.regs.pc, |f| f.pc);
        let process = snap
            .harts
            .iter()
            .find(|h| h.hart == hs.hart)
            .and_then(|h| h.cpu.as_ref())
            .and_then(|c| c.proc.clone());
        let state = if !symbols.is_text(pc) {
            HartState::Outside
        } else if find_frame(symbols, &w.frames, PANIC).is_some() {
            HartState::Panicked
        } else if let Some(k) = find_frame(symbols, &w.frames, ACQUIRE) {
            let found = spin_lock(symbols, types, shape, &w.frames, &w.regs, k, mem);
            HartState::Acquiring {
                lock: found.as_ref().map(|f| f.0),
                evidence: found.map(|f| f.1),
                site: caller_site(&w.frames, k),
            }
        } else if let Some(rw) = self.rw_wait(symbols, types, rw_types, w, mem) {
            rw
        } else if process.is_none() && at_wfi(symbols, pc) {
            HartState::Idle
        } else {
            HartState::Running
        };
        let held: Vec<(LockId, u64)> = snap
            .locks
            .iter()
            .filter(|l| l.holder == Some(hs.hart))
            .filter_map(|l| Some((l.meta.id, l.addr?)))
            .collect();
        let mut held = match acquire {
            Some(a) if !held.is_empty() => {
                held_sites(symbols, shape, a, &w.frames, &w.regs, &held, mem)
            }
            _ => held
                .iter()
                .map(|&(lock, _)| crate::model::HeldLock { lock, site: None })
                .collect(),
        };
        // Where lock events said a lock was taken (a source with events fills the held list
        // before the stop), that is the truth, not the inference.
        if let Some(known) = snap.harts.iter().find(|h| h.hart == hs.hart) {
            for h in &mut held {
                if let Some(e) = known.held.iter().find(|e| e.lock == h.lock && e.pc != 0) {
                    h.site = Some(e.pc);
                }
            }
        }
        HartDiagnosis {
            hart: hs.hart,
            pc: hs.regs.pc,
            privilege: hs.regs.privilege,
            interrupted_pc: w.interrupted,
            frames: stack_frames(&w.frames),
            state,
            held,
            process,
            last_trap: last_trap(hs),
            regs_digest: digest(hs),
        }
    }

    /// A hart inside a reader-writer lock's acquire: a function of its innermost frames that
    /// has a pointer to one of the kernel's rwlocks and reads as an acquire.
    fn rw_wait(
        &self,
        symbols: &Symbols,
        types: &Types,
        rw_types: &[TypeId],
        w: &Walked,
        mem: &mut dyn GuestMemory,
    ) -> Option<HartState> {
        if rw_types.is_empty() || self.rwlocks.is_empty() {
            return None;
        }
        for (k, f) in w.frames.iter().enumerate().take(RW_DEPTH) {
            let funcs = frame_functions(symbols, f);
            let Some(func) = funcs.first() else { continue };
            let lower = func.to_ascii_lowercase();
            if lower.contains("release") || lower.contains("unlock") {
                return None;
            }
            if !(lower.contains("acquire") || lower.contains("lock")) {
                continue;
            }
            let Ok(scope) = types.scope_at(f.lookup_pc()) else {
                continue;
            };
            let regs = w.regs.get(k)?;
            for v in scope.frames.iter().flat_map(|s| &s.variables) {
                let Some(target) = v.ty.and_then(|t| types.pointee(t)).flatten() else {
                    continue;
                };
                if !rw_types.iter().any(|&r| types.same(r, target)) {
                    continue;
                }
                let mut ctx = RegContext {
                    regs,
                    mem: &mut *mem,
                };
                let addr = match types.evaluate(&v.location, scope.frame_base.as_ref(), &mut ctx) {
                    Ok(Place::Register(r)) => regs.get(r as usize),
                    Ok(Place::Value(x)) => Some(x),
                    _ => None,
                };
                let Some(rw) = addr.and_then(|a| self.rwlocks.iter().find(|r| r.addr == a)) else {
                    continue;
                };
                let earlier = symbols
                    .symbol(func)
                    .ok()
                    .and_then(|s| earlier_call(symbols, &w.frames, k, s.address));
                return Some(HartState::RwWaiting {
                    rwlock: rw.path.clone(),
                    writer: lower.contains("write") || lower.starts_with("wr"),
                    function: func.clone(),
                    site: caller_site(&w.frames, k),
                    earlier,
                });
            }
        }
        None
    }

    /// Every sleeping process with its kernel stack, and the sleeplock it sleeps on.
    fn sleepers(
        &self,
        symbols: &Symbols,
        mem: &mut dyn GuestMemory,
        table: Option<Sv39>,
        limits: &UnwindLimits,
        snap: &Snapshot,
    ) -> Vec<SleeperDiagnosis> {
        let mut out = Vec::new();
        let mut table = table;
        for p in &snap.processes {
            if !p.state.to_ascii_uppercase().contains("SLEEP") {
                continue;
            }
            let (frames, unwind_error) = match (&p.context, table.as_mut()) {
                (Some(ctx), Some(t)) => {
                    let u = unwind_saved(symbols, ctx, &mut VirtMemory { mem, table: t }, limits);
                    let err = (!u.complete()).then(|| u.stop.to_string());
                    (stack_frames(&u.frames), err)
                }
                (None, _) => (Vec::new(), Some("no saved context".into())),
                (_, None) => (
                    Vec::new(),
                    Some("the kernel page table is not readable".into()),
                ),
            };
            let sleeplock = p.chan.and_then(|c| {
                let s = snap.sleeplocks.iter().find(|s| s.addr == c)?;
                Some(SleepOn {
                    path: s.path.clone(),
                    locked: s.locked,
                    holder: s.holder.clone(),
                })
            });
            out.push(SleeperDiagnosis {
                slot: p.slot,
                pid: p.pid,
                name: p.name.clone(),
                chan: p.chan,
                chan_name: p.chan_name.clone(),
                frames,
                unwind_error,
                sleeplock,
            });
        }
        out
    }

    /// The panic record: the hart in `panic()`, its message (from the call site), and the
    /// trap behind it when its stack went through the trap handler.
    #[allow(clippy::too_many_arguments)]
    fn fill_panic(
        &self,
        symbols: &Symbols,
        types: &Types,
        stop: &StopView<'_>,
        walks: &[Walked],
        d: &mut Diagnosis,
        snap: &mut Snapshot,
        mem: &mut dyn GuestMemory,
    ) {
        let Some(i) = d
            .harts
            .iter()
            .position(|h| h.state == HartState::Panicked)
            .or_else(|| {
                walks.iter().position(|w| {
                    w.frames
                        .iter()
                        .any(|f| frame_functions(symbols, f).iter().any(|n| n == PANIC))
                })
            })
        else {
            return;
        };
        let (hs, w) = (&stop.harts[i], &walks[i]);
        let k = w
            .frames
            .iter()
            .position(|f| frame_functions(symbols, f).iter().any(|n| n == PANIC))
            .unwrap_or(0);
        let mut table = w.table.clone();
        let message = with_table(mem, table.as_mut(), |m| {
            panic_message(symbols, &w.frames, &w.regs, k, m)
        });
        let through_trap = w.frames.iter().position(|f| f.kind == RawFrameKind::Trap);
        let exception = hs.regs.scause.filter(|c| c >> 63 == 0);
        let from_trap = through_trap.is_some()
            || message
                .as_deref()
                .is_some_and(|m| m.starts_with("kerneltrap"));
        let trap = match (from_trap, exception, hs.regs.sepc, hs.regs.stval) {
            (true, Some(scause), Some(sepc), Some(stval)) => Some(TrapInfo {
                scause,
                sepc,
                stval,
            }),
            _ => None,
        };
        if let Some(t) = trap {
            let trapped = through_trap.and_then(|j| w.regs.get(j));
            d.access = Some(with_table(mem, table.as_mut(), |m| {
                name_access(
                    symbols,
                    types,
                    Trap {
                        sepc: t.sepc,
                        scause: t.scause,
                        stval: t.stval,
                    },
                    trapped,
                    m,
                )
            }));
        }
        snap.panic = Some(PanicSnapshot {
            hart: hs.hart,
            message: message.unwrap_or_default(),
            trap,
            pc: hs.regs.pc,
            fp: hs.regs.fp,
            // The stop's stacks are the backtrace: every hart's, through the page table.
            frames: Vec::new(),
            time_ns: Some(snap.time_ns),
        });
        if let Some(h) = snap.harts.iter_mut().find(|h| h.hart == hs.hart) {
            h.run = HartRun::Panicked;
        }
    }
}

/// A call of `target` by a function further out on the stack than the caller of frame `k`:
/// that function took the lock itself before it called in again (`reader` calls `read_acquire`
/// and then `check_pair`, which calls it again). Found in the DWARF inline structure, not by
/// address order, which loops rotate. Returns the call's return address.
fn earlier_call(symbols: &Symbols, frames: &[RawFrame], k: usize, target: u64) -> Option<u64> {
    let innermost = |addr: u64| -> Option<String> {
        symbols
            .frames(addr)
            .ok()
            .and_then(|f| f.first().and_then(|s| s.function.clone()))
    };
    let mut direct_caller = true;
    for f in frames
        .iter()
        .skip(k + 1)
        .filter(|f| f.kind == RawFrameKind::Return)
    {
        let calls = calls_in(symbols, f.pc - 1, &[target]);
        for func in frame_functions(symbols, f) {
            if std::mem::take(&mut direct_caller) {
                continue;
            }
            if let Some(c) = calls
                .iter()
                .find(|c| innermost(c.address).as_deref() == Some(func.as_str()))
            {
                return Some(c.ret);
            }
        }
    }
    None
}

/// FNV-1a over the pc and every general register the stop gave.
fn digest(hs: &HartStop) -> u64 {
    let full = full_regs(hs);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in std::iter::once(hs.regs.pc).chain(full.x.iter().copied()) {
        for b in v.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The last trap the hart took in the mode it is in: machine mode's CSRs when it is there (a
/// fault before supervisor mode has a trap vector lands there), else supervisor mode's. `None`
/// when the CSRs are still at their reset values.
fn last_trap(hs: &HartStop) -> Option<TrapInfo> {
    let csr = |n: u16| hs.full.as_ref().and_then(|f| f.csr(n));
    let (cause, epc, tval) = if hs.regs.privilege == Some(3) {
        (csr(0x342), csr(0x341), csr(0x343))
    } else {
        (hs.regs.scause, hs.regs.sepc, hs.regs.stval)
    };
    let t = TrapInfo {
        scause: cause?,
        sepc: epc?,
        stval: tval.unwrap_or(0),
    };
    (t.scause != 0 || t.sepc != 0).then_some(t)
}

/// True when the hart waits for an interrupt: at a `wfi`, or just past one.
fn at_wfi(symbols: &Symbols, pc: u64) -> bool {
    let Ok(code) = symbols.function_instructions(pc) else {
        return false;
    };
    code.iter()
        .any(|i| i.mnemonic == "wfi" && (i.address == pc || i.end() == pc))
}
