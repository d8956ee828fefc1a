//! The engine's top: turns a [`Feed`](crate::feed::Feed) stream into [`View`]s, the
//! symbolized, UI-ready picture of a target that the TUI renders and `lockscope check` prints.
//!
//! A [`Monitor`] owns the analysis, the symbols, the console log and the session state. It is fed
//! on one thread and hands out immutable views; nothing here touches the target.
//!
//! - `feeds`: the [`Monitor`] and what each feed does to it.
//! - `capture`: when a live session should stop the guest and capture every hart.
//! - `symbolize`: building a [`View`]; `view`: the view's types.
//! - `lab`: the lab's tests on the console and the counters over each one's window.

mod capture;
mod feeds;
mod lab;
mod symbolize;
mod view;

pub use feeds::{Monitor, MonitorConfig};
pub use lab::{may_bound_a_test, LabLock, LabResult, LabTest};
pub use view::{
    short_function, AsmLine, FrameLine, HartBacktrace, KernelDetail, LockDetail, PanicDetail,
    PauseStats, Place, SourceKind, SourceLines, TargetState, View,
};
