//! From plugin events keyed by lock address to the model's lock events keyed by lock id.

use std::collections::HashMap;

use super::{abi, PluginEvent, PluginEventKind};
use crate::model::{EventKind, LockEvent, LockId, LockMode};

/// Lock word address (aligned down to 4, as the plugin reports it) to lock id.
#[derive(Clone, Debug, Default)]
pub struct LockAddrMap {
    map: HashMap<u64, LockId>,
    rw: HashMap<u64, LockId>,
    sleep: HashMap<u64, LockId>,
}

impl LockAddrMap {
    /// From (lock word address, id) pairs; addresses are aligned down to 4 like the plugin's.
    pub fn new(locks: impl IntoIterator<Item = (u64, LockId)>) -> Self {
        Self {
            map: locks.into_iter().map(|(a, id)| (a & !3, id)).collect(),
            rw: HashMap::new(),
            sleep: HashMap::new(),
        }
    }

    /// Adds sleeplocks (by the sleeplock's own address) and the id that names each: its inner
    /// spinlock's ([`crate::model::SleeplockSnapshot::lock`]). Without it sleeplock events are
    /// not converted.
    pub fn with_sleep(mut self, locks: impl IntoIterator<Item = (u64, LockId)>) -> Self {
        self.sleep = locks.into_iter().map(|(a, id)| (a & !3, id)).collect();
        self
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

    /// The lock an event names: a read or write hold names the rw lock, a sleeplock event
    /// the sleeplock's id.
    pub fn for_event(&self, e: &PluginEvent) -> Option<LockId> {
        if matches!(
            e.kind,
            PluginEventKind::SleepAcquired | PluginEventKind::SleepReleased
        ) {
            self.sleep.get(&(e.addr & !3)).copied()
        } else if e.flags & (abi::FLAG_READ | abi::FLAG_WRITE) != 0 {
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
    /// Sleeplock events, converted (with [`LockMode::Sleep`]) or not (no sleeplock map).
    pub sleep: u64,
    /// Releases of locks taken outside the watched functions: never paired, never an edge.
    pub unseen_releases: u64,
}

/// Appends the model's events for `events` to `out`: Contended becomes `Spin` (at the time the
/// spin began), Acquired becomes `Acquired { contended: spins > 0 }`, Released `Released`.
/// The pc of each is the call site of the acquisition (0 when unknown; releases carry 0).
/// The trylock flag becomes [`LockEvent::trylock`]; read and write holds of reader-writer locks
/// map through [`LockAddrMap::with_rw`] with [`LockMode::Read`] or [`LockMode::Write`];
/// sleeplock acquisitions and releases through [`LockAddrMap::with_sleep`] with
/// [`LockMode::Sleep`] (`contended` when the process slept for it).
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
            PluginEventKind::SleepAcquired => {
                s.sleep += 1;
                EventKind::Acquired {
                    contended: e.flags & abi::FLAG_SLEPT != 0,
                }
            }
            PluginEventKind::SleepReleased => {
                s.sleep += 1;
                EventKind::Released
            }
            PluginEventKind::UnseenRelease => {
                s.unseen_releases += 1;
                continue;
            }
        };
        let sleep = matches!(
            e.kind,
            PluginEventKind::SleepAcquired | PluginEventKind::SleepReleased
        );
        let Some(lock) = locks.for_event(e) else {
            // A sleeplock with no id is left out (counted in `sleep`), not unmapped.
            s.unmapped += !sleep as u64;
            continue;
        };
        let mode = if sleep {
            Some(LockMode::Sleep)
        } else if e.flags & abi::FLAG_WRITE != 0 {
            Some(LockMode::Write)
        } else if e.flags & abi::FLAG_READ != 0 {
            Some(LockMode::Read)
        } else {
            None
        };
        out.push(LockEvent {
            time_ns: e.time_ns,
            hart: e.hart,
            lock,
            kind,
            pc: e.site_pc,
            mode,
            trylock: e.flags & abi::FLAG_TRYLOCK != 0,
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
            owners: 0,
            wait_ns: 0,
            spins,
            thread: 0,
        }
    }

    #[test]
    fn rw_holds_map_to_the_rw_lock() {
        let map = LockAddrMap::new([(0x8000_0100, 4)]).with_rw([(0x8000_0100, 9)]);
        let mut read = ev(PluginEventKind::Acquired, 0x8000_0100, 0);
        read.flags = abi::FLAG_READ;
        let inner = ev(PluginEventKind::Acquired, 0x8000_0100, 0);
        let mut write = ev(PluginEventKind::Released, 0x8000_0100, 0);
        write.flags = abi::FLAG_WRITE;
        let mut out = Vec::new();
        to_lock_events(&[inner, read, write], &map, &mut out);
        assert_eq!(out.iter().map(|e| e.lock).collect::<Vec<_>>(), [4, 9, 9]);
        assert_eq!(
            out.iter().map(|e| e.mode).collect::<Vec<_>>(),
            [None, Some(LockMode::Read), Some(LockMode::Write)]
        );
    }

    #[test]
    fn flags_become_modes_and_trylocks() {
        let map = LockAddrMap::new([(0x8000_0100, 4), (0x8000_0208, 6)])
            .with_rw([(0x8000_0100, 9)])
            .with_sleep([(0x8000_0200, 6)]);
        let mut write = ev(PluginEventKind::Contended, 0x8000_0100, 0);
        write.flags = abi::FLAG_WRITE;
        let mut read = ev(PluginEventKind::Released, 0x8000_0100, 0);
        read.flags = abi::FLAG_READ | abi::FLAG_NO_SITE;
        let mut try_ = ev(PluginEventKind::Acquired, 0x8000_0100, 0);
        try_.flags = abi::FLAG_TRYLOCK;
        let mut slept = ev(PluginEventKind::SleepAcquired, 0x8000_0200, 0);
        slept.flags = abi::FLAG_SLEPT;
        let woke = ev(PluginEventKind::SleepReleased, 0x8000_0200, 0);
        let mut out = Vec::new();
        let s = to_lock_events(&[write, read, try_, slept, woke], &map, &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|e| (e.lock, e.kind, e.mode, e.trylock))
            .collect();
        assert_eq!(
            got,
            [
                (9, EventKind::Spin, Some(LockMode::Write), false),
                (9, EventKind::Released, Some(LockMode::Read), false),
                (4, EventKind::Acquired { contended: false }, None, true),
                (
                    6,
                    EventKind::Acquired { contended: true },
                    Some(LockMode::Sleep),
                    false
                ),
                (6, EventKind::Released, Some(LockMode::Sleep), false),
            ]
        );
        assert_eq!((s.sleep, s.converted, s.unmapped), (2, 5, 0));
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
