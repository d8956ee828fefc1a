//! `lockscope check` and `lockscope replay`: verdicts without a screen.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lockscope_engine::analysis::{Severity, Verdict};
use lockscope_engine::feed::{Ending, StopReason};
use lockscope_engine::monitor::{Monitor, MonitorConfig, SourceKind, TargetState, View};
use lockscope_engine::qemu::QemuConfig;
use lockscope_engine::report::{site_text, CheckReport};
use lockscope_engine::session::{Session, SessionOptions, Target};
use lockscope_engine::symbols::Symbols;
use lockscope_engine::trace::TraceReader;

use crate::{paths, BootArgs, CheckArgs};

/// Loads the kernel's symbols, with a message that names the file.
pub fn load_symbols(kernel: &std::path::Path) -> Result<Arc<Symbols>> {
    let mut s = Symbols::load(kernel)?;
    // Show source paths relative to the workspace even for a copy of the ELF kept elsewhere.
    if s.source_root().is_none() {
        if let Some(w) = paths::workspace() {
            s.set_source_root(w);
        }
    }
    Ok(Arc::new(s))
}

/// Session options for booting with `boot`.
pub fn boot_options(boot: &BootArgs) -> Result<(SessionOptions, Arc<Symbols>)> {
    let kernel = paths::kernel(boot.kernel.clone())?;
    let symbols = load_symbols(&kernel)?;
    // A panicked kernel stays up for inspection unless the user asked otherwise.
    let mut bootargs = boot.bootargs.trim().to_string();
    if !bootargs.split_whitespace().any(|w| w.starts_with("panic=")) {
        bootargs = format!("{bootargs} panic=halt").trim().to_string();
    }
    let mut q = QemuConfig::new(&kernel).smp(boot.smp).bootargs(bootargs);
    match paths::disk(boot.disk.clone(), &kernel) {
        Some(d) => q = q.disk(d),
        None if lockscope_abi::bootargs_need_disk(&boot.bootargs) => anyhow::bail!(
            "boot arguments \"{}\" need the buffer cache's disk image, and there is none next to the kernel: run `cargo xtask build` (it makes target/kernel/disk.img) or pass --disk",
            boot.bootargs
        ),
        None => {}
    }
    for a in &boot.qemu_args {
        q = q.arg(a);
    }
    let mut o = SessionOptions::new(Target::Run(q));
    o.shared_ram = !boot.gdb_poll;
    o.panic_breakpoint = boot.break_on_panic;
    o.poll_hz = boot.poll_hz;
    o.record = boot.record.clone();
    o.console_log = boot.console_log.clone();
    Ok((o, symbols))
}

/// True once waiting longer cannot change the verdict.
struct Certainty {
    fault_since: Option<Instant>,
}

impl Certainty {
    fn reached(&mut self, v: &View) -> bool {
        if matches!(v.state, TargetState::Ended { .. }) {
            return true;
        }
        let fault = v.check.severity == Severity::Fault;
        if !fault {
            self.fault_since = None;
            return false;
        }
        let since = *self.fault_since.get_or_insert_with(Instant::now);
        // A fault is certain once the guest was stopped to capture it (registers and stacks),
        // or after a grace period if the capture cannot happen.
        let captured = match (&v.state, v.check.verdict) {
            (TargetState::Stopped { reason }, Verdict::Panic) => {
                *reason == StopReason::Panic
                    || v.panic.as_ref().is_some_and(|p| !p.harts.is_empty())
            }
            (TargetState::Stopped { .. }, _) => true,
            _ => false,
        };
        captured || since.elapsed() > Duration::from_secs(3)
    }
}

pub fn check(a: CheckArgs) -> Result<u8> {
    let (mut options, symbols) = match &a.attach {
        Some(addr) => {
            let kernel = paths::kernel(a.boot.kernel.clone())?;
            let symbols = load_symbols(&kernel)?;
            let mut o = SessionOptions::new(Target::Attach(addr.clone()));
            o.poll_hz = a.boot.poll_hz;
            o.record = a.boot.record.clone();
            (o, symbols)
        }
        None => boot_options(&a.boot)?,
    };
    options.view_hz = 10.0;
    if !(a.for_secs > 0.0 && a.for_secs.is_finite()) {
        anyhow::bail!("--for must be a positive number of seconds");
    }
    let started = Instant::now();
    let session = Session::start(options, symbols)?;
    let deadline = Instant::now() + Duration::from_secs_f64(a.for_secs);
    let mut certainty = Certainty { fault_since: None };
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        if certainty.reached(&session.view()) {
            break;
        }
    }
    let console_log = session.console_log.clone();
    let monitor = session.finish();
    let view = monitor.view();
    let mut report = CheckReport::from_view(&view);
    report.host_cpu_ns = own_cpu_ns();
    report.watched_ns = Some(started.elapsed().as_nanos() as u64);
    if a.json {
        emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        let mut text = report_text(&report, &view);
        if let Some(log) = console_log {
            let _ = writeln!(text, "console log: {}", log.display());
        }
        emit(&text)?;
    }
    // Losing the target is a connection error, whatever was gathered before (printed above).
    if let TargetState::Ended {
        ending: Ending::Lost { reason },
    } = &view.state
    {
        eprintln!("lockscope: {reason}; what was gathered until then is shown above");
        return Ok(crate::EXIT_USAGE);
    }
    Ok(report.exit_code() as u8)
}

pub fn replay(
    trace: PathBuf,
    kernel: Option<PathBuf>,
    check: bool,
    json: bool,
    dump_view: Option<PathBuf>,
) -> Result<u8> {
    let mut reader = TraceReader::open(&trace)?;
    let kernel = kernel.or_else(|| reader.header().kernel.clone());
    let symbols = match &kernel {
        Some(k) => {
            let s = load_symbols(k).with_context(|| {
                format!(
                    "symbolizing {} (pass --kernel with the ELF it was recorded with)",
                    trace.display()
                )
            })?;
            match &reader.header().kernel_fingerprint {
                Some(f) if *f != s.fingerprint() => {
                    eprintln!(
                        "lockscope: {} was recorded with a different build of the kernel than {}: showing raw addresses; pass --kernel with the recorded ELF to see functions and lines",
                        trace.display(),
                        k.display()
                    );
                    None
                }
                _ => Some(s),
            }
        }
        None => None,
    };
    let mut monitor = Monitor::new(MonitorConfig::default(), symbols, SourceKind::Trace)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut ending = None;
    while let Some(feed) = reader.next_feed()? {
        match feed {
            // Held back: the dumped view shows the target as it was, not the session's end.
            lockscope_engine::feed::Feed::End(_) => ending = Some(feed),
            f => monitor.apply(&f),
        }
    }
    if let Some(path) = dump_view {
        std::fs::write(&path, serde_json::to_vec_pretty(&monitor.view())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(end) = ending {
        monitor.apply(&end);
    }
    let view = monitor.view();
    let report = CheckReport::from_view(&view);
    if check || json {
        if json {
            emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
        } else {
            emit(&report_text(&report, &view))?;
        }
        return Ok(report.exit_code() as u8);
    }
    crate::live::show_fixed(view)
}

pub fn run(boot: BootArgs) -> Result<u8> {
    crate::live::run(boot)
}

pub fn attach(addr: String, kernel: PathBuf, poll_hz: f64, record: Option<PathBuf>) -> Result<u8> {
    crate::live::attach(addr, kernel, poll_hz, record)
}

/// CPU time this process used so far (user + system), QEMU not included.
fn own_cpu_ns() -> Option<u64> {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialized by the successful call above.
    let u = unsafe { u.assume_init() };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    Some(ns(u.ru_utime) + ns(u.ru_stime))
}

/// Writes to stdout; a reader that went away (`lockscope check | head`) is not an error.
fn emit(text: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn ns(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(n) if n < 10_000 => format!("{n}ns"),
        Some(n) if n < 10_000_000 => format!("{}us", n / 1000),
        Some(n) => format!("{}ms", n / 1_000_000),
    }
}

/// The report as people read it.
fn report_text(r: &CheckReport, v: &View) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lockscope check: {} ({})",
        r.verdict.as_str(),
        match r.severity {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Fault => "fault",
        }
    );
    let _ = writeln!(out, "  {}", r.summary);
    if let Some(b) = &r.bootargs {
        let _ = writeln!(
            out,
            "kernel: {} harts, bootargs \"{b}\"; events {} (lost {})",
            r.harts, r.events, r.lost_events
        );
    }
    if r.pauses.count > 0 {
        let _ = writeln!(
            out,
            "gdb polling: {} pauses, median {}, max {}",
            r.pauses.count,
            ns(Some(r.pauses.median_ns)),
            ns(Some(r.pauses.max_ns))
        );
    }
    match &r.ending {
        Some(Ending::Exited { status }) => {
            let verdict = lockscope_engine::qemu::ExitVerdict::from_code(Some(*status));
            let _ = writeln!(out, "QEMU exited with status {status} ({verdict})");
        }
        Some(Ending::Lost { reason }) => {
            let _ = writeln!(out, "connection lost: {reason}");
        }
        _ => {}
    }

    let _ = writeln!(out, "\n--- locks (lab format, most contended first)");
    let _ = writeln!(
        out,
        "{:<20} {:>10} {:>14} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "lock",
        "#acquire()",
        "#test-and-set",
        "contend",
        "wait avg",
        "wait max",
        "hold avg",
        "hold max"
    );
    for l in &r.locks {
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>14} {:>7.2}% {:>9} {:>9} {:>9} {:>9}",
            l.name,
            l.acquires,
            l.spins,
            l.contention_pct,
            ns(l.wait_avg_ns),
            ns(l.wait_max_ns),
            ns(l.hold_avg_ns),
            ns(l.hold_max_ns)
        );
    }
    if !r.buckets.is_empty() {
        let _ = writeln!(out, "\n--- buffer cache buckets");
        let _ = writeln!(
            out,
            "{:<7} {:<18} {:>5} {:>6} {:>10} {:>8} {:>7} {:>8}",
            "bucket", "lock", "bufs", "in-use", "hits", "misses", "steals", "hit-rate"
        );
        for b in &r.buckets {
            let _ = writeln!(
                out,
                "{:<7} {:<18} {:>5} {:>6} {:>10} {:>8} {:>7} {:>8}",
                b.index,
                b.lock.as_deref().unwrap_or("-"),
                b.bufs,
                b.in_use,
                b.hits,
                b.misses,
                b.steals,
                b.hit_rate
                    .map_or("-".into(), |h| format!("{:.1}%", h * 100.0))
            );
        }
    }
    if let Some(p) = &v.panic {
        let _ = writeln!(out, "\n--- panic");
        if let Some(c) = &v.check.panic {
            let _ = writeln!(out, "hart {}: {}", c.hart, c.message);
            if let Some(t) = &c.trap {
                let _ = writeln!(
                    out,
                    "scause {:#x} ({}), sepc {:#x}, stval {:#x}",
                    t.scause.raw, t.scause.name, t.sepc, t.stval
                );
            }
        }
        let _ = writeln!(out, "backtrace:");
        for (i, f) in r.backtrace.iter().enumerate() {
            let inl = p.backtrace.get(i).is_some_and(|l| l.inlined);
            let _ = writeln!(
                out,
                "  {:#018x} {}{}",
                f.pc,
                site_text(f),
                if inl { " [inlined]" } else { "" }
            );
        }
        if !p.disassembly.is_empty() {
            let _ = writeln!(out, "disassembly:");
            for l in &p.disassembly {
                let _ = writeln!(
                    out,
                    "  {} {:#x}: {}",
                    if l.at_pc { "=>" } else { "  " },
                    l.address,
                    l.text
                );
            }
        }
    }
    if !r.deadlocks.is_empty() {
        let _ = writeln!(out, "\n--- deadlock");
        for d in &r.deadlocks {
            let _ = writeln!(out, "{d}");
        }
    }
    if !r.stalls.is_empty() {
        let _ = writeln!(out, "\n--- stall");
        for s in &r.stalls {
            let _ = writeln!(out, "{s}");
        }
    }
    if !r.inversions.is_empty() {
        let _ = writeln!(out, "\n--- lock-order inversions");
        for inv in &r.inversions {
            for ((o, (a, b)), h) in inv.orders.iter().zip(&inv.sites).zip(&inv.harts) {
                let _ = writeln!(
                    out,
                    "{o} on hart{h}: {} then {}",
                    site_text(a),
                    site_text(b)
                );
            }
        }
    }
    out
}
