//! The [`Monitor`]: feeds in (live or recorded), state kept between them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capture::Captures;
use super::lab::LabTracker;
use super::view::{PauseStats, SourceKind, TargetState};
use crate::analysis::{AnalysisConfig, Analyzer, Check, ConfigError, Verdict};
use crate::feed::{Feed, StopReason};
use crate::model::{EventKind, HartId, LockEvent, LockId};
use crate::recording::{Recorder, WriterStats};
use crate::symbols::Symbols;

/// Harts whose recent events are kept (the kernel has at most 8; the bound is for bad input).
const MAX_RECENT_HARTS: usize = 64;

/// Sizes of the monitor's bounded buffers.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub analysis: AnalysisConfig,
    /// Ask a live session to stop the guest and capture every hart when a deadlock or a stall
    /// is confirmed (a recorded panic is always captured).
    pub capture_faults: bool,
    pub console_lines: usize,
    pub recent_events: usize,
    pub pause_samples: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            analysis: AnalysisConfig::default(),
            capture_faults: true,
            console_lines: 2000,
            recent_events: 2000,
            pause_samples: 101,
        }
    }
}

/// Feeds in, views out.
pub struct Monitor {
    pub(super) config: MonitorConfig,
    pub(super) analyzer: Analyzer,
    pub(super) symbols: Option<Arc<Symbols>>,
    pub(super) source: SourceKind,
    pub(super) state: TargetState,
    pub(super) generation: u64,
    pub(super) console: VecDeque<String>,
    /// The last console line is still open (no newline yet).
    pub(super) console_open: bool,
    /// Lines the console has ended since the start (not bounded like `console`).
    pub(super) console_newlines: u64,
    /// Per hart, its newest events.
    pub(super) recent: Vec<VecDeque<LockEvent>>,
    pub(super) events_total: u64,
    pub(super) lost_total: u64,
    pub(super) pauses: PauseStats,
    pub(super) pause_window: VecDeque<u64>,
    pub(super) recorder: Option<Recorder>,
    pub(super) captures: Captures,
    /// The capture the last snapshot called for, until the session takes it.
    pub(super) wanted: Option<StopReason>,
    /// How the kernel is read (the source's description), when live.
    pub(super) kernel_reader: Option<String>,
    /// The source delivers lock events.
    pub(super) lock_events: bool,
    /// The lab's tests on the console.
    pub(super) lab: LabTracker,
    /// What the user's gdb holds, through the proxy.
    pub(super) user_gdb: Option<String>,
    /// When the panic showed and when its report was in.
    pub(super) panic_timing: PanicTiming,
}

/// When a panic showed and when its full report was in: what `cargo xtask bench` measures.
#[derive(Clone, Debug, Default)]
pub struct PanicTiming {
    /// The console printed `panic: `.
    pub console_at: Option<Instant>,
    /// A snapshot first showed the kernel panicked (`panicked` set, or a panic record).
    pub flagged_at: Option<Instant>,
    /// The panic record with every hart's stack was in.
    pub reported_at: Option<Instant>,
    /// The end of the console text so far, for a `panic: ` split between two pieces.
    tail: String,
}

impl PanicTiming {
    /// From the console's `panic: ` line to the full report.
    pub fn from_console(&self) -> Option<Duration> {
        Some(
            self.reported_at?
                .saturating_duration_since(self.console_at?),
        )
    }

    /// From the first snapshot that showed the panic to the full report.
    pub fn from_flag(&self) -> Option<Duration> {
        Some(
            self.reported_at?
                .saturating_duration_since(self.flagged_at?),
        )
    }
}

impl Monitor {
    pub fn new(
        config: MonitorConfig,
        symbols: Option<Arc<Symbols>>,
        source: SourceKind,
    ) -> Result<Self, ConfigError> {
        let mut analysis = config.analysis.clone();
        if let Some(sym) = &symbols {
            analysis.protocol_sites.extend(protocol_sites(sym));
        }
        let analyzer = Analyzer::new(analysis)?;
        Ok(Self {
            config,
            analyzer,
            symbols,
            source,
            state: TargetState::Starting,
            generation: 0,
            console: VecDeque::new(),
            console_open: false,
            console_newlines: 0,
            recent: Vec::new(),
            events_total: 0,
            lost_total: 0,
            pauses: PauseStats::default(),
            pause_window: VecDeque::new(),
            recorder: None,
            kernel_reader: None,
            captures: Captures::default(),
            wanted: None,
            lock_events: true,
            lab: LabTracker::default(),
            user_gdb: None,
            panic_timing: PanicTiming::default(),
        })
    }

    /// Says how the kernel is read (`lockscope ABI v1`), for the views.
    pub fn set_kernel_reader(&mut self, description: String) {
        self.kernel_reader = Some(description);
        self.generation += 1;
    }

    /// Says whether the source delivers lock events at all (an xv6 kernel read through DWARF
    /// alone does not), so views can say why there are no wait and hold times.
    pub fn set_lock_events(&mut self, available: bool) {
        self.lock_events = available;
        self.generation += 1;
    }

    /// What the user's gdb holds (`stopped by gdb (hart 2, breakpoint or step)`), or `None`.
    pub fn set_user_gdb(&mut self, state: Option<String>) {
        if self.user_gdb != state {
            self.user_gdb = state;
            self.generation += 1;
        }
    }

    /// Writes every feed applied from now on to `r` (a session shares it with the thread that
    /// saves guest RAM at stops). A write error stops the recording and is reported on the
    /// console view; the session goes on.
    pub fn set_recorder(&mut self, r: Recorder) {
        self.recorder = Some(r);
    }

    /// Finishes the recording (its index, and the `keep` segments joined), if there is one.
    pub fn finish_recording(&mut self) -> Option<WriterStats> {
        let r = self.recorder.take()?;
        match r.finish() {
            Ok(stats) => Some(stats),
            Err(e) => {
                self.push_console(&format!("\n[lockscope] the recording is incomplete: {e}\n"));
                None
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
            captures: self.captures,
            wanted: self.wanted,
            kernel_reader: self.kernel_reader.clone(),
            console_newlines: self.console_newlines,
            lock_events: self.lock_events,
            lab: self.lab.clone(),
            user_gdb: self.user_gdb.clone(),
            panic_timing: self.panic_timing.clone(),
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
        if let Some(w) = &self.recorder {
            if let Err(e) = w.write(feed) {
                self.recorder = None;
                self.push_console(&format!("\n[lockscope] recording stopped: {e}\n"));
            }
        }
        self.analyzer.apply(feed);
        match feed {
            Feed::Snapshot(snap) => {
                self.lab.on_snapshot(snap);
                if self.state == TargetState::Starting {
                    self.state = TargetState::Running;
                }
                let faults = self.config.capture_faults;
                // Without lock events, only a stopped look at every hart can tell a hang.
                let samples = self.events_total == 0;
                if let Some(r) = self
                    .captures
                    .wanted(&self.analyzer, &self.state, faults, samples)
                {
                    self.wanted = Some(r);
                }
                self.time_panic();
            }
            Feed::Events { events, lost } => {
                self.events_total += events.len() as u64;
                let lost_now = lost.iter().fold(0u64, |a, (_, n)| a.saturating_add(*n));
                self.lost_total = self.lost_total.saturating_add(lost_now);
                self.keep_recent(events);
            }
            Feed::Console(text) => {
                self.lab.on_console(text);
                self.push_console(text);
                // The line may arrive in pieces: look at the text with the end of the last.
                if self.panic_timing.console_at.is_none() {
                    let seen = format!("{}{text}", self.panic_timing.tail);
                    if seen.contains("panic: ") {
                        self.panic_timing.console_at = Some(Instant::now());
                    }
                    let keep = seen.char_indices().rev().nth(7).map_or(0, |(i, _)| i);
                    self.panic_timing.tail = seen[keep..].to_string();
                }
            }
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

    /// The newest `n` events of `hart`, oldest first.
    pub(super) fn last_events(&self, hart: HartId, n: usize) -> Vec<LockEvent> {
        let Some(q) = self.recent.get(hart as usize) else {
            return Vec::new();
        };
        let cut = q.len().saturating_sub(n);
        // The acquisitions of locks the hart still holds come too when they are older than the
        // last `n` (a scan that took and dropped many locks since): they are what matters.
        let mut released: std::collections::HashSet<LockId> = Default::default();
        let mut held_before: Vec<LockEvent> = Vec::new();
        for (i, e) in q.iter().enumerate().rev() {
            match e.kind {
                EventKind::Released => {
                    released.insert(e.lock);
                }
                EventKind::Acquired { .. } => {
                    // Not released later: still held (and an older acquisition of it was not).
                    let still_held = released.insert(e.lock);
                    if still_held && i < cut && held_before.len() < n {
                        held_before.push(*e);
                    }
                }
                _ => {}
            }
        }
        held_before.reverse();
        held_before.extend(q.iter().skip(cut).copied());
        held_before
    }

    /// The newest `recent_events` events of all harts, oldest first.
    pub(super) fn recent_events(&self) -> Vec<LockEvent> {
        let mut all: Vec<LockEvent> = self.recent.iter().flatten().copied().collect();
        all.sort_by_key(|e| e.time_ns);
        let cut = all.len().saturating_sub(self.config.recent_events);
        all.drain(..cut);
        all
    }

    fn push_console(&mut self, text: &str) {
        self.console_newlines += text.matches('\n').count() as u64;
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

    /// Whether a live session should stop the guest now and capture every hart's registers and
    /// stack, and why: a panic the kernel recorded, or (with
    /// [`MonitorConfig::capture_faults`]) a confirmed deadlock or a stall. Decided at each
    /// snapshot, each asked for once and only while the target runs; taking it clears it.
    pub fn capture_wanted(&mut self) -> Option<StopReason> {
        self.wanted.take()
    }

    /// Whether a live session should let a stopped guest run again: after a sample stop that
    /// confirmed no hang. Taking it clears it.
    pub fn resume_wanted(&mut self) -> bool {
        self.captures.take_resume()
    }

    /// When the panic showed and when its report was complete.
    pub fn panic_timing(&self) -> PanicTiming {
        self.panic_timing.clone()
    }

    fn time_panic(&mut self) {
        let Some(s) = self.analyzer.snapshot() else {
            return;
        };
        let t = &mut self.panic_timing;
        if t.flagged_at.is_none()
            && (s.panic.is_some() || s.outcome == Some(crate::model::Outcome::Panic))
        {
            t.flagged_at = Some(Instant::now());
        }
        let stacks = self
            .analyzer
            .last_stop()
            .is_some_and(|st| st.harts.iter().all(|h| !h.frames.is_empty()));
        if t.reported_at.is_none() && s.panic.is_some() && stacks {
            t.reported_at = Some(Instant::now());
        }
    }

    /// The hart a capture is about now: the panicking one, else a deadlocked or stalled one.
    pub fn capture_focus(&self) -> Option<crate::model::HartId> {
        super::capture::focus(&self.analyzer)
    }

    /// The verdict alone (cheaper than a view). A test the lab's own output failed is a
    /// failed workload, unless something worse happened.
    pub fn check(&self) -> Check {
        let mut check = self.analyzer.check();
        if let Some(t) = self.lab.failed() {
            if matches!(check.verdict, Verdict::Ok | Verdict::LockOrderInversion) {
                check.verdict = Verdict::Fail;
                check.severity = check.verdict.severity();
                check.summary = format!(
                    "{} failed by the lab's own output: \"{}\"",
                    t.name,
                    t.result_line.as_deref().unwrap_or("FAIL")
                );
            }
        }
        check
    }
}

/// xv6's functions whose lock acquisitions follow its own documented protocol (see
/// [`AnalysisConfig::protocol_sites`]): `sleep` and `wakeup` take a process's lock under the
/// condition's lock by design, and `iput` takes an inode's sleeplock under `itable.lock` only
/// when nothing else can hold it. Found by their C names, so our Rust kernel has none.
const XV6_PROTOCOL_FUNCTIONS: &[&str] = &["sleep", "wakeup", "iput"];

fn protocol_sites(symbols: &crate::symbols::Symbols) -> Vec<(u64, u64)> {
    symbols
        .symbols()
        .iter()
        .filter(|s| s.size > 0 && XV6_PROTOCOL_FUNCTIONS.contains(&s.name.as_str()))
        .map(|s| (s.address, s.address + s.size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Ending;

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
            mode: None,
            trylock: false,
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
}
