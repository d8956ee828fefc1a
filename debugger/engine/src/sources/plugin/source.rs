//! A kernel read through its own source (xv6's DWARF reader) with lock events from lockscope's
//! QEMU plugin: the same [`Source`] as our kernel's rings, so the analysis cannot tell them
//! apart.

use std::collections::HashMap;

use super::{
    abi, to_lock_events, LockAddrMap, PluginEvent, PluginEventKind, PluginFile, WatchPlan,
};
use crate::memory::GuestMemory;
use crate::model::{Held, LockEvent, LockId, Snapshot, Spin};
use crate::sources::{Drained, Source, SourceError, StopView};

/// Events converted per drain at most: bounds the memory one drain takes whatever the budget.
const MAX_EVENTS_PER_DRAIN: usize = 1 << 20;

/// `inner` for state, the plugin's rings for events.
pub struct WithPluginEvents {
    inner: Box<dyn Source>,
    file: PluginFile,
    /// Lock addresses to ids, from the newest snapshot (locks are found as the kernel makes
    /// them: a lock initialised after the last snapshot maps at the next one).
    map: LockAddrMap,
    /// What the plugin watches, for the header: "QEMU plugin (API v1, 41 sites)".
    what: String,
    /// Events whose lock no snapshot named yet, so far.
    unmapped: u64,
    /// Wait and hold times per lock, from the events (the kernel keeps only `n` and `nts`).
    times: HashMap<LockId, Times>,
    /// The drain's buffer, kept from drain to drain (200 a second).
    raw: Vec<PluginEvent>,
}

/// One lock's times, summed from its events as our kernel sums them in its counters.
#[derive(Clone, Copy, Debug, Default)]
struct Times {
    contended: u64,
    wait_total_ns: u64,
    wait_max_ns: u64,
    hold_total_ns: u64,
    hold_max_ns: u64,
}

impl Times {
    fn add(&mut self, e: &PluginEvent) {
        match e.kind {
            PluginEventKind::Acquired | PluginEventKind::SleepAcquired => {
                let waited = e.spins > 0 || e.flags & abi::FLAG_SLEPT != 0;
                if waited {
                    self.contended += 1;
                    self.wait_total_ns = self.wait_total_ns.saturating_add(e.wait_ns);
                    self.wait_max_ns = self.wait_max_ns.max(e.wait_ns);
                }
            }
            PluginEventKind::Released | PluginEventKind::SleepReleased
                if e.flags & abi::FLAG_NO_HOLD == 0 =>
            {
                self.hold_total_ns = self.hold_total_ns.saturating_add(e.wait_ns);
                self.hold_max_ns = self.hold_max_ns.max(e.wait_ns);
            }
            _ => {}
        }
    }
}

impl WithPluginEvents {
    /// `api` names the plugin build QEMU loaded ("API v1").
    pub fn new(inner: Box<dyn Source>, file: PluginFile, plan: &WatchPlan, api: &str) -> Self {
        let what = format!(
            "QEMU plugin ({api}, {} watched instructions)",
            plan.watch.len()
        );
        WithPluginEvents {
            inner,
            file,
            map: LockAddrMap::default(),
            what,
            unmapped: 0,
            times: HashMap::new(),
            raw: Vec::new(),
        }
    }

    /// Events dropped because no snapshot had named their lock yet.
    pub fn unmapped(&self) -> u64 {
        self.unmapped
    }

    fn remap(&mut self, s: &Snapshot) {
        self.map = LockAddrMap::new(
            s.locks
                .iter()
                .filter_map(|l| Some((l.addr?, l.meta.id as LockId))),
        )
        .with_rw(s.rwlocks.iter().filter_map(|r| Some((r.addr, r.lock?))))
        .with_sleep(s.sleeplocks.iter().filter_map(|x| Some((x.addr, x.lock?))));
    }
}

impl Source for WithPluginEvents {
    fn describe(&self) -> String {
        format!("{} + {}", self.inner.describe(), self.what)
    }

    fn ready(&mut self, mem: &mut dyn GuestMemory, from_boot: bool) -> Result<bool, SourceError> {
        if !self.inner.ready(mem, from_boot)? {
            return Ok(false);
        }
        if !from_boot {
            // Joined late: events from before have no snapshot to name their locks.
            self.file.skip_to_history();
        }
        // Locks are named by the first snapshot: events before it would be unmapped.
        let s = self.inner.snapshot(mem, self.file.now_ns())?;
        self.remap(&s);
        Ok(true)
    }

    fn has_events(&self) -> bool {
        true
    }

    fn drain(
        &mut self,
        _mem: &mut dyn GuestMemory,
        budget: usize,
        out: &mut Vec<LockEvent>,
    ) -> Result<Drained, SourceError> {
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let budget = budget.min(MAX_EVENTS_PER_DRAIN * size_of::<super::abi::Event>());
        let stats = self.file.drain(budget, &mut raw)?;
        for e in &raw {
            if let Some(id) = self.map.for_event(e) {
                self.times.entry(id).or_default().add(e);
            }
        }
        let conv = to_lock_events(&raw, &self.map, out);
        self.raw = raw;
        self.unmapped += conv.unmapped;
        let lost = stats
            .per_hart
            .iter()
            .enumerate()
            .filter(|(_, (_, lost))| *lost > 0)
            .map(|(h, (_, lost))| (h as u32, *lost))
            .collect();
        Ok(Drained { lost })
    }

    fn snapshot(
        &mut self,
        mem: &mut dyn GuestMemory,
        _now_ns: u64,
    ) -> Result<Snapshot, SourceError> {
        // Stamped in the plugin's time, which its events carry.
        let mut s = self.inner.snapshot(mem, self.file.now_ns())?;
        self.remap(&s);
        // What each hart holds and spins on, as the plugin publishes it: a deadlock is seen
        // from these, without a stop. Reader-writer holds are left to the events.
        for st in self.file.hart_states() {
            let Some(h) = s.harts.iter_mut().find(|h| h.hart == st.hart) else {
                continue;
            };
            h.held = st
                .held
                .iter()
                .filter(|x| x.mode.is_none())
                .filter_map(|x| {
                    Some(Held {
                        lock: self.map.get(x.addr)?,
                        pc: x.site_pc,
                        since_ns: Some(x.since_ns),
                    })
                })
                .collect();
            h.held_truncated = st.held_truncated;
            h.spinning = st.spinning.filter(|x| x.mode.is_none()).and_then(|x| {
                Some(Spin {
                    lock: self.map.get(x.addr)?,
                    pc: x.site_pc,
                    since_ns: x.since_ns,
                })
            });
        }
        // Acquisitions and test-and-sets stay the kernel's own `n` and `nts` (what the lab
        // prints); contention and times come from the events.
        for l in &mut s.locks {
            if let Some(t) = self.times.get(&(l.meta.id as LockId)) {
                l.counters.contended = t.contended;
                l.counters.wait_total_ns = t.wait_total_ns;
                l.counters.wait_max_ns = t.wait_max_ns;
                l.counters.hold_total_ns = t.hold_total_ns;
                l.counters.hold_max_ns = t.hold_max_ns;
            }
        }
        Ok(s)
    }

    fn panicked(&mut self, mem: &mut dyn GuestMemory) -> bool {
        self.inner.panicked(mem)
    }

    fn at_stop(&mut self, mem: &mut dyn GuestMemory, stop: &StopView<'_>, snap: &mut Snapshot) {
        self.inner.at_stop(mem, stop, snap);
    }
}
