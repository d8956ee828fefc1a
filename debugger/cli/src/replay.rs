//! `lockscope replay`: a recording, post-mortem: the dashboard on a timeline (seek, step,
//! marks, counter deltas over a range), or a verdict as of any moment (`--check --at 3.2s`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use lockscope_engine::recording::{parse_time, view_at};
use lockscope_engine::{CheckReport, Feed, Monitor, MonitorConfig, SourceKind, View};

use crate::dashboard;
use crate::recorded::{self, stops_table, Opened};
use crate::text::{emit, report_text};

#[derive(Args)]
pub struct ReplayArgs {
    /// The recording (version 2, or a version-1 trace).
    trace: PathBuf,
    /// The kernel ELF to symbolize with [default: the one inside the recording, else one of
    /// the recorded kernel's name and build next to it or in the workspace].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Print a verdict instead of opening the dashboard.
    #[arg(long)]
    check: bool,
    /// With --check: print JSON.
    #[arg(long)]
    json: bool,
    /// The moment to look at, in target time as lockscope shows it (the dashboard's `t`, the
    /// event times: time since QEMU started): 3.2s, 1500ms, 2m. With --check the verdict and
    /// tables as of then; in the dashboard, where the cursor starts [default: the end].
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<u64>,
    /// List the stops saved in the recording (for `lockscope serve` and `export --core`).
    #[arg(long)]
    stops: bool,
    /// Write the view as it was before the session ended (or at --at) as JSON to this file
    /// (test fixtures for the dashboard).
    #[arg(long)]
    dump_view: Option<PathBuf>,
}

pub fn replay(a: ReplayArgs) -> Result<u8> {
    let o = recorded::open(&a.trace, a.kernel.clone())?;
    if a.stops {
        let start = o
            .rec
            .feed_chunks()
            .iter()
            .map(|c| c.t0)
            .find(|&t| t > 0)
            .unwrap_or(0);
        emit(&format!(
            "{}:\n{}",
            a.trace.display(),
            stops_table(&o.rec.stops(), start)
        ))?;
        return Ok(0);
    }
    if !(a.check || a.json || a.dump_view.is_some()) {
        return dashboard::replay(o, a.at);
    }
    let view = match a.at {
        Some(t) => {
            let (view, _) = view_at(&o.rec, o.symbols.clone(), t, false)?;
            dump(&a, &view)?;
            view
        }
        None => final_view(&o, &a)?,
    };
    if !(a.check || a.json) {
        return Ok(0);
    }
    let report = CheckReport::from_view(&view);
    if a.json {
        emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        emit(&report_text(&report, &view))?;
    }
    Ok(report.exit_code() as u8)
}

/// The whole recording replayed; the view is dumped before the session's end is applied (the
/// dumped view shows the target as it was, not the session's end).
fn final_view(o: &Opened, a: &ReplayArgs) -> Result<View> {
    let mut monitor = Monitor::new(
        MonitorConfig::default(),
        o.symbols.clone(),
        SourceKind::Trace,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut ending = None;
    for feed in o.rec.feeds() {
        match feed {
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
    dump(a, &monitor.view())?;
    if let Some(end) = ending {
        monitor.apply(&end);
    }
    Ok(monitor.view())
}

fn dump(a: &ReplayArgs, view: &View) -> Result<()> {
    if let Some(path) = &a.dump_view {
        std::fs::write(path, serde_json::to_vec_pretty(view)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
