//! The UI loop: its redraw policy, pause, commands to the session, a failing terminal, and
//! views it must survive. Views come from real recordings.

mod common;

use std::sync::Arc;

use common::*;
use crossterm::event::KeyCode;
use lockscope_engine::monitor::View;
use lockscope_engine::session::{Command, SessionHandle};
use lockscope_tui::event::Event;
use lockscope_tui::{run_with, App, LoopStats, Options, Tab, Theme};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// Runs the loop over scripted steps; each step may publish before yielding its event.
fn run_script(
    handle: &SessionHandle,
    app: &mut App,
    options: &Options,
    steps: Vec<(Option<Arc<View>>, Event)>,
) -> (LoopStats, String) {
    let mut term = Terminal::new(TestBackend::new(120, 30)).unwrap();
    let mut steps = steps.into_iter();
    let stats = run_with(
        &mut term,
        || {
            let (publish, event) = steps.next()?;
            if let Some(v) = publish {
                handle.publish((*v).clone());
            }
            Some(event)
        },
        handle,
        app,
        options,
    )
    .unwrap();
    (stats, text(term.backend().buffer()))
}

fn uncapped() -> Options {
    Options {
        max_fps: f64::INFINITY,
        theme: Some(Theme::mono()),
        ..Options::default()
    }
}

#[test]
fn idle_ticks_do_not_redraw_and_new_data_does() {
    let (handle, _rx) = SessionHandle::new((*fixture("healthy")).clone());
    let mut a = app(Tab::Locks);
    let mut steps: Vec<(Option<Arc<View>>, Event)> = (0..50).map(|_| (None, Event::Tick)).collect();
    steps.push((Some(fixture("kalloc_global")), Event::Tick));
    steps.extend((0..50).map(|_| (None, Event::Tick)));
    steps.push((None, Event::Input(ch('j'))));
    steps.push((None, Event::Input(ch('q'))));
    let (stats, screen) = run_script(&handle, &mut a, &uncapped(), steps);
    // The first frame, one for the new view, one for the key; q quits without drawing.
    assert_eq!(stats.draws, 3, "{stats:?}");
    assert_eq!(stats.ticks, 101);
    assert_eq!(stats.views, 1);
    assert!(screen.contains("kalloc=global"));
}

#[test]
fn new_data_redraws_at_most_at_the_frame_rate() {
    let (handle, _rx) = SessionHandle::new((*fixture("healthy")).clone());
    let mut a = app(Tab::Locks);
    // One frame per 1000 s: no data frame can be due during the test.
    let options = Options {
        max_fps: 0.001,
        ..uncapped()
    };
    let steps = vec![
        (Some(fixture("kalloc_global")), Event::Tick),
        (Some(fixture("deadlock")), Event::Tick),
        (None, Event::Input(ch('q'))),
    ];
    let (stats, _) = run_script(&handle, &mut a, &options, steps);
    assert_eq!(stats.views, 2);
    assert_eq!(stats.draws, 1, "{stats:?}");
}

#[test]
fn pause_freezes_the_display_while_the_session_keeps_publishing() {
    let (handle, _rx) = SessionHandle::new((*fixture("healthy")).clone());
    let mut a = app(Tab::Locks);
    let steps = vec![
        (None, Event::Input(ch('p'))),
        (Some(fixture("kalloc_global")), Event::Tick),
        (None, Event::Input(ch('q'))),
    ];
    let (stats, screen) = run_script(&handle, &mut a, &uncapped(), steps);
    assert_eq!(stats.views, 1);
    assert!(
        screen.contains("DISPLAY PAUSED (guest keeps running"),
        "{screen}"
    );
    assert!(
        screen.contains("kmem0"),
        "the frozen view is gone:\n{screen}"
    );
    assert!(!screen.contains("kalloc=global"));
    // p again shows the newest view.
    let steps = vec![(None, Event::Input(ch('p'))), (None, Event::Input(ch('q')))];
    let (_, screen) = run_script(&handle, &mut a, &uncapped(), steps);
    assert!(screen.contains("kalloc=global"), "{screen}");
    assert!(!screen.contains("PAUSED"));
}

#[test]
fn the_loop_sends_interrupt_to_the_session_and_ends_on_q() {
    let (handle, rx) = SessionHandle::new((*fixture("healthy")).clone());
    let mut a = App::new(Theme::mono(), handle.controllable());
    let steps = vec![(None, Event::Input(ch('i'))), (None, Event::Input(ch('q')))];
    let (stats, screen) = run_script(&handle, &mut a, &uncapped(), steps);
    assert_eq!(rx.try_recv(), Ok(Command::Interrupt));
    assert!(rx.try_recv().is_err());
    assert_eq!(stats.inputs, 2);
    assert!(screen.contains("interrupting the guest"));
}

#[test]
fn a_failing_terminal_ends_the_loop_with_its_error() {
    let (handle, _rx) = SessionHandle::new((*fixture("healthy")).clone());
    let mut a = app(Tab::Locks);
    let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let mut once = Some(Event::Failed("stdin closed".into()));
    let err = run_with(&mut term, || once.take(), &handle, &mut a, &uncapped()).unwrap_err();
    assert!(err.to_string().contains("stdin closed"));
}

#[test]
fn inconsistent_views_render_without_panicking() {
    use lockscope_engine::analysis::{HeldRow, Site};
    for name in ["deadlock", "bget_no_buffers", "kalloc_global"] {
        let mut v = (*fixture(name)).clone();
        // Ids no longer match positions; references point at nothing.
        v.report.locks.reverse();
        for l in &mut v.report.locks {
            l.waiters.push(99);
            l.holder = Some(42);
            l.top_sites.push(Site {
                pc: 1,
                count: u64::MAX,
                wait_total_ns: u64::MAX,
                wait_max_ns: u64::MAX,
            });
            l.history_contended = vec![u64::MAX, 0, 1];
            l.contention_pct = Some(f64::NAN);
        }
        for c in &mut v.report.classes {
            c.locks.push(12345);
        }
        for h in &mut v.report.harts {
            h.held.push(HeldRow {
                lock: 999,
                name: "ghost".into(),
                pc: 0,
                since_ns: None,
                held_for_ns: Some(u64::MAX),
            });
        }
        for e in &mut v.recent_events {
            e.lock = 60_000;
            e.hart = 77;
            e.time_ns = u64::MAX;
        }
        for d in &mut v.report.deadlocks {
            d.edges[0].holder = 55;
            d.edges[0].lock = 9_999;
        }
        for b in &mut v.bufs {
            b.bucket = Some(1_000);
            b.last_use_ticks = u64::MAX;
        }
        if let Some(bc) = &mut v.report.bcache {
            bc.buckets[0].nbuf = u32::MAX;
            bc.buckets[0].hit_rate = Some(f64::INFINITY);
        }
        v.places.clear();
        v.report.time_ns = Some(u64::MAX);
        v.ticks = Some(0);
        let v = Arc::new(v);
        for tab in Tab::ALL {
            for (w, h) in [(80, 24), (160, 48)] {
                let mut a = app(tab);
                let _ = screen(&a, &v, w, h);
                for k in [KeyCode::Enter, KeyCode::Char('c'), KeyCode::Char('G')] {
                    press(&mut a, &v, key(k));
                    let _ = screen(&a, &v, w, h);
                }
            }
        }
    }
}
