//! `--record FILE [--keep 2m|500MB] [--with-kernel]`: what every command that watches a guest
//! (run, check, attach, qemu) records, as one set of options to flatten into its arguments.

use std::path::PathBuf;

use clap::Args;
use lockscope_engine::recording::Keep;
use lockscope_engine::session::RecordOptions;

#[derive(Args, Clone, Debug, Default)]
pub struct RecordArgs {
    /// Record the session into FILE (open it with `lockscope replay FILE`): every lock event and
    /// snapshot, and at each stop (panic, deadlock, stall, `i`) every hart's registers and the
    /// guest RAM.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// With --record: keep only the last part of the session, a duration (90s, 2m, 1h) or a
    /// size (500MB, 2GB), to leave recording on while hunting a rare hang.
    #[arg(long, value_name = "DURATION|SIZE", requires = "record", value_parser = parse_keep)]
    pub keep: Option<Keep>,
    /// With --record: put the kernel ELF (compressed) inside the recording, so that it opens
    /// anywhere without the kernel's tree (a TA can open a student's recording).
    #[arg(long, requires = "record")]
    pub with_kernel: bool,
}

fn parse_keep(s: &str) -> Result<Keep, String> {
    s.parse()
}

impl RecordArgs {
    /// The session's recording options, when recording.
    pub fn options(&self) -> Option<RecordOptions> {
        let path = self.record.clone()?;
        Some(RecordOptions {
            path,
            keep: self.keep,
            with_kernel: self.with_kernel,
        })
    }
}
