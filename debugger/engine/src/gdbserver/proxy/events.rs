//! What the proxy tells lockscope about the user's gdb: events, the current state, and the
//! intervals during which the user's gdb held the guest stopped (not lock hold or wait time).

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Stopped intervals kept; older ones only count in the running total.
const MAX_INTERVALS: usize = 4096;

/// Why the user's gdb holds the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStopReason {
    /// QEMU was started with `-S`: the guest waits for gdb's first `continue`.
    WaitingForGdb,
    /// gdb connected (connecting stops the guest, as with QEMU).
    Attached,
    /// Ctrl-C in gdb.
    Interrupted,
    /// SIGTRAP: a breakpoint, or a step (gdb steps RISC-V with temporary breakpoints).
    Trap,
    /// A watchpoint fired at this address.
    Watchpoint { addr: u64 },
    /// Another signal, in gdb's numbering.
    Signal(u8),
    /// lockscope reported a panic or a deadlock on this hart (`GdbProxy::report_stop`).
    Reported,
}

impl fmt::Display for UserStopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WaitingForGdb => write!(f, "waiting for gdb to continue"),
            Self::Attached => write!(f, "gdb attached"),
            Self::Interrupted => write!(f, "interrupted"),
            Self::Trap => write!(f, "breakpoint or step"),
            Self::Watchpoint { addr } => write!(f, "watchpoint at {addr:#x}"),
            Self::Signal(s) => write!(f, "signal {s}"),
            Self::Reported => write!(f, "reported by lockscope"),
        }
    }
}

/// The user's gdb holds the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserStop {
    /// The hart the stop names, when it names one.
    pub hart: Option<u32>,
    pub reason: UserStopReason,
    pub since: Instant,
}

impl fmt::Display for UserStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.hart {
            Some(h) => write!(f, "stopped by gdb (hart {h}, {})", self.reason),
            None => write!(f, "stopped by gdb ({})", self.reason),
        }
    }
}

/// What the proxy tells its subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyEvent {
    UserAttached {
        peer: Option<SocketAddr>,
    },
    /// The user's gdb detached or disconnected; the guest runs on.
    UserDetached,
    UserStopped {
        hart: Option<u32>,
        reason: UserStopReason,
    },
    UserResumed,
    /// A second gdb was turned away.
    UserRefused {
        peer: Option<SocketAddr>,
    },
    /// QEMU's stub went away (QEMU exited); the proxy has stopped.
    UpstreamLost {
        reason: String,
    },
}

/// The user's side, as the dashboard shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserStatus {
    pub connected: Option<Option<SocketAddr>>,
    /// Set while the user's gdb holds the guest stopped.
    pub stopped: Option<UserStop>,
}

/// An interval during which the user's gdb held the guest stopped; `end` is `None` while it
/// still does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoppedInterval {
    pub start: Instant,
    pub end: Option<Instant>,
}

#[derive(Default)]
struct State {
    subscribers: Vec<Sender<ProxyEvent>>,
    status: UserStatus,
    intervals: VecDeque<StoppedInterval>,
    closed_total: Duration,
}

/// State shared between the relay thread and the `GdbProxy` handle.
#[derive(Default)]
pub struct Shared {
    state: Mutex<State>,
    /// Memory reads answered from guest RAM, not relayed to QEMU.
    pub ram_reads: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self, tx: Sender<ProxyEvent>) {
        self.lock().subscribers.push(tx);
    }

    pub fn emit(&self, e: ProxyEvent) {
        let mut s = self.lock();
        s.subscribers.retain(|tx| tx.send(e.clone()).is_ok());
    }

    pub fn status(&self) -> UserStatus {
        self.lock().status
    }

    pub fn attached(&self, peer: Option<SocketAddr>) {
        self.lock().status.connected = Some(peer);
        self.emit(ProxyEvent::UserAttached { peer });
    }

    pub fn detached(&self) {
        self.close_interval();
        self.lock().status.connected = None;
        self.emit(ProxyEvent::UserDetached);
    }

    pub fn stopped(&self, hart: Option<u32>, reason: UserStopReason) {
        {
            let mut s = self.lock();
            let now = Instant::now();
            let since = match s.status.stopped {
                Some(old) => old.since,
                None => {
                    if s.intervals.len() == MAX_INTERVALS {
                        if let Some(old) = s.intervals.pop_front() {
                            let d = old.end.map_or(Duration::ZERO, |e| e - old.start);
                            s.closed_total += d;
                        }
                    }
                    s.intervals.push_back(StoppedInterval {
                        start: now,
                        end: None,
                    });
                    now
                }
            };
            s.status.stopped = Some(UserStop {
                hart,
                reason,
                since,
            });
        }
        self.emit(ProxyEvent::UserStopped { hart, reason });
    }

    pub fn resumed(&self) {
        if self.close_interval() {
            self.emit(ProxyEvent::UserResumed);
        }
    }

    /// Ends the open interval, if any; true if there was one.
    fn close_interval(&self) -> bool {
        let mut s = self.lock();
        if s.status.stopped.take().is_none() {
            return false;
        }
        if let Some(last) = s.intervals.back_mut() {
            last.end.get_or_insert_with(Instant::now);
        }
        true
    }

    pub fn intervals(&self) -> Vec<StoppedInterval> {
        self.lock().intervals.iter().copied().collect()
    }

    pub fn total(&self) -> Duration {
        let s = self.lock();
        let now = Instant::now();
        s.closed_total
            + s.intervals
                .iter()
                .map(|i| i.end.unwrap_or(now) - i.start)
                .sum::<Duration>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_events() {
        let shared = Shared::default();
        let (tx, rx) = std::sync::mpsc::channel();
        shared.subscribe(tx);
        shared.attached(None);
        shared.stopped(Some(2), UserStopReason::Trap);
        // A second stop inside the same hold keeps the interval.
        shared.stopped(Some(1), UserStopReason::Interrupted);
        assert_eq!(shared.intervals().len(), 1);
        assert!(shared.intervals()[0].end.is_none());
        let st = shared.status().stopped.unwrap();
        assert_eq!(st.to_string(), "stopped by gdb (hart 1, interrupted)");
        shared.resumed();
        shared.resumed();
        assert!(shared.intervals()[0].end.is_some());
        assert!(shared.status().stopped.is_none());
        let total = shared.total();
        assert_eq!(total, shared.total(), "closed intervals do not grow");
        let events: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            events,
            vec![
                ProxyEvent::UserAttached { peer: None },
                ProxyEvent::UserStopped {
                    hart: Some(2),
                    reason: UserStopReason::Trap
                },
                ProxyEvent::UserStopped {
                    hart: Some(1),
                    reason: UserStopReason::Interrupted
                },
                ProxyEvent::UserResumed,
            ]
        );
    }
}
