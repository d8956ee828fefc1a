//! When to stop the guest and capture every hart: decided by the monitor at each snapshot and
//! taken by a live session, kept here so that it can be tested with feeds alone.

use crate::analysis::Analyzer;
use crate::feed::StopReason;
use crate::model::HartId;

use super::view::TargetState;

/// What has been asked for already: each capture is asked for once.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Captures {
    panic: bool,
    fault: bool,
}

impl Captures {
    /// The capture wanted now, if any: a panic the kernel recorded, else (with `faults`) a
    /// confirmed deadlock or a stall. Only a running target is stopped; a panic first seen in a
    /// stopped target is never asked for later.
    pub(super) fn wanted(
        &mut self,
        analyzer: &Analyzer,
        state: &TargetState,
        faults: bool,
    ) -> Option<StopReason> {
        let running = *state == TargetState::Running;
        if !self.panic && analyzer.snapshot().is_some_and(|s| s.panic.is_some()) {
            self.panic = true;
            if running {
                return Some(StopReason::Panic);
            }
        }
        if faults && !self.fault && running {
            let fault = analyzer.deadlocks().iter().any(|d| d.confirmed)
                || analyzer.stall().is_some_and(|s| !s.harts.is_empty());
            if fault {
                self.fault = true;
                return Some(StopReason::Interrupted);
            }
        }
        None
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
