//! Target time while lockscope runs a session.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::messages::lock;

/// QEMU's virtual clock advances with the host's while the guest runs and stands still while it
/// is stopped; this follows it from the stops and resumes the session makes.
#[derive(Debug, Default)]
pub(super) struct GuestClock {
    base_ns: u64,
    running_since: Option<Instant>,
}

impl GuestClock {
    pub(super) fn now_ns(&self) -> u64 {
        self.base_ns
            + self
                .running_since
                .map_or(0, |t| t.elapsed().as_nanos() as u64)
    }

    pub(super) fn stopped(&mut self) {
        self.base_ns = self.now_ns();
        self.running_since = None;
    }

    pub(super) fn running(&mut self) {
        if self.running_since.is_none() {
            self.running_since = Some(Instant::now());
        }
    }
}

/// The clock, shared by the threads that stop, resume and read the guest.
#[derive(Clone, Debug, Default)]
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
}
