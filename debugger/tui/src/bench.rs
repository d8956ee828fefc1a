//! Frame-time measurement for `cargo xtask bench`: a synthetic view of any size, built through
//! the real engine, rendered into ratatui's `TestBackend`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lockscope_engine::model::{
    EventKind, HartRun, HartSnapshot, Held, KmemList, KmemSnapshot, LockCounters, LockEvent,
    LockMeta, LockState, Snapshot, Spin, TargetConfig,
};
use lockscope_engine::{Feed, Monitor, MonitorConfig, SourceKind, View};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::app::{App, Tab};
use crate::theme::Theme;
use crate::ui;

/// Locks per class in the synthetic view.
const CLASS_SIZE: usize = 16;
const MS: u64 = 1_000_000;

/// A view of `locks` locks (classes of 16) and `harts` harts, made by feeding the engine's
/// [`Monitor`] 30 snapshots 500 ms apart and events at 8 call sites, so every column, the
/// sparklines, histograms and top sites have data. Harts hold locks; all but the last spin on
/// the next hart's lock (a chain, not a cycle). Unsymbolized: sites print as addresses.
pub fn synthetic_view(locks: usize, harts: usize) -> View {
    let harts = harts.max(1);
    let mut m = Monitor::new(MonitorConfig::default(), None, SourceKind::SharedRam)
        .expect("the default monitor configuration is valid");
    m.apply(&Feed::TraceStart {
        harts: (0..harts as u32).collect(),
    });
    let lock_id = |i: usize| (i % locks.max(1)) as u32;
    let site = |k: usize| 0x8000_2000 + 0x40 * (k as u64 % 8);
    for step in 0..30u64 {
        let t = step * 500 * MS;
        let mut events = Vec::new();
        for i in 0..locks {
            // Busier locks first, so sorting has work to do.
            let heat = ((i * 7919) % 97) as u64;
            for k in 0..(heat % 4) as usize {
                let at = t + (i as u64 * 10 + k as u64 * 3) % (400 * MS);
                let hart = ((i + k) % harts) as u32;
                let wait = 100 * (1 + heat * k as u64);
                let hold = 50 * (1 + (i as u64 % 13));
                let ev = |dt: u64, kind| LockEvent {
                    time_ns: at + dt,
                    hart,
                    lock: i as u32,
                    kind,
                    pc: site(i + k),
                    mode: None,
                    trylock: false,
                };
                events.push(ev(0, EventKind::Spin));
                events.push(ev(wait, EventKind::Acquired { contended: true }));
                events.push(ev(wait + hold, EventKind::Released));
            }
        }
        events.sort_by_key(|e| (e.hart, e.time_ns));
        m.apply(&Feed::Events {
            events,
            lost: Vec::new(),
        });
        let lock_states = (0..locks)
            .map(|i| {
                let heat = ((i * 7919) % 97) as u64;
                let acquires = (step + 1) * (10 + heat * 13);
                let contended = (step + 1) * (heat % 4);
                LockState {
                    meta: LockMeta {
                        id: i as u32,
                        name: format!("c{:02}.lock{}", i / CLASS_SIZE, i % CLASS_SIZE),
                        class: format!("c{:02}", i / CLASS_SIZE),
                    },
                    counters: LockCounters {
                        acquires,
                        contended,
                        spins: contended * (3 + heat),
                        wait_total_ns: contended * 100 * (1 + heat),
                        wait_max_ns: 100 * (1 + heat * 3),
                        hold_total_ns: acquires * 50 * (1 + i as u64 % 13),
                        hold_max_ns: 50 * (1 + i as u64 % 13) * 4,
                    },
                    holder: (i < harts * 2 && i % 2 == 0).then_some((i / 2) as u32),
                    ..Default::default()
                }
            })
            .collect();
        let hart_states = (0..harts)
            .map(|h| HartSnapshot {
                hart: h as u32,
                run: HartRun::Running,
                heartbeat: Some(step * 100 + h as u64),
                held: vec![Held {
                    lock: lock_id(h * 2),
                    pc: site(h),
                    since_ns: Some(t.saturating_sub(MS)),
                }],
                held_truncated: false,
                spinning: (h + 1 < harts).then(|| Spin {
                    lock: lock_id((h + 1) * 2),
                    pc: site(h + 1),
                    since_ns: t.saturating_sub(MS / 2),
                }),
                ops: Some(step * 1000),
                regs: None,
                ..Default::default()
            })
            .collect();
        m.apply(&Feed::Snapshot(Box::new(Snapshot {
            time_ns: t + 450 * MS,
            ticks: Some(step * 5),
            config: TargetConfig {
                bootargs: "workload=mixed".into(),
                workload: Some("mixed".into()),
                kalloc: Some("percpu".into()),
                bcache: Some("hashed".into()),
                bug: Some("none".into()),
                trace_on: true,
                nharts: harts as u32,
            },
            phase: Some("mixed".into()),
            outcome: None,
            locks: lock_states,
            harts: hart_states,
            kmem: Some(KmemSnapshot {
                mode: "percpu".into(),
                lists: (0..harts as u32)
                    .map(|h| KmemList {
                        hart: h,
                        free_pages: 1000 + h as u64 * 10,
                        allocs: step * 100,
                        frees: step * 100,
                        steals: step,
                        pages_stolen: step * 4,
                        lock: None,
                    })
                    .collect(),
                ..Default::default()
            }),
            bcache: None,
            panic: None,
            ..Default::default()
        })));
    }
    m.view()
}

/// Render times of `frames` frames of `tab` at `width` x `height`. With `fresh_data`, every
/// frame gets a view of a new generation, so the sorted and filtered rows are rebuilt each
/// time, as in a live session; without, they come from the cache, as when only a key moved.
pub fn render_frame_time(
    view: &View,
    tab: Tab,
    width: u16,
    height: u16,
    frames: usize,
    fresh_data: bool,
) -> Vec<Duration> {
    let mut next = view.clone();
    next.generation = next.generation.wrapping_add(1);
    let views = [Arc::new(view.clone()), Arc::new(next)];
    let mut app = App::new(Theme::color(), false);
    app.tab = tab;
    let mut terminal =
        Terminal::new(TestBackend::new(width, height)).expect("the test backend cannot fail");
    let mut out = Vec::with_capacity(frames);
    for i in 0..frames {
        let v = &views[if fresh_data { i % 2 } else { 0 }];
        let start = Instant::now();
        terminal
            .draw(|f| ui::render(f, &app, v))
            .expect("the test backend cannot fail");
        out.push(start.elapsed());
    }
    out
}

/// Median, 99th percentile and maximum of some durations.
pub fn summarize(samples: &[Duration]) -> (Duration, Duration, Duration) {
    let mut s = samples.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), s[s.len() - 1])
}
