//! When to stop the guest and capture every hart: decided by the monitor at each snapshot and
//! taken by a live session, kept here so that it can be tested with feeds alone.
//!
//! Three kinds of stop: a panic (once, the guest stays stopped), a confirmed deadlock or stall
//! (once, it stays stopped), and samples. A kernel without lock events (xv6) shows a hang only
//! to a stopped look at every hart; live snapshots raise a suspicion
//! ([`Analyzer::hang_suspicion`]), and the monitor takes a sample stop, lets the guest run again,
//! and takes a second one [`SAMPLE_APART_NS`] later: the same stuck state twice confirms the
//! hang, and the guest then stays stopped. A suspicion that the samples do not confirm backs off.

use crate::analysis::Analyzer;
use crate::feed::StopReason;
use crate::model::{HartId, HartState};

use super::view::TargetState;

/// Target time between the two sample stops that confirm a hang.
pub const SAMPLE_APART_NS: u64 = 300_000_000;
/// First wait before another suspicion may stop the guest, after samples found nothing.
const BACKOFF_NS: u64 = 5_000_000_000;
const MAX_BACKOFF_NS: u64 = 60_000_000_000;
/// Snapshots without a diagnosis accepted during a sample stop before the guest is let go.
const MAX_UNDIAGNOSED: u32 = 20;

/// What has been asked for already: each capture is asked for once.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Captures {
    panic: bool,
    fault: bool,
    /// A second sample is due at this target time.
    sample_at: Option<u64>,
    /// Sample stops taken in this round.
    samples: u32,
    /// No suspicion stops the guest before this target time.
    quiet_until: u64,
    backoff_ns: u64,
    /// A sample stop whose diagnosed snapshot has not come yet, and the snapshots seen since.
    awaiting: Option<u32>,
    /// The session should let the guest run again.
    resume: bool,
}

impl Captures {
    /// The capture wanted now, if any: a panic the kernel recorded, else (with `faults`) a
    /// confirmed deadlock or a stall, else a sample to look at a suspected hang (`samples`:
    /// the source has no events, so only stops can tell). Only a running target is stopped; a
    /// panic first seen in a stopped target is never asked for later.
    pub(super) fn wanted(
        &mut self,
        analyzer: &Analyzer,
        state: &TargetState,
        faults: bool,
        samples: bool,
    ) -> Option<StopReason> {
        let running = *state == TargetState::Running;
        let snap = analyzer.snapshot()?;
        let t = snap.time_ns;
        let panicked = snap.panic.is_some() || snap.outcome == Some(crate::model::Outcome::Panic);
        if !self.panic && panicked {
            self.panic = true;
            self.sample_at = None;
            if running {
                return Some(StopReason::Panic);
            }
            // Stopped already: a sample's stop reads the panic like a panic's stop would, and
            // the guest stays stopped.
            self.awaiting = None;
            return None;
        }
        if let (
            Some(seen),
            TargetState::Stopped {
                reason: StopReason::Sample,
            },
        ) = (self.awaiting, state)
        {
            self.after_sample(analyzer, seen, t);
            return None;
        }
        if !faults || !running || self.fault {
            return None;
        }
        let fault = analyzer.deadlocks().iter().any(|d| d.confirmed)
            || analyzer.stall().is_some_and(|s| !s.harts.is_empty());
        if fault {
            self.fault = true;
            return Some(StopReason::Interrupted);
        }
        if !samples || self.panic {
            return None;
        }
        if let Some(at) = self.sample_at {
            if t < at {
                return None;
            }
            self.sample_at = None;
            self.samples += 1;
            self.awaiting = Some(0);
            return Some(StopReason::Sample);
        }
        if analyzer.hang_suspicion().is_some() && t >= self.quiet_until {
            self.samples = 1;
            self.awaiting = Some(0);
            return Some(StopReason::Sample);
        }
        None
    }

    /// A snapshot during a sample stop: once the diagnosed one is in, keep the guest stopped if
    /// the hang is confirmed, else let it run and look again or back off.
    fn after_sample(&mut self, analyzer: &Analyzer, seen: u32, t: u64) {
        let Some(d) = analyzer.snapshot().and_then(|s| s.diagnosis.as_ref()) else {
            if seen + 1 >= MAX_UNDIAGNOSED {
                // The source cannot diagnose: let the guest go and do not ask again soon.
                self.awaiting = None;
                self.back_off(t);
                self.resume = true;
            } else {
                self.awaiting = Some(seen + 1);
            }
            return;
        };
        self.awaiting = None;
        let report = analyzer.hang();
        let confirmed =
            report.is_some_and(|r| r.confirmed) || analyzer.deadlocks().iter().any(|c| c.confirmed);
        if confirmed {
            self.fault = true;
            return;
        }
        // Anything that might be stuck is worth a second look.
        let stuck = d.booting
            || d.harts.iter().any(|h| {
                matches!(
                    h.state,
                    HartState::Acquiring { .. } | HartState::RwWaiting { .. } | HartState::Outside
                )
            })
            || report.is_some_and(|r| !r.chains.is_empty() || !r.rw.is_empty())
            || (d.harts.iter().all(|h| h.process.is_none()) && !d.sleepers.is_empty());
        if stuck && self.samples < 2 {
            self.sample_at = Some(t.saturating_add(SAMPLE_APART_NS));
        } else {
            self.back_off(t);
        }
        self.resume = true;
    }

    fn back_off(&mut self, t: u64) {
        self.samples = 0;
        self.sample_at = None;
        self.backoff_ns = if self.backoff_ns == 0 {
            BACKOFF_NS
        } else {
            (self.backoff_ns * 2).min(MAX_BACKOFF_NS)
        };
        self.quiet_until = t.saturating_add(self.backoff_ns);
    }

    /// Whether the session should let the guest run again (after a sample that confirmed
    /// nothing); taking it clears it.
    pub(super) fn take_resume(&mut self) -> bool {
        std::mem::take(&mut self.resume)
    }
}

/// The hart a capture is about: the panicking hart, else one in a confirmed deadlock cycle (the
/// first waiter), else the first stalled hart. A post-mortem gdb selects it first.
pub(super) fn focus(analyzer: &Analyzer) -> Option<HartId> {
    if let Some(p) = analyzer.snapshot().and_then(|s| s.panic.as_ref()) {
        return Some(p.hart);
    }
    if let Some(c) = analyzer.deadlocks().iter().find(|c| c.confirmed) {
        return c.edges.first().map(|e| e.waiter);
    }
    analyzer
        .stall()
        .and_then(|s| s.harts.first().map(|h| h.hart))
}
