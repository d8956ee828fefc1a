//! `lockscope qemu -- ARGS...`: the lab Makefile's QEMU (`make qemu QEMU="lockscope qemu --"`).
//!
//! Runs the real QEMU with exactly the Makefile's command line plus shared RAM and a private
//! gdb stub (the Makefile's own `-gdb` port is served by lockscope's proxy), with the console
//! left on the user's terminal, and watches the kernel while it runs; another terminal's
//! `lockscope attach` joins through the session registry. Invocations that do not boot
//! (`-help`, `--version`, `-machine help`...) are QEMU itself, byte for byte.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use lockscope_engine::qemu::{find_in_path, QemuLine, QEMU_BINARY, RAM_BASE};
use lockscope_engine::session::registry::{self, Entry, Registration};
use lockscope_engine::session::{LineConsole, LineRun};
use lockscope_engine::{Ending, Session, SessionError, SessionOptions, Target, TargetState, View};

use crate::record::RecordArgs;
use crate::setup::load_symbols;
use crate::summary;
use crate::xv6::{write_captured, ARGS_TO_ENV};

#[derive(Args)]
pub struct QemuArgs {
    /// The QEMU binary [default: the first qemu-system-riscv64 on PATH].
    #[arg(long)]
    qemu: Option<PathBuf>,
    #[command(flatten)]
    record: RecordArgs,
    /// No lock events from lockscope's QEMU plugin (state only); the guest runs a few percent
    /// faster. Also set by LOCKSCOPE_NO_PLUGIN=1 in the environment (through a Makefile).
    #[arg(long)]
    no_plugin: bool,
    /// QEMU's arguments, as the Makefile passes them (after `--`).
    #[arg(last = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// The signal that asked lockscope to end, if one did.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

/// The terminal's settings, to put back if QEMU dies without restoring them.
struct SavedTerminal(Option<libc::termios>);

impl SavedTerminal {
    fn save() -> Self {
        // SAFETY: isatty and tcgetattr only read the descriptor's state into `t`.
        unsafe {
            if libc::isatty(0) != 1 {
                return SavedTerminal(None);
            }
            let mut t = std::mem::MaybeUninit::<libc::termios>::zeroed();
            if libc::tcgetattr(0, t.as_mut_ptr()) != 0 {
                return SavedTerminal(None);
            }
            SavedTerminal(Some(t.assume_init()))
        }
    }

    fn restore(&self) {
        if let Some(t) = &self.0 {
            // SAFETY: `t` came from tcgetattr on the same descriptor.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

/// Becomes QEMU itself, with the caller's arguments and streams: its output and exit status
/// are QEMU's, byte for byte.
fn exec_qemu(qemu: &std::path::Path, args: &[OsString]) -> Result<u8> {
    let e = Command::new(qemu).args(args).exec();
    Err(e).with_context(|| format!("running {}", qemu.display()))
}

pub fn qemu(a: QemuArgs) -> Result<u8> {
    let qemu = match &a.qemu {
        Some(q) => q.clone(),
        None => find_in_path(std::path::Path::new(QEMU_BINARY)).with_context(|| {
            format!("{QEMU_BINARY} is not on PATH: install it (`sudo apt-get install qemu-system-misc`) or pass --qemu PATH")
        })?,
    };
    let cwd = std::env::current_dir()?;
    let Ok(line) = QemuLine::new(&qemu, a.args.clone(), &cwd) else {
        // QEMU says what is wrong with its own command line.
        return exec_qemu(&qemu, &a.args);
    };
    if line.is_query() {
        return exec_qemu(&qemu, &a.args);
    }
    if let Some(to) = std::env::var_os(ARGS_TO_ENV) {
        write_captured(std::path::Path::new(&to), &qemu, &a.args)?;
        return Ok(0);
    }
    let Some(kernel) = line.kernel() else {
        eprintln!("lockscope: this QEMU command line has no -kernel, so there is nothing to watch; running QEMU alone");
        return exec_qemu(&qemu, &a.args);
    };
    let symbols = match load_symbols(&kernel).and_then(|s| {
        lockscope_engine::sources::detect(&s)
            .map(|_| s)
            .map_err(Into::into)
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lockscope: {e:#}\nlockscope: running QEMU without lockscope");
            return exec_qemu(&qemu, &a.args);
        }
    };
    let (ram_bytes, harts, gdb_listen) = (line.memory_bytes()?, line.smp()?, line.gdb()?);
    let registry_dir = registry::dir()?;
    let mut options = SessionOptions::new(Target::Line(LineRun {
        line,
        console: LineConsole::Terminal,
        snapshot_drives: false,
        plugin: !a.no_plugin && std::env::var_os("LOCKSCOPE_NO_PLUGIN").is_none_or(|v| v != "1"),
    }));
    options.record = a.record.options();
    options.status_file = Some(registry::status_path(&registry_dir, std::process::id()));
    // Nobody looks at views until the end: few of them save the CPU the guest wants.
    options.view_hz = 1.0;

    for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; QEMU's
        // own dispositions are reset on exec, so QEMU still gets the terminal's signals.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    let terminal = SavedTerminal::save();
    let session = match Session::start(options, symbols) {
        Ok(s) => s,
        Err(e @ (SessionError::QemuDied { .. } | SessionError::Qemu(_))) => {
            terminal.restore();
            // QEMU refused its command line: it said why on stderr already.
            eprintln!("lockscope: {e}");
            return Ok(1);
        }
        Err(e) => {
            terminal.restore();
            eprintln!(
                "lockscope: cannot watch this QEMU: {e}\nlockscope: running QEMU without lockscope"
            );
            return exec_qemu(&qemu, &a.args);
        }
    };
    let entry = Entry {
        pid: std::process::id(),
        qemu_pid: session.info.qemu_pid.unwrap_or(0),
        started_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        cwd,
        kernel: std::fs::canonicalize(&kernel).unwrap_or(kernel),
        ram_file: session.info.ram_file.clone().unwrap_or_default(),
        ram_base: RAM_BASE,
        ram_bytes,
        harts,
        console_log: session.info.console_log.clone(),
        gdb_listen,
        record: a.record.record.clone(),
        qemu_command: session.info.qemu_command.clone().unwrap_or_default(),
        plugin_file: session.info.plugin_file.clone(),
    };
    let ram_note = session.info.ram_note.clone();
    let registration = Registration::register(&entry);
    // A SIGTERM or SIGHUP (the grader ending a test kills make's QEMU) goes on to QEMU, which
    // ends as it would have alone (SIGTERM: a clean shutdown and status 0); lockscope stops it
    // itself only if it has not ended within a few seconds.
    let mut forwarded: Option<std::time::Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let sig = SIGNALLED.load(Ordering::SeqCst);
        if (sig == libc::SIGTERM || sig == libc::SIGHUP) && forwarded.is_none() {
            match session.info.qemu_pid.and_then(|p| i32::try_from(p).ok()) {
                Some(pid) => {
                    // SAFETY: kill(2) with our own child's pid; no memory is involved.
                    unsafe {
                        libc::kill(pid, sig);
                    }
                    forwarded = Some(std::time::Instant::now());
                }
                None => break,
            }
        }
        if forwarded.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            break;
        }
        if matches!(session.view().state, TargetState::Ended { .. }) {
            break;
        }
    }
    let finished = session.finish();
    terminal.restore();
    let registration = registration.map(drop);
    let view = finished.monitor.view();
    if let Err(e) = &registration {
        eprintln!("lockscope: `lockscope attach` could not find this session: {e}");
    }
    eprint!(
        "{}",
        summary::session_summary(
            &view,
            a.record.record.as_deref(),
            finished.console_log.as_deref(),
            ram_note.as_deref()
        )
    );
    Ok(exit_status(&view))
}

/// QEMU's own exit status, so that make sees what it would without lockscope.
fn exit_status(view: &View) -> u8 {
    match &view.state {
        TargetState::Ended {
            ending: Ending::Exited { status },
        } => u8::try_from(*status).unwrap_or(1),
        TargetState::Ended { .. } => 1,
        _ => 0,
    }
}
