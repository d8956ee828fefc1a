//! Lock events: what one hart did to one lock, and in which mode.

use serde::{Deserialize, Serialize};

use super::{HartId, LockId};

/// What happened in one lock event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// The first test-and-set failed; the hart starts spinning.
    Spin,
    /// The lock was taken; `contended` when it was taken after spinning.
    Acquired {
        contended: bool,
    },
    Released,
}

/// How a lock was taken, beyond a plain spinlock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// A reader's (shared) hold of a reader-writer lock.
    Read,
    /// A writer's (exclusive) hold of a reader-writer lock.
    Write,
    /// A sleeplock: held by a process, not a hart, and often released on another hart. `lock`
    /// is the sleeplock's inner spinlock; `Acquired` is the moment the process got the
    /// sleeplock (inside `acquiresleep`, the inner spinlock held), `Released` when it gave it
    /// back. There is no `Spin`: a process waiting for a sleeplock sleeps.
    Sleep,
}

/// One lock event from a hart's ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEvent {
    pub time_ns: u64,
    pub hart: HartId,
    pub lock: LockId,
    pub kind: EventKind,
    /// Return address into the code that did it (symbolize `pc - 1`).
    pub pc: u64,
    /// `None`: a spinlock (every event of a source that knows no modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
    /// The acquisition was a trylock: it never waits, so it orders nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub trylock: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl LockEvent {
    /// The mode and trylock flag in three bits, for the recording codecs: the mode (0 none,
    /// 1 read, 2 write, 3 sleep) and the trylock flag as bit 2. 0 for a plain spinlock event.
    pub fn mode_bits(&self) -> u8 {
        let m = match self.mode {
            None => 0,
            Some(LockMode::Read) => 1,
            Some(LockMode::Write) => 2,
            Some(LockMode::Sleep) => 3,
        };
        m | (self.trylock as u8) << 2
    }

    /// Sets the mode and trylock flag from [`LockEvent::mode_bits`]; `None` for bits it never
    /// writes.
    pub fn with_mode_bits(mut self, bits: u8) -> Option<Self> {
        if bits > 7 {
            return None;
        }
        self.mode = match bits & 3 {
            0 => None,
            1 => Some(LockMode::Read),
            2 => Some(LockMode::Write),
            _ => Some(LockMode::Sleep),
        };
        self.trylock = bits & 4 != 0;
        Some(self)
    }

    /// A spinlock event (no mode, not a trylock).
    pub fn new(time_ns: u64, hart: HartId, lock: LockId, kind: EventKind, pc: u64) -> Self {
        Self {
            time_ns,
            hart,
            lock,
            kind,
            pc,
            mode: None,
            trylock: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_without_modes_read_as_spinlock_events() {
        let e: LockEvent =
            serde_json::from_str(r#"{"time_ns":1,"hart":0,"lock":2,"kind":"Released","pc":3}"#)
                .unwrap();
        assert_eq!(e, LockEvent::new(1, 0, 2, EventKind::Released, 3));
        let json = serde_json::to_string(&e).unwrap();
        assert!(
            !json.contains("mode") && !json.contains("trylock"),
            "{json}"
        );
    }
}
