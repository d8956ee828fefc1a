//! `lockscope check`'s result: the verdict with everything symbolized, as printed for people and
//! as JSON for scripts (schema documented in docs/check.md).

use serde::{Deserialize, Serialize};

use crate::analysis::{stall_line, Check, Severity, Verdict};
use crate::feed::Ending;
use crate::model::{Finding, ProcRef};
use crate::monitor::{short_function, FrameLine, LabTest, PauseStats, Place, TargetState, View};

/// Version of the [`CheckReport`] JSON; bumped on any incompatible change.
pub const REPORT_SCHEMA: u32 = 1;

/// One lock, lab style.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockLine {
    pub name: String,
    pub class: String,
    pub acquires: u64,
    /// `#test-and-set`.
    pub spins: u64,
    pub contended: u64,
    pub contention_pct: f64,
    pub wait_avg_ns: Option<u64>,
    pub wait_max_ns: Option<u64>,
    pub hold_avg_ns: Option<u64>,
    pub hold_max_ns: Option<u64>,
    /// Where the lock is in the kernel's variables (`bcache.bucket[4].lock`), when the source
    /// reads locks in memory (xv6); `null` otherwise or for a lock known only from a registry.
    #[serde(default)]
    pub path: Option<String>,
    /// The hart holding it at the end, when the source knows.
    #[serde(default)]
    pub holder: Option<u32>,
}

/// One hart's `struct cpu`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuLine {
    pub hart: u32,
    /// The process it runs; `null` in its scheduler.
    pub process: Option<ProcRef>,
    pub noff: i64,
    pub intena: bool,
}

/// One bucket of the buffer cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketLine {
    pub index: u32,
    pub lock: Option<String>,
    pub bufs: u32,
    pub in_use: u32,
    /// `null` when the kernel keeps no counts (see `bucket_counts_unavailable`).
    pub hits: Option<u64>,
    pub misses: Option<u64>,
    pub steals: Option<u64>,
    pub hit_rate: Option<f64>,
}

/// A code address, symbolized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteLine {
    pub pc: u64,
    pub function: Option<String>,
    /// `kernel/src/bio.rs:88`.
    pub location: Option<String>,
}

impl From<&Place> for SiteLine {
    fn from(p: &Place) -> Self {
        SiteLine {
            pc: p.pc,
            function: p.function.clone(),
            location: p.location.clone(),
        }
    }
}

impl From<&FrameLine> for SiteLine {
    fn from(f: &FrameLine) -> Self {
        SiteLine {
            pc: f.pc,
            function: f.function.clone(),
            location: f.location.clone(),
        }
    }
}

/// One lock-order inversion, with both orders' sites.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InversionLine {
    /// `bcache.bucket2 -> bcache.bucket5`, one per edge of the cycle.
    pub orders: Vec<String>,
    /// Per edge: where the first lock was taken, then where the second.
    pub sites: Vec<(SiteLine, SiteLine)>,
    pub harts: Vec<u32>,
}

/// `lockscope check`'s full result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub schema: u32,
    pub verdict: Verdict,
    pub severity: Severity,
    /// One line, symbolized.
    pub summary: String,
    /// How the target ended, when it did: `{"Exited":{"status":0}}`, `{"Lost":{"reason":...}}`,
    /// `"Detached"` (check stopped watching), or null if still running.
    pub ending: Option<Ending>,
    pub bootargs: Option<String>,
    /// How the kernel was read (`lockscope ABI v1`); `null` in a replay.
    #[serde(default)]
    pub kernel_reader: Option<String>,
    pub harts: u32,
    pub events: u64,
    pub lost_events: u64,
    /// How long the guest was stopped per look when reading through the gdb stub (all zero
    /// with shared RAM, which never stops it).
    pub pauses: PauseStats,
    /// Host CPU time lockscope itself used (user + system), and the wall time it watched, when
    /// the caller measured them: what watching costs a host whose cores the guest also wants.
    #[serde(default)]
    pub host_cpu_ns: Option<u64>,
    #[serde(default)]
    pub watched_ns: Option<u64>,
    pub locks: Vec<LockLine>,
    pub buckets: Vec<BucketLine>,
    /// The buffer cache keeps no hit, miss or steal counts (xv6): those bucket fields are
    /// `null`, not zero.
    #[serde(default)]
    pub bucket_counts_unavailable: bool,
    /// The kernel's locks deliver no events, so there are no wait or hold times (xv6 read
    /// through DWARF alone; they come with lockscope's QEMU plugin).
    #[serde(default)]
    pub no_lock_events: bool,
    /// The panic's symbolized backtrace (panicking hart), innermost first.
    pub backtrace: Vec<SiteLine>,
    /// The faulting instruction or the first frame past the panic machinery.
    pub fault: Option<SiteLine>,
    /// Deadlock cycles in words.
    pub deadlocks: Vec<String>,
    /// Stalled harts in words.
    pub stalls: Vec<String>,
    pub inversions: Vec<InversionLine>,
    /// Broken invariants and lab pitfalls the source found (xv6): `{kind, path, message}`.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Each hart's own record (xv6's `struct cpu`): the process it runs, `noff`, `intena`.
    #[serde(default)]
    pub cpus: Vec<CpuLine>,
    /// The lab's tests as the console showed them, each with the lock counters over its
    /// window, `tot` as the lab's `statslock` computes it and `tot_all` over every allocator
    /// and buffer-cache lock.
    #[serde(default)]
    pub lab_tests: Vec<LabTest>,
    /// The analysis' own verdict record (raw pcs), for tools that want everything.
    pub check: Check,
}

impl CheckReport {
    pub fn from_view(v: &View) -> Self {
        let c = &v.check;
        // Without lock events there are no times: the counters' zeros are not measurements.
        let timed = |t: Option<u64>| t.filter(|_| v.lock_events);
        let mut locks: Vec<LockLine> = v
            .report
            .locks
            .iter()
            .map(|l| LockLine {
                name: l.name.clone(),
                class: l.class.clone(),
                acquires: l.acquires,
                spins: l.spins,
                contended: l.contended,
                contention_pct: l.contention_pct.unwrap_or(0.0),
                wait_avg_ns: timed(l.wait.avg_ns),
                wait_max_ns: timed(l.wait.max_ns),
                hold_avg_ns: timed(l.hold.avg_ns),
                hold_max_ns: timed(l.hold.max_ns),
                path: v.detail.lock(l.id).and_then(|d| d.path.clone()),
                holder: l.holder,
            })
            .collect();
        locks.sort_by(|a, b| b.spins.cmp(&a.spins).then(b.acquires.cmp(&a.acquires)));
        let counted = !v.detail.bcache_counts_unavailable;
        let count = |n: u64| counted.then_some(n);
        let buckets = v.report.bcache.as_ref().map_or_else(Vec::new, |b| {
            b.buckets
                .iter()
                .map(|k| BucketLine {
                    index: k.index,
                    lock: k.lock_name.clone(),
                    bufs: k.nbuf,
                    in_use: k.in_use,
                    hits: count(k.hits),
                    misses: count(k.misses),
                    steals: count(k.steals),
                    hit_rate: k.hit_rate.filter(|_| counted),
                })
                .collect()
        });
        let (backtrace, fault) = match &v.panic {
            Some(p) => (
                p.backtrace.iter().map(SiteLine::from).collect(),
                p.fault.as_ref().map(SiteLine::from),
            ),
            None => (Vec::new(), None),
        };
        let stalls = v.report.stall.as_ref().map_or_else(Vec::new, |s| {
            s.harts.iter().map(|h| stall_line(h, v)).collect()
        });
        let inversions = c
            .inversions
            .iter()
            .map(|inv| InversionLine {
                orders: inv
                    .edges
                    .iter()
                    .map(|e| format!("{} -> {}", e.from_name, e.to_name))
                    .collect(),
                sites: inv
                    .edges
                    .iter()
                    .map(|e| {
                        (
                            SiteLine::from(&v.place(e.first.from_pc)),
                            SiteLine::from(&v.place(e.first.to_pc)),
                        )
                    })
                    .collect(),
                harts: inv.edges.iter().map(|e| e.first.hart).collect(),
            })
            .collect::<Vec<_>>();
        CheckReport {
            schema: REPORT_SCHEMA,
            verdict: c.verdict,
            severity: c.severity,
            summary: v.verdict_sentence(),
            ending: match &v.state {
                TargetState::Ended { ending } => Some(ending.clone()),
                _ => None,
            },
            bootargs: v.config.as_ref().map(|c| c.bootargs.clone()),
            kernel_reader: v.kernel_reader.clone(),
            harts: v.config.as_ref().map_or(0, |c| c.nharts),
            events: v.events_total,
            lost_events: v.lost_total,
            pauses: v.pauses.clone(),
            host_cpu_ns: None,
            watched_ns: None,
            locks,
            buckets,
            bucket_counts_unavailable: !counted,
            no_lock_events: !v.lock_events,
            backtrace,
            fault,
            deadlocks: v.deadlock_chains.clone(),
            stalls,
            inversions,
            findings: v.detail.findings.clone(),
            cpus: v
                .detail
                .cpus
                .iter()
                .map(|(hart, c)| CpuLine {
                    hart: *hart,
                    process: c.proc.clone(),
                    noff: c.noff,
                    intena: c.intena,
                })
                .collect(),
            lab_tests: v.lab_tests.clone(),
            check: c.clone(),
        }
    }

    /// The process exit status `lockscope check` uses: 0 ok, 3 a fault, 4 a warning only.
    pub fn exit_code(&self) -> i32 {
        match self.severity {
            Severity::Ok => 0,
            Severity::Fault => 3,
            Severity::Warning => 4,
        }
    }
}

/// A place in `function file:line` form.
pub fn site_text(s: &SiteLine) -> String {
    match (&s.function, &s.location) {
        (Some(f), Some(l)) => format!("{} {l}", short_function(f)),
        (Some(f), None) => short_function(f).to_string(),
        (None, Some(l)) => l.clone(),
        (None, None) => format!("{:#x}", s.pc),
    }
}
