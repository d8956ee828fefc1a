//! `--xv6 [TREE]` for `run` and `check`: build an xv6 tree with its own Makefile and take the
//! QEMU command line from it.
//!
//! The tree's `make qemu` is run with `QEMU="<lockscope> qemu --"` and
//! `LOCKSCOPE_QEMU_ARGS_TO=<file>`: make builds whatever its `qemu` target depends on (the
//! kernel, fs.img, a 2025 tree's fresh fs.img), and where it would start QEMU, `lockscope qemu`
//! writes the arguments the shell gave it (and the directory it ran in) to the file and exits.
//! So the line is exactly the Makefile's, with its own expansions and quoting, whatever CPUS,
//! virtio mode, extra devices or kernel path the tree has, and nested makes pass QEMU on too.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;
use lockscope_engine::qemu::QemuLine;
use lockscope_engine::session::{LineConsole, LineRun};
use serde::{Deserialize, Serialize};

/// Where `lockscope qemu` writes the arguments it got instead of starting QEMU.
pub const ARGS_TO_ENV: &str = "LOCKSCOPE_QEMU_ARGS_TO";

/// An xv6 tree to build and boot.
#[derive(Args, Clone, Debug, Default)]
pub struct Xv6Args {
    /// Build and boot the xv6 tree TREE (default: the current directory) with its own
    /// Makefile: `make qemu`'s prerequisites are built, and its QEMU command line is used.
    #[arg(long, value_name = "TREE", num_args = 0..=1, default_missing_value = ".")]
    pub xv6: Option<PathBuf>,
    /// With --xv6: keep the disk images untouched (QEMU's snapshot=on on each -drive).
    #[arg(long)]
    pub snapshot: bool,
    /// With --xv6: another argument for make, e.g. --make CPUS=4 (repeatable).
    #[arg(long = "make", value_name = "ARG")]
    pub make_args: Vec<String>,
    /// With --xv6: the QEMU binary [default: the first qemu-system-riscv64 on PATH].
    #[arg(long)]
    pub qemu: Option<PathBuf>,
}

/// What `lockscope qemu` wrote when asked for the arguments.
#[derive(Serialize, Deserialize)]
pub struct CapturedLine {
    pub qemu: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
}

/// Writes a captured line (the `lockscope qemu` side).
pub fn write_captured(path: &Path, qemu: &Path, args: &[OsString]) -> Result<()> {
    let c = CapturedLine {
        qemu: qemu.to_owned(),
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        cwd: std::env::current_dir()?,
    };
    std::fs::write(path, serde_json::to_vec(&c)?)
        .with_context(|| format!("writing the QEMU command line to {}", path.display()))
}

/// Shell-quotes a word for make's recipe shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Builds `tree` with its Makefile and returns its QEMU command line, to run with the console
/// piped to lockscope. Make's output goes to stderr, so that stdout stays a report's.
pub fn line_from_tree(a: &Xv6Args, tree: &Path) -> Result<LineRun> {
    if !tree.join("Makefile").is_file() && !tree.join("makefile").is_file() {
        bail!(
            "{} has no Makefile: --xv6 takes the xv6 tree (the directory where you run `make qemu`)",
            tree.display()
        );
    }
    let exe = std::env::current_exe().context("finding the lockscope binary")?;
    let mut qemu_var = format!("{} qemu", sh_quote(&exe.to_string_lossy()));
    if let Some(q) = &a.qemu {
        let q = std::fs::canonicalize(q).unwrap_or_else(|_| q.clone());
        qemu_var.push_str(&format!(" --qemu {}", sh_quote(&q.to_string_lossy())));
    }
    qemu_var.push_str(" --");
    let capture =
        std::env::temp_dir().join(format!("lockscope-qemu-line-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&capture);
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr for make's output")?;
    eprintln!(
        "lockscope: building {} with `make qemu` ...",
        tree.display()
    );
    let status = Command::new("make")
        .arg("qemu")
        .arg(format!("QEMU={qemu_var}"))
        .args(&a.make_args)
        .current_dir(tree)
        .env(ARGS_TO_ENV, &capture)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()
        .context("running make (is it installed?)")?;
    let captured = std::fs::read(&capture);
    let _ = std::fs::remove_file(&capture);
    let captured: CapturedLine = match captured {
        Ok(bytes) => serde_json::from_slice(&bytes).context("reading the captured QEMU line")?,
        Err(_) if !status.success() => bail!(
            "`make qemu` failed in {} ({status}); its output is above",
            tree.display()
        ),
        Err(_) => bail!(
            "`make qemu` in {} did not run $(QEMU): lockscope takes the QEMU command line from that target's recipe; does it start QEMU through the QEMU variable?",
            tree.display()
        ),
    };
    let line = QemuLine::new(
        captured.qemu,
        captured.args.into_iter().map(OsString::from).collect(),
        captured.cwd,
    )?;
    if line.kernel().is_none() {
        bail!(
            "the QEMU command line of {}'s Makefile has no -kernel: {}",
            tree.display(),
            line.display()
        );
    }
    Ok(LineRun {
        line,
        console: LineConsole::Piped,
        snapshot_drives: a.snapshot,
    })
}
