//! The measurements of `cargo xtask bench recording` (run in release mode by xtask, which
//! records the sessions first): `bench_recording DIR` reads `DIR/kalloctest.lsrec`,
//! `DIR/bcachetest.lsrec`, `DIR/mixed.lsrec` (recorded by `lockscope check --record`) and
//! `DIR/guest-ram` (QEMU's RAM file after kalloctest).
//!
//! Version 2 against version 1 side by side in one run (the same feeds written both ways):
//! bytes per event and the writer's time per event; seeking in a 10-minute recording (real
//! `workload=mixed` feeds repeated, time and counters carried on), left in
//! `DIR/ten-minutes.lsrec` for the dashboard's replay benchmark; saving and reading back a real
//! guest's RAM at a stop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockscope_engine::feed::Feed;
use lockscope_engine::memory::ByteImage;
use lockscope_engine::recording::{
    Recording, RecordingHeader, RecordingWriter, Timeline, TimelineOptions, WriterOptions,
};
use lockscope_engine::trace::{TraceHeader, TraceWriter};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(format!($($t)*).into()) };
}

/// Targets from issue 12.
const MAX_BYTES_PER_EVENT: f64 = 4.0;
const MAX_SEEK: Duration = Duration::from_millis(100);
const TEN_MINUTES_NS: u64 = 600_000_000_000;

/// A recorded session's feeds, and the header a version-1 trace of it would have.
fn read_recorded(path: &Path) -> Result<(TraceHeader, Vec<Feed>)> {
    let rec = Recording::open(path)?;
    let h = rec.header();
    let v1 = TraceHeader {
        abi_version: h.abi_version,
        kernel: h.kernel_name.as_ref().map(PathBuf::from),
        kernel_fingerprint: h.kernel_fingerprint.clone(),
        smp: h.smp,
        bootargs: h.bootargs.clone(),
        source: h.source.clone(),
    };
    Ok((v1, rec.feeds().collect()))
}

fn events(feeds: &[Feed]) -> u64 {
    feeds
        .iter()
        .map(|f| match f {
            Feed::Events { events, .. } => events.len() as u64,
            _ => 0,
        })
        .sum()
}

fn v2_header(h: &TraceHeader) -> RecordingHeader {
    let mut r = RecordingHeader::new(h.smp, &h.bootargs, &h.source);
    r.abi_version = h.abi_version;
    r.kernel_fingerprint = h.kernel_fingerprint.clone();
    r
}

/// Writes `feeds` in version 1; returns the time taken and the bytes written.
fn write_v1(h: &TraceHeader, feeds: &[Feed], out: &Path) -> Result<(Duration, u64)> {
    let t = Instant::now();
    let mut w = TraceWriter::create(out, h)?;
    for f in feeds {
        w.write(f)?;
    }
    w.flush()?;
    drop(w);
    Ok((t.elapsed(), std::fs::metadata(out)?.len()))
}

fn write_v2(h: &RecordingHeader, feeds: &[Feed], out: &Path) -> Result<(Duration, u64)> {
    let t = Instant::now();
    let mut w = RecordingWriter::create(out, h, WriterOptions::default())?;
    for f in feeds {
        w.write(f)?;
    }
    let stats = w.finish()?;
    Ok((t.elapsed(), stats.bytes))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Sizes and writer cost of both formats on one real session.
fn formats(name: &str, recorded: &Path, dir: &Path) -> Result<()> {
    let (h, feeds) = read_recorded(recorded)?;
    let n = events(&feeds);
    if n == 0 {
        bail!("{name}: the recording has no events");
    }
    let span_ns = feeds
        .iter()
        .filter_map(|f| match f {
            Feed::Snapshot(s) => Some(s.time_ns),
            _ => None,
        })
        .fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let h2 = v2_header(&h);
    let (mut t1, mut t2) = (Duration::MAX, Duration::MAX);
    let (mut b1, mut b2) = (0, 0);
    // Alternate the two writers, best of three each: the machine is noisy.
    for _ in 0..3 {
        let (t, b) = write_v1(&h, &feeds, &dir.join(format!("{name}.v1.lstrace")))?;
        (t1, b1) = (t1.min(t), b);
        let (t, b) = write_v2(&h2, &feeds, &dir.join(format!("{name}.v2.lsrec")))?;
        (t2, b2) = (t2.min(t), b);
    }
    let per = |b: u64| b as f64 / n as f64;
    let ns = |t: Duration| t.as_nanos() as f64 / n as f64;
    let rate = if span_ns.1 > span_ns.0 {
        n as f64 * 1e9 / (span_ns.1 - span_ns.0) as f64
    } else {
        0.0
    };
    println!("  {name}: {n} events ({:.0} events/s of target time)", rate);
    println!(
        "    bytes/event: v1 {:.2}, v2 {:.3} (v2/v1 = {:.4}; target at most {MAX_BYTES_PER_EVENT}) {}",
        per(b1),
        per(b2),
        b2 as f64 / b1 as f64,
        if per(b2) <= MAX_BYTES_PER_EVENT { "OK" } else { "OVER" }
    );
    println!(
        "    writer CPU: v1 {:.1} ns/event, v2 {:.1} ns/event (v2/v1 = {:.2}); at this event rate v2 costs {:.2}% of one core",
        ns(t1),
        ns(t2),
        t2.as_secs_f64() / t1.as_secs_f64(),
        ns(t2) * rate / 1e9 * 100.0
    );
    // Reading back: the whole v2 recording, decoded.
    let t = Instant::now();
    let rec = Recording::open(&dir.join(format!("{name}.v2.lsrec")))?;
    let back = rec.feeds().count();
    let read = t.elapsed();
    if back != feeds.len() {
        bail!("{name}: {back} feeds read back of {}", feeds.len());
    }
    println!(
        "    v2 read back: {:.1} ns/event",
        read.as_nanos() as f64 / n as f64
    );
    Ok(())
}

/// Repeats `feeds` until they span `span_ns` of target time, shifting times and carrying the
/// lock counters on, so the analysis sees one long session rather than reboots.
fn extend(feeds: &[Feed], span_ns: u64) -> Vec<Feed> {
    let times = feeds.iter().flat_map(|f| match f {
        Feed::Events { events, .. } => events.iter().map(|e| e.time_ns).collect::<Vec<_>>(),
        Feed::Snapshot(s) => vec![s.time_ns],
        _ => vec![],
    });
    let (lo, hi) = times.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let pass_ns = hi.saturating_sub(lo) + 1_000_000;
    let last = feeds.iter().rev().find_map(|f| match f {
        Feed::Snapshot(s) => Some(s.clone()),
        _ => None,
    });
    let base: Vec<_> = feeds
        .iter()
        .filter(|f| matches!(f, Feed::Events { .. } | Feed::Snapshot(_)))
        .cloned()
        .collect();
    let passes = span_ns / pass_ns + 1;
    let mut out = Vec::with_capacity(base.len() * passes as usize);
    for k in 0..passes {
        let shift = k * pass_ns;
        for f in &base {
            let mut f = f.clone();
            match &mut f {
                Feed::Events { events, .. } => {
                    for e in events {
                        e.time_ns += shift;
                    }
                }
                Feed::Snapshot(s) => {
                    s.time_ns += shift;
                    if let Some(last) = &last {
                        for (l, end) in s.locks.iter_mut().zip(&last.locks) {
                            let c = &mut l.counters;
                            c.acquires += k * end.counters.acquires;
                            c.contended += k * end.counters.contended;
                            c.spins += k * end.counters.spins;
                            c.wait_total_ns += k * end.counters.wait_total_ns;
                            c.hold_total_ns += k * end.counters.hold_total_ns;
                        }
                    }
                }
                _ => {}
            }
            out.push(f);
        }
    }
    out
}

/// A small deterministic generator for seek targets.
fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 11
}

fn seek(mixed: &Path, dir: &Path) -> Result<()> {
    let (h, feeds) = read_recorded(mixed)?;
    let long = extend(&feeds, TEN_MINUTES_NS);
    let n = events(&long);
    let path = dir.join("ten-minutes.lsrec");
    let (t_write, bytes) = write_v2(&v2_header(&h), &long, &path)?;
    drop(long);
    println!(
        "  a 10-minute recording (workload=mixed, real feeds repeated): {n} events, {:.1} MB, written in {:.1} s",
        bytes as f64 / 1e6,
        t_write.as_secs_f64()
    );
    let rss0 = rss_kib();
    let t = Instant::now();
    let tl = Timeline::open_with(
        Recording::open(&path)?,
        None,
        TimelineOptions::default(),
        &mut |_, _| {},
    )?;
    let open = t.elapsed();
    println!(
        "    opening (one replay, building keyframes): {:.1} s, {:.1} M events/s, {} keyframes, {} MB more resident",
        open.as_secs_f64(),
        n as f64 / open.as_secs_f64() / 1e6,
        tl.keyframes(),
        rss_kib().saturating_sub(rss0) / 1024
    );
    let mut x = 12345u64;
    let mut times = Vec::new();
    for _ in 0..40 {
        let at = tl.start_ns() + lcg(&mut x) % tl.duration_ns().max(1);
        let t = Instant::now();
        let (_, view) = tl.seek(at);
        times.push(t.elapsed());
        std::hint::black_box(view);
    }
    times.sort();
    let median = times[times.len() / 2];
    let worst = *times.last().expect("40 seeks");
    println!(
        "    seek to a random time and build the view: median {:.1} ms, worst {:.1} ms (target at most {} ms) {}",
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        MAX_SEEK.as_millis(),
        if worst <= MAX_SEEK { "OK" } else { "OVER" }
    );
    let p = tl.len() / 2;
    let t = Instant::now();
    let mut q = p;
    for _ in 0..100 {
        q = tl
            .step_event(q, None, lockscope_engine::recording::Direction::Back)
            .unwrap_or(q);
    }
    println!(
        "    100 steps back one event: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let d = tl.range_delta(tl.len() / 4, tl.len() / 2);
    println!(
        "    counter deltas over a range ({} locks): {:.1} ms",
        d.locks.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    // Kept for the dashboard's replay benchmark (xtask removes it).
    Ok(())
}

/// A real guest's RAM (kalloctest's, kept in QEMU's RAM file), saved the way a stop saves it.
fn ram(file: &Path, dir: &Path) -> Result<()> {
    let bytes = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let size = bytes.len() as u64;
    let nonzero_pages = bytes
        .chunks(4096)
        .filter(|p| p.iter().any(|&b| b != 0))
        .count();
    let mut mem = ByteImage {
        base: 0x8000_0000,
        bytes,
    };
    let path = dir.join("stop.lsrec");
    let mut w = RecordingWriter::create(
        &path,
        &RecordingHeader::new(4, "workload=kalloctest", "bench"),
        WriterOptions::default(),
    )?;
    w.write(&Feed::Stop(lockscope_engine::feed::StopInfo {
        reason: lockscope_engine::feed::StopReason::Interrupted,
        hart: None,
        harts: vec![],
    }))?;
    let t = Instant::now();
    w.stop_ram(&mut mem, 0x8000_0000..0x8000_0000 + size)?;
    let took = t.elapsed();
    let stats = w.finish()?;
    println!(
        "  RAM at a stop: {} MiB guest RAM ({} of {} pages not zero) saved as {:.2} MiB in {:.0} ms",
        size >> 20,
        nonzero_pages,
        size / 4096,
        stats.ram_bytes_out as f64 / (1 << 20) as f64,
        took.as_secs_f64() * 1e3
    );
    let rec = Recording::open(&path)?;
    let mut back = rec.stop_ram(0)?;
    let t = Instant::now();
    let mut buf = vec![0u8; size as usize];
    use lockscope_engine::memory::GuestMemory;
    back.read(0x8000_0000, &mut buf)?;
    if buf != mem.bytes {
        bail!("the RAM read back differs");
    }
    println!(
        "    reading all of it back: {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    std::fs::remove_file(&path)?;
    Ok(())
}

fn main() -> Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: bench_recording DIR")?,
    );
    for name in ["kalloctest", "bcachetest"] {
        formats(name, &dir.join(format!("{name}.lsrec")), &dir)?;
    }
    seek(&dir.join("mixed.lsrec"), &dir)?;
    ram(&dir.join("guest-ram"), &dir)?;
    Ok(())
}
