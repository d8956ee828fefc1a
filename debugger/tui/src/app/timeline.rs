//! How the timeline keys and the mouse on the timeline bar change a replay's UI state
//! ([`ReplayUi`]) and become requests to the replay.

use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent};
use lockscope_engine::recording::{parse_time, Direction, MarkKind};
use lockscope_engine::View;

use super::input::{Action, Effect};
use super::replay_ui::{ReplayUi, TimelineAction};
use super::state::{App, Input, Tab};
use crate::replay::{At, Frame, Request};

/// Mark kinds in the order `m` cycles through them (`None`: any mark).
const KINDS: [Option<MarkKind>; 7] = [
    None,
    Some(MarkKind::Deadlock),
    Some(MarkKind::Panic),
    Some(MarkKind::Stall),
    Some(MarkKind::Inversion),
    Some(MarkKind::ContentionBurst),
    Some(MarkKind::Lost),
];

impl App {
    /// Takes a new frame from the replay: its view is the one shown; its message, once.
    pub fn take_frame(&mut self, frame: Arc<Frame>) {
        self.observe(&frame.view);
        let Some(r) = self.replay.as_mut() else {
            self.replay = Some(ReplayUi::new(frame));
            return;
        };
        if let Some((n, msg)) = &frame.message {
            if *n > r.seen_message {
                r.seen_message = *n;
                self.message = Some(msg.clone());
            }
        }
        r.frame = frame;
    }

    /// The view a replay shows, when this is one.
    pub fn replay_view(&self) -> Option<&Arc<View>> {
        self.replay.as_ref().map(|r| &r.frame.view)
    }

    /// The timeline keys, in a replay only.
    pub(super) fn timeline_key(&self, k: &KeyEvent) -> Option<Action> {
        self.replay.as_ref()?;
        use Direction::{Back, Forward};
        let t = match k.code {
            KeyCode::Char('p') => TimelineAction::PlayPause,
            KeyCode::Char('.') => TimelineAction::StepEvent {
                hart: false,
                dir: Forward,
            },
            KeyCode::Char(',') => TimelineAction::StepEvent {
                hart: false,
                dir: Back,
            },
            KeyCode::Char('>') => TimelineAction::StepEvent {
                hart: true,
                dir: Forward,
            },
            KeyCode::Char('<') => TimelineAction::StepEvent {
                hart: true,
                dir: Back,
            },
            KeyCode::Char(']') => TimelineAction::StepSnapshot(Forward),
            KeyCode::Char('[') => TimelineAction::StepSnapshot(Back),
            KeyCode::Char('}') => TimelineAction::StepMark(Forward),
            KeyCode::Char('{') => TimelineAction::StepMark(Back),
            KeyCode::Char('m') => TimelineAction::CycleMarkKind,
            KeyCode::Char('v') => TimelineAction::Range,
            KeyCode::Char('V') => TimelineAction::ClearRange,
            KeyCode::Char('g') => TimelineAction::GoTo,
            KeyCode::Char('+') => TimelineAction::Faster,
            KeyCode::Char('-') => TimelineAction::Slower,
            _ => return None,
        };
        Some(Action::Timeline(t))
    }

    /// What a timeline key does.
    pub(super) fn timeline_action(&mut self, a: TimelineAction, view: &View) -> Effect {
        let hart = match self.tab {
            Tab::Harts => view.report.harts.get(self.harts_selected).map(|h| h.hart),
            // Outside the Harts view: the hart of the event the cursor is on.
            _ => None,
        };
        let Some(r) = self.replay.as_mut() else {
            self.message = Some("the timeline keys work in `lockscope replay`".into());
            return Effect::None;
        };
        // Else the hart of the cursor's event, or of the last event before it.
        let hart = hart
            .or(r.frame.event.map(|e| e.hart))
            .or(view.recent_events.last().map(|e| e.hart));
        let req = match a {
            TimelineAction::PlayPause => Request::PlayPause,
            TimelineAction::StepEvent { hart: false, dir } => {
                Request::StepEvent { hart: None, dir }
            }
            TimelineAction::StepEvent { hart: true, dir } => match hart {
                Some(h) => Request::StepEvent { hart: Some(h), dir },
                None => {
                    self.message = Some("no hart selected: pick one in the Harts view (2)".into());
                    return Effect::None;
                }
            },
            TimelineAction::StepSnapshot(dir) => Request::StepSnapshot(dir),
            TimelineAction::StepMark(dir) => Request::StepMark {
                kind: r.mark_kind,
                dir,
            },
            TimelineAction::CycleMarkKind => {
                let i = KINDS.iter().position(|k| *k == r.mark_kind).unwrap_or(0);
                r.mark_kind = KINDS[(i + 1) % KINDS.len()];
                let (name, n) = (
                    r.mark_kind_name(),
                    r.frame.timeline.as_ref().map_or(0, |t| {
                        t.marks
                            .iter()
                            .filter(|m| r.mark_kind.is_none_or(|k| m.kind == k))
                            .count()
                    }),
                );
                self.message = Some(format!("{{ }} jump to: {name} ({n} in the recording)"));
                return Effect::None;
            }
            TimelineAction::Range => Request::MarkRange,
            TimelineAction::ClearRange => Request::ClearRange,
            TimelineAction::GoTo => {
                r.goto.clear();
                self.input = Some(Input::GoTo);
                return Effect::None;
            }
            TimelineAction::Faster => Request::Faster,
            TimelineAction::Slower => Request::Slower,
            TimelineAction::Press(x) => {
                r.drag = Some((x, x));
                return self.seek_column(x);
            }
            TimelineAction::Drag(x) => {
                if let Some((from, _)) = r.drag {
                    r.drag = Some((from, x));
                }
                return Effect::None;
            }
            TimelineAction::Release(x) => {
                let Some((from, _)) = r.drag.take() else {
                    return Effect::None;
                };
                if from == x {
                    return Effect::None;
                }
                let (Some(a), Some(b)) = (self.column_time(from), self.column_time(x)) else {
                    return Effect::None;
                };
                Request::Select(At::Time(a), At::Time(b))
            }
        };
        Effect::Replay(req)
    }

    /// Enter after `g`: where the typed time says (target time as the views show it, `+`/`-`
    /// from the cursor, `start`, `end`).
    pub(super) fn goto_done(&mut self) -> Effect {
        self.input = None;
        let Some(r) = self.replay.as_mut() else {
            return Effect::None;
        };
        let text = std::mem::take(&mut r.goto);
        let text = text.trim();
        if r.frame.timeline.is_none() {
            self.message = Some("the timeline is still being built".into());
            return Effect::None;
        }
        let at = match text {
            "start" => At::Start,
            "end" => At::End,
            _ => {
                let (sign, rest) = match text.as_bytes().first() {
                    Some(b'+') => (1i8, &text[1..]),
                    Some(b'-') => (-1, &text[1..]),
                    _ => (0, text),
                };
                match parse_time(rest) {
                    Ok(t) => At::Time(match sign {
                        1 => r.frame.cursor_ns.saturating_add(t),
                        -1 => r.frame.cursor_ns.saturating_sub(t),
                        _ => t,
                    }),
                    Err(e) => {
                        self.message = Some(e);
                        return Effect::None;
                    }
                }
            }
        };
        Effect::Replay(Request::Seek(at))
    }

    /// The target time at a column of the bar.
    fn column_time(&self, x: u16) -> Option<u64> {
        let bar = self.hits.borrow().timeline?;
        let tl = self.replay.as_ref()?.frame.timeline.clone()?;
        let w = bar.width.max(1) as f64;
        let f = ((x.saturating_sub(bar.x)) as f64 + 0.5) / w;
        let span = tl.end_ns.saturating_sub(tl.start_ns) as f64;
        Some(tl.start_ns + (f.clamp(0.0, 1.0) * span) as u64)
    }

    fn seek_column(&mut self, x: u16) -> Effect {
        match self.column_time(x) {
            Some(t) => Effect::Replay(Request::Seek(At::Time(t))),
            None => Effect::None,
        }
    }

    /// True when the mouse is on the timeline bar (its marks row or the bar itself).
    pub(super) fn on_timeline(&self, column: u16, row: u16) -> bool {
        let hits = self.hits.borrow();
        hits.timeline_rows
            .is_some_and(|r| r.contains(ratatui::layout::Position::new(column, row)))
    }
}
