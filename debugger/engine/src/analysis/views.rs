//! Plain, serializable views of the analysis for the TUI, the CLI and `lockscope check --json`.
//! PCs are raw: a report layer symbolizes them (return addresses: symbolize `pc - 1`).

use serde::{Deserialize, Serialize};

use super::events::{IngestStats, Site};
use super::hang_parts::HangReport;
use super::hist::HistView;
use super::lockdep::NestOrder;
use super::mode_state::SleepHolding;
use super::order::EdgeSite;
use super::scause::Scause;
use super::series::Rates;
use super::watch::{DeadlockCycle, StallReport};
use crate::model::{HartId, HartRegs, HartRun, KmemList, LockId, StackFrame};

/// Wait or hold time of a lock or class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeStats {
    /// What `total_ns` and `avg_ns` are over: contended acquisitions for wait time, releases for
    /// hold time.
    pub count: u64,
    pub total_ns: u64,
    pub avg_ns: Option<u64>,
    pub max_ns: Option<u64>,
    /// From events only (the kernel keeps no minimum): `None` when no event measured one.
    pub min_ns: Option<u64>,
    /// `count`, `total_ns`, `avg_ns` and `max_ns` come from the kernel's exact counters; when
    /// false they come from events and may miss lost ones.
    pub exact: bool,
    /// From events; `hist.samples` says how many.
    pub hist: HistView,
}

/// One row of the lock table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockRow {
    pub id: LockId,
    pub name: String,
    pub class: String,
    pub acquires: u64,
    pub contended: u64,
    /// Failed test-and-set attempts (the lab's `#test-and-set`); from events (Spin count) when
    /// there are no counters.
    pub spins: u64,
    /// `contended / acquires`, in percent.
    pub contention_pct: Option<f64>,
    /// The counts above come from a snapshot's exact counters.
    pub counters_exact: bool,
    pub wait: TimeStats,
    pub hold: TimeStats,
    /// Over the sliding window; `None` before two snapshots have shown the lock.
    pub rates: Option<Rates>,
    /// Contended acquisitions per history interval, oldest first (a sparkline).
    pub history_contended: Vec<u64>,
    /// Acquisitions per history interval, oldest first.
    pub history_acquires: Vec<u64>,
    pub holder: Option<HartId>,
    /// Harts spinning on it in the last snapshot.
    pub waiters: Vec<HartId>,
    /// The top contention points by count (lock_stat's "contention points").
    pub top_sites: Vec<Site>,
    /// Contention at sites beyond the bounded site table, lumped together.
    pub sites_other: Site,
    /// Events this lock's histograms, minimum and sites are based on.
    pub events: u64,
}

/// Locks of one class, together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassRow {
    pub class: String,
    pub locks: Vec<LockId>,
    pub acquires: u64,
    pub contended: u64,
    pub spins: u64,
    pub contention_pct: Option<f64>,
    pub wait: TimeStats,
    pub hold: TimeStats,
    /// Sums of the instances' rates; `None` when no instance has one.
    pub rates: Option<Rates>,
    pub history_contended: Vec<u64>,
    pub top_sites: Vec<Site>,
}

/// A lock a hart holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRow {
    pub lock: LockId,
    pub name: String,
    /// Where it was acquired (return address).
    pub pc: u64,
    pub since_ns: Option<u64>,
    pub held_for_ns: Option<u64>,
}

/// The lock a hart spins on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitRow {
    pub lock: LockId,
    pub name: String,
    /// Where it spins (return address).
    pub pc: u64,
    pub since_ns: u64,
    pub for_ns: u64,
    pub holder: Option<HartId>,
}

/// One hart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartRow {
    pub hart: HartId,
    pub run: HartRun,
    /// Outermost first.
    pub held: Vec<HeldRow>,
    /// The hart may hold more than listed.
    pub held_truncated: bool,
    pub waiting: Option<WaitRow>,
    pub heartbeat: Option<u64>,
    /// `None` until the hart has been watched long enough to tell.
    pub heartbeat_advancing: Option<bool>,
    /// How long the heartbeat has kept its value.
    pub heartbeat_still_ns: Option<u64>,
    pub ops: Option<u64>,
    /// From registers, when the hart was stopped and read.
    pub pc: Option<u64>,
    /// Events ingested from this hart and events reported lost.
    pub events: u64,
    pub lost: u64,
    /// The held stack rebuilt from its events is complete, so its lock-order edges count.
    pub order_in_sync: bool,
}

/// One hash bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketRow {
    pub index: u32,
    pub lock: Option<LockId>,
    pub lock_name: Option<String>,
    pub nbuf: u32,
    /// Buffers of this bucket with `refcnt > 0`.
    pub in_use: u32,
    pub hits: u64,
    pub misses: u64,
    pub steals: u64,
    /// `hits / (hits + misses)`, 0..=1.
    pub hit_rate: Option<f64>,
}

/// The buffer cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BcacheView {
    pub mode: String,
    pub evict_lock: Option<LockId>,
    pub buckets: Vec<BucketRow>,
    pub nbuf: u64,
    pub in_use: u64,
    pub hits: u64,
    pub misses: u64,
    pub steals: u64,
    pub hit_rate: Option<f64>,
}

/// The page allocator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmemView {
    pub mode: String,
    pub lists: Vec<KmemList>,
    pub free_pages: u64,
    pub steals: u64,
    pub pages_stolen: u64,
}

/// One edge of the lock-order graph: `to` acquired while `from` was held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEdgeView {
    pub from: LockId,
    pub from_name: String,
    pub to: LockId,
    pub to_name: String,
    pub count: u64,
    /// The first occurrence: both acquisition sites, hart and time.
    pub first: EdgeSite,
    /// Locks held around every occurrence.
    pub gates: Vec<LockId>,
}

/// What makes an [`Inversion`] a potential deadlock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InversionKind {
    /// A cycle in the lock-order graph: each lock taken while holding the one before.
    #[default]
    Cycle,
    /// Instances of one class nested in no fixed order (lockdep's rule): `edges` are two
    /// nestings that disagree, not a chain.
    InstanceOrder,
    /// A hart took a read of a reader-writer lock it already held for reading: a deadlock under
    /// writer priority when a writer starts waiting between the two reads. `edges` has one
    /// edge from the lock to itself (the first read's site, then the second's).
    RecursiveRead,
}

/// A potential deadlock from the order locks were taken in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inversion {
    /// The locks in cycle order, starting at the lowest id (for the other kinds: each edge's
    /// first lock).
    pub locks: Vec<LockId>,
    pub names: Vec<String>,
    /// `edges[i]` goes from `locks[i]` to `locks[i + 1]` (wrapping), for a cycle.
    pub edges: Vec<OrderEdgeView>,
    /// Every occurrence of every edge happened under a common lock (`common_gates`), so the
    /// orders cannot interleave.
    pub guarded: bool,
    pub common_gates: Vec<LockId>,
    #[serde(default)]
    pub kind: InversionKind,
    /// The class whose instances disagree (`instance-order`), or of the lock read twice.
    #[serde(default)]
    pub class: Option<String>,
    /// `instance-order`: how many distinct nestings went each way, the commoner way first.
    #[serde(default)]
    pub orders_seen: Vec<(NestOrder, u64)>,
    /// `recursive-read`: a hart that was waiting to write the lock then (as far as the events
    /// ingested by then tell).
    #[serde(default)]
    pub writer_waiting: Option<HartId>,
}

/// The lock-order analysis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOrderReport {
    /// Inversions no common lock guards: potential deadlocks.
    pub inversions: Vec<Inversion>,
    /// Inversions a common lock serialises.
    pub guarded: Vec<Inversion>,
    /// Edges in the graph.
    pub edges: usize,
    /// The cycle search stopped at its budget; there may be more cycles longer than 2.
    pub search_truncated: bool,
}

/// The trap behind a panic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrapView {
    pub scause: Scause,
    pub sepc: u64,
    pub stval: u64,
}

/// Registers and stack of one hart at the panic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartRegsRow {
    pub hart: HartId,
    pub run: HartRun,
    /// From the snapshot, else from the last stop.
    pub regs: Option<HartRegs>,
    /// The stack unwound at the last stop, innermost first, when the target is stopped; empty
    /// otherwise.
    pub frames: Vec<StackFrame>,
}

/// A kernel panic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicView {
    pub hart: HartId,
    pub message: String,
    pub trap: Option<TrapView>,
    pub pc: u64,
    pub fp: u64,
    /// The kernel's own backtrace of the panicking hart, innermost first (return addresses).
    pub frames: Vec<u64>,
    pub time_ns: Option<u64>,
    /// Every hart's registers, for the other harts' backtraces.
    pub harts: Vec<HartRegsRow>,
}

/// Everything at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Target time of the last snapshot.
    pub time_ns: Option<u64>,
    pub locks: Vec<LockRow>,
    pub classes: Vec<ClassRow>,
    pub harts: Vec<HartRow>,
    pub bcache: Option<BcacheView>,
    pub kmem: Option<KmemView>,
    pub deadlocks: Vec<DeadlockCycle>,
    pub stall: Option<StallReport>,
    pub lock_order: LockOrderReport,
    pub panic: Option<PanicView>,
    /// What stops of the guest showed about a hang, for kernels read without events.
    #[serde(default)]
    pub hang: Option<HangReport>,
    pub ingest: IngestStats,
    /// Spinlocks held while their hart took a sleeplock.
    #[serde(default)]
    pub sleep_holding: Vec<SleepHolding>,
}
