//! lockscope's terminal dashboard.
//!
//! [`run`] takes the terminal and shows what a [`SessionHandle`] publishes until the user
//! quits. Rendering ([`render`]) is a pure function of an [`App`] (the UI state) and a
//! [`View`] (the engine's symbolized snapshot), so tests and the benchmark draw into
//! ratatui's `TestBackend` with no terminal and no target.
//!
//! Layout: [`app`] holds state and turns input into [`Action`]s, [`event`] reads the terminal on
//! its own thread, [`replay`] replays a recording on a timeline (a player thread), `ui` draws, [`theme`] honours `NO_COLOR`, [`terminal`] restores the terminal
//! on any exit, [`fixture`] reads and writes views as JSON, [`bench`] measures frames.
//!
//! [`SessionHandle`]: lockscope_engine::session::SessionHandle
//! [`View`]: lockscope_engine::monitor::View

pub mod app;
pub mod bench;
pub mod event;
pub mod fixture;
pub mod format;
pub mod replay;
mod run;
pub mod terminal;
pub mod theme;
mod ui;

pub use app::{Action, App, Effect, ReplayUi, SortKey, Tab, TimelineAction};
pub use run::{run, run_with, LoopStats, Options, TuiError};
pub use theme::Theme;
pub use ui::{render, MIN_HEIGHT, MIN_WIDTH};
