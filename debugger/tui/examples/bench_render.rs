//! Frame render time with 1,024 locks and 8 harts (the issue's budget: 5 ms a frame).
//!
//! ```text
//! cargo run --release -p lockscope-tui --example bench_render
//! ```

use lockscope_tui::bench::{render_frame_time, summarize, synthetic_view};
use lockscope_tui::Tab;

fn main() {
    let build = std::time::Instant::now();
    let view = synthetic_view(1024, 8);
    eprintln!(
        "synthetic view: {} locks, {} harts, {} classes (built in {:?})",
        view.report.locks.len(),
        view.report.harts.len(),
        view.report.classes.len(),
        build.elapsed()
    );
    println!("tab       size     data    median      p99      max");
    for tab in Tab::ALL {
        for (w, h) in [(80, 24), (200, 60)] {
            for fresh in [false, true] {
                let t = render_frame_time(&view, tab, w, h, 300, fresh);
                let (med, p99, max) = summarize(&t);
                println!(
                    "{:<9} {:>3}x{:<3}  {:<6} {:>8.3}ms {:>7.3}ms {:>7.3}ms",
                    tab.title().split(' ').next().unwrap_or(""),
                    w,
                    h,
                    if fresh { "new" } else { "same" },
                    med.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3,
                    max.as_secs_f64() * 1e3
                );
            }
        }
    }
}
