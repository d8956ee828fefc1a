//! A kernel panic: message, trap, backtrace, source and disassembly; every hart on `h`.

use lockscope_engine::model::FrameKind;
use lockscope_engine::monitor::{short_function, FrameLine, PanicDetail, PanicDiagnosis};
use lockscope_engine::View;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{block, scrolled, wrap};
use crate::app::App;
use crate::format;
use crate::theme::Theme;

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let t = &app.theme;
    let (Some(detail), Some(p)) = (&view.panic, &view.report.panic) else {
        frame.render_widget(
            Paragraph::new(vec![
                Line::raw("No panic."),
                Line::styled("This view opens by itself when the kernel panics.", t.dim),
            ])
            .block(block(t, " Panic ")),
            area,
        );
        return;
    };

    let width = area.width.saturating_sub(2) as usize;
    let mut summary = Vec::new();
    for (i, l) in wrap(
        &format!("hart {} panicked: {}", p.hart, p.message),
        width,
        2,
    )
    .into_iter()
    .enumerate()
    {
        summary.push(Line::styled(l, if i == 0 { t.bad } else { t.base }));
    }
    match &p.trap {
        Some(tr) => summary.push(Line::from(vec![
            Span::styled("trap ", t.dim),
            Span::styled(tr.scause.name.clone(), t.warn),
            Span::raw(format!(
                " (scause {:#x})  sepc {:#x}  stval {:#x}",
                tr.scause.raw, tr.sepc, tr.stval
            )),
        ])),
        None => summary.push(Line::styled(
            "not from a trap: the kernel called panic itself",
            t.dim,
        )),
    }
    if let Some(f) = &detail.fault {
        let mut s = String::new();
        format::place(f, &mut s);
        let mut spans = vec![Span::styled("at ", t.dim), Span::styled(s, t.title)];
        if let Some((outer, _)) = f.inlined_into.first() {
            spans.push(Span::styled(
                format!("  inlined into {}", short_function(outer)),
                t.dim,
            ));
        }
        summary.push(Line::from(spans));
    }
    if let Some(d) = &detail.diagnosis {
        if let Some(a) = &d.access {
            for (i, l) in wrap(&a.sentence, width, 2).into_iter().enumerate() {
                summary.push(Line::styled(l, if i == 0 { t.warn } else { t.base }));
            }
        }
        if let Some(p) = &d.process {
            summary.push(Line::from(vec![
                Span::styled("process ", t.dim),
                Span::raw(format!("pid {} ({})", p.pid, p.name)),
            ]));
        }
    }
    let [top, body] = Layout::vertical([
        Constraint::Length(summary.len() as u16 + 2),
        Constraint::Min(0),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(summary).block(block(t, " Panic ")), top);

    let left = if app.other_harts {
        hart_lines(detail, t)
    } else {
        let mut left = backtrace_lines(
            &format!("Backtrace of hart {}", p.hart),
            &detail.backtrace,
            t,
        );
        if let Some(d) = &detail.diagnosis {
            left.push(Line::raw(""));
            left.extend(diagnosis_lines(d, width, t));
        }
        left
    };
    let right = code_lines(detail, t);
    let hint = if app.other_harts {
        " All harts · h: this hart only · j/k scroll "
    } else {
        " h: other harts · j/k scroll "
    };
    if body.width >= 120 {
        let [l, r] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
            .areas(body);
        // Both columns scroll together; the longer one sets the limit.
        let longer = left.len().max(right.len());
        let mut left = left;
        left.resize(longer, Line::raw(""));
        scrolled(frame, l, left, &app.panic_scroll, block(t, hint));
        let max = app.panic_scroll.max.get();
        frame.render_widget(
            Paragraph::new(right)
                .block(block(t, " Source and disassembly "))
                .scroll((app.panic_scroll.offset.min(max) as u16, 0)),
            r,
        );
    } else {
        let mut all = left;
        all.push(Line::raw(""));
        all.extend(right);
        scrolled(frame, body, all, &app.panic_scroll, block(t, hint));
    }
}

/// What the stop showed beyond the stack: the faulting access's candidates, the locks the
/// hart holds and where it took them, why no buffer was free.
fn diagnosis_lines(d: &PanicDiagnosis, width: usize, t: &Theme) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    if let Some(a) = &d.access {
        if !a.candidates.is_empty() {
            out.push(Line::styled(
                "Candidates (the base register names nothing; guesses, not a verdict)",
                t.title,
            ));
            for c in &a.candidates {
                out.extend(wrap(&format!("  {c}"), width, 4).into_iter().map(Line::raw));
            }
        }
        if let Some(n) = &a.detail.note {
            out.extend(
                wrap(n, width, 2)
                    .into_iter()
                    .map(|l| Line::styled(l, t.dim)),
            );
        }
        out.push(Line::raw(""));
    }
    if !d.held.is_empty() {
        out.push(Line::styled("Locks this hart holds", t.title));
        for h in &d.held {
            let mut s = format!("  {}", h.name);
            if let Some(p) = h.path.as_deref().filter(|p| *p != h.name) {
                s.push_str(&format!(" ({p})"));
            }
            if let Some(site) = &h.site {
                s.push_str(" taken at ");
                format::place(site, &mut s);
            }
            out.extend(
                wrap(&s, width, 4)
                    .into_iter()
                    .map(|l| Line::styled(l, t.spinning)),
            );
        }
        out.push(Line::styled(
            "  (where each was taken is inferred from the stack: lock events would say for sure)",
            t.dim,
        ));
        out.push(Line::raw(""));
    }
    if let Some(b) = &d.bufs {
        out.push(Line::styled("Why no buffer was free", t.title));
        out.extend(wrap(&b.sentence, width, 2).into_iter().map(Line::raw));
        out.push(Line::styled("  Buf  Block   Ref  Sleeplock holder", t.dim));
        for r in &b.referenced {
            let holder = r
                .holder
                .as_ref()
                .map_or("-".to_string(), |p| format!("pid {} ({})", p.pid, p.name));
            out.push(Line::raw(format!(
                "  {:>3} {:>6} {:>5}  {holder}",
                r.index, r.blockno, r.refcnt
            )));
        }
        out.push(Line::raw(""));
    }
    out
}

fn frame_line(n: usize, f: &FrameLine, t: &Theme) -> Line<'static> {
    let func = f
        .function
        .as_deref()
        .map_or("??", short_function)
        .to_string();
    let loc = f
        .location
        .as_deref()
        .map_or(String::new(), |l| format::short_location(l).to_string());
    let mut spans = vec![
        Span::styled(format!("#{n:<2} {:#x} ", f.pc), t.dim),
        Span::styled(func, if f.function.is_some() { t.base } else { t.dim }),
    ];
    if f.inlined {
        spans.push(Span::styled(" [inlined]", t.warn));
    }
    if f.kind == FrameKind::Trap {
        spans.push(Span::styled(" [trap]", t.bad));
    }
    if !loc.is_empty() {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(loc, t.title));
    }
    Line::from(spans)
}

fn backtrace_lines(title: &str, frames: &[FrameLine], t: &Theme) -> Vec<Line<'static>> {
    let mut out = vec![Line::styled(title.to_string(), t.title)];
    if frames.is_empty() {
        out.push(Line::styled("  no frames were recorded", t.dim));
    }
    // Inlined lines share their address with the next: number the addresses, not the lines.
    let mut n = 0;
    let mut last = None;
    for f in frames {
        if last.is_some_and(|pc| pc != f.pc) {
            n += 1;
        }
        last = Some(f.pc);
        out.push(frame_line(n, f, t));
    }
    out
}

fn hart_lines(d: &PanicDetail, t: &Theme) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    if d.harts.is_empty() {
        out.push(Line::styled(
            "No hart stacks: the guest was not stopped through the gdb stub.",
            t.dim,
        ));
    }
    for h in &d.harts {
        let pc = h.pc.map_or(String::new(), |pc| format!(" pc {pc:#x}"));
        let title = format!("hart {} ({}){pc}", h.hart, format::hart_run(h.run));
        if h.frames.is_empty() {
            out.push(Line::styled(title, t.title));
            out.push(Line::styled(
                "  no stack captured (the target was not stopped through gdb)",
                t.dim,
            ));
        } else {
            out.extend(backtrace_lines(&title, &h.frames, t));
        }
        out.push(Line::raw(""));
    }
    out
}

fn code_lines(d: &PanicDetail, t: &Theme) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    match &d.source {
        Some(src) => {
            out.push(Line::styled(
                format::short_location(&src.path).to_string(),
                t.title,
            ));
            for (i, text) in src.lines.iter().enumerate() {
                let n = src.first_line as usize + i;
                let focus = n == src.focus as usize;
                let mark = if focus { ">" } else { " " };
                let line = format!("{mark}{n:>5} │ {text}");
                out.push(if focus {
                    Line::styled(line, t.focus)
                } else {
                    Line::raw(line)
                });
            }
        }
        None => out.push(Line::styled(
            "source not available (the file is not on this machine)",
            t.dim,
        )),
    }
    out.push(Line::raw(""));
    out.push(Line::styled("Disassembly", t.title));
    if d.disassembly.is_empty() {
        out.push(Line::styled("  not available", t.dim));
    }
    for a in &d.disassembly {
        let mark = if a.at_pc { ">" } else { " " };
        let line = format!("{mark} {:#x}  {}", a.address, a.text);
        out.push(if a.at_pc {
            Line::styled(line, t.focus)
        } else {
            Line::raw(line)
        });
    }
    out
}
