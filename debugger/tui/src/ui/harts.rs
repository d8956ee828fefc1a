//! One row per hart: what it runs, holds and waits for; the selected hart in full below.

use lockscope_engine::analysis::HartRow;
use lockscope_engine::model::HartRun;
use lockscope_engine::View;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::block;
use crate::app::App;
use crate::format;
use crate::theme::Theme;

/// A hart's state in a word, and its style: spinning harts stand out.
fn state(h: &HartRow, t: &Theme) -> (&'static str, Style) {
    if h.waiting.is_some() {
        return ("SPINNING", t.spinning);
    }
    if h.run == HartRun::Running && h.heartbeat_advancing == Some(false) {
        return ("STALLED", t.bad);
    }
    let s = format::hart_run(h.run);
    let style = match h.run {
        HartRun::Panicked => t.bad,
        HartRun::Halted => t.warn,
        HartRun::Running => t.ok,
        _ => t.base,
    };
    (s, style)
}

fn heartbeat(h: &HartRow) -> String {
    let Some(b) = h.heartbeat else {
        return "-".into();
    };
    match (h.heartbeat_advancing, h.heartbeat_still_ns) {
        (Some(false), Some(ns)) => format!("{b} still {}", format::dur(ns)),
        (Some(true), _) => format!("{b} ↑"),
        _ => b.to_string(),
    }
}

fn held_text(view: &View, h: &HartRow, wide: bool) -> String {
    if h.held.is_empty() {
        return "-".into();
    }
    let mut s = String::new();
    for (i, e) in h.held.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&e.name);
        if wide {
            s.push_str(" @");
            s.push_str(&format::file_line(&view.place(e.pc)));
        }
    }
    if h.held_truncated {
        s.push_str(", …");
    }
    s
}

fn waiting_text(view: &View, h: &HartRow, wide: bool) -> String {
    let Some(w) = &h.waiting else {
        return "-".into();
    };
    let mut s = format!("{} {}", w.name, format::dur(w.for_ns));
    if let Some(holder) = w.holder {
        s.push_str(&format!(" ← hart{holder}"));
    }
    if wide {
        s.push_str(" @");
        s.push_str(&format::file_line(&view.place(w.pc)));
    }
    s
}

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let harts = &view.report.harts;
    let table_h = (harts.len() as u16 + 3).min(area.height.saturating_sub(6).max(area.height / 2));
    let [top, bottom] =
        Layout::vertical([Constraint::Length(table_h), Constraint::Min(0)]).areas(area);
    let blk = block(t, format!(" Harts: {} ", harts.len()));
    let inner = blk.inner(top);
    frame.render_widget(blk, top);
    if harts.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("No hart state yet.", t.dim)),
            inner,
        );
        return;
    }
    let sel = app.harts_selected.min(harts.len() - 1);
    let rows_h = (inner.height as usize).saturating_sub(1).max(1);
    app.page.set(rows_h);
    let offset = (sel + 1).saturating_sub(rows_h);
    app.hits.borrow_mut().list = Some((
        Rect::new(
            inner.x,
            inner.y + 1,
            inner.width,
            inner.height.saturating_sub(1),
        ),
        offset,
    ));
    let wide = inner.width >= 110;
    let rows: Vec<Row> = harts
        .iter()
        .enumerate()
        .skip(offset)
        .take(rows_h)
        .map(|(i, h)| {
            let (s, style) = state(h, t);
            let mut cells = vec![
                Cell::from(format!("hart{}", h.hart)),
                Cell::from(Span::styled(s, style)),
                Cell::from(heartbeat(h)),
            ];
            if wide {
                cells.push(Cell::from(h.ops.map_or("-".into(), format::count)));
            }
            cells.push(Cell::from(waiting_text(view, h, wide)));
            cells.push(Cell::from(held_text(view, h, wide)));
            let row = Row::new(cells);
            let row = if h.waiting.is_some() {
                row.style(t.spinning)
            } else {
                row
            };
            if i == sel {
                row.style(t.selected)
            } else {
                row
            }
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(if wide { 18 } else { 10 }),
    ];
    let mut header = vec!["Hart", "State", "Heartbeat"];
    if wide {
        widths.push(Constraint::Length(7));
        header.push("Ops");
    }
    widths.push(Constraint::Percentage(if wide { 50 } else { 40 }));
    widths.push(Constraint::Fill(1));
    header.extend(["Spins on (for, holder)", "Holding"]);
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(t.table_header))
        .column_spacing(1);
    frame.render_widget(table, inner);

    if bottom.height >= 3 {
        render_detail(frame, bottom, app, view, &harts[sel]);
    }
}

fn render_detail(frame: &mut Frame, area: Rect, app: &App, view: &View, h: &HartRow) {
    let t = &app.theme;
    let (s, style) = state(h, t);
    let blk = block(t, format!(" hart{} ", h.hart));
    let mut lines = vec![Line::from(vec![
        Span::styled("state ", t.dim),
        Span::styled(s, style),
        Span::styled("  heartbeat ", t.dim),
        Span::raw(heartbeat(h)),
        Span::styled("  ops ", t.dim),
        Span::raw(h.ops.map_or("-".into(), |o| o.to_string())),
        Span::styled("  events ", t.dim),
        Span::raw(format!("{} (lost {})", h.events, h.lost)),
    ])];
    if let Some(pc) = h.pc {
        let mut s = String::new();
        format::place(&view.place(pc), &mut s);
        lines.push(Line::from(vec![Span::styled("pc ", t.dim), Span::raw(s)]));
    }
    match &h.waiting {
        Some(w) => {
            let mut s = format!("{} for {} at ", w.name, format::dur(w.for_ns));
            format::place(&view.place(w.pc), &mut s);
            if let Some(holder) = w.holder {
                s.push_str(&format!("; held by hart{holder}"));
            }
            lines.push(Line::from(vec![
                Span::styled("spins on ", t.dim),
                Span::styled(s, t.spinning),
            ]));
        }
        None => lines.push(Line::from(vec![
            Span::styled("spins on ", t.dim),
            Span::raw("nothing"),
        ])),
    }
    if h.held.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("holds ", t.dim),
            Span::raw("no locks"),
        ]));
    } else {
        lines.push(Line::styled("holds (outermost first):", t.dim));
    }
    for e in &h.held {
        let mut s = format!("  {}", e.name);
        if let Some(ns) = e.held_for_ns {
            s.push_str(&format!(" for {}", format::dur(ns)));
        }
        s.push_str(", acquired at ");
        format::place(&view.place(e.pc), &mut s);
        lines.push(Line::raw(s));
    }
    if h.held_truncated {
        lines.push(Line::styled(
            "  … and more than the kernel could list",
            t.dim,
        ));
    }
    if !h.order_in_sync {
        lines.push(Line::styled(
            "events of this hart were lost: its lock-order edges are not counted",
            t.dim,
        ));
    }
    frame.render_widget(Paragraph::new(lines).block(blk), area);
}
