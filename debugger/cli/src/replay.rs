//! `lockscope replay`: a recorded trace, post-mortem: the dashboard on its final state, or a
//! verdict with `--check`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use lockscope_engine::{CheckReport, Feed, Monitor, MonitorConfig, SourceKind, TraceReader};

use crate::dashboard;
use crate::setup::load_symbols;
use crate::text::{emit, report_text};

#[derive(Args)]
pub struct ReplayArgs {
    /// The trace file.
    trace: PathBuf,
    /// The kernel ELF to symbolize with [default: the one the trace names].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Print a verdict instead of opening the dashboard.
    #[arg(long)]
    check: bool,
    /// With --check: print JSON.
    #[arg(long)]
    json: bool,
    /// Write the view as it was before the session ended as JSON to this file (test fixtures for
    /// the dashboard).
    #[arg(long)]
    dump_view: Option<PathBuf>,
}

pub fn replay(a: ReplayArgs) -> Result<u8> {
    let ReplayArgs {
        trace,
        kernel,
        check,
        json,
        dump_view,
    } = a;
    let mut reader = TraceReader::open(&trace)?;
    let kernel = kernel.or_else(|| reader.header().kernel.clone());
    let symbols = match &kernel {
        Some(k) => {
            let s = load_symbols(k).with_context(|| {
                format!(
                    "symbolizing {} (pass --kernel with the ELF it was recorded with)",
                    trace.display()
                )
            })?;
            match &reader.header().kernel_fingerprint {
                Some(f) if *f != s.fingerprint() => {
                    eprintln!(
                        "lockscope: {} was recorded with a different build of the kernel than {}: showing raw addresses; pass --kernel with the recorded ELF to see functions and lines",
                        trace.display(),
                        k.display()
                    );
                    None
                }
                _ => Some(s),
            }
        }
        None => None,
    };
    let mut monitor = Monitor::new(MonitorConfig::default(), symbols, SourceKind::Trace)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut ending = None;
    while let Some(feed) = reader.next_feed()? {
        match feed {
            // Held back: the dumped view shows the target as it was, not the session's end.
            Feed::End(_) => ending = Some(feed),
            f => monitor.apply(&f),
        }
    }
    // A recording of a kernel read without events (xv6 through DWARF) says so by its locks:
    // variables and the lab's counters, and not one event.
    {
        let v = monitor.view();
        if v.events_total == 0 && !v.detail.locks.is_empty() {
            monitor.set_lock_events(false);
        }
    }
    if let Some(path) = dump_view {
        std::fs::write(&path, serde_json::to_vec_pretty(&monitor.view())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(end) = ending {
        monitor.apply(&end);
    }
    let view = monitor.view();
    let report = CheckReport::from_view(&view);
    if check || json {
        if json {
            emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
        } else {
            emit(&report_text(&report, &view))?;
        }
        return Ok(report.exit_code() as u8);
    }
    dashboard::fixed(view)
}
