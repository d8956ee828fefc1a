//! What the commands build: the kernel ELF, its disk image, and the debugger.

use anyhow::{bail, Context, Result};
use lockscope_engine::qemu::{Captured, QemuConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::{cargo, root, status};

pub const TARGET: &str = "riscv64gc-unknown-none-elf";

pub fn kernel_elf() -> PathBuf {
    root()
        .join("target/kernel")
        .join(TARGET)
        .join("release/lockscope-kernel")
}

/// Builds the kernel (cargo rebuilds only what changed) and returns the ELF.
pub fn build_kernel() -> Result<PathBuf> {
    let mut c = cargo();
    c.args([
        "build",
        "--manifest-path",
        "kernel/Cargo.toml",
        "--target",
        TARGET,
    ])
    .args(["--release", "--target-dir", "target/kernel"]);
    status(c).context("building the kernel")?;
    Ok(kernel_elf())
}

/// The disk image the kernel's buffer cache reads: next to the kernel's target dir, where
/// `lockscope` looks for it.
fn disk_image() -> PathBuf {
    root().join("target/kernel/disk.img")
}

/// Writes the disk image: every block stamped with its number and a checksum
/// (`lockscope_abi::disk`), no file system, so no mkfs is needed.
pub fn make_disk() -> Result<PathBuf> {
    use lockscope_abi::disk::{stamp, BSIZE, NBLOCKS};
    use std::io::Write;
    let path = disk_image();
    std::fs::create_dir_all(path.parent().expect("target/kernel"))?;
    let tmp = path.with_extension("img.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let mut block = [0u8; BSIZE];
    for n in 0..NBLOCKS {
        stamp(&mut block, n, 0);
        out.write_all(&block)?;
    }
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("writing {}", tmp.display()))?;
    // A rename, so a QEMU already running on the old image keeps it.
    std::fs::rename(&tmp, &path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// The disk image, made again if it is missing, the wrong size, or from another format.
pub fn ensure_disk() -> Result<PathBuf> {
    use lockscope_abi::disk::{verify, BSIZE, IMAGE_BYTES};
    use std::io::Read;
    let path = disk_image();
    let current = std::fs::File::open(&path).is_ok_and(|mut f| {
        let mut block = [0u8; BSIZE];
        f.metadata().is_ok_and(|m| m.len() == IMAGE_BYTES)
            && f.read_exact(&mut block).is_ok()
            && verify(&block, 0).is_ok()
    });
    if current {
        Ok(path)
    } else {
        make_disk()
    }
}

/// Builds the debugger in release mode and returns the binary.
pub fn build_lockscope() -> Result<PathBuf> {
    let mut c = cargo();
    // The QEMU plugin's two builds go beside the binary, where `lockscope` looks for them.
    c.args(["build", "--release", "-p", "lockscope"]).args([
        "-p",
        "lockscope-qemu-v1",
        "-p",
        "lockscope-qemu-v2",
    ]);
    status(c).context("building the debugger and its QEMU plugin")?;
    Ok(root().join("target/release/lockscope"))
}

/// Boots `elf` with the disk image to the end and returns what happened.
pub fn boot(elf: &Path, smp: u32, args: &str, timeout: Duration) -> Result<Captured> {
    let c = QemuConfig::new(elf)
        .smp(smp)
        .bootargs(args)
        .disk(ensure_disk()?)
        .run_captured(timeout)?;
    if c.timed_out {
        bail!(
            "`{args}` on {smp} harts did not finish in {timeout:?}:\n{}",
            c.console
        );
    }
    Ok(c)
}
