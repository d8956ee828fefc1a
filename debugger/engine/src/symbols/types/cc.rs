//! Test support: builds small freestanding C programs with the RISC-V cross compiler, so that
//! the DWARF readers are tested on what gcc really emits (DWARF 2 and 5).

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const GCC: &str = "riscv64-unknown-elf-gcc";

/// The DWARF versions the lab's kernels are built with: 2023+ Makefiles pass `-gdwarf-2`,
/// older ones get gcc 12's default, DWARF 5.
pub(crate) const DWARF_FLAGS: [&str; 2] = ["-gdwarf-2", "-gdwarf-5"];

/// True when the cross compiler is installed; otherwise says how to get it.
pub(crate) fn have_gcc() -> bool {
    let ok = Command::new(GCC)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipping: {GCC} is not installed (apt-get install gcc-riscv64-unknown-elf; \
             cargo xtask test installs it)"
        );
    }
    ok
}

/// Compiles each `(file name, source)` with `-c -g` and `flags` (headers, `*.h`, are only
/// written), links them into a kernel-like ELF at 0x80000000 whose entry is `entry`, and
/// returns its path.
pub(crate) fn build(dir: &Path, sources: &[(&str, &str)], flags: &[&str], entry: &str) -> PathBuf {
    let mut objects = Vec::new();
    for (name, src) in sources {
        let c = dir.join(name);
        std::fs::write(&c, src).unwrap();
        if name.ends_with(".h") {
            continue;
        }
        let o = c.with_extension("o");
        run(Command::new(GCC)
            .args([
                "-c",
                "-g",
                "-ffreestanding",
                "-fno-common",
                "-mcmodel=medany",
                "-fno-omit-frame-pointer",
            ])
            .args(flags)
            .arg("-o")
            .arg(&o)
            .arg(&c)
            .current_dir(dir));
        objects.push(o);
    }
    let tag = flags.join("").replace(['-', '='], "");
    let elf = dir.join(format!("kernel{tag}"));
    run(Command::new(GCC)
        .args([
            "-nostdlib",
            "-static",
            "-Wl,-Ttext=0x80000000",
            "-Wl,--no-warn-rwx-segments",
        ])
        .arg(format!("-Wl,-e,{entry}"))
        .arg("-o")
        .arg(&elf)
        .args(&objects));
    elf
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run the cross compiler");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
