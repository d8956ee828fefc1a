//! Analysis of snapshots and events: statistics, deadlocks, lock order.
//!
//! The [`Analyzer`] is fed [`Snapshot`]s ([`Analyzer::observe`]) and batches of [`LockEvent`]s
//! ([`Analyzer::ingest`], with [`Analyzer::note_lost`] for gaps), in any mix, and answers with
//! plain serializable views. It knows neither where the data came from nor how to symbolize: it
//! keeps pcs. It works without events (counters, holders and per-hart state only): then the
//! event-only parts (histograms, minimums, sites, lock order) are empty.
//!
//! Memory is bounded by [`AnalysisConfig`] whatever the feed: locks, harts, sites per lock,
//! order edges and history are capped, and what did not fit is counted in [`IngestStats`].
//!
//! [`Analyzer::apply`] takes the engine's [`Feed`] items, so a live session, a recorded trace
//! ([`Analyzer::replay`]) and a test fixture go through the same path.

mod analyzer;
mod classes;
mod config;
mod events;
mod hang;
mod hang_parts;
mod held;
mod hist;
mod lockdep;
mod mode_state;
mod modes;
mod order;
mod order_report;
mod rows;
mod scause;
mod series;
mod suspect;
mod verdict;
mod views;
mod watch;

pub use analyzer::{Analyzer, Consistency};
pub use classes::lock_class;
pub use config::{AnalysisConfig, ConfigError};
pub use events::{IngestStats, Site, LOCK_ID_LIMIT};
pub use hang_parts::{HangKind, HangReport, RwDeadlock, RwWaiter, SleepChain, SleepLink};
pub use hist::{HistBucket, HistView, Log2Hist};
pub use lockdep::NestOrder;
pub use mode_state::SleepHolding;
pub use order::EdgeSite;
pub use scause::{decode_scause, Scause};
pub use series::Rates;
pub use verdict::{
    chain_line, inversion_words, rw_sentence, sleep_line, stall_line, verdict_sentence, Check,
    Severity, Verdict, VerdictNames, CHECK_SCHEMA,
};
pub use views::*;
pub use watch::{DeadlockCycle, StallReason, StallReport, StalledHart, WaitEdge};
