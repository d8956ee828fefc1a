//! What replay, export and serve share: opening a recording, saying what it lost, finding the
//! kernel to symbolize it with, and picking one of its stops.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use lockscope_engine::recording::{RecordedStop, Recording};
use lockscope_engine::Symbols;

use crate::paths;
use crate::setup::load_symbols;

/// An open recording and the kernel it is symbolized with, when one was found.
pub struct Opened {
    pub path: PathBuf,
    pub rec: Recording,
    pub symbols: Option<Arc<Symbols>>,
}

/// Opens `path`, prints what could not be read (a cut, damaged chunks) to stderr, and finds its
/// kernel: the one inside the recording, else `--kernel`, else a file of the recorded kernel's
/// name next to the recording or the workspace's build when its fingerprint matches.
pub fn open(path: &Path, kernel: Option<PathBuf>) -> Result<Opened> {
    let rec = Recording::open(path)?;
    for p in rec.problems() {
        eprintln!("lockscope: {p}");
    }
    let symbols = symbols_for(path, &rec, kernel)?;
    Ok(Opened {
        path: path.to_owned(),
        rec,
        symbols,
    })
}

/// Opens `path` and prints what could not be read, without looking for its kernel.
pub fn open_without_symbols(path: &Path) -> Result<Opened> {
    let rec = Recording::open(path)?;
    for p in rec.problems() {
        eprintln!("lockscope: {p}");
    }
    Ok(Opened {
        path: path.to_owned(),
        rec,
        symbols: None,
    })
}

fn symbols_for(
    path: &Path,
    rec: &Recording,
    kernel: Option<PathBuf>,
) -> Result<Option<Arc<Symbols>>> {
    let h = rec.header();
    let name = h.kernel_name.clone().unwrap_or_else(|| "kernel".into());
    let matches = |s: &Symbols| {
        h.kernel_fingerprint
            .as_ref()
            .is_none_or(|f| *f == s.fingerprint())
    };
    if let Some(k) = kernel {
        let s = load_symbols(&k).with_context(|| format!("symbolizing {}", path.display()))?;
        if !matches(&s) {
            eprintln!(
                "lockscope: {} was recorded with a different build of the kernel than {}: showing raw addresses; pass --kernel with the recorded ELF to see functions and lines",
                path.display(),
                k.display()
            );
            return Ok(None);
        }
        return Ok(Some(s));
    }
    if h.with_kernel {
        let elf = rec.kernel_elf()?;
        // Named after the recording: there is no file of the recording machine to name.
        let mut s = Symbols::from_bytes(path.with_file_name(&name), elf)
            .with_context(|| format!("the kernel inside {}", path.display()))?;
        if s.source_root().is_none() {
            if let Some(w) = paths::workspace() {
                s.set_source_root(w);
            }
        }
        return Ok(Some(Arc::new(s)));
    }
    if h.kernel_fingerprint.is_some() {
        let candidates = [Some(path.with_file_name(&name)), paths::kernel(None).ok()];
        for c in candidates.into_iter().flatten().filter(|c| c.is_file()) {
            if let Ok(s) = load_symbols(&c) {
                if matches(&s) {
                    return Ok(Some(s));
                }
            }
        }
    }
    eprintln!(
        "lockscope: {} does not carry its kernel ({name}{}): showing raw addresses; pass --kernel with the ELF it was recorded with, or record with --with-kernel",
        path.display(),
        h.kernel_fingerprint
            .as_ref()
            .map(|f| format!(", build {f}"))
            .unwrap_or_default()
    );
    Ok(None)
}

/// The recording's stops as a table, one line each.
pub fn stops_table(stops: &[RecordedStop], start_ns: u64) -> String {
    let mut s = String::new();
    if stops.is_empty() {
        s.push_str("  (no stops: the guest was never stopped while recording)\n");
    }
    for (i, st) in stops.iter().enumerate() {
        let what = match &st.info {
            Some(info) => {
                let reason = format!("{:?}", info.reason).to_lowercase();
                match info.hart {
                    Some(h) => format!("{reason}, hart {h}"),
                    None => reason,
                }
            }
            None => "(its record was lost)".into(),
        };
        let regs = st
            .info
            .as_ref()
            .map_or(0, |i| i.harts.iter().filter(|h| h.full.is_some()).count());
        let ram = match &st.ram {
            Some(r) => format!("RAM {} MiB", (r.end - r.start) >> 20),
            None => "no RAM".into(),
        };
        let _ = writeln!(
            s,
            "  stop {i}: at {:.3}s, {what}; {regs} harts with registers, {ram}",
            st.time_ns.saturating_sub(start_ns) as f64 / 1e9
        );
    }
    s
}

/// The stop to serve or write: `--stop N`, or the only one a gdb can use. Anything else lists
/// the stops and says how to pick one.
pub fn pick_stop(o: &Opened, asked: Option<usize>) -> Result<usize> {
    let stops = o.rec.stops();
    let usable = |s: &RecordedStop| {
        s.ram.is_some()
            && s.info
                .as_ref()
                .is_some_and(|i| i.harts.iter().any(|h| h.full.is_some()))
    };
    let start = o
        .rec
        .feed_chunks()
        .iter()
        .map(|c| c.t0)
        .find(|&t| t > 0)
        .unwrap_or(0);
    let table = stops_table(&stops, start);
    let n = match asked {
        Some(n) if n < stops.len() => n,
        Some(n) => bail!(
            "{} has no stop {n}; its stops are:\n{table}pick one with --stop N",
            o.path.display()
        ),
        None => {
            let ok: Vec<usize> = (0..stops.len()).filter(|&i| usable(&stops[i])).collect();
            match ok[..] {
                [only] => {
                    eprintln!(
                        "lockscope: {} has one stop a gdb can look at:\n{table}using stop {only}",
                        o.path.display()
                    );
                    only
                }
                _ => bail!(
                    "{} has {} stops; say which with --stop N:\n{table}",
                    o.path.display(),
                    stops.len()
                ),
            }
        }
    };
    let s = &stops[n];
    if s.info.is_none() {
        bail!(
            "stop {n} of {} lost its record (registers): pick another with --stop N:\n{table}",
            o.path.display()
        );
    }
    if !usable(s) {
        bail!(
            "stop {n} of {} has {}: gdb needs every hart's registers and the guest RAM; record with `lockscope run|check --record FILE` (shared RAM, the default) to save both:\n{table}",
            o.path.display(),
            if s.ram.is_none() {
                "no guest RAM"
            } else {
                "no full registers"
            }
        );
    }
    Ok(n)
}
