//! `lockscope check`'s report as people read it, and writing to stdout.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Result;
use lockscope_engine::analysis::InversionKind;
use lockscope_engine::report::{site_text, ContentionSite, SiteLine};
use lockscope_engine::{CheckReport, Ending, Severity, View};

/// Writes to stdout; a reader that went away (`lockscope check | head`) is not an error.
pub fn emit(text: &str) -> Result<()> {
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
pub fn report_text(r: &CheckReport, v: &View) -> String {
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
        let read = r
            .kernel_reader
            .as_ref()
            .map_or_else(String::new, |k| format!(" (read through {k})"));
        let _ = writeln!(
            out,
            "kernel{read}: {} harts, bootargs \"{b}\"; events {} (lost {})",
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
    contention_sites(&mut out, r);
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
    last_events(&mut out, r);
    if !r.spinlock_across_sleep.is_empty() {
        let _ = writeln!(out, "\n--- spinlocks held across acquiresleep");
        for s in &r.spinlock_across_sleep {
            let _ = writeln!(out, "{s}");
        }
    }
    if !r.inversions.is_empty() {
        let _ = writeln!(out, "\n--- lock-order inversions");
        for inv in &r.inversions {
            if inv.kind != InversionKind::Cycle {
                let _ = writeln!(out, "{}", inv.text);
            }
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

/// Locks whose sites the text shows; the JSON has them all.
const SITE_LOCKS: usize = 8;

/// The most contended locks' top call sites, most contended lock first.
fn contention_sites(out: &mut String, r: &CheckReport) {
    let mut contended: Vec<_> = r.locks.iter().filter(|l| !l.sites.is_empty()).collect();
    if contended.is_empty() {
        return;
    }
    contended.sort_by(|a, b| b.contended.cmp(&a.contended));
    let _ = writeln!(
        out,
        "\n--- contention sites (where harts spun on each lock, most first)"
    );
    let more = contended.len().saturating_sub(SITE_LOCKS);
    for l in contended.into_iter().take(SITE_LOCKS) {
        let _ = writeln!(out, "{} ({} contended):", l.name, l.contended);
        for s in &l.sites {
            let _ = writeln!(out, "  {}", site_line(s));
        }
    }
    if more > 0 {
        let _ = writeln!(
            out,
            "... and {more} more contended locks (every lock's sites are in --json)"
        );
    }
}

fn site_line(s: &ContentionSite) -> String {
    let place = SiteLine {
        pc: s.pc,
        function: s.function.clone(),
        location: s.location.clone(),
    };
    format!(
        "{:>9} contended  wait avg {:>7} max {:>7}  {}",
        s.count,
        ns(Some(s.wait_avg_ns)),
        ns(Some(s.wait_max_ns)),
        site_text(&place)
    )
}

/// What each deadlocked or stalled hart did last, times relative to its last event.
fn last_events(out: &mut String, r: &CheckReport) {
    for h in &r.last_events {
        let Some(end) = h.events.last().map(|e| e.time_ns) else {
            continue;
        };
        let _ = writeln!(out, "\nhart {} did last (oldest first):", h.hart);
        for e in &h.events {
            let before = end.saturating_sub(e.time_ns);
            let _ = writeln!(
                out,
                "  {:>9} {:<20} {:<18} {}",
                if before == 0 {
                    "last".to_string()
                } else {
                    format!("-{}", ns(Some(before)))
                },
                e.kind,
                e.lock_name,
                site_text(&e.site)
            );
        }
    }
}
