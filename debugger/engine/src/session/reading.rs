//! Reading the target through its source: what the probe and gdb threads share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::clock::Clock;
use super::messages::{lock, Outbox, StopFlag};
use crate::feed::Feed;
use crate::memory::GuestMemory;
use crate::model::{HartId, HartRegs};
use crate::sources::{Source, SourceError};

/// The source, and whether it has been found ready.
struct Opened {
    source: Box<dyn Source>,
    ready: bool,
}

/// What the reading threads share: the source, the clock and the way to the engine.
#[derive(Clone)]
pub(super) struct Reading {
    pub(super) out: Outbox,
    pub(super) stop: StopFlag,
    pub(super) clock: Clock,
    /// Read a snapshot at once (a lab test's window opened or closed on the console).
    pub(super) snap_now: Arc<AtomicBool>,
    source: Arc<Mutex<Opened>>,
    /// The session saw the boot: every event stream is read from its first event.
    from_boot: bool,
}

impl Reading {
    pub(super) fn new(
        source: Box<dyn Source>,
        out: Outbox,
        stop: StopFlag,
        clock: Clock,
        from_boot: bool,
    ) -> Self {
        Reading {
            out,
            stop,
            clock,
            snap_now: Arc::default(),
            source: Arc::new(Mutex::new(Opened {
                source,
                ready: false,
            })),
            from_boot,
        }
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Opens the source once the kernel can be read. `Ok(false)` while it boots.
    fn ensure_ready(
        &self,
        src: &mut Opened,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, SourceError> {
        if src.ready {
            return Ok(true);
        }
        if !src.source.ready(mem, self.from_boot)? {
            return Ok(false);
        }
        src.ready = true;
        if self.from_boot && src.source.has_events() {
            // Every hart's stream starts at its first event: the analysis hears it before the
            // first events arrive.
            let snap = src.source.snapshot(mem, self.clock.now_ns())?;
            let harts = snap.harts.iter().map(|h| h.hart).collect();
            self.out.feed(Feed::TraceStart { harts });
        }
        Ok(true)
    }

    /// Drains the events and reads a snapshot (in that order, as the analysis wants), sending
    /// both. `regs` are set on the snapshot's harts (a stopped guest).
    pub(super) fn read_all(
        &self,
        mem: &mut dyn GuestMemory,
        budget: usize,
        regs: &[(HartId, HartRegs)],
    ) -> Result<(), SourceError> {
        let mut src = lock(&self.source);
        if !self.ensure_ready(&mut src, mem)? {
            return Ok(());
        }
        let mut events = Vec::new();
        let drained = src.source.drain(mem, budget, &mut events)?;
        // The estimate must not lag the events it describes.
        let now = events
            .iter()
            .map(|e| e.time_ns)
            .max()
            .unwrap_or(0)
            .max(self.clock.now_ns());
        let mut snap = src.source.snapshot(mem, now)?;
        drop(src);
        for (hart, r) in regs {
            if let Some(h) = snap.harts.iter_mut().find(|h| h.hart == *hart) {
                h.regs = Some(*r);
            }
        }
        self.send_events(events, drained.lost);
        self.out.feed(Feed::Snapshot(Box::new(snap)));
        Ok(())
    }

    /// Drains the events alone, sending them; returns how many.
    pub(super) fn drain(
        &self,
        mem: &mut dyn GuestMemory,
        budget: usize,
    ) -> Result<u64, SourceError> {
        let mut src = lock(&self.source);
        if !self.ensure_ready(&mut src, mem)? {
            return Ok(0);
        }
        let mut events = Vec::new();
        let drained = src.source.drain(mem, budget, &mut events)?;
        drop(src);
        let n = events.len() as u64;
        self.send_events(events, drained.lost);
        Ok(n)
    }

    /// True once the kernel has recorded a panic (a cheap look, made at every drain).
    pub(super) fn panicked(&self, mem: &mut dyn GuestMemory) -> bool {
        let mut src = lock(&self.source);
        src.ready && src.source.panicked(mem)
    }

    fn send_events(&self, events: Vec<crate::model::LockEvent>, lost: Vec<(HartId, u64)>) {
        if !events.is_empty() || !lost.is_empty() {
            self.out.feed(Feed::Events { events, lost });
        }
    }
}
