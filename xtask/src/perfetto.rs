//! The Python environment the Perfetto export test parses traces with: Perfetto's own schema
//! (`perfetto_trace_pb2`) ships in the `perfetto` package on PyPI. `ensure_venv` makes
//! `target/perfetto-venv` with it (once), installing Debian's `python3-venv` first when root and
//! it is missing, and returns the environment's python for `LOCKSCOPE_PERFETTO_PYTHON`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The variable the engine's `export_perfetto` test reads.
pub const PYTHON_VAR: &str = "LOCKSCOPE_PERFETTO_PYTHON";

/// Pinned so the schema the test checks against does not move under it.
const PACKAGES: [&str; 2] = ["perfetto==0.59.1", "protobuf==7.36.2"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Whether `python` can import Perfetto's trace schema.
fn has_schema(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "from perfetto.protos.perfetto.trace import perfetto_trace_pb2",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(mut c: Command) -> Result<()> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Makes (or reuses) `target/perfetto-venv` with `perfetto` and `protobuf`; returns its python.
pub fn ensure_venv() -> Result<PathBuf> {
    let venv = workspace().join("target/perfetto-venv");
    let python = venv.join("bin/python");
    if python.exists() && has_schema(&python) {
        return Ok(python);
    }
    eprintln!(
        "xtask: creating {} with {}",
        venv.display(),
        PACKAGES.join(" ")
    );
    let make = || {
        let mut c = Command::new("python3");
        c.args(["-m", "venv", "--clear"]).arg(&venv);
        run(c)
    };
    if let Err(first) = make() {
        // Debian splits venv (ensurepip) into python3-venv.
        if !crate::tools::is_root() {
            bail!("{first:#}\n\nxtask: run `sudo apt-get install python3-venv`, then try again");
        }
        eprintln!("xtask: installing python3-venv");
        let mut c = Command::new("apt-get");
        c.args(["install", "-y", "python3-venv"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(c)?;
        make()?;
    }
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(PACKAGES);
    run(pip).context("installing Perfetto's Python package (PyPI must be reachable)")?;
    if !has_schema(&python) {
        bail!(
            "{} cannot import perfetto_trace_pb2 after installing {}",
            python.display(),
            PACKAGES.join(" ")
        );
    }
    Ok(python)
}
