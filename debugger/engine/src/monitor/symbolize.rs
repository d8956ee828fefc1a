//! Building a [`View`]: every code address in the analysis' report symbolized, the panic's
//! backtrace, disassembly and source.

use std::collections::HashMap;

use super::feeds::Monitor;
use super::view::{
    short_function, AsmLine, FrameLine, HartBacktrace, HartLastEvents, KernelDetail, LockDetail,
    PanicDetail, Place, SourceLines, View,
};
use crate::analysis::{decode_scause, Check, Report, TrapView};
use crate::model::{FrameKind, HartId, HartState, Snapshot, StackFrame};

/// Events shown per hart of a deadlock or a stall.
const LAST_EVENTS: usize = 8;
use crate::symbols::{Disassembly, SourceContext, SourceFrame};

impl Monitor {
    /// Builds the full view. Symbolization is memoized by [`Symbols`], so repeated views cost
    /// little beyond the analysis report.
    pub fn view(&self) -> View {
        let mut report = self.analyzer.report();
        let mut check = self.check();
        // A panic record the source could not give a message or trap (xv6): the console's.
        let from_console = self.complete_panic(&mut report, &mut check);
        let mut places = HashMap::new();
        let mut site = |pc: u64| {
            places.entry(pc).or_insert_with(|| self.return_place(pc));
        };
        for l in &report.locks {
            for s in &l.top_sites {
                site(s.pc);
            }
        }
        for c in &report.classes {
            for s in &c.top_sites {
                site(s.pc);
            }
        }
        for h in &report.harts {
            for x in &h.held {
                site(x.pc);
            }
            if let Some(w) = &h.waiting {
                site(w.pc);
            }
        }
        for d in &report.deadlocks {
            for e in &d.edges {
                site(e.waiter_pc);
                if let Some(pc) = e.holder_pc {
                    site(pc);
                }
            }
        }
        for inv in report
            .lock_order
            .inversions
            .iter()
            .chain(&report.lock_order.guarded)
        {
            for e in &inv.edges {
                site(e.first.from_pc);
                site(e.first.to_pc);
            }
        }
        let recent = self.recent_events();
        for e in &recent {
            site(e.pc);
        }
        let last_events = self.last_events_of_stuck_harts(&report);
        for h in &last_events {
            for e in &h.events {
                site(e.pc);
            }
        }
        for s in &report.sleep_holding {
            site(s.held_pc);
            site(s.pc);
        }
        if let Some(stall) = &report.stall {
            for h in &stall.harts {
                if let Some(pc) = h.pc {
                    places.entry(pc).or_insert_with(|| self.exact_place(pc));
                }
            }
        }
        if let Some(h) = &report.hang {
            let mut pcs: Vec<u64> = Vec::new();
            for x in &h.diagnosis.harts {
                match &x.state {
                    HartState::Acquiring { site, .. } => pcs.extend(site),
                    HartState::RwWaiting { site, earlier, .. } => {
                        pcs.extend(site.iter().chain(earlier))
                    }
                    _ => {}
                }
                pcs.extend(x.held.iter().filter_map(|l| l.site));
            }
            for r in &h.rw {
                for w in r.readers.iter().chain(&r.writers) {
                    pcs.extend(w.site.iter().chain(&w.earlier));
                }
            }
            for pc in pcs {
                places.entry(pc).or_insert_with(|| self.return_place(pc));
            }
        }
        let deadlock_chains = report
            .deadlocks
            .iter()
            .map(|d| {
                d.describe(|pc| {
                    places
                        .get(&pc)
                        .map_or_else(|| format!("{pc:#x}"), |p| p.file_line())
                })
            })
            .collect();
        let mut panic = self.panic_detail(&report);
        if let Some(p) = &mut panic {
            p.diagnosis = self.panic_diagnosis(&report, from_console);
        }
        let hang = self.hang_detail(&report);
        let snap = self.analyzer.snapshot();
        View {
            generation: self.generation,
            source: self.source,
            state: self.state.clone(),
            config: snap.map(|s| s.config.clone()),
            phase: snap.and_then(|s| s.phase.clone()),
            outcome: snap.and_then(|s| s.outcome),
            ticks: snap.and_then(|s| s.ticks),
            report,
            check,
            places,
            deadlock_chains,
            panic,
            recent_events: recent,
            events_total: self.events_total,
            lost_total: self.lost_total,
            pauses: self.pauses.clone(),
            console: self.console.iter().cloned().collect(),
            console_newlines: self.console_newlines,
            kernel_reader: self.kernel_reader.clone(),
            last_events,
            hang,
            bufs: snap
                .and_then(|s| s.bcache.as_ref())
                .map(|b| b.bufs.clone())
                .unwrap_or_default(),
            lock_events: self.lock_events,
            detail: snap.map(kernel_detail).unwrap_or_default(),
            lab_tests: self.lab.tests().to_vec(),
            user_gdb: self.user_gdb.clone(),
        }
    }

    /// The newest events of every hart in a confirmed deadlock cycle or stalled, by hart.
    fn last_events_of_stuck_harts(&self, report: &Report) -> Vec<HartLastEvents> {
        let mut harts: Vec<HartId> = report
            .deadlocks
            .iter()
            .filter(|c| c.confirmed)
            .flat_map(|c| c.edges.iter().map(|e| e.waiter))
            .chain(
                report
                    .stall
                    .iter()
                    .flat_map(|s| s.harts.iter().map(|h| h.hart)),
            )
            .collect();
        harts.sort_unstable();
        harts.dedup();
        harts
            .into_iter()
            .map(|hart| HartLastEvents {
                hart,
                events: self.last_events(hart, LAST_EVENTS),
            })
            .collect()
    }

    /// Fills a panic record's empty message from the console's last `panic: ` line, and a
    /// kerneltrap's missing trap from the `scause=... sepc=... stval=...` line xv6 prints before
    /// it; true when the message came from the console.
    fn complete_panic(&self, report: &mut Report, check: &mut Check) -> bool {
        let mut from_console = false;
        let message = self
            .console
            .iter()
            .rev()
            .find_map(|l| l.split("panic: ").nth(1))
            .map(|m| m.trim().to_string());
        let trap = self.console.iter().rev().find_map(|l| console_trap(l));
        for p in report.panic.iter_mut().chain(check.panic.iter_mut()) {
            if p.message.is_empty() {
                if let Some(m) = &message {
                    p.message = m.clone();
                    from_console = true;
                }
            }
            if p.trap.is_none() && p.message.starts_with("kerneltrap") {
                p.trap = trap.map(|(scause, sepc, stval)| TrapView {
                    scause: decode_scause(scause),
                    sepc,
                    stval,
                });
            }
        }
        from_console
    }

    /// The site of a lock event (its pc is a return address), as the views show it: for
    /// events a view does not hold (a replay shows the ones after its cursor).
    pub fn event_place(&self, pc: u64) -> Place {
        self.return_place(pc)
    }

    /// A return address: the call site it returns to, outside the lock implementation.
    pub(super) fn return_place(&self, ra: u64) -> Place {
        let Some(sym) = &self.symbols else {
            return Place::unknown(ra);
        };
        // The site is the caller's frame, past any frames of the lock module itself.
        match (sym.return_frames(ra), sym.lock_site(ra)) {
            (Ok(frames), Ok(site)) => {
                let at = frames.iter().position(|f| *f == *site).unwrap_or(0);
                place_from_frames(ra, &frames[at..])
            }
            _ => Place::unknown(ra),
        }
    }

    /// An exact pc (a hart's pc, a trapping instruction).
    pub(super) fn exact_place(&self, pc: u64) -> Place {
        match self.symbols.as_ref().map(|s| s.frames(pc)) {
            Some(Ok(frames)) => place_from_frames(pc, &frames),
            _ => Place::unknown(pc),
        }
    }

    fn frame_lines(&self, frame: StackFrame) -> Vec<FrameLine> {
        let unknown = || {
            vec![FrameLine {
                pc: frame.pc,
                kind: frame.kind,
                function: None,
                location: None,
                inlined: false,
            }]
        };
        let Some(sym) = &self.symbols else {
            return unknown();
        };
        match sym.frames(frame.lookup_pc()) {
            Ok(frames) if !frames.is_empty() => frames
                .iter()
                .map(|f| FrameLine {
                    pc: frame.pc,
                    kind: frame.kind,
                    function: f.function.clone(),
                    location: f.location.as_ref().map(|l| l.to_string()),
                    inlined: f.inlined,
                })
                .collect(),
            _ => unknown(),
        }
    }

    pub(super) fn backtrace(&self, frames: &[StackFrame]) -> Vec<FrameLine> {
        frames.iter().flat_map(|f| self.frame_lines(*f)).collect()
    }

    fn panic_detail(&self, report: &Report) -> Option<PanicDetail> {
        let p = report.panic.as_ref()?;
        // The kernel's own walk, made inside the panic handler, starts at the code that
        // panicked; a stop-time unwind starts wherever the handler happened to be when the
        // guest was stopped, so it is only the fallback.
        let sepc = p.trap.as_ref().map(|t| t.sepc);
        let recorded: Vec<StackFrame> = p
            .frames
            .iter()
            .map(|&pc| StackFrame {
                pc,
                kind: if Some(pc) == sepc {
                    FrameKind::Trap
                } else {
                    FrameKind::Return
                },
            })
            .collect();
        let frames = if recorded.is_empty() {
            p.harts
                .iter()
                .find(|h| h.hart == p.hart)
                .map(|h| h.frames.clone())
                .unwrap_or_default()
        } else {
            recorded
        };
        let backtrace = self.backtrace(&frames);
        // Blame the trapping instruction, else the first frame past the panic machinery and
        // past the functions the message is about (`acquire`: the call that took the lock
        // again; `sched locks`: the call that slept).
        let about = blamed_past(&p.message);
        let fault_pc = match &p.trap {
            Some(t) => Some(t.sepc),
            None => backtrace
                .iter()
                .find(|l| {
                    !l.function
                        .as_deref()
                        .is_some_and(|f| is_panic_machinery(f) || about.contains(&f))
                })
                .map(|l| match l.kind {
                    FrameKind::Return => l.pc.saturating_sub(1),
                    _ => l.pc,
                }),
        };
        let fault = fault_pc.map(|pc| self.exact_place(pc));
        let (disassembly, source) = match (&self.symbols, fault_pc) {
            (Some(sym), Some(pc)) => {
                let asm = sym
                    .disassemble_around(pc, 6, 6, &mut sym.elf_memory())
                    .map(|d: Disassembly| {
                        d.instructions
                            .iter()
                            .map(|i| {
                                let mut text = format!("{} {}", i.mnemonic, i.operands);
                                // Calls through auipc+jalr: say where they go.
                                if let Some(t) = i
                                    .target
                                    .filter(|t| !i.operands.contains(&format!("{t:#x}")))
                                {
                                    text.push_str(&format!("  # {t:#x}"));
                                    if let Some(sym) = &i.target_symbol {
                                        text.push_str(&format!(" <{}>", short_function(sym)));
                                    }
                                }
                                AsmLine {
                                    address: i.address,
                                    text,
                                    at_pc: i.at_pc,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let src = sym
                    .location(pc)
                    .ok()
                    .flatten()
                    .and_then(|loc| sym.source_context(&loc, 3))
                    .map(|c: SourceContext| SourceLines {
                        path: c.path.display().to_string(),
                        first_line: c.first_line,
                        focus: c.focus,
                        lines: c.lines,
                    });
                (asm, src)
            }
            _ => (Vec::new(), None),
        };
        let harts = p
            .harts
            .iter()
            .map(|h| HartBacktrace {
                hart: h.hart,
                run: h.run,
                pc: h.regs.map(|r| r.pc),
                frames: self.backtrace(&h.frames),
            })
            .collect();
        Some(PanicDetail {
            backtrace,
            fault,
            disassembly,
            source,
            harts,
            diagnosis: None,
        })
    }
}

/// What the snapshot holds beyond locks and harts, for the views.
fn kernel_detail(s: &Snapshot) -> KernelDetail {
    let has_locks = s.locks.iter().any(|l| l.path.is_some() || l.lab.is_some());
    KernelDetail {
        locks: if has_locks {
            s.locks
                .iter()
                .map(|l| LockDetail {
                    id: l.meta.id,
                    path: l.path.clone(),
                    addr: l.addr,
                    locked: l.locked,
                    lab: l.lab,
                })
                .collect()
        } else {
            Vec::new()
        },
        cpus: s
            .harts
            .iter()
            .filter_map(|h| h.cpu.clone().map(|c| (h.hart, c)))
            .collect(),
        processes: s.processes.clone(),
        sleeplocks: s.sleeplocks.clone(),
        rwlocks: s.rwlocks.clone(),
        findings: s.findings.clone(),
        kmem_paths: s
            .kmem
            .as_ref()
            .map(|k| k.list_paths.clone())
            .unwrap_or_default(),
        pages_at_start: s.kmem.as_ref().and_then(|k| k.pages_at_start),
        kmem_incomplete: s.kmem.as_ref().is_some_and(|k| k.incomplete),
        bcache_layout: s.bcache.as_ref().and_then(|b| b.layout.clone()),
        bcache_counts_unavailable: s.bcache.as_ref().is_some_and(|b| b.counts_unavailable),
    }
}

fn place_from_frames(pc: u64, frames: &[SourceFrame]) -> Place {
    let Some(first) = frames.first() else {
        return Place::unknown(pc);
    };
    Place {
        pc,
        function: first.function.clone(),
        location: first.location.as_ref().map(|l| l.to_string()),
        inlined_into: frames[1..]
            .iter()
            .map(|f| {
                (
                    f.function.clone().unwrap_or_else(|| "??".into()),
                    f.location.as_ref().map(|l| l.to_string()),
                )
            })
            .collect(),
    }
}

/// The functions a kernel's own panic message names as the place of the check, past which the
/// blame goes: xv6's `panic("acquire")` is raised in acquire about its caller's call;
/// `panic("sched locks")` in sched about a sleep (or yield) with a spinlock held.
fn blamed_past(message: &str) -> &'static [&'static str] {
    let m = message.trim();
    if m == "acquire" {
        &["acquire"]
    } else if m == "release" {
        &["release"]
    } else if m.starts_with("sched") {
        &["sched", "sleep", "yield"]
    } else if m.starts_with("pop_off") {
        &["pop_off", "release"]
    } else {
        &[]
    }
}

/// `scause=0xd sepc=0x80002a2c stval=0x48`, as xv6's kerneltrap prints it.
fn console_trap(line: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let v = line.split(name).nth(1)?.split_whitespace().next()?;
        u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
    };
    Some((field("scause=")?, field("sepc=")?, field("stval=")?))
}

/// Functions that only carry a panic to its halt: not where the problem is.
fn is_panic_machinery(f: &str) -> bool {
    f.starts_with("core::panicking::")
        || f.starts_with("core::panic::")
        || f.starts_with("core::result::unwrap_failed")
        || f.starts_with("core::option::")
        || f.starts_with("lockscope_kernel::panic::")
        || f.ends_with("rust_begin_unwind")
        || f == lockscope_abi::PANIC_HALT_SYMBOL
        // xv6's C panic().
        || f == "panic"
}
