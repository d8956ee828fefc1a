//! Rows computed from a view, rebuilt only when the view or the settings change.

use lockscope_engine::View;
use std::cell::{Ref, RefCell};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CacheKey {
    /// Identity of the view: generation and address (two fixtures may share a generation),
    /// and the lengths the cached indices point into.
    generation: u64,
    view: usize,
    lens: [usize; 3],
    version: u64,
}

impl CacheKey {
    pub(super) fn of(view: &View, version: u64) -> Self {
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
pub(super) struct Cached<T> {
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
    pub(super) fn get(
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
