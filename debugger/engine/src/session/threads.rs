//! Starting a session's threads, each with what it needs: the console, the QEMU and owner
//! watchers, the proxy's events, the probe, the gdb thread and the engine.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::clock::Clock;
use super::console::console_thread;
use super::engine::{Engine, StatusFile};
use super::error::SessionError;
use super::gdb::{gdb_thread, GdbSide, Poll};
use super::handle::SessionHandle;
use super::launch::Qemu;
use super::messages::{spawn, GdbRequest, Msg, Outbox, StopFlag};
use super::options::{Joined, SessionOptions};
use super::probe::probe_thread;
use super::qemu_wait::qemu_wait_thread;
use super::reading::Reading;
use super::registry::{read_status, Status};
use super::stop_ram::StopRam;
use super::tail::Tail;
use super::target::{ConsoleFeed, Reached};
use crate::feed::{Feed, StopInfo, StopReason};
use crate::gdbserver::proxy::GdbProxy;
use crate::memory::SharedRam;
use crate::monitor::Monitor;
use crate::qemu::ram_dir::alive;
use crate::recording::Recorder;
use crate::symbols::{Symbols, UnwindLimits};

/// Guest RAM assumed for unwinding stacks when attached (the session did not boot QEMU, so it
/// does not know `-m`): generous, because a frame pointer outside the real RAM only fails its
/// read through the stub and ends the walk.
const ATTACHED_RAM: u64 = 16 << 30;
/// How often a joined session looks at its owner.
const OWNER_POLL: Duration = Duration::from_millis(200);

/// The session's threads as they are started, and what they share.
pub(super) struct Threads {
    pub(super) out: Outbox,
    rx: Option<Receiver<Msg>>,
    pub(super) stop: StopFlag,
    pub(super) clock: Clock,
    pub(super) handles: Vec<JoinHandle<()>>,
}

impl Threads {
    pub(super) fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Threads {
            out: Outbox(tx),
            rx: Some(rx),
            stop: StopFlag::default(),
            clock: Clock::default(),
            handles: Vec::new(),
        }
    }

    /// Forwards the console. A pipe is also written to `log`; a log QEMU writes is followed
    /// until `done`.
    pub(super) fn console(
        &mut self,
        feed: ConsoleFeed,
        log: Option<PathBuf>,
        snap_now: Arc<AtomicBool>,
        done: Box<dyn Fn() -> bool + Send>,
    ) -> Result<(), SessionError> {
        let (out, log): (Box<dyn Read + Send>, Option<PathBuf>) = match feed {
            ConsoleFeed::Pipe(p) => (p, log),
            ConsoleFeed::Log(path) => {
                let tail = Tail::open(&path, done).map_err(|source| SessionError::Io {
                    what: format!("reading the console log {}", path.display()),
                    source,
                })?;
                (Box::new(tail), None)
            }
        };
        let to = self.out.clone();
        self.handles.push(spawn("console", move || {
            console_thread(out, log, to, snap_now)
        })?);
        Ok(())
    }

    pub(super) fn qemu_wait(&mut self, qemu: &Arc<Qemu>) -> Result<(), SessionError> {
        let (qemu, to, stop) = (qemu.clone(), self.out.clone(), self.stop.clone());
        self.handles.push(spawn("qemu-wait", move || {
            qemu_wait_thread(qemu, to, stop)
        })?);
        Ok(())
    }

    /// Tells the engine what the user's gdb holds, as the proxy says it.
    pub(super) fn proxy_watch(&mut self, proxy: &Arc<GdbProxy>) -> Result<(), SessionError> {
        let events = proxy.events();
        let (proxy, to, stop) = (Arc::downgrade(proxy), self.out.clone(), self.stop.clone());
        self.handles.push(spawn("gdb-user", move || {
            let mut last: Option<Option<String>> = None;
            loop {
                match events.recv_timeout(Duration::from_millis(200)) {
                    Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let Some(p) = proxy.upgrade() else { return };
                let status = p.user_status();
                let now = match (status.stopped, status.connected) {
                    (Some(s), _) => Some(s.to_string()),
                    (None, Some(_)) => Some("gdb connected".to_string()),
                    (None, None) => None,
                };
                if last.as_ref() != Some(&now) {
                    last = Some(now.clone());
                    if !to.send(Msg::UserGdb(now)) {
                        return;
                    }
                }
            }
        })?);
        Ok(())
    }

    /// Watches a joined session's owner: its status (the user's gdb, QEMU's exit) and whether
    /// it still runs.
    pub(super) fn owner_watch(&mut self, j: &Joined) -> Result<(), SessionError> {
        let (to, stop) = (self.out.clone(), self.stop.clone());
        let (pid, status_file) = (j.owner_pid, j.status_file.clone());
        self.handles.push(spawn("owner", move || {
            let mut last = Status::default();
            loop {
                std::thread::sleep(OWNER_POLL);
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let status = status_file.as_deref().and_then(read_status);
                if let Some(s) = &status {
                    if s.user_gdb != last.user_gdb {
                        to.send(Msg::UserGdb(s.user_gdb.clone()));
                    }
                    if s.exit_status.is_some() || s.ended {
                        to.send(Msg::QemuExited {
                            code: s.exit_status,
                            stderr: String::new(),
                        });
                        return;
                    }
                    last = s.clone();
                }
                if !alive(pid) {
                    to.send(Msg::OwnerGone(format!(
                        "the lockscope qemu session (pid {pid}) ended without saying how QEMU exited"
                    )));
                    return;
                }
            }
        })?);
        Ok(())
    }

    pub(super) fn probe(
        &mut self,
        reading: &Reading,
        ram_file: &Path,
        ram: &Range<u64>,
        options: &SessionOptions,
    ) -> Result<(), SessionError> {
        let mem = SharedRam::open(ram_file, ram.start)?;
        let r = reading.clone();
        let (drain, snap) = (options.drain_hz, options.snapshot_hz);
        self.handles
            .push(spawn("probe", move || probe_thread(r, mem, drain, snap))?);
        Ok(())
    }

    /// Lets the guest run (unless it is held at reset and the user did not ask to continue it)
    /// and hands the stub connection to the gdb thread; returns where to send it requests. A
    /// stop at once (an immediate panic) is that thread's first job.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gdb(
        &mut self,
        reached: &mut Reached,
        reading: Reading,
        ram: &Range<u64>,
        halt: Option<u64>,
        options: &SessionOptions,
        symbols: &Arc<Symbols>,
        recorder: Option<Recorder>,
    ) -> Result<Option<Sender<GdbRequest>>, SessionError> {
        let Some(mut client) = reached.client.take() else {
            return Ok(None);
        };
        let shared = reached
            .shared_ram
            .as_ref()
            .map(|p| SharedRam::open(p, ram.start))
            .transpose()?;
        let hold = reached.held_at_reset && !options.continue_held;
        let initial = if hold {
            reading.out.feed(Feed::Console(
                "[lockscope] the guest is held at reset (QEMU was started with -S and nothing has continued it): it starts when its gdb continues it; press i to continue it from here, or attach with --continue\n".into(),
            ));
            reading.out.feed(Feed::Stop(StopInfo {
                reason: StopReason::Other,
                hart: None,
                harts: Vec::new(),
            }));
            None
        } else {
            let initial = client.resume()?;
            if initial.is_none() {
                self.clock.running();
            }
            initial
        };
        let side = GdbSide {
            reading,
            client,
            shared,
            symbols: symbols.clone(),
            limits: UnwindLimits {
                ram: ram.clone(),
                ..UnwindLimits::default()
            },
            halt,
            poll: (!options.shared_ram).then_some(Poll {
                interval: Duration::from_secs_f64(1.0 / options.poll_hz.max(0.1)),
                budget: options.poll_budget,
            }),
            stop_ram: recorder.map(|r| StopRam::new(r, options.known_ram())),
            sampled: false,
        };
        let (tx, rx) = mpsc::channel();
        self.handles
            .push(spawn("gdb", move || gdb_thread(side, rx, initial))?);
        Ok(Some(tx))
    }

    /// The handle a UI watches, the thread that forwards its commands, and the engine.
    pub(super) fn engine(
        &mut self,
        monitor: Monitor,
        gdb: Option<Sender<GdbRequest>>,
        options: &SessionOptions,
        has_probe: bool,
        qemu: Option<Arc<Qemu>>,
    ) -> Result<(Arc<SessionHandle>, JoinHandle<Monitor>), SessionError> {
        let (handle, commands) = SessionHandle::new(monitor.view());
        let to = self.out.clone();
        self.handles.push(spawn("commands", move || {
            while let Ok(c) = commands.recv() {
                if !to.send(Msg::Command(c)) {
                    break;
                }
            }
        })?);
        let status = options.status_file.clone().map(|path| StatusFile {
            path,
            status: Status::default(),
        });
        let engine = Engine {
            monitor,
            rx: self.rx.take().expect("one engine per session"),
            handle: handle.clone(),
            gdb,
            stop: self.stop.clone(),
            view_every: Duration::from_secs_f64(1.0 / options.view_hz.max(0.5)),
            has_probe,
            qemu,
            status,
        };
        let engine = spawn("engine", move || engine.run())?;
        Ok((handle, engine))
    }
}

/// Guest RAM for unwinding: what the session knows, else a generous guess.
pub(super) fn unwind_ram(options: &SessionOptions) -> Range<u64> {
    options
        .known_ram()
        .unwrap_or(crate::qemu::RAM_BASE..crate::qemu::RAM_BASE + ATTACHED_RAM)
}
