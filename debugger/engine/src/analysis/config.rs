//! Tuning of the analysis, checked before use.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::events::LOCK_ID_LIMIT;

/// Tuning of the analysis. Times are target time in nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalysisConfig {
    /// Window of the rates.
    pub rate_window_ns: u64,
    /// Length of one history (sparkline) interval.
    pub history_interval_ns: u64,
    /// History intervals kept per lock.
    pub history_len: usize,
    /// A deadlock seen in live snapshots is confirmed once seen unchanged this long.
    pub deadlock_confirm_ns: u64,
    /// A running hart whose heartbeat keeps its value this long (or that spins this long) has
    /// stalled.
    pub stall_ns: u64,
    /// Contention sites shown per lock.
    pub top_sites: usize,
    /// Contention sites tracked per lock.
    pub max_sites_per_lock: usize,
    /// Distinct locks tracked from events.
    pub max_locks: usize,
    /// Harts tracked; events and state of harts with higher ids are dropped.
    pub max_harts: usize,
    /// Edges kept in the lock-order graph.
    pub max_order_edges: usize,
    /// Longest lock-order cycle searched for.
    pub max_order_cycle_len: usize,
    /// Code ranges (`start..end`) whose lock acquisitions follow the kernel's own documented
    /// protocol: they add no lock-order edge and no spinlock-across-sleep finding. For xv6:
    /// `sleep` and `wakeup` (a process's lock taken under the condition's lock, by design) and
    /// `iput` (which takes the inode's sleeplock under `itable.lock` only when it cannot block,
    /// as its comment says). Empty for our kernel.
    pub protocol_sites: Vec<(u64, u64)>,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            rate_window_ns: 5_000_000_000,
            history_interval_ns: 500_000_000,
            history_len: 60,
            deadlock_confirm_ns: 200_000_000,
            stall_ns: 2_000_000_000,
            top_sites: 5,
            max_sites_per_lock: 32,
            max_locks: 4096,
            max_harts: 64,
            max_order_edges: 65_536,
            max_order_cycle_len: 4,
            protocol_sites: Vec::new(),
        }
    }
}

/// A configuration the analysis cannot run with.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("analysis setting {name} = {value} is out of range: use {allowed}")]
    OutOfRange {
        name: &'static str,
        value: u64,
        allowed: &'static str,
    },
}

impl AnalysisConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |name, value: u64, lo: u64, hi: u64, allowed| {
            if value < lo || value > hi {
                Err(ConfigError::OutOfRange {
                    name,
                    value,
                    allowed,
                })
            } else {
                Ok(())
            }
        };
        check(
            "history_interval_ns",
            self.history_interval_ns,
            1_000,
            u64::MAX,
            "at least 1000 (1 us)",
        )?;
        check(
            "rate_window_ns",
            self.rate_window_ns,
            self.history_interval_ns,
            self.history_interval_ns.saturating_mul(4096),
            "between history_interval_ns and 4096 of them",
        )?;
        check("history_len", self.history_len as u64, 1, 4096, "1..=4096")?;
        check("top_sites", self.top_sites as u64, 0, 4096, "0..=4096")?;
        check(
            "max_sites_per_lock",
            self.max_sites_per_lock as u64,
            1,
            4096,
            "1..=4096",
        )?;
        check(
            "max_locks",
            self.max_locks as u64,
            1,
            LOCK_ID_LIMIT as u64,
            "1..=65536",
        )?;
        check("max_harts", self.max_harts as u64, 1, 1024, "1..=1024")?;
        check(
            "max_order_edges",
            self.max_order_edges as u64,
            1,
            1 << 22,
            "1..=4194304",
        )?;
        check(
            "max_order_cycle_len",
            self.max_order_cycle_len as u64,
            2,
            8,
            "2..=8",
        )?;
        Ok(())
    }
}
