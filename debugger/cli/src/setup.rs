//! What every command shares: the kernel and its symbols, how to boot it, and exit statuses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use lockscope_engine::qemu::RAM_BASE;
use lockscope_engine::session::registry::{self, Entry};
use lockscope_engine::session::Joined;
use lockscope_engine::{QemuConfig, SessionOptions, Symbols, Target};

use crate::paths;
use crate::record::RecordArgs;

/// Exit status for usage and connection errors.
pub const EXIT_USAGE: u8 = 2;

/// gdb polls per second by default.
pub const DEFAULT_POLL_HZ: f64 = 10.0;
/// ... for an xv6 kernel: its snapshot reads every global that holds a lock (about 58 KB,
/// ~30 stub round trips, ~3.7 ms here), so 10 Hz would stop the guest ~4% of the time.
const XV6_POLL_HZ: f64 = 5.0;

/// The polling rate for the kernel `symbols` is, when the user gave none.
pub fn default_poll_hz(symbols: &Symbols) -> f64 {
    match lockscope_engine::sources::detect(symbols) {
        Ok(lockscope_engine::KernelKind::Xv6) => XV6_POLL_HZ,
        _ => DEFAULT_POLL_HZ,
    }
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
    /// gdb polls per second with --gdb-poll or --attach HOST:PORT [default: 10; 5 for an xv6
    /// kernel, whose snapshot is larger: the guest stays stopped under 3% of the time].
    #[arg(long)]
    pub poll_hz: Option<f64>,
    /// Also break on the kernel's panic-halt function through the gdb stub. Panics are caught
    /// without it (from the panic record); QEMU 7.2 runs the guest several times slower while
    /// any breakpoint is set.
    #[arg(long)]
    pub break_on_panic: bool,
    #[command(flatten)]
    pub record: RecordArgs,
    /// Serve your gdb here while lockscope watches (`127.0.0.1:1234`, `:1234` or `1234`):
    /// lockscope's proxy in front of QEMU's stub (docs/gdb.md); `target remote` it as QEMU's.
    #[arg(long, value_name = "ADDR")]
    pub gdb_listen: Option<String>,
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
    o.poll_hz = boot.poll_hz.unwrap_or(DEFAULT_POLL_HZ);
    o.record = boot.record.options();
    o.console_log = boot.console_log.clone();
    o.gdb_listen = boot.gdb_listen.clone();
    Ok((o, symbols))
}

/// Session options for watching the QEMU whose gdb stub is at `addr`, and the kernel's symbols.
pub fn attach_options(
    addr: &str,
    kernel: Option<PathBuf>,
    poll_hz: Option<f64>,
    record: &RecordArgs,
) -> Result<(SessionOptions, Arc<Symbols>)> {
    let kernel = paths::kernel(kernel)?;
    let symbols = load_symbols(&kernel)?;
    let mut o = SessionOptions::new(Target::Attach(addr.to_string()));
    o.poll_hz = poll_hz.unwrap_or_else(|| default_poll_hz(&symbols));
    o.record = record.options();
    Ok((o, symbols))
}

/// Session options for joining the newest `lockscope qemu` session of this user, its kernel's
/// symbols (`kernel` overrides the one it runs), and its registry entry.
pub fn join_options(
    kernel: Option<PathBuf>,
    record: &RecordArgs,
) -> Result<(SessionOptions, Arc<Symbols>, Entry)> {
    let entry = registry::newest()?;
    let symbols = load_symbols(&kernel.unwrap_or_else(|| entry.kernel.clone()))?;
    let base = if entry.ram_base == 0 {
        RAM_BASE
    } else {
        entry.ram_base
    };
    let mut o = SessionOptions::new(Target::Joined(Joined {
        ram_file: entry.ram_file.clone(),
        ram: base..base + entry.ram_bytes,
        harts: Some(entry.harts),
        console_log: entry.console_log.clone(),
        owner_pid: entry.pid,
        status_file: Some(registry::status_path(&registry::dir()?, entry.pid)),
        plugin_file: entry.plugin_file.clone(),
    }));
    o.record = record.options();
    Ok((o, symbols, entry))
}

/// Session options for an xv6 tree: built with its Makefile, booted with its QEMU command
/// line (console piped to lockscope), and its kernel's symbols.
pub fn xv6_options(
    boot: &BootArgs,
    xv6: &crate::xv6::Xv6Args,
    tree: &Path,
) -> Result<(SessionOptions, Arc<Symbols>)> {
    if boot.kernel.is_some()
        || boot.disk.is_some()
        || !boot.bootargs.is_empty()
        || !boot.qemu_args.is_empty()
        || boot.smp != 4
        || boot.gdb_poll
        || boot.break_on_panic
    {
        anyhow::bail!(
            "--xv6 takes the kernel, disk and QEMU command line from the tree's Makefile: --kernel, --disk, --smp, --bootargs, --gdb-poll, --break-on-panic and QEMU arguments do not apply (pass make variables with --make, e.g. --make CPUS=4)"
        );
    }
    let run = crate::xv6::line_from_tree(xv6, tree)?;
    let kernel = run.line.kernel().expect("line_from_tree checks -kernel");
    let symbols = load_symbols(&kernel)?;
    let mut o = SessionOptions::new(Target::Line(run));
    o.record = boot.record.options();
    o.console_log = boot.console_log.clone();
    Ok((o, symbols))
}
