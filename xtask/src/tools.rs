//! The tools the commands need, installed when missing: the rustup target, and Debian packages
//! through apt-get when run as root (otherwise the exact `sudo apt-get install` line).
//!
//! A module that needs more lists its own [`Tool`]s and passes them to [`ensure`].

use anyhow::{bail, Context, Result};
use std::process::Command;

use crate::cmd::status;
use crate::kernel::TARGET;

/// A program a command runs, and the Debian package that provides it.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    /// Looked up on PATH (or an absolute path).
    pub bin: &'static str,
    pub package: &'static str,
    /// apt's target release (`-t bookworm-backports`) when the default one does not have it.
    pub release: Option<&'static str>,
}

impl Tool {
    pub const fn debian(bin: &'static str, package: &'static str) -> Self {
        Tool {
            bin,
            package,
            release: None,
        }
    }
}

/// What every command needs.
pub const BASE: &[Tool] = &[
    Tool::debian("qemu-system-riscv64", "qemu-system-misc"),
    Tool::debian("gdb-multiarch", "gdb-multiarch"),
    // The dashboard's end-to-end test drives it in a real terminal.
    Tool::debian("tmux", "tmux"),
    // The C fixture kernels (freestanding: no newlib needed).
    Tool::debian("riscv64-unknown-elf-gcc", "gcc-riscv64-unknown-elf"),
];

/// Whether xtask runs as root (and so may run apt-get itself).
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn installed(bin: &str) -> bool {
    lockscope_engine::qemu::find_in_path(std::path::Path::new(bin)).is_some()
}

/// Installs the rustup target and every missing tool of [`BASE`] and `extra`, or says exactly
/// how to.
pub fn ensure(extra: &[Tool]) -> Result<()> {
    rustup_target()?;
    let missing: Vec<Tool> = BASE
        .iter()
        .chain(extra)
        .filter(|t| !installed(t.bin))
        .copied()
        .collect();
    // One apt-get per target release.
    let mut releases: Vec<Option<&str>> = missing.iter().map(|t| t.release).collect();
    releases.sort();
    releases.dedup();
    for release in releases {
        let pkgs: Vec<&str> = missing
            .iter()
            .filter(|t| t.release == release)
            .map(|t| t.package)
            .collect();
        apt_install(&pkgs, release)?;
    }
    Ok(())
}

fn rustup_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the riscv64gc-unknown-none-elf target")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        eprintln!("xtask: adding rustup target {TARGET}");
        let mut c = Command::new("rustup");
        c.args(["target", "add", TARGET]);
        status(c)?;
    }
    Ok(())
}

fn apt_install(pkgs: &[&str], release: Option<&str>) -> Result<()> {
    let mut line = String::from("apt-get install -y");
    if let Some(r) = release {
        line.push_str(&format!(" -t {r}"));
    }
    line.push(' ');
    line.push_str(&pkgs.join(" "));
    if !is_root() {
        bail!("missing {}; install with: sudo {line}", pkgs.join(" "));
    }
    eprintln!("xtask: {line}");
    let install = || {
        let mut c = Command::new("apt-get");
        c.args(["install", "-y", "--no-install-recommends"]);
        if let Some(r) = release {
            c.args(["-t", r]);
        }
        c.args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !install() {
        // A fresh machine has no package lists yet.
        let mut c = Command::new("apt-get");
        c.arg("update");
        status(c)?;
        if !install() {
            bail!("{line} failed; run it by hand to see why");
        }
    }
    Ok(())
}
