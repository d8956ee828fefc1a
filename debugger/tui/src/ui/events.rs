//! The recent lock events, newest at the bottom, and the guest console under them.

use lockscope_engine::model::{EventKind, LockEvent};
use lockscope_engine::View;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::block;
use crate::app::{lock_name, App};
use crate::format;

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let console_h = (area.height / 3).clamp(3, 14);
    let [ev_a, con_a] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(console_h)]).areas(area);

    let rows_idx = app.events.rows(view);
    let mut title = format!(
        " Events: {} kept of {} · lost {} ",
        view.recent_events.len(),
        format::count(view.events_total),
        format::count(view.lost_total)
    );
    if !app.events.filter.is_empty() {
        title.push_str(&format!(
            "· filter \"{}\": {} match ",
            app.events.filter,
            rows_idx.len()
        ));
    }
    if app.events.back > 0 {
        title.push_str(&format!("· {} back (G: newest) ", app.events.back));
    }
    let title_style = if view.lost_total > 0 { t.warn } else { t.title };
    let blk = block(t, Line::from(title).style(title_style));
    let inner = blk.inner(ev_a);
    frame.render_widget(blk, ev_a);
    if inner.height >= 2 {
        if rows_idx.is_empty() {
            let msg = if view.recent_events.is_empty() {
                "No events: tracing is off (trace=off), or none has been read yet."
            } else {
                "No event matches the filter."
            };
            frame.render_widget(Paragraph::new(Span::styled(msg, t.dim)), inner);
        } else {
            let rows_h = inner.height as usize - 1;
            app.page.set(rows_h);
            let wide = inner.width >= 110;
            let end = rows_idx.len().saturating_sub(app.events.back);
            // In a replay, the cursor's event is highlighted, with the events after it below
            // (dimmed), when the list follows the cursor.
            let replay = app.replay.as_ref().map(|r| &r.frame);
            let upcoming: &[LockEvent] = match replay {
                Some(f) if app.events.back == 0 && app.events.filter.is_empty() => &f.upcoming,
                _ => &[],
            };
            let after = upcoming.len().min(rows_h / 3);
            let start = end.saturating_sub(rows_h - after);
            let cursor = replay.and_then(|f| f.event).filter(|e| {
                app.events.back == 0
                    && rows_idx[..end]
                        .last()
                        .and_then(|&i| view.recent_events.get(i))
                        == Some(e)
            });
            let past = rows_idx[start..end]
                .iter()
                .filter_map(|&i| view.recent_events.get(i))
                .enumerate()
                .map(|(k, e)| {
                    let at_cursor = cursor.is_some() && start + k + 1 == end;
                    (e, if at_cursor { Some(t.selected) } else { None })
                });
            let next = upcoming[..after].iter().map(|e| (e, Some(t.dim)));
            let rows: Vec<Row> = past
                .chain(next)
                .map(|(e, row_style)| {
                    let mut site = String::new();
                    match view.places.get(&e.pc) {
                        Some(p) if wide => format::place(p, &mut site),
                        Some(p) => format::place_compact(p, &mut site),
                        None => site.push_str(&format!("{:#x}", e.pc)),
                    }
                    let kind_style = match e.kind {
                        EventKind::Spin => t.spinning,
                        EventKind::Acquired { contended: true } => t.warn,
                        _ => t.base,
                    };
                    // The cursor's row is marked, not only highlighted (NO_COLOR, captures).
                    let time = match row_style {
                        Some(s) if s == t.selected => format!("▶{}", format::timestamp(e.time_ns)),
                        _ => format::timestamp(e.time_ns),
                    };
                    let row = Row::new(vec![
                        Cell::from(time),
                        Cell::from(format!("hart{}", e.hart)),
                        Cell::from(Span::styled(format::event_kind(e.kind), kind_style)),
                        Cell::from(match replay.and_then(|f| f.timeline.as_ref()) {
                            Some(tl) => tl.lock_name(view, e.lock).into_owned(),
                            None => lock_name(view, e.lock).into_owned(),
                        }),
                        Cell::from(site),
                    ]);
                    match row_style {
                        Some(s) => row.style(s),
                        None => row,
                    }
                })
                .collect();
            let widths = [
                Constraint::Length(11),
                Constraint::Length(5),
                Constraint::Length(8),
                Constraint::Length(if wide { 20 } else { 15 }),
                Constraint::Fill(1),
            ];
            let header =
                Row::new(["Time (s)", "Hart", "Kind", "Lock", "Site"]).style(t.table_header);
            frame.render_widget(
                Table::new(rows, widths).header(header).column_spacing(1),
                inner,
            );
        }
    }
    drop(rows_idx);

    let blk = block(t, format!(" Console: {} lines ", view.console.len()));
    let inner = blk.inner(con_a);
    let n = inner.height as usize;
    let lines: Vec<Line> = view.console[view.console.len().saturating_sub(n)..]
        .iter()
        .map(|l| Line::raw(l.as_str()))
        .collect();
    frame.render_widget(Paragraph::new(lines).block(blk), con_a);
}
