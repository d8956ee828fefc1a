//! A replay on its own thread: the timeline is built there (with progress), requests are
//! applied there, and frames are published for the dashboard to take, so the dashboard never
//! waits on the recording.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockscope_engine::monitor::{Monitor, MonitorConfig, SourceKind};
use lockscope_engine::recording::{Recording, Timeline, TimelineOptions};
use lockscope_engine::Symbols;

use super::replayer::{At, Frame, Replayer, Request};

/// How often a playing replay moves on, and how often progress is published while building.
const TICK: Duration = Duration::from_millis(50);

struct Shared {
    frame: Mutex<Arc<Frame>>,
    generation: AtomicU64,
}

impl Shared {
    fn publish(&self, f: Arc<Frame>) {
        let g = f.generation;
        *self.frame.lock().unwrap_or_else(|e| e.into_inner()) = f;
        self.generation.store(g, Ordering::Release);
    }
}

/// A replay running on its own thread.
pub struct Player {
    shared: Arc<Shared>,
    tx: Sender<Request>,
}

impl Player {
    /// Starts building the timeline of `rec` on a thread; the cursor starts at `at`. Frames
    /// are published from the start: first the building progress, then the replay.
    pub fn open(
        rec: Recording,
        symbols: Option<Arc<Symbols>>,
        at: At,
        options: TimelineOptions,
    ) -> std::io::Result<Player> {
        let empty = Monitor::new(MonitorConfig::default(), symbols.clone(), SourceKind::Trace)
            .map(|m| m.view())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let total: u64 = rec
            .feed_chunks()
            .iter()
            .map(|c| c.chunk.header.stored_len as u64)
            .sum();
        let mut first = Frame::waiting(empty);
        first.generation = 1;
        first.loading = Some((0, total));
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(1),
            frame: Mutex::new(Arc::new(first)),
        });
        let (tx, rx) = mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("lockscope-replay".into())
            .spawn(move || run(s, rx, rec, symbols, at, options))?;
        Ok(Player { shared, tx })
    }

    /// The newest frame.
    pub fn frame(&self) -> Arc<Frame> {
        self.shared
            .frame
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The newest frame's generation: cheap to poll.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Sends a request; false when the replay thread has ended.
    pub fn send(&self, r: Request) -> bool {
        self.tx.send(r).is_ok()
    }
}

fn run(
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    rec: Recording,
    symbols: Option<Arc<Symbols>>,
    at: At,
    options: TimelineOptions,
) {
    let mut generation = 1;
    let mut last = Instant::now();
    let loading = shared
        .frame
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let tl = Timeline::open_with(rec, symbols, options, &mut |done, total| {
        if last.elapsed() >= TICK {
            last = Instant::now();
            generation += 1;
            let mut f = (*loading).clone();
            f.generation = generation;
            f.loading = Some((done, total));
            shared.publish(Arc::new(f));
        }
    });
    let tl = match tl {
        Ok(tl) => tl,
        Err(e) => {
            let mut f = (*loading).clone();
            f.generation = generation + 1;
            f.loading = None;
            f.failed = Some(e.to_string());
            shared.publish(Arc::new(f));
            return;
        }
    };
    let mut r = Replayer::new(tl, at, generation);
    shared.publish(r.frame());
    let mut next_tick = Instant::now() + TICK;
    loop {
        let wait = if r.playing() {
            next_tick.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        match rx.recv_timeout(wait) {
            Ok(req) => {
                r.apply(req);
                // Everything queued in the meantime, then one frame.
                while let Ok(req) = rx.try_recv() {
                    r.apply(req);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if r.playing() && Instant::now() >= next_tick {
            r.apply(Request::Tick);
            next_tick = Instant::now() + TICK;
        }
        shared.publish(r.frame());
    }
}
