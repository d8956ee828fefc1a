//! The kernel's processes, its sleeplocks and its reader-writer locks, for a source that reads
//! them (an xv6 kernel through its DWARF): who runs where, who sleeps on what, who holds which
//! sleeplock, and every field of each reader-writer lock as its author defined it.

use lockscope_engine::model::ProcessSnapshot;
use lockscope_engine::View;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::Frame;

use super::{block, scrolled};
use crate::app::App;
use crate::theme::Theme;

fn process_line(p: &ProcessSnapshot, t: &Theme) -> Line<'static> {
    let hart = p.hart.map_or("-".to_string(), |h| format!("hart{h}"));
    let waits = match (&p.chan_name, p.chan) {
        (Some(n), _) => n.clone(),
        (None, Some(c)) if c != 0 => format!("{c:#x}"),
        _ => String::new(),
    };
    let style = match p.state.as_str() {
        "RUNNING" => t.ok,
        "ZOMBIE" => t.dim,
        _ => t.base,
    };
    let killed = if p.killed { " (killed)" } else { "" };
    Line::from(vec![
        Span::raw(format!("{:>4} {:>5} {:<16} ", p.slot, p.pid, p.name)),
        Span::styled(format!("{:<9}", p.state), style),
        Span::raw(format!(" {:<6} {waits}{killed}", hart)),
    ])
}

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let d = &view.detail;
    let mut lines: Vec<Line> = Vec::new();
    lines.push(Line::styled(
        format!("Processes: {} in use", d.processes.len()),
        t.title,
    ));
    if d.processes.is_empty() {
        lines.push(Line::styled(
            "  none read (no proc[] table, or no snapshot yet)",
            t.dim,
        ));
    } else {
        lines.push(Line::styled(
            format!(
                "{:>4} {:>5} {:<16} {:<9} {:<6} Sleeps on",
                "Slot", "PID", "Name", "State", "Hart"
            ),
            t.table_header,
        ));
        lines.extend(d.processes.iter().map(|p| process_line(p, t)));
    }

    lines.push(Line::from(""));
    let held = d.sleeplocks.iter().filter(|s| s.locked).count();
    lines.push(Line::styled(
        format!("Sleeplocks: {} ({} held)", d.sleeplocks.len(), held),
        t.title,
    ));
    // Held ones first: those are what a process waits for.
    let mut sl: Vec<_> = d.sleeplocks.iter().collect();
    sl.sort_by_key(|s| !s.locked);
    for s in sl {
        let holder = match (&s.holder, s.locked) {
            (Some(p), _) => format!("held by pid {} ({})", p.pid, p.name),
            (None, true) => "held (holder unknown)".to_string(),
            (None, false) => "free".to_string(),
        };
        let name = s.name.as_deref().unwrap_or("-");
        let style = if s.locked { t.warn } else { t.base };
        lines.push(Line::from(vec![
            Span::raw(format!("  {:<28} {:<12} ", s.path, name)),
            Span::styled(holder, style),
        ]));
    }

    lines.push(Line::from(""));
    lines.push(Line::styled(
        format!("Reader-writer locks: {}", d.rwlocks.len()),
        t.title,
    ));
    if d.rwlocks.is_empty() {
        lines.push(Line::styled(
            "  none in the kernel's globals (the 2025 lab's struct rwspinlock appears here)",
            t.dim,
        ));
    }
    for rw in &d.rwlocks {
        let inner = rw
            .lock
            .and_then(|id| view.report.locks.iter().find(|l| l.id == id))
            .map_or("-".to_string(), |l| match l.holder {
                Some(h) => format!("inner lock {} held by hart{h}", l.name),
                None => format!("inner lock {} free", l.name),
            });
        lines.push(Line::from(vec![
            Span::raw(format!("  {} ", rw.path)),
            Span::styled(format!("@{:#x}  {inner}", rw.addr), t.dim),
        ]));
        let fields: Vec<String> = rw
            .fields
            .iter()
            .map(|f| format!("{}={}", f.name, f.text))
            .collect();
        for chunk in fields.chunks(6) {
            lines.push(Line::raw(format!("    {}", chunk.join("  "))));
        }
    }
    scrolled(
        frame,
        area,
        lines,
        &app.processes_scroll,
        block(t, " Processes · sleeplocks · reader-writer locks "),
    );
}
