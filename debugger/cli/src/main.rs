//! `lockscope`: see spinlock contention, buffer-cache state, panics and deadlocks in the lockscope
//! kernel running in QEMU.

mod check;
mod live;
mod paths;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit status for usage and connection errors.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "lockscope",
    version,
    about = "Live lock contention, buffer-cache state, panics and deadlocks of a RISC-V teaching kernel in QEMU",
    after_help = "Start with `lockscope run` (boots the workspace's kernel in QEMU and opens the dashboard),\n\
                  or `lockscope check --bootargs \"workload=bcachetest\"` for a verdict without a screen."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot the kernel in QEMU and open the live dashboard.
    Run(RunArgs),
    /// Open the live dashboard on a QEMU that already runs with `-gdb tcp::PORT`.
    Attach(AttachArgs),
    /// Boot (or attach), watch, and print a verdict: ok, panic, deadlock, stall, fail or
    /// lock-order-inversion. Exit status: 0 ok, 3 a fault, 4 a warning only, 2 usage or
    /// connection error.
    Check(CheckArgs),
    /// Replay a recorded trace: the dashboard on its final state, or a verdict with --check.
    Replay(ReplayArgs),
}

/// How to boot the kernel.
#[derive(Args, Clone, Debug)]
pub struct BootArgs {
    /// The kernel ELF [default: the workspace's build, target/kernel/riscv64gc-unknown-none-elf/release/lockscope-kernel].
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The disk image [default: the one next to the workspace's kernel, when it exists].
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// Harts (QEMU -smp), 1 to 8.
    #[arg(long, default_value_t = 4)]
    pub smp: u32,
    /// Kernel boot arguments, e.g. "workload=bcachetest bug=bucket-order".
    #[arg(long, default_value = "")]
    pub bootargs: String,
    /// Read the guest through gdb polling instead of shared RAM (to measure the probe effect).
    #[arg(long)]
    pub gdb_poll: bool,
    /// gdb polls per second with --gdb-poll.
    #[arg(long, default_value_t = 10.0)]
    pub poll_hz: f64,
    /// Also break on the kernel's panic-halt function through the gdb stub. Panics are caught
    /// without it (from the panic record); QEMU 7.2 runs the guest several times slower while
    /// any breakpoint is set.
    #[arg(long)]
    pub break_on_panic: bool,
    /// Record everything seen into this trace file (replay it with `lockscope replay`).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Append the guest console to this file [default: a file in the temp directory].
    #[arg(long)]
    pub console_log: Option<PathBuf>,
    /// Extra QEMU arguments, after `--`.
    #[arg(last = true)]
    pub qemu_args: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    boot: BootArgs,
}

#[derive(Args)]
struct AttachArgs {
    /// The gdb stub, HOST:PORT (QEMU's -gdb tcp::PORT).
    addr: String,
    /// The kernel ELF that QEMU runs.
    #[arg(long)]
    kernel: PathBuf,
    /// gdb polls per second.
    #[arg(long, default_value_t = 10.0)]
    poll_hz: f64,
    /// Record everything seen into this trace file.
    #[arg(long)]
    record: Option<PathBuf>,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    boot: BootArgs,
    /// Watch a running QEMU's gdb stub (HOST:PORT) instead of booting one.
    #[arg(long)]
    attach: Option<String>,
    /// Watch at most this long; the verdict comes earlier when it is certain (a panic, a
    /// deadlock, a stall, or the workload's own exit).
    #[arg(long = "for", default_value_t = 120.0, value_name = "SECONDS")]
    for_secs: f64,
    /// Print the result as JSON (schema in docs/check.md).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ReplayArgs {
    /// The trace file.
    trace: PathBuf,
    /// The kernel ELF to symbolize with [default: the one the trace names].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Print a verdict instead of opening the dashboard.
    #[arg(long)]
    check: bool,
    /// With --check: print JSON.
    #[arg(long)]
    json: bool,
    /// Write the view as it was before the session ended as JSON to this file (test fixtures for
    /// the dashboard).
    #[arg(long)]
    dump_view: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Check(a) => check::check(a),
        Cmd::Replay(a) => check::replay(a.trace, a.kernel, a.check, a.json, a.dump_view),
        Cmd::Run(a) => check::run(a.boot),
        Cmd::Attach(a) => check::attach(a.addr, a.kernel, a.poll_hz, a.record),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lockscope: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
