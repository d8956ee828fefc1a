//! The import cycle check of `cargo xtask test`: `debugger/tools/modcycles.py` on every Rust
//! source tree of the project (issue 8: no import cycles between modules).

use std::io::ErrorKind;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::root;

/// The source trees checked, relative to the workspace root.
pub const TREES: &[&str] = &[
    "debugger/engine/src",
    "debugger/cli/src",
    "debugger/tui/src",
    "debugger/qemu-plugin/src",
    "debugger/qemu-plugin/abi/src",
    "xtask/src",
];

/// Fails with the tool's report when any tree has an import cycle; skips with a note when
/// `python3` is missing.
pub fn check() -> Result<()> {
    let root = root();
    let tool = "debugger/tools/modcycles.py";
    let out = match Command::new("python3")
        .arg(tool)
        .args(TREES)
        .current_dir(&root)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            eprintln!("xtask: python3 is not installed: skipping the import cycle check ({tool})");
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("running python3 {tool}")),
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "import cycles between modules ({tool}, {}):\n{report}break each by moving what both sides need into its own small module, or into the lower one (DEVELOPERS.md, \"No import cycles\")",
            out.status
        );
    }
    eprint!("{report}");
    Ok(())
}
