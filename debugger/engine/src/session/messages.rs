//! What the session's threads say to each other, and how they are started.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::error::SessionError;
use super::handle::Command;
use crate::feed::{Feed, StopReason};
use crate::model::HartId;

/// Messages to the engine thread.
pub(super) enum Msg {
    Feed(Feed),
    Command(Command),
    /// The probe thread read its last.
    ProbeDone,
    /// QEMU exited with this status (code, or None for a signal) and what it printed.
    QemuExited {
        code: Option<i32>,
        stderr: String,
    },
    /// The gdb connection failed.
    GdbLost(String),
    /// The source could not read the target: a corrupt value or a mismatched kernel.
    SourceFailed(String),
    /// The user's gdb (through the proxy): what it holds, or `None` when it holds nothing.
    UserGdb(Option<String>),
    /// A joined session's owner (`lockscope qemu`) is gone, and this is why.
    OwnerGone(String),
}

/// Requests to the gdb thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GdbRequest {
    Interrupt,
    Resume,
    /// Let the guest run again after a sample capture, if a sample capture is what stopped it:
    /// never a guest someone else holds (QEMU -S, the user's gdb, `i`).
    ResumeSampled,
    /// Stop and capture, leaving the guest stopped: the monitor wants the registers and stacks
    /// of a recorded panic, a confirmed deadlock or a stall; the hart it is about, if known.
    Capture(StopReason, Option<HartId>),
    Quit,
}

/// The engine thread's inbox, as the other threads hold it.
#[derive(Clone)]
pub(super) struct Outbox(pub(super) Sender<Msg>);

impl Outbox {
    pub(super) fn feed(&self, f: Feed) {
        let _ = self.0.send(Msg::Feed(f));
    }

    /// Sends `m`; false when the engine has gone.
    pub(super) fn send(&self, m: Msg) -> bool {
        self.0.send(m).is_ok()
    }
}

/// Locks a mutex whose holder may have panicked: the data is plain state, still usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a named thread.
pub(super) fn spawn<F: FnOnce() -> T + Send + 'static, T: Send + 'static>(
    name: &str,
    f: F,
) -> Result<JoinHandle<T>, SessionError> {
    std::thread::Builder::new()
        .name(format!("lockscope-{name}"))
        .spawn(f)
        .map_err(|source| SessionError::Io {
            what: format!("starting the {name} thread"),
            source,
        })
}

/// A flag every thread watches to wind down.
pub(super) type StopFlag = Arc<std::sync::atomic::AtomicBool>;
