//! The gdb thread: owns the stub connection. It stops and resumes on request, captures every
//! hart's registers and stack at a stop, and, without shared RAM, polls: interrupt, read at most
//! `budget` bytes of events, continue.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::messages::{GdbRequest, Msg};
use super::reading::Reading;
use super::stop_ram::StopRam;
use crate::diagnose::{stack_frames, unwind_hart};
use crate::feed::{Feed, HartStop, StopInfo, StopReason};
use crate::gdb::{GdbClient, GdbError, Stop, StopCause};
use crate::memory::SharedRam;
use crate::model::{HartId, HartRegs};
use crate::sources::{SourceError, StopView};
use crate::symbols::{Symbols, UnwindLimits};

/// How often the thread looks for requests and stops when nothing else wakes it.
const IDLE: Duration = Duration::from_millis(20);

/// Polling through the stub, when there is no shared RAM.
#[derive(Clone, Copy, Debug)]
pub(super) struct Poll {
    pub(super) interval: Duration,
    /// Bytes of events read per poll at most.
    pub(super) budget: usize,
}

/// The gdb thread's state: the connection and what a capture needs.
pub(super) struct GdbSide {
    pub(super) reading: Reading,
    pub(super) client: GdbClient,
    /// Guest RAM for unwinding stacks, when shared; otherwise the stub is read.
    pub(super) shared: Option<SharedRam>,
    pub(super) symbols: Arc<Symbols>,
    pub(super) limits: UnwindLimits,
    /// The panic-halt breakpoint, when one was set.
    pub(super) halt: Option<u64>,
    pub(super) poll: Option<Poll>,
    /// Saves guest RAM into the recording at each stop, when recording.
    pub(super) stop_ram: Option<StopRam>,
    /// The guest is stopped because this thread interrupted it for a sample capture.
    pub(super) sampled: bool,
}

/// Runs until asked to quit or the connection fails; `initial` is a stop that came with the
/// first resume (an immediate panic).
pub(super) fn gdb_thread(mut g: GdbSide, requests: Receiver<GdbRequest>, initial: Option<Stop>) {
    if let Some(stop) = initial {
        g.stopped(&stop, None, None);
    }
    match g.serve(&requests) {
        Ok(()) => {
            // A session we booted ends with QEMU killed; an attached one leaves QEMU running.
            let _ = g.client.detach();
        }
        Err(e) => {
            g.reading.out.send(Msg::GdbLost(e.to_string()));
        }
    }
}

impl GdbSide {
    /// Requests first (they come from the user or the engine), then polls, then stops.
    fn serve(&mut self, requests: &Receiver<GdbRequest>) -> Result<(), GdbError> {
        let mut next_poll = Instant::now();
        loop {
            match requests.try_recv() {
                Ok(GdbRequest::Quit) | Err(TryRecvError::Disconnected) => return Ok(()),
                Ok(r) => {
                    self.request(r)?;
                    continue;
                }
                Err(TryRecvError::Empty) => {}
            }
            if self.reading.stopping() {
                return Ok(());
            }
            if !self.client.is_running() {
                std::thread::sleep(IDLE);
                continue;
            }
            if let Some(p) = self.poll.filter(|_| Instant::now() >= next_poll) {
                next_poll = Instant::now() + p.interval;
                if let Some(stop) = self.poll_once(p.budget)? {
                    self.stopped(&stop, None, None);
                }
            }
            let wait = match self.poll {
                Some(_) => next_poll
                    .saturating_duration_since(Instant::now())
                    .min(IDLE),
                None => IDLE,
            };
            if let Some(stop) = self.client.wait_stop(wait)? {
                self.stopped(&stop, None, None);
            }
        }
    }

    /// Handles one request; `Err` when the connection is gone.
    fn request(&mut self, r: GdbRequest) -> Result<(), GdbError> {
        match r {
            GdbRequest::Interrupt | GdbRequest::Capture(..) if self.client.is_running() => {
                let stop = self.client.interrupt()?;
                let (reason, focus) = match r {
                    GdbRequest::Capture(reason, focus) => (Some(reason), focus),
                    _ => (None, None),
                };
                self.sampled = reason == Some(StopReason::Sample);
                self.stopped(&stop, reason, focus);
            }
            GdbRequest::ResumeSampled if self.sampled && !self.client.is_running() => {
                self.sampled = false;
                return self.request(GdbRequest::Resume);
            }
            GdbRequest::Resume if !self.client.is_running() => match self.client.resume()? {
                None => {
                    self.reading.clock.running();
                    self.reading.out.feed(Feed::Resumed);
                }
                Some(stop) => self.stopped(&stop, None, None),
            },
            _ => {}
        }
        Ok(())
    }

    /// One look at a running guest through the stub: interrupt, drain, snapshot, continue.
    /// A source that cannot read the target is reported; the session goes on.
    fn poll_once(&mut self, budget: usize) -> Result<Option<Stop>, GdbError> {
        let mut failed: Option<SourceError> = None;
        let reading = &self.reading;
        let paused = self.client.pause_with(|c| {
            reading.clock.stopped();
            if let Err(e) = reading.read_all(c, budget, None) {
                failed = Some(e);
            }
            Ok(())
        })?;
        if paused.stop.is_none() {
            self.reading.clock.running();
        }
        self.reading.out.feed(Feed::Pause {
            nanos: paused.pause.as_nanos() as u64,
        });
        if let Some(e) = failed {
            self.reading.out.send(Msg::SourceFailed(e.to_string()));
        }
        Ok(paused.stop)
    }

    /// The guest stopped: note it, and capture every hart. `reason` overrides what the stop
    /// reply says (a capture the monitor asked for), and `focus` the hart it names (the
    /// panicking or deadlocked hart, rather than the one the interrupt happened to stop).
    fn stopped(&mut self, stop: &Stop, reason: Option<StopReason>, focus: Option<HartId>) {
        self.reading.clock.stopped();
        let reason = reason.unwrap_or_else(|| classify(stop, self.halt));
        if let Some(s) = &self.stop_ram {
            s.coming();
        }
        let harts = self.capture(reason, stop, focus);
        let view = StopView {
            symbols: &self.symbols,
            reason,
            harts: &harts,
            limits: &self.limits,
        };
        let result = match self.shared.as_mut() {
            Some(mem) => self.reading.read_all(mem, usize::MAX / 2, Some(&view)),
            None => self.reading.read_all(
                &mut self.client,
                crate::gdb::MAX_READ_PER_PAUSE,
                Some(&view),
            ),
        };
        if let Err(e) = result {
            self.reading.out.send(Msg::SourceFailed(e.to_string()));
        }
        // Still stopped: the RAM matches the registers just captured.
        if let Some(s) = self.stop_ram.as_mut() {
            if let Some(note) = s.save(self.shared.as_mut(), &mut self.client) {
                self.reading.out.feed(Feed::Console(format!("\n{note}\n")));
            }
        }
    }

    /// Sends the registers and unwound stack of every hart of the stopped guest; returns them,
    /// for the consistent snapshot that follows. Stacks a paged kernel keeps outside RAM are
    /// read through the hart's page table.
    fn capture(&mut self, reason: StopReason, stop: &Stop, focus: Option<HartId>) -> Vec<HartStop> {
        let threads = self.client.known_threads().to_vec();
        let mut harts = Vec::with_capacity(threads.len());
        for t in threads {
            let Some(hart) = t.cpu_index() else { continue };
            let Ok(r) = self.client.read_hart_registers(t) else {
                continue;
            };
            let regs = HartRegs::from(&r);
            // Every GPR and the saved CSRs, for the post-mortem gdb server and core files.
            let full = crate::gdbserver::full_registers(&mut self.client, t, &r);
            // A hart stopped in a machine-mode handler (an older xv6's timervec, which leaves
            // sp, s0 and ra alone) is really where `mepc` says: its stack is unwound from there.
            let mut from = regs;
            if regs.privilege == Some(3) {
                if let Some(mepc) = full.csr(MEPC).filter(|&p| self.symbols.is_text(p)) {
                    from.pc = mepc;
                }
            }
            let unwind = match self.shared.as_mut() {
                Some(mem) => unwind_hart(&self.symbols, &from, r.satp, mem, &self.limits),
                // The stub reads virtual addresses itself.
                None => self
                    .symbols
                    .unwind(&from, &mut self.client, &self.limits.clone().paged()),
            };
            let frames = stack_frames(&unwind.frames);
            let full = Some(full);
            harts.push(HartStop {
                hart,
                regs,
                frames,
                full,
            });
        }
        self.reading.out.feed(Feed::Stop(StopInfo {
            reason,
            hart: focus.or_else(|| stop.thread.and_then(|t| t.cpu_index())),
            harts: harts.clone(),
        }));
        harts
    }
}

/// The machine exception program counter's CSR number.
const MEPC: u16 = 0x341;

/// Why the guest stopped, from the stop reply: the panic-halt breakpoint, an interrupt, or else.
fn classify(stop: &Stop, halt: Option<u64>) -> StopReason {
    let at_halt = halt.is_some_and(|halt| {
        matches!(stop.cause, StopCause::Breakpoint { addr } if addr == halt)
            || stop.at_breakpoints.iter().any(|(_, a)| *a == halt)
    });
    match (at_halt, stop.cause) {
        (true, _) => StopReason::Panic,
        (false, StopCause::Interrupted) => StopReason::Interrupted,
        _ => StopReason::Other,
    }
}
