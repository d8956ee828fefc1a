//! What every command shares: the kernel and its symbols, how to boot it, and exit statuses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use lockscope_engine::{QemuConfig, SessionOptions, Symbols, Target};

use crate::paths;
use crate::record::RecordArgs;

/// Exit status for usage and connection errors.
pub const EXIT_USAGE: u8 = 2;

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
    #[command(flatten)]
    pub record: RecordArgs,
    /// Keep the guest console in this file [default: a file in the temp directory, kept only
    /// when the session ends in a fault].
    #[arg(long)]
    pub console_log: Option<PathBuf>,
    /// Extra QEMU arguments, after `--`.
    #[arg(last = true)]
    pub qemu_args: Vec<String>,
}

/// Loads the kernel's symbols, with a message that names the file.
pub fn load_symbols(kernel: &Path) -> Result<Arc<Symbols>> {
    let mut s = Symbols::load(kernel)?;
    // Show source paths relative to the workspace even for a copy of the ELF kept elsewhere.
    if s.source_root().is_none() {
        if let Some(w) = paths::workspace() {
            s.set_source_root(w);
        }
    }
    Ok(Arc::new(s))
}

/// Session options for booting with `boot`, and the kernel's symbols.
pub fn boot_options(boot: &BootArgs) -> Result<(SessionOptions, Arc<Symbols>)> {
    let kernel = paths::kernel(boot.kernel.clone())?;
    let symbols = load_symbols(&kernel)?;
    // A panicked kernel stays up for inspection unless the user asked otherwise.
    let mut bootargs = boot.bootargs.trim().to_string();
    if !bootargs.split_whitespace().any(|w| w.starts_with("panic=")) {
        bootargs = format!("{bootargs} panic=halt").trim().to_string();
    }
    let mut q = QemuConfig::new(&kernel).smp(boot.smp).bootargs(bootargs);
    match paths::disk(boot.disk.clone(), &kernel) {
        Some(d) => q = q.disk(d),
        None if lockscope_abi::bootargs_need_disk(&boot.bootargs) => anyhow::bail!(
            "boot arguments \"{}\" need the buffer cache's disk image, and there is none next to the kernel: run `cargo xtask build` (it makes target/kernel/disk.img) or pass --disk",
            boot.bootargs
        ),
        None => {}
    }
    for a in &boot.qemu_args {
        q = q.arg(a);
    }
    let mut o = SessionOptions::new(Target::Run(q));
    o.shared_ram = !boot.gdb_poll;
    o.panic_breakpoint = boot.break_on_panic;
    o.poll_hz = boot.poll_hz;
    o.record = boot.record.options();
    o.console_log = boot.console_log.clone();
    Ok((o, symbols))
}

/// Session options for watching the QEMU whose gdb stub is at `addr`, and the kernel's symbols.
pub fn attach_options(
    addr: &str,
    kernel: Option<PathBuf>,
    poll_hz: f64,
    record: &RecordArgs,
) -> Result<(SessionOptions, Arc<Symbols>)> {
    let kernel = paths::kernel(kernel)?;
    let symbols = load_symbols(&kernel)?;
    let mut o = SessionOptions::new(Target::Attach(addr.to_string()));
    o.poll_hz = poll_hz;
    o.record = record.options();
    Ok((o, symbols))
}
