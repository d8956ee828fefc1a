//! A replay's UI state ([`ReplayUi`]) and what its keys ask ([`TimelineAction`]), apart from
//! how they are handled (`timeline`), so that the App's state and input need not import that.

use std::sync::Arc;

use lockscope_engine::recording::{Direction, MarkKind};

use crate::replay::{mark_name, Frame};

/// What the timeline keys do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineAction {
    PlayPause,
    /// One event; of the hart selected in the Harts view when `hart`.
    StepEvent {
        hart: bool,
        dir: Direction,
    },
    StepSnapshot(Direction),
    /// The next (previous) mark of the chosen kind.
    StepMark(Direction),
    /// `m`: the next mark kind to jump to.
    CycleMarkKind,
    /// `v`: start a range at the cursor, or end it.
    Range,
    ClearRange,
    /// `g`: type a time to go to.
    GoTo,
    Faster,
    Slower,
    /// The mouse on the timeline bar, at this column.
    Press(u16),
    Drag(u16),
    Release(u16),
}

/// The replay's UI state.
#[derive(Debug)]
pub struct ReplayUi {
    /// The newest frame from the replay.
    pub frame: Arc<Frame>,
    /// What `{` and `}` jump to (`None`: any mark).
    pub mark_kind: Option<MarkKind>,
    /// The time typed after `g`.
    pub goto: String,
    /// A drag on the bar: the column it started at and where it is now.
    pub drag: Option<(u16, u16)>,
    pub(super) seen_message: u64,
}

impl ReplayUi {
    pub fn new(frame: Arc<Frame>) -> Self {
        ReplayUi {
            frame,
            mark_kind: None,
            goto: String::new(),
            drag: None,
            seen_message: 0,
        }
    }

    /// The mark kind chosen, in words.
    pub fn mark_kind_name(&self) -> &'static str {
        self.mark_kind.map_or("any mark", mark_name)
    }
}
