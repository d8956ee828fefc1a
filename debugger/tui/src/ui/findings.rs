//! What the source found wrong in the kernel's state that the lab's own tests may miss: lock
//! names that are not strings, locks the lab's statistics skip, double frees, broken bucket
//! lists. Each one makes a lab "OK" meaningless.

use lockscope_engine::View;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::Frame;

use super::{block, scrolled, wrap};
use crate::app::App;

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let f = &view.detail.findings;
    let mut lines: Vec<Line> = Vec::new();
    let width = area.width.saturating_sub(2) as usize;
    if f.is_empty() {
        for l in wrap(
            "No findings: lock names are strings, the allocator's and the buffer cache's locks are named as the lab counts them, and no list is broken.",
            width,
            0,
        ) {
            lines.push(Line::styled(l, t.ok));
        }
        lines.push(Line::styled(
            "Findings on a running guest are shown once two looks agree.",
            t.dim,
        ));
    }
    for x in f {
        let kind = serde_json::to_value(x.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        lines.push(Line::from(vec![
            Span::styled(kind, t.bad),
            Span::raw("  "),
            Span::styled(x.path.clone(), t.title),
        ]));
        for l in wrap(&format!("  {}", x.message), width, 4) {
            lines.push(Line::raw(l));
        }
    }
    let title = if f.is_empty() {
        " Findings ".to_string()
    } else {
        format!(
            " Findings: {} (each makes the lab's OK meaningless) ",
            f.len()
        )
    };
    let title_style = if f.is_empty() { t.title } else { t.bad };
    scrolled(
        frame,
        area,
        lines,
        &app.findings_scroll,
        block(t, Line::from(title).style(title_style)),
    );
}
