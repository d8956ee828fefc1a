//! How an [`Action`] changes the [`App`].

use std::sync::Arc;

use lockscope_engine::{Command, TargetState, View};
use ratatui::layout::Position;

use super::input::{Action, Effect};
use super::locks::LocksRow;
use super::replay_ui::TimelineAction;
use super::state::{App, Input, Tab};

impl App {
    /// Applies an action. `live` is the newest published view.
    pub fn update(&mut self, action: Action, live: &Arc<View>) -> Effect {
        if !matches!(
            action,
            Action::Tick | Action::Resize | Action::Drag { .. } | Action::Release { .. }
        ) {
            self.message = None;
        }
        if self.show_help && !matches!(action, Action::Quit | Action::Tick | Action::Resize) {
            // Any key closes the help.
            self.show_help = false;
            return Effect::None;
        }
        let view = self.shown(live).clone();
        let view = &*view;
        let page = match self.tab {
            Tab::Panic => self.panic_scroll.page.get(),
            Tab::Deadlock => self.deadlock_scroll.page.get(),
            Tab::Processes => self.processes_scroll.page.get(),
            Tab::Findings => self.findings_scroll.page.get(),
            _ => self.page.get(),
        }
        .max(1) as isize;
        match action {
            Action::Quit => return Effect::Quit,
            Action::Tick | Action::Resize => {}
            Action::Help => self.show_help = true,
            Action::NextTab => self.tab = self.tab.offset(1, view, self.console_input),
            Action::PrevTab => self.tab = self.tab.offset(-1, view, self.console_input),
            Action::ConsoleInput if self.console_input => {
                self.input = Some(Input::Console);
                self.console_back = 0;
            }
            Action::ConsoleInput => {
                self.message = Some(
                    "this session has no console input (lockscope run --xv6 has; with lockscope qemu, type in its terminal)"
                        .into(),
                )
            }
            Action::ConsoleDone => self.input = None,
            Action::TypeChar(c) => {
                let mut b = [0u8; 4];
                let n = c.encode_utf8(&mut b).len() as u8;
                return Effect::Type(b, n);
            }
            Action::TypeByte(x) => return Effect::Type([x, 0, 0, 0], 1),
            Action::Go(t) if !t.shown(view, self.console_input) => {
                self.message = Some(match t {
                    Tab::Events => "no Events view: this kernel's locks deliver no events (the console is view 9)".into(),
                    Tab::Console => "the console is at the bottom of view 4, Events".into(),
                    _ => format!("no {} view: this source does not read them (an xv6 kernel's does)", t.title()),
                });
            }
            Action::Go(t) => self.tab = t,
            Action::Up | Action::ScrollUp => self.move_by(view, -1),
            Action::Down | Action::ScrollDown => self.move_by(view, 1),
            Action::PageUp => self.move_by(view, -page),
            Action::PageDown => self.move_by(view, page),
            Action::Top => self.move_by(view, isize::MIN / 2),
            Action::Bottom => self.move_by(view, isize::MAX / 2),
            Action::Filter => match self.tab {
                Tab::Locks => self.input = Some(Input::LocksFilter),
                Tab::Events => self.input = Some(Input::EventsFilter),
                _ => self.message = Some("/ filters the Locks and Events views".into()),
            },
            Action::FilterChar(c) => self.edit_filter(|f| f.push(c)),
            Action::FilterBackspace => self.edit_filter(|f| {
                f.pop();
            }),
            Action::FilterDone if self.input == Some(Input::GoTo) => return self.goto_done(),
            Action::FilterDone => self.input = None,
            Action::FilterCancel => {
                self.edit_filter(String::clear);
                self.input = None;
            }
            Action::SortNext | Action::SortReverse if self.tab == Tab::Locks => {
                if action == Action::SortNext {
                    self.locks.sort = self.locks.sort.next(view);
                    self.locks.reverse = false;
                } else {
                    self.locks.reverse = !self.locks.reverse;
                }
                self.locks.changed();
                self.message = Some(format!(
                    "sorted by {}{}",
                    self.locks.sort.effective(view).label(),
                    if self.locks.reverse { ", reversed" } else { "" }
                ));
            }
            Action::SortNext | Action::SortReverse => {
                self.message = Some("s sorts the Locks view".into())
            }
            Action::GroupByClass if self.tab == Tab::Locks => {
                self.locks.grouped = !self.locks.grouped;
                self.locks.changed();
            }
            Action::GroupByClass => self.message = Some("c groups the Locks view by class".into()),
            Action::Enter => self.enter(view),
            Action::Back => self.back(),
            Action::Pause => {
                self.frozen = match self.frozen.take() {
                    Some(_) => {
                        let now = live.clone();
                        self.observe(&now);
                        None
                    }
                    None => Some(live.clone()),
                }
            }
            Action::InterruptResume => return self.interrupt_resume(live),
            Action::OtherHarts => {
                if self.tab == Tab::Panic {
                    self.other_harts = !self.other_harts;
                } else {
                    self.message = Some("h shows the other harts on the Panic view".into());
                }
            }
            Action::Click { column, row } if self.on_timeline(column, row) => {
                return self.timeline_action(TimelineAction::Press(column), view)
            }
            Action::Click { column, row } => self.click(view, column, row),
            Action::Drag { column, .. } if self.replay.is_some() => {
                return self.timeline_action(TimelineAction::Drag(column), view)
            }
            Action::Release { column, .. } if self.replay.is_some() => {
                return self.timeline_action(TimelineAction::Release(column), view)
            }
            Action::Drag { .. } | Action::Release { .. } => {}
            Action::Timeline(t) => return self.timeline_action(t, view),
        }
        Effect::None
    }

    fn edit_filter(&mut self, f: impl FnOnce(&mut String)) {
        match self.input {
            Some(Input::LocksFilter) => {
                f(&mut self.locks.filter);
                self.locks.changed();
            }
            Some(Input::EventsFilter) => {
                f(&mut self.events.filter);
                self.events.version += 1;
                self.events.back = 0;
            }
            Some(Input::GoTo) => {
                if let Some(r) = self.replay.as_mut() {
                    f(&mut r.goto);
                }
            }
            Some(Input::Console) | None => {}
        }
    }

    pub(super) fn move_by(&mut self, view: &View, delta: isize) {
        let step = |cur: usize, len: usize| -> usize {
            (cur as isize)
                .saturating_add(delta)
                .clamp(0, len.saturating_sub(1) as isize) as usize
        };
        match self.tab {
            Tab::Locks => {
                let (cur, len) = {
                    let lines = self.locks.lines(view);
                    (self.locks.selected_index(view, &lines), lines.len())
                };
                self.locks.select(view, step(cur, len));
            }
            Tab::Harts => self.harts_selected = step(self.harts_selected, view.report.harts.len()),
            Tab::Bcache => {
                let n = view.report.bcache.as_ref().map_or(0, |b| b.buckets.len());
                self.bucket_selected = step(self.bucket_selected, n);
            }
            Tab::Events => {
                // Up goes back in time.
                let n = self.events.rows(view).len();
                self.events.back = (self.events.back as isize)
                    .saturating_sub(delta)
                    .clamp(0, n.saturating_sub(1) as isize)
                    as usize;
            }
            Tab::Panic => self.panic_scroll.by(delta),
            Tab::Deadlock => self.deadlock_scroll.by(delta),
            Tab::Processes => self.processes_scroll.by(delta),
            Tab::Findings => self.findings_scroll.by(delta),
            Tab::Console => {
                // Up goes back in time.
                self.console_back = (self.console_back as isize)
                    .saturating_sub(delta)
                    .clamp(0, view.console.len().saturating_sub(1) as isize)
                    as usize;
            }
        }
    }

    pub(super) fn enter(&mut self, view: &View) {
        if self.tab != Tab::Locks {
            return;
        }
        match self.locks.selected_line(view) {
            Some(LocksRow::Class(i)) => {
                let Some(class) = view.report.classes.get(i).map(|c| c.class.clone()) else {
                    return;
                };
                if !self.locks.collapsed.remove(&class) {
                    self.locks.collapsed.insert(class);
                }
                self.locks.changed();
            }
            Some(LocksRow::Lock(_)) => self.locks.detail = true,
            None => {}
        }
    }

    pub(super) fn back(&mut self) {
        match self.tab {
            Tab::Locks if self.locks.detail => self.locks.detail = false,
            Tab::Locks if !self.locks.filter.is_empty() => {
                self.locks.filter.clear();
                self.locks.changed();
            }
            Tab::Events if !self.events.filter.is_empty() => {
                self.events.filter.clear();
                self.events.version += 1;
            }
            Tab::Panic if self.other_harts => self.other_harts = false,
            _ => {}
        }
    }

    fn interrupt_resume(&mut self, live: &View) -> Effect {
        if !self.controllable {
            self.message =
                Some("this session cannot stop the guest (a replay, or it has ended)".into());
            return Effect::None;
        }
        match &live.state {
            TargetState::Stopped { .. } => {
                self.message = Some("resuming the guest".into());
                Effect::Send(Command::Resume)
            }
            TargetState::Running | TargetState::Starting => {
                self.message = Some("interrupting the guest".into());
                Effect::Send(Command::Interrupt)
            }
            TargetState::Ended { .. } => {
                self.message = Some("the target has ended".into());
                Effect::None
            }
        }
    }

    fn click(&mut self, view: &View, column: u16, row: u16) {
        let at = Position::new(column, row);
        let (tab, sort, list) = {
            let hits = self.hits.borrow();
            let tab = hits.tabs.iter().find(|(r, _)| r.contains(at)).map(|x| x.1);
            let sort = hits
                .sort_headers
                .iter()
                .find(|(r, _)| r.contains(at))
                .map(|x| x.1);
            let list = hits
                .list
                .filter(|(r, _)| r.contains(at))
                .map(|(r, first)| first + (row - r.y) as usize);
            (tab, sort, list)
        };
        if let Some(t) = tab {
            self.tab = t;
        } else if let Some(k) = sort {
            if self.locks.sort == k {
                self.locks.reverse = !self.locks.reverse;
            } else {
                self.locks.sort = k;
                self.locks.reverse = false;
            }
            self.locks.changed();
        } else if let Some(i) = list {
            match self.tab {
                Tab::Locks => {
                    let again = {
                        let lines = self.locks.lines(view);
                        i < lines.len() && self.locks.selected_index(view, &lines) == i
                    };
                    if again {
                        self.enter(view);
                    } else {
                        self.locks.select(view, i);
                    }
                }
                Tab::Harts => {
                    self.harts_selected = i.min(view.report.harts.len().saturating_sub(1))
                }
                Tab::Bcache => {
                    let n = view.report.bcache.as_ref().map_or(0, |b| b.buckets.len());
                    self.bucket_selected = i.min(n.saturating_sub(1));
                }
                _ => {}
            }
        }
    }
}
