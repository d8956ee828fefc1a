//! The xv6-shaped C fixture kernel's sources (our own code, kernel/xv6-fixture), and copying
//! them into a scratch tree so that its Makefile builds there and the fixture itself is never
//! touched. Shared with `#[path]` by the engine's and the CLI's xv6 tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The fixture's sources: `LOCKSCOPE_XV6_FIXTURE`, else the workspace's kernel/xv6-fixture.
pub fn fixture_source() -> PathBuf {
    let dir = std::env::var_os("LOCKSCOPE_XV6_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernel/xv6-fixture"));
    assert!(
        dir.join("Makefile").is_file(),
        "the xv6 fixture kernel is not at {}: set LOCKSCOPE_XV6_FIXTURE to its directory",
        dir.display()
    );
    dir
}

/// Copies the fixture's sources (not its build outputs) into `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let n = name.to_string_lossy();
        let output = n.ends_with(".o")
            || n.ends_with(".d")
            || n.ends_with(".tmp")
            || ["fs.img", ".gdbinit", "config.h", "kernel.asm"].contains(&&*n);
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else if !(output || n == "kernel" || n == "mkimg") {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}
