//! The engine's top: turns a [`Feed`] stream into [`View`]s, the symbolized, UI-ready picture of
//! a target that the TUI renders and `lockscope check` prints.
//!
//! A [`Monitor`] owns the analysis, the symbols, the console log and the session state. It is fed
//! on one thread and hands out immutable views; nothing here touches the target.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::BufWriter;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::analysis::{AnalysisConfig, Analyzer, Check, ConfigError, Report};
use crate::feed::{Ending, Feed, StopReason};
use crate::model::{
    BufSnapshot, FrameKind, HartId, HartRun, LockEvent, Outcome, StackFrame, TargetConfig,
};
use crate::symbols::{Disassembly, Frame, SourceContext, Symbols};
use crate::trace::TraceWriter;

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
    fn unknown(pc: u64) -> Self {
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
    /// The buffer cache's buffers, for a bucket's drill-down (empty without a buffer cache).
    #[serde(default)]
    pub bufs: Vec<BufSnapshot>,
}

impl View {
    /// The symbolized place of a recorded address (never fails: unknown addresses print raw).
    pub fn place(&self, pc: u64) -> Place {
        self.places
            .get(&pc)
            .cloned()
            .unwrap_or_else(|| Place::unknown(pc))
    }
}

/// Harts whose recent events are kept (the kernel has at most 8; the bound is for bad input).
const MAX_RECENT_HARTS: usize = 64;

/// Sizes of the monitor's bounded buffers.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub analysis: AnalysisConfig,
    pub console_lines: usize,
    pub recent_events: usize,
    pub pause_samples: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            analysis: AnalysisConfig::default(),
            console_lines: 2000,
            recent_events: 2000,
            pause_samples: 101,
        }
    }
}

/// Feeds in, views out.
pub struct Monitor {
    config: MonitorConfig,
    analyzer: Analyzer,
    symbols: Option<Arc<Symbols>>,
    source: SourceKind,
    state: TargetState,
    generation: u64,
    console: VecDeque<String>,
    /// The last console line is still open (no newline yet).
    console_open: bool,
    /// Per hart, its newest events.
    recent: Vec<VecDeque<LockEvent>>,
    events_total: u64,
    lost_total: u64,
    pauses: PauseStats,
    pause_window: VecDeque<u64>,
    recorder: Option<TraceWriter<BufWriter<File>>>,
}

impl Monitor {
    pub fn new(
        config: MonitorConfig,
        symbols: Option<Arc<Symbols>>,
        source: SourceKind,
    ) -> Result<Self, ConfigError> {
        let analyzer = Analyzer::new(config.analysis.clone())?;
        Ok(Self {
            config,
            analyzer,
            symbols,
            source,
            state: TargetState::Starting,
            generation: 0,
            console: VecDeque::new(),
            console_open: false,
            recent: Vec::new(),
            events_total: 0,
            lost_total: 0,
            pauses: PauseStats::default(),
            pause_window: VecDeque::new(),
            recorder: None,
        })
    }

    /// Writes every feed applied from now on to `w`. A write error stops the recording and is
    /// reported on the console view; the session goes on.
    pub fn set_recorder(&mut self, w: TraceWriter<BufWriter<File>>) {
        self.recorder = Some(w);
    }

    /// Flushes and closes the recording.
    pub fn finish_recording(&mut self) {
        if let Some(mut w) = self.recorder.take() {
            if let Err(e) = w.flush() {
                self.push_console(&format!("\n[lockscope] the recording is incomplete: {e}\n"));
            }
        }
    }

    /// A copy of this monitor's state without its recorder: a keyframe of a recording's
    /// timeline, fed on from where this one is.
    pub fn fork(&self) -> Monitor {
        Monitor {
            config: self.config.clone(),
            analyzer: self.analyzer.clone(),
            symbols: self.symbols.clone(),
            source: self.source,
            state: self.state.clone(),
            generation: self.generation,
            console: self.console.clone(),
            console_open: self.console_open,
            recent: self.recent.clone(),
            events_total: self.events_total,
            lost_total: self.lost_total,
            pauses: self.pauses.clone(),
            pause_window: self.pause_window.clone(),
            recorder: None,
        }
    }

    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    pub fn symbols(&self) -> Option<&Arc<Symbols>> {
        self.symbols.as_ref()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn state(&self) -> &TargetState {
        &self.state
    }

    /// The whole console so far (bounded), lines joined.
    pub fn console_text(&self) -> String {
        let mut s = String::new();
        for (i, l) in self.console.iter().enumerate() {
            s.push_str(l);
            if i + 1 < self.console.len() || !self.console_open {
                s.push('\n');
            }
        }
        s
    }

    pub fn apply(&mut self, feed: &Feed) {
        if let Some(w) = self.recorder.as_mut() {
            if let Err(e) = w.write(feed) {
                self.recorder = None;
                self.push_console(&format!("\n[lockscope] recording stopped: {e}\n"));
            }
        }
        self.analyzer.apply(feed);
        match feed {
            Feed::Snapshot(_) => {
                if self.state == TargetState::Starting {
                    self.state = TargetState::Running;
                }
            }
            Feed::Events { events, lost } => {
                self.events_total += events.len() as u64;
                let lost_now = lost.iter().fold(0u64, |a, (_, n)| a.saturating_add(*n));
                self.lost_total = self.lost_total.saturating_add(lost_now);
                self.keep_recent(events);
            }
            Feed::Console(text) => self.push_console(text),
            Feed::Stop(info) => {
                self.state = TargetState::Stopped {
                    reason: info.reason,
                }
            }
            Feed::Resumed => self.state = TargetState::Running,
            Feed::Pause { nanos } => self.note_pause(*nanos),
            Feed::End(ending) => {
                self.state = TargetState::Ended {
                    ending: ending.clone(),
                }
            }
            Feed::TraceStart { .. } => {}
        }
        self.generation += 1;
    }

    /// Keeps the newest events of each hart. A batch holds each hart's events in turn, so
    /// only its tail per hart is looked at; harts are merged by time when a view is built.
    fn keep_recent(&mut self, events: &[LockEvent]) {
        let keep = self.config.recent_events;
        let mut taken: Vec<usize> = Vec::new();
        let mut picked: Vec<usize> = Vec::new();
        for (i, e) in events.iter().enumerate().rev() {
            let h = e.hart as usize;
            if h >= MAX_RECENT_HARTS {
                continue;
            }
            if taken.len() <= h {
                taken.resize(h + 1, 0);
            }
            if taken[h] < keep {
                taken[h] += 1;
                picked.push(i);
            }
        }
        for &i in picked.iter().rev() {
            let e = events[i];
            let h = e.hart as usize;
            if self.recent.len() <= h {
                self.recent.resize_with(h + 1, VecDeque::new);
            }
            let q = &mut self.recent[h];
            if q.len() == keep {
                q.pop_front();
            }
            q.push_back(e);
        }
    }

    /// The newest `recent_events` events of all harts, oldest first.
    fn recent_events(&self) -> Vec<LockEvent> {
        let mut all: Vec<LockEvent> = self.recent.iter().flatten().copied().collect();
        all.sort_by_key(|e| e.time_ns);
        let cut = all.len().saturating_sub(self.config.recent_events);
        all.drain(..cut);
        all
    }

    fn push_console(&mut self, text: &str) {
        for (i, piece) in text.split('\n').enumerate() {
            let piece = piece.trim_end_matches('\r');
            if i == 0 && self.console_open {
                if let Some(last) = self.console.back_mut() {
                    last.push_str(piece);
                }
            } else {
                self.console.push_back(piece.to_string());
            }
        }
        // The text after the last newline is still open.
        self.console_open = !text.ends_with('\n');
        if !self.console_open {
            // `split` left an empty piece after the final newline.
            if self.console.back().is_some_and(|l| l.is_empty()) {
                self.console.pop_back();
            }
        }
        while self.console.len() > self.config.console_lines {
            self.console.pop_front();
        }
    }

    fn note_pause(&mut self, nanos: u64) {
        let p = &mut self.pauses;
        p.count += 1;
        p.last_ns = nanos;
        p.max_ns = p.max_ns.max(nanos);
        p.total_ns = p.total_ns.saturating_add(nanos);
        if self.pause_window.len() == self.config.pause_samples {
            self.pause_window.pop_front();
        }
        self.pause_window.push_back(nanos);
        let mut v: Vec<u64> = self.pause_window.iter().copied().collect();
        v.sort_unstable();
        p.median_ns = v[v.len() / 2];
    }

    /// The verdict alone (cheaper than a view).
    pub fn check(&self) -> Check {
        self.analyzer.check()
    }

    /// Builds the full view. Symbolization is memoized by [`Symbols`], so repeated views cost
    /// little beyond the analysis report.
    pub fn view(&self) -> View {
        let report = self.analyzer.report();
        let check = self.analyzer.check();
        let mut places = HashMap::new();
        let mut site = |pc: u64| {
            places.entry(pc).or_insert_with(|| self.return_place(pc));
        };
        for l in &report.locks {
            for s in &l.top_sites {
                site(s.pc);
            }
        }
        for c in &report.classes {
            for s in &c.top_sites {
                site(s.pc);
            }
        }
        for h in &report.harts {
            for x in &h.held {
                site(x.pc);
            }
            if let Some(w) = &h.waiting {
                site(w.pc);
            }
        }
        for d in &report.deadlocks {
            for e in &d.edges {
                site(e.waiter_pc);
                if let Some(pc) = e.holder_pc {
                    site(pc);
                }
            }
        }
        for inv in report
            .lock_order
            .inversions
            .iter()
            .chain(&report.lock_order.guarded)
        {
            for e in &inv.edges {
                site(e.first.from_pc);
                site(e.first.to_pc);
            }
        }
        let recent = self.recent_events();
        for e in &recent {
            site(e.pc);
        }
        if let Some(stall) = &report.stall {
            for h in &stall.harts {
                if let Some(pc) = h.pc {
                    places.entry(pc).or_insert_with(|| self.exact_place(pc));
                }
            }
        }
        let deadlock_chains = report
            .deadlocks
            .iter()
            .map(|d| {
                d.describe(|pc| {
                    places
                        .get(&pc)
                        .map_or_else(|| format!("{pc:#x}"), |p| p.file_line())
                })
            })
            .collect();
        let panic = self.panic_detail(&report);
        let snap = self.analyzer.snapshot();
        View {
            generation: self.generation,
            source: self.source,
            state: self.state.clone(),
            config: snap.map(|s| s.config.clone()),
            phase: snap.and_then(|s| s.phase.clone()),
            outcome: snap.and_then(|s| s.outcome),
            ticks: snap.and_then(|s| s.ticks),
            report,
            check,
            places,
            deadlock_chains,
            panic,
            recent_events: recent,
            events_total: self.events_total,
            lost_total: self.lost_total,
            pauses: self.pauses.clone(),
            console: self.console.iter().cloned().collect(),
            bufs: snap
                .and_then(|s| s.bcache.as_ref())
                .map(|b| b.bufs.clone())
                .unwrap_or_default(),
        }
    }

    /// A return address: the call site it returns to, outside the lock implementation.
    fn return_place(&self, ra: u64) -> Place {
        let Some(sym) = &self.symbols else {
            return Place::unknown(ra);
        };
        // The site is the caller's frame, past any frames of the lock module itself.
        match (sym.return_frames(ra), sym.lock_site(ra)) {
            (Ok(frames), Ok(site)) => {
                let at = frames.iter().position(|f| *f == *site).unwrap_or(0);
                place_from_frames(ra, &frames[at..])
            }
            _ => Place::unknown(ra),
        }
    }

    /// An exact pc (a hart's pc, a trapping instruction).
    fn exact_place(&self, pc: u64) -> Place {
        match self.symbols.as_ref().map(|s| s.frames(pc)) {
            Some(Ok(frames)) => place_from_frames(pc, &frames),
            _ => Place::unknown(pc),
        }
    }

    fn frame_lines(&self, frame: StackFrame) -> Vec<FrameLine> {
        let unknown = || {
            vec![FrameLine {
                pc: frame.pc,
                kind: frame.kind,
                function: None,
                location: None,
                inlined: false,
            }]
        };
        let Some(sym) = &self.symbols else {
            return unknown();
        };
        match sym.frames(frame.lookup_pc()) {
            Ok(frames) if !frames.is_empty() => frames
                .iter()
                .map(|f| FrameLine {
                    pc: frame.pc,
                    kind: frame.kind,
                    function: f.function.clone(),
                    location: f.location.as_ref().map(|l| l.to_string()),
                    inlined: f.inlined,
                })
                .collect(),
            _ => unknown(),
        }
    }

    fn backtrace(&self, frames: &[StackFrame]) -> Vec<FrameLine> {
        frames.iter().flat_map(|f| self.frame_lines(*f)).collect()
    }

    fn panic_detail(&self, report: &Report) -> Option<PanicDetail> {
        let p = report.panic.as_ref()?;
        // The kernel's own walk, made inside the panic handler, starts at the code that
        // panicked; a stop-time unwind starts wherever the handler happened to be when the
        // guest was stopped, so it is only the fallback.
        let sepc = p.trap.as_ref().map(|t| t.sepc);
        let recorded: Vec<StackFrame> = p
            .frames
            .iter()
            .map(|&pc| StackFrame {
                pc,
                kind: if Some(pc) == sepc {
                    FrameKind::Trap
                } else {
                    FrameKind::Return
                },
            })
            .collect();
        let frames = if recorded.is_empty() {
            p.harts
                .iter()
                .find(|h| h.hart == p.hart)
                .map(|h| h.frames.clone())
                .unwrap_or_default()
        } else {
            recorded
        };
        let backtrace = self.backtrace(&frames);
        // Blame the trapping instruction, else the first frame past the panic machinery.
        let fault_pc = match &p.trap {
            Some(t) => Some(t.sepc),
            None => backtrace
                .iter()
                .find(|l| !l.function.as_deref().is_some_and(is_panic_machinery))
                .map(|l| match l.kind {
                    FrameKind::Return => l.pc.saturating_sub(1),
                    _ => l.pc,
                }),
        };
        let fault = fault_pc.map(|pc| self.exact_place(pc));
        let (disassembly, source) = match (&self.symbols, fault_pc) {
            (Some(sym), Some(pc)) => {
                let asm = sym
                    .disassemble_around(pc, 6, 6, &mut sym.elf_memory())
                    .map(|d: Disassembly| {
                        d.instructions
                            .iter()
                            .map(|i| {
                                let mut text = format!("{} {}", i.mnemonic, i.operands);
                                // Calls through auipc+jalr: say where they go.
                                if let Some(t) = i
                                    .target
                                    .filter(|t| !i.operands.contains(&format!("{t:#x}")))
                                {
                                    text.push_str(&format!("  # {t:#x}"));
                                    if let Some(sym) = &i.target_symbol {
                                        text.push_str(&format!(" <{}>", short_function(sym)));
                                    }
                                }
                                AsmLine {
                                    address: i.address,
                                    text,
                                    at_pc: i.at_pc,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let src = sym
                    .location(pc)
                    .ok()
                    .flatten()
                    .and_then(|loc| sym.source_context(&loc, 3))
                    .map(|c: SourceContext| SourceLines {
                        path: c.path.display().to_string(),
                        first_line: c.first_line,
                        focus: c.focus,
                        lines: c.lines,
                    });
                (asm, src)
            }
            _ => (Vec::new(), None),
        };
        let harts = p
            .harts
            .iter()
            .map(|h| HartBacktrace {
                hart: h.hart,
                run: h.run,
                pc: h.regs.map(|r| r.pc),
                frames: self.backtrace(&h.frames),
            })
            .collect();
        Some(PanicDetail {
            backtrace,
            fault,
            disassembly,
            source,
            harts,
        })
    }
}

fn place_from_frames(pc: u64, frames: &[Frame]) -> Place {
    let Some(first) = frames.first() else {
        return Place::unknown(pc);
    };
    Place {
        pc,
        function: first.function.clone(),
        location: first.location.as_ref().map(|l| l.to_string()),
        inlined_into: frames[1..]
            .iter()
            .map(|f| {
                (
                    f.function.clone().unwrap_or_else(|| "??".into()),
                    f.location.as_ref().map(|l| l.to_string()),
                )
            })
            .collect(),
    }
}

/// Functions that only carry a panic to its halt: not where the problem is.
fn is_panic_machinery(f: &str) -> bool {
    f.starts_with("core::panicking::")
        || f.starts_with("core::panic::")
        || f.starts_with("core::result::unwrap_failed")
        || f.starts_with("core::option::")
        || f.starts_with("lockscope_kernel::panic::")
        || f.ends_with("rust_begin_unwind")
        || f == lockscope_abi::PANIC_HALT_SYMBOL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_join_across_chunks_and_stay_bounded() {
        let mut m = Monitor::new(
            MonitorConfig {
                console_lines: 3,
                ..MonitorConfig::default()
            },
            None,
            SourceKind::Trace,
        )
        .unwrap();
        m.apply(&Feed::Console("hart 1 sta".into()));
        m.apply(&Feed::Console("rting\r\nhart 2 starting\n".into()));
        assert_eq!(m.view().console, vec!["hart 1 starting", "hart 2 starting"]);
        m.apply(&Feed::Console("a\nb\nc".into()));
        let v = m.view();
        assert_eq!(v.console, vec!["a", "b", "c"]);
        assert_eq!(m.console_text(), "a\nb\nc");
    }

    #[test]
    fn pauses_are_summarized() {
        let mut m = Monitor::new(MonitorConfig::default(), None, SourceKind::GdbPoll).unwrap();
        for n in [300, 100, 200] {
            m.apply(&Feed::Pause { nanos: n });
        }
        let p = m.view().pauses;
        assert_eq!(
            (p.count, p.last_ns, p.max_ns, p.median_ns),
            (3, 200, 300, 200)
        );
    }

    #[test]
    fn state_follows_the_feed() {
        let mut m = Monitor::new(MonitorConfig::default(), None, SourceKind::SharedRam).unwrap();
        assert_eq!(m.state(), &TargetState::Starting);
        m.apply(&Feed::End(Ending::Exited { status: 0 }));
        assert!(matches!(m.state(), TargetState::Ended { .. }));
        let g = m.generation();
        m.apply(&Feed::Resumed);
        assert!(m.generation() > g);
    }

    #[test]
    fn recent_events_keep_the_newest_of_every_hart_in_time_order() {
        use crate::model::EventKind;
        let mut m = Monitor::new(
            MonitorConfig {
                recent_events: 3,
                ..MonitorConfig::default()
            },
            None,
            SourceKind::Trace,
        )
        .unwrap();
        let ev = |hart, t| LockEvent {
            time_ns: t,
            hart,
            lock: 0,
            kind: EventKind::Released,
            pc: 0,
        };
        // A drain: hart 0's events, then hart 1's.
        let batch = vec![ev(0, 1), ev(0, 3), ev(0, 5), ev(0, 7), ev(1, 2), ev(1, 6)];
        m.apply(&Feed::Events {
            events: batch,
            lost: vec![],
        });
        let v = m.view();
        let times: Vec<u64> = v.recent_events.iter().map(|e| e.time_ns).collect();
        assert_eq!(times, vec![5, 6, 7], "the newest three across both harts");
        assert!(v.recent_events.iter().any(|e| e.hart == 1));
    }

    #[test]
    fn function_names_lose_the_crate_prefix() {
        assert_eq!(short_function("lockscope_kernel::bio::bget"), "bio::bget");
        assert_eq!(
            short_function("core::panicking::panic"),
            "core::panicking::panic"
        );
    }
}
