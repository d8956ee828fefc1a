//! The guest console, newest at the bottom; with the session's console input, Enter starts
//! typing at it (keys go to QEMU's serial input) and Esc stops.

use lockscope_engine::View;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::block;
use crate::app::{App, Input};

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let typing = app.input == Some(Input::Console);
    let [text_a, hint_a] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
    let mut title = format!(" Console: {} lines ", view.console.len());
    if app.console_back > 0 {
        title.push_str(&format!("· {} back (G: newest) ", app.console_back));
    }
    if typing {
        title.push_str("· TYPING TO THE GUEST ");
    }
    let blk = block(t, title);
    let inner = blk.inner(text_a);
    let n = inner.height as usize;
    app.page.set(n.max(1));
    let end = view.console.len().saturating_sub(app.console_back);
    let lines: Vec<Line> = view.console[end.saturating_sub(n)..end]
        .iter()
        .map(|l| Line::raw(l.as_str()))
        .collect();
    let blk = if typing {
        blk.border_style(t.warn)
    } else {
        blk
    };
    frame.render_widget(Paragraph::new(lines).block(blk), text_a);
    let hint = if typing {
        Line::styled(
            "every key goes to the guest (Enter sends the line, Ctrl-letters as control characters)",
            t.warn,
        )
    } else if app.console_input {
        Line::from(vec![
            Span::styled("Enter", t.key),
            Span::raw(" type at the guest console  "),
            Span::styled("j/k", t.key),
            Span::raw(" scroll"),
        ])
    } else {
        Line::styled(
            "read only: this session has no console input (with lockscope qemu, type in QEMU's terminal)",
            t.dim,
        )
    };
    frame.render_widget(Paragraph::new(hint), hint_a);
}
