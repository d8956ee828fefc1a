//! `lockscope run`, `lockscope attach` and the dashboard of `lockscope replay`.

use std::path::PathBuf;

use anyhow::Result;
use lockscope_engine::feed::Ending;
use lockscope_engine::monitor::{TargetState, View};
use lockscope_engine::session::{Session, SessionHandle, SessionOptions, Target};

use crate::check::{boot_options, load_symbols};
use crate::BootArgs;

/// Runs the dashboard on a live session, then ends the session and says how it went.
fn dashboard(session: Session, poll_hz: Option<f64>) -> Result<u8> {
    let options = lockscope_tui::Options {
        poll_hz,
        ..lockscope_tui::Options::default()
    };
    let ui = lockscope_tui::run(session.handle(), options);
    let console_log = session.console_log.clone();
    let monitor = session.finish();
    ui?;
    let view = monitor.view();
    if let Some(log) = console_log {
        eprintln!("lockscope: guest console log: {}", log.display());
    }
    match &view.state {
        TargetState::Ended {
            ending: Ending::Lost { reason },
        } => {
            eprintln!("lockscope: {reason}");
            Ok(crate::EXIT_USAGE)
        }
        _ => Ok(0),
    }
}

pub fn run(boot: BootArgs) -> Result<u8> {
    let (options, symbols) = boot_options(&boot)?;
    let poll = (!options.shared_ram).then_some(options.poll_hz);
    let session = Session::start(options, symbols)?;
    dashboard(session, poll)
}

pub fn attach(addr: String, kernel: PathBuf, poll_hz: f64, record: Option<PathBuf>) -> Result<u8> {
    let symbols = load_symbols(&kernel)?;
    let mut options = SessionOptions::new(Target::Attach(addr));
    options.poll_hz = poll_hz;
    options.record = record;
    let session = Session::start(options, symbols)?;
    dashboard(session, Some(poll_hz))
}

/// The dashboard on a fixed view (a replayed trace).
pub fn show_fixed(view: View) -> Result<u8> {
    let handle = SessionHandle::fixed(view);
    lockscope_tui::run(handle, lockscope_tui::Options::default())?;
    Ok(0)
}
