//! Target time while lockscope runs a session.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::messages::lock;
use crate::sources::plugin::{monotonic_ns, PluginFile};

/// QEMU's virtual clock advances with the host's while the guest runs and stands still while it
/// is stopped; this follows it from the stops and resumes the session makes, and tells
/// lockscope's QEMU plugin, when it is loaded, so that its clock leaves the stops out too.
#[derive(Default)]
pub(super) struct GuestClock {
    base_ns: u64,
    running_since: Option<Instant>,
    plugin: Option<PluginFile>,
}

impl GuestClock {
    pub(super) fn now_ns(&self) -> u64 {
        self.base_ns
            + self
                .running_since
                .map_or(0, |t| t.elapsed().as_nanos() as u64)
    }

    pub(super) fn stopped(&mut self) {
        if self.running_since.is_some() {
            if let Some(p) = &self.plugin {
                p.note_stopped(monotonic_ns());
            }
        }
        self.base_ns = self.now_ns();
        self.running_since = None;
    }

    pub(super) fn running(&mut self) {
        if self.running_since.is_none() {
            if let Some(p) = &self.plugin {
                p.note_resumed(monotonic_ns());
            }
            self.running_since = Some(Instant::now());
        }
    }
}

/// The clock, shared by the threads that stop, resume and read the guest.
#[derive(Clone, Default)]
pub(super) struct Clock(Arc<Mutex<GuestClock>>);

impl Clock {
    pub(super) fn now_ns(&self) -> u64 {
        lock(&self.0).now_ns()
    }

    pub(super) fn stopped(&self) {
        lock(&self.0).stopped();
    }

    pub(super) fn running(&self) {
        lock(&self.0).running();
    }

    /// From now on, stops and resumes are noted in the plugin's file (its own mapping).
    pub(super) fn follow_plugin(&self, file: PluginFile) {
        lock(&self.0).plugin = Some(file);
    }
}
