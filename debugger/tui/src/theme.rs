//! Styles. With `NO_COLOR` set (https://no-color.org) everything is monochrome and emphasis is
//! bold, reverse and underline only.

use ratatui::style::{Color, Modifier, Style};

/// Every style the views use, by meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Theme {
    /// False under `NO_COLOR`.
    pub color: bool,
    pub base: Style,
    /// The header line.
    pub header: Style,
    pub tab: Style,
    pub tab_active: Style,
    /// A Panic or Deadlock tab with something to show.
    pub tab_alert: Style,
    pub border: Style,
    pub title: Style,
    pub table_header: Style,
    /// The column the lock table is sorted by.
    pub sorted_header: Style,
    pub selected: Style,
    /// Less important text: raw addresses, zeros, hints.
    pub dim: Style,
    pub ok: Style,
    pub warn: Style,
    pub bad: Style,
    /// A hart spinning on a lock, and a lock with waiters.
    pub spinning: Style,
    pub bar: Style,
    /// The faulting line or instruction.
    pub focus: Style,
    /// Key names in the status bar and help.
    pub key: Style,
}

impl Theme {
    pub fn color() -> Self {
        let s = Style::new();
        Theme {
            color: true,
            base: s,
            header: s.bg(Color::Blue).fg(Color::White),
            tab: s.fg(Color::Gray),
            tab_active: s
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
            tab_alert: s
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
            border: s.fg(Color::DarkGray),
            title: s.fg(Color::Cyan).add_modifier(Modifier::BOLD),
            table_header: s.fg(Color::Yellow).add_modifier(Modifier::BOLD),
            sorted_header: s
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            selected: s.bg(Color::DarkGray).add_modifier(Modifier::BOLD),
            dim: s.fg(Color::DarkGray),
            ok: s.fg(Color::Green),
            warn: s.fg(Color::Yellow).add_modifier(Modifier::BOLD),
            bad: s.fg(Color::Red).add_modifier(Modifier::BOLD),
            spinning: s.fg(Color::LightRed).add_modifier(Modifier::BOLD),
            bar: s.fg(Color::Cyan),
            focus: s.fg(Color::Black).bg(Color::LightRed),
            key: s.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        }
    }

    pub fn mono() -> Self {
        let s = Style::new();
        let bold = s.add_modifier(Modifier::BOLD);
        Theme {
            color: false,
            base: s,
            header: s.add_modifier(Modifier::REVERSED),
            tab: s,
            tab_active: s.add_modifier(Modifier::REVERSED | Modifier::BOLD),
            tab_alert: s.add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            border: s,
            title: bold,
            table_header: bold,
            sorted_header: s.add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            selected: s.add_modifier(Modifier::REVERSED),
            dim: s,
            ok: s,
            warn: bold,
            bad: bold,
            spinning: s.add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            bar: s,
            focus: s.add_modifier(Modifier::REVERSED),
            key: bold,
        }
    }

    /// Monochrome when `NO_COLOR` is set to anything but the empty string.
    pub fn from_env() -> Self {
        match std::env::var_os("NO_COLOR") {
            Some(v) if !v.is_empty() => Self::mono(),
            _ => Self::color(),
        }
    }
}

impl Default for Theme {
    fn default() -> Self {
        Self::color()
    }
}
