//! [`Session`]: reaching the target and running the threads that read it, one file each.
//!
//! - `probe` (shared RAM only): drains and snapshots without pausing the guest.
//! - `gdb`: owns the stub connection: stops, resumes, captures, and polls without shared RAM.
//! - `engine`: feeds the monitor, asks for the captures it wants, publishes views.
//! - `console`: forwards QEMU's serial output and writes the console log.
//! - `qemu_wait`: notices QEMU exiting.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::error::SessionError;
use super::handle::{Command, SessionHandle};
use super::launch::{PluginLaunch, Qemu};
use super::messages::{Msg, Outbox, StopFlag};
use super::options::{SessionOptions, Target};
use super::reading::Reading;
use super::target::{self, ConsoleFeed};
use super::threads::{unwind_ram, Threads};
use crate::analysis::Severity;
use crate::feed::Ending;
use crate::monitor::{Monitor, SourceKind, TargetState, View};
use crate::qemu::ram_dir::alive;
use crate::recording::{Recorder, RecordingHeader, RecordingWriter, WriterOptions};
use crate::sources::plugin::{self as lsplugin, LockFunctions, PluginFile, WithPluginEvents};
use crate::sources::{self, KernelKind, OpenOptions};
use crate::symbols::Symbols;

/// A running session. Drop or [`Session::finish`] ends it.
pub struct Session {
    handle: Arc<SessionHandle>,
    out: Outbox,
    engine: Option<JoinHandle<Monitor>>,
    others: Vec<JoinHandle<()>>,
    stop: StopFlag,
    qemu: Option<Arc<Qemu>>,
    /// The user's gdb's way into a QEMU someone else started, kept for the session's life.
    _user_proxy: Option<Arc<crate::gdbserver::proxy::GdbProxy>>,
    console_log: Option<ConsoleLog>,
    /// The QEMU command line, when the session boots QEMU.
    pub qemu_command: Option<String>,
    /// What the session set up, for the user and for sessions that join it.
    pub info: SessionInfo,
}

/// What a session set up.
#[derive(Clone, Debug, Default)]
pub struct SessionInfo {
    /// The QEMU command line, when the session boots QEMU.
    pub qemu_command: Option<String>,
    pub qemu_pid: Option<u32>,
    /// Guest RAM, when shared.
    pub ram_file: Option<PathBuf>,
    /// Why guest RAM is not where it usually is (a full /dev/shm), when it is not.
    pub ram_note: Option<String>,
    /// Where the guest console is written while the session runs.
    pub console_log: Option<PathBuf>,
    /// Where the user's gdb connects (the proxy), when the command line asked for a stub.
    pub gdb_listen: Option<std::net::SocketAddr>,
    /// The QEMU plugin's shared file, when the plugin is loaded.
    pub plugin_file: Option<PathBuf>,
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
    /// Starts the session: checks the ELF, boots, attaches or joins, lets the guest run and
    /// starts the threads. Errors here are setup errors (no QEMU, no stub, a kernel lockscope
    /// cannot read).
    pub fn start(options: SessionOptions, symbols: Arc<Symbols>) -> Result<Session, SessionError> {
        // What the ELF is, checked before anything is booted.
        let kind = sources::detect(&symbols)?;
        let open = OpenOptions {
            ram: options.known_ram(),
            harts: options.known_harts(),
            polled: !options.shared_ram,
        };
        let mut source = sources::open(kind, &symbols, &open)?;
        let halt = panic_halt(&options, &symbols)?;
        let (mut monitor, recorder) = new_monitor(&options, &symbols)?;
        let (mut with_plugin, mut no_plugin) = match kind {
            KernelKind::Xv6 => plugin_launch(&options, &symbols),
            KernelKind::Abi { .. } => (None, None),
        };

        let log = options
            .boots()
            .then(|| ConsoleLog::new(options.console_log.clone()));
        let mut reached = match &options.target {
            Target::Run(config) => {
                target::boot(config, options.shared_ram, options.gdb_listen.as_deref())?
            }
            Target::Line(run) => {
                let path = log.as_ref().map(|l| l.path.clone()).unwrap_or_default();
                match target::boot_line(run, &path, with_plugin.as_ref()) {
                    Ok(r) => r,
                    // A QEMU that would not start with the plugin (a build it refuses, a
                    // plugin from another lockscope build) runs without it: state only.
                    Err(e) if with_plugin.is_some() => {
                        with_plugin = None;
                        no_plugin = Some(format!(
                            "QEMU did not start with lockscope's plugin ({}): reading state only",
                            e.to_string().lines().next().unwrap_or_default()
                        ));
                        target::boot_line(run, &path, None)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Target::Attach(addr) => target::attach(addr, options.gdb_listen.as_deref())?,
            Target::Joined(j) => target::join(j)?,
        };
        if let (Some(addr), Some(client)) = (halt, reached.client.as_mut()) {
            client.insert_breakpoint(addr)?;
        }
        let qemu = reached.qemu.clone();
        if let Some(note) = qemu.as_ref().and_then(|q| q.ram_note.clone()) {
            monitor.apply(&crate::feed::Feed::Console(format!("[lockscope] {note}\n")));
        }
        let mut t = Threads::new();
        let mut plugin_file = None;
        match (
            qemu.as_ref().and_then(|q| q.take_plugin_file()),
            &with_plugin,
        ) {
            (Some(file), Some(launch)) => {
                plugin_file = Some(file.path().to_path_buf());
                // A second mapping of the file, for the clock to note the VM's stops in.
                t.clock.follow_plugin(
                    PluginFile::open(file.path())
                        .map_err(|e| SessionError::Config(format!("the plugin's file: {e}")))?,
                );
                source = Box::new(WithPluginEvents::new(
                    source,
                    file,
                    &launch.plan,
                    &launch.label,
                ));
            }
            _ => {
                if let (Target::Joined(j), KernelKind::Xv6) = (&options.target, kind) {
                    if let Some(path) = &j.plugin_file {
                        // The owner's plugin file: its events are read from now on.
                        let file = PluginFile::open(path).map_err(|e| {
                            SessionError::Config(format!("the session's plugin file: {e}"))
                        })?;
                        let plan = lsplugin::plan(&symbols, &LockFunctions::xv6())
                            .map_err(|e| SessionError::Config(e.to_string()))?;
                        plugin_file = Some(path.clone());
                        source = Box::new(WithPluginEvents::new(
                            source,
                            file,
                            &plan,
                            "through lockscope qemu",
                        ));
                    }
                }
                if let Some(why) = &no_plugin {
                    monitor.apply(&crate::feed::Feed::Console(format!("[lockscope] {why}\n")));
                }
            }
        }
        monitor.set_kernel_reader(match &no_plugin {
            Some(why) => format!("{}; no lock events: {why}", source.describe()),
            None => source.describe(),
        });
        monitor.set_lock_events(source.has_events());
        let info = SessionInfo {
            qemu_command: qemu.as_ref().map(|q| q.command_line.clone()),
            qemu_pid: qemu.as_ref().map(|q| q.pid()),
            ram_file: reached.shared_ram.clone(),
            ram_note: qemu.as_ref().and_then(|q| q.ram_note.clone()),
            console_log: match &reached.console {
                Some(ConsoleFeed::Log(p)) => Some(p.clone()),
                Some(ConsoleFeed::Pipe(_)) => log.as_ref().map(|l| l.path.clone()),
                None => None,
            },
            gdb_listen: qemu
                .as_ref()
                .and_then(|q| q.proxy.as_ref())
                .or(reached.proxy.as_ref())
                .map(|p| p.user_addr()),
            plugin_file,
        };

        let reading = Reading::new(
            source,
            t.out.clone(),
            t.stop.clone(),
            t.clock.clone(),
            options.boots(),
        );
        let ram = unwind_ram(&options);
        if let Some(feed) = reached.console.take() {
            let done: Box<dyn Fn() -> bool + Send> = match (&qemu, &options.target) {
                (Some(q), _) => {
                    let q = q.clone();
                    Box::new(move || q.try_wait().is_some())
                }
                (None, Target::Joined(j)) => {
                    let (pid, stop) = (j.owner_pid, t.stop.clone());
                    Box::new(move || !alive(pid) || stop.load(Ordering::Acquire))
                }
                _ => {
                    let stop = t.stop.clone();
                    Box::new(move || stop.load(Ordering::Acquire))
                }
            };
            let pipe_log = log.as_ref().map(|l| l.path.clone());
            t.console(feed, pipe_log, reading.snap_now.clone(), done)?;
        }
        if let Some(q) = &qemu {
            t.qemu_wait(q)?;
            if let Some(p) = &q.proxy {
                t.proxy_watch(p)?;
            }
        }
        if let Some(p) = &reached.proxy {
            t.proxy_watch(p)?;
        }
        if let Target::Joined(j) = &options.target {
            t.owner_watch(j)?;
        }
        if let Some(path) = reached.shared_ram.clone() {
            t.probe(&reading, &path, &ram, &options)?;
        }
        let has_probe = reached.shared_ram.is_some();
        if reached.client.is_none() {
            // Nothing of ours stops a joined guest: its time runs from now.
            t.clock.running();
        }
        let gdb = t.gdb(
            &mut reached,
            reading,
            &ram,
            halt,
            &options,
            &symbols,
            recorder,
        )?;
        let (handle, engine) = t.engine(monitor, gdb, &options, has_probe, qemu.clone())?;
        if let Some(input) = qemu.as_ref().and_then(|q| q.take_stdin()) {
            handle.set_console_input(input);
        }
        Ok(Session {
            handle,
            out: t.out,
            engine: Some(engine),
            others: t.handles,
            stop: t.stop,
            qemu_command: info.qemu_command.clone(),
            info,
            qemu,
            _user_proxy: reached.proxy.clone(),
            console_log: log,
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

/// The plugin for an xv6 command line, when asked for and possible; otherwise why not
/// (for the console and the header: the session then reads state only).
fn plugin_launch(
    options: &SessionOptions,
    symbols: &Symbols,
) -> (Option<PluginLaunch>, Option<String>) {
    let Target::Line(run) = &options.target else {
        return (None, None);
    };
    if !run.plugin {
        return (
            None,
            Some("lock events are off (--no-plugin): reading state only".into()),
        );
    }
    let choice = match lsplugin::plugin_for_qemu(&run.line.binary) {
        Ok(c) => c,
        Err(e) => return (None, Some(e.to_string())),
    };
    let plan = match lsplugin::plan(symbols, &LockFunctions::xv6()) {
        Ok(p) => p,
        Err(e) => {
            return (
                None,
                Some(format!(
                    "lockscope's QEMU plugin cannot watch this kernel ({e}): reading state only"
                )),
            )
        }
    };
    let launch = PluginLaunch {
        so: choice.path,
        plan,
        // QEMU's default is one hart.
        harts: run.line.smp().unwrap_or(1),
        label: format!("{:?} for QEMU {}", choice.api, choice.qemu_version),
    };
    (Some(launch), None)
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
        _ => (options.known_harts().unwrap_or(0), String::new()),
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
