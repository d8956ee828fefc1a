//! The lock table, grouped or not, and a lock's detail.

use lockscope_engine::analysis::{ClassRow, LockRow, Rates, TimeStats};
use lockscope_engine::View;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::{block, lock_detail};
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
        width: 21,
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
            lock_detail::render_detail(frame, bottom, app, view, line);
        } else {
            lock_detail::render_detail(frame, area, app, view, line);
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
