//! What a session watches and how.

use std::ops::Range;
use std::path::PathBuf;

use crate::monitor::MonitorConfig;
use crate::qemu::{QemuConfig, QemuLine, RAM_BASE};
use crate::recording::Keep;

/// What a session records (`--record FILE [--keep 2m|500MB] [--with-kernel]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordOptions {
    /// The recording (format version 2).
    pub path: PathBuf,
    /// Keep only the last part of the session.
    pub keep: Option<Keep>,
    /// Put the kernel ELF (compressed) inside, so the recording opens without the tree.
    pub with_kernel: bool,
}

impl RecordOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            keep: None,
            with_kernel: false,
        }
    }
}

/// Where the target is.
#[derive(Clone, Debug)]
pub enum Target {
    /// Boot this QEMU configuration (gdb stub, shared RAM and console are added).
    Run(QemuConfig),
    /// Boot a command line someone else built (an xv6 Makefile's): shared RAM and a private
    /// gdb stub are added, the rest is left as it is.
    Line(LineRun),
    /// Attach to the gdb stub of a QEMU that already runs (`HOST:PORT`).
    Attach(String),
    /// Read the shared RAM of a `lockscope qemu` session that runs; no gdb stub of our own.
    Joined(Joined),
}

/// Where a [`Target::Line`] QEMU's console goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineConsole {
    /// On the user's terminal, exactly as without lockscope (`lockscope qemu`): stdin and
    /// stdout are QEMU's own; lockscope reads the console from a log QEMU writes.
    Terminal,
    /// Piped to lockscope: the dashboard shows it, and typing goes through
    /// [`SessionHandle::send_console`](super::SessionHandle::send_console).
    Piped,
}

/// A Makefile's QEMU command line, run under lockscope.
#[derive(Clone, Debug)]
pub struct LineRun {
    pub line: QemuLine,
    pub console: LineConsole,
    /// Keep disk images untouched (`snapshot=on` on every `-drive`).
    pub snapshot_drives: bool,
    /// Load lockscope's QEMU plugin for lock events when this QEMU can (an xv6 kernel);
    /// otherwise the session reads state only and says why.
    pub plugin: bool,
}

/// A running `lockscope qemu` session, joined through its registry entry.
#[derive(Clone, Debug)]
pub struct Joined {
    pub ram_file: PathBuf,
    pub ram: Range<u64>,
    pub harts: Option<u32>,
    /// The console as QEMU logs it, followed as it grows.
    pub console_log: Option<PathBuf>,
    /// The `lockscope qemu` process: the session ends when it does.
    pub owner_pid: u32,
    /// Where it says how it goes (the user's gdb, QEMU's exit status).
    pub status_file: Option<PathBuf>,
    /// The QEMU plugin's file, when the session loaded the plugin: its events are read too.
    pub plugin_file: Option<PathBuf>,
}

/// How to run a session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub target: Target,
    /// Read guest RAM through a shared file (run only). Otherwise poll through the gdb stub.
    pub shared_ram: bool,
    /// Ring drains per second from shared RAM.
    pub drain_hz: f64,
    /// Snapshots per second from shared RAM.
    pub snapshot_hz: f64,
    /// gdb polls per second when there is no shared RAM.
    pub poll_hz: f64,
    /// Bytes of events read per gdb poll at most.
    pub poll_budget: usize,
    /// Views published per second at most.
    pub view_hz: f64,
    /// Also set a breakpoint on the lockscope kernel's panic-halt function. Off by default: on
    /// QEMU 7.2 any inserted breakpoint makes TCG run the guest about 3.8 times slower, and the
    /// panic record (watched in shared RAM, or at every gdb poll) catches a panic anyway.
    pub panic_breakpoint: bool,
    /// Attached to a guest held at reset (QEMU `-S`, never continued): continue it. Without
    /// this the guest stays held until its debugger continues it (or the user presses `i`).
    pub continue_held: bool,
    /// Record the session: its feed, and at each stop every hart's registers and guest RAM.
    pub record: Option<RecordOptions>,
    /// A QEMU the session boots from its own configuration (`run`): serve the user's gdb here
    /// through lockscope's proxy (`127.0.0.1:1234`, `:1234`, `1234`), QEMU's stub kept private.
    pub gdb_listen: Option<String>,
    /// Keep the guest console in this file (run only). Without it the console goes to a file in
    /// the temporary directory that is kept only when the session ends in a fault.
    pub console_log: Option<PathBuf>,
    /// Write how the session goes (the user's gdb, QEMU's exit) here, for joined sessions.
    pub status_file: Option<PathBuf>,
    /// The monitor's buffers, the analysis, and whether to stop and capture a confirmed fault.
    pub monitor: MonitorConfig,
}

impl SessionOptions {
    pub fn new(target: Target) -> Self {
        let shared_ram = !matches!(target, Target::Attach(_));
        Self {
            target,
            shared_ram,
            drain_hz: 200.0,
            snapshot_hz: 10.0,
            poll_hz: 10.0,
            // The snapshot tables take ~12 KiB more; QEMU's stub reads ~20 MB/s, so a poll stays
            // near 1.5 ms and 10 Hz polling costs the guest ~1.5% (64 KiB would cost ~4%).
            poll_budget: 16 << 10,
            view_hz: 10.0,
            panic_breakpoint: false,
            continue_held: false,
            gdb_listen: None,
            record: None,
            console_log: None,
            status_file: None,
            monitor: MonitorConfig::default(),
        }
    }

    /// Guest RAM as far as the session knows it before reaching the target: what it boots.
    pub(super) fn known_ram(&self) -> Option<Range<u64>> {
        match &self.target {
            Target::Run(c) => {
                let size = u64::from(c.memory_mib) * 1024 * 1024;
                Some(RAM_BASE..RAM_BASE + size)
            }
            Target::Line(l) => l
                .line
                .memory_bytes()
                .ok()
                .map(|size| RAM_BASE..RAM_BASE + size),
            Target::Joined(j) => Some(j.ram.clone()),
            Target::Attach(_) => None,
        }
    }

    /// Harts as far as the session knows before reaching the target.
    pub(super) fn known_harts(&self) -> Option<u32> {
        match &self.target {
            Target::Run(c) => Some(c.smp),
            Target::Line(l) => l.line.smp().ok(),
            Target::Joined(j) => j.harts,
            Target::Attach(_) => None,
        }
    }

    /// The session starts the QEMU it watches, so it sees the boot.
    pub(super) fn boots(&self) -> bool {
        matches!(self.target, Target::Run(_) | Target::Line(_))
    }
}
