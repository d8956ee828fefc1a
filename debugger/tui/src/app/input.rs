//! Input becomes [`Action`]s: keys (given what is being typed) and the mouse.

use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind,
};
use lockscope_engine::Command;

use super::replay_ui::TimelineAction;
use super::state::{App, Input, Tab};
use crate::replay::Request;

/// Everything the user (or the loop) can ask of the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Time passed: check for new data, expire messages.
    Tick,
    Resize,
    NextTab,
    PrevTab,
    Go(Tab),
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    /// `/`: start typing a filter for the current view.
    Filter,
    FilterChar(char),
    FilterBackspace,
    /// Enter while typing: keep the filter.
    FilterDone,
    /// Esc while typing: drop the filter.
    FilterCancel,
    SortNext,
    SortReverse,
    GroupByClass,
    Enter,
    Back,
    Pause,
    Help,
    InterruptResume,
    /// `h` on the Panic view: the other harts' backtraces.
    OtherHarts,
    /// Enter on the Console view: start typing at the guest console.
    ConsoleInput,
    /// A character typed at the guest console.
    TypeChar(char),
    /// A control byte typed at the guest console (Enter, Backspace, Ctrl-letter).
    TypeByte(u8),
    /// Esc while typing at the console: stop typing.
    ConsoleDone,
    Click {
        column: u16,
        row: u16,
    },
    ScrollUp,
    ScrollDown,
    /// The mouse moved with the left button held, or let go of it.
    Drag {
        column: u16,
        row: u16,
    },
    Release {
        column: u16,
        row: u16,
    },
    /// A replay's timeline (keys and the mouse on its bar).
    Timeline(TimelineAction),
}

/// What an action asks of the loop around the App.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    Send(Command),
    /// A request to the replay.
    Replay(Request),
    /// Type these bytes at the guest console (at most 4: one character).
    Type([u8; 4], u8),
}

impl App {
    pub fn action_for(&self, event: &Event) -> Option<Action> {
        match event {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.key_action(k),
            Event::Mouse(m) => match m.kind {
                MouseEventKind::Down(MouseButton::Left) => Some(Action::Click {
                    column: m.column,
                    row: m.row,
                }),
                MouseEventKind::Drag(MouseButton::Left) => Some(Action::Drag {
                    column: m.column,
                    row: m.row,
                }),
                MouseEventKind::Up(MouseButton::Left) => Some(Action::Release {
                    column: m.column,
                    row: m.row,
                }),
                MouseEventKind::ScrollUp => Some(Action::ScrollUp),
                MouseEventKind::ScrollDown => Some(Action::ScrollDown),
                _ => None,
            },
            Event::Resize(..) => Some(Action::Resize),
            _ => None,
        }
    }

    fn key_action(&self, k: &KeyEvent) -> Option<Action> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(k.code, KeyCode::Char('c')) {
            return Some(Action::Quit);
        }
        if self.input == Some(Input::Console) {
            return Some(match k.code {
                KeyCode::Esc => Action::ConsoleDone,
                KeyCode::Enter => Action::TypeByte(b'\r'),
                KeyCode::Backspace => Action::TypeByte(0x7f),
                KeyCode::Tab => Action::TypeByte(b'\t'),
                KeyCode::Char(c) if ctrl && c.is_ascii_alphabetic() => {
                    Action::TypeByte(c.to_ascii_lowercase() as u8 & 0x1f)
                }
                KeyCode::Char(c) => Action::TypeChar(c),
                _ => return None,
            });
        }
        if self.input.is_some() {
            return Some(match k.code {
                KeyCode::Enter => Action::FilterDone,
                KeyCode::Esc => Action::FilterCancel,
                KeyCode::Backspace => Action::FilterBackspace,
                KeyCode::Up => Action::Up,
                KeyCode::Down => Action::Down,
                KeyCode::Char(c) if !ctrl => Action::FilterChar(c),
                _ => return None,
            });
        }
        if let Some(a) = self.timeline_key(k) {
            return Some(a);
        }
        Some(match k.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Char('?') => Action::Help,
            KeyCode::Tab => Action::NextTab,
            KeyCode::BackTab => Action::PrevTab,
            KeyCode::Char(c @ '1'..='9') => Action::Go(Tab::ALL[c as usize - '1' as usize]),
            KeyCode::Enter if self.tab == Tab::Console => Action::ConsoleInput,
            KeyCode::Char('j') | KeyCode::Down => Action::Down,
            KeyCode::Char('k') | KeyCode::Up => Action::Up,
            KeyCode::Char('d') if ctrl => Action::PageDown,
            KeyCode::Char('u') if ctrl => Action::PageUp,
            KeyCode::PageDown | KeyCode::Char(' ') => Action::PageDown,
            KeyCode::PageUp => Action::PageUp,
            KeyCode::Char('g') | KeyCode::Home => Action::Top,
            KeyCode::Char('G') | KeyCode::End => Action::Bottom,
            KeyCode::Char('/') => Action::Filter,
            KeyCode::Char('s') => Action::SortNext,
            KeyCode::Char('S') => Action::SortReverse,
            KeyCode::Char('c') => Action::GroupByClass,
            KeyCode::Enter => Action::Enter,
            KeyCode::Esc => Action::Back,
            KeyCode::Char('p') => Action::Pause,
            KeyCode::Char('i') => Action::InterruptResume,
            KeyCode::Char('h') => Action::OtherHarts,
            KeyCode::Char('l') | KeyCode::Right => Action::Enter,
            KeyCode::Left => Action::Back,
            _ => return None,
        })
    }
}
