//! A replay's timeline bar, under the views: the whole recording, the cursor, the marks
//! (contention bursts, losses, panics, deadlocks, stalls, inversions) and a selected range.

use lockscope_engine::model::EventKind;
use lockscope_engine::recording::MarkKind;
use lockscope_engine::View;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::block;
use crate::app::{lock_name, App};
use crate::format;
use crate::replay::Frame as ReplayFrame;
use crate::theme::Theme;

/// Rows the bar takes: none in a terminal too short to spare them.
pub(super) fn height(app: &App, area: Rect) -> u16 {
    match &app.replay {
        Some(_) if area.height >= 14 => 4,
        _ => 0,
    }
}

/// The letter of a mark, most severe first when several share a column.
fn symbol(kind: MarkKind) -> (char, u8) {
    match kind {
        MarkKind::Panic => ('P', 0),
        MarkKind::Deadlock => ('D', 1),
        MarkKind::Stall => ('S', 2),
        MarkKind::Inversion => ('I', 3),
        MarkKind::Lost => ('L', 4),
        MarkKind::ContentionBurst => ('^', 5),
    }
}

fn mark_style(kind: MarkKind, t: &Theme) -> Style {
    match kind {
        MarkKind::Panic | MarkKind::Deadlock | MarkKind::Stall => t.bad,
        MarkKind::Inversion | MarkKind::Lost => t.warn,
        MarkKind::ContentionBurst => t.spinning,
    }
}

/// Target time in seconds, as the header's `t` and the Events view show it.
fn secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let Some(r) = &app.replay else { return };
    let t = &app.theme;
    let f = &r.frame;
    let Some(tl) = &f.timeline else {
        return loading(frame, area, t, f);
    };
    let mut title = format!(
        " Timeline {} of {}..{} ",
        secs(f.cursor_ns),
        secs(tl.start_ns),
        secs(tl.end_ns)
    );
    if f.playing {
        title.push_str(&format!("· ▶ {}x ", f.speed));
    }
    if let Some(rg) = &f.range {
        title.push_str(&format!(
            "· Δ {}..{}: counters are changes over the range ",
            secs(rg.from_ns),
            secs(rg.to_ns)
        ));
    } else if let Some((_, at)) = f.anchor {
        title.push_str(&format!("· range from {} (v ends it) ", secs(at)));
    }
    if !tl.problems.is_empty() {
        title.push_str(&format!("· ⚠ {} problem(s) reading it ", tl.problems.len()));
    }
    let title_style = if tl.problems.is_empty() {
        t.title
    } else {
        t.warn
    };
    let blk = block(t, Line::from(title).style(title_style))
        .title_bottom(Line::from(cursor_event(f, view)).style(t.dim));
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    if inner.height < 2 || inner.width < 4 {
        return;
    }
    let w = inner.width as usize;
    let span = tl.end_ns.saturating_sub(tl.start_ns).max(1);
    let col = |ns: u64| -> usize {
        ((ns.saturating_sub(tl.start_ns) as u128 * w as u128 / span as u128) as usize).min(w - 1)
    };
    // Marks: the most severe of each column.
    let mut marks: Vec<Option<MarkKind>> = vec![None; w];
    for m in &tl.marks {
        let c = col(m.time_ns);
        if marks[c].is_none_or(|k| symbol(m.kind).1 < symbol(k).1) {
            marks[c] = Some(m.kind);
        }
    }
    let chosen = r.mark_kind;
    let marks_line: Vec<Span> = marks
        .iter()
        .map(|k| match k {
            Some(k) => {
                let style = mark_style(*k, t);
                let style = if chosen == Some(*k) {
                    style.patch(t.focus)
                } else {
                    style
                };
                Span::styled(symbol(*k).0.to_string(), style)
            }
            None => Span::raw(" "),
        })
        .collect();
    // The bar: the range (or a drag in progress), the anchor of a range being made, the cursor.
    let mut cells: Vec<(char, Style)> = vec![('─', t.dim); w];
    let range = f
        .range
        .map(|rg| (col(rg.from_ns), col(rg.to_ns)))
        .or_else(|| {
            let (a, b) = r.drag?;
            let x0 = app.hits.borrow().timeline.map_or(inner.x, |b| b.x);
            let (a, b) = (a.saturating_sub(x0) as usize, b.saturating_sub(x0) as usize);
            Some((a.min(b).min(w - 1), a.max(b).min(w - 1)))
        });
    if let Some((a, b)) = range {
        for c in &mut cells[a..=b] {
            *c = ('═', t.focus);
        }
    }
    if let Some((_, at)) = f.anchor {
        cells[col(at)] = ('│', t.warn);
    }
    cells[col(f.cursor_ns)] = ('┃', t.selected);
    let bar_line: Vec<Span> = cells
        .into_iter()
        .map(|(c, s)| Span::styled(c.to_string(), s))
        .collect();
    let marks_area = Rect::new(inner.x, inner.y, inner.width, 1);
    let bar_area = Rect::new(inner.x, inner.y + 1, inner.width, 1);
    frame.render_widget(Paragraph::new(Line::from(marks_line)), marks_area);
    frame.render_widget(Paragraph::new(Line::from(bar_line)), bar_area);
    let mut hits = app.hits.borrow_mut();
    hits.timeline = Some(bar_area);
    hits.timeline_rows = Some(Rect::new(inner.x, inner.y, inner.width, 2));
}

/// The event under the cursor, in one line: `hart1 acquire* bcache.bucket2 bio::bget bio.rs:593`.
fn cursor_event(f: &ReplayFrame, view: &View) -> String {
    let Some(e) = f.event else {
        return format!(
            " element {} of {} ",
            f.cursor,
            f.timeline.as_ref().map_or(0, |t| t.len)
        );
    };
    let mut site = String::new();
    match view.places.get(&e.pc) {
        Some(p) => format::place_compact(p, &mut site),
        None => site.push_str(&format!("{:#x}", e.pc)),
    }
    let kind = match e.kind {
        EventKind::Spin => "spins on",
        EventKind::Acquired { contended: true } => "acquires (after spinning)",
        EventKind::Acquired { contended: false } => "acquires",
        EventKind::Released => "releases",
    };
    let lock = match &f.timeline {
        Some(tl) => tl.lock_name(view, e.lock),
        None => lock_name(view, e.lock),
    };
    format!(" at the cursor: hart{} {kind} {lock} at {site} ", e.hart)
}

fn loading(frame: &mut Frame, area: Rect, t: &Theme, f: &ReplayFrame) {
    let text = match (&f.failed, f.loading) {
        (Some(e), _) => Line::styled(format!("cannot replay: {e}"), t.bad),
        (None, Some((done, total))) => {
            let pct = (done * 100).checked_div(total).map_or(100, |p| p.min(100));
            let w = area.width.saturating_sub(40) as u64;
            let filled = (w * pct / 100) as usize;
            Line::from(vec![
                Span::raw(format!(
                    "building the timeline (keyframes, marks): {pct:>3}% "
                )),
                Span::styled("█".repeat(filled), t.bar),
                Span::styled("░".repeat(w as usize - filled), t.dim),
            ])
        }
        _ => Line::raw("opening the recording"),
    };
    let blk = block(t, " Timeline ");
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    frame.render_widget(Paragraph::new(text), inner);
}
