//! The lock table, grouped or not, and a lock's detail.

use lockscope_engine::analysis::{ClassRow, HistView, LockRow, Rates, Site, TimeStats};
use lockscope_engine::View;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::block;
use crate::app::{App, LocksRow, SortKey};
use crate::format;
use crate::theme::Theme;

/// A column of the lock table.
#[derive(Clone, Copy)]
struct Col {
    key: SortKey,
    title: &'static str,
    width: u16,
    /// Lower survives a narrower terminal.
    priority: u8,
}

const NAME_MIN: u16 = 12;
const NAME_MAX: u16 = 32;
const TREND_MIN: u16 = 8;

/// Every column but the name, in table order.
const COLS: [Col; 10] = [
    Col {
        key: SortKey::Class,
        title: "Class",
        width: 14,
        priority: 6,
    },
    Col {
        key: SortKey::Acquires,
        title: "Acq",
        width: 6,
        priority: 1,
    },
    Col {
        key: SortKey::Contended,
        title: "Cont",
        width: 6,
        priority: 1,
    },
    Col {
        key: SortKey::Spins,
        title: "Spins",
        width: 6,
        priority: 1,
    },
    Col {
        key: SortKey::ContentionPct,
        title: "Cont%",
        width: 6,
        priority: 2,
    },
    Col {
        key: SortKey::WaitAvg,
        title: "Wavg",
        width: 6,
        priority: 4,
    },
    Col {
        key: SortKey::WaitMax,
        title: "Wmax",
        width: 6,
        priority: 2,
    },
    Col {
        key: SortKey::HoldAvg,
        title: "Havg",
        width: 6,
        priority: 5,
    },
    Col {
        key: SortKey::HoldMax,
        title: "Hmax",
        width: 6,
        priority: 3,
    },
    Col {
        key: SortKey::Rate,
        title: "Trend",
        width: TREND_MIN,
        priority: 3,
    },
];

/// The columns for a source without lock events (an xv6 kernel read through DWARF): the
/// kernel's own counters (`n`, `nts`) and their rates, the holder, and the lock's variable.
const COUNT_COLS: [Col; 7] = [
    Col {
        key: SortKey::Holder,
        title: "Holder",
        width: 6,
        priority: 2,
    },
    Col {
        key: SortKey::Acquires,
        title: "Acq",
        width: 7,
        priority: 1,
    },
    Col {
        key: SortKey::AcqRate,
        title: "Acq/s",
        width: 7,
        priority: 3,
    },
    Col {
        key: SortKey::Spins,
        title: "Spins",
        width: 7,
        priority: 1,
    },
    Col {
        key: SortKey::SpinRate,
        title: "Spins/s",
        width: 7,
        priority: 2,
    },
    Col {
        key: SortKey::Class,
        title: "Class",
        width: 18,
        priority: 5,
    },
    Col {
        key: SortKey::Variable,
        title: "Variable",
        width: VARIABLE_MIN,
        priority: 4,
    },
];

const VARIABLE_MIN: u16 = 16;

/// Picks the columns that fit `width` (inside the borders) and sizes the name and trend. The
/// name gets its full width before the less important columns: it is what users look for.
fn layout_columns(
    all: &[Col],
    width: u16,
    name_want: u16,
    trend_want: u16,
    variable_want: u16,
) -> (u16, Vec<Col>) {
    const ESSENTIAL: u8 = 2;
    let essential: u16 = all
        .iter()
        .filter(|c| c.priority <= ESSENTIAL)
        .map(|c| c.width + 1)
        .sum();
    let name_w = name_want
        .clamp(NAME_MIN, NAME_MAX)
        .min(width.saturating_sub(essential).max(NAME_MIN));
    let mut keep = vec![false; all.len()];
    let mut used = name_w;
    for p in 1..=6 {
        for (i, c) in all.iter().enumerate() {
            if c.priority == p && used + 1 + c.width <= width {
                keep[i] = true;
                used += 1 + c.width;
            }
        }
    }
    let mut cols: Vec<Col> = all
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(c, _)| *c)
        .collect();
    let mut spare = width.saturating_sub(used);
    if let Some(t) = cols.iter_mut().find(|c| c.key == SortKey::Rate) {
        let more = spare.min(trend_want.saturating_sub(TREND_MIN));
        t.width += more;
        spare -= more;
    }
    if let Some(t) = cols.iter_mut().find(|c| c.key == SortKey::Variable) {
        t.width += spare.min(variable_want.saturating_sub(VARIABLE_MIN));
    }
    (name_w, cols)
}

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    if app.locks.detail {
        let lines = app.locks.lines(view);
        let i = app.locks.selected_index(view, &lines);
        let line = lines.get(i).copied();
        drop(lines);
        if area.height >= 40 {
            let [top, bottom] =
                Layout::vertical([Constraint::Length(area.height / 3), Constraint::Min(0)])
                    .areas(area);
            render_table(frame, top, app, view);
            render_detail(frame, bottom, app, view, line);
        } else {
            render_detail(frame, area, app, view, line);
        }
        return;
    }
    render_table(frame, area, app, view);
}

fn render_table(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let st = &app.locks;
    let lines = st.lines(view);
    let locks = &view.report.locks;
    let classes = &view.report.classes;

    let mut title = format!(
        " Locks: {} of {}{} ",
        lines
            .iter()
            .filter(|l| matches!(l, LocksRow::Lock(_)))
            .count(),
        locks.len(),
        if st.grouped { ", by class" } else { "" }
    );
    if !st.filter.is_empty() {
        title.push_str(&format!("· filter \"{}\" ", st.filter));
    }
    if !view.lock_events {
        title.push_str(
            "· the kernel's n/nts; wait and hold times need lock events (lockscope's QEMU plugin) ",
        );
    }
    let blk = block(t, title);
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    if inner.height < 2 || inner.width < NAME_MIN + 8 {
        return;
    }
    if locks.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled(
                "No locks yet: the kernel has not registered any, or no snapshot has arrived.",
                t.dim,
            )),
            inner,
        );
        return;
    }

    let name_want = locks
        .iter()
        .map(|l| l.name.len() as u16 + if st.grouped { 2 } else { 0 })
        .max()
        .unwrap_or(0)
        .max(if st.grouped {
            classes
                .iter()
                .map(|c| c.class.len() as u16 + 7)
                .max()
                .unwrap_or(0)
        } else {
            0
        });
    let trend_want = locks
        .first()
        .map_or(TREND_MIN, |l| l.history_contended.len() as u16);
    let variable_want = view
        .detail
        .locks
        .iter()
        .filter_map(|d| d.path.as_ref().map(|p| p.len() as u16))
        .max()
        .unwrap_or(0);
    let all: &[Col] = if view.lock_events { &COLS } else { &COUNT_COLS };
    let (name_w, cols) = layout_columns(all, inner.width, name_want, trend_want, variable_want);
    let sort = st.sort.effective(view);

    // Header, with the sort column marked and hit areas for the mouse.
    let mut hits = app.hits.borrow_mut();
    let mut x = inner.x;
    let mut header_cells = Vec::with_capacity(cols.len() + 1);
    let arrow = if st.reverse { "▲" } else { "▼" };
    let mut head = |key: SortKey, title: &str, w: u16, right: bool| {
        let sorted = sort == key;
        let text = if sorted {
            format!("{title}{arrow}")
        } else {
            title.to_string()
        };
        let line = Line::from(text).style(if sorted {
            t.sorted_header
        } else {
            t.table_header
        });
        let line = if right { line.right_aligned() } else { line };
        hits.sort_headers.push((Rect::new(x, inner.y, w, 1), key));
        x += w + 1;
        header_cells.push(Cell::from(line));
    };
    head(SortKey::Name, "Name", name_w, false);
    for c in &cols {
        head(
            c.key,
            c.title,
            c.width,
            !matches!(c.key, SortKey::Class | SortKey::Rate | SortKey::Variable),
        );
    }

    let rows_h = inner.height as usize - 1;
    app.page.set(rows_h.max(1));
    let sel = st.selected_index(view, &lines);
    let mut offset = st.offset.get();
    if sel < offset {
        offset = sel;
    } else if sel >= offset + rows_h {
        offset = sel + 1 - rows_h;
    }
    offset = offset.min(lines.len().saturating_sub(rows_h));
    st.offset.set(offset);
    hits.list = Some((
        Rect::new(inner.x, inner.y + 1, inner.width, inner.height - 1),
        offset,
    ));
    drop(hits);

    // Only the visible lines become rows.
    let mut rows = Vec::with_capacity(rows_h);
    for (n, line) in lines.iter().enumerate().skip(offset).take(rows_h) {
        let row = match *line {
            LocksRow::Lock(i) => match locks.get(i) {
                Some(r) => lock_row(view, r, &cols, st.grouped, t),
                None => continue,
            },
            LocksRow::Class(i) => match classes.get(i) {
                Some(c) => class_row(c, &cols, st.collapsed.contains(&c.class), t),
                None => continue,
            },
        };
        rows.push(if n == sel { row.style(t.selected) } else { row });
    }
    let mut widths = Vec::with_capacity(cols.len() + 1);
    widths.push(Constraint::Length(name_w));
    widths.extend(cols.iter().map(|c| Constraint::Length(c.width)));
    let table = Table::new(rows, widths)
        .header(Row::new(header_cells))
        .column_spacing(1);
    frame.render_widget(table, inner);
}

fn right(s: String) -> Cell<'static> {
    Cell::from(Text::from(Line::from(s).right_aligned()))
}

fn trend(history: &[u64], width: u16, t: &Theme) -> Cell<'static> {
    let mut s = String::with_capacity(width as usize * 3);
    format::sparkline(history, width as usize, &mut s);
    Cell::from(Span::styled(s, t.bar))
}

struct Numbers<'a> {
    acquires: u64,
    contended: u64,
    spins: u64,
    pct: Option<f64>,
    wait: &'a TimeStats,
    hold: &'a TimeStats,
    history: &'a [u64],
    rates: Option<&'a Rates>,
    holder: Option<u32>,
    variable: Option<&'a str>,
}

fn per_s(r: Option<&Rates>, f: fn(&Rates) -> f64) -> Cell<'static> {
    right(r.map_or("-".into(), |r| format::count(f(r).max(0.0).round() as u64)))
}

fn number_cells(n: &Numbers<'_>, cols: &[Col], class: &str, t: &Theme) -> Vec<Cell<'static>> {
    cols.iter()
        .map(|c| match c.key {
            SortKey::Variable => Cell::from(n.variable.unwrap_or("(registry only)").to_string()),
            SortKey::Holder => right(n.holder.map_or("-".into(), |h| format!("hart{h}"))),
            SortKey::AcqRate => per_s(n.rates, |r| r.acquires_per_s),
            SortKey::SpinRate => per_s(n.rates, |r| r.spins_per_s),
            SortKey::Class => Cell::from(class.to_string()),
            SortKey::Acquires => right(format::count(n.acquires)),
            SortKey::Contended => right(format::count(n.contended)),
            SortKey::Spins => right(format::count(n.spins)),
            SortKey::ContentionPct => right(format::pct(n.pct)),
            SortKey::WaitAvg => right(format::opt_dur(n.wait.avg_ns)),
            SortKey::WaitMax => right(format::opt_dur(n.wait.max_ns)),
            SortKey::HoldAvg => right(format::opt_dur(n.hold.avg_ns)),
            SortKey::HoldMax => right(format::opt_dur(n.hold.max_ns)),
            SortKey::Rate => trend(n.history, c.width, t),
            SortKey::Name => Cell::from(""),
        })
        .collect()
}

fn lock_row<'a>(view: &'a View, r: &'a LockRow, cols: &[Col], grouped: bool, t: &Theme) -> Row<'a> {
    let name = if grouped {
        Cell::from(format!("  {}", r.name))
    } else {
        Cell::from(r.name.as_str())
    };
    let mut cells = vec![name];
    cells.extend(number_cells(
        &Numbers {
            acquires: r.acquires,
            contended: r.contended,
            spins: r.spins,
            pct: r.contention_pct,
            wait: &r.wait,
            hold: &r.hold,
            history: &r.history_contended,
            rates: r.rates.as_ref(),
            holder: r.holder,
            variable: view.detail.lock(r.id).and_then(|d| d.path.as_deref()),
        },
        cols,
        &r.class,
        t,
    ));
    let row = Row::new(cells);
    if !r.waiters.is_empty() || r.holder.is_some() && !view.lock_events {
        row.style(t.spinning)
    } else {
        row
    }
}

fn class_row<'a>(c: &'a ClassRow, cols: &[Col], folded: bool, t: &Theme) -> Row<'a> {
    let mark = if folded { "▸" } else { "▾" };
    let mut cells = vec![Cell::from(format!(
        "{mark} {} ({})",
        c.class,
        c.locks.len()
    ))];
    cells.extend(number_cells(
        &Numbers {
            acquires: c.acquires,
            contended: c.contended,
            spins: c.spins,
            pct: c.contention_pct,
            wait: &c.wait,
            hold: &c.hold,
            history: &c.history_contended,
            rates: c.rates.as_ref(),
            holder: None,
            variable: None,
        },
        cols,
        "class",
        t,
    ));
    Row::new(cells).style(t.title)
}

fn render_detail(frame: &mut Frame, area: Rect, app: &App, view: &View, line: Option<LocksRow>) {
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
