//! The thread-safe meeting point between a session (which feeds a [`Monitor`]) and a UI (which
//! renders its views). The UI never waits on the target: it takes the latest published view.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use crate::monitor::View;

/// What a UI may ask of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Stop the guest (all harts) and capture registers and backtraces.
    Interrupt,
    /// Let a stopped guest run again.
    Resume,
    /// End the session: detach, stop QEMU if we started it, keep what was gathered.
    Quit,
}

/// Where views are published and commands collected.
pub struct SessionHandle {
    latest: Mutex<Arc<View>>,
    generation: AtomicU64,
    commands: Mutex<Option<Sender<Command>>>,
    /// The guest console's input (QEMU's stdin), when the session has it.
    console_in: Mutex<Option<Box<dyn Write + Send>>>,
}

impl SessionHandle {
    /// A handle showing `initial`, and the receiving end of its commands.
    pub fn new(initial: View) -> (Arc<Self>, Receiver<Command>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = Arc::new(Self {
            generation: AtomicU64::new(initial.generation),
            latest: Mutex::new(Arc::new(initial)),
            commands: Mutex::new(Some(tx)),
            console_in: Mutex::new(None),
        });
        (h, rx)
    }

    /// A handle that always shows `view` and ignores commands: for replays and tests.
    pub fn fixed(view: View) -> Arc<Self> {
        let (h, _rx) = Self::new(view);
        *h.commands.lock().unwrap_or_else(|e| e.into_inner()) = None;
        h
    }

    /// The newest view. Holds a lock only long enough to clone an `Arc`.
    pub fn view(&self) -> Arc<View> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The generation of the newest view: cheap to poll, to redraw only on change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Publishes a new view (the session's side).
    pub fn publish(&self, view: View) {
        let g = view.generation;
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
        self.generation.store(g, Ordering::Release);
    }

    /// Sends a command; false when the session no longer listens.
    pub fn send(&self, cmd: Command) -> bool {
        match &*self.commands.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(cmd).is_ok(),
            None => false,
        }
    }

    /// Types `bytes` at the guest console; false when the session has no console input (or it
    /// has closed).
    pub fn send_console(&self, bytes: &[u8]) -> bool {
        let mut w = self.console_in.lock().unwrap_or_else(|e| e.into_inner());
        let Some(out) = w.as_mut() else {
            return false;
        };
        if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
            *w = None;
            return false;
        }
        true
    }

    /// True when [`SessionHandle::send_console`] can type at the guest console.
    pub fn accepts_console(&self) -> bool {
        self.console_in
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Gives the handle the guest console's input (the session's side).
    pub(super) fn set_console_input(&self, input: Box<dyn Write + Send>) {
        *self.console_in.lock().unwrap_or_else(|e| e.into_inner()) = Some(input);
    }

    /// True when commands can reach a live session (interrupt/resume make sense).
    pub fn controllable(&self) -> bool {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}
