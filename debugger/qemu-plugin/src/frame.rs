//! The state of a reader-writer lock function in progress on a thread: kept on the thread by
//! `hart`, driven by `rw`.

use lockscope_plugin_abi as abi;

/// A reader-writer lock function in progress on a thread.
#[derive(Clone, Copy)]
pub struct RwFrame {
    /// `FLAG_READ` or `FLAG_WRITE`.
    pub flags: u8,
    /// `read_release`/`write_release`.
    pub release: bool,
    /// The hold begins or ends at the function's return.
    pub at_return: bool,
    /// The call into the function (its return address).
    pub site: u64,
    /// The thread's pending call sites when it was called.
    pub mark: usize,
    /// Its inner spinlock: the rw lock. 0 until taken.
    pub addr: u64,
    /// When the inner lock was first taken: the first attempt of the rw acquisition.
    pub start_ns: u64,
    /// Inner acquisitions so far.
    pub inner: u32,
    /// Times it went back to waiting.
    pub waits: u32,
    /// An `RwWait` ran: the next inner release is a wait, not the hold.
    pub waiting: bool,
}

impl RwFrame {
    pub const NONE: RwFrame = RwFrame {
        flags: 0,
        release: false,
        at_return: false,
        site: 0,
        mark: 0,
        addr: 0,
        start_ns: 0,
        inner: 0,
        waits: 0,
        waiting: false,
    };

    /// The held-list key of this frame's hold: the rw lock tagged read or write.
    pub fn key(&self) -> u64 {
        let tag = if self.flags & abi::FLAG_WRITE != 0 {
            abi::HELD_TAG_WRITE
        } else {
            abi::HELD_TAG_READ
        };
        self.addr | tag
    }
}
