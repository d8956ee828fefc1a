//! The event log's filter and scroll position.

use std::cell::{Ref, RefCell};

use super::cache::{CacheKey, Cached};
use super::lookup::{contains_ci, lock_name};
use crate::format;
use lockscope_engine::View;

/// The event log's settings.
#[derive(Debug, Default)]
pub struct EventsState {
    pub filter: String,
    /// Lines scrolled back from the newest; 0 follows new events.
    pub back: usize,
    pub(super) version: u64,
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
