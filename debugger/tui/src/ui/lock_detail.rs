//! One lock in full: its counters, rates, holder and waiters, top contention sites and wait
//! and hold histograms (from events); or, for a source without events, its variable, raw
//! state and the kernel's own counters.

use lockscope_engine::analysis::{HistView, LockRow, Site, TimeStats};
use lockscope_engine::View;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::block;
use crate::app::{App, LocksRow};
use crate::format;
use crate::theme::Theme;

pub(super) fn render_detail(
    frame: &mut Frame,
    area: Rect,
    app: &App,
    view: &View,
    line: Option<LocksRow>,
) {
    let t = &app.theme;
    let Some(r) = line.and_then(|l| match l {
        LocksRow::Lock(i) => view.report.locks.get(i),
        LocksRow::Class(_) => None,
    }) else {
        let blk = block(t, " Lock detail ");
        let inner = blk.inner(area);
        frame.render_widget(blk, area);
        frame.render_widget(
            Paragraph::new(Span::styled("Select a lock (Esc goes back).", t.dim)),
            inner,
        );
        return;
    };
    let blk = block(
        t,
        format!(
            " {} · class {} · lock id {} · Esc back ",
            r.name, r.class, r.id
        ),
    );
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    if !view.lock_events {
        frame.render_widget(
            Paragraph::new(counts_detail(view, r, t)).wrap(ratatui::widgets::Wrap { trim: false }),
            inner,
        );
        return;
    }

    let mut info: Vec<Line> = Vec::new();
    let exact = if r.counters_exact {
        ""
    } else {
        " (from events)"
    };
    info.push(Line::from(vec![
        Span::styled("acquisitions ", t.dim),
        Span::raw(r.acquires.to_string()),
        Span::styled("  contentions ", t.dim),
        Span::raw(format!(
            "{} ({})",
            r.contended,
            format::pct(r.contention_pct)
        )),
        Span::styled("  spins (#test-and-set) ", t.dim),
        Span::raw(format!("{}{exact}", r.spins)),
    ]));
    info.push(time_line("wait", &r.wait, t));
    info.push(time_line("hold", &r.hold, t));
    if let Some(rates) = &r.rates {
        info.push(Line::from(vec![
            Span::styled("rate ", t.dim),
            Span::raw(format!(
                "{} acq/s, {} contended/s, {} spins/s over {}",
                format::count(rates.acquires_per_s as u64),
                format::count(rates.contended_per_s as u64),
                format::count(rates.spins_per_s as u64),
                format::dur(rates.span_ns)
            )),
        ]));
    }
    info.push(holder_line(view, r, t));
    info.extend(waiter_lines(view, r, t));

    let sites = site_lines(view, &r.top_sites, &r.sites_other, t);
    let [info_a, sites_a, hist_a] = Layout::vertical([
        Constraint::Length(info.len() as u16),
        Constraint::Length(sites.len() as u16),
        Constraint::Min(0),
    ])
    .areas(inner);
    frame.render_widget(Paragraph::new(info), info_a);
    frame.render_widget(Paragraph::new(sites), sites_a);
    if hist_a.height >= 3 {
        let [w, h] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .areas(hist_a);
        render_hist(frame, w, "Wait time (spinning)", &r.wait.hist, t);
        render_hist(frame, h, "Hold time", &r.hold.hist, t);
    }
}

/// A lock's detail from a source without lock events: its variable, raw state, counters and
/// rates, and who holds it.
fn counts_detail<'a>(view: &View, r: &LockRow, t: &Theme) -> Vec<Line<'a>> {
    let d = view.detail.lock(r.id);
    let kv = |k: &str, v: String| {
        Line::from(vec![Span::styled(format!("{k:<12}"), t.dim), Span::raw(v)])
    };
    let mut out = vec![kv(
        "variable",
        d.and_then(|d| d.path.clone()).unwrap_or_else(|| {
            "none: known only from the lab's locks[] registry (kalloc'd memory)".into()
        }),
    )];
    if let Some(a) = d.and_then(|d| d.addr) {
        out.push(kv("address", format!("{a:#x}")));
    }
    let locked = match d.and_then(|d| d.locked) {
        Some(true) => "locked",
        Some(false) => "free",
        None => "unknown",
    };
    let holder = match r.holder {
        Some(h) => {
            let proc = view
                .detail
                .cpus
                .iter()
                .find(|(hart, _)| *hart == h)
                .and_then(|(_, c)| c.proc.as_ref())
                .map_or(String::new(), |p| {
                    format!(", running {} (pid {})", p.name, p.pid)
                });
            format!("{locked}, held by hart{h}{proc}")
        }
        None => locked.to_string(),
    };
    out.push(kv("state", holder));
    match d.and_then(|d| d.lab) {
        Some(c) => out.push(kv(
            "counters",
            format!("n (#acquire()) {}   nts (#test-and-set) {}", c.n, c.nts),
        )),
        None => out.push(kv(
            "counters",
            "none: this kernel's spinlock has no n/nts (not a locks-lab kernel)".into(),
        )),
    }
    if let Some(rates) = &r.rates {
        out.push(kv(
            "rate",
            format!(
                "{} acquisitions/s, {} test-and-sets/s over {}",
                format::count(rates.acquires_per_s.max(0.0) as u64),
                format::count(rates.spins_per_s.max(0.0) as u64),
                format::dur(rates.span_ns)
            ),
        ));
    }
    out.push(Line::from(""));
    out.push(Line::styled(
        "Wait and hold times, waiters and contention sites need lock events: they come with lockscope's QEMU plugin.",
        t.dim,
    ));
    out
}

fn time_line<'a>(what: &'a str, s: &TimeStats, t: &Theme) -> Line<'a> {
    let mut parts = vec![
        Span::styled(format!("{what} "), t.dim),
        Span::raw(format!(
            "avg {}  max {}",
            format::opt_dur(s.avg_ns),
            format::opt_dur(s.max_ns)
        )),
    ];
    if let Some(min) = s.min_ns {
        parts.push(Span::raw(format!("  min {}", format::dur(min))));
    }
    parts.push(Span::styled(
        format!(
            "  over {}{}",
            s.count,
            if s.exact { "" } else { " (from events)" }
        ),
        t.dim,
    ));
    Line::from(parts)
}

fn holder_line<'a>(view: &View, r: &LockRow, t: &Theme) -> Line<'a> {
    let Some(h) = r.holder else {
        return Line::from(vec![Span::styled("holder ", t.dim), Span::raw("none")]);
    };
    let held = view
        .report
        .harts
        .iter()
        .find(|x| x.hart == h)
        .and_then(|x| x.held.iter().find(|e| e.lock == r.id));
    let mut s = format!("hart{h}");
    if let Some(e) = held {
        if let Some(ns) = e.held_for_ns {
            s.push_str(&format!(" for {}", format::dur(ns)));
        }
        s.push_str(", acquired at ");
        format::place(&view.place(e.pc), &mut s);
    }
    Line::from(vec![Span::styled("holder ", t.dim), Span::raw(s)])
}

fn waiter_lines<'a>(view: &View, r: &LockRow, t: &Theme) -> Vec<Line<'a>> {
    if r.waiters.is_empty() {
        return vec![Line::from(vec![
            Span::styled("waiters ", t.dim),
            Span::raw("none"),
        ])];
    }
    r.waiters
        .iter()
        .map(|&w| {
            let mut s = format!("hart{w}");
            let wait = view
                .report
                .harts
                .iter()
                .find(|x| x.hart == w)
                .and_then(|x| x.waiting.as_ref());
            if let Some(wr) = wait {
                s.push_str(&format!(" spinning for {} at ", format::dur(wr.for_ns)));
                format::place(&view.place(wr.pc), &mut s);
            }
            Line::from(vec![
                Span::styled("waiter ", t.dim),
                Span::styled(s, t.spinning),
            ])
        })
        .collect()
}

fn site_lines<'a>(view: &View, sites: &[Site], other: &Site, t: &Theme) -> Vec<Line<'a>> {
    let mut out = vec![Line::from(Span::styled(
        "Top contention sites: count  wait avg  wait max  function file:line",
        t.title,
    ))];
    if sites.is_empty() {
        out.push(Line::from(Span::styled(
            "  none seen (no contended acquisition in the events)",
            t.dim,
        )));
    }
    for s in sites {
        let mut text = String::new();
        format::place(&view.place(s.pc), &mut text);
        let avg = s.wait_total_ns.checked_div(s.count);
        out.push(Line::from(vec![
            Span::raw(format!(
                "  {:>6}  {:>8}  {:>8}  ",
                format::count(s.count),
                format::opt_dur(avg),
                format::dur(s.wait_max_ns)
            )),
            Span::raw(text),
        ]));
    }
    if other.count > 0 {
        out.push(Line::from(Span::styled(
            format!("  {:>6}  at other sites", format::count(other.count)),
            t.dim,
        )));
    }
    out
}

fn render_hist(frame: &mut Frame, area: Rect, title: &str, h: &HistView, t: &Theme) {
    let blk = block(t, format!(" {title}: {} samples ", h.samples));
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    if h.buckets.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("no samples from events", t.dim)),
            inner,
        );
        return;
    }
    // Merge neighbouring buckets until they fit the height.
    let rows = inner.height.max(1) as usize;
    let per = h.buckets.len().div_ceil(rows);
    let merged: Vec<(u64, u64)> = h
        .buckets
        .chunks(per)
        .map(|c| (c[0].lo_ns, c.iter().map(|b| b.count).sum()))
        .collect();
    let max = merged.iter().map(|m| m.1).max().unwrap_or(0);
    let label_w = 8;
    let count_w = 7;
    let bar_w = (inner.width as usize).saturating_sub(label_w + count_w + 1);
    let lines: Vec<Line> = merged
        .iter()
        .map(|&(lo, n)| {
            let mut b = String::new();
            format::bar(n, max, bar_w, &mut b);
            Line::from(vec![
                Span::styled(format!("{:>7} ", format!("≥{}", format::dur(lo))), t.dim),
                Span::styled(format!("{b:<bar_w$}"), t.bar),
                Span::raw(format!(" {:>6}", format::count(n))),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}
