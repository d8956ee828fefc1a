//! The dashboard over a live session (run, attach) or a fixed view (replay).

use anyhow::Result;
use lockscope_engine::{Ending, Session, SessionHandle, TargetState, View};

use crate::setup::EXIT_USAGE;

/// Runs the dashboard on a live session, then ends the session and says how it went.
pub fn live(session: Session, poll_hz: Option<f64>) -> Result<u8> {
    let options = lockscope_tui::Options {
        poll_hz,
        ..lockscope_tui::Options::default()
    };
    let ui = lockscope_tui::run(session.handle(), options);
    let finished = session.finish();
    ui?;
    let view = finished.monitor.view();
    if let Some(log) = finished.console_log {
        eprintln!("lockscope: guest console log: {}", log.display());
    }
    match &view.state {
        TargetState::Ended {
            ending: Ending::Lost { reason },
        } => {
            eprintln!("lockscope: {reason}");
            Ok(EXIT_USAGE)
        }
        _ => Ok(0),
    }
}

/// The dashboard on a fixed view (a replayed trace).
pub fn fixed(view: View) -> Result<u8> {
    let handle = SessionHandle::fixed(view);
    lockscope_tui::run(handle, lockscope_tui::Options::default())?;
    Ok(0)
}
