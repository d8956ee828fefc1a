//! Shared by the TUI's tests: fixtures recorded from the real kernel, drawing into a
//! `TestBackend`, and keys.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use crossterm::event::{Event as Term, KeyCode, KeyEvent, KeyModifiers};
use lockscope_engine::monitor::{Monitor, MonitorConfig, SourceKind, View};
use lockscope_tui::{App, Effect, Tab, Theme};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::Terminal;

/// Every fixture, recorded or placeholder (see tests/fixtures/README.md).
pub const FIXTURES: [&str; 6] = [
    "healthy",
    "kalloc_global",
    "deadlock",
    "bget_no_buffers",
    "null_next",
    "xv6_odd_names",
];

pub fn fixture(name: &str) -> Arc<View> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.view.json"));
    Arc::new(lockscope_tui::fixture::load(&path).unwrap_or_else(|e| panic!("{e}")))
}

/// What the engine shows before anything arrived: no locks, harts, events or symbols.
pub fn empty_view() -> Arc<View> {
    let m = Monitor::new(MonitorConfig::default(), None, SourceKind::SharedRam).unwrap();
    Arc::new(m.view())
}

pub fn app(tab: Tab) -> App {
    let mut a = App::new(Theme::mono(), false);
    a.tab = tab;
    a
}

pub fn draw(app: &App, view: &View, width: u16, height: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
    t.draw(|f| lockscope_tui::render(f, app, view)).unwrap();
    t.backend().buffer().clone()
}

/// The screen as text, one line per row, trailing spaces kept (what `tmux capture-pane` sees).
pub fn text(buf: &Buffer) -> String {
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

pub fn screen(app: &App, view: &View, width: u16, height: u16) -> String {
    text(&draw(app, view, width, height))
}

pub fn key(c: KeyCode) -> Term {
    Term::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

pub fn ch(c: char) -> Term {
    key(KeyCode::Char(c))
}

pub fn press(app: &mut App, view: &Arc<View>, e: Term) -> Effect {
    let action = app.action_for(&e).expect("a mapped key");
    app.update(action, view)
}
