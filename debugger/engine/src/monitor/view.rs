//! The symbolized, UI-ready picture of a target: [`View`] and its parts.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::lab::{LabResult, LabTest};
use crate::analysis::{verdict_sentence, Check, HangKind, Report, VerdictNames};
use crate::feed::{Ending, StopReason};
use crate::model::{
    AccessDiagnosis, BufSnapshot, CpuState, Finding, FrameKind, HartId, HartRun, LabCounts,
    LockEvent, LockId, Outcome, ProcRef, ProcessSnapshot, RwLockSnapshot, SleeplockSnapshot,
    TargetConfig,
};

/// How the monitor reads its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Guest RAM mapped from QEMU's shared file: nothing is paused.
    SharedRam,
    /// Polling through the gdb stub: interrupt, read, continue.
    GdbPoll,
    /// A recorded trace.
    Trace,
}

/// What the target is doing, as far as the session knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum TargetState {
    /// Waiting for the kernel to publish its ABI.
    Starting,
    Running,
    Stopped {
        reason: StopReason,
    },
    Ended {
        ending: Ending,
    },
}

/// Pauses the gdb source imposed on the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseStats {
    pub count: u64,
    pub last_ns: u64,
    pub max_ns: u64,
    pub total_ns: u64,
    /// Median of the most recent pauses.
    pub median_ns: u64,
}

/// A code address, symbolized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The raw address as recorded.
    pub pc: u64,
    /// The innermost function, demangled (`lockscope_kernel::bio::bget`).
    pub function: Option<String>,
    /// `kernel/src/bio.rs:88`.
    pub location: Option<String>,
    /// Functions this one is inlined into, innermost first, with their call sites.
    pub inlined_into: Vec<(String, Option<String>)>,
}

impl Place {
    pub(super) fn unknown(pc: u64) -> Self {
        Place {
            pc,
            function: None,
            location: None,
            inlined_into: Vec::new(),
        }
    }

    /// `bio::bget kernel/src/bio.rs:88`, or the address when nothing is known.
    pub fn short(&self) -> String {
        match (&self.function, &self.location) {
            (Some(f), Some(l)) => format!("{} {l}", short_function(f)),
            (Some(f), None) => short_function(f).to_string(),
            (None, Some(l)) => l.clone(),
            (None, None) => format!("{:#x}", self.pc),
        }
    }

    /// `bio.rs:88`, the most compact form, for chains.
    pub fn file_line(&self) -> String {
        match &self.location {
            Some(l) => l.rsplit('/').next().unwrap_or(l).to_string(),
            None => self.short(),
        }
    }
}

/// Drops the crate prefix and generic noise: `lockscope_kernel::bio::bget` -> `bio::bget`.
pub fn short_function(f: &str) -> &str {
    f.strip_prefix("lockscope_kernel::").unwrap_or(f)
}

/// One frame of a symbolized backtrace (an inlined call gives several for one address).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameLine {
    pub pc: u64,
    pub kind: FrameKind,
    pub function: Option<String>,
    pub location: Option<String>,
    /// Inlined into the next line.
    pub inlined: bool,
}

/// One hart's symbolized stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartBacktrace {
    pub hart: HartId,
    pub run: HartRun,
    pub pc: Option<u64>,
    pub frames: Vec<FrameLine>,
}

/// One disassembled instruction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsmLine {
    pub address: u64,
    pub text: String,
    pub at_pc: bool,
}

/// Source lines around a line of interest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLines {
    pub path: String,
    pub first_line: u32,
    pub focus: u32,
    pub lines: Vec<String>,
}

/// Everything to show about a panic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicDetail {
    /// The panicking hart's backtrace: from the stop's unwind when there was one, else from
    /// the kernel's own record.
    pub backtrace: Vec<FrameLine>,
    /// The address blamed: the trapping instruction, or the first frame outside the panic
    /// machinery.
    pub fault: Option<Place>,
    pub disassembly: Vec<AsmLine>,
    pub source: Option<SourceLines>,
    /// Every hart's stack, when the target was stopped and read.
    pub harts: Vec<HartBacktrace>,
    /// What the stop showed beyond the stacks, for a kernel diagnosed through DWARF.
    #[serde(default)]
    pub diagnosis: Option<PanicDiagnosis>,
}

/// A lock a hart holds, and where it most likely took it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLine {
    pub lock: LockId,
    pub name: String,
    /// Its variable path (`bcache.bucket[3].lock`), when it has one.
    pub path: Option<String>,
    /// The call of `acquire` that most likely took it (an inference without lock events).
    pub site: Option<Place>,
}

/// The faulting access of a trap, in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLine {
    /// `load of refcnt (offset 72 in struct buf) through a NULL struct buf * b at bio.c:163`.
    pub sentence: String,
    /// When the base register named nothing: the guesses, in words.
    pub candidates: Vec<String>,
    pub detail: AccessDiagnosis,
}

/// One referenced buffer, for `bget: no buffers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufRefLine {
    pub index: u32,
    pub blockno: u32,
    pub refcnt: u32,
    /// The process holding its sleeplock.
    pub holder: Option<ProcRef>,
}

/// Why no buffer was free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufsWhy {
    pub total: usize,
    pub referenced: Vec<BufRefLine>,
    pub sentence: String,
}

/// What a stop showed about a panic beyond the backtraces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicDiagnosis {
    /// The process the panicking hart ran (`cpus[h].proc`).
    pub process: Option<ProcRef>,
    /// The message came from the console (`panic: ...`), not from the call site.
    pub message_from_console: bool,
    /// Every lock the panicking hart holds: what `sched locks` and `acquire` are about.
    pub held: Vec<HeldLine>,
    pub access: Option<AccessLine>,
    /// For `bget: no buffers`.
    pub bufs: Option<BufsWhy>,
}

/// One hart at a stop, in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartLine {
    pub hart: HartId,
    pub pc: u64,
    pub process: Option<ProcRef>,
    /// `spins in acquire on bcache.bucket[3].lock, held by hart2 (lk in acquire, DWARF)`.
    pub state: String,
    /// Where: the waiter's call site, or the pc.
    pub at: Option<Place>,
    pub held: Vec<HeldLine>,
    pub frames: Vec<FrameLine>,
}

/// A sleeping process, in words, with its kernel stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleeperLine {
    pub pid: i64,
    pub name: String,
    /// What it sleeps on: `sleeplock of buf 3 (block 33)`, `ticks`.
    pub chan: Option<String>,
    /// The sleeplock's state: `held by pid 4 (bcachetest)`, `free`.
    pub sleeplock: Option<String>,
    pub frames: Vec<FrameLine>,
    /// Why its stack ends early.
    pub note: Option<String>,
}

/// What stops of the guest showed about a hang, symbolized (kernels without lock events).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangDetail {
    /// The same stuck state at two stops far enough apart.
    pub confirmed: bool,
    pub kind: Option<HangKind>,
    /// Between the two stops compared.
    pub apart_ns: Option<u64>,
    /// What it is, in one line.
    pub headline: String,
    pub harts: Vec<HartLine>,
    /// Reader-writer locks nobody gets through, in words.
    pub rw: Vec<String>,
    /// Chains of sleeplock waits, in words.
    pub chains: Vec<String>,
    pub sleepers: Vec<SleeperLine>,
    /// Hints: a kernel stuck in its boot, what raised the suspicion.
    pub notes: Vec<String>,
}

/// What one hart did last: its newest lock events, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartLastEvents {
    pub hart: HartId,
    pub events: Vec<LockEvent>,
}

/// The symbolized, UI-ready picture of a target at one moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct View {
    /// Bumped whenever anything changed; a UI redraws only when it moves.
    pub generation: u64,
    pub source: SourceKind,
    pub state: TargetState,
    pub config: Option<TargetConfig>,
    pub phase: Option<String>,
    pub outcome: Option<Outcome>,
    pub ticks: Option<u64>,
    pub report: Report,
    pub check: Check,
    /// Every code address in `report`, symbolized. Return addresses (lock sites) are keyed as
    /// recorded.
    pub places: HashMap<u64, Place>,
    /// Deadlock cycles in words.
    pub deadlock_chains: Vec<String>,
    pub panic: Option<PanicDetail>,
    /// The newest lock events, oldest first.
    pub recent_events: Vec<LockEvent>,
    pub events_total: u64,
    pub lost_total: u64,
    pub pauses: PauseStats,
    /// The guest console, newest line last; the last may be incomplete.
    pub console: Vec<String>,
    /// Lines the console has ended since the start (the `console` above keeps the newest):
    /// whether output came since some moment.
    #[serde(default)]
    pub console_newlines: u64,
    /// The buffer cache's buffers, for a bucket's drill-down (empty without a buffer cache).
    #[serde(default)]
    pub bufs: Vec<BufSnapshot>,
    /// How the kernel is read (`lockscope ABI v1`); `None` in a replay.
    #[serde(default)]
    pub kernel_reader: Option<String>,
    /// Each hart of a confirmed deadlock or a stall: what it did last (its acquisitions, then
    /// its endless spin), pcs in `places`.
    #[serde(default)]
    pub last_events: Vec<HartLastEvents>,
    /// What stops showed about a hang, for kernels diagnosed through DWARF.
    #[serde(default)]
    pub hang: Option<HangDetail>,
    /// The source delivers lock events (wait and hold times, sites): our kernel's rings; an
    /// xv6 kernel read through DWARF alone has none.
    #[serde(default = "yes")]
    pub lock_events: bool,
    /// What the source reads beyond locks and harts (an xv6 kernel): processes, sleeplocks,
    /// reader-writer locks, findings, each lock's variable.
    #[serde(default)]
    pub detail: KernelDetail,
    /// The lab's tests as the console showed them, with the counters over each one.
    #[serde(default)]
    pub lab_tests: Vec<LabTest>,
    /// What the user's gdb holds (through lockscope's proxy): `stopped by gdb (hart 2,
    /// breakpoint or step)`, `gdb connected`.
    #[serde(default)]
    pub user_gdb: Option<String>,
}

fn yes() -> bool {
    true
}

/// One lock's variable and raw state, as a source that reads locks in memory gives them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockDetail {
    pub id: LockId,
    /// `bcache.bucket[4].lock`; `None` for a lock known only from the lab's registry.
    pub path: Option<String>,
    pub addr: Option<u64>,
    pub locked: Option<bool>,
    /// The lab's `n` and `nts`, raw.
    pub lab: Option<LabCounts>,
}

/// What a source reads beyond locks, harts and events (an unmodified xv6 kernel through its
/// DWARF), for the views that show it. Empty for sources that do not read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelDetail {
    /// Per lock, by id; empty when the source gives no lock variables.
    pub locks: Vec<LockDetail>,
    /// Each hart's `struct cpu`.
    pub cpus: Vec<(HartId, CpuState)>,
    pub processes: Vec<ProcessSnapshot>,
    pub sleeplocks: Vec<SleeplockSnapshot>,
    pub rwlocks: Vec<RwLockSnapshot>,
    pub findings: Vec<Finding>,
    /// Where each free list's head is, parallel to the allocator's lists.
    pub kmem_paths: Vec<String>,
    /// Free pages right after boot, to compare the lists' total with.
    pub pages_at_start: Option<u64>,
    /// A free-list walk stopped early: the counts are lower bounds.
    pub kmem_incomplete: bool,
    /// How the buffer cache's buckets were found.
    pub bcache_layout: Option<String>,
    /// The source has no hit, miss or steal counts per bucket (xv6 keeps none).
    pub bcache_counts_unavailable: bool,
}

impl KernelDetail {
    /// The lock `id`'s detail, when there is one.
    pub fn lock(&self, id: LockId) -> Option<&LockDetail> {
        self.locks
            .get(id as usize)
            .filter(|l| l.id == id)
            .or_else(|| self.locks.iter().find(|l| l.id == id))
    }
}

impl View {
    /// The symbolized place of a recorded address (never fails: unknown addresses print raw).
    pub fn place(&self, pc: u64) -> Place {
        self.places
            .get(&pc)
            .cloned()
            .unwrap_or_else(|| Place::unknown(pc))
    }

    /// The verdict in one line, symbolized: what `lockscope check` prints and the dashboard
    /// shows under its tabs.
    pub fn verdict_sentence(&self) -> String {
        if self.check.verdict == crate::analysis::Verdict::Fail {
            if let Some(t) = self
                .lab_tests
                .iter()
                .find(|t| t.result == Some(LabResult::Fail))
            {
                return format!(
                    "{} failed by the lab's own output: \"{}\"",
                    t.name,
                    t.result_line.as_deref().unwrap_or("FAIL")
                );
            }
        }
        verdict_sentence(&self.check, self)
    }
}

impl VerdictNames for View {
    fn lock(&self, id: LockId) -> String {
        let Some(l) = self.report.locks.iter().find(|l| l.id == id) else {
            return format!("lock#{id}");
        };
        // Several locks of one name (xv6's bucket locks all named "bcache"): the variable
        // says which.
        let shared = self
            .report
            .locks
            .iter()
            .filter(|o| o.name == l.name)
            .nth(1)
            .is_some();
        match self.detail.lock(id).and_then(|d| d.path.as_deref()) {
            Some(path) if shared && path != l.name => format!("{} ({path})", l.name),
            _ => l.name.clone(),
        }
    }
    fn chain_site(&self, pc: u64) -> String {
        self.place(pc).file_line()
    }
    fn site(&self, pc: u64) -> String {
        self.place(pc).short()
    }
    fn pc(&self, pc: u64) -> String {
        self.place(pc).short()
    }
    fn fault(&self) -> Option<String> {
        self.panic.as_ref()?.fault.as_ref().map(Place::short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_lose_the_crate_prefix() {
        assert_eq!(short_function("lockscope_kernel::bio::bget"), "bio::bget");
        assert_eq!(
            short_function("core::panicking::panic"),
            "core::panicking::panic"
        );
    }
}
