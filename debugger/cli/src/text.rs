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
        let args = if b.is_empty() {
            String::new()
        } else {
            format!(", bootargs \"{b}\"")
        };
        let _ = writeln!(
            out,
            "kernel{read}: {} harts{args}; events {} (lost {})",
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

    locks_text(&mut out, r);
    contention_sites(&mut out, r);
    if !r.buckets.is_empty() {
        let _ = writeln!(out, "\n--- buffer cache buckets");
        if r.bucket_counts_unavailable {
            let _ = writeln!(
                out,
                "{:<7} {:<24} {:>5} {:>6}   (this kernel keeps no hit, miss or steal counts)",
                "bucket", "lock", "bufs", "in-use"
            );
        } else {
            let _ = writeln!(
                out,
                "{:<7} {:<18} {:>5} {:>6} {:>10} {:>8} {:>7} {:>8}",
                "bucket", "lock", "bufs", "in-use", "hits", "misses", "steals", "hit-rate"
            );
        }
        for b in &r.buckets {
            let lock = b.lock.as_deref().unwrap_or("-");
            if r.bucket_counts_unavailable {
                let _ = writeln!(
                    out,
                    "{:<7} {:<24} {:>5} {:>6}",
                    b.index, lock, b.bufs, b.in_use
                );
                continue;
            }
            let n = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
            let _ = writeln!(
                out,
                "{:<7} {:<18} {:>5} {:>6} {:>10} {:>8} {:>7} {:>8}",
                b.index,
                lock,
                b.bufs,
                b.in_use,
                n(b.hits),
                n(b.misses),
                n(b.steals),
                b.hit_rate
                    .map_or("-".into(), |h| format!("{:.1}%", h * 100.0))
            );
        }
    }
    lab_tests_text(&mut out, r);
    findings_text(&mut out, r);
    stop_text(&mut out, r, v);
    last_events(&mut out, r);
    order_text(&mut out, r);
    out
}

/// What stops showed: the panic with its backtrace and diagnosis, a confirmed hang, deadlocks
/// and stalls.
pub fn stop_text(out: &mut String, r: &CheckReport, v: &View) {
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
        crate::diagnosis::panic_text(out, r.panic_diagnosis.as_ref(), &r.panic_harts);
    }
    if let Some(h) = &r.hang {
        crate::diagnosis::hang_text(out, h);
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
}

/// Spinlocks held across acquiresleep and lock-order inversions, each with its sites.
pub fn order_text(out: &mut String, r: &CheckReport) {
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
}

/// The lock table, lab style: with times when the kernel's locks deliver events, with each
/// lock's variable and holder when the source reads locks in memory (xv6).
fn locks_text(out: &mut String, r: &CheckReport) {
    let _ = writeln!(out, "\n--- locks (lab format, most contended first)");
    if r.no_lock_events {
        let _ = writeln!(
            out,
            "(wait and hold times need lock events: they come with lockscope's QEMU plugin)"
        );
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>14} {:>6}  variable",
            "lock", "#acquire()", "#test-and-set", "holder"
        );
        for l in &r.locks {
            let _ = writeln!(
                out,
                "{:<20} {:>10} {:>14} {:>6}  {}",
                l.name,
                l.acquires,
                l.spins,
                l.holder.map_or("-".into(), |h| format!("hart{h}")),
                l.path.as_deref().unwrap_or("(registry only)")
            );
        }
        return;
    }
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
}

/// Locks whose sites the text shows; the JSON has them all.
const SITE_LOCKS: usize = 8;

/// The most contended locks' top call sites, most contended lock first.
fn contention_sites(out: &mut String, r: &CheckReport) {
    let mut contended: Vec<_> = r.locks.iter().filter(|l| !l.sites.is_empty()).collect();
    if contended.is_empty() {
        return;
    }
    contended.sort_by_key(|l| std::cmp::Reverse(l.contended));
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

/// Each lab test the console showed: the lab's verdict, and the counters over its window.
fn lab_tests_text(out: &mut String, r: &CheckReport) {
    for t in &r.lab_tests {
        let _ = writeln!(
            out,
            "\n--- {} (by the lab's own output: {})",
            t.name,
            match &t.result_line {
                Some(l) => format!("\"{l}\""),
                None => "no result yet".into(),
            }
        );
        let window = match &t.end_line {
            Some(end) => format!("\"{}\" .. \"{end}\"", t.start_line),
            None => format!("\"{}\" .. (still running)", t.start_line),
        };
        if !t.measured {
            let _ = writeln!(out, "window {window}: no counters were read over it");
            continue;
        }
        let _ = writeln!(out, "counters over the test's window {window}:");
        let _ = writeln!(
            out,
            "{:<20} {:>14} {:>10}  variable",
            "lock", "#test-and-set", "#acquire()"
        );
        let line = |out: &mut String, l: &lockscope_engine::monitor::LabLock| {
            let note = if l.allocator_or_cache && !l.lab_counted {
                "  (not counted by the lab: its name starts with neither kmem nor bcache)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:<20} {:>14} {:>10}  {}{note}",
                l.name,
                l.nts,
                l.n,
                l.path.as_deref().unwrap_or("(registry only)")
            );
        };
        // As the lab prints them: the allocator and cache locks, then the most contended.
        let (ours, others): (Vec<_>, Vec<_>) = t
            .locks
            .iter()
            .partition(|l| l.lab_counted || l.allocator_or_cache);
        for l in &ours {
            line(out, l);
        }
        if !others.is_empty() {
            let _ = writeln!(out, "top {} other locks:", others.len().min(5));
            for l in others.iter().take(5) {
                line(out, l);
            }
        }
        let _ = writeln!(
            out,
            "tot= {} (as the lab's statslock counts: locks named kmem* or bcache*); over every allocator and buffer-cache lock: {}",
            t.tot, t.tot_all
        );
        if !r.findings.is_empty() {
            let _ = writeln!(out, "the findings below make this result meaningless");
        }
    }
}

/// Broken invariants and lab pitfalls the source found.
fn findings_text(out: &mut String, r: &CheckReport) {
    if r.findings.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n--- findings ({}), each makes the lab's OK meaningless",
        r.findings.len()
    );
    for f in &r.findings {
        let _ = writeln!(out, "{}: {}", kind_name(f), f.message);
    }
}

/// A finding's kind as JSON spells it (`lock_name_on_stack`).
pub fn kind_name(f: &lockscope_engine::model::Finding) -> String {
    serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", f.kind))
}
