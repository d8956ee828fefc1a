//! From plugin events keyed by lock address to the model's lock events keyed by lock id.

use std::collections::HashMap;

use super::{abi, PluginEvent, PluginEventKind};
use crate::model::{EventKind, LockEvent, LockId};

/// Lock word address (aligned down to 4, as the plugin reports it) to lock id.
#[derive(Clone, Debug, Default)]
pub struct LockAddrMap {
    map: HashMap<u64, LockId>,
    rw: HashMap<u64, LockId>,
}

impl LockAddrMap {
    /// From (lock word address, id) pairs; addresses are aligned down to 4 like the plugin's.
    pub fn new(locks: impl IntoIterator<Item = (u64, LockId)>) -> Self {
        Self {
            map: locks.into_iter().map(|(a, id)| (a & !3, id)).collect(),
            rw: HashMap::new(),
        }
    }

    /// Adds reader-writer locks (by the address of the rwlock, whose first field is its inner
    /// spinlock): their read and write holds map to these ids, not to the inner spinlock's.
    pub fn with_rw(mut self, locks: impl IntoIterator<Item = (u64, LockId)>) -> Self {
        self.rw = locks.into_iter().map(|(a, id)| (a & !3, id)).collect();
        self
    }

    pub fn get(&self, addr: u64) -> Option<LockId> {
        self.map.get(&(addr & !3)).copied()
    }

    /// The lock an event names: a read or write hold names the rw lock.
    pub fn for_event(&self, e: &PluginEvent) -> Option<LockId> {
        if e.flags & (abi::FLAG_READ | abi::FLAG_WRITE) != 0 {
            self.rw.get(&(e.addr & !3)).copied()
        } else {
            self.get(e.addr)
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What [`to_lock_events`] did not turn into lock events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertStats {
    pub converted: u64,
    /// Spinlock events on an address the map does not know (a lock not yet registered).
    pub unmapped: u64,
    /// Attempts: the model has no such event (a Spin or an Acquired stands for the attempt).
    pub attempts: u64,
    /// Sleeplock events (tracked per process by the source, not per hart).
    pub sleep: u64,
    /// Releases of locks taken outside the watched functions: never paired, never an edge.
    pub unseen_releases: u64,
}

/// Appends the model's events for `events` to `out`: Contended becomes `Spin` (at the time the
/// spin began), Acquired becomes `Acquired { contended: spins > 0 }`, Released `Released`.
/// The pc of each is the call site of the acquisition (0 when unknown; releases carry 0).
/// Read and write holds of reader-writer locks map through [`LockAddrMap::with_rw`]; the model
/// has no read/write flag yet, so the caller keeps `PluginEvent::flags` if it needs them.
pub fn to_lock_events(
    events: &[PluginEvent],
    locks: &LockAddrMap,
    out: &mut Vec<LockEvent>,
) -> ConvertStats {
    let mut s = ConvertStats::default();
    for e in events {
        let kind = match e.kind {
            PluginEventKind::Contended => EventKind::Spin,
            PluginEventKind::Acquired => EventKind::Acquired {
                contended: e.spins > 0,
            },
            PluginEventKind::Released => EventKind::Released,
            PluginEventKind::Attempt => {
                s.attempts += 1;
                continue;
            }
            PluginEventKind::SleepAcquired | PluginEventKind::SleepReleased => {
                s.sleep += 1;
                continue;
            }
            PluginEventKind::UnseenRelease => {
                s.unseen_releases += 1;
                continue;
            }
        };
        let Some(lock) = locks.for_event(e) else {
            s.unmapped += 1;
            continue;
        };
        out.push(LockEvent {
            time_ns: e.time_ns,
            hart: e.hart,
            lock,
            kind,
            pc: e.site_pc,
        });
        s.converted += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: PluginEventKind, addr: u64, spins: u32) -> PluginEvent {
        PluginEvent {
            time_ns: 7,
            hart: 1,
            addr,
            kind,
            site_pc: 0x8000_1234,
            flags: 0,
            owner: None,
            wait_ns: 0,
            spins,
        }
    }

    #[test]
    fn rw_holds_map_to_the_rw_lock() {
        let map = LockAddrMap::new([(0x8000_0100, 4)]).with_rw([(0x8000_0100, 9)]);
        let mut read = ev(PluginEventKind::Acquired, 0x8000_0100, 0);
        read.flags = abi::FLAG_READ;
        let inner = ev(PluginEventKind::Acquired, 0x8000_0100, 0);
        let mut out = Vec::new();
        to_lock_events(&[inner, read], &map, &mut out);
        assert_eq!(out.iter().map(|e| e.lock).collect::<Vec<_>>(), [4, 9]);
    }

    #[test]
    fn events_map_by_aligned_address() {
        // A Rust AtomicBool at byte 0x...25 is tested by an amoor.w on 0x...24.
        let map = LockAddrMap::new([(0x8000_0025, 3), (0x8000_0100, 4)]);
        let evs = [
            ev(PluginEventKind::Attempt, 0x8000_0024, 0),
            ev(PluginEventKind::Contended, 0x8000_0024, 1),
            ev(PluginEventKind::Acquired, 0x8000_0024, 5),
            ev(PluginEventKind::Released, 0x8000_0024, 0),
            ev(PluginEventKind::Acquired, 0x8000_0100, 0),
            ev(PluginEventKind::Acquired, 0x9000_0000, 0),
            ev(PluginEventKind::UnseenRelease, 0x8000_0100, 0),
            ev(PluginEventKind::SleepAcquired, 0x8000_0200, 0),
        ];
        let mut out = Vec::new();
        let s = to_lock_events(&evs, &map, &mut out);
        let kinds: Vec<(LockId, EventKind)> = out.iter().map(|e| (e.lock, e.kind)).collect();
        assert_eq!(
            kinds,
            [
                (3, EventKind::Spin),
                (3, EventKind::Acquired { contended: true }),
                (3, EventKind::Released),
                (4, EventKind::Acquired { contended: false }),
            ]
        );
        assert_eq!(out[0].pc, 0x8000_1234);
        assert_eq!(
            s,
            ConvertStats {
                converted: 4,
                unmapped: 1,
                attempts: 1,
                sleep: 1,
                unseen_releases: 1
            }
        );
    }
}
