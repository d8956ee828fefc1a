//! `lockscope check`: boot (or attach), watch, and print a verdict without a screen.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use lockscope_engine::{
    CheckReport, Ending, Session, Severity, StopReason, TargetState, Verdict, View,
};

use crate::setup::{attach_options, boot_options, join_options, xv6_options, BootArgs, EXIT_USAGE};
use crate::text::{emit, report_text};
use crate::xv6::Xv6Args;

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    boot: BootArgs,
    #[command(flatten)]
    xv6: Xv6Args,
    /// Watch a running QEMU instead of booting one: its gdb stub (HOST:PORT), or with no
    /// address the newest `lockscope qemu` session of yours (through its shared RAM).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = "")]
    attach: Option<String>,
    /// With --attach HOST:PORT: a guest still held at reset (QEMU -S) is continued by lockscope
    /// instead of waiting for its gdb.
    #[arg(long = "continue")]
    continue_held: bool,
    /// With --xv6: type this command at the first `$ ` prompt and watch until the next prompt
    /// (or a panic, a hang, or --for running out); repeat for several, typed in order.
    #[arg(long = "type", value_name = "COMMAND")]
    type_: Vec<String>,
    /// Watch at most this long; the verdict comes earlier when it is certain (a panic, a
    /// deadlock, a stall, the workload's own exit, or the prompt after the last --type)
    /// [default: 120, or 900 with --type: a lab test takes minutes on a slow host].
    #[arg(long = "for", value_name = "SECONDS")]
    for_secs: Option<f64>,
    /// Print the result as JSON (schema in docs/check.md).
    #[arg(long)]
    json: bool,
}

/// True once waiting longer cannot change the verdict.
struct Certainty {
    fault_since: Option<Instant>,
}

impl Certainty {
    fn reached(&mut self, v: &View) -> bool {
        if matches!(v.state, TargetState::Ended { .. }) {
            return true;
        }
        let fault = v.check.severity == Severity::Fault;
        if !fault {
            self.fault_since = None;
            return false;
        }
        let since = *self.fault_since.get_or_insert_with(Instant::now);
        // A fault is certain once the guest was stopped to capture it (registers and stacks),
        // or after a grace period if the capture cannot happen.
        let captured = match (&v.state, v.check.verdict) {
            (TargetState::Stopped { reason }, Verdict::Panic) => {
                *reason == StopReason::Panic
                    || v.panic.as_ref().is_some_and(|p| !p.harts.is_empty())
            }
            (TargetState::Stopped { .. }, _) => true,
            _ => false,
        };
        // Ten seconds: with millions of plugin events a second to analyse, a loaded host can
        // take seconds to get to the capture; a session that cannot stop the guest waits it out.
        captured || since.elapsed() > Duration::from_secs(10)
    }
}

/// Types commands at the guest's `$ ` prompt, one per prompt, and says when the last one is
/// done (the prompt is back).
struct Typer {
    commands: Vec<String>,
    next: usize,
    /// Console lines ended when the running command was typed.
    typed_at: Option<u64>,
}

impl Typer {
    /// True once every command ran to the next prompt.
    fn step(&mut self, v: &View, session: &Session) -> Result<bool> {
        if self.commands.is_empty() {
            return Ok(false);
        }
        let at_prompt = v.console.last().is_some_and(|l| l.trim_end() == "$");
        match self.typed_at {
            Some(n) if at_prompt && v.console_newlines > n => {
                self.typed_at = None;
                Ok(self.next == self.commands.len())
            }
            None if at_prompt && self.next < self.commands.len() => {
                let cmd = format!("{}\n", self.commands[self.next]);
                if !session.handle().send_console(cmd.as_bytes()) {
                    anyhow::bail!("cannot type at the guest console: QEMU's input has closed");
                }
                self.typed_at = Some(v.console_newlines);
                self.next += 1;
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

pub fn check(a: CheckArgs) -> Result<u8> {
    let (mut options, symbols) = match (&a.attach, &a.xv6.xv6) {
        (Some(_), Some(_)) => anyhow::bail!("--attach and --xv6 do not go together: --xv6 boots the tree's kernel, --attach watches a QEMU that runs"),
        (Some(addr), None) if addr.is_empty() => {
            if a.boot.gdb_listen.is_some() {
                anyhow::bail!("--gdb-listen needs --attach HOST:PORT: a lockscope qemu session serves the Makefile's own gdb port");
            }
            let (o, s, _) = join_options(a.boot.kernel.clone(), &a.boot.record)?;
            (o, s)
        }
        (Some(addr), None) => {
            let (mut o, s) = attach_options(
                addr,
                a.boot.kernel.clone(),
                a.boot.poll_hz,
                &a.boot.record,
            )?;
            o.continue_held = a.continue_held;
            o.gdb_listen = a.boot.gdb_listen.clone();
            (o, s)
        }
        (None, Some(tree)) => xv6_options(&a.boot, &a.xv6, tree)?,
        (None, None) => boot_options(&a.boot)?,
    };
    if !a.type_.is_empty() && a.xv6.xv6.is_none() {
        anyhow::bail!("--type needs --xv6: lockscope types at the console of a QEMU it starts");
    }
    let mut typer = Typer {
        commands: a.type_.clone(),
        next: 0,
        typed_at: None,
    };
    options.view_hz = 10.0;
    let for_secs = a
        .for_secs
        .unwrap_or(if a.type_.is_empty() { 120.0 } else { 900.0 });
    if !(for_secs > 0.0 && for_secs.is_finite()) {
        anyhow::bail!("--for must be a positive number of seconds");
    }
    let started = Instant::now();
    let session = Session::start(options, symbols)?;
    if let Some(addr) = session.info.gdb_listen {
        eprintln!("lockscope: your gdb connects here: target remote {addr}");
    }
    if let Some(note) = &session.info.ram_note {
        eprintln!("lockscope: {note}");
    }
    let deadline = Instant::now() + Duration::from_secs_f64(for_secs);
    let mut certainty = Certainty { fault_since: None };
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let view = session.view();
        if certainty.reached(&view) || typer.step(&view, &session)? {
            break;
        }
    }
    let finished = session.finish();
    let view = finished.monitor.view();
    let mut report = CheckReport::from_view(&view);
    report.host_cpu_ns = own_cpu_ns();
    report.watched_ns = Some(started.elapsed().as_nanos() as u64);
    if a.json {
        emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        let mut text = report_text(&report, &view);
        if let Some(log) = &finished.console_log {
            let _ = writeln!(text, "console log: {}", log.display());
        }
        emit(&text)?;
    }
    if let (true, Some(log)) = (a.json, &finished.console_log) {
        eprintln!("lockscope: guest console log: {}", log.display());
    }
    // Losing the target is a connection error, whatever was gathered before (printed above).
    if let TargetState::Ended {
        ending: Ending::Lost { reason },
    } = &view.state
    {
        eprintln!("lockscope: {reason}; what was gathered until then is shown above");
        return Ok(EXIT_USAGE);
    }
    Ok(report.exit_code() as u8)
}

/// CPU time this process used so far (user + system), QEMU not included.
fn own_cpu_ns() -> Option<u64> {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialized by the successful call above.
    let u = unsafe { u.assume_init() };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    Some(ns(u.ru_utime) + ns(u.ru_stime))
}
