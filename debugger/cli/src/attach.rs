//! `lockscope attach`: the live dashboard on a QEMU that already runs with `-gdb tcp::PORT`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lockscope_engine::Session;

use crate::dashboard;
use crate::record::RecordArgs;
use crate::setup::attach_options;

#[derive(Args)]
pub struct AttachArgs {
    /// The gdb stub, HOST:PORT (QEMU's -gdb tcp::PORT).
    addr: String,
    /// The kernel ELF that QEMU runs.
    #[arg(long)]
    kernel: PathBuf,
    /// gdb polls per second.
    #[arg(long, default_value_t = 10.0)]
    poll_hz: f64,
    #[command(flatten)]
    record: RecordArgs,
}

pub fn attach(a: AttachArgs) -> Result<u8> {
    let (options, symbols) = attach_options(&a.addr, Some(a.kernel), a.poll_hz, &a.record)?;
    let session = Session::start(options, symbols)?;
    dashboard::live(session, Some(a.poll_hz))
}
