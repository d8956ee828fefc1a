//! The lock table: its sort columns, rows (locks and classes), filter, grouping and selection.

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashSet;

use lockscope_engine::analysis::{ClassRow, LockRow};
use lockscope_engine::model::LockId;
use lockscope_engine::View;

use super::cache::{CacheKey, Cached};
use super::lookup::contains_ci;
use crate::format::natural_cmp;

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
    /// The lock's variable (`bcache.bucket[4].lock`), for sources that read locks in memory.
    Variable,
    /// The hart holding it.
    Holder,
    /// Acquisitions per second over the window.
    AcqRate,
    /// Failed test-and-sets per second over the window.
    SpinRate,
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

    /// The keys `s` cycles through for a source without lock events (counters only: an xv6
    /// kernel read through DWARF), in the table's column order.
    pub const COUNTS: [SortKey; 8] = [
        SortKey::Name,
        SortKey::Variable,
        SortKey::Class,
        SortKey::Holder,
        SortKey::Acquires,
        SortKey::AcqRate,
        SortKey::Spins,
        SortKey::SpinRate,
    ];

    /// The keys of the table shown for `view`.
    pub fn keys(view: &View) -> &'static [SortKey] {
        if view.lock_events {
            &SortKey::ALL
        } else {
            &SortKey::COUNTS
        }
    }

    /// What the table sorts by for `view`: this key, or spins when its column is not shown.
    pub fn effective(self, view: &View) -> SortKey {
        if SortKey::keys(view).contains(&self) {
            self
        } else {
            SortKey::Spins
        }
    }

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
            SortKey::Variable => "variable",
            SortKey::Holder => "holder",
            SortKey::AcqRate => "acquisitions/s",
            SortKey::SpinRate => "spins/s",
        }
    }

    /// Names sort A to Z, numbers largest first.
    pub(super) fn ascending(self) -> bool {
        matches!(self, SortKey::Name | SortKey::Class | SortKey::Variable)
    }

    pub(super) fn next(self, view: &View) -> SortKey {
        let keys = SortKey::keys(view);
        let i = keys
            .iter()
            .position(|k| *k == self.effective(view))
            .unwrap_or(0);
        keys[(i + 1) % keys.len()]
    }
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

    pub(super) fn select(&mut self, view: &View, index: usize) {
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

    pub(super) fn changed(&mut self) {
        self.version += 1;
    }

    /// The selected line, if any.
    pub(crate) fn selected_line(&self, view: &View) -> Option<LocksRow> {
        let lines = self.lines(view);
        let i = self.selected_index(view, &lines);
        lines.get(i).copied()
    }
}

fn opt_key(v: Option<u64>) -> i128 {
    v.map_or(-1, i128::from)
}

fn cmp_row(view: &View, a: &LockRow, b: &LockRow, key: SortKey) -> std::cmp::Ordering {
    use SortKey::*;
    let by = |f: fn(&LockRow) -> i128| f(a).cmp(&f(b));
    let path = |r: &LockRow| {
        view.detail
            .lock(r.id)
            .and_then(|d| d.path.clone())
            .unwrap_or_default()
    };
    match key {
        Variable => natural_cmp(&path(a), &path(b)),
        Holder => by(|r| r.holder.map_or(-1, i128::from)),
        AcqRate => rate_of(a.rates.as_ref(), |r| r.acquires_per_s)
            .total_cmp(&rate_of(b.rates.as_ref(), |r| r.acquires_per_s)),
        SpinRate => rate_of(a.rates.as_ref(), |r| r.spins_per_s)
            .total_cmp(&rate_of(b.rates.as_ref(), |r| r.spins_per_s)),
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
        Name | Class | Variable | Holder => natural_cmp(&a.class, &b.class),
        AcqRate => rate_of(a.rates.as_ref(), |r| r.acquires_per_s)
            .total_cmp(&rate_of(b.rates.as_ref(), |r| r.acquires_per_s)),
        SpinRate => rate_of(a.rates.as_ref(), |r| r.spins_per_s)
            .total_cmp(&rate_of(b.rates.as_ref(), |r| r.spins_per_s)),
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

fn rate_of(
    r: Option<&lockscope_engine::analysis::Rates>,
    f: fn(&lockscope_engine::analysis::Rates) -> f64,
) -> f64 {
    r.map_or(-1.0, f)
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
    let sort = st.sort.effective(view);
    let matches = |r: &LockRow| {
        contains_ci(&r.name, &needle)
            || contains_ci(&r.class, &needle)
            || view
                .detail
                .lock(r.id)
                .and_then(|d| d.path.as_deref())
                .is_some_and(|p| contains_ci(p, &needle))
    };
    let by_lock = |a: &usize, b: &usize| {
        directed(
            cmp_row(view, &locks[*a], &locks[*b], sort),
            sort,
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
        directed(cmp_class(&classes[a], &classes[b], sort), sort, st.reverse)
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
