//! Replaying a recording on the timeline: the bar, the cursor, ranges and their deltas, and
//! what each timeline key does, on sample recordings of the real kernel (`traces/`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use crossterm::event::{
    Event as Term, KeyCode, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use lockscope_engine::analysis::Verdict;
use lockscope_engine::model::EventKind;
use lockscope_engine::recording::{MarkKind, Recording, Timeline, TimelineOptions};
use lockscope_engine::Symbols;
use lockscope_tui::event::Event;
use lockscope_tui::replay::{run_replay_with, At, Player, Replayer};
use lockscope_tui::{App, Effect, Options, Tab, Theme};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn traces() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traces")
}

/// The kernel a sample was recorded with: inside it, or next to it.
fn symbols(rec: &Recording) -> Arc<Symbols> {
    let s = match rec.kernel_elf() {
        Ok(elf) => Symbols::from_bytes(traces().join("lockscope-kernel.elf"), elf).unwrap(),
        Err(_) => Symbols::load(traces().join("lockscope-kernel.elf")).unwrap(),
    };
    assert_eq!(
        rec.header().kernel_fingerprint.as_deref(),
        Some(s.fingerprint().as_str()),
        "traces/ holds the kernel the samples were recorded with"
    );
    Arc::new(s)
}

fn open(sample: &str) -> (Recording, Arc<Symbols>) {
    let rec = Recording::open(&traces().join(format!("{sample}.lsrec"))).unwrap();
    let s = symbols(&rec);
    (rec, s)
}

/// A replay of `sample` with the cursor at `at`, and a dashboard on it.
fn replay(sample: &str, at: At) -> (Replayer, App) {
    let (rec, s) = open(sample);
    let tl = Timeline::open_with(rec, Some(s), TimelineOptions::default(), &mut |_, _| {}).unwrap();
    let mut r = Replayer::new(tl, at, 0);
    let mut a = App::new(Theme::mono(), false);
    a.take_frame(r.frame());
    (r, a)
}

/// Presses `e`; a request goes to the replay and its new frame to the dashboard.
fn press(r: &mut Replayer, a: &mut App, e: Term) -> Effect {
    let view = a.replay_view().unwrap().clone();
    let Some(action) = a.action_for(&e) else {
        return Effect::None;
    };
    let effect = a.update(action, &view);
    if let Effect::Replay(req) = effect {
        r.apply(req);
        a.take_frame(r.frame());
    }
    effect
}

fn typed(r: &mut Replayer, a: &mut App, text: &str) {
    for c in text.chars() {
        press(r, a, ch(c));
    }
    press(r, a, key(KeyCode::Enter));
}

fn shown(a: &App, w: u16, h: u16) -> String {
    screen(a, a.replay_view().unwrap(), w, h)
}

fn mouse(kind: MouseEventKind, column: u16, row: u16) -> Term {
    Term::Mouse(MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

#[test]
fn the_bar_shows_the_recording_its_marks_and_the_cursor() {
    let (mut r, mut a) = replay("bucket-order-deadlock", At::End);
    let tl = r.timeline();
    assert!(tl.marks().iter().any(|m| m.kind == MarkKind::Deadlock));
    // Opened at the end: the deadlock, and the Deadlock view opened by itself.
    assert_eq!(a.tab, Tab::Deadlock);
    let s = shown(&a, 120, 40);
    insta::assert_snapshot!("replay_deadlock_end_120x40", s);
    assert!(s.contains("D"), "the deadlock mark");
    // Mid-recording: the state at the cursor, not at the end.
    let mid = r.timeline().len() / 2;
    r.apply(lockscope_tui::replay::Request::Seek(At::Position(mid)));
    a.take_frame(r.frame());
    press(&mut r, &mut a, ch('4'));
    let s = shown(&a, 120, 40);
    insta::assert_snapshot!("replay_deadlock_mid_events_120x40", s);
    let f = &a.replay.as_ref().unwrap().frame;
    assert!(f.cursor < r.timeline().len());
    assert_ne!(
        f.view.check.verdict,
        Verdict::Deadlock,
        "no deadlock yet mid-way"
    );
    assert!(f.view.events_total < r.timeline().view_at(r.timeline().len()).events_total);
}

/// The "done when": open a recorded hang, jump to the deadlock, step back event by
/// event on a deadlocked hart to the acquisition that closed the cycle.
#[test]
fn jump_to_the_deadlock_and_step_back_to_the_acquisition_that_closed_it() {
    let (mut r, mut a) = replay("bucket-order-deadlock", At::Start);
    // m: cycle the mark kinds to "deadlock"; } jumps to it.
    while a.replay.as_ref().unwrap().mark_kind != Some(MarkKind::Deadlock) {
        press(&mut r, &mut a, ch('m'));
    }
    assert!(a.message.as_deref().unwrap().contains("deadlock"));
    press(&mut r, &mut a, ch('}'));
    let f = a.replay.as_ref().unwrap().frame.clone();
    let mark = r
        .timeline()
        .marks()
        .iter()
        .find(|m| m.kind == MarkKind::Deadlock)
        .unwrap()
        .clone();
    assert_eq!(f.cursor, mark.position);
    assert_eq!(f.view.check.verdict, Verdict::Deadlock);
    let cycle = f.view.check.deadlocks[0].clone();
    // The edge whose waiter's spin closed the cycle: step back on that hart (Harts view,
    // select it, then <) until its spin on the lock it waits for.
    press(&mut r, &mut a, ch('2'));
    let edge = &cycle.edges[0];
    let row = f
        .view
        .report
        .harts
        .iter()
        .position(|h| h.hart == edge.waiter)
        .unwrap();
    for _ in 0..row {
        press(&mut r, &mut a, ch('j'));
    }
    let mut steps = 0;
    let found = loop {
        press(&mut r, &mut a, ch('<'));
        steps += 1;
        let f = &a.replay.as_ref().unwrap().frame;
        let e = f.event.expect("each step lands on an event");
        assert_eq!(e.hart, edge.waiter, "< steps on the selected hart only");
        if e.lock == edge.lock && e.kind == EventKind::Spin {
            break f.clone();
        }
        assert!(
            steps < 10_000,
            "no spin of hart {} on {}",
            edge.waiter,
            edge.lock
        );
    };
    assert!(found.cursor < mark.position);
    // The Events view shows the cursor's event highlighted, with what came after it.
    press(&mut r, &mut a, ch('4'));
    let s = shown(&a, 120, 40);
    assert!(s.contains("at the cursor: hart"), "{s}");
    insta::assert_snapshot!("replay_deadlock_stepped_back_120x40", s);
}

/// A time `f` of the way through the sample `name`, in milliseconds from its start.
fn ms_into(name: &str, f: f64) -> u64 {
    let tl = Timeline::open(&traces().join(format!("{name}.lsrec")), None).unwrap();
    (tl.duration_ns() as f64 * f / 1e6) as u64
}

#[test]
fn steps_by_event_snapshot_and_time() {
    let (mid, quarter) = (
        ms_into("kalloc-global", 0.5),
        ms_into("kalloc-global", 0.25),
    );
    let (mut r, mut a) = replay("kalloc-global", At::FromStart(mid * 1_000_000));
    let p0 = a.replay.as_ref().unwrap().frame.cursor;
    press(&mut r, &mut a, ch('.'));
    let p1 = a.replay.as_ref().unwrap().frame.cursor;
    assert!(p1 > p0);
    assert!(a.replay.as_ref().unwrap().frame.event.is_some());
    press(&mut r, &mut a, ch(','));
    assert!(a.replay.as_ref().unwrap().frame.cursor < p1);
    // ] to the next snapshot: the view's time is that snapshot's.
    press(&mut r, &mut a, ch(']'));
    let f = a.replay.as_ref().unwrap().frame.clone();
    assert_eq!(f.view.report.time_ns, Some(f.cursor_ns));
    press(&mut r, &mut a, ch('['));
    assert!(a.replay.as_ref().unwrap().frame.cursor < f.cursor);
    // g then a time: target time, as the views show it; +/- from the cursor.
    let start = r.timeline().start_ns();
    let at = (start + quarter * 1_000_000) / 1000 * 1000;
    press(&mut r, &mut a, ch('g'));
    typed(&mut r, &mut a, &format!("{}us", at / 1000));
    let f = a.replay.as_ref().unwrap().frame.clone();
    assert!(f.cursor_ns <= at);
    assert!(r.timeline().time_of(f.cursor + 1) > at);
    press(&mut r, &mut a, ch('g'));
    typed(&mut r, &mut a, &format!("+{quarter}ms"));
    let g = a.replay.as_ref().unwrap().frame.clone();
    assert!(g.cursor_ns > f.cursor_ns && g.cursor_ns <= f.cursor_ns + quarter * 1_000_000);
    press(&mut r, &mut a, ch('g'));
    typed(&mut r, &mut a, "soon");
    assert!(a.message.as_deref().unwrap().contains("is not a time"));
    press(&mut r, &mut a, ch('g'));
    typed(&mut r, &mut a, "end");
    assert_eq!(a.replay.as_ref().unwrap().frame.cursor, r.timeline().len());
}

#[test]
fn a_range_shows_every_counter_as_its_change_over_the_range() {
    let (quarter, half) = (
        ms_into("kalloc-global", 0.25),
        ms_into("kalloc-global", 0.5),
    );
    let (mut r, mut a) = replay("kalloc-global", At::FromStart(quarter * 1_000_000));
    press(&mut r, &mut a, ch('v'));
    assert!(a.message.as_deref().unwrap().contains("range from"));
    let from = a.replay.as_ref().unwrap().frame.cursor;
    press(&mut r, &mut a, ch('g'));
    typed(&mut r, &mut a, &format!("+{half}ms"));
    press(&mut r, &mut a, ch('v'));
    let f = a.replay.as_ref().unwrap().frame.clone();
    let range = f.range.expect("a range");
    assert_eq!(range.from, from);
    // The Locks view's numbers are the lab's counts over the range.
    let want = r.timeline().range_delta(range.from, range.to);
    let kmem = f
        .view
        .report
        .locks
        .iter()
        .find(|l| l.name == "kmem")
        .unwrap();
    let d = want.locks.iter().find(|l| l.name == "kmem").unwrap();
    assert_eq!((kmem.acquires, kmem.spins), (d.acquires, d.spins));
    assert!(kmem.acquires > 0);
    let whole = r.timeline().view_at(range.to);
    let total = whole
        .report
        .locks
        .iter()
        .find(|l| l.name == "kmem")
        .unwrap();
    assert!(kmem.acquires < total.acquires);
    press(&mut r, &mut a, ch('1'));
    let s = shown(&a, 120, 40);
    assert!(s.contains("Δ "), "{s}");
    insta::assert_snapshot!("replay_kalloc_global_range_120x40", s);
    // V clears it: totals again.
    press(&mut r, &mut a, ch('V'));
    let f = a.replay.as_ref().unwrap().frame.clone();
    assert!(f.range.is_none());
    let kmem = f
        .view
        .report
        .locks
        .iter()
        .find(|l| l.name == "kmem")
        .unwrap();
    assert_eq!(kmem.acquires, total.acquires);
}

#[test]
fn the_mouse_seeks_on_the_bar_and_a_drag_selects_a_range() {
    let (mut r, mut a) = replay("kalloc-global", At::End);
    let _ = shown(&a, 100, 30);
    // The bar is the second row inside the timeline block, above the status line.
    let (bar_y, x0, w) = (30 - 3, 1u16, 98u16);
    press(
        &mut r,
        &mut a,
        mouse(MouseEventKind::Down(MouseButton::Left), x0 + w / 4, bar_y),
    );
    let f = a.replay.as_ref().unwrap().frame.clone();
    let (start, span) = (r.timeline().start_ns(), r.timeline().duration_ns());
    let quarter = start + span / 4;
    let tol = span / w as u64 + 1;
    assert!(
        f.cursor_ns.abs_diff(quarter) <= tol,
        "{} vs {quarter}",
        f.cursor_ns
    );
    press(
        &mut r,
        &mut a,
        mouse(MouseEventKind::Drag(MouseButton::Left), x0 + w / 2, bar_y),
    );
    let s = shown(&a, 100, 30);
    assert!(s.contains("═"), "the drag is drawn: {s}");
    press(
        &mut r,
        &mut a,
        mouse(MouseEventKind::Up(MouseButton::Left), x0 + w / 2, bar_y),
    );
    let range = a.replay.as_ref().unwrap().frame.range.expect("a range");
    let half = start + span / 2;
    assert!(range.from_ns.abs_diff(quarter) <= tol && range.to_ns.abs_diff(half) <= tol);
}

#[test]
fn play_moves_the_cursor_on_and_pause_stops_it() {
    let (mut r, mut a) = replay("kalloc-global", At::Start);
    for _ in 0..2 {
        press(&mut r, &mut a, ch('+'));
    }
    assert!(a.message.as_deref().unwrap().contains("5x"));
    press(&mut r, &mut a, ch('p'));
    assert!(a.replay.as_ref().unwrap().frame.playing);
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.position() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        r.apply(lockscope_tui::replay::Request::Tick);
    }
    assert!(r.position() > 0, "playing moved on");
    assert!(r.playing(), "not at the end yet");
    press(&mut r, &mut a, ch('p'));
    assert!(!a.replay.as_ref().unwrap().frame.playing);
    let at = r.position();
    std::thread::sleep(Duration::from_millis(20));
    r.apply(lockscope_tui::replay::Request::Tick);
    assert_eq!(r.position(), at, "paused");
}

#[test]
fn timeline_keys_outside_a_replay_do_what_they_did() {
    let view = fixture("healthy");
    let a = app(Tab::Locks);
    // g is still "first", p still pauses the display.
    assert!(matches!(
        a.action_for(&ch('g')),
        Some(lockscope_tui::Action::Top)
    ));
    assert!(matches!(
        a.action_for(&ch('p')),
        Some(lockscope_tui::Action::Pause)
    ));
    assert!(a.action_for(&ch('.')).is_none());
    let s = screen(&a, &view, 80, 24);
    assert!(!s.contains("Timeline"));
}

/// The loop over a player: frames come from its thread (building progress first), keys go to
/// it, and the loop never waits for it.
#[test]
fn the_loop_shows_what_the_player_publishes() {
    let (rec, s) = open("refcnt-leak-panic");
    let player = Player::open(rec, Some(s), At::End, TimelineOptions::default()).unwrap();
    let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
    let mut a = App::new(Theme::mono(), false);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut script = vec![Event::Input(ch(',')), Event::Input(ch('q'))].into_iter();
    let options = Options {
        max_fps: f64::INFINITY,
        theme: Some(Theme::mono()),
        ..Options::default()
    };
    let stats = run_replay_with(
        &mut term,
        || {
            // Ticks until the timeline is built, then the keys.
            if player.frame().timeline.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                return Some(Event::Tick);
            }
            let e = script.next()?;
            // Let the step's frame arrive before the next key.
            std::thread::sleep(Duration::from_millis(200));
            Some(e)
        },
        &player,
        &mut a,
        &options,
    )
    .unwrap();
    assert!(stats.draws >= 2);
    let f = player.frame();
    let tl = f.timeline.as_ref().expect("built");
    assert!(f.cursor < tl.len, "the step back reached the player");
    assert_eq!(a.tab, Tab::Panic, "the panic view opened by itself");
    let s = text(term.backend().buffer());
    assert!(s.contains("Timeline"), "{s}");
}

#[test]
fn a_damaged_recording_says_so_on_the_bar() {
    let (rec, _) = open("refcnt-leak-panic");
    let src = rec.path().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cut.lsrec");
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let rec = Recording::open(&bad).unwrap();
    let tl = Timeline::open_with(rec, None, TimelineOptions::default(), &mut |_, _| {}).unwrap();
    let mut r = Replayer::new(tl, At::End, 0);
    let mut a = App::new(Theme::mono(), false);
    a.take_frame(r.frame());
    let s = shown(&a, 120, 40);
    assert!(s.contains("problem(s) reading it"), "{s}");
    let f = a.replay.as_ref().unwrap().frame.clone();
    let problems = &f.timeline.as_ref().unwrap().problems;
    assert!(
        problems.iter().any(|p| p.contains("was cut")),
        "{problems:?}"
    );
}
