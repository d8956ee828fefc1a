//! `lockscope export`: a recording for other tools: a Perfetto trace (`-o out.pftrace`) or one
//! of its stops as an ELF core file for gdb (`--core FILE`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use lockscope_engine::export::export_perfetto;
use lockscope_engine::gdbserver::{write_core, PostMortemStop};

use crate::recorded::{self, pick_stop};

#[derive(Args)]
pub struct ExportArgs {
    /// The recording.
    trace: PathBuf,
    /// Write a Perfetto trace here (open it at https://ui.perfetto.dev, "Open trace file").
    #[arg(short = 'o', long = "output", value_name = "FILE.pftrace")]
    output: Option<PathBuf>,
    /// Write a stop (panic, deadlock, stall, `i`) as an ELF core file:
    /// `gdb-multiarch KERNEL FILE` opens it.
    #[arg(long, value_name = "FILE")]
    core: Option<PathBuf>,
    /// With --core: which stop (the list is printed when it is missing or wrong).
    #[arg(long, value_name = "N", requires = "core")]
    stop: Option<usize>,
    /// The kernel ELF it was recorded with [default: the one inside the recording, or next to it].
    #[arg(long)]
    kernel: Option<PathBuf>,
}

pub fn export(a: ExportArgs) -> Result<u8> {
    if a.output.is_none() && a.core.is_none() {
        bail!(
            "say what to write: -o FILE.pftrace (a Perfetto trace) or --core FILE (a stop for gdb)"
        );
    }
    let o = recorded::open(&a.trace, a.kernel.clone())?;
    if let Some(out) = &a.output {
        let stats = export_perfetto(&o.rec, o.symbols.clone(), out)?;
        let modes = if stats.sleep_holds + stats.rw_holds > 0 {
            format!(
                ", {} sleeplock and {} reader-writer holds",
                stats.sleep_holds, stats.rw_holds
            )
        } else {
            String::new()
        };
        println!(
            "{}: {} events as {} hold and {} spin slices{modes}, {} flows, {} findings ({} bytes); open it at https://ui.perfetto.dev (\"Open trace file\")",
            out.display(),
            stats.events,
            stats.holds.values().sum::<u64>(),
            stats.spins.values().sum::<u64>(),
            stats.flows,
            stats.instants,
            stats.bytes
        );
    }
    if let Some(core) = &a.core {
        let Some(symbols) = o.symbols.clone() else {
            bail!(
                "a core file needs the kernel the recording was made with: pass --kernel with its ELF (or record with --with-kernel)"
            );
        };
        let n = pick_stop(&o, a.stop)?;
        let stops = o.rec.stops();
        let info = stops[n].info.as_ref().expect("pick_stop checked it");
        let range = stops[n].ram.clone().expect("pick_stop checked it");
        let ram = o.rec.stop_ram(n)?;
        let mut stop = PostMortemStop::from_stop_info(info, Box::new(ram), range)
            .context("the stop has no hart with every register saved")?;
        let file =
            std::fs::File::create(core).with_context(|| format!("creating {}", core.display()))?;
        let summary = write_core(&mut stop, &symbols, file)
            .with_context(|| format!("writing {}", core.display()))?;
        println!(
            "{}: stop {n} ({}), {} harts, {} segments, {} MiB of RAM; open it with: gdb-multiarch {} {}",
            core.display(),
            stop.reason,
            summary.threads,
            summary.segments.len(),
            summary.bytes >> 20,
            o.rec.header().kernel_name.as_deref().unwrap_or("KERNEL"),
            core.display()
        );
    }
    Ok(0)
}
