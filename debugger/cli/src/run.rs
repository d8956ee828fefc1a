//! `lockscope run`: boot the kernel in QEMU and open the live dashboard.

use anyhow::Result;
use clap::Args;
use lockscope_engine::Session;

use crate::dashboard;
use crate::setup::{boot_options, xv6_options, BootArgs};
use crate::xv6::Xv6Args;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    boot: BootArgs,
    #[command(flatten)]
    xv6: Xv6Args,
}

pub fn run(a: RunArgs) -> Result<u8> {
    let (options, symbols) = match &a.xv6.xv6 {
        Some(tree) => xv6_options(&a.boot, &a.xv6, tree)?,
        None => boot_options(&a.boot)?,
    };
    let poll = (!options.shared_ram).then_some(options.poll_hz);
    let session = Session::start(options, symbols)?;
    dashboard::live(session, poll)
}
