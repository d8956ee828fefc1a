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
    if !view.detail.cpus.is_empty() && !view.lock_events {
        render_cpus(frame, inner, app, view, sel, offset, rows_h);
        if bottom.height >= 3 {
            render_cpu_detail(frame, bottom, app, view, &harts[sel]);
        }
        return;
    }
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

/// Locks whose holder is `hart` (the kernel's `cpu` field), by name.
fn held_by(view: &View, hart: u32) -> Vec<String> {
    view.report
        .locks
        .iter()
        .filter(|l| l.holder == Some(hart))
        .map(|l| {
            view.detail
                .lock(l.id)
                .and_then(|d| d.path.clone())
                .unwrap_or_else(|| l.name.clone())
        })
        .collect()
}

/// The harts of a kernel whose per-CPU records the source reads (xv6's `struct cpu`): what each
/// runs, its interrupt-disable depth, and the locks whose `cpu` is it.
fn render_cpus(
    frame: &mut Frame,
    inner: Rect,
    app: &App,
    view: &View,
    sel: usize,
    offset: usize,
    rows_h: usize,
) {
    let t = &app.theme;
    let rows: Vec<Row> = view
        .report
        .harts
        .iter()
        .enumerate()
        .skip(offset)
        .take(rows_h)
        .map(|(i, h)| {
            let cpu = view
                .detail
                .cpus
                .iter()
                .find(|(hart, _)| *hart == h.hart)
                .map(|(_, c)| c);
            let proc = cpu.map_or("-".to_string(), |c| match &c.proc {
                Some(p) => format!("{} (pid {})", p.name, p.pid),
                None => "scheduler".to_string(),
            });
            let held = held_by(view, h.hart);
            let row = Row::new(vec![
                Cell::from(format!("hart{}", h.hart)),
                Cell::from(proc),
                Cell::from(cpu.map_or("-".into(), |c| c.noff.to_string())),
                Cell::from(cpu.map_or("-".into(), |c| {
                    if c.intena { "on" } else { "off" }.to_string()
                })),
                Cell::from(if held.is_empty() {
                    "-".to_string()
                } else {
                    held.join(", ")
                }),
            ]);
            if i == sel {
                row.style(t.selected)
            } else {
                row
            }
        })
        .collect();
    let widths = [
        Constraint::Length(6),
        Constraint::Length(24),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    let header =
        Row::new(["Hart", "Process", "noff", "intena", "Holds (lock's cpu)"]).style(t.table_header);
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        inner,
    );
}

fn render_cpu_detail(frame: &mut Frame, area: Rect, app: &App, view: &View, h: &HartRow) {
    let t = &app.theme;
    let blk = block(t, format!(" hart{} ", h.hart));
    let cpu = view
        .detail
        .cpus
        .iter()
        .find(|(hart, _)| *hart == h.hart)
        .map(|(_, c)| c);
    let mut lines = Vec::new();
    if let Some(c) = cpu {
        let proc = match &c.proc {
            Some(p) => format!("{} (pid {}, proc[{}])", p.name, p.pid, p.slot),
            None => "none: in its scheduler".to_string(),
        };
        lines.push(Line::from(vec![
            Span::styled("runs ", t.dim),
            Span::raw(proc),
        ]));
        lines.push(Line::from(vec![
            Span::styled("push_off depth (noff) ", t.dim),
            Span::raw(c.noff.to_string()),
            Span::styled("  interrupts before it (intena) ", t.dim),
            Span::raw(if c.intena { "on" } else { "off" }),
        ]));
    }
    let held = held_by(view, h.hart);
    lines.push(Line::from(vec![
        Span::styled("holds ", t.dim),
        Span::raw(if held.is_empty() {
            "no spinlock".to_string()
        } else {
            held.join(", ")
        }),
    ]));
    if let Some(pc) = h.pc {
        let mut s = String::new();
        format::place(&view.place(pc), &mut s);
        lines.push(Line::from(vec![Span::styled("pc ", t.dim), Span::raw(s)]));
    }
    lines.push(Line::styled(
        "Which lock a hart spins on, and where it took the ones it holds, need lock events: they come with lockscope's QEMU plugin.",
        t.dim,
    ));
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(blk),
        area,
    );
}
