//! Replaying a recording on a timeline: a [`Player`] builds the timeline on its own thread and
//! publishes [`Frame`]s (the view at the cursor, the marks, the selected range); the dashboard
//! sends it [`Request`]s and draws what it publishes. [`Replayer`] is the same without the
//! thread, for tests and benchmarks.

mod player;
mod replayer;
mod run;

pub use player::Player;
pub use replayer::{mark_name, At, Frame, Range, Replayer, Request, TimelineInfo, UPCOMING};
pub use run::{run_replay, run_replay_with};
