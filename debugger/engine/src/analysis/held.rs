//! An entry of a hart's held stack as rebuilt from its events: what the event replay keeps and
//! the lock-order graph reads.

use crate::model::LockId;

/// One entry of a rebuilt held stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeldEv {
    pub lock: LockId,
    /// The hart's snapshot epoch when it was pushed.
    pub epoch: u32,
    pub pc: u64,
    pub since_ns: u64,
}
