//! Shared helpers of the CLI's end-to-end tests.
#![allow(dead_code)]

pub mod tmux;
pub mod xv6;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The kernel ELF these tests boot: `LOCKSCOPE_KERNEL`, else the workspace build.
pub fn kernel() -> PathBuf {
    let k = std::env::var_os("LOCKSCOPE_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace().join("target/kernel/riscv64gc-unknown-none-elf/release/lockscope-kernel")
        });
    assert!(
        k.is_file(),
        "no kernel ELF at {}: run the tests with `cargo xtask test`, which builds it",
        k.display()
    );
    k
}

/// The lockscope binary under test, pointed at the kernel (and its disk image, if any). Its
/// temporary files (the console logs kept after a fault) go under `target/`, not `/tmp`.
pub fn lockscope() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockscope"));
    c.env("LOCKSCOPE_KERNEL", kernel())
        .env("TMPDIR", env!("CARGO_TARGET_TMPDIR"));
    c
}

/// Exit code and the JSON report on stdout.
pub fn json_report(out: &Output) -> (i32, serde_json::Value) {
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); exit {code}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, v)
}

/// The pid of a child of `parent` whose command name starts with `name` (15 chars at most).
pub fn child_named(parent: u32, name: &str) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim().starts_with(name))
        })
}
