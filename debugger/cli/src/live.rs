//! `lockscope run` and `lockscope attach`: the live dashboard. (Wired to lockscope-tui next.)

use std::path::PathBuf;

use anyhow::Result;
use lockscope_engine::monitor::View;

use crate::BootArgs;

pub fn run(_boot: BootArgs) -> Result<u8> {
    anyhow::bail!("the dashboard is not wired yet")
}

pub fn attach(_addr: String, _kernel: PathBuf, _poll_hz: f64, _record: Option<PathBuf>) -> Result<u8> {
    anyhow::bail!("the dashboard is not wired yet")
}

pub fn show_fixed(_view: View) -> Result<u8> {
    anyhow::bail!("the dashboard is not wired yet")
}
