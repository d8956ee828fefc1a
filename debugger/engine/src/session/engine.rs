//! The engine thread: applies every [`Feed`] to the [`Monitor`] (which records them when asked),
//! sends the captures the monitor wants to the gdb thread, and publishes a view through the
//! [`SessionHandle`] when something changed.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handle::{Command, SessionHandle};
use super::launch::Qemu;
use super::messages::{GdbRequest, Msg, StopFlag};
use super::registry::{write_status, Status};
use crate::feed::{Ending, Feed};
use crate::monitor::Monitor;
use std::path::PathBuf;

/// How long the engine waits for QEMU's exit after the gdb connection drops.
const EXIT_GRACE: Duration = Duration::from_millis(300);
/// How long the engine waits for the probe's last read after the session ends.
const PROBE_GRACE: Duration = Duration::from_millis(500);

pub(super) struct Engine {
    pub(super) monitor: Monitor,
    pub(super) rx: Receiver<Msg>,
    pub(super) handle: Arc<SessionHandle>,
    /// The gdb thread; `None` when the session only reads shared RAM (joined).
    pub(super) gdb: Option<Sender<GdbRequest>>,
    pub(super) stop: StopFlag,
    pub(super) view_every: Duration,
    pub(super) has_probe: bool,
    pub(super) qemu: Option<Arc<Qemu>>,
    /// Where to say how the session goes, for sessions that join this one.
    pub(super) status: Option<StatusFile>,
}

/// A session's [`Status`] file, rewritten when something in it changes.
pub(super) struct StatusFile {
    pub(super) path: PathBuf,
    pub(super) status: Status,
}

impl StatusFile {
    fn update(&mut self, f: impl FnOnce(&mut Status)) {
        let before = self.status.clone();
        f(&mut self.status);
        if self.status != before {
            let _ = write_status(&self.path, &self.status);
        }
    }
}

impl Engine {
    /// Runs until the session ends; returns the monitor with everything gathered.
    pub(super) fn run(mut self) -> Monitor {
        let mut published = self.monitor.generation();
        let mut next_view = Instant::now();
        let mut ending: Option<Ending> = None;
        let mut probe_done = !self.has_probe;
        loop {
            let timeout = next_view.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(timeout.max(Duration::from_millis(1))) {
                Ok(Msg::Feed(f)) => {
                    self.monitor.apply(&f);
                    if ending.is_none() {
                        if let Some(reason) = self.monitor.capture_wanted() {
                            let focus = self.monitor.capture_focus();
                            self.to_gdb(GdbRequest::Capture(reason, focus));
                        }
                        if self.monitor.resume_wanted() {
                            self.to_gdb(GdbRequest::ResumeSampled);
                        }
                    }
                }
                Ok(Msg::Command(c @ (Command::Interrupt | Command::Resume))) => {
                    if self.gdb.is_none() {
                        self.monitor.apply(&Feed::Console(
                            "\n[lockscope] this dashboard only reads the guest's shared RAM: its gdb stub belongs to the `lockscope qemu` session; stop the guest with your own gdb (make qemu-gdb) instead\n".into(),
                        ));
                    }
                    self.to_gdb(if c == Command::Interrupt {
                        GdbRequest::Interrupt
                    } else {
                        GdbRequest::Resume
                    });
                }
                Ok(Msg::UserGdb(state)) => {
                    if let Some(s) = self.status.as_mut() {
                        s.update(|s| s.user_gdb = state.clone());
                    }
                    self.monitor.set_user_gdb(state);
                }
                Ok(Msg::OwnerGone(reason)) => {
                    ending = Some(Ending::Lost { reason });
                    self.stop.store(true, Ordering::Release);
                    if probe_done {
                        break;
                    }
                }
                Ok(Msg::Command(Command::Quit)) => {
                    ending.get_or_insert(Ending::Detached);
                    break;
                }
                Ok(Msg::ProbeDone) => {
                    probe_done = true;
                    if ending.is_some() {
                        break;
                    }
                }
                Ok(Msg::QemuExited { code, stderr }) => {
                    ending = Some(exit_ending(code, &stderr));
                    if let Some(s) = self.status.as_mut() {
                        s.update(|s| {
                            s.exit_status = code;
                            s.user_gdb = None;
                        });
                    }
                    // The probe reads the final state from the RAM file, then reports done.
                    self.stop.store(true, Ordering::Release);
                    self.to_gdb(GdbRequest::Quit);
                    if probe_done {
                        break;
                    }
                }
                Ok(Msg::GdbLost(reason)) => {
                    if let Some(end) = self.gdb_lost(reason) {
                        ending = Some(end);
                        break;
                    }
                }
                Ok(Msg::SourceFailed(reason)) => {
                    self.monitor.apply(&Feed::Console(format!(
                        "\n[lockscope] cannot read the kernel's state: {reason}\n"
                    )));
                    if ending.is_none() && self.has_probe {
                        // The probe has stopped; without it nothing more arrives.
                        probe_done = true;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_view {
                next_view = Instant::now() + self.view_every;
                if self.monitor.generation() != published {
                    published = self.monitor.generation();
                    self.handle.publish(self.monitor.view());
                }
            }
        }
        self.wind_down(probe_done, ending)
    }

    fn to_gdb(&self, r: GdbRequest) {
        if let Some(g) = &self.gdb {
            let _ = g.send(r);
        }
    }

    /// The stub connection failed. A QEMU we booted may be exiting: the exit message that
    /// follows says how it ended; if it does not exit, shared RAM goes on without control.
    /// Attached, the target is lost: returns how the session ended.
    fn gdb_lost(&mut self, reason: String) -> Option<Ending> {
        let Some(q) = &self.qemu else {
            return Some(Ending::Lost { reason });
        };
        let deadline = Instant::now() + EXIT_GRACE;
        while q.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if q.try_wait().is_none() {
            self.monitor.apply(&Feed::Console(format!(
                "\n[lockscope] lost QEMU's gdb stub ({reason}); still reading shared RAM, but the guest can no longer be stopped or inspected\n"
            )));
        }
        None
    }

    /// Stops the other threads, applies what the probe still sends (its final read), ends the
    /// monitor's feed and publishes the last view.
    fn wind_down(mut self, probe_done: bool, ending: Option<Ending>) -> Monitor {
        self.stop.store(true, Ordering::Release);
        self.to_gdb(GdbRequest::Quit);
        let grace = if probe_done {
            Duration::ZERO
        } else {
            PROBE_GRACE
        };
        while let Ok(m) = self.rx.recv_timeout(grace) {
            match m {
                Msg::Feed(f) => self.monitor.apply(&f),
                Msg::ProbeDone => break,
                _ => {}
            }
        }
        if let Some(s) = self.status.as_mut() {
            s.update(|s| s.ended = true);
        }
        self.monitor
            .apply(&Feed::End(ending.unwrap_or(Ending::Detached)));
        self.monitor.finish_recording();
        self.handle.publish(self.monitor.view());
        self.monitor
    }
}

/// How a QEMU exit ends the session: its status (the kernel's verdict), or a signal.
fn exit_ending(code: Option<i32>, stderr: &str) -> Ending {
    match code {
        Some(status) => Ending::Exited { status },
        None => Ending::Lost {
            reason: format!(
                "QEMU was killed by a signal{}",
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            ),
        },
    }
}
