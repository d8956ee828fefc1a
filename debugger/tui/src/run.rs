//! The UI loop: input and ticks in, actions through the [`App`], frames out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lockscope_engine::{Command, SessionHandle};
use ratatui::backend::Backend;
use ratatui::Terminal;
use thiserror::Error;

use crate::app::{App, Effect};
use crate::event::{Event, EventSource};
use crate::terminal;
use crate::theme::Theme;
use crate::ui;

/// How the UI runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often the loop looks for a new view (a cheap atomic load) when no key arrives.
    pub tick_rate: Duration,
    /// Redraws per second at most for new data (0, negative or infinite: no limit); keys
    /// redraw at once.
    pub max_fps: f64,
    /// Capture the mouse (clicks and wheel). Off lets the terminal select text.
    pub mouse: bool,
    /// `None`: colour unless `NO_COLOR` is set.
    pub theme: Option<Theme>,
    /// The session's sampling rate, for the header.
    pub poll_hz: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tick_rate: Duration::from_millis(50),
            max_fps: 20.0,
            mouse: true,
            theme: None,
            poll_hz: None,
        }
    }
}

/// Why the UI stopped other than by the user quitting.
#[derive(Debug, Error)]
pub enum TuiError {
    #[error("cannot use the terminal: {0}; the dashboard needs an interactive terminal (for scripts, use `lockscope check`)")]
    Terminal(#[source] std::io::Error),
    #[error("drawing to the terminal failed: {0}")]
    Draw(String),
    #[error("reading the terminal failed: {0}")]
    Input(String),
}

/// What a run of the loop did; tests use it to check the redraw policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    pub draws: u64,
    pub ticks: u64,
    pub inputs: u64,
    /// New views taken from the session.
    pub views: u64,
}

/// Owns the terminal until the user quits, then restores it and sends [`Command::Quit`] to the
/// session. The terminal is also restored on error and on panic.
pub fn run(handle: Arc<SessionHandle>, options: Options) -> Result<LoopStats, TuiError> {
    let mut app = App::new(
        options.theme.unwrap_or_else(Theme::from_env),
        handle.controllable(),
    );
    app.poll_hz = options.poll_hz;
    app.console_input = handle.accepts_console();
    let result = (|| {
        let mut tui = terminal::enter(options.mouse).map_err(TuiError::Terminal)?;
        let events = EventSource::spawn(options.tick_rate).map_err(TuiError::Terminal)?;
        let rx = events.receiver();
        let r = run_with(
            &mut tui.terminal,
            || rx.recv().ok(),
            &handle,
            &mut app,
            &options,
        );
        // The input thread stops before the terminal leaves raw mode.
        drop(events);
        drop(tui);
        r
    })();
    handle.send(Command::Quit);
    result
}

/// The loop itself, over any backend and any source of events (`None` ends it). Redraws when a
/// key arrived (at once), or when the session published a new view and the last frame is at
/// least `1 / max_fps` old; otherwise it sleeps waiting for the next event. A paused display
/// ignores new views.
pub fn run_with<B: Backend>(
    terminal: &mut Terminal<B>,
    mut next_event: impl FnMut() -> Option<Event>,
    handle: &SessionHandle,
    app: &mut App,
    options: &Options,
) -> Result<LoopStats, TuiError> {
    let min_frame = Duration::try_from_secs_f64(1.0 / options.max_fps).unwrap_or(Duration::ZERO);
    let mut live = handle.view();
    app.observe(&live);
    let mut stats = LoopStats::default();
    let (mut dirty, mut urgent) = (true, true);
    let mut last_draw: Option<Instant> = None;
    loop {
        if dirty && (urgent || last_draw.is_none_or(|t| t.elapsed() >= min_frame)) {
            let view = app.shown(&live).clone();
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
                    match app.update(action, &live) {
                        Effect::Quit => break,
                        Effect::Send(c) => {
                            if !handle.send(c) {
                                app.message = Some("the session no longer listens".into());
                            }
                        }
                        Effect::Type(bytes, n) => {
                            if !handle.send_console(&bytes[..n as usize]) {
                                app.message = Some("the guest console takes no input".into());
                            }
                        }
                        Effect::None | Effect::Replay(_) => {}
                    }
                    (dirty, urgent) = (true, true);
                }
            }
            Event::Tick => {
                stats.ticks += 1;
                if handle.generation() != live.generation {
                    live = handle.view();
                    stats.views += 1;
                    if !app.paused() {
                        app.observe(&live);
                        dirty = true;
                    }
                }
            }
            Event::Failed(msg) => return Err(TuiError::Input(msg)),
        }
    }
    Ok(stats)
}
