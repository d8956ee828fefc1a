//! The dashboard over a replay: the same loop as a live session's, with frames taken from a
//! [`Player`] and the timeline's requests sent to it.

use std::time::{Duration, Instant};

use ratatui::backend::Backend;
use ratatui::Terminal;

use super::player::Player;
use crate::app::{App, Effect};
use crate::event::{Event, EventSource};
use crate::run::{LoopStats, Options, TuiError};
use crate::terminal;
use crate::theme::Theme;
use crate::ui;

/// Owns the terminal until the user quits, showing what `player` publishes; restores it on
/// any exit.
pub fn run_replay(player: &Player, options: Options) -> Result<LoopStats, TuiError> {
    let mut app = App::new(options.theme.unwrap_or_else(Theme::from_env), false);
    let mut tui = terminal::enter(options.mouse).map_err(TuiError::Terminal)?;
    let events = EventSource::spawn(options.tick_rate).map_err(TuiError::Terminal)?;
    let rx = events.receiver();
    let r = run_replay_with(
        &mut tui.terminal,
        || rx.recv().ok(),
        player,
        &mut app,
        &options,
    );
    drop(events);
    drop(tui);
    r
}

/// The loop over any backend and event source (`None` ends it). Keys redraw at once; a new
/// frame from the player redraws when the last frame is at least `1 / max_fps` old. The player
/// does the work: this loop only sends requests and takes frames, so it never waits.
pub fn run_replay_with<B: Backend>(
    terminal: &mut Terminal<B>,
    mut next_event: impl FnMut() -> Option<Event>,
    player: &Player,
    app: &mut App,
    options: &Options,
) -> Result<LoopStats, TuiError> {
    let min_frame = Duration::try_from_secs_f64(1.0 / options.max_fps).unwrap_or(Duration::ZERO);
    let mut shown = player.generation();
    app.take_frame(player.frame());
    let mut stats = LoopStats::default();
    let (mut dirty, mut urgent) = (true, true);
    let mut last_draw: Option<Instant> = None;
    loop {
        if dirty && (urgent || last_draw.is_none_or(|t| t.elapsed() >= min_frame)) {
            let view = app.replay_view().cloned().expect("a replay has a frame");
            terminal
                .draw(|f| ui::render(f, app, &view))
                .map_err(|e| TuiError::Draw(e.to_string()))?;
            stats.draws += 1;
            last_draw = Some(Instant::now());
            (dirty, urgent) = (false, false);
        }
        let Some(event) = next_event() else {
            break;
        };
        match event {
            Event::Input(e) => {
                stats.inputs += 1;
                if let Some(action) = app.action_for(&e) {
                    let view = app.replay_view().cloned().expect("a replay has a frame");
                    match app.update(action, &view) {
                        Effect::Quit => break,
                        Effect::Replay(r) => {
                            if !player.send(r) {
                                app.message = Some("the replay has stopped".into());
                            }
                        }
                        Effect::Send(_) | Effect::Type(..) | Effect::None => {}
                    }
                    (dirty, urgent) = (true, true);
                }
            }
            Event::Tick => {
                stats.ticks += 1;
            }
            Event::Failed(msg) => return Err(TuiError::Input(msg)),
        }
        if player.generation() != shown {
            shown = player.generation();
            app.take_frame(player.frame());
            stats.views += 1;
            dirty = true;
        }
    }
    Ok(stats)
}
