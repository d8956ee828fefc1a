//! Where the workspace's kernel and disk image are, so that `lockscope run` needs no arguments.

use std::path::{Path, PathBuf};

/// The kernel ELF's path inside a workspace.
const KERNEL_IN_WORKSPACE: &str =
    "target/kernel/riscv64gc-unknown-none-elf/release/lockscope-kernel";
/// The disk image's path inside a workspace (made by `cargo xtask build`).
const DISK_IN_WORKSPACE: &str = "target/kernel/disk.img";

/// The workspace root: from `LOCKSCOPE_WORKSPACE`, else the directory above the `target/` this
/// binary was built into, else the current directory or a parent holding `target/kernel`.
pub fn workspace() -> Option<PathBuf> {
    if let Some(w) = std::env::var_os("LOCKSCOPE_WORKSPACE") {
        return Some(PathBuf::from(w));
    }
    let exe = std::env::current_exe().ok();
    let from_exe = exe.as_deref().and_then(|e| {
        e.ancestors()
            .find(|d| d.file_name().is_some_and(|n| n == "target"))
            .and_then(Path::parent)
            .map(Path::to_path_buf)
    });
    let candidates = from_exe.into_iter().chain(
        std::env::current_dir()
            .ok()
            .into_iter()
            .flat_map(|d| d.ancestors().map(Path::to_path_buf).collect::<Vec<_>>()),
    );
    candidates
        .into_iter()
        .find(|c| c.join(KERNEL_IN_WORKSPACE).is_file())
}

/// `--kernel`, else `LOCKSCOPE_KERNEL`, else the workspace's build.
pub fn kernel(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(k) = arg.or_else(|| std::env::var_os("LOCKSCOPE_KERNEL").map(PathBuf::from)) {
        return Ok(k);
    }
    match workspace() {
        Some(w) => Ok(w.join(KERNEL_IN_WORKSPACE)),
        None => anyhow::bail!(
            "no kernel ELF given and none built here: run `cargo xtask build` in the lockscope workspace, or pass --kernel"
        ),
    }
}

/// `--disk`, else `LOCKSCOPE_DISK`, else the disk image next to the workspace's kernel when it
/// exists (kernels without a buffer cache need none).
pub fn disk(arg: Option<PathBuf>, kernel: &Path) -> Option<PathBuf> {
    if let Some(d) = arg.or_else(|| std::env::var_os("LOCKSCOPE_DISK").map(PathBuf::from)) {
        return Some(d);
    }
    let next_to_kernel = kernel
        .ancestors()
        .find(|d| d.file_name().is_some_and(|n| n == "target"))
        .map(|t| t.join("kernel/disk.img"));
    next_to_kernel
        .into_iter()
        .chain(workspace().map(|w| w.join(DISK_IN_WORKSPACE)))
        .find(|p| p.is_file())
}
