//! The dashboard over a live session (run, attach) or a fixed view (replay).

use anyhow::Result;
use lockscope_engine::recording::TimelineOptions;
use lockscope_engine::{Ending, Session, TargetState};
use lockscope_tui::replay::{At, Player};

use crate::recorded::Opened;
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

/// The dashboard on a recording's timeline, the cursor at target time `at` (else its end).
/// The timeline is built on the replay's own thread while the dashboard shows its progress.
pub fn replay(o: Opened, at: Option<u64>) -> Result<u8> {
    let at = at.map_or(At::End, At::Time);
    let player = Player::open(o.rec, o.symbols, at, TimelineOptions::default())?;
    lockscope_tui::replay::run_replay(&player, lockscope_tui::Options::default())?;
    Ok(0)
}
