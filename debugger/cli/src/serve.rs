//! `lockscope serve`: a stop saved in a recording, served to gdb (`target remote`) with no QEMU.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use lockscope_engine::gdbserver::proxy::parse_listen;
use lockscope_engine::gdbserver::{PostMortemServer, PostMortemStop};

use crate::recorded::{self, pick_stop};

#[derive(Args)]
pub struct ServeArgs {
    /// The recording.
    trace: PathBuf,
    /// Which stop (panic, deadlock, stall, `i`): the list is printed when it is missing or wrong.
    #[arg(long, value_name = "N")]
    stop: Option<usize>,
    /// Where gdb connects: PORT, HOST:PORT or tcp::PORT (127.0.0.1 unless a host is given;
    /// port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1234")]
    gdb_listen: String,
}

pub fn serve(a: ServeArgs) -> Result<u8> {
    let listen = parse_listen(&a.gdb_listen)?;
    // gdb symbolizes with its own copy of the kernel: none is needed here.
    let o = recorded::open_without_symbols(&a.trace)?;
    let n = pick_stop(&o, a.stop)?;
    let stops = o.rec.stops();
    let info = stops[n].info.as_ref().expect("pick_stop checked it");
    let range = stops[n].ram.clone().expect("pick_stop checked it");
    let ram = o.rec.stop_ram(n)?;
    let stop = PostMortemStop::from_stop_info(info, Box::new(ram), range)
        .context("the stop has no hart with every register saved")?;
    let reason = stop.reason.clone();
    let mut server = PostMortemServer::bind(stop, listen, None)?;
    let addr = server.local_addr();
    let kernel = o.rec.header().kernel_name.as_deref().unwrap_or("KERNEL");
    println!(
        "lockscope: serving stop {n} ({reason}) of {} on {addr}: gdb-multiarch {kernel} -ex 'target remote {addr}' (Ctrl-C ends)",
        a.trace.display()
    );
    let _ = std::io::stdout().flush();
    server.serve_forever()?;
    Ok(0)
}
