//! `cargo xtask bench recording`: recordings version 2 against version 1 on real sessions.
//!
//! Records kalloctest, bcachetest and `workload=mixed` with `lockscope check --record`, keeps a
//! real guest's RAM (kalloctest in QEMU with its RAM in a file), then runs the measurements in
//! release mode (the engine's `bench_recording` example): bytes per event and writer time per
//! event for both formats side by side (the same feeds written as version 1 and 2), seeking in
//! a 10-minute recording, and the size and time of a RAM snapshot; then the dashboard's path
//! on the same 10-minute recording (the TUI's `bench_replay` example: a replay's seeks, steps
//! and ranges, frames built as the dashboard gets them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lockscope_engine::qemu::QemuConfig;

use crate::cmd::{cargo, status};

fn bench_dir() -> Result<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .join("target/bench-recording");
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// Records a real session with `lockscope check --record`.
fn record(lockscope: &Path, elf: &Path, bootargs: &str, out: &Path) -> Result<()> {
    let _ = std::fs::remove_file(out);
    let o = Command::new(lockscope)
        .args(["check", "--for", "120", "--bootargs", bootargs])
        .arg("--kernel")
        .arg(elf)
        .arg("--record")
        .arg(out)
        .output()
        .context("running lockscope check")?;
    if !out.exists() {
        bail!(
            "lockscope check --record wrote nothing: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

/// kalloctest in QEMU with its RAM in a file, which keeps the guest's final RAM.
fn guest_ram(elf: &Path, out: &Path) -> Result<()> {
    let _ = std::fs::remove_file(out);
    let c = QemuConfig::new(elf)
        .smp(4)
        .bootargs("workload=kalloctest")
        .shared_ram(out)
        .run_captured(Duration::from_secs(300))?;
    if !c.verdict.passed() {
        bail!("kalloctest failed ({}):\n{}", c.verdict, c.console);
    }
    Ok(())
}

/// The whole recording benchmark. `lockscope` is the release binary.
pub fn run(elf: &Path, lockscope: &Path) -> Result<()> {
    println!("== recordings: version 2 vs version 1 on real sessions, side by side in one run");
    let dir = bench_dir()?;
    for (name, args) in [
        ("kalloctest", "workload=kalloctest"),
        ("bcachetest", "workload=bcachetest"),
        ("mixed", "workload=mixed secs=3"),
    ] {
        record(lockscope, elf, args, &dir.join(format!("{name}.lsrec")))?;
    }
    guest_ram(elf, &dir.join("guest-ram"))?;
    let mut c = cargo();
    c.args([
        "run",
        "-q",
        "--release",
        "-p",
        "lockscope-engine",
        "--example",
        "bench_recording",
        "--",
    ])
    .arg(&dir);
    status(c)?;
    std::fs::remove_file(dir.join("guest-ram"))?;
    let ten = dir.join("ten-minutes.lsrec");
    let mut c = cargo();
    c.args([
        "run",
        "-q",
        "--release",
        "-p",
        "lockscope-tui",
        "--example",
        "bench_replay",
        "--",
    ])
    .arg(&ten);
    status(c)?;
    std::fs::remove_file(&ten)?;
    Ok(())
}
