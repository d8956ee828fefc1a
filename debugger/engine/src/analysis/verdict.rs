//! The verdict of `lockscope check` and the one place its sentence is written: the analysis'
//! own record says it with pcs in hex, a symbolized view with functions and lines, in the same
//! words.

use serde::{Deserialize, Serialize};

use super::analyzer::Analyzer;
use super::events::IngestStats;
use super::hang_parts::{HangKind, HangReport, RwDeadlock, SleepChain};
use super::mode_state::SleepHolding;
use super::views::{Inversion, InversionKind, PanicView};
use super::watch::{DeadlockCycle, StallReason, StallReport, StalledHart};
use crate::model::{HartRun, LockId, Outcome};

/// Version of the [`Check`] JSON layout; bumped on any incompatible change.
pub const CHECK_SCHEMA: u32 = 1;

/// `lockscope check`'s verdict, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    Panic,
    Deadlock,
    Stall,
    /// The workload ran to its end and its own check failed (for example kalloctest's page
    /// conservation), with no panic, deadlock or stall to explain it.
    Fail,
    /// A spinlock was held while its hart took a sleeplock: the first time that sleeplock is
    /// contended, `sleep` runs with the spinlock held (xv6 panics "sched locks").
    SpinlockAcrossSleep,
    LockOrderInversion,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Panic => "panic",
            Verdict::Deadlock => "deadlock",
            Verdict::Stall => "stall",
            Verdict::Fail => "fail",
            Verdict::SpinlockAcrossSleep => "spinlock-across-sleep",
            Verdict::LockOrderInversion => "lock-order-inversion",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Verdict::Ok => Severity::Ok,
            Verdict::LockOrderInversion | Verdict::SpinlockAcrossSleep => Severity::Warning,
            Verdict::Panic | Verdict::Deadlock | Verdict::Stall | Verdict::Fail => Severity::Fault,
        }
    }
}

/// How bad a verdict is: a fault happened, or a warning of one that could.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Ok,
    Warning,
    Fault,
}

/// The result of `lockscope check`, stable for scripts (see docs/analysis.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub schema: u32,
    pub verdict: Verdict,
    pub severity: Severity,
    /// One line, raw pcs in hex.
    pub summary: String,
    pub time_ns: Option<u64>,
    pub outcome: Option<Outcome>,
    pub panic: Option<PanicView>,
    /// Confirmed deadlock cycles.
    pub deadlocks: Vec<DeadlockCycle>,
    /// Cycles seen but not yet confirmed.
    pub suspected_deadlocks: usize,
    pub stall: Option<StallReport>,
    /// Unguarded lock-order inversions.
    pub inversions: Vec<Inversion>,
    pub guarded_inversions: usize,
    /// What stops of the guest showed about a hang (kernels read without events: the lock each
    /// stuck hart waits on, reader-writer locks, sleepers), confirmed across two stops or not.
    #[serde(default)]
    pub hang: Option<HangReport>,
    pub ingest: IngestStats,
    /// Spinlocks held while their hart took a sleeplock.
    #[serde(default)]
    pub spinlock_across_sleep: Vec<SleepHolding>,
}

/// How a verdict sentence names what it points at: raw pcs (the analysis' own record) or
/// symbolized places (a view).
pub trait VerdictNames {
    /// A lock, by id.
    fn lock(&self, id: LockId) -> String;
    /// A lock site (a return address) inside a deadlock chain, compactly: `bio.rs:88`.
    fn chain_site(&self, pc: u64) -> String;
    /// A lock site (a return address): `bio::bget kernel/src/bio.rs:88`.
    fn site(&self, pc: u64) -> String;
    /// An exact pc (a stalled hart's): `pc 0x80001234`, `bio::bget kernel/src/bio.rs:88`.
    fn pc(&self, pc: u64) -> String;
    /// Where the panic is blamed, when known: ` at bio::bget kernel/src/bio.rs:622` follows the
    /// message.
    fn fault(&self) -> Option<String>;
}

/// The verdict in one line: what happened, where, with `names` naming locks and code.
pub fn verdict_sentence(check: &Check, names: &dyn VerdictNames) -> String {
    match check.verdict {
        Verdict::Panic => match &check.panic {
            Some(p) => {
                let mut s = format!("panic on hart {}: {}", p.hart, p.message);
                if let Some(t) = &p.trap {
                    s.push_str(&format!(
                        " ({} at sepc {:#x}, stval {:#x})",
                        t.scause, t.sepc, t.stval
                    ));
                }
                if let Some(f) = names.fault() {
                    s.push_str(&format!(" at {f}"));
                }
                s
            }
            None => "a hart panicked but the kernel left no panic record".to_string(),
        },
        Verdict::Deadlock => {
            let Some(c) = check.deadlocks.first() else {
                return match &check.hang {
                    Some(h) => hang_deadlock_sentence(h, names),
                    None => "deadlock".to_string(),
                };
            };
            let more = match check.deadlocks.len() {
                1 => String::new(),
                n => format!(" (and {} more cycles)", n - 1),
            };
            let kind = if c.self_deadlock {
                "self-deadlock"
            } else {
                "deadlock"
            };
            format!("{kind}: {}{more}", c.describe(|pc| names.chain_site(pc)))
        }
        Verdict::Stall => {
            let Some(st) = &check.stall else {
                return "stall".to_string();
            };
            let mut parts: Vec<String> = Vec::new();
            let boot = check
                .hang
                .as_ref()
                .is_some_and(|h| h.confirmed && h.kind == Some(HangKind::Boot));
            if let Some(h) = check.hang.as_ref().filter(|h| h.confirmed) {
                parts.extend(h.chains.iter().map(chain_line));
                if h.all_asleep && h.chains.is_empty() {
                    parts.push("every process is asleep and no hart runs one".into());
                }
            }
            parts.extend(st.harts.iter().map(|h| stall_line(h, names)));
            let hang = if boot {
                "boot hang (no hart reached the scheduler): "
            } else if st.system_hang {
                "system hang: "
            } else {
                ""
            };
            format!("{hang}{}", parts.join("; "))
        }
        Verdict::Fail => {
            "the workload's own check failed (see the console for what it found)".to_string()
        }
        Verdict::SpinlockAcrossSleep => match check.spinlock_across_sleep.first() {
            Some(s) => sleep_line(s, names),
            None => "a spinlock held across acquiresleep".to_string(),
        },
        Verdict::LockOrderInversion => match check.inversions.first() {
            Some(inv) => format!("lock-order inversion: {}", inversion_words(inv, names)),
            None => "lock-order inversion".to_string(),
        },
        Verdict::Ok => "no panic, deadlock, stall or lock-order inversion".to_string(),
    }
}

/// An inversion in words, after `lock-order inversion: `.
pub fn inversion_words(inv: &Inversion, names: &dyn VerdictNames) -> String {
    let edge = |e: &super::views::OrderEdgeView| {
        format!(
            "{} -> {} (hart {}, {} then {})",
            e.from_name,
            e.to_name,
            e.first.hart,
            names.site(e.first.from_pc),
            names.site(e.first.to_pc)
        )
    };
    let sites: Vec<String> = inv.edges.iter().map(edge).collect();
    match inv.kind {
        InversionKind::Cycle => sites.join(" vs "),
        InversionKind::InstanceOrder => {
            let seen: Vec<String> = inv
                .orders_seen
                .iter()
                .map(|(o, n)| format!("{n} {}", o.as_str()))
                .collect();
            format!(
                "{} instances nested in no fixed order ({}): {}",
                inv.class.as_deref().unwrap_or("one class's"),
                seen.join(", "),
                sites.join(" vs ")
            )
        }
        InversionKind::RecursiveRead => {
            let Some(e) = inv.edges.first() else {
                return "a read taken again".to_string();
            };
            let writer = match inv.writer_waiting {
                Some(w) => format!("; hart {w} was waiting to write"),
                None => String::new(),
            };
            format!(
                "hart {} read {} again while reading it ({} then {}): a deadlock when a writer waits in between (writer priority){writer}",
                e.first.hart,
                e.from_name,
                names.site(e.first.from_pc),
                names.site(e.first.to_pc)
            )
        }
    }
}

/// A spinlock held across a sleeplock in words.
pub fn sleep_line(s: &SleepHolding, names: &dyn VerdictNames) -> String {
    format!(
        "spinlock {} (taken at {}) held across acquiresleep of {} at {} on hart {}{}: the first time that sleeplock is contended, sleep runs holding it",
        s.lock_name,
        names.site(s.held_pc),
        s.sleeplock_name,
        names.site(s.pc),
        s.hart,
        if s.count > 1 {
            format!(" ({} times)", s.count)
        } else {
            String::new()
        }
    )
}

/// One stalled hart in words: `hart 1 spun on kmem for 2000 ms at kalloc::alloc ...`.
pub fn stall_line(h: &StalledHart, names: &dyn VerdictNames) -> String {
    let what = match h.reason {
        StallReason::NoProgress => "made no progress".to_string(),
        StallReason::NothingToRun => {
            return format!(
                "hart {} has nothing to run{}",
                h.hart,
                h.pc.map_or_else(String::new, |pc| format!(" (at {})", names.pc(pc)))
            );
        }
        StallReason::SpinningTooLong { lock, .. } => format!("spun on {}", names.lock(lock)),
    };
    let at =
        h.pc.map_or_else(String::new, |pc| format!(" at {}", names.pc(pc)));
    format!("hart {} {what} for {} ms{at}", h.hart, h.for_ns / 1_000_000)
}

/// A reader-writer or sleeplock deadlock the stops confirmed, in words.
fn hang_deadlock_sentence(h: &HangReport, names: &dyn VerdictNames) -> String {
    if let Some(rw) = h.rw.first() {
        return rw_sentence(rw, names);
    }
    if let Some(c) = h.chains.iter().find(|c| c.cycle) {
        return format!("sleeplock deadlock: {}", chain_line(c));
    }
    "deadlock".to_string()
}

/// A reader-writer lock nobody gets through, in one line.
pub fn rw_sentence(rw: &RwDeadlock, names: &dyn VerdictNames) -> String {
    let at = |site: Option<u64>| site.map_or(String::new(), |pc| format!(" at {}", names.site(pc)));
    let fields: Vec<String> = rw
        .fields
        .iter()
        .map(|f| format!("{}={}", f.name, f.text))
        .collect();
    let mut parts = Vec::new();
    for r in &rw.readers {
        let again = match r.earlier {
            Some(pc) => format!(
                " asks again for a read lock it already holds (taken at {})",
                names.site(pc)
            ),
            None => " waits for a read lock".to_string(),
        };
        parts.push(format!(
            "hart{} in {}{}{again}",
            r.hart,
            r.function,
            at(r.site)
        ));
    }
    for w in &rw.writers {
        parts.push(format!(
            "hart{} in {}{} waits to write",
            w.hart,
            w.function,
            at(w.site)
        ));
    }
    let why = match (rw.readers.iter().any(|r| r.earlier.is_some()), rw.writers.is_empty()) {
        (true, false) => ": with writer priority the waiting writer keeps the reader out, and the writer waits for the reader's own read lock: neither can progress",
        (_, false) if rw.readers.is_empty() => ": the writer waits for readers that never leave",
        (_, true) => ": the readers wait for a writer that never leaves",
        _ => ": readers and writer wait on each other",
    };
    format!(
        "rwlock deadlock on {} ({}): {}{why}",
        rw.rwlock,
        fields.join(" "),
        parts.join("; ")
    )
}

/// A chain of sleepers in one line.
pub fn chain_line(c: &SleepChain) -> String {
    let mut s = String::new();
    for (i, l) in c.links.iter().enumerate() {
        if i > 0 {
            s.push_str(", which ");
        }
        let on = l
            .chan_name
            .clone()
            .or(l.sleeplock.clone())
            .unwrap_or_else(|| "?".into());
        if i == 0 {
            s.push_str(&format!("pid {} ({}) ", l.pid, l.name));
        }
        s.push_str(&format!("sleeps on {on}"));
        if l.free {
            s.push_str(" while it is free: nobody will wake it (a lost wakeup)");
        } else if let Some(h) = &l.holder {
            s.push_str(&format!(" held by pid {} ({})", h.pid, h.name));
        }
    }
    if c.cycle {
        s.push_str(": the cycle closes");
    }
    s
}

/// The analysis' own names: lock names from the last snapshot, pcs in hex.
struct RawNames<'a>(&'a Analyzer);

impl VerdictNames for RawNames<'_> {
    fn lock(&self, id: LockId) -> String {
        self.0.lock_name(id)
    }
    fn chain_site(&self, pc: u64) -> String {
        format!("{pc:#x}")
    }
    fn site(&self, pc: u64) -> String {
        format!("{pc:#x}")
    }
    fn pc(&self, pc: u64) -> String {
        format!("pc {pc:#x}")
    }
    fn fault(&self) -> Option<String> {
        None
    }
}

impl Analyzer {
    /// The verdict of `lockscope check`: panic, then confirmed deadlock, then stall, then a
    /// failed workload, then a spinlock held across a sleeplock, then an unguarded lock-order
    /// inversion, else ok.
    pub fn check(&self) -> Check {
        let snap = self.snapshot();
        let panic = self.panic();
        let panicked = panic.is_some()
            || snap.is_some_and(|s| {
                s.outcome == Some(Outcome::Panic)
                    || s.harts.iter().any(|h| h.run == HartRun::Panicked)
            });
        let all = self.deadlocks();
        let confirmed: Vec<DeadlockCycle> = all.iter().filter(|c| c.confirmed).cloned().collect();
        let stall = self.stall().cloned();
        let order = self.lock_order();
        let sleeps = self.sleep_holding();
        let hang = self.hang().cloned();
        let hang_deadlock = hang.as_ref().is_some_and(|h| {
            h.confirmed && matches!(h.kind, Some(HangKind::RwDeadlock | HangKind::SleepDeadlock))
        });
        let verdict = if panicked {
            Verdict::Panic
        } else if !confirmed.is_empty() || hang_deadlock {
            Verdict::Deadlock
        } else if stall.as_ref().is_some_and(|s| !s.harts.is_empty()) {
            Verdict::Stall
        } else if snap.is_some_and(|s| s.outcome == Some(Outcome::Fail)) {
            Verdict::Fail
        } else if !sleeps.is_empty() {
            Verdict::SpinlockAcrossSleep
        } else if !order.inversions.is_empty() {
            Verdict::LockOrderInversion
        } else {
            Verdict::Ok
        };
        let mut check = Check {
            schema: CHECK_SCHEMA,
            verdict,
            severity: verdict.severity(),
            summary: String::new(),
            time_ns: snap.map(|s| s.time_ns),
            outcome: snap.and_then(|s| s.outcome),
            panic,
            suspected_deadlocks: all.len() - confirmed.len(),
            deadlocks: confirmed,
            stall,
            guarded_inversions: order.guarded.len(),
            inversions: order.inversions,
            hang,
            ingest: self.ingest_stats().clone(),
            spinlock_across_sleep: sleeps,
        };
        check.summary = verdict_sentence(&check, &RawNames(self));
        check
    }
}
