//! `lockscope run`: boot the kernel in QEMU and open the live dashboard.

use anyhow::Result;
use clap::Args;
use lockscope_engine::Session;

use crate::dashboard;
use crate::setup::{boot_options, BootArgs};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    boot: BootArgs,
}

pub fn run(a: RunArgs) -> Result<u8> {
    let (options, symbols) = boot_options(&a.boot)?;
    let poll = (!options.shared_ram).then_some(options.poll_hz);
    let session = Session::start(options, symbols)?;
    dashboard::live(session, poll)
}
