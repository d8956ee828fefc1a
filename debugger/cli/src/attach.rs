//! `lockscope attach`: the live dashboard on a QEMU that already runs: the newest
//! `lockscope qemu` session of this user (no address: its shared RAM is read, nothing is
//! paused), or any QEMU started with `-gdb tcp::PORT` (read by polling through the stub).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lockscope_engine::Session;

use crate::dashboard;
use crate::record::RecordArgs;
use crate::setup::{attach_options, join_options};

#[derive(Args)]
pub struct AttachArgs {
    /// The gdb stub, HOST:PORT (QEMU's -gdb tcp::PORT). Without it, lockscope joins the newest
    /// `lockscope qemu` session of yours (`make qemu QEMU="lockscope qemu --"`).
    addr: Option<String>,
    /// The kernel ELF that QEMU runs [default: the joined session's; with an address, the
    /// workspace's lockscope kernel].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// gdb polls per second (with an address) [default: 10; 5 for an xv6 kernel].
    #[arg(long)]
    poll_hz: Option<f64>,
    /// A guest still held at reset (QEMU -S, not yet continued): let lockscope continue it.
    /// Without this it waits for its gdb (or `i` in the dashboard).
    #[arg(long = "continue")]
    continue_held: bool,
    /// With an address: serve your gdb here (`127.0.0.1:1234`, `:1234` or `1234`), through
    /// lockscope's proxy in front of that stub (docs/gdb.md), while lockscope watches.
    #[arg(long, value_name = "ADDR")]
    gdb_listen: Option<String>,
    #[command(flatten)]
    record: RecordArgs,
}

pub fn attach(a: AttachArgs) -> Result<u8> {
    let (options, symbols, poll) = match &a.addr {
        Some(addr) => {
            let (mut o, s) = attach_options(addr, a.kernel, a.poll_hz, &a.record)?;
            o.continue_held = a.continue_held;
            o.gdb_listen = a.gdb_listen.clone();
            let hz = o.poll_hz;
            (o, s, Some(hz))
        }
        None => {
            if a.gdb_listen.is_some() {
                anyhow::bail!("--gdb-listen needs an address to attach to: a lockscope qemu session serves the Makefile's own gdb port");
            }
            let (o, s, entry) = join_options(a.kernel, &a.record)?;
            eprintln!(
                "lockscope: joining the lockscope qemu session of {} (pid {})",
                entry.cwd.display(),
                entry.pid
            );
            (o, s, None)
        }
    };
    let session = Session::start(options, symbols)?;
    dashboard::live(session, poll)
}
