//! Small lookups over a view shared by the views and the filters.

use std::borrow::Cow;

use lockscope_engine::model::LockId;
use lockscope_engine::View;

/// Case-insensitive (ASCII) substring test without allocating; `needle` is lower case.
pub(crate) fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
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
