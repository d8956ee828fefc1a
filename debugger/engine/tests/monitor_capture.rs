//! When a live session stops the guest to capture every hart: the monitor decides, from feeds
//! alone (no threads, no target).

#[path = "fixtures/analysis/support.rs"]
mod support;

use lockscope_engine::feed::{Feed, StopInfo, StopReason};
use lockscope_engine::model::{PanicSnapshot, Snapshot};
use lockscope_engine::monitor::{Monitor, MonitorConfig, SourceKind};
use support::*;

fn monitor(capture_faults: bool) -> Monitor {
    let config = MonitorConfig {
        capture_faults,
        ..MonitorConfig::default()
    };
    Monitor::new(config, None, SourceKind::SharedRam).unwrap()
}

fn snap(t: u64) -> Snap {
    Snap::new(t, &[("kmem0", "kmem"), ("kmem1", "kmem")], 2)
}

fn panicked(mut s: Snapshot) -> Snapshot {
    s.panic = Some(PanicSnapshot {
        hart: 1,
        message: "bget: no buffers".into(),
        trap: None,
        pc: 0x8000_1000,
        fp: 0,
        frames: vec![],
        time_ns: Some(s.time_ns),
    });
    s
}

/// Two harts, each holding one lock and spinning on the other's since `since`.
fn deadlocked(t: u64, since: u64) -> Snapshot {
    snap(t)
        .holds(0, 0, 0x100, since)
        .spins(0, 1, 0x104, since)
        .holds(1, 1, 0x200, since)
        .spins(1, 0, 0x204, since)
        .build()
}

fn feed(m: &mut Monitor, f: Feed) -> Option<StopReason> {
    m.apply(&f);
    m.capture_wanted()
}

fn snapshot(m: &mut Monitor, s: Snapshot) -> Option<StopReason> {
    feed(m, Feed::Snapshot(Box::new(s)))
}

fn stop(reason: StopReason) -> Feed {
    Feed::Stop(StopInfo {
        reason,
        hart: None,
        harts: vec![],
    })
}

#[test]
fn a_recorded_panic_is_captured_once() {
    let mut m = monitor(true);
    assert_eq!(snapshot(&mut m, snap(0).build()), None);
    assert_eq!(m.capture_focus(), None);
    assert_eq!(
        snapshot(&mut m, panicked(snap(10 * MS).build())),
        Some(StopReason::Panic)
    );
    // The capture names the panicking hart (a post-mortem gdb selects it).
    assert_eq!(m.capture_focus(), Some(1));
    // The capture is on its way: more snapshots with the panic ask for nothing more.
    assert_eq!(snapshot(&mut m, panicked(snap(20 * MS).build())), None);
    assert_eq!(feed(&mut m, stop(StopReason::Panic)), None);
    assert_eq!(feed(&mut m, Feed::Resumed), None);
    assert_eq!(snapshot(&mut m, panicked(snap(30 * MS).build())), None);
}

#[test]
fn a_panic_first_seen_stopped_is_not_captured_later() {
    let mut m = monitor(true);
    assert_eq!(snapshot(&mut m, snap(0).build()), None);
    assert_eq!(feed(&mut m, stop(StopReason::Interrupted)), None);
    assert_eq!(snapshot(&mut m, panicked(snap(10 * MS).build())), None);
    assert_eq!(feed(&mut m, Feed::Resumed), None);
    assert_eq!(snapshot(&mut m, panicked(snap(20 * MS).build())), None);
}

#[test]
fn a_deadlock_is_captured_once_confirmed_and_only_once() {
    let mut m = monitor(true);
    // Seen once in a live snapshot: only suspected (it may be a torn read).
    assert_eq!(snapshot(&mut m, deadlocked(1000 * MS, 900 * MS)), None);
    assert_eq!(snapshot(&mut m, deadlocked(1100 * MS, 900 * MS)), None);
    // Unchanged 200 ms later: confirmed, and the guest is to be stopped.
    assert_eq!(
        snapshot(&mut m, deadlocked(1250 * MS, 900 * MS)),
        Some(StopReason::Interrupted)
    );
    // About a hart of the cycle.
    assert!(matches!(m.capture_focus(), Some(0 | 1)));
    assert_eq!(snapshot(&mut m, deadlocked(1300 * MS, 900 * MS)), None);
}

#[test]
fn faults_are_not_captured_when_the_session_does_not_want_them() {
    let mut m = monitor(false);
    for t in [1000, 1100, 1250, 1300] {
        assert_eq!(snapshot(&mut m, deadlocked(t * MS, 900 * MS)), None);
    }
    // A panic is always captured.
    assert_eq!(
        snapshot(&mut m, panicked(deadlocked(1400 * MS, 900 * MS))),
        Some(StopReason::Panic)
    );
}

#[test]
fn a_stopped_target_is_not_stopped_again_but_a_fault_after_resuming_is() {
    let mut m = monitor(true);
    assert_eq!(snapshot(&mut m, snap(0).build()), None);
    // The user stopped it: a stopped snapshot confirms the deadlock at once, but the guest is
    // already stopped.
    assert_eq!(feed(&mut m, stop(StopReason::Interrupted)), None);
    assert_eq!(snapshot(&mut m, deadlocked(1000 * MS, 900 * MS)), None);
    assert_eq!(feed(&mut m, Feed::Resumed), None);
    // Running again, the cycle must hold for the confirmation time in live snapshots.
    assert_eq!(snapshot(&mut m, deadlocked(1050 * MS, 900 * MS)), None);
    assert_eq!(
        snapshot(&mut m, deadlocked(1250 * MS, 900 * MS)),
        Some(StopReason::Interrupted)
    );
}

#[test]
fn a_stall_is_captured() {
    let mut m = monitor(true);
    // Hart 1's heartbeat keeps its value; hart 0's moves.
    for (i, t) in [0, 500, 1000, 1500].into_iter().enumerate() {
        let s = snap(t * MS).heartbeat(0, i as u64).heartbeat(1, 7).build();
        assert_eq!(snapshot(&mut m, s), None, "at {t} ms");
    }
    let s = snap(2100 * MS).heartbeat(0, 9).heartbeat(1, 7).build();
    assert_eq!(snapshot(&mut m, s), Some(StopReason::Interrupted));
}
