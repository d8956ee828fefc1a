//! The whole UI state: the [`App`], its tabs, scroll positions and mouse regions.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use lockscope_engine::View;
use ratatui::layout::Rect;

use super::events::EventsState;
use super::locks::{LocksState, SortKey};
use super::replay_ui::ReplayUi;
use crate::theme::Theme;

/// The views, in tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tab {
    Locks,
    Harts,
    Bcache,
    Events,
    Panic,
    Deadlock,
    /// The process table, sleeplocks and reader-writer locks (a source that reads them: xv6).
    Processes,
    /// Broken invariants and lab pitfalls the source found.
    Findings,
    /// The guest console, which a session with the console's input can type into.
    Console,
}

impl Tab {
    pub const ALL: [Tab; 9] = [
        Tab::Locks,
        Tab::Harts,
        Tab::Bcache,
        Tab::Events,
        Tab::Panic,
        Tab::Deadlock,
        Tab::Processes,
        Tab::Findings,
        Tab::Console,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Locks => "Locks",
            Tab::Harts => "Harts",
            Tab::Bcache => "Buffer cache",
            Tab::Events => "Events",
            Tab::Panic => "Panic",
            Tab::Deadlock => "Deadlock",
            Tab::Processes => "Processes",
            Tab::Findings => "Findings",
            Tab::Console => "Console",
        }
    }

    /// The title in a narrow terminal.
    pub fn short_title(self) -> &'static str {
        match self {
            Tab::Bcache => "Bcache",
            Tab::Deadlock => "Deadlk",
            Tab::Processes => "Procs",
            Tab::Findings => "Finds",
            Tab::Console => "Cons",
            t => t.title(),
        }
    }

    /// Its number key, `1` to `9`.
    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    /// Whether the tab has anything to show for `view`: Events with lock events; Processes
    /// and Findings for a source that reads them (xv6); Console for a source without events
    /// (whose Events view, which ends with the console, is hidden) or with console input.
    pub fn shown(self, view: &View, console_input: bool) -> bool {
        let reads_kernel = !view.detail.locks.is_empty() || !view.detail.processes.is_empty();
        match self {
            Tab::Events => view.lock_events,
            Tab::Processes | Tab::Findings => reads_kernel,
            Tab::Console => !view.lock_events || console_input,
            _ => true,
        }
    }

    /// The tabs shown for `view`, in order.
    pub fn visible(view: &View, console_input: bool) -> Vec<Tab> {
        Tab::ALL
            .into_iter()
            .filter(|t| t.shown(view, console_input))
            .collect()
    }

    pub(super) fn offset(self, by: isize, view: &View, console_input: bool) -> Tab {
        let tabs = Tab::visible(view, console_input);
        let n = tabs.len() as isize;
        let at = tabs.iter().position(|t| *t == self).unwrap_or(0) as isize;
        tabs[(at + by).rem_euclid(n) as usize]
    }
}

/// Screen regions from the last render, for the mouse.
#[derive(Debug, Default)]
pub(crate) struct Hits {
    pub tabs: Vec<(Rect, Tab)>,
    pub sort_headers: Vec<(Rect, SortKey)>,
    /// The rows of the current view's list: first visible line and area.
    pub list: Option<(Rect, usize)>,
    /// A replay's timeline bar (one row: columns map to times), and the rows a click seeks on.
    pub timeline: Option<Rect>,
    pub timeline_rows: Option<Rect>,
}

/// Where the text views are scrolled to; `max` and `page` are learned while rendering.
#[derive(Debug, Default)]
pub struct Scroll {
    pub offset: usize,
    pub(crate) max: Cell<usize>,
    pub(crate) page: Cell<usize>,
}

impl Scroll {
    pub(super) fn by(&mut self, delta: isize) {
        let max = self.max.get();
        self.offset = (self.offset as isize + delta).clamp(0, max as isize) as usize;
    }
}

/// Which text is being typed into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    LocksFilter,
    EventsFilter,
    /// A time to go to, in a replay (`g`).
    GoTo,
    /// Keys go to the guest console (Esc stops).
    Console,
}

/// The whole UI state.
#[derive(Debug)]
pub struct App {
    pub theme: Theme,
    pub tab: Tab,
    pub show_help: bool,
    /// The view shown while the display is paused (the session keeps publishing).
    pub frozen: Option<Arc<View>>,
    /// The session accepts interrupt and resume.
    pub controllable: bool,
    /// Shown in the header when the caller knows it (the session's sampling rate).
    pub poll_hz: Option<f64>,
    pub input: Option<Input>,
    pub locks: LocksState,
    pub harts_selected: usize,
    pub bucket_selected: usize,
    pub events: EventsState,
    pub panic_scroll: Scroll,
    pub deadlock_scroll: Scroll,
    /// The Panic view shows every hart's backtrace.
    pub other_harts: bool,
    /// The session takes typing at the guest console.
    pub console_input: bool,
    /// Lines scrolled back from the newest in the Console view.
    pub console_back: usize,
    pub processes_scroll: Scroll,
    pub findings_scroll: Scroll,
    /// A one-line message for the status bar, until the next key.
    pub message: Option<String>,
    /// Set when the dashboard replays a recording on a timeline.
    pub replay: Option<ReplayUi>,
    seen_panic: bool,
    seen_deadlock: bool,
    pub(crate) hits: RefCell<Hits>,
    /// Rows of the current list at the last render: what PgUp/PgDn move by.
    pub(crate) page: Cell<usize>,
}

impl App {
    pub fn new(theme: Theme, controllable: bool) -> Self {
        App {
            theme,
            tab: Tab::Locks,
            show_help: false,
            frozen: None,
            controllable,
            poll_hz: None,
            input: None,
            locks: LocksState::default(),
            harts_selected: 0,
            bucket_selected: 0,
            events: EventsState::default(),
            panic_scroll: Scroll::default(),
            deadlock_scroll: Scroll::default(),
            other_harts: false,
            console_input: false,
            console_back: 0,
            processes_scroll: Scroll::default(),
            findings_scroll: Scroll::default(),
            message: None,
            replay: None,
            seen_panic: false,
            seen_deadlock: false,
            hits: RefCell::default(),
            page: Cell::new(10),
        }
    }

    /// The view to show: the frozen one while paused, else `live`.
    pub fn shown<'a>(&'a self, live: &'a Arc<View>) -> &'a Arc<View> {
        self.frozen.as_ref().unwrap_or(live)
    }

    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// Notes a newly shown view: switches to Panic when a panic first appears, and to Deadlock
    /// when a confirmed cycle (or a hang confirmed by two stops) first appears. Once each; the user can switch away.
    pub fn observe(&mut self, view: &View) {
        let hang = view.hang.as_ref().is_some_and(|h| h.confirmed);
        if !self.seen_deadlock && (hang || view.report.deadlocks.iter().any(|d| d.confirmed)) {
            self.seen_deadlock = true;
            self.tab = Tab::Deadlock;
        }
        if !self.seen_panic && view.panic.is_some() {
            self.seen_panic = true;
            self.tab = Tab::Panic;
        }
    }
}
