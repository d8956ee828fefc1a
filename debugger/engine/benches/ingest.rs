//! Engine ingest: events per second for decoding rings out of guest memory plus analysis, on
//! one core. Run by `cargo xtask bench`; prints one line per measurement.

use std::time::{Duration, Instant};

use lockscope_abi::EventKind;
use lockscope_engine::analysis::Analyzer;
use lockscope_engine::sources::abi::synthetic::SyntheticKernel;

const HARTS: u32 = 4;
const ENTRIES: u32 = lockscope_abi::RING_ENTRIES as u32;

/// Full rings with the mix kalloctest and bcachetest produce: mostly uncontended
/// acquire/release pairs, some contended ones, some nested (a steal under a bucket lock).
fn kernel() -> SyntheticKernel {
    let mut k = SyntheticKernel::new(HARTS, ENTRIES);
    for h in 0..HARTS {
        let own = h as u16 % 2;
        let mut ts = 0u64;
        let mut n = 0;
        let mut i = 0u32;
        while n + 5 <= ENTRIES {
            ts += 7;
            if i % 8 == 7 {
                k.push(h, EventKind::Spin, 2, ts);
                k.push(h, EventKind::AcquiredContended, 2, ts + 3);
                k.push(h, EventKind::Acquired, own, ts + 4);
                k.push(h, EventKind::Released, own, ts + 5);
                k.push(h, EventKind::Released, 2, ts + 6);
                n += 5;
            } else {
                k.push(h, EventKind::Acquired, own, ts);
                k.push(h, EventKind::Released, own, ts + 2);
                n += 2;
            }
            i += 1;
        }
    }
    k
}

fn measure(name: &str, min: Duration, mut round: impl FnMut() -> u64) -> f64 {
    // One round to warm caches and allocations.
    round();
    let start = Instant::now();
    let mut events = 0u64;
    while start.elapsed() < min {
        events += round();
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    println!("ingest: {name}: {:.1} M events/s", rate / 1e6);
    rate
}

fn main() {
    let min = Duration::from_millis(
        std::env::var("LOCKSCOPE_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );
    let mut k = kernel();
    let mut events = Vec::with_capacity((HARTS * ENTRIES) as usize);

    let decode = measure("decode (ring copy + validation)", min, || {
        let mut r = k.open().expect("a valid synthetic image");
        events.clear();
        r.drain(&mut k.image, usize::MAX / 2, &mut events).unwrap();
        events.len() as u64
    });

    let mut r = k.open().unwrap();
    events.clear();
    r.drain(&mut k.image, usize::MAX / 2, &mut events).unwrap();
    let batch = events.clone();
    let mut analyzer = Analyzer::default();
    let analysis = measure("analysis", min, || {
        analyzer.ingest(&batch);
        batch.len() as u64
    });

    let mut analyzer = Analyzer::default();
    let both = measure("decode + analysis", min, || {
        let mut r = k.open().unwrap();
        events.clear();
        r.drain(&mut k.image, usize::MAX / 2, &mut events).unwrap();
        analyzer.ingest(&events);
        events.len() as u64
    });
    println!(
        "ingest: summary: decode+analysis {:.1} M events/s on one core (target >= 20); decode alone {:.1}, analysis alone {:.1}",
        both / 1e6,
        decode / 1e6,
        analysis / 1e6
    );
}
