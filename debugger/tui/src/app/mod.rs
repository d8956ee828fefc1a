//! The UI's state and how actions change it. Input becomes [`Action`]s (see
//! [`App::action_for`]), actions change the [`App`] (see [`App::update`]), and rendering only
//! reads the App and a [`View`](lockscope_engine::monitor::View). Nothing here touches the
//! target.
//!
//! - `state`: the [`App`] and its parts; `locks`, `events`: the two filterable lists, with
//!   `cache` for rows rebuilt only on change and `lookup` for names.
//! - `input`: keys and the mouse to [`Action`]s; `update`: what each action does.
//! - `replay_ui`: a replay's state; `timeline`: its keys (the timeline bar, steps, marks,
//!   ranges).

mod cache;
mod events;
mod input;
mod locks;
mod lookup;
mod replay_ui;
mod state;
mod timeline;
mod update;

pub use events::EventsState;
pub use input::{Action, Effect};
pub use locks::{LocksState, SortKey};
pub use replay_ui::{ReplayUi, TimelineAction};
pub use state::{App, Input, Scroll, Tab};

pub(crate) use locks::LocksRow;
pub(crate) use lookup::lock_name;
