//! The UI's state and how actions change it. Input becomes [`Action`]s (see
//! [`App::action_for`]), actions change the [`App`] (see [`App::update`]), and rendering only
//! reads the App and a [`View`]. Nothing here touches the target.

use std::borrow::Cow;
use std::cell::{Cell, Ref, RefCell};
use std::collections::HashSet;
use std::sync::Arc;

use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind,
};
use lockscope_engine::analysis::{ClassRow, LockRow};
use lockscope_engine::model::LockId;
use lockscope_engine::monitor::{TargetState, View};
use lockscope_engine::session::Command;
use ratatui::layout::{Position, Rect};

use crate::format::{self, natural_cmp};
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
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Locks,
        Tab::Harts,
        Tab::Bcache,
        Tab::Events,
        Tab::Panic,
        Tab::Deadlock,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Locks => "Locks",
            Tab::Harts => "Harts",
            Tab::Bcache => "Buffer cache",
            Tab::Events => "Events",
            Tab::Panic => "Panic",
            Tab::Deadlock => "Deadlock",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn offset(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        Tab::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// A column the lock table can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortKey {
    Name,
    Class,
    Acquires,
    Contended,
    Spins,
    ContentionPct,
    WaitAvg,
    WaitMax,
    HoldAvg,
    HoldMax,
    /// Contended acquisitions per second over the window (the sparkline's column).
    Rate,
}

impl SortKey {
    /// In the order `s` cycles through them (the table's column order).
    pub const ALL: [SortKey; 11] = [
        SortKey::Name,
        SortKey::Class,
        SortKey::Acquires,
        SortKey::Contended,
        SortKey::Spins,
        SortKey::ContentionPct,
        SortKey::WaitAvg,
        SortKey::WaitMax,
        SortKey::HoldAvg,
        SortKey::HoldMax,
        SortKey::Rate,
    ];

    /// What the status bar calls it.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Class => "class",
            SortKey::Acquires => "acquisitions",
            SortKey::Contended => "contentions",
            SortKey::Spins => "spins",
            SortKey::ContentionPct => "contention %",
            SortKey::WaitAvg => "wait avg",
            SortKey::WaitMax => "wait max",
            SortKey::HoldAvg => "hold avg",
            SortKey::HoldMax => "hold max",
            SortKey::Rate => "contention rate",
        }
    }

    /// Names sort A to Z, numbers largest first.
    fn ascending(self) -> bool {
        matches!(self, SortKey::Name | SortKey::Class)
    }

    fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }
}

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
    Click {
        column: u16,
        row: u16,
    },
    ScrollUp,
    ScrollDown,
}

/// What an action asks of the loop around the App.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    Send(Command),
}

/// One line of the lock table: an index into `report.classes` or `report.locks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LocksRow {
    Class(usize),
    Lock(usize),
}

/// What stays selected while the order changes under it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LineKey {
    Class(String),
    Lock(LockId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CacheKey {
    /// Identity of the view: generation and address (two fixtures may share a generation),
    /// and the lengths the cached indices point into.
    generation: u64,
    view: usize,
    lens: [usize; 3],
    version: u64,
}

impl CacheKey {
    fn of(view: &View, version: u64) -> Self {
        CacheKey {
            generation: view.generation,
            view: std::ptr::from_ref(view) as usize,
            lens: [
                view.report.locks.len(),
                view.report.classes.len(),
                view.recent_events.len(),
            ],
            version,
        }
    }
}

/// Rows computed from a view, rebuilt only when the view or the settings change.
#[derive(Debug)]
struct Cached<T> {
    key: Option<CacheKey>,
    rows: Vec<T>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached {
            key: None,
            rows: Vec::new(),
        }
    }
}

impl<T> Cached<T> {
    fn get(
        cell: &RefCell<Self>,
        key: CacheKey,
        build: impl FnOnce(&mut Vec<T>),
    ) -> Ref<'_, Vec<T>> {
        {
            let mut c = cell.borrow_mut();
            if c.key != Some(key) {
                c.rows.clear();
                build(&mut c.rows);
                c.key = Some(key);
            }
        }
        Ref::map(cell.borrow(), |c| &c.rows)
    }
}

/// The lock table's settings and selection.
#[derive(Debug)]
pub struct LocksState {
    pub sort: SortKey,
    /// Opposite of the key's natural direction.
    pub reverse: bool,
    pub filter: String,
    pub grouped: bool,
    /// Classes folded in grouped mode.
    pub collapsed: HashSet<String>,
    /// Showing the selected lock's detail.
    pub detail: bool,
    selected: Option<LineKey>,
    /// Where the selection was, for when its line disappears.
    fallback: usize,
    version: u64,
    cache: RefCell<Cached<LocksRow>>,
    pub(crate) offset: Cell<usize>,
}

impl Default for LocksState {
    fn default() -> Self {
        LocksState {
            sort: SortKey::Contended,
            reverse: false,
            filter: String::new(),
            grouped: false,
            collapsed: HashSet::new(),
            detail: false,
            selected: None,
            fallback: 0,
            version: 0,
            cache: RefCell::default(),
            offset: Cell::new(0),
        }
    }
}

impl LocksState {
    /// The table's lines for `view` under the current sort, filter and grouping.
    pub(crate) fn lines(&self, view: &View) -> Ref<'_, Vec<LocksRow>> {
        Cached::get(&self.cache, CacheKey::of(view, self.version), |out| {
            build_lock_lines(view, self, out)
        })
    }

    /// Index of the selected line in `lines`.
    pub(crate) fn selected_index(&self, view: &View, lines: &[LocksRow]) -> usize {
        let found = self.selected.as_ref().and_then(|key| {
            lines.iter().position(|l| match (l, key) {
                (LocksRow::Lock(i), LineKey::Lock(id)) => {
                    view.report.locks.get(*i).is_some_and(|r| r.id == *id)
                }
                (LocksRow::Class(i), LineKey::Class(c)) => {
                    view.report.classes.get(*i).is_some_and(|r| r.class == *c)
                }
                _ => false,
            })
        });
        found.unwrap_or(self.fallback.min(lines.len().saturating_sub(1)))
    }

    fn select(&mut self, view: &View, index: usize) {
        let (key, index) = {
            let lines = self.lines(view);
            let index = index.min(lines.len().saturating_sub(1));
            let key = lines.get(index).and_then(|l| match *l {
                LocksRow::Lock(i) => view.report.locks.get(i).map(|r| LineKey::Lock(r.id)),
                LocksRow::Class(i) => view
                    .report
                    .classes
                    .get(i)
                    .map(|c| LineKey::Class(c.class.clone())),
            });
            (key, index)
        };
        self.selected = key;
        self.fallback = index;
    }

    fn changed(&mut self) {
        self.version += 1;
    }

    /// The selected line, if any.
    pub(crate) fn selected_line(&self, view: &View) -> Option<LocksRow> {
        let lines = self.lines(view);
        let i = self.selected_index(view, &lines);
        lines.get(i).copied()
    }
}

/// Case-insensitive (ASCII) substring test without allocating; `needle` is lower case.
pub(crate) fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

fn opt_key(v: Option<u64>) -> i128 {
    v.map_or(-1, i128::from)
}

fn cmp_row(a: &LockRow, b: &LockRow, key: SortKey) -> std::cmp::Ordering {
    use SortKey::*;
    let by = |f: fn(&LockRow) -> i128| f(a).cmp(&f(b));
    match key {
        Name => natural_cmp(&a.name, &b.name),
        Class => natural_cmp(&a.class, &b.class).then_with(|| natural_cmp(&a.name, &b.name)),
        Acquires => by(|r| r.acquires as i128),
        Contended => by(|r| r.contended as i128),
        Spins => by(|r| r.spins as i128),
        ContentionPct => a
            .contention_pct
            .unwrap_or(-1.0)
            .total_cmp(&b.contention_pct.unwrap_or(-1.0)),
        WaitAvg => by(|r| opt_key(r.wait.avg_ns)),
        WaitMax => by(|r| opt_key(r.wait.max_ns)),
        HoldAvg => by(|r| opt_key(r.hold.avg_ns)),
        HoldMax => by(|r| opt_key(r.hold.max_ns)),
        Rate => rate(a.rates.as_ref()).total_cmp(&rate(b.rates.as_ref())),
    }
}

fn cmp_class(a: &ClassRow, b: &ClassRow, key: SortKey) -> std::cmp::Ordering {
    use SortKey::*;
    let by = |f: fn(&ClassRow) -> i128| f(a).cmp(&f(b));
    match key {
        Name | Class => natural_cmp(&a.class, &b.class),
        Acquires => by(|r| r.acquires as i128),
        Contended => by(|r| r.contended as i128),
        Spins => by(|r| r.spins as i128),
        ContentionPct => a
            .contention_pct
            .unwrap_or(-1.0)
            .total_cmp(&b.contention_pct.unwrap_or(-1.0)),
        WaitAvg => by(|r| opt_key(r.wait.avg_ns)),
        WaitMax => by(|r| opt_key(r.wait.max_ns)),
        HoldAvg => by(|r| opt_key(r.hold.avg_ns)),
        HoldMax => by(|r| opt_key(r.hold.max_ns)),
        Rate => rate(a.rates.as_ref()).total_cmp(&rate(b.rates.as_ref())),
    }
}

fn rate(r: Option<&lockscope_engine::analysis::Rates>) -> f64 {
    r.map_or(-1.0, |r| r.contended_per_s)
}

fn directed(o: std::cmp::Ordering, key: SortKey, reverse: bool) -> std::cmp::Ordering {
    let o = if key.ascending() { o } else { o.reverse() };
    if reverse {
        o.reverse()
    } else {
        o
    }
}

fn build_lock_lines(view: &View, st: &LocksState, out: &mut Vec<LocksRow>) {
    let locks = &view.report.locks;
    let needle = st.filter.to_ascii_lowercase();
    let matches = |r: &LockRow| contains_ci(&r.name, &needle) || contains_ci(&r.class, &needle);
    let by_lock = |a: &usize, b: &usize| {
        directed(
            cmp_row(&locks[*a], &locks[*b], st.sort),
            st.sort,
            st.reverse,
        )
        .then_with(|| natural_cmp(&locks[*a].name, &locks[*b].name))
        .then_with(|| locks[*a].id.cmp(&locks[*b].id))
    };
    if !st.grouped {
        let mut idx: Vec<usize> = (0..locks.len()).filter(|&i| matches(&locks[i])).collect();
        idx.sort_by(by_lock);
        out.extend(idx.into_iter().map(LocksRow::Lock));
        return;
    }
    let classes = &view.report.classes;
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by(|&a, &b| {
        directed(
            cmp_class(&classes[a], &classes[b], st.sort),
            st.sort,
            st.reverse,
        )
        .then_with(|| natural_cmp(&classes[a].class, &classes[b].class))
    });
    for ci in order {
        let class = &classes[ci];
        let class_hit = contains_ci(&class.class, &needle);
        let mut members: Vec<usize> = (0..locks.len())
            .filter(|&i| locks[i].class == class.class && (class_hit || matches(&locks[i])))
            .collect();
        if members.is_empty() && !class_hit {
            continue;
        }
        out.push(LocksRow::Class(ci));
        if st.collapsed.contains(&class.class) {
            continue;
        }
        members.sort_by(by_lock);
        out.extend(members.into_iter().map(LocksRow::Lock));
    }
}

/// The event log's settings.
#[derive(Debug, Default)]
pub struct EventsState {
    pub filter: String,
    /// Lines scrolled back from the newest; 0 follows new events.
    pub back: usize,
    version: u64,
    cache: RefCell<Cached<usize>>,
}

impl EventsState {
    /// Indices into `view.recent_events` that pass the filter, oldest first.
    pub(crate) fn rows(&self, view: &View) -> Ref<'_, Vec<usize>> {
        Cached::get(&self.cache, CacheKey::of(view, self.version), |out| {
            let needle = self.filter.to_ascii_lowercase();
            if needle.is_empty() {
                out.extend(0..view.recent_events.len());
            }
            let mut hart = String::new();
            for (i, e) in view.recent_events.iter().enumerate() {
                if needle.is_empty() {
                    break;
                }
                hart.clear();
                hart.push_str("hart");
                hart.push_str(&e.hart.to_string());
                let place = view.places.get(&e.pc);
                let hit = contains_ci(&lock_name(view, e.lock), &needle)
                    || contains_ci(format::event_kind(e.kind), &needle)
                    || contains_ci(&hart, &needle)
                    || place.is_some_and(|p| {
                        p.function
                            .as_deref()
                            .is_some_and(|f| contains_ci(f, &needle))
                            || p.location
                                .as_deref()
                                .is_some_and(|l| contains_ci(l, &needle))
                    });
                if hit {
                    out.push(i);
                }
            }
            // Batches arrive hart by hart: show them in time order (stable, so each hart's own
            // order is kept).
            out.sort_by_key(|&i| view.recent_events[i].time_ns);
        })
    }
}

/// The name of lock `id` in a view.
pub(crate) fn lock_name(view: &View, id: LockId) -> Cow<'_, str> {
    let locks = &view.report.locks;
    let row = match locks.get(id as usize) {
        Some(r) if r.id == id => Some(r),
        _ => locks.iter().find(|r| r.id == id),
    };
    match row {
        Some(r) => Cow::Borrowed(r.name.as_str()),
        None => Cow::Owned(format!("lock#{id}")),
    }
}

/// Screen regions from the last render, for the mouse.
#[derive(Debug, Default)]
pub(crate) struct Hits {
    pub tabs: Vec<(Rect, Tab)>,
    pub sort_headers: Vec<(Rect, SortKey)>,
    /// The rows of the current view's list: first visible line and area.
    pub list: Option<(Rect, usize)>,
}

/// Where the text views are scrolled to; `max` and `page` are learned while rendering.
#[derive(Debug, Default)]
pub struct Scroll {
    pub offset: usize,
    pub(crate) max: Cell<usize>,
    pub(crate) page: Cell<usize>,
}

impl Scroll {
    fn by(&mut self, delta: isize) {
        let max = self.max.get();
        self.offset = (self.offset as isize + delta).clamp(0, max as isize) as usize;
    }
}

/// Which text is being typed into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    LocksFilter,
    EventsFilter,
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
    /// A one-line message for the status bar, until the next key.
    pub message: Option<String>,
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
            message: None,
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
    /// when a confirmed cycle first appears. Once each; the user can switch away.
    pub fn observe(&mut self, view: &View) {
        if !self.seen_deadlock && view.report.deadlocks.iter().any(|d| d.confirmed) {
            self.seen_deadlock = true;
            self.tab = Tab::Deadlock;
        }
        if !self.seen_panic && view.panic.is_some() {
            self.seen_panic = true;
            self.tab = Tab::Panic;
        }
    }

    /// Maps a terminal event to an action, given what is being typed.
    pub fn action_for(&self, event: &Event) -> Option<Action> {
        match event {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.key_action(k),
            Event::Mouse(m) => match m.kind {
                MouseEventKind::Down(MouseButton::Left) => Some(Action::Click {
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
        Some(match k.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Char('?') => Action::Help,
            KeyCode::Tab => Action::NextTab,
            KeyCode::BackTab => Action::PrevTab,
            KeyCode::Char(c @ '1'..='6') => Action::Go(Tab::ALL[c as usize - '1' as usize]),
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

    /// Applies an action. `live` is the newest published view.
    pub fn update(&mut self, action: Action, live: &Arc<View>) -> Effect {
        if !matches!(action, Action::Tick | Action::Resize) {
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
            _ => self.page.get(),
        }
        .max(1) as isize;
        match action {
            Action::Quit => return Effect::Quit,
            Action::Tick | Action::Resize => {}
            Action::Help => self.show_help = true,
            Action::NextTab => self.tab = self.tab.offset(1),
            Action::PrevTab => self.tab = self.tab.offset(-1),
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
            Action::FilterDone => self.input = None,
            Action::FilterCancel => {
                self.edit_filter(String::clear);
                self.input = None;
            }
            Action::SortNext | Action::SortReverse if self.tab == Tab::Locks => {
                if action == Action::SortNext {
                    self.locks.sort = self.locks.sort.next();
                    self.locks.reverse = false;
                } else {
                    self.locks.reverse = !self.locks.reverse;
                }
                self.locks.changed();
                self.message = Some(format!(
                    "sorted by {}{}",
                    self.locks.sort.label(),
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
            Action::Click { column, row } => self.click(view, column, row),
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
            None => {}
        }
    }

    fn move_by(&mut self, view: &View, delta: isize) {
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
        }
    }

    fn enter(&mut self, view: &View) {
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

    fn back(&mut self) {
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
