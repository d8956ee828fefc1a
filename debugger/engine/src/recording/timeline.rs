//! The state of a recording at any moment, fast: what the replay timeline stands on.
//!
//! A recording is a stream of *elements*: every lock event is one, every other feed item is one
//! (an event batch with no events, only losses, is one). Within a batch, events are taken in time
//! order (the analysis allows any interleaving of harts; each hart's order is kept), so element
//! times are nearly monotonic; an element's *time* is the running maximum, which is.
//!
//! A [`Position`] `p` is the state after the first `p` elements. [`Timeline::open`] replays the
//! whole recording once, keeping a copy of the monitor (a keyframe) every few hundred thousand
//! events, at chunk boundaries, and the marks; [`Timeline::monitor_at`] then starts from the
//! nearest keyframe and feeds at most a few chunks. The same calls reach the same state whether
//! they start from a keyframe or from the beginning.

use std::sync::{Arc, Mutex};

use super::marks::{Mark, MarkKind, MarkWatch};
use super::reader::{FeedChunk, Problem, Recording};
use super::RecordingError;
use crate::feed::{Feed, StopReason};
use crate::model::{HartId, LockEvent};
use crate::monitor::{Monitor, MonitorConfig, SourceKind, View};
use crate::symbols::Symbols;

pub use super::marks::Position;

/// Decoded chunks kept for stepping and seeking nearby.
const CACHED_CHUNKS: usize = 4;

/// How a timeline is built.
#[derive(Clone, Debug)]
pub struct TimelineOptions {
    pub monitor: MonitorConfig,
    /// A keyframe at the first chunk boundary after this many events...
    pub keyframe_events: u64,
    /// ...and at most this many keyframes (spacing grows with the recording).
    pub max_keyframes: usize,
}

impl Default for TimelineOptions {
    fn default() -> Self {
        Self {
            monitor: MonitorConfig::default(),
            keyframe_events: 400_000,
            max_keyframes: 512,
        }
    }
}

/// Which way to step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Back,
}

struct ChunkInfo {
    feed: FeedChunk,
    /// Global index of its first element, and how many it has.
    first: u64,
    len: u64,
    /// Element time (the running maximum) after its last element.
    mono_end: u64,
}

struct Keyframe {
    /// The state after every chunk before this one.
    chunk: usize,
    monitor: Monitor,
}

/// One decoded chunk: its feeds (batches in time order) and per-element times.
struct Decoded {
    feeds: Vec<Feed>,
    /// Element offset of each feed within the chunk.
    starts: Vec<u64>,
    times: Vec<u64>,
}

impl Decoded {
    /// The event behind element `k` of the chunk, if it is one.
    fn event(&self, k: usize) -> Option<LockEvent> {
        let fi = self
            .starts
            .partition_point(|&s| s <= k as u64)
            .checked_sub(1)?;
        match &self.feeds[fi] {
            Feed::Events { events, .. } => events.get(k - self.starts[fi] as usize).copied(),
            _ => None,
        }
    }

    /// Whether element `k` is an event (of `hart` when given).
    fn is_event(&self, k: usize, hart: Option<HartId>) -> bool {
        self.event(k)
            .is_some_and(|e| hart.is_none_or(|h| e.hart == h))
    }
}

/// A recording, seekable.
pub struct Timeline {
    rec: Recording,
    symbols: Option<Arc<Symbols>>,
    options: TimelineOptions,
    chunks: Vec<ChunkInfo>,
    keyframes: Vec<Keyframe>,
    marks: Vec<Mark>,
    /// Positions just after each snapshot, and its time.
    snapshots: Vec<(Position, u64)>,
    start_ns: u64,
    end_ns: u64,
    cache: Mutex<Vec<(usize, Arc<Decoded>)>>,
}

/// Sorts each batch's events by time, keeping every hart's own order (the sort is stable and a
/// hart's ring is in time order; where it is not, the hart's order wins over time).
pub(crate) fn canonical(feed: &mut Feed) {
    if let Feed::Events { events, .. } = feed {
        if !events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns) {
            events.sort_by_key(|e| e.time_ns);
        }
    }
}

fn elements(feed: &Feed) -> u64 {
    match feed {
        Feed::Events { events, .. } => events.len().max(1) as u64,
        _ => 1,
    }
}

fn decode(rec: &Recording, c: &FeedChunk, mono_start: u64) -> Decoded {
    let mut feeds = rec.feeds_or_gap(c);
    let mut starts = Vec::with_capacity(feeds.len());
    let mut times = Vec::new();
    let mut mono = mono_start;
    for f in &mut feeds {
        canonical(f);
        starts.push(times.len() as u64);
        match f {
            Feed::Events { events: ev, .. } if !ev.is_empty() => {
                for e in ev.iter() {
                    mono = mono.max(e.time_ns);
                    times.push(mono);
                }
            }
            Feed::Snapshot(s) => {
                mono = mono.max(s.time_ns);
                times.push(mono);
            }
            _ => {
                times.push(mono);
            }
        }
    }
    Decoded {
        feeds,
        starts,
        times,
    }
}

impl Timeline {
    /// Opens `path` and builds the keyframes (a replay of the whole recording).
    pub fn open(
        path: &std::path::Path,
        symbols: Option<Arc<Symbols>>,
    ) -> Result<Self, RecordingError> {
        Self::open_with(
            Recording::open(path)?,
            symbols,
            TimelineOptions::default(),
            &mut |_, _| {},
        )
    }

    /// Builds the timeline of an open recording; `progress(done, total)` is called after each
    /// chunk with stored bytes.
    pub fn open_with(
        rec: Recording,
        symbols: Option<Arc<Symbols>>,
        options: TimelineOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, RecordingError> {
        let feed_chunks = rec.feed_chunks();
        let total_bytes: u64 = feed_chunks
            .iter()
            .map(|c| c.chunk.header.stored_len as u64)
            .sum();
        let kf_bytes = total_bytes / options.max_keyframes.max(1) as u64;
        let mut monitor =
            Monitor::new(options.monitor.clone(), symbols.clone(), SourceKind::Trace)?;
        let mut chunks = Vec::with_capacity(feed_chunks.len());
        let mut keyframes = Vec::new();
        let mut snapshots = Vec::new();
        let mut watch = MarkWatch::default();
        let mut marks = Vec::new();
        let (mut first, mut mono) = (0u64, 0u64);
        let mut start_ns = None;
        let (mut since_events, mut since_bytes, mut done_bytes) = (0u64, 0u64, 0u64);
        // Chunks are decoded on a second thread while this one feeds the monitor.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Decoded>(2);
        std::thread::scope(|scope| {
            let rec = &rec;
            let feed_chunks = &feed_chunks;
            scope.spawn(move || {
                let mut mono = 0u64;
                for fc in feed_chunks {
                    let d = decode(rec, fc, mono);
                    mono = d.times.last().copied().unwrap_or(mono);
                    if tx.send(d).is_err() {
                        break;
                    }
                }
            });
            for (ci, fc) in feed_chunks.iter().enumerate() {
                let Ok(d) = rx.recv() else { break };
                for (fi, feed) in d.feeds.iter().enumerate() {
                    let at = first + d.starts[fi];
                    let n = elements(feed);
                    let t = d.times[d.starts[fi] as usize + n as usize - 1];
                    monitor.apply(feed);
                    match feed {
                        Feed::Events { events, lost } => {
                            since_events += events.len() as u64;
                            if start_ns.is_none() {
                                start_ns = events.iter().map(|e| e.time_ns).min();
                            }
                            for (hart, k) in lost.iter().filter(|(_, k)| *k > 0) {
                                marks.push(Mark {
                                    time_ns: d.times[d.starts[fi] as usize],
                                    position: at + 1,
                                    kind: MarkKind::Lost,
                                    what: format!("hart {hart} lost {k} events"),
                                });
                            }
                        }
                        Feed::Snapshot(s) => {
                            start_ns.get_or_insert(s.time_ns);
                            snapshots.push((at + 1, t));
                            watch.snapshot(&monitor, at + 1, t, &mut marks);
                        }
                        Feed::Stop(info) if info.reason == StopReason::Panic && !watch.panic => {
                            watch.panic = true;
                            marks.push(Mark {
                                time_ns: t,
                                position: at + 1,
                                kind: MarkKind::Panic,
                                what: format!(
                                    "the guest stopped at a panic{}",
                                    info.hart
                                        .map(|h| format!(" (hart {h})"))
                                        .unwrap_or_default()
                                ),
                            });
                        }
                        _ => {}
                    }
                }
                let len = d.times.len() as u64;
                mono = d.times.last().copied().unwrap_or(mono);
                watch.inversions(&monitor, first + len, &mut marks);
                chunks.push(ChunkInfo {
                    feed: *fc,
                    first,
                    len,
                    mono_end: mono,
                });
                first += len;
                let stored = fc.chunk.header.stored_len as u64;
                since_bytes += stored;
                done_bytes += stored;
                progress(done_bytes, total_bytes);
                if since_events >= options.keyframe_events && since_bytes >= kf_bytes {
                    keyframes.push(Keyframe {
                        chunk: ci + 1,
                        monitor: monitor.fork(),
                    });
                    since_events = 0;
                    since_bytes = 0;
                }
            }
        });
        watch.bursts(&mut marks);
        let start_ns = start_ns.unwrap_or(0);
        let mut tl = Self {
            rec,
            symbols,
            options,
            chunks,
            keyframes,
            marks,
            snapshots,
            start_ns,
            end_ns: mono.max(start_ns),
            cache: Mutex::new(Vec::new()),
        };
        // Inversions are looked for once a chunk: place them at their time.
        let mut marks = std::mem::take(&mut tl.marks);
        for m in marks.iter_mut().filter(|m| m.kind == MarkKind::Inversion) {
            m.position = tl.position_at(m.time_ns).max(1);
        }
        marks.sort_by(|a, b| a.position.cmp(&b.position).then(a.time_ns.cmp(&b.time_ns)));
        tl.marks = marks;
        Ok(tl)
    }

    pub fn recording(&self) -> &Recording {
        &self.rec
    }

    /// What could not be read (cuts, damaged chunks), as the user should be told.
    pub fn problems(&self) -> Vec<Problem> {
        self.rec.problems()
    }

    /// Target time of the first and the last element.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    pub fn end_ns(&self) -> u64 {
        self.end_ns
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }

    /// Elements in the recording: the last position.
    pub fn len(&self) -> Position {
        self.chunks.last().map_or(0, |c| c.first + c.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn keyframes(&self) -> usize {
        self.keyframes.len()
    }

    pub fn marks(&self) -> &[Mark] {
        &self.marks
    }

    /// Positions just after each snapshot, with its time.
    pub fn snapshots(&self) -> &[(Position, u64)] {
        &self.snapshots
    }

    fn decoded(&self, ci: usize) -> Arc<Decoded> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.iter().position(|(i, _)| *i == ci) {
            let hit = cache.remove(p);
            cache.push(hit.clone());
            return hit.1;
        }
        let mono_start = ci.checked_sub(1).map_or(0, |p| self.chunks[p].mono_end);
        let d = Arc::new(decode(&self.rec, &self.chunks[ci].feed, mono_start));
        if cache.len() == CACHED_CHUNKS {
            cache.remove(0);
        }
        cache.push((ci, d.clone()));
        d
    }

    /// The chunk holding element `p - 1` (the last one applied at position `p`).
    fn chunk_of(&self, p: Position) -> Option<usize> {
        let i = self.chunks.partition_point(|c| c.first + c.len < p);
        (p > 0 && i < self.chunks.len()).then_some(i)
    }

    /// The time at position `p`: of the last element applied (the start for 0).
    pub fn time_of(&self, p: Position) -> u64 {
        match self.chunk_of(p.min(self.len())) {
            Some(ci) => {
                let d = self.decoded(ci);
                let k = (p.min(self.len()) - 1 - self.chunks[ci].first) as usize;
                d.times.get(k).copied().unwrap_or(self.start_ns)
            }
            None => self.start_ns,
        }
    }

    /// The position at time `t`: every element at or before `t` applied.
    pub fn position_at(&self, t: u64) -> Position {
        let ci = self.chunks.partition_point(|c| c.mono_end <= t);
        if ci == self.chunks.len() {
            return self.len();
        }
        let d = self.decoded(ci);
        self.chunks[ci].first + d.times.partition_point(|&x| x <= t) as u64
    }

    /// A monitor fed up to position `p`, from the nearest keyframe before it.
    pub fn monitor_at(&self, p: Position) -> Monitor {
        let p = p.min(self.len());
        let target = self.chunks.partition_point(|c| c.first + c.len <= p);
        let kf = self.keyframes.partition_point(|k| k.chunk <= target);
        let (mut m, from) = match kf.checked_sub(1) {
            Some(k) => (self.keyframes[k].monitor.fork(), self.keyframes[k].chunk),
            None => (
                Monitor::new(
                    self.options.monitor.clone(),
                    self.symbols.clone(),
                    SourceKind::Trace,
                )
                .expect("the options were validated when the timeline was opened"),
                0,
            ),
        };
        let start = self.chunks.get(from).map_or(self.len(), |c| c.first);
        self.feed(&mut m, start, p);
        m
    }

    /// Moves a monitor that is at position `from` on to `to` (forward only), feeding the
    /// elements between: cheaper than [`Timeline::monitor_at`] for short steps forward (a
    /// replay playing, or stepping through events). Returns false, leaving `m` untouched, when
    /// `to` is before `from`.
    pub fn advance(&self, m: &mut Monitor, from: Position, to: Position) -> bool {
        if to < from {
            return false;
        }
        self.feed(m, from, to.min(self.len()));
        true
    }

    /// Feeds the elements at indices `from..to` (the positions after `from`, up to `to`). An
    /// event batch cut by either end is fed in part; its losses go with its first element.
    fn feed(&self, m: &mut Monitor, from: Position, to: Position) {
        let first_chunk = self.chunks.partition_point(|c| c.first + c.len <= from);
        for ci in first_chunk..self.chunks.len() {
            let c = &self.chunks[ci];
            if c.first >= to {
                break;
            }
            let d = self.decoded(ci);
            for (fi, feed) in d.feeds.iter().enumerate() {
                let at = c.first + d.starts[fi];
                let n = elements(feed);
                if at >= to {
                    break;
                }
                if at + n <= from {
                    continue;
                }
                match feed {
                    Feed::Events { events, lost } if at < from || at + n > to => {
                        let lo = from.saturating_sub(at) as usize;
                        let hi = ((to - at) as usize).min(events.len());
                        let part = Feed::Events {
                            events: events[lo.min(hi)..hi].to_vec(),
                            lost: if at >= from { lost.clone() } else { Vec::new() },
                        };
                        m.apply(&part);
                    }
                    _ => m.apply(feed),
                }
            }
        }
    }

    /// The view at position `p`.
    pub fn view_at(&self, p: Position) -> View {
        self.monitor_at(p).view()
    }

    /// The position and view at time `t`.
    pub fn seek(&self, t: u64) -> (Position, View) {
        let p = self.position_at(t);
        (p, self.view_at(p))
    }

    /// The element at position `p - 1`, if it is a lock event.
    pub fn event_at(&self, p: Position) -> Option<LockEvent> {
        let ci = self.chunk_of(p)?;
        self.decoded(ci)
            .event((p - 1 - self.chunks[ci].first) as usize)
    }

    /// The next position (after `from`, or before it) whose last element is an event, of
    /// `hart` when given.
    pub fn step_event(
        &self,
        from: Position,
        hart: Option<HartId>,
        dir: Direction,
    ) -> Option<Position> {
        // Element k of a chunk (0-based) leads to position first + k + 1.
        match dir {
            Direction::Forward => {
                let mut ci = self.chunks.partition_point(|c| c.first + c.len <= from);
                while ci < self.chunks.len() {
                    let c = &self.chunks[ci];
                    let d = self.decoded(ci);
                    let lo = from.saturating_sub(c.first) as usize;
                    if let Some(k) = (lo..d.times.len()).find(|&k| d.is_event(k, hart)) {
                        return Some(c.first + k as u64 + 1);
                    }
                    ci += 1;
                }
                None
            }
            Direction::Back => {
                // Positions below `from`: elements up to index from - 2.
                let last = from.checked_sub(2)?.min(self.len().checked_sub(1)?);
                let mut ci = self.chunks.partition_point(|c| c.first + c.len <= last);
                loop {
                    let c = self.chunks.get(ci)?;
                    let d = self.decoded(ci);
                    let hi = ((last + 1).saturating_sub(c.first) as usize).min(d.times.len());
                    if let Some(k) = (0..hi).rev().find(|&k| d.is_event(k, hart)) {
                        return Some(c.first + k as u64 + 1);
                    }
                    ci = ci.checked_sub(1)?;
                }
            }
        }
    }

    /// The position just after the next (or previous) snapshot.
    pub fn step_snapshot(&self, from: Position, dir: Direction) -> Option<Position> {
        match dir {
            Direction::Forward => self.snapshots.iter().find(|(p, _)| *p > from).map(|s| s.0),
            Direction::Back => self
                .snapshots
                .iter()
                .rev()
                .find(|(p, _)| *p < from)
                .map(|s| s.0),
        }
    }

    /// The next (or previous) mark, of `kind` when given.
    pub fn step_mark(
        &self,
        from: Position,
        kind: Option<MarkKind>,
        dir: Direction,
    ) -> Option<&Mark> {
        let ok = |m: &&Mark| kind.is_none_or(|k| m.kind == k);
        match dir {
            Direction::Forward => self.marks.iter().filter(ok).find(|m| m.position > from),
            Direction::Back => self
                .marks
                .iter()
                .rev()
                .filter(ok)
                .find(|m| m.position < from),
        }
    }

    /// Up to `before` events before position `p` (the last applied included) and `after` after
    /// it, with the position each one leads to.
    pub fn events_around(
        &self,
        p: Position,
        before: usize,
        after: usize,
    ) -> Vec<(Position, LockEvent)> {
        let mut back = Vec::new();
        let mut q = p + 1;
        while back.len() < before {
            match self.step_event(q, None, Direction::Back) {
                Some(x) => {
                    back.push((x, self.event_at(x).expect("an event position")));
                    q = x;
                }
                None => break,
            }
        }
        back.reverse();
        let mut q = p;
        for _ in 0..after {
            match self.step_event(q, None, Direction::Forward) {
                Some(x) => {
                    back.push((x, self.event_at(x).expect("an event position")));
                    q = x;
                }
                None => break,
            }
        }
        back
    }
}
