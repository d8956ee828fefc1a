//! Guest RAM saved with every stop a session records, for the post-mortem gdb server and core
//! files. The gdb thread does it while it holds the guest stopped; the stop itself reaches the
//! recording through the monitor, and the two meet by stop number.

use std::ops::Range;

use crate::gdb::GdbClient;
use crate::memory::{GuestMemory, SharedRam};
use crate::recording::Recorder;

/// Without shared RAM, the RAM is read through QEMU's stub (about 20 MB/s on QEMU 7.2): only
/// this much, so a stop does not hold the guest for seconds.
const STUB_RAM_LIMIT: u64 = 16 << 20;

pub(super) struct StopRam {
    recorder: Recorder,
    /// Guest RAM as booted; `None` when attached (its size is not known).
    known: Option<Range<u64>>,
    /// Stops sent so far: the recording numbers the `Feed::Stop`s in the order they were sent.
    stops: usize,
}

impl StopRam {
    pub(super) fn new(recorder: Recorder, known: Option<Range<u64>>) -> Self {
        Self {
            recorder,
            known,
            stops: 0,
        }
    }

    /// Says a stop is about to be sent: the recording waits for its RAM before it finishes.
    pub(super) fn coming(&self) {
        self.recorder.ram_coming();
    }

    /// Saves the RAM of the stop just sent (announced with [`StopRam::coming`]). Returns a
    /// note for the console when it could not.
    pub(super) fn save(
        &mut self,
        shared: Option<&mut SharedRam>,
        client: &mut GdbClient,
    ) -> Option<String> {
        let stop = self.stops;
        self.stops += 1;
        let mib = |r: &Range<u64>| (r.end - r.start) >> 20;
        let (mem, range): (&mut dyn GuestMemory, Range<u64>) = match (shared, &self.known) {
            (Some(m), _) => {
                let r = m.range();
                (m, r)
            }
            (None, Some(r)) if r.end - r.start <= STUB_RAM_LIMIT => (client, r.clone()),
            (None, Some(r)) => {
                self.recorder.ram_skipped();
                return Some(format!(
                    "[lockscope] stop {stop}: guest RAM ({} MiB) not saved in the recording: without shared RAM it is read through the gdb stub (about 20 MB/s), which does at most {} MiB; record without --gdb-poll to save it",
                    mib(r),
                    STUB_RAM_LIMIT >> 20
                ));
            }
            (None, None) => {
                self.recorder.ram_skipped();
                return Some(format!(
                    "[lockscope] stop {stop}: guest RAM not saved in the recording: attached without shared RAM, its size is unknown"
                ));
            }
        };
        match self.recorder.stop_ram(stop, mem, range) {
            Ok(_) => None,
            Err(e) => Some(format!(
                "[lockscope] stop {stop}: guest RAM not saved in the recording: {e}"
            )),
        }
    }
}
