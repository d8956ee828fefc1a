//! The dashboard's replay path on a long recording (`cargo xtask bench recording` runs it on
//! the engine's 10-minute recording): opening it, then seeks, steps and a range as the
//! dashboard asks for them, each timed until its frame (the view at the cursor, the cursor's
//! event and the next ones) is built, and one frame drawn.
//!
//! `cargo run --release -p lockscope-tui --example bench_replay -- RECORDING`

use std::time::{Duration, Instant};

use lockscope_engine::recording::{Direction, Recording, Timeline, TimelineOptions};
use lockscope_tui::replay::{At, Replayer, Request};
use lockscope_tui::{App, Theme};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// Issue 12's target for a seek anywhere in a 10-minute recording.
const MAX_SEEK: Duration = Duration::from_millis(100);

fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 11
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and worst.
fn summary(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], *v.last().expect("samples"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: bench_replay RECORDING")?;
    let t = Instant::now();
    let tl = Timeline::open_with(
        Recording::open(path.as_ref())?,
        None,
        TimelineOptions::default(),
        &mut |_, _| {},
    )?;
    let open = t.elapsed();
    let (start, span) = (tl.start_ns(), tl.duration_ns().max(1));
    let mut r = Replayer::new(tl, At::End, 0);
    println!(
        "  the dashboard's replay of it: timeline built in {:.1} s",
        open.as_secs_f64()
    );
    let mut x = 777u64;
    let mut seeks = Vec::new();
    for _ in 0..40 {
        let at = start + lcg(&mut x) % span;
        let t = Instant::now();
        r.apply(Request::Seek(At::Time(at)));
        std::hint::black_box(r.frame());
        seeks.push(t.elapsed());
    }
    let (median, worst) = summary(seeks);
    println!(
        "    seek to a random time, frame built (view, cursor event, next {} events): median {:.1} ms, worst {:.1} ms (target at most {} ms) {}",
        lockscope_tui::replay::UPCOMING,
        ms(median),
        ms(worst),
        MAX_SEEK.as_millis(),
        if worst <= MAX_SEEK { "OK" } else { "OVER" }
    );
    for (what, dir) in [("back", Direction::Back), ("forward", Direction::Forward)] {
        let mut steps = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            r.apply(Request::StepEvent { hart: None, dir });
            std::hint::black_box(r.frame());
            steps.push(t.elapsed());
        }
        let (median, worst) = summary(steps);
        println!(
            "    one event {what}, frame built: median {:.1} ms, worst {:.1} ms",
            ms(median),
            ms(worst)
        );
    }
    let t = Instant::now();
    r.apply(Request::Select(
        At::Time(start + span / 4),
        At::Time(start + span / 2),
    ));
    std::hint::black_box(r.frame());
    println!(
        "    a range over a quarter of it (every counter's delta), frame built: {:.1} ms",
        ms(t.elapsed())
    );
    let mut app = App::new(Theme::mono(), false);
    app.take_frame(r.frame());
    let view = app.replay_view().cloned().expect("a frame");
    let mut term = Terminal::new(TestBackend::new(160, 48))?;
    let t = Instant::now();
    term.draw(|f| lockscope_tui::render(f, &app, &view))?;
    println!(
        "    drawing that frame at 160x48: {:.1} ms",
        ms(t.elapsed())
    );
    Ok(())
}
