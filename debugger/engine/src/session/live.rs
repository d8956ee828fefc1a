//! [`Session`]: reaching the target and running the threads that read it, one file each.
//!
//! - `probe` (shared RAM only): drains and snapshots without pausing the guest.
//! - `gdb`: owns the stub connection: stops, resumes, captures, and polls without shared RAM.
//! - `engine`: feeds the monitor, asks for the captures it wants, publishes views.
//! - `console`: forwards QEMU's serial output and writes the console log.
//! - `qemu_wait`: notices QEMU exiting.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::clock::Clock;
use super::console::console_thread;
use super::engine::Engine;
use super::error::SessionError;
use super::gdb::{gdb_thread, GdbSide, Poll};
use super::handle::{Command, SessionHandle};
use super::launch::Qemu;
use super::messages::{spawn, GdbRequest, Msg, Outbox, StopFlag};
use super::options::{SessionOptions, Target};
use super::probe::probe_thread;
use super::qemu_wait::qemu_wait_thread;
use super::reading::Reading;
use super::stop_ram::StopRam;
use super::target::{self, Reached};
use crate::analysis::Severity;
use crate::feed::Ending;
use crate::memory::SharedRam;
use crate::monitor::{Monitor, SourceKind, TargetState, View};
use crate::qemu::RAM_BASE;
use crate::recording::{Recorder, RecordingHeader, RecordingWriter, WriterOptions};
use crate::sources;
use crate::symbols::{Symbols, UnwindLimits};

/// Guest RAM assumed for unwinding stacks when attached (the session did not boot QEMU, so it
/// does not know `-m`): generous, because a frame pointer outside the real RAM only fails its
/// read through the stub and ends the walk.
const ATTACHED_RAM: u64 = 16 << 30;

/// A running session. Drop or [`Session::finish`] ends it.
pub struct Session {
    handle: Arc<SessionHandle>,
    out: Outbox,
    engine: Option<JoinHandle<Monitor>>,
    others: Vec<JoinHandle<()>>,
    stop: StopFlag,
    qemu: Option<Arc<Qemu>>,
    console_log: Option<ConsoleLog>,
    /// The QEMU command line, when the session boots QEMU.
    pub qemu_command: Option<String>,
}

/// How a session ended: everything it gathered, and the console log when it was kept.
pub struct Finished {
    pub monitor: Monitor,
    /// The guest console, kept when asked for (`console_log`) or when the session ended in a
    /// fault (a panic, deadlock, stall, failed workload or lost target); otherwise removed.
    pub console_log: Option<PathBuf>,
}

/// Where the guest console goes, and whether the user asked for it.
struct ConsoleLog {
    path: PathBuf,
    asked: bool,
}

impl ConsoleLog {
    fn new(asked: Option<PathBuf>) -> Self {
        match asked {
            Some(path) => ConsoleLog { path, asked: true },
            None => ConsoleLog {
                path: std::env::temp_dir()
                    .join(format!("lockscope-console-{}.log", std::process::id())),
                asked: false,
            },
        }
    }

    /// Keeps the log if asked for or if the session ended in a fault; removes it otherwise.
    fn settle(self, monitor: &Monitor) -> Option<PathBuf> {
        let lost = matches!(
            monitor.state(),
            TargetState::Ended {
                ending: Ending::Lost { .. }
            }
        );
        if self.asked || lost || monitor.check().severity == Severity::Fault {
            return Some(self.path);
        }
        let _ = std::fs::remove_file(&self.path);
        None
    }
}

impl Session {
    /// Starts the session: checks the ELF, boots or attaches, lets the guest run and starts the
    /// threads. Errors here are setup errors (no QEMU, no stub, a kernel lockscope cannot read).
    pub fn start(options: SessionOptions, symbols: Arc<Symbols>) -> Result<Session, SessionError> {
        // What the ELF is, checked before anything is booted.
        let kind = sources::detect(&symbols)?;
        let source = sources::open(kind, &symbols, options.known_ram())?;
        let halt = panic_halt(&options, &symbols)?;
        let (mut monitor, recorder) = new_monitor(&options, &symbols)?;
        monitor.set_kernel_reader(source.describe());

        let mut reached = match &options.target {
            Target::Run(config) => target::boot(config, options.shared_ram)?,
            Target::Attach(addr) => target::attach(addr)?,
        };
        if let Some(addr) = halt {
            reached.client.insert_breakpoint(addr)?;
        }

        let mut t = Threads::new();
        let from_boot = matches!(options.target, Target::Run(_));
        let reading = Reading::new(
            source,
            t.out.clone(),
            t.stop.clone(),
            t.clock.clone(),
            from_boot,
        );
        let mut console_log = None;
        let mut shared = None;
        let mut qemu = None;
        if let Some(b) = reached.booted.take() {
            let log = ConsoleLog::new(options.console_log.clone());
            t.console(b.console, &log)?;
            t.qemu_wait(&b.qemu)?;
            if let Some(path) = &b.shared_ram {
                t.probe(&reading, path, &options)?;
            }
            (console_log, shared, qemu) = (Some(log), b.shared_ram, Some(b.qemu));
        }
        let gdb = t.gdb(
            reached,
            reading,
            shared.as_ref(),
            halt,
            &options,
            &symbols,
            recorder,
        )?;
        let (handle, engine) = t.engine(monitor, gdb, &options, shared.is_some(), qemu.clone())?;
        Ok(Session {
            handle,
            out: t.out,
            engine: Some(engine),
            others: t.handles,
            stop: t.stop,
            qemu_command: qemu.as_ref().map(|q| q.command_line.clone()),
            qemu,
            console_log,
        })
    }

    pub fn handle(&self) -> Arc<SessionHandle> {
        self.handle.clone()
    }

    /// The newest view.
    pub fn view(&self) -> Arc<View> {
        self.handle.view()
    }

    /// Ends the session (detaches, stops QEMU if we booted it) and returns everything gathered,
    /// with the console log if it was kept.
    pub fn finish(mut self) -> Finished {
        self.out.send(Msg::Command(Command::Quit));
        let monitor = self.engine.take().and_then(|e| e.join().ok());
        self.stop.store(true, Ordering::Release);
        if let Some(q) = &self.qemu {
            q.cleanup();
        }
        for t in self.others.drain(..) {
            if !t.is_finished() {
                // The command forwarder ends when the handle's sender goes; don't wait on it.
                continue;
            }
            let _ = t.join();
        }
        let monitor = monitor.expect("the engine thread does not panic");
        let console_log = self.console_log.take().and_then(|log| log.settle(&monitor));
        Finished {
            monitor,
            console_log,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.out.send(Msg::Command(Command::Quit));
        self.stop.store(true, Ordering::Release);
        if let Some(e) = self.engine.take() {
            let _ = e.join();
        }
        if let Some(q) = &self.qemu {
            q.cleanup();
        }
    }
}

/// The panic-halt breakpoint's address, when asked for (our kernel's panic-halt function).
fn panic_halt(options: &SessionOptions, symbols: &Symbols) -> Result<Option<u64>, SessionError> {
    if !options.panic_breakpoint {
        return Ok(None);
    }
    Ok(Some(symbols.panic_halt()?.address))
}

/// The monitor, recording to `options.record` when asked; the recorder is shared with the gdb
/// thread, which saves guest RAM at stops.
fn new_monitor(
    options: &SessionOptions,
    symbols: &Arc<Symbols>,
) -> Result<(Monitor, Option<Recorder>), SessionError> {
    let source = if options.shared_ram {
        SourceKind::SharedRam
    } else {
        SourceKind::GdbPoll
    };
    let mut monitor = Monitor::new(options.monitor.clone(), Some(symbols.clone()), source)
        .map_err(|e| SessionError::Config(e.to_string()))?;
    let Some(record) = &options.record else {
        return Ok((monitor, None));
    };
    let (smp, bootargs) = match &options.target {
        Target::Run(c) => (c.smp, c.bootargs.clone()),
        Target::Attach(_) => (0, String::new()),
    };
    let how = if options.shared_ram {
        "shared-ram"
    } else {
        "gdb"
    };
    let mut header =
        RecordingHeader::new(smp, &bootargs, how).kernel(symbols.path(), symbols.fingerprint());
    if symbols.symbol(lockscope_abi::ROOT_SYMBOL).is_ok() {
        header.abi_version = lockscope_abi::ABI_VERSION;
    }
    let writer = RecordingWriter::create(
        &record.path,
        &header,
        WriterOptions {
            keep: record.keep,
            kernel_elf: record.with_kernel.then(|| symbols.elf_bytes().to_vec()),
            ..WriterOptions::default()
        },
    )?;
    let recorder = Recorder::new(writer);
    monitor.set_recorder(recorder.clone());
    Ok((monitor, Some(recorder)))
}

/// The session's threads as they are started, and what they share.
struct Threads {
    out: Outbox,
    rx: Option<Receiver<Msg>>,
    stop: StopFlag,
    clock: Clock,
    handles: Vec<JoinHandle<()>>,
}

impl Threads {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Threads {
            out: Outbox(tx),
            rx: Some(rx),
            stop: StopFlag::default(),
            clock: Clock::default(),
            handles: Vec::new(),
        }
    }

    fn console(
        &mut self,
        console: Box<dyn Read + Send>,
        log: &ConsoleLog,
    ) -> Result<(), SessionError> {
        let (path, to) = (log.path.clone(), self.out.clone());
        self.handles
            .push(spawn("console", move || console_thread(console, path, to))?);
        Ok(())
    }

    fn qemu_wait(&mut self, qemu: &Arc<Qemu>) -> Result<(), SessionError> {
        let (qemu, to, stop) = (qemu.clone(), self.out.clone(), self.stop.clone());
        self.handles.push(spawn("qemu-wait", move || {
            qemu_wait_thread(qemu, to, stop)
        })?);
        Ok(())
    }

    fn probe(
        &mut self,
        reading: &Reading,
        ram_file: &Path,
        options: &SessionOptions,
    ) -> Result<(), SessionError> {
        let mem = SharedRam::open(ram_file, RAM_BASE)?;
        let r = reading.clone();
        let (drain, snap) = (options.drain_hz, options.snapshot_hz);
        self.handles
            .push(spawn("probe", move || probe_thread(r, mem, drain, snap))?);
        Ok(())
    }

    /// Lets the guest run and hands the stub connection to the gdb thread; returns where to
    /// send it requests. A stop at once (an immediate panic) is that thread's first job.
    fn gdb(
        &mut self,
        mut reached: Reached,
        reading: Reading,
        ram_file: Option<&PathBuf>,
        halt: Option<u64>,
        options: &SessionOptions,
        symbols: &Arc<Symbols>,
        recorder: Option<Recorder>,
    ) -> Result<Sender<GdbRequest>, SessionError> {
        let shared = ram_file.map(|p| SharedRam::open(p, RAM_BASE)).transpose()?;
        let initial = reached.client.resume()?;
        if initial.is_none() {
            self.clock.running();
        }
        let ram: Range<u64> = options
            .known_ram()
            .unwrap_or(RAM_BASE..RAM_BASE + ATTACHED_RAM);
        let side = GdbSide {
            reading,
            client: reached.client,
            shared,
            symbols: symbols.clone(),
            limits: UnwindLimits {
                ram,
                ..UnwindLimits::default()
            },
            halt,
            poll: (!options.shared_ram).then_some(Poll {
                interval: Duration::from_secs_f64(1.0 / options.poll_hz.max(0.1)),
                budget: options.poll_budget,
            }),
            stop_ram: recorder.map(|r| StopRam::new(r, options.known_ram())),
        };
        let (tx, rx) = mpsc::channel();
        self.handles
            .push(spawn("gdb", move || gdb_thread(side, rx, initial))?);
        Ok(tx)
    }

    /// The handle a UI watches, the thread that forwards its commands, and the engine.
    fn engine(
        &mut self,
        monitor: Monitor,
        gdb: Sender<GdbRequest>,
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
        let engine = Engine {
            monitor,
            rx: self.rx.take().expect("one engine per session"),
            handle: handle.clone(),
            gdb,
            stop: self.stop.clone(),
            view_every: Duration::from_secs_f64(1.0 / options.view_hz.max(0.5)),
            has_probe,
            qemu,
        };
        let engine = spawn("engine", move || engine.run())?;
        Ok((handle, engine))
    }
}
