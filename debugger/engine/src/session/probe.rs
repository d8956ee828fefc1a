//! The probe thread: reads shared RAM continuously and never pauses the guest.
//!
//! It drains the events at `drain_hz` and reads a snapshot at `snapshot_hz`. When QEMU exits it
//! makes one last read from the RAM file, which outlives QEMU.

use std::time::{Duration, Instant};

use super::messages::Msg;
use super::reading::Reading;
use crate::memory::SharedRam;

/// Consecutive failed reads before the probe gives up. Harts write while we copy, so one odd
/// value can be a torn read; corruption persists.
const MAX_FAILURES: u32 = 3;

pub(super) fn probe_thread(r: Reading, mut mem: SharedRam, drain_hz: f64, snapshot_hz: f64) {
    let drain_every = Duration::from_secs_f64(1.0 / drain_hz.max(1.0));
    let snap_every = Duration::from_secs_f64(1.0 / snapshot_hz.max(0.1));
    let mut next_snap = Instant::now();
    // Shared RAM can afford to take everything there is.
    let budget = usize::MAX / 2;
    let mut failures = 0;
    let mut panic_seen = false;
    loop {
        let last = r.stopping();
        // A panic is looked for at every drain (a few bytes), so that it is caught the moment
        // the kernel records it, and a snapshot with it goes out at once.
        if !panic_seen && r.panicked(&mut mem) {
            panic_seen = true;
            next_snap = Instant::now();
        }
        // A lab test just started or ended on the console: its counters now.
        if r.snap_now.swap(false, std::sync::atomic::Ordering::AcqRel) {
            next_snap = Instant::now();
        }
        let result = if last || Instant::now() >= next_snap {
            next_snap = Instant::now() + snap_every;
            r.read_all(&mut mem, budget, &[])
        } else {
            r.drain(&mut mem, budget).map(|_| ())
        };
        match result {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    r.out.send(Msg::SourceFailed(e.to_string()));
                    break;
                }
                next_snap = Instant::now();
                continue;
            }
        }
        if last {
            break;
        }
        std::thread::sleep(drain_every);
    }
    r.out.send(Msg::ProbeDone);
}
