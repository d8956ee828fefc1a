//! Deadlock cycles drawn as chains, lock-order inversions with both sites, and stalls.

use lockscope_engine::analysis::{DeadlockCycle, Inversion, StallReason};
use lockscope_engine::monitor::{FrameLine, HangDetail};
use lockscope_engine::View;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::Frame;

use super::{block, scrolled, wrap};
use crate::app::{lock_name, App};
use crate::format;
use crate::theme::Theme;

fn site(view: &View, pc: u64) -> String {
    let mut s = String::new();
    format::place(&view.place(pc), &mut s);
    s
}

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let width = area.width.saturating_sub(2) as usize;
    let r = &view.report;
    let mut out: Vec<Line> = Vec::new();
    let inversions = &r.lock_order.inversions;
    if let Some(h) = &view.hang {
        hang_head(h, width, t, &mut out);
    }
    if r.deadlocks.is_empty() && inversions.is_empty() && r.stall.is_none() && view.hang.is_none() {
        out.push(Line::raw(
            "No deadlock, stall or lock-order inversion seen.",
        ));
        out.push(Line::styled(
            "This view opens by itself when a deadlock is confirmed.",
            t.dim,
        ));
    }
    for (i, d) in r.deadlocks.iter().enumerate() {
        cycle_lines(view, d, view.deadlock_chains.get(i), width, t, &mut out);
        out.push(Line::raw(""));
    }
    if let Some(h) = &view.hang {
        hang_harts(h, width, t, &mut out);
    }
    if let Some(stall) = &r.stall {
        out.push(Line::styled(
            if stall.system_hang {
                "Stall: every running hart is stuck (the system hangs)"
            } else {
                "Stall"
            },
            t.bad,
        ));
        for h in &stall.harts {
            let what = match &h.reason {
                StallReason::NoProgress if h.heartbeat.is_some() => {
                    "makes no progress (heartbeat unchanged)".to_string()
                }
                StallReason::NoProgress => "makes no progress".to_string(),
                StallReason::NothingToRun => "has nothing to run".to_string(),
                StallReason::SpinningTooLong { lock, holder } => {
                    let mut s = format!("spins on {}", lock_name(view, *lock));
                    if let Some(hh) = holder {
                        s.push_str(&format!(" held by hart{hh}"));
                    }
                    s
                }
            };
            let mut s = format!("  hart{} {what} for {}", h.hart, format::dur(h.for_ns));
            if let Some(pc) = h.pc {
                s.push_str(" at ");
                s.push_str(&site(view, pc));
            }
            out.extend(wrap(&s, width, 4).into_iter().map(Line::raw));
        }
        out.push(Line::raw(""));
    }
    if !inversions.is_empty() {
        out.push(Line::styled(
            format!(
                "Lock-order inversions: {} (potential deadlocks)",
                inversions.len()
            ),
            t.warn,
        ));
        for inv in inversions {
            inversion_lines(view, inv, width, t, &mut out);
        }
    }
    let guarded = &r.lock_order.guarded;
    if !guarded.is_empty() {
        out.push(Line::styled(
            format!(
                "Guarded inversions: {} (a common lock serialises them)",
                guarded.len()
            ),
            t.dim,
        ));
        for inv in guarded {
            inversion_lines(view, inv, width, t, &mut out);
        }
    }
    if r.lock_order.search_truncated {
        out.push(Line::styled(
            "(the cycle search hit its budget: longer cycles may exist)",
            t.dim,
        ));
    }
    scrolled(
        frame,
        area,
        out,
        &app.deadlock_scroll,
        block(t, " Deadlock · lock order · stalls "),
    );
}

/// A frame in one short line: `sleep kernel/proc.c:239`.
fn frame_text(f: &FrameLine) -> String {
    let func = f.function.as_deref().unwrap_or("??");
    let inl = if f.inlined { " [inlined]" } else { "" };
    match f.location.as_deref() {
        Some(l) => format!("{func}{inl} {}", format::short_location(l)),
        None => format!("{func}{inl} {:#x}", f.pc),
    }
}

/// What stops of the guest showed about a hang (a kernel read without lock events): what it
/// is, the reader-writer locks and sleeplock chains nobody gets through.
fn hang_head(h: &HangDetail, width: usize, t: &Theme, out: &mut Vec<Line<'static>>) {
    for (i, l) in wrap(&h.headline, width, 2).into_iter().enumerate() {
        out.push(Line::styled(
            l,
            match (i, h.confirmed) {
                (0, true) => t.bad,
                (0, false) => t.warn,
                _ => t.base,
            },
        ));
    }
    for r in &h.rw {
        out.extend(
            wrap(r, width, 4)
                .into_iter()
                .map(|l| Line::styled(l, t.title)),
        );
    }
    for c in &h.chains {
        out.extend(
            wrap(c, width, 4)
                .into_iter()
                .map(|l| Line::styled(l, t.title)),
        );
    }
    for n in &h.notes {
        out.extend(
            wrap(n, width, 2)
                .into_iter()
                .map(|l| Line::styled(l, t.dim)),
        );
    }
    out.push(Line::raw(""));
}

/// Every hart at the last stop, the locks it holds, and every sleeping process's stack.
fn hang_harts(h: &HangDetail, width: usize, t: &Theme, out: &mut Vec<Line<'static>>) {
    out.push(Line::styled("Every hart at the last stop", t.title));
    for x in &h.harts {
        let who = x
            .process
            .as_ref()
            .map_or(String::new(), |p| format!(" (pid {} {})", p.pid, p.name));
        let mut s = format!("hart{}{who} {}", x.hart, x.state);
        if let Some(at) = &x.at {
            s.push_str(" at ");
            format::place(at, &mut s);
        }
        for (k, l) in wrap(&s, width, 4).into_iter().enumerate() {
            out.push(if k == 0 {
                Line::styled(l, t.spinning)
            } else {
                Line::raw(l)
            });
        }
        for held in &x.held {
            let mut s = format!("    holds {}", held.path.as_deref().unwrap_or(&held.name));
            if let Some(site) = &held.site {
                s.push_str(" (taken at ");
                format::place(site, &mut s);
                s.push(')');
            }
            out.extend(wrap(&s, width, 6).into_iter().map(Line::raw));
        }
    }
    if h.harts.iter().any(|x| !x.held.is_empty()) {
        out.push(Line::styled(
            "  (where a lock was taken is inferred from the stack: lock events would say for sure)",
            t.dim,
        ));
    }
    if !h.sleepers.is_empty() {
        out.push(Line::raw(""));
        out.push(Line::styled("Sleeping processes", t.title));
        for s in &h.sleepers {
            let mut line = format!(
                "  pid {} ({}) sleeps on {}",
                s.pid,
                s.name,
                s.chan.as_deref().unwrap_or("?")
            );
            if let Some(l) = &s.sleeplock {
                line.push_str(&format!(": {l}"));
            }
            out.extend(wrap(&line, width, 4).into_iter().map(Line::raw));
            let frames: Vec<String> = s.frames.iter().map(frame_text).collect();
            if !frames.is_empty() {
                let text = format!("    {}", frames.join(" ← "));
                out.extend(
                    wrap(&text, width, 6)
                        .into_iter()
                        .map(|l| Line::styled(l, t.dim)),
                );
            }
            if let Some(n) = &s.note {
                out.push(Line::styled(format!("    (stack ends: {n})"), t.dim));
            }
        }
    }
    out.push(Line::raw(""));
}

fn cycle_lines(
    view: &View,
    d: &DeadlockCycle,
    chain: Option<&String>,
    width: usize,
    t: &Theme,
    out: &mut Vec<Line<'static>>,
) {
    let status = if d.confirmed {
        format!(
            "DEADLOCK (confirmed, seen for {})",
            format::dur(d.seen_for_ns)
        )
    } else {
        format!(
            "Suspected deadlock (seen for {}, not yet confirmed)",
            format::dur(d.seen_for_ns)
        )
    };
    out.push(Line::styled(
        status,
        if d.confirmed { t.bad } else { t.warn },
    ));
    if let Some(c) = chain {
        for l in wrap(c, width, 4) {
            out.push(Line::styled(l, t.title));
        }
    }
    out.push(Line::raw(""));
    let n = d.edges.len();
    for (i, e) in d.edges.iter().enumerate() {
        // What this waiter holds: the lock the previous waiter wants.
        let prev = &d.edges[(i + n - 1) % n];
        let mut holds = format!("hart{} ── holds {}", e.waiter, prev.lock_name);
        if let Some(pc) = prev.holder_pc {
            holds.push_str(&format!(" (acquired at {})", site(view, pc)));
        }
        for (k, l) in wrap(&holds, width, 6).into_iter().enumerate() {
            out.push(if k == 0 {
                Line::styled(l, t.spinning)
            } else {
                Line::raw(l)
            });
        }
        let waits = format!(
            "  │  spins on {} for {} at {}",
            e.lock_name,
            format::dur(e.waiting_for_ns),
            site(view, e.waiter_pc)
        );
        out.extend(wrap(&waits, width, 6).into_iter().map(Line::raw));
        if i + 1 < n {
            out.push(Line::from(vec![
                Span::raw("  ▼  "),
                Span::styled(format!("held by hart{}", e.holder), t.dim),
            ]));
        } else {
            out.push(Line::from(vec![
                Span::raw("  └─▶ "),
                Span::styled(format!("held by hart{}: the cycle closes", e.holder), t.bad),
            ]));
        }
    }
}

fn inversion_lines(
    view: &View,
    inv: &Inversion,
    width: usize,
    t: &Theme,
    out: &mut Vec<Line<'static>>,
) {
    let mut cycle = inv.names.join(" → ");
    if let Some(first) = inv.names.first() {
        cycle.push_str(" → ");
        cycle.push_str(first);
    }
    out.push(Line::from(vec![
        Span::raw("  "),
        Span::styled(cycle, t.title),
    ]));
    for e in &inv.edges {
        let s = format!(
            "    hart{} took {} at {}, then {} at {} ({}×)",
            e.first.hart,
            e.from_name,
            site(view, e.first.from_pc),
            e.to_name,
            site(view, e.first.to_pc),
            e.count
        );
        out.extend(wrap(&s, width, 6).into_iter().map(Line::raw));
    }
    if inv.guarded && !inv.common_gates.is_empty() {
        let gates: Vec<String> = inv
            .common_gates
            .iter()
            .map(|g| lock_name(view, *g).into_owned())
            .collect();
        out.push(Line::styled(
            format!("    serialised by {}", gates.join(", ")),
            t.dim,
        ));
    }
}
