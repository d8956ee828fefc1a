//! The [`Analyzer`]: what it keeps, how snapshots and events go in, and the answers that are
//! not rows (deadlocks, stalls, lock order, the panic, the whole report).

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::config::{AnalysisConfig, ConfigError};
use super::events::{EventState, IngestStats};
use super::hang::Hang;
use super::hang_parts::HangReport;
use super::scause::decode_scause;
use super::series::Series;
use super::views::{HartRegsRow, PanicView, Report, TrapView};
use super::watch::{DeadlockCycle, StallReport, Watch};
use crate::feed::{Feed, StopInfo};
use crate::model::{HartId, HartRun, LockEvent, LockId, Snapshot};
use crate::trace::{TraceError, TraceReader};

/// Target time going back further than this (or with counters going down) is a new boot;
/// less is jitter in the source's estimate of target time.
const NEW_BOOT_BACKSTEP_NS: u64 = 1_000_000_000;

/// Whether a snapshot can be trusted as one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Read while harts ran (shared RAM): fields may come from slightly different moments.
    Live,
    /// Read while the target was stopped (gdb all-stop): one consistent moment.
    Stopped,
}

/// The analysis state.
#[derive(Clone)]
pub struct Analyzer {
    pub(super) config: AnalysisConfig,
    pub(super) events: EventState,
    pub(super) series: Series,
    pub(super) watch: Watch,
    pub(super) hang: Hang,
    pub(super) last: Option<Snapshot>,
    /// Target time of the newest snapshot, never going back within one boot.
    pub(super) clock_ns: Option<u64>,
    /// Between a [`Feed::Stop`] and [`Feed::Resumed`]: snapshots are consistent.
    pub(super) target_stopped: bool,
    pub(super) last_stop: Option<StopInfo>,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self::build(AnalysisConfig::default())
    }
}

impl Analyzer {
    pub fn new(config: AnalysisConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(c: AnalysisConfig) -> Self {
        Self {
            events: EventState::new(
                c.max_harts,
                c.max_locks,
                c.max_sites_per_lock,
                c.max_order_edges,
            )
            .with_protocol_sites(c.protocol_sites.clone()),
            series: Series::new(
                c.history_interval_ns,
                c.rate_window_ns,
                c.history_len,
                c.max_locks,
            ),
            watch: Watch::new(c.max_harts, c.deadlock_confirm_ns, c.stall_ns),
            hang: Hang::new(c.max_harts, c.deadlock_confirm_ns, c.stall_ns),
            last: None,
            clock_ns: None,
            target_stopped: false,
            last_stop: None,
            config: c,
        }
    }

    pub fn config(&self) -> &AnalysisConfig {
        &self.config
    }

    /// Forgets everything (a new boot, a new target).
    pub fn reset(&mut self) {
        *self = Self::build(self.config.clone());
    }

    /// Feeds lock events. Per hart they must be in ring order; harts may be interleaved in any
    /// way. Allocates nothing per event once its hart and lock have been seen.
    pub fn ingest(&mut self, events: &[LockEvent]) {
        self.events.ingest(events);
    }

    /// `n` events of `hart` were lost just before the next events of that hart that will be
    /// ingested. Its partial pairs and rebuilt held stack are dropped, and its lock-order edges
    /// pause until a snapshot shows it holding nothing and the next snapshot arrives.
    pub fn note_lost(&mut self, hart: HartId, n: u64) {
        self.events.note_lost(hart, n);
    }

    /// The next event of `hart` is the first it ever recorded (its ring is read from index 0):
    /// it held nothing before, so its lock order counts from the start. Without this a hart's
    /// lock order counts once snapshots have proven its rebuilt stack complete.
    pub fn note_trace_start(&mut self, hart: HartId) {
        self.events.note_trace_start(hart);
    }

    /// Feeds a snapshot. The feed must drain the rings before reading each snapshot (events
    /// drained before a snapshot was read are ingested before it is observed): rebuilding held
    /// stacks after a gap relies on that order, not on the snapshot's time.
    pub fn observe(&mut self, snap: &Snapshot, consistency: Consistency) {
        let stopped = consistency == Consistency::Stopped;
        let mut t = snap.time_ns;
        if let (Some(last), Some(clock)) = (&self.last, self.clock_ns) {
            if t < clock {
                let counters_down = snap
                    .locks
                    .iter()
                    .zip(&last.locks)
                    .any(|(now, before)| now.counters.acquires < before.counters.acquires);
                if counters_down || clock - t > NEW_BOOT_BACKSTEP_NS {
                    // A new boot. Counters and liveness start over; the event statistics stay,
                    // the replay state of every hart does not.
                    self.series.clear();
                    self.watch.clear();
                    self.hang.clear();
                    self.events.forget_harts();
                } else {
                    // The source's time estimate jittered back: keep the clock monotonic.
                    t = clock;
                }
            }
        }
        self.clock_ns = Some(t);
        self.series.observe(snap, t);
        self.watch.observe(snap, t, stopped);
        self.hang.observe(snap, t);
        // What stops diagnosed (kernels without events) joins what snapshots show.
        self.watch
            .deadlocks
            .extend(self.hang.deadlocks.iter().cloned());
        if self.watch.stall.is_none() {
            self.watch.stall = self.hang.stall.clone();
        }
        if !snap.processes.is_empty() {
            self.events
                .set_proc_locks(snap.processes.iter().filter_map(|p| p.lock));
        }
        let mut held = Vec::new();
        for h in &snap.harts {
            held.clear();
            held.extend(h.held.iter().map(|x| x.lock));
            self.events.observe_hart(h.hart, &held, h.held_truncated);
        }
        // A source that fills the panic record and the diagnosis only at a stop (xv6): keep
        // them across the snapshots read while the guest stays stopped, and the panic for good.
        let carried = self
            .last
            .as_mut()
            .map(|l| (l.panic.take(), l.diagnosis.take()));
        match &mut self.last {
            Some(l) => l.clone_from(snap),
            None => self.last = Some(snap.clone()),
        }
        if let (Some(l), Some((panic, diagnosis))) = (self.last.as_mut(), carried) {
            if l.panic.is_none() && l.outcome == Some(crate::model::Outcome::Panic) {
                l.panic = panic;
                if l.diagnosis.is_none() {
                    l.diagnosis = diagnosis.clone();
                }
            }
            if l.diagnosis.is_none() && self.target_stopped {
                l.diagnosis = diagnosis;
            }
        }
    }

    /// Applies one item of a source's feed. Snapshots between [`Feed::Stop`] and
    /// [`Feed::Resumed`] are taken as consistent; an event batch's losses are applied before its
    /// events (the reader reports the events lost before each ring's new ones; a slot it rejects
    /// mid-ring goes unreported, and snapshots heal what that breaks).
    pub fn apply(&mut self, feed: &Feed) {
        match feed {
            Feed::Snapshot(s) => {
                let c = if self.target_stopped {
                    Consistency::Stopped
                } else {
                    Consistency::Live
                };
                self.observe(s, c);
            }
            Feed::Events { events, lost } => {
                for &(hart, n) in lost {
                    self.note_lost(hart, n);
                }
                self.ingest(events);
            }
            Feed::Stop(info) => {
                self.target_stopped = true;
                match &mut self.last_stop {
                    Some(s) => s.clone_from(info),
                    None => self.last_stop = Some(info.clone()),
                }
            }
            Feed::TraceStart { harts } => {
                for &h in harts {
                    self.note_trace_start(h);
                }
            }
            Feed::Resumed => {
                self.target_stopped = false;
                self.last_stop = None;
                self.hang.resumed();
            }
            Feed::Console(_) | Feed::Pause { .. } | Feed::End(_) => {}
        }
    }

    /// Applies every item of a recorded trace; returns how many.
    pub fn replay<R: Read>(&mut self, trace: &mut TraceReader<R>) -> Result<u64, TraceError> {
        let mut n = 0;
        while let Some(feed) = trace.next_feed()? {
            self.apply(&feed);
            n += 1;
        }
        Ok(n)
    }

    /// The registers and unwound stacks of the last stop, while the target is stopped.
    pub fn last_stop(&self) -> Option<&StopInfo> {
        self.last_stop.as_ref()
    }

    /// The last snapshot observed.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.last.as_ref()
    }

    pub fn ingest_stats(&self) -> &IngestStats {
        &self.events.stats
    }

    pub(super) fn lock_name(&self, id: LockId) -> String {
        match &self.last {
            Some(s) => s.lock_name(id),
            None => format!("lock#{id}"),
        }
    }

    /// Deadlock cycles in the last snapshot, suspected and confirmed.
    pub fn deadlocks(&self) -> &[DeadlockCycle] {
        &self.watch.deadlocks
    }

    /// Stalled harts in the last snapshot.
    pub fn stall(&self) -> Option<&StallReport> {
        self.watch.stall.as_ref()
    }

    /// What stops of the guest showed about a hang (kernels read without events): the last
    /// stop's diagnosis, and whether two stops confirmed it.
    pub fn hang(&self) -> Option<&HangReport> {
        self.hang.report.as_ref()
    }

    /// Why live snapshots look hung, when they do: a stop should look (see
    /// [`crate::monitor::Monitor::capture_wanted`]).
    pub fn hang_suspicion(&self) -> Option<&str> {
        self.hang.suspicion()
    }

    /// The guest is stopped (between a stop and the next resume).
    pub fn target_stopped(&self) -> bool {
        self.target_stopped
    }

    /// The panic in the last snapshot, if any.
    pub fn panic(&self) -> Option<PanicView> {
        let snap = self.last.as_ref()?;
        let p = snap.panic.as_ref()?;
        Some(PanicView {
            hart: p.hart,
            message: p.message.clone(),
            trap: p.trap.map(|t| TrapView {
                scause: decode_scause(t.scause),
                sepc: t.sepc,
                stval: t.stval,
            }),
            pc: p.pc,
            fp: p.fp,
            frames: p.frames.clone(),
            time_ns: p.time_ns,
            harts: snap
                .harts
                .iter()
                .map(|h| {
                    let stop = self
                        .last_stop
                        .as_ref()
                        .and_then(|s| s.harts.iter().find(|x| x.hart == h.hart));
                    HartRegsRow {
                        hart: h.hart,
                        // A source that learns the panicking hart only at the stop (xv6) says
                        // so in that snapshot only.
                        run: if h.hart == p.hart {
                            HartRun::Panicked
                        } else {
                            h.run
                        },
                        regs: h.regs.or(stop.map(|x| x.regs)),
                        frames: stop.map_or_else(Vec::new, |x| x.frames.clone()),
                    }
                })
                .collect(),
        })
    }

    /// Everything, for `--json` and for tests.
    pub fn report(&self) -> Report {
        Report {
            time_ns: self.last.as_ref().map(|s| s.time_ns),
            locks: self.lock_rows(),
            classes: self.class_rows(),
            harts: self.hart_rows(),
            bcache: self.bcache(),
            kmem: self.kmem(),
            deadlocks: self.watch.deadlocks.clone(),
            stall: self.watch.stall.clone(),
            lock_order: self.lock_order(),
            panic: self.panic(),
            hang: self.hang.report.clone(),
            ingest: self.events.stats.clone(),
            sleep_holding: self.sleep_holding(),
        }
    }
}
