//! The stop-time diagnosis in words, symbolized: the panicking hart's process and held locks,
//! the faulting access, why no buffer was free, and for a hang every hart's state, the
//! reader-writer locks and sleeplock chains nobody gets through, and where each sleeper sleeps.

use super::feeds::Monitor;
use super::view::{
    AccessLine, BufRefLine, BufsWhy, HangDetail, HartLine, HeldLine, PanicDiagnosis, Place,
    SleeperLine,
};
use crate::analysis::{chain_line, rw_sentence, HangKind, Report, VerdictNames};
use crate::model::{
    AccessDiagnosis, AccessKind, HartState, HeldLock, LockEvidence, LockId, ProcRef, Snapshot,
};

/// QEMU `virt` RAM starts here: a pc below it at boot is in no kernel.
const RAM_BASE: u64 = 0x8000_0000;

impl Monitor {
    fn lock_words(&self, snap: &Snapshot, id: LockId) -> (String, Option<String>) {
        match snap.lock(id) {
            Some(l) => (l.meta.name.clone(), l.path.clone()),
            None => (format!("lock#{id}"), None),
        }
    }

    /// `name (path)`, or the path alone when the name is it.
    fn lock_label(&self, snap: &Snapshot, id: LockId) -> String {
        match self.lock_words(snap, id) {
            (name, Some(path)) if path != name => format!("{name} ({path})"),
            (name, _) => name,
        }
    }

    pub(super) fn held_lines(&self, held: &[HeldLock], snap: &Snapshot) -> Vec<HeldLine> {
        held.iter()
            .map(|h| {
                let (name, path) = self.lock_words(snap, h.lock);
                HeldLine {
                    lock: h.lock,
                    name,
                    path,
                    site: h.site.map(|pc| self.return_place(pc)),
                }
            })
            .collect()
    }

    /// What the stop showed about the panic, when the source diagnosed it.
    pub(super) fn panic_diagnosis(
        &self,
        report: &Report,
        message_from_console: bool,
    ) -> Option<PanicDiagnosis> {
        let p = report.panic.as_ref()?;
        let snap = self.analyzer.snapshot()?;
        let d = snap.diagnosis.as_ref()?;
        let hart = d.harts.iter().find(|h| h.hart == p.hart);
        let access = d.access.as_ref().map(|a| {
            let at = self.exact_place(a.pc);
            let (sentence, candidates) = access_words(a, &at);
            AccessLine {
                sentence,
                candidates,
                detail: a.clone(),
            }
        });
        let bufs = (p.message.contains("no buffers") || p.message.starts_with("bget"))
            .then(|| bufs_why(snap))
            .flatten();
        Some(PanicDiagnosis {
            process: hart.and_then(|h| h.process.clone()),
            message_from_console,
            held: hart.map_or_else(Vec::new, |h| self.held_lines(&h.held, snap)),
            access,
            bufs,
        })
    }

    /// The last stop's hang diagnosis in words.
    pub(super) fn hang_detail(&self, report: &Report) -> Option<HangDetail> {
        let h = report.hang.as_ref()?;
        let snap = self.analyzer.snapshot()?;
        let d = &h.diagnosis;
        let apart_ns = h.compared_with_ns.map(|t| d.time_ns.saturating_sub(t));
        let names = |id: LockId| self.lock_label(snap, id);
        let holder_words = |id: LockId| match snap.lock(id).and_then(|l| l.holder) {
            Some(hh) => format!("held by hart{hh}"),
            None if snap.lock(id).and_then(|l| l.locked) == Some(true) => {
                "locked, but its cpu says no hart holds it".to_string()
            }
            None => "free".to_string(),
        };
        let harts = d
            .harts
            .iter()
            .map(|x| {
                let (state, at) = match &x.state {
                    HartState::Panicked => ("panicked".to_string(), Some(self.exact_place(x.pc))),
                    HartState::Acquiring {
                        lock: Some(l),
                        evidence,
                        site,
                    } => {
                        let how = match evidence {
                            Some(LockEvidence::Variable { name, function }) => {
                                format!("`{name}` in {function}, from DWARF")
                            }
                            Some(LockEvidence::AtomicOperand { instruction }) => {
                                format!("the address of `{instruction}`")
                            }
                            Some(LockEvidence::CounterClimb) => {
                                "the only held lock whose nts climbed between the stops".into()
                            }
                            None => "?".into(),
                        };
                        (
                            format!(
                                "spins in acquire on {}, {} (lock told by {how})",
                                names(*l),
                                holder_words(*l)
                            ),
                            site.map(|s| self.return_place(s)),
                        )
                    }
                    HartState::Acquiring {
                        lock: None, site, ..
                    } => (
                        "spins in acquire; which lock could not be told".to_string(),
                        site.map(|s| self.return_place(s)),
                    ),
                    HartState::RwWaiting {
                        rwlock,
                        writer,
                        function,
                        site,
                        earlier,
                    } => {
                        let mut s = format!(
                            "waits in {function}(&{rwlock}) to {}",
                            if *writer { "write" } else { "read" }
                        );
                        if let Some(e) = earlier {
                            s.push_str(&format!(
                                ", and already holds it (taken at {})",
                                self.return_place(*e).short()
                            ));
                        }
                        (s, site.map(|s| self.return_place(s)))
                    }
                    HartState::Idle => (
                        "idle: waits for an interrupt in the scheduler".to_string(),
                        Some(self.exact_place(x.pc)),
                    ),
                    HartState::Running => (
                        "running".to_string(),
                        Some(self.exact_place(x.interrupted_pc.unwrap_or(x.pc))),
                    ),
                    HartState::Outside => (
                        format!("at pc {:#x}, outside the kernel's code", x.pc),
                        None,
                    ),
                };
                HartLine {
                    hart: x.hart,
                    pc: x.interrupted_pc.unwrap_or(x.pc),
                    process: x.process.clone(),
                    state,
                    at,
                    held: self.held_lines(&x.held, snap),
                    frames: self.backtrace(&x.frames),
                }
            })
            .collect();
        let sleepers = d
            .sleepers
            .iter()
            .map(|s| SleeperLine {
                pid: s.pid,
                name: s.name.clone(),
                chan: s.chan_name.clone().or(s.chan.map(|c| format!("{c:#x}"))),
                sleeplock: s.sleeplock.as_ref().map(|o| match (&o.holder, o.locked) {
                    (_, false) => "free: nobody will wake it".to_string(),
                    (Some(p), true) => format!("held by pid {} ({})", p.pid, p.name),
                    (None, true) => "held".to_string(),
                }),
                frames: self.backtrace(&s.frames),
                note: s.unwind_error.clone(),
            })
            .collect();
        let apart = apart_ns.map_or(String::new(), |n| {
            format!(" (the same at two stops {} ms apart)", n / 1_000_000)
        });
        let headline = match (h.confirmed, h.kind) {
            (true, Some(HangKind::Deadlock)) => format!("Deadlock: harts wait on each other's spinlocks{apart}"),
            (true, Some(HangKind::RwDeadlock)) => format!("Reader-writer lock deadlock{apart}"),
            (true, Some(HangKind::SleepDeadlock)) => format!("Sleeplock deadlock: processes wait on each other{apart}"),
            (true, Some(HangKind::Stall)) => format!("Stall: no cycle, but nothing progresses{apart}"),
            (true, Some(HangKind::Boot)) => format!("Boot hang: no hart reached the kernel's scheduler{apart}"),
            _ => "One stop, nothing confirmed yet: a hang is confirmed by the same state at a second stop at least 200 ms later".to_string(),
        };
        let mut notes = Vec::new();
        if d.booting {
            notes.extend(boot_note(d, self.console.is_empty()));
        }
        if let Some(s) = &h.suspicion {
            notes.push(format!("lockscope stopped the guest to look because {s}"));
        }
        Some(HangDetail {
            confirmed: h.confirmed,
            kind: h.kind,
            apart_ns,
            headline,
            harts,
            rw: h.rw.iter().map(|r| rw_sentence(r, &Names(self))).collect(),
            chains: h.chains.iter().map(chain_line).collect(),
            sleepers,
            notes,
        })
    }
}

/// The monitor's names for sentences written before the view exists.
struct Names<'a>(&'a Monitor);

impl VerdictNames for Names<'_> {
    fn lock(&self, id: LockId) -> String {
        self.0
            .analyzer
            .snapshot()
            .map_or(format!("lock#{id}"), |s| s.lock_name(id))
    }
    fn chain_site(&self, pc: u64) -> String {
        self.0.return_place(pc).file_line()
    }
    fn site(&self, pc: u64) -> String {
        self.0.return_place(pc).short()
    }
    fn pc(&self, pc: u64) -> String {
        self.0.exact_place(pc).short()
    }
    fn fault(&self) -> Option<String> {
        None
    }
}

/// Words for a kernel stuck in its boot, with the hint for the classic cause.
fn boot_note(d: &crate::model::Diagnosis, silent: bool) -> Vec<String> {
    let mut out = Vec::new();
    let outside = d.harts.iter().all(|h| h.pc < RAM_BASE);
    let traps: Vec<String> = d
        .harts
        .iter()
        .filter_map(|h| {
            let t = h.last_trap?;
            (t.scause >> 63 == 0).then(|| {
                let mode = match h.privilege {
                    Some(3) => " (machine mode)",
                    Some(1) => " (supervisor mode)",
                    _ => "",
                };
                format!(
                    "hart{}{mode}: {} at {:#x}",
                    h.hart,
                    crate::analysis::decode_scause(t.scause).name,
                    t.stval
                )
            })
        })
        .collect();
    out.push(format!(
        "No hart reached the kernel's scheduler{}: where each hart is stuck is below.",
        if silent {
            " and the console printed nothing"
        } else {
            ""
        }
    ));
    if !traps.is_empty() {
        out.push(format!("Last traps: {}.", traps.join("; ")));
    }
    if outside {
        out.push(
            "Every hart runs outside the kernel's memory: it trapped before the kernel set its trap vector. \
             On QEMU 6 and later a kernel that gives supervisor mode no PMP entry faults on its first \
             instruction after mret: start() must set pmpaddr0 and pmpcfg0 (later xv6 does; 2020-era \
             starters do not)."
                .to_string(),
        );
    }
    out
}

/// The access in a sentence, and the candidates in words.
fn access_words(a: &AccessDiagnosis, at: &Place) -> (String, Vec<String>) {
    let kind = match a.kind {
        AccessKind::Load => "load",
        AccessKind::Store => "store",
        AccessKind::Atomic => "atomic access",
        AccessKind::Fetch => "instruction fetch",
    };
    let line = at.file_line();
    if a.kind == AccessKind::Fetch {
        return (
            format!(
                "{kind} at {:#x} faulted (a jump or return to a bad address)",
                a.address
            ),
            Vec::new(),
        );
    }
    let null = a.base_value == Some(0);
    let sentence = match &a.named {
        Some(n) => {
            let what = match (&n.member, &n.pointee) {
                (Some(m), Some(p)) => format!("`{m}` (offset {} in {p})", n.member_offset),
                (None, Some(p)) => format!("offset {} of {p}", n.member_offset),
                _ => format!("offset {}", n.member_offset),
            };
            let through = if null {
                format!("a NULL `{}` {}", n.pointer_type, n.variable)
            } else {
                let v = n
                    .value
                    .or(a.base_value)
                    .map_or(String::new(), |v| format!(" = {v:#x}"));
                format!("`{}` {}{v}", n.pointer_type, n.variable)
            };
            format!("{kind} of {what} through {through} at {line}")
        }
        None => {
            let base = a.base_register.as_deref().unwrap_or("?");
            let value = a.base_value.map_or(String::new(), |v| {
                if v == 0 {
                    " (NULL)".into()
                } else {
                    format!(" = {v:#x}")
                }
            });
            format!(
                "{kind} at {:#x}: offset {} from `{base}`{value}, by `{}` at {line}",
                a.address, a.offset, a.instruction
            )
        }
    };
    let candidates = a
        .candidates
        .iter()
        .map(|c| {
            let member = match (&c.member, &c.pointee) {
                (Some(m), Some(p)) => format!("its `{m}` is at offset {} in {p}", c.member_offset),
                _ => format!("offset {}", c.member_offset),
            };
            let value = match c.value {
                Some(0) => ", NULL here".to_string(),
                Some(v) => format!(", = {v:#x} here"),
                None => String::new(),
            };
            let func = c
                .function
                .as_deref()
                .map_or(String::new(), |f| format!(" in {f}"));
            format!(
                "`{}` ({}){func}: {member}{value}",
                c.variable, c.pointer_type
            )
        })
        .collect();
    (sentence, candidates)
}

/// Every buffer with a reference, and who holds it: why `bget` found none free.
fn bufs_why(snap: &Snapshot) -> Option<BufsWhy> {
    let b = snap.bcache.as_ref()?;
    let proc_of = |pid: i64| -> Option<ProcRef> {
        snap.processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| ProcRef {
                slot: p.slot,
                pid,
                name: p.name.clone(),
            })
    };
    let referenced: Vec<BufRefLine> = b
        .bufs
        .iter()
        .filter(|x| x.refcnt > 0)
        .map(|x| BufRefLine {
            index: x.index,
            blockno: x.blockno,
            refcnt: x.refcnt,
            holder: x
                .holder_pid
                .and_then(proc_of)
                .or(x.holder_pid.map(|pid| ProcRef {
                    slot: 0,
                    pid,
                    name: "?".into(),
                })),
        })
        .collect();
    let total = b.bufs.len();
    let held = referenced.iter().filter(|r| r.holder.is_some()).count();
    let unheld = referenced.len() - held;
    let extra: u32 = referenced.iter().map(|r| r.refcnt.saturating_sub(1)).sum();
    let sentence = if referenced.len() == total {
        format!(
            "all {total} bufs have refcnt > 0, so bget found none to recycle: {held} are held by a process (their sleeplock), {unheld} are referenced by nobody who holds them{}: a reference was taken and never dropped (a missing brelse, or a refcnt++ too many)",
            if extra > 0 {
                format!(", and {extra} references are beyond one per buf")
            } else {
                String::new()
            }
        )
    } else if extra as usize >= total {
        // The other harts ran on after the panic until they saw `panicked`, and may have
        // dropped a reference or two by the stop; references far beyond one per buf are a leak.
        format!(
            "{} of {total} bufs have refcnt > 0 at the stop (harts still running after the panic may have dropped some), {held} held by a process, and {extra} references are beyond one per buf: a reference was taken and never dropped (a missing brelse, or a refcnt++ too many)",
            referenced.len()
        )
    } else {
        format!(
            "{} of {total} bufs have refcnt > 0 ({held} held by a process); the buffers bget can recycle are where it looks: check that a miss looks in every bucket",
            referenced.len()
        )
    };
    Some(BufsWhy {
        total,
        referenced,
        sentence,
    })
}
