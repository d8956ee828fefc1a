//! Builds the xv6-shaped C fixture kernel (`kernel/xv6-fixture`) for tests.
//!
//! The result is a copy of the fixture's tree built in place with its own Makefile, so it
//! looks exactly like a student's lab tree: `Makefile`, `kernel/kernel` (the ELF), `fs.img`,
//! and `make -n qemu` in it prints the QEMU command line. Tests get its path in
//! `LOCKSCOPE_XV6_FIXTURE` and must copy it before booting it (QEMU locks `fs.img`, and the
//! fixture's tests write to it).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable `cargo xtask test` sets to the built tree.
pub const ENV: &str = "LOCKSCOPE_XV6_FIXTURE";

/// Where `cargo xtask` keeps the default build, under the workspace root.
pub fn default_out(root: &Path) -> PathBuf {
    root.join("target/xv6-fixture")
}

/// Outputs of an in-tree build: never copied from the sources (a developer's `make` in
/// kernel/xv6-fixture leaves them there), always remade by `make`.
fn is_build_output(rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let rel = rel.to_string_lossy();
    name.ends_with(".o")
        || name.ends_with(".d")
        || name.ends_with(".tmp")
        || matches!(
            rel.as_ref(),
            "kernel/kernel"
                | "kernel/kernel.asm"
                | "kernel/config.h"
                | "mkimg/mkimg"
                | "fs.img"
                | ".gdbinit"
        )
}

/// Copies the sources under `from/rel` to `to/rel`, writing only files whose contents
/// differ, so make's timestamps still say what changed and rebuilds stay incremental.
fn sync(from: &Path, to: &Path, rel: &Path) -> Result<()> {
    let dir = from.join(rel);
    std::fs::create_dir_all(to.join(rel))
        .with_context(|| format!("creating {}", to.join(rel).display()))?;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let rel = rel.join(entry.file_name());
        if is_build_output(&rel) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            sync(from, to, &rel)?;
            continue;
        }
        let src = std::fs::read(from.join(&rel))
            .with_context(|| format!("reading {}", from.join(&rel).display()))?;
        let dst = to.join(&rel);
        if std::fs::read(&dst).ok().as_deref() != Some(&src[..]) {
            std::fs::write(&dst, &src).with_context(|| format!("writing {}", dst.display()))?;
        }
    }
    Ok(())
}

/// Copies `root/kernel/xv6-fixture` to `out` and runs `make` there with `opts` as make
/// variables (`&[("BCACHE", "grid"), ("BUG", "refcnt-leak")]`; see the fixture's README).
/// Returns `out`: the kernel is `out/kernel/kernel`, the disk `out/fs.img`. Building again
/// into the same `out` rebuilds only what changed (sources or options).
pub fn build_fixture(root: &Path, out: &Path, opts: &[(&str, &str)]) -> Result<PathBuf> {
    let src = root.join("kernel/xv6-fixture");
    if !src.join("Makefile").is_file() {
        bail!(
            "{} has no Makefile: is {} the workspace root?",
            src.display(),
            root.display()
        );
    }
    sync(&src, out, Path::new(""))?;
    let mut make = Command::new("make");
    make.current_dir(out)
        .args(opts.iter().map(|(k, v)| format!("{k}={v}")))
        // A parent make's flags (jobserver, -n) are not ours to pass on.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS");
    let output = make
        .output()
        .context("running make (install it with: sudo apt-get install -y make)")?;
    if !output.status.success() {
        // The Makefile says what is missing (the cross compiler, a bad option).
        bail!(
            "building the xv6 fixture in {} failed:\n{}{}",
            out.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let kernel = out.join("kernel/kernel");
    if !kernel.is_file() || !out.join("fs.img").is_file() {
        bail!(
            "make succeeded but {} or fs.img is missing",
            kernel.display()
        );
    }
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn builds_a_lab_shaped_tree_and_rebuilds_only_on_change() {
        let out =
            std::env::temp_dir().join(format!("lockscope-xtask-fixture-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let tree = build_fixture(&root(), &out, &[]).unwrap();
        let kernel = tree.join("kernel/kernel");
        let built = std::fs::metadata(&kernel).unwrap().modified().unwrap();

        // Nothing changed: make has nothing to do.
        build_fixture(&root(), &out, &[]).unwrap();
        assert_eq!(
            std::fs::metadata(&kernel).unwrap().modified().unwrap(),
            built
        );

        // An option changed: the kernel is rebuilt with it.
        build_fixture(&root(), &out, &[("BCACHE", "grid")]).unwrap();
        let config = std::fs::read_to_string(tree.join("kernel/config.h")).unwrap();
        assert!(config.contains("#define BCACHE_GRID 1"), "{config}");

        // A bad option is refused with what to choose.
        let err = build_fixture(&root(), &out, &[("BCACHE", "tree")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("choose bucket, parallel, grid or global"),
            "{err:#}"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}
