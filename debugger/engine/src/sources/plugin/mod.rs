//! Lock events from lockscope's QEMU TCG plugin (`debugger/qemu-plugin`), for kernels that do
//! not record their own: an unmodified xv6 gets wait and hold times, contention sites and lock
//! order like our kernel.
//!
//! - [`plan()`]: from the ELF, what the plugin must watch ([`LockFunctions`] names the lock
//!   functions), and what it cannot see ([`Blind`]).
//! - [`PluginFile`]: the shared file: written before QEMU starts (header and watch table),
//!   then drained while it runs ([`PluginFile::drain`]), its per-hart state read
//!   ([`PluginFile::hart_states`]), and VM stops written into it ([`PluginFile::note_stopped`],
//!   [`PluginFile::note_resumed`]) so the plugin takes them out of its clock.
//! - [`find_plugin`], [`probe_qemu`]: which plugin build fits the QEMU found, and where it is.
//! - [`to_lock_events`]: events keyed by lock address into the model's [`LockEvent`]s (with
//!   their read or write mode).
//! - Threads: every event names the guest thread that made it ([`PluginEvent::thread`]), by the
//!   address of its saved context ([`PluginFile::thread_context`]): xv6's `&proc[i].context`,
//!   or `&cpus[h].context` for hart `h`'s scheduler. A sleeplock is held by the thread of its
//!   `SleepAcquired`.
//!
//! Layout and protocol: `lockscope-plugin-abi` and docs/plugin.md.
//!
//! [`LockEvent`]: crate::model::LockEvent

mod convert;
mod cursors;
mod drain;
mod file;
mod find;
mod insn;
mod plan;
mod source;

use thiserror::Error;

use crate::model::HartId;

pub use crate::model::LockMode;
pub use abi::WatchKind;
pub use convert::{to_lock_events, ConvertStats, LockAddrMap};
pub use drain::{DrainStats, PluginHartState, PluginHeld, PluginSpin};
pub use file::{monotonic_ns, PluginFile, PluginStatus};
pub use find::{
    find_plugin, plugin_for_qemu, probe_qemu, qemu_plugin_args, PluginApi, PluginChoice,
    QemuVersion, PLUGIN_DIR_ENV,
};
pub use lockscope_plugin_abi as abi;
pub use plan::{plan, Blind, LockFunctions, WatchPlan};
pub use source::WithPluginEvents;

/// Why the plugin cannot be used. Every message says what to do.
#[derive(Debug, Error)]
pub enum PluginError {
    #[error("the RISC-V disassembler failed: {0}")]
    Disassembler(String),
    #[error("the kernel has no lock functions lockscope knows (looked for acquire: {acquire}; release: {release}); the plugin needs them to watch locks")]
    NoLockFunctions { acquire: String, release: String },
    #[error("plugin file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin file {path}: cannot reserve {bytes} bytes ({source}): free space there, or point LOCKSCOPE_RAM_DIR at a directory with room")]
    NoSpace {
        path: std::path::PathBuf,
        bytes: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin file {path}: {reason}")]
    Corrupt {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{harts} harts: the plugin file holds 1 to {max}; use a smaller -smp")]
    TooManyHarts { harts: u32, max: u32 },
    #[error("this QEMU cannot load lockscope's plugin ({reason}): reading state only")]
    Unavailable { reason: String },
}

/// What an event says, in lock_stat's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginEventKind {
    /// An attempt abandoned before it succeeded (a failed trylock). A normal acquisition's
    /// attempt is its `Contended` event, or its `Acquired` event when uncontended.
    Attempt,
    /// The first test-and-set failed; the hart spins (`time_ns` is when it began).
    Contended,
    /// Taken, after `wait_ns` and `spins` failed test-and-sets.
    Acquired,
    /// Released by this hart, `wait_ns` after it was taken.
    Released,
    /// A sleeplock (`addr` is the sleeplock) was taken by `thread` (on `hart`).
    SleepAcquired,
    /// A sleeplock was released by `thread` (often on another hart than it was taken).
    SleepReleased,
    /// A release of a lock word this hart was not seen taking (a test-and-set outside the
    /// watched acquire functions). Pairs with nothing.
    UnseenRelease,
}

/// One event from the plugin's rings, keyed by lock address (the source maps addresses to
/// lock ids: see [`to_lock_events`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginEvent {
    /// Plugin time: host monotonic ns with the VM's stops taken out.
    pub time_ns: u64,
    pub hart: HartId,
    /// The lock word aligned down to 4 bytes (a sleeplock's own address for sleep events; a
    /// reader-writer lock's inner spinlock, `rw->lk` at its start, for read and write holds).
    pub addr: u64,
    pub kind: PluginEventKind,
    /// Return address of the call into the lock function (symbolize `site_pc - 1`), or 0. A
    /// reader-writer hold, and the inner spinlock acquisitions inside its function, carry the
    /// call into the reader-writer function.
    pub site_pc: u64,
    /// `abi::FLAG_*`: trylock, read, write, no site, inner lock of an rw function, slept.
    pub flags: u8,
    /// `Contended`: a hart holding the lock then (the writer first for an rw lock).
    pub owner: Option<HartId>,
    /// `Contended`: every hart holding it then, one bit each (several readers of an rw lock).
    pub owners: u64,
    /// `Acquired`: wait since the first attempt; `Released`: hold time (0 with
    /// `abi::FLAG_NO_HOLD`); `SleepAcquired`: the wait for the sleeplock.
    pub wait_ns: u64,
    /// `Acquired`: failed test-and-sets (reader-writer: times it went back to waiting).
    pub spins: u32,
    /// The thread that made it: its index (1-based) in the plugin's thread table, resolved by
    /// [`PluginFile::thread_context`]; 0 when unknown.
    pub thread: u32,
}
