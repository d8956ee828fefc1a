//! Rendering: pure functions of an [`App`] and a [`View`]. One module per view, plus the
//! header, tab bar, status bar and help drawn here.

mod bcache;
mod console;
mod deadlock;
mod events;
mod findings;
mod harts;
mod lock_detail;
mod locks;
mod panic;
mod procs;
mod timeline;

use lockscope_engine::{Ending, Severity, SourceKind, StopReason, TargetState, Verdict, View};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use crate::app::{App, Input, Tab};
use crate::format;
use crate::theme::Theme;

/// Smallest terminal the layout is drawn in; below it a one-line notice is shown.
pub const MIN_WIDTH: u16 = 40;
pub const MIN_HEIGHT: u16 = 8;

/// Draws the whole screen.
pub fn render(frame: &mut Frame, app: &App, view: &View) {
    let area = frame.area();
    *app.hits.borrow_mut() = Default::default();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "lockscope needs {MIN_WIDTH}x{MIN_HEIGHT}, this is {}x{} (q quits)",
            area.width, area.height
        );
        frame.render_widget(
            Paragraph::new(msg).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    // Anything but ok gets one line under the tabs, except in the view that details it.
    let shows_verdict = match view.check.verdict {
        Verdict::Ok => false,
        Verdict::Panic => app.tab != Tab::Panic,
        Verdict::Deadlock | Verdict::Stall | Verdict::LockOrderInversion => {
            app.tab != Tab::Deadlock
        }
        Verdict::Fail | Verdict::SpinlockAcrossSleep => true,
    };
    let [header, tabs, verdict, body, bar, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(shows_verdict as u16),
        Constraint::Min(0),
        Constraint::Length(timeline::height(app, area)),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(frame, header, app, view);
    render_tabs(frame, tabs, app, view);
    if shows_verdict {
        render_verdict(frame, verdict, app, view);
    }
    match app.tab {
        Tab::Locks => locks::render(frame, body, app, view),
        Tab::Harts => harts::render(frame, body, app, view),
        Tab::Bcache => bcache::render(frame, body, app, view),
        Tab::Events => events::render(frame, body, app, view),
        Tab::Panic => panic::render(frame, body, app, view),
        Tab::Deadlock => deadlock::render(frame, body, app, view),
        Tab::Processes => procs::render(frame, body, app, view),
        Tab::Findings => findings::render(frame, body, app, view),
        Tab::Console => console::render(frame, body, app, view),
    }
    if bar.height > 0 {
        timeline::render(frame, bar, app, view);
    }
    render_status(frame, status, app, view);
    if app.show_help {
        render_help(frame, body, app);
    }
}

/// A bordered block with a title.
pub(crate) fn block<'a>(theme: &Theme, title: impl Into<Line<'a>>) -> Block<'a> {
    Block::bordered()
        .border_style(theme.border)
        .title(title.into().style(theme.title))
}

/// Pieces laid out left to right by priority: the most important ones survive a narrow
/// terminal, and the survivors keep their order.
struct Segments<'a> {
    items: Vec<(u8, Vec<Span<'a>>)>,
}

impl<'a> Segments<'a> {
    fn new() -> Self {
        Segments { items: Vec::new() }
    }

    fn push(&mut self, priority: u8, spans: Vec<Span<'a>>) {
        self.items.push((priority, spans));
    }

    fn fit(self, width: usize, sep: Span<'a>) -> Line<'a> {
        let w = |s: &[Span]| s.iter().map(Span::width).sum::<usize>();
        let sep_w = sep.width();
        let mut keep = vec![false; self.items.len()];
        let mut used = 0;
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        order.sort_by_key(|&i| self.items[i].0);
        for i in order {
            let need = w(&self.items[i].1) + if used > 0 { sep_w } else { 0 };
            if used + need <= width {
                keep[i] = true;
                used += need;
            }
        }
        let mut spans = Vec::new();
        for (i, (_, s)) in self.items.into_iter().enumerate() {
            if keep[i] {
                if !spans.is_empty() {
                    spans.push(sep.clone());
                }
                spans.extend(s);
            }
        }
        Line::from(spans)
    }
}

/// What the target is doing, in a word or three, and how alarming that is.
pub(crate) fn target_state(view: &View, theme: &Theme) -> (String, Style) {
    let panicked = view.panic.is_some();
    match &view.state {
        TargetState::Starting => ("starting".into(), theme.header),
        TargetState::Running if panicked => ("PANICKED".into(), theme.bad),
        TargetState::Running => ("● running".into(), theme.header),
        TargetState::Stopped { reason } => (
            match reason {
                StopReason::Panic => "stopped: PANIC".into(),
                StopReason::Interrupted => "stopped (interrupted)".into(),
                StopReason::Other => "stopped".into(),
                // A look at a suspected hang: it stays stopped once two looks confirm it.
                StopReason::Sample if view.check.severity == Severity::Fault => {
                    "stopped: HANG".into()
                }
                StopReason::Sample => "stopped to look at a suspected hang".into(),
            },
            if panicked { theme.bad } else { theme.warn },
        ),
        TargetState::Ended { ending } => match ending {
            Ending::Exited { status } => {
                let what = match *status {
                    0 => "pass",
                    2 => "fail",
                    3 => "bad bootargs",
                    4 => "panic",
                    _ => "error",
                };
                let style = if *status == 0 {
                    theme.header
                } else {
                    theme.bad
                };
                (format!("exited {status} ({what})"), style)
            }
            Ending::Lost { reason } => (format!("CONNECTION LOST: {reason}"), theme.bad),
            Ending::Detached => ("detached".into(), theme.header),
        },
    }
}

fn render_header(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let h = t.header;
    let mut seg = Segments::new();
    seg.push(0, vec![Span::styled(" lockscope", h)]);
    if app.paused() {
        seg.push(
            0,
            vec![Span::styled(
                "DISPLAY PAUSED (guest keeps running, p resumes)",
                t.warn,
            )],
        );
    }
    let (state, style) = target_state(view, t);
    seg.push(0, vec![Span::styled(state, style)]);
    let source = match view.source {
        SourceKind::SharedRam => "shared RAM".to_string(),
        SourceKind::GdbPoll => match view.pauses.count {
            0 => "gdb polling".to_string(),
            _ => format!("gdb polling, pause {}", format::dur(view.pauses.median_ns)),
        },
        SourceKind::Trace => "replay".to_string(),
    };
    let source = match app.poll_hz {
        Some(hz) => format!("{source} @ {hz:.0} Hz"),
        None => source,
    };
    seg.push(3, vec![Span::styled(source, h)]);
    if let Some(reader) = &view.kernel_reader {
        seg.push(2, vec![Span::styled(reader.clone(), h)]);
    }
    if let Some(g) = &view.user_gdb {
        let style = if g.starts_with("stopped") { t.warn } else { h };
        seg.push(0, vec![Span::styled(g.clone(), style)]);
    }
    if let Some(c) = &view.config {
        let mut s = String::new();
        if let Some(w) = &c.workload {
            s.push_str(w);
        }
        if let Some(k) = &c.kalloc {
            s.push_str(" kalloc=");
            s.push_str(k);
        }
        if let Some(b) = &c.bcache {
            s.push_str(" bcache=");
            s.push_str(b);
        }
        if let Some(b) = c.bug.as_deref().filter(|b| *b != "none") {
            s.push_str(" bug=");
            s.push_str(b);
        }
        seg.push(2, vec![Span::styled(s.trim().to_string(), h)]);
        seg.push(4, vec![Span::styled(format!("{} harts", c.nharts), h)]);
    }
    if let Some(ns) = view.report.time_ns {
        seg.push(5, vec![Span::styled(format!("t {}", format::dur(ns)), h)]);
    }
    if view.lock_events {
        let lost_style = if view.lost_total > 0 { t.warn } else { h };
        seg.push(
            1,
            vec![Span::styled(
                format!("lost {}", format::count(view.lost_total)),
                lost_style,
            )],
        );
        seg.push(
            4,
            vec![Span::styled(
                format!("events {}", format::count(view.events_total)),
                h,
            )],
        );
    }
    if !view.detail.findings.is_empty() {
        seg.push(
            1,
            vec![Span::styled(
                format!("{} findings", view.detail.findings.len()),
                t.bad,
            )],
        );
    }
    let v = view.check.verdict;
    let vstyle = match v {
        Verdict::Ok => h,
        Verdict::LockOrderInversion | Verdict::SpinlockAcrossSleep => t.warn,
        _ => t.bad,
    };
    seg.push(1, vec![Span::styled(v.as_str().to_uppercase(), vstyle)]);
    let line = seg.fit(area.width as usize, Span::styled(" │ ", h));
    frame.render_widget(Paragraph::new(line).style(h), area);
}

/// The verdict sentence, as `lockscope check` prints it, cut to the width.
fn render_verdict(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let style = match view.check.verdict {
        Verdict::LockOrderInversion | Verdict::SpinlockAcrossSleep => t.warn,
        _ => t.bad,
    };
    let text = format::fit(&view.verdict_sentence(), area.width as usize);
    frame.render_widget(Paragraph::new(Span::styled(text, style)), area);
}

fn render_tabs(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let mut spans = Vec::new();
    let mut x = area.x;
    let mut hits = app.hits.borrow_mut();
    let alert = |tab: Tab| match tab {
        Tab::Panic => view.panic.is_some(),
        Tab::Deadlock => {
            !view.report.deadlocks.is_empty()
                || !view.report.lock_order.inversions.is_empty()
                || view.report.stall.is_some()
        }
        Tab::Findings => !view.detail.findings.is_empty(),
        _ => false,
    };
    let tabs = Tab::visible(view, app.console_input);
    // Long titles first, short ones when the terminal is narrow.
    let full: usize = tabs.iter().map(|t| t.title().len() + 4).sum();
    let short = full > area.width as usize;
    for tab in tabs {
        let title = if short {
            tab.short_title()
        } else {
            tab.title()
        };
        let mark = if alert(tab) { "!" } else { " " };
        let text = format!("{}{} {}", mark, tab.index() + 1, title);
        let style = if tab == app.tab {
            t.tab_active
        } else if alert(tab) {
            t.tab_alert
        } else {
            t.tab
        };
        let w = text.chars().count() as u16 + 1;
        let w_clip = w.min(area.right().saturating_sub(x));
        hits.tabs.push((Rect::new(x, area.y, w_clip, 1), tab));
        x = x.saturating_add(w + 1);
        spans.push(Span::styled(format!("{text} "), style));
        spans.push(Span::raw(" "));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn key<'a>(t: &Theme, k: &'a str, what: &'a str) -> [Span<'a>; 2] {
    [Span::styled(k, t.key), Span::raw(what)]
}

fn render_status(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    if app.input == Some(Input::Console) {
        let mut spans = vec![Span::styled("typing to the guest console  ", t.warn)];
        spans.extend(key(t, "Esc", " stop typing"));
        frame.render_widget(Paragraph::new(Line::from(spans)), area);
        return;
    }
    let prompt = match app.input {
        Some(Input::LocksFilter) => Some(("filter: ", &app.locks.filter)),
        Some(Input::EventsFilter) => Some(("filter: ", &app.events.filter)),
        Some(Input::GoTo) => Some((
            "go to (3.2s, 1500ms, +1s, -200ms, end): ",
            app.replay.as_ref().map_or(&app.locks.filter, |r| &r.goto),
        )),
        Some(Input::Console) | None => None,
    };
    if let Some((prompt, text)) = prompt {
        let mut spans = vec![
            Span::styled(prompt, t.key),
            Span::raw(text.clone()),
            Span::styled("█", t.dim),
            Span::raw("   "),
        ];
        spans.extend(key(t, "Enter", " keep  "));
        spans.extend(key(t, "Esc", " clear"));
        frame.render_widget(Paragraph::new(Line::from(spans)), area);
        return;
    }
    if let Some(msg) = &app.message {
        frame.render_widget(Paragraph::new(Span::styled(msg.clone(), t.warn)), area);
        return;
    }
    // Hints by priority: the essentials survive an 80-column terminal.
    let mut seg = Segments::new();
    let mut add = |p: u8, k: &'static str, what: &'static str| {
        seg.push(p, key(t, k, what).to_vec());
    };
    add(0, "?", " help");
    add(0, "q", " quit");
    if app.replay.is_some() {
        add(0, ",.", " step");
        add(1, "{}", " mark");
        add(1, "m", " kind");
        add(1, "g", " go to");
        add(1, "v", " range");
        add(2, "p", " play");
        add(3, "[]", " snapshot");
        add(3, "<>", " hart step");
    }
    add(2, "1-9", " views");
    match app.tab {
        Tab::Locks if app.locks.detail => {
            add(1, "j/k", " next lock");
            add(1, "Esc", " back");
        }
        Tab::Locks => {
            add(1, "/", " filter");
            add(1, "s/S", " sort");
            add(1, "c", " class");
            add(1, "Enter", " detail");
        }
        Tab::Events => {
            add(1, "/", " filter");
            add(1, "j/k", " scroll");
        }
        Tab::Panic => add(1, "h", " all harts"),
        Tab::Console if app.console_input => add(1, "Enter", " type"),
        _ => add(1, "j/k", " move"),
    }
    if app.replay.is_none() {
        add(
            2,
            "p",
            if app.paused() {
                " resume display"
            } else {
                " pause"
            },
        );
    }
    if app.controllable {
        add(3, "i", " interrupt/resume");
    }
    let sort = (app.tab == Tab::Locks).then(|| {
        format!(
            "sort: {} {}",
            app.locks.sort.effective(view).label(),
            if app.locks.reverse { "▲" } else { "▼" }
        )
    });
    let sort_w = sort.as_ref().map_or(0, |s| s.chars().count() as u16 + 1);
    let hints_w = area.width.saturating_sub(sort_w);
    let line = seg.fit(hints_w as usize, Span::raw("  "));
    // The sort column shows only when the hints leave room for it.
    match sort {
        Some(sort) if hints_w >= line.width() as u16 && line.width() + 4 < area.width as usize => {
            let [left, right] =
                Layout::horizontal([Constraint::Min(0), Constraint::Length(sort_w)]).areas(area);
            frame.render_widget(Paragraph::new(line), left);
            frame.render_widget(
                Paragraph::new(Span::styled(sort, t.dim)).alignment(Alignment::Right),
                right,
            );
        }
        _ => frame.render_widget(Paragraph::new(line), area),
    }
}

const HELP: &[(&str, &str)] = &[
    ("q Ctrl-C", "quit (the terminal is restored)"),
    ("?", "this help; any key closes it"),
    ("Tab 1-9", "next view, or view by number"),
    ("j k ↑ ↓", "move, scroll"),
    ("PgUp PgDn g G", "page; first, last"),
    ("/", "filter Locks or Events; Enter keeps, Esc clears"),
    ("s S", "sort Locks by the next column; reverse"),
    ("c", "group locks by class; Enter folds a class"),
    ("Enter Esc", "lock detail: histograms, sites, holder; back"),
    ("p", "pause the display; the guest keeps running"),
    ("i", "interrupt or resume the guest (live sessions)"),
    ("h", "Panic view: every hart's backtrace"),
    (
        "Enter",
        "Console view: type at the guest console; Esc stops",
    ),
    ("mouse", "click tabs, rows, column titles; wheel scrolls"),
];

/// The timeline keys, in a replay.
const REPLAY_HELP: &[(&str, &str)] = &[
    (", .", "step one event back, forward (any hart)"),
    (
        "< >",
        "one event of the hart (Harts view's, else the cursor's)",
    ),
    ("[ ]", "previous, next snapshot"),
    ("{ }", "previous, next mark; m: which kind"),
    ("g", "go to a time: 3.2s, +1s, -200ms, end"),
    ("v V", "range from/to the cursor (deltas); clear it"),
    ("p + -", "play, pause; faster, slower"),
    ("mouse", "click the bar to seek, drag on it for a range"),
];

fn render_help(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let w = 68.min(area.width);
    let replay: &[(&str, &str)] = if app.replay.is_some() {
        REPLAY_HELP
    } else {
        &[]
    };
    let h = (HELP.len() as u16 + replay.len() as u16 + 4).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let mut lines: Vec<Line> = HELP
        .iter()
        .filter(|(k, _)| app.replay.is_none() || !matches!(*k, "p" | "i"))
        .chain(replay)
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>13}  "), t.key),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "Spins = failed test-and-set attempts (the lab's #test-and-set).",
        t.dim,
    ));
    frame.render_widget(Clear, r);
    frame.render_widget(Paragraph::new(lines).block(block(t, " Keys ")), r);
}

/// Word-wraps `text` to `width` columns. Written here because the text views need the exact
/// line count to scroll, which ratatui's wrapping does not expose in a stable API.
pub(crate) fn wrap(text: &str, width: usize, indent: usize) -> Vec<String> {
    let width = width.max(indent + 8);
    let body = text.trim_start_matches(' ');
    let lead = text.len() - body.len();
    let mut out = Vec::new();
    let mut line = " ".repeat(lead);
    let mut len = lead;
    for word in body.split(' ') {
        let wl = word.chars().count();
        if len > lead && len + 1 + wl > width {
            out.push(std::mem::take(&mut line));
            line.push_str(&" ".repeat(indent));
            len = indent;
        } else if len > lead {
            line.push(' ');
            len += 1;
        }
        line.push_str(word);
        len += wl;
    }
    out.push(line);
    out
}

/// Renders pre-built lines scrolled by `scroll`, remembering how far it can scroll.
pub(crate) fn scrolled(
    frame: &mut Frame,
    area: Rect,
    lines: Vec<Line<'_>>,
    scroll: &crate::app::Scroll,
    block: Block<'_>,
) {
    let inner = block.inner(area);
    scroll.page.set(inner.height.max(1) as usize);
    let max = lines.len().saturating_sub(inner.height as usize);
    scroll.max.set(max);
    let at = scroll.offset.min(max);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .scroll((at.min(u16::MAX as usize) as u16, 0)),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_breaks_at_spaces_and_indents_continuations() {
        assert_eq!(
            wrap("hart1 holds a -> waits b <- held by hart2", 16, 2),
            vec!["hart1 holds a ->", "  waits b <-", "  held by hart2"]
        );
        assert_eq!(wrap("", 10, 0), vec![""]);
        assert_eq!(
            wrap("    hart0 took a then b", 14, 6),
            vec!["    hart0 took", "      a then b"]
        );
    }
}
