//! QEMU 10 beside the system's QEMU, for testing the plugin's newer API: Debian 12's
//! `bookworm-backports` has QEMU 10.0; its `qemu-system-riscv`, `qemu-system-common` and
//! `qemu-system-data` packages are downloaded (not installed) and unpacked with `dpkg -x` into
//! `target/qemu-10/`. The binary runs on Debian 12 with no missing library; pass it
//! `-L target/qemu-10/usr/share/qemu`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const SUITE: &str = "bookworm-backports";
const PACKAGES: [&str; 3] = [
    "qemu-system-riscv",
    "qemu-system-common",
    "qemu-system-data",
];
/// Where the suite is added when apt does not have it yet.
const SOURCES_FILE: &str = "/etc/apt/sources.list.d/lockscope-bookworm-backports.sources";

/// The unpacked binary under `root`.
pub fn qemu10_binary(root: &Path) -> PathBuf {
    root.join("target/qemu-10/usr/bin/qemu-system-riscv64")
}

/// Its data directory, for `-L`.
pub fn qemu10_data_dir(root: &Path) -> PathBuf {
    root.join("target/qemu-10/usr/share/qemu")
}

fn version_of(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && text.contains("version 10.")).then_some(text)
}

/// Fetches QEMU 10 into `target/qemu-10/` unless it is already there, and returns the binary.
/// Quick when present (one `--version`). Needs root for apt (to add the suite and update).
pub fn ensure_qemu10(root: &Path) -> Result<PathBuf> {
    let bin = qemu10_binary(root);
    if bin.is_file() && version_of(&bin).is_some() {
        return Ok(bin);
    }
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if !os.lines().any(|l| l == "VERSION_CODENAME=bookworm") {
        bail!(
            "QEMU 10 is fetched from Debian 12's bookworm-backports, and this is not Debian 12; \
             install a QEMU 9 or later yourself and set LOCKSCOPE_QEMU10 to its qemu-system-riscv64"
        );
    }
    if !apt_has_suite()? {
        if !crate::tools::is_root() {
            bail!(
                "apt has no {SUITE} suite; as root, add it with:\n  printf 'Types: deb\\nURIs: http://deb.debian.org/debian\\nSuites: {SUITE}\\nComponents: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' > {SOURCES_FILE} && apt-get update"
            );
        }
        eprintln!("xtask: adding {SUITE} to apt's sources ({SOURCES_FILE})");
        std::fs::write(
            SOURCES_FILE,
            format!(
                "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {SUITE}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            ),
        )
        .with_context(|| format!("writing {SOURCES_FILE}"))?;
        apt_update()?;
    }
    let dl = root.join("target/qemu-10.download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    let targets: Vec<String> = PACKAGES.iter().map(|p| format!("{p}/{SUITE}")).collect();
    let download = || {
        Command::new("apt-get")
            .arg("download")
            .args(&targets)
            .current_dir(&dl)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    eprintln!(
        "xtask: downloading QEMU 10 from {SUITE}: {}",
        PACKAGES.join(" ")
    );
    if !download() {
        // Stale package lists name versions the mirror no longer has.
        apt_update()?;
        if !download() {
            bail!(
                "apt-get download {} failed; run it by hand to see why",
                targets.join(" ")
            );
        }
    }
    // Unpack beside the final folder and rename, so a half-unpacked tree is never used.
    let tmp = root.join("target/qemu-10.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for entry in std::fs::read_dir(&dl)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            crate::cmd::status({
                let mut c = Command::new("dpkg");
                c.arg("-x").arg(&deb).arg(&tmp);
                c
            })
            .with_context(|| format!("unpacking {}", deb.display()))?;
        }
    }
    let dest = root.join("target/qemu-10");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest)?;
    let _ = std::fs::remove_dir_all(&dl);
    match version_of(&bin) {
        Some(v) => {
            eprintln!("xtask: {}", v.lines().next().unwrap_or(""));
            Ok(bin)
        }
        None => bail!(
            "{} does not run after unpacking (a missing library?); run it with --version to see why",
            bin.display()
        ),
    }
}

fn apt_has_suite() -> Result<bool> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.filter_map(|e| e.ok().map(|e| e.path())));
    }
    Ok(files.iter().any(|f| {
        f.extension().is_some_and(|e| e == "list" || e == "sources")
            && std::fs::read_to_string(f).is_ok_and(|t| {
                t.lines()
                    .any(|l| !l.trim_start().starts_with('#') && l.contains(SUITE))
            })
    }))
}

fn apt_update() -> Result<()> {
    let mut c = Command::new("apt-get");
    c.arg("update").env("DEBIAN_FRONTEND", "noninteractive");
    crate::cmd::status(c).context("apt-get update")
}
