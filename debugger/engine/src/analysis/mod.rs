//! Analysis of snapshots and events: statistics, deadlocks, lock order.
