//! `lockscope`: see spinlock contention, buffer-cache state, panics and deadlocks in the lockscope
//! kernel running in QEMU.

mod attach;
mod check;
mod dashboard;
mod diagnosis;
mod export;
mod paths;
mod qemu;
mod record;
mod recorded;
mod replay;
mod run;
mod serve;
mod setup;
mod summary;
mod text;
mod xv6;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use attach::AttachArgs;
use check::CheckArgs;
use export::ExportArgs;
use qemu::QemuArgs;
use replay::ReplayArgs;
use run::RunArgs;
use serve::ServeArgs;
use setup::EXIT_USAGE;

#[derive(Parser)]
#[command(
    name = "lockscope",
    version,
    about = "Live lock contention, buffer-cache state, panics and deadlocks of a RISC-V teaching kernel in QEMU",
    after_help = "Start with `lockscope run` (boots the workspace's kernel in QEMU and opens the dashboard),\n\
                  or `lockscope check --bootargs \"workload=bcachetest\"` for a verdict without a screen.\n\
                  Your own xv6 kernel: `make qemu QEMU=\"lockscope qemu --\"` in your tree, then `lockscope attach`\n\
                  in another terminal; or `lockscope run --xv6`, `lockscope check --xv6 --type bcachetest`."
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
    /// Boot (or attach), watch, and print a verdict: ok, panic, deadlock, stall, fail,
    /// spinlock-across-sleep or lock-order-inversion. Exit status: 0 ok, 3 a fault, 4 a warning
    /// only, 2 usage or connection error.
    Check(CheckArgs),
    /// Replay a recording on a timeline (seek, step, marks, counter deltas over a range), or
    /// print its verdict (--check, --at TIME).
    Replay(ReplayArgs),
    /// Write a recording as a Perfetto trace (-o out.pftrace), or one of its stops as an ELF
    /// core file for gdb (--core FILE).
    Export(ExportArgs),
    /// Serve a stop saved in a recording to gdb (`target remote`), post-mortem.
    Serve(ServeArgs),
    /// Be an xv6 Makefile's QEMU: `make qemu QEMU="lockscope qemu --"` runs QEMU as the
    /// Makefile says, with the console on your terminal, and lets `lockscope attach` (in
    /// another terminal) show the kernel live.
    Qemu(QemuArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(a) => run::run(a),
        Cmd::Attach(a) => attach::attach(a),
        Cmd::Check(a) => check::check(a),
        Cmd::Replay(a) => replay::replay(a),
        Cmd::Export(a) => export::export(a),
        Cmd::Serve(a) => serve::serve(a),
        Cmd::Qemu(a) => qemu::qemu(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lockscope: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
