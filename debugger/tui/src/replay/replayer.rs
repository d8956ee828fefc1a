//! The replay's state machine, without threads: a [`Timeline`], a cursor and the monitor at the
//! cursor. Requests move the cursor; [`Replayer::frame`] is what the dashboard draws.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use lockscope_engine::model::{HartId, LockEvent, LockId};
use lockscope_engine::monitor::{Monitor, View};
use lockscope_engine::recording::{delta_view, Direction, Mark, MarkKind, Position, Timeline};

/// Events after the cursor shown in the Events view.
pub const UPCOMING: usize = 40;
/// A step forward shorter than this many elements feeds the monitor on; a longer one starts
/// from the nearest keyframe (keyframes are at least 400,000 events apart).
const ADVANCE_LIMIT: u64 = 100_000;
const SPEEDS: [f64; 9] = [0.01, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0];

/// Where to put the cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Position(Position),
    /// Target time in nanoseconds, absolute (as in the recording).
    Time(u64),
    /// Nanoseconds from the recording's first timed element.
    FromStart(u64),
    Start,
    End,
}

/// What the dashboard asks of a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Seek(At),
    /// One lock event back or forward, of `hart` when given.
    StepEvent {
        hart: Option<HartId>,
        dir: Direction,
    },
    /// To the next (previous) snapshot.
    StepSnapshot(Direction),
    /// To the next (previous) mark, of `kind` when given.
    StepMark {
        kind: Option<MarkKind>,
        dir: Direction,
    },
    /// Starts a range at the cursor, or ends the started one there.
    MarkRange,
    /// Selects a range: counters become changes over it.
    Select(At, At),
    ClearRange,
    PlayPause,
    Faster,
    Slower,
    /// Time passed: a playing replay moves on.
    Tick,
}

/// What a replay is made of, fixed once the timeline is built.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineInfo {
    pub start_ns: u64,
    pub end_ns: u64,
    /// The last position.
    pub len: Position,
    pub marks: Vec<Mark>,
    /// What could not be read from the recording, in words.
    pub problems: Vec<String>,
    /// Every lock's name, from the recording's snapshots: for events on locks the view at the
    /// cursor does not know yet.
    pub lock_names: HashMap<LockId, String>,
}

impl TimelineInfo {
    /// The name of lock `id`: from the view when it knows it, else from the recording.
    pub fn lock_name<'a>(&'a self, view: &'a View, id: LockId) -> std::borrow::Cow<'a, str> {
        match view.report.locks.iter().find(|l| l.id == id) {
            Some(l) => l.name.as_str().into(),
            None => match self.lock_names.get(&id) {
                Some(n) => n.as_str().into(),
                None => format!("lock#{id}").into(),
            },
        }
    }
}

/// A selected range: positions and their times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: Position,
    pub to: Position,
    pub from_ns: u64,
    pub to_ns: u64,
}

/// One published state of a replay.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Bumped on every change.
    pub generation: u64,
    /// The state at the cursor; with a range selected, its counters are changes over the range.
    pub view: Arc<View>,
    /// `None` while the timeline is being built.
    pub timeline: Option<Arc<TimelineInfo>>,
    /// While the timeline is built: bytes done of the total.
    pub loading: Option<(u64, u64)>,
    /// The recording could not be replayed.
    pub failed: Option<String>,
    pub cursor: Position,
    pub cursor_ns: u64,
    /// The lock event the cursor is on (the last element applied), if it is one.
    pub event: Option<LockEvent>,
    /// The next lock events after the cursor.
    pub upcoming: Vec<LockEvent>,
    pub range: Option<Range>,
    /// A range started with `v`, waiting for its end.
    pub anchor: Option<(Position, u64)>,
    pub playing: bool,
    /// Target time per real time while playing.
    pub speed: f64,
    /// A message for the status bar, numbered so it shows once.
    pub message: Option<(u64, String)>,
}

impl Frame {
    /// A frame with nothing replayed yet: `view` (an empty view), no timeline.
    pub fn waiting(view: View) -> Self {
        Frame {
            generation: view.generation,
            view: Arc::new(view),
            timeline: None,
            loading: None,
            failed: None,
            cursor: 0,
            cursor_ns: 0,
            event: None,
            upcoming: Vec::new(),
            range: None,
            anchor: None,
            playing: false,
            speed: 1.0,
            message: None,
        }
    }
}

/// A replay: the timeline, the cursor, the monitor at the cursor.
pub struct Replayer {
    tl: Timeline,
    info: Arc<TimelineInfo>,
    /// Lock names and classes from the recording's snapshots, for the events before the first
    /// one (a lock's name does not change; the snapshot that gives it may come later).
    names: HashMap<LockId, (String, String)>,
    pos: Position,
    monitor: Monitor,
    range: Option<(Position, Position)>,
    anchor: Option<Position>,
    playing: Option<Instant>,
    speed: usize,
    message: Option<(u64, String)>,
    generation: u64,
    frame: Arc<Frame>,
    dirty: bool,
}

impl Replayer {
    /// A replay of `tl` with the cursor at `at`. `generation` is where frame numbers start (a
    /// player that published loading frames goes on from its last).
    pub fn new(tl: Timeline, at: At, generation: u64) -> Self {
        let pos = resolve(&tl, at);
        let names: HashMap<LockId, (String, String)> = tl
            .view_at(tl.len())
            .report
            .locks
            .into_iter()
            .filter(|l| l.counters_exact)
            .map(|l| (l.id, (l.name, l.class)))
            .collect();
        let info = Arc::new(TimelineInfo {
            start_ns: tl.start_ns(),
            end_ns: tl.end_ns(),
            len: tl.len(),
            marks: tl.marks().to_vec(),
            problems: tl.problems().iter().map(|p| p.to_string()).collect(),
            lock_names: names.iter().map(|(id, n)| (*id, n.0.clone())).collect(),
        });
        let monitor = tl.monitor_at(pos);
        let frame = Arc::new(Frame::waiting(monitor.view()));
        let mut r = Replayer {
            tl,
            info,
            names,
            pos,
            monitor,
            range: None,
            anchor: None,
            playing: None,
            speed: SPEEDS.iter().position(|&s| s == 1.0).unwrap_or(0),
            message: None,
            generation,
            frame,
            dirty: true,
        };
        if let Some(first) = r.info.problems.first() {
            let more = r.info.problems.len() - 1;
            let msg = match more {
                0 => format!("⚠ {first}"),
                n => format!("⚠ {first} (and {n} more problems)"),
            };
            r.say(msg);
        }
        r.frame();
        r
    }

    pub fn timeline(&self) -> &Timeline {
        &self.tl
    }

    pub fn position(&self) -> Position {
        self.pos
    }

    pub fn playing(&self) -> bool {
        self.playing.is_some()
    }

    fn say(&mut self, msg: impl Into<String>) {
        let n = self.message.as_ref().map_or(1, |m| m.0 + 1);
        self.message = Some((n, msg.into()));
        self.dirty = true;
    }

    /// Moves the cursor to `q`: on from the monitor at the cursor for a short step forward,
    /// else from the nearest keyframe.
    fn go(&mut self, q: Position) {
        let q = q.min(self.tl.len());
        if q == self.pos {
            return;
        }
        if !(q > self.pos
            && q - self.pos <= ADVANCE_LIMIT
            && self.tl.advance(&mut self.monitor, self.pos, q))
        {
            self.monitor = self.tl.monitor_at(q);
        }
        self.pos = q;
        self.dirty = true;
    }

    /// Moves the cursor, dropping a selected range (the counters are whole again).
    fn move_to(&mut self, q: Position) {
        if self.range.take().is_some() {
            self.say("range cleared: counters are totals again");
        }
        self.go(q);
    }

    /// Applies one request; cheap ones only change the cursor, the frame is built once by
    /// [`Replayer::frame`].
    pub fn apply(&mut self, r: Request) {
        use Direction::{Back, Forward};
        match r {
            Request::Seek(at) => {
                let q = resolve(&self.tl, at);
                self.move_to(q);
            }
            Request::StepEvent { hart, dir } => match self.tl.step_event(self.pos, hart, dir) {
                Some(q) => self.move_to(q),
                None => self.say(match (hart, dir) {
                    (Some(h), Forward) => format!("no later event of hart {h}"),
                    (Some(h), Back) => format!("no earlier event of hart {h}"),
                    (None, Forward) => "no later event".into(),
                    (None, Back) => "no earlier event".into(),
                }),
            },
            Request::StepSnapshot(dir) => match self.tl.step_snapshot(self.pos, dir) {
                Some(q) => self.move_to(q),
                None => self.say(match dir {
                    Forward => "no later snapshot",
                    Back => "no earlier snapshot",
                }),
            },
            Request::StepMark { kind, dir } => {
                let found = self
                    .tl
                    .step_mark(self.pos, kind, dir)
                    .map(|m| (m.position, m.what.clone()));
                match found {
                    Some((q, what)) => {
                        self.move_to(q);
                        self.say(what);
                    }
                    None => {
                        let what = kind.map_or("mark", mark_name);
                        self.say(match dir {
                            Forward => format!("no later {what}"),
                            Back => format!("no earlier {what}"),
                        })
                    }
                }
            }
            Request::MarkRange => match self.anchor.take() {
                None => {
                    self.anchor = Some(self.pos);
                    let t = self.secs(self.tl.time_of(self.pos));
                    self.say(format!(
                        "range from {t}: move the cursor (steps, marks, g) and press v again"
                    ));
                }
                Some(a) => self.select(a, self.pos),
            },
            Request::Select(a, b) => {
                let (a, b) = (resolve(&self.tl, a), resolve(&self.tl, b));
                self.anchor = None;
                self.select(a, b);
            }
            Request::ClearRange => {
                self.anchor = None;
                if self.range.take().is_some() {
                    self.say("range cleared: counters are totals again");
                }
                self.dirty = true;
            }
            Request::PlayPause => {
                if self.playing.take().is_none() {
                    if self.pos >= self.tl.len() {
                        self.go(0);
                    }
                    self.range = None;
                    self.playing = Some(Instant::now());
                }
                self.dirty = true;
            }
            Request::Faster | Request::Slower => {
                self.speed = match r {
                    Request::Faster => (self.speed + 1).min(SPEEDS.len() - 1),
                    _ => self.speed.saturating_sub(1),
                };
                self.say(format!("speed {}x", SPEEDS[self.speed]));
            }
            Request::Tick => self.tick(),
        }
    }

    fn select(&mut self, a: Position, b: Position) {
        let (a, b) = (a.min(b), a.max(b));
        if a == b {
            self.say("an empty range: move the cursor before ending it");
            return;
        }
        self.range = Some((a, b));
        self.playing = None;
        self.go(b);
        let (t0, t1) = (self.tl.time_of(a), self.tl.time_of(b));
        self.say(format!(
            "range {}..{}: counters are changes over these {} (V clears)",
            self.secs(t0),
            self.secs(t1),
            dur(t1.saturating_sub(t0))
        ));
    }

    /// A playing replay moves on by the real time since the last tick, times the speed.
    fn tick(&mut self) {
        let Some(last) = self.playing else { return };
        let now = Instant::now();
        let dt = now.duration_since(last).as_nanos() as f64 * SPEEDS[self.speed];
        self.playing = Some(now);
        let t = self.tl.time_of(self.pos).saturating_add(dt as u64);
        let q = self.tl.position_at(t).max(self.pos);
        self.go(q);
        if self.pos >= self.tl.len() {
            self.playing = None;
            self.say("the end of the recording");
        }
        self.dirty = true;
    }

    /// Target time, as every view shows it.
    fn secs(&self, t: u64) -> String {
        format!("{:.3}s", t as f64 / 1e9)
    }

    /// The frame for the current state (built only when something changed).
    pub fn frame(&mut self) -> Arc<Frame> {
        if !self.dirty {
            return self.frame.clone();
        }
        self.dirty = false;
        self.generation += 1;
        let mut view = self.monitor.view();
        let range = self.range.map(|(a, b)| {
            let before = self.tl.view_at(a);
            view = delta_view(&before, &view);
            Range {
                from: a,
                to: b,
                from_ns: self.tl.time_of(a),
                to_ns: self.tl.time_of(b),
            }
        });
        // The dashboard caches rows per view generation: every frame is a new one.
        view.generation = self.generation;
        for l in view.report.locks.iter_mut().filter(|l| !l.counters_exact) {
            if let Some((name, class)) = self.names.get(&l.id) {
                l.name.clone_from(name);
                l.class.clone_from(class);
            }
        }
        let upcoming: Vec<LockEvent> = self
            .tl
            .events_around(self.pos, 0, UPCOMING)
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        for e in &upcoming {
            view.places
                .entry(e.pc)
                .or_insert_with(|| self.monitor.event_place(e.pc));
        }
        let frame = Frame {
            generation: self.generation,
            view: Arc::new(view),
            timeline: Some(self.info.clone()),
            loading: None,
            failed: None,
            cursor: self.pos,
            cursor_ns: self.tl.time_of(self.pos),
            event: self.tl.event_at(self.pos),
            upcoming,
            range,
            anchor: self.anchor.map(|a| (a, self.tl.time_of(a))),
            playing: self.playing.is_some(),
            speed: SPEEDS[self.speed],
            message: self.message.clone(),
        };
        self.frame = Arc::new(frame);
        self.frame.clone()
    }
}

fn resolve(tl: &Timeline, at: At) -> Position {
    match at {
        At::Position(p) => p.min(tl.len()),
        At::Time(t) => tl.position_at(t),
        At::FromStart(t) => tl.position_at(tl.start_ns().saturating_add(t)),
        At::Start => 0,
        At::End => tl.len(),
    }
}

/// A mark kind in words.
pub fn mark_name(kind: MarkKind) -> &'static str {
    match kind {
        MarkKind::ContentionBurst => "contention burst",
        MarkKind::Lost => "loss of events",
        MarkKind::Panic => "panic",
        MarkKind::Deadlock => "deadlock",
        MarkKind::Stall => "stall",
        MarkKind::Inversion => "lock-order inversion",
    }
}

fn dur(ns: u64) -> String {
    crate::format::dur(ns)
}
