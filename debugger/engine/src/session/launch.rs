//! The QEMU a session starts: guest RAM in a shared file under a private run directory, the
//! gdb stub on a free loopback port, the harts held until lockscope is attached.
//!
//! Two ways: our own configuration ([`QemuConfig`], console piped to us), or a command line
//! someone else built ([`QemuLine`], an xv6 Makefile's), extended and otherwise left alone;
//! when that line asks for a gdb stub, a [`GdbProxy`] serves it on the port it asked for.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::SessionError;
use super::messages::lock;
use super::options::{LineConsole, LineRun};
use crate::gdb::{Config as GdbConfig, GdbClient};
use crate::gdbserver::proxy::{parse_listen, GdbProxy, ProxyOptions};
use crate::qemu::line::{display_words, Additions};
use crate::qemu::ram_dir::RamFile;
use crate::qemu::{
    spawn_listening, Console, QemuConfig, QemuError, QemuInput, QemuIo, QemuOutput, QemuProcess,
    WithGdb,
};
use crate::sources::plugin::{self, PluginFile, WatchPlan};

/// A QEMU we started. Dropping it kills QEMU and removes its run directory (the shared RAM
/// file).
pub struct Qemu {
    process: QemuProcess,
    /// Where lockscope's own gdb client connects: QEMU's stub, or the proxy's private port.
    pub gdb_addr: SocketAddr,
    pub ram_file: Option<PathBuf>,
    /// Why guest RAM is not where it would usually be (a full /dev/shm), when it is not.
    pub ram_note: Option<String>,
    ram: Mutex<Option<RamFile>>,
    /// Serves the gdb port the command line asked for (the user's gdb, the grader).
    pub proxy: Option<Arc<GdbProxy>>,
    pub command_line: String,
    /// The plugin's shared file, until the session takes it.
    plugin_file: Mutex<Option<PluginFile>>,
}

/// Lock events through lockscope's QEMU plugin: the build QEMU loads, what it watches, and
/// how many harts QEMU runs.
pub struct PluginLaunch {
    pub so: PathBuf,
    pub plan: WatchPlan,
    pub harts: u32,
    /// Which build, for the header: "V1 for QEMU 7.2.22".
    pub label: String,
}

/// Events per hart ring: half a second of an idle xv6 scheduler's lock traffic (about a
/// million events a second per hart), 24 MiB a hart, so a reader held up by a busy host
/// loses nothing.
const PLUGIN_RING_ENTRIES: u32 = 1 << 19;

/// xv6's `struct sleeplock`: `locked` at 0 and the inner spinlock `lk` at 8, in every lab year.
const XV6_SLEEPLOCK_OFFSETS: (u32, u32) = (8, 0);

impl Qemu {
    /// Starts QEMU from `config`, adding the gdb stub (harts held at reset), shared RAM when
    /// `shared_ram`, and a piped console; returns once the stub listens.
    pub fn start(
        config: &QemuConfig,
        shared_ram: bool,
        timeout: Duration,
    ) -> Result<Qemu, SessionError> {
        let ram = if shared_ram {
            Some(RamFile::create(u64::from(config.memory_mib) << 20)?)
        } else {
            None
        };
        let mut cfg = config.clone().console(Console::Stdio);
        if let Some(f) = &ram {
            cfg = cfg.shared_ram(&f.path);
        }
        let WithGdb { process, addr } = cfg.spawn_with_gdb(timeout)?;
        Ok(Qemu {
            command_line: process.command_line.clone(),
            process,
            gdb_addr: addr,
            ram_file: ram.as_ref().map(|r| r.path.clone()),
            ram_note: ram.as_ref().and_then(|r| r.note.clone()),
            ram: Mutex::new(ram),
            proxy: None,
            plugin_file: Mutex::new(None),
        })
    }

    /// Starts the command line of `run`, with shared RAM, QEMU's stub on a private port (held
    /// at reset), and the console logged to `console_log` when it is on the terminal. When the
    /// line asks for a gdb stub, a proxy listens where it asked.
    pub fn start_line(
        run: &LineRun,
        console_log: Option<&Path>,
        with_plugin: Option<&PluginLaunch>,
        timeout: Duration,
    ) -> Result<Qemu, SessionError> {
        let line = &run.line;
        let size = line.memory_bytes()?;
        let user_gdb = line.gdb()?;
        let ram = RamFile::create(size)?;
        // The plugin's file sits beside guest RAM, in the same private run directory.
        let (plugin_file, extra) = match with_plugin {
            Some(p) => {
                let path = ram.path.with_file_name("plugin");
                let file = PluginFile::create(
                    &path,
                    p.harts,
                    PLUGIN_RING_ENTRIES,
                    &p.plan,
                    XV6_SLEEPLOCK_OFFSETS,
                )
                .map_err(|e| SessionError::Config(e.to_string()))?;
                (Some(file), plugin::qemu_plugin_args(&p.so, &path))
            }
            None => (None, Vec::new()),
        };
        let io = match run.console {
            LineConsole::Terminal => QemuIo {
                stdin: QemuInput::Inherit,
                stdout: QemuOutput::Inherit,
                echo_stderr: true,
            },
            LineConsole::Piped => QemuIo {
                stdin: QemuInput::Piped,
                stdout: QemuOutput::Piped,
                echo_stderr: false,
            },
        };
        let log = match run.console {
            LineConsole::Terminal => console_log,
            LineConsole::Piped => None,
        };
        // Refused lines fail here, before anything starts.
        line.with_additions(&Additions {
            ram_file: &ram.path,
            gdb_port: 0,
            console_log: log,
            snapshot_drives: run.snapshot_drives,
            extra: &extra,
        })?;
        let WithGdb { process, addr } = spawn_listening(timeout, |port| {
            let args = line
                .with_additions(&Additions {
                    ram_file: &ram.path,
                    gdb_port: port,
                    console_log: log,
                    snapshot_drives: run.snapshot_drives,
                    extra: &extra,
                })
                .map_err(|e| QemuError::Exited {
                    status: "not started".into(),
                    stderr: e.to_string(),
                    command: line.display(),
                })?;
            let display = display_words(&line.binary, &args);
            let mut cmd = Command::new(&line.binary);
            cmd.args(&args).current_dir(&line.cwd);
            QemuProcess::spawn_command(cmd, display, io)
        })?;
        let proxy = match user_gdb {
            Some(spec) => {
                let listen = parse_listen(&spec)?;
                let options = ProxyOptions {
                    hold_for_user: line.held(),
                    ram: Some(crate::gdbserver::proxy::RamFile {
                        path: ram.path.clone(),
                        base: crate::qemu::RAM_BASE,
                    }),
                    ..ProxyOptions::default()
                };
                match GdbProxy::start_with(addr, listen, options) {
                    Ok(p) => Some(Arc::new(p)),
                    Err(e) => {
                        process.kill();
                        return Err(e.into());
                    }
                }
            }
            None => None,
        };
        Ok(Qemu {
            command_line: process.command_line.clone(),
            gdb_addr: proxy.as_ref().map_or(addr, |p| p.private_addr()),
            process,
            ram_file: Some(ram.path.clone()),
            ram_note: ram.note.clone(),
            ram: Mutex::new(Some(ram)),
            proxy,
            plugin_file: Mutex::new(plugin_file),
        })
    }

    /// The plugin's file, once, when the plugin was loaded.
    pub fn take_plugin_file(&self) -> Option<PluginFile> {
        lock(&self.plugin_file).take()
    }

    /// The guest console, once.
    pub fn take_console(&self) -> Option<Box<dyn Read + Send>> {
        self.process.take_console()
    }

    /// QEMU's stdin, once, when piped.
    pub fn take_stdin(&self) -> Option<Box<dyn Write + Send>> {
        self.process
            .take_stdin()
            .map(|s| Box::new(s) as Box<dyn Write + Send>)
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// QEMU's exit status, if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.process.try_wait()
    }

    pub fn stderr_text(&self) -> String {
        self.process.stderr_text()
    }

    fn died(&self, status: ExitStatus) -> SessionError {
        SessionError::QemuDied {
            status: status.to_string(),
            stderr: self.process.stderr_after_exit(),
            command: self.command_line.clone(),
        }
    }

    /// Connects to QEMU's gdb stub (it listens: [`Qemu::start`] waited for it).
    pub fn connect_gdb(&self) -> Result<GdbClient, SessionError> {
        match GdbClient::connect_addr(self.gdb_addr, GdbConfig::default()) {
            Ok(c) => Ok(c),
            Err(e) => match self.try_wait() {
                Some(status) => Err(self.died(status)),
                None => Err(e.into()),
            },
        }
    }

    /// Waits until the shared RAM file is as large as guest RAM.
    pub fn wait_ram_file(&self, size: u64, timeout: Duration) -> Result<PathBuf, SessionError> {
        let Some(path) = &self.ram_file else {
            return Err(SessionError::NoSharedRam);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if std::fs::metadata(path).is_ok_and(|m| m.len() >= size) {
                return Ok(path.clone());
            }
            if let Some(status) = self.try_wait() {
                return Err(self.died(status));
            }
            if Instant::now() >= deadline {
                return Err(SessionError::NoSharedRam);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills QEMU and removes its run directory (the shared RAM file). Safe to call more than
    /// once; a session calls it when it ends rather than wait for the last `Arc` to drop, which
    /// a thread still winding down may hold as the process exits.
    pub fn cleanup(&self) {
        self.process.kill();
        drop(lock(&self.ram).take());
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.cleanup();
    }
}
