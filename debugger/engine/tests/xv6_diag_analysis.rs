//! The hang analysis and the sample stops of a kernel read without events (xv6), from feeds
//! alone: what live snapshots make suspicious, how two stops confirm a deadlock (and one does
//! not, nor two where the lock moved), a lock told from its climbing `nts`, a sleeplock cycle,
//! and the monitor's stop / resume / stop-again sequence.

#[path = "fixtures/analysis/support.rs"]
mod support;

use lockscope_engine::analysis::{Analyzer, Consistency, HangKind, Verdict};
use lockscope_engine::feed::{Feed, StopInfo, StopReason};
use lockscope_engine::model::{
    Diagnosis, HartDiagnosis, HartState, HeldLock, LabCounts, LockEvidence, LockId, ProcRef,
    ProcessSnapshot, SleepOn, SleeperDiagnosis, Snapshot,
};
use lockscope_engine::monitor::{Monitor, MonitorConfig, SourceKind, SAMPLE_APART_NS};
use support::*;

/// Two bucket locks, each held by one hart, with the lab's counters.
fn locks(t: u64, n: [i64; 2], nts: [i64; 2]) -> Snapshot {
    let mut s = Snap::new(t, &[("bcache.bucket", "b"), ("bcache.bucket", "b")], 2).build();
    for (i, l) in s.locks.iter_mut().enumerate() {
        l.locked = Some(true);
        l.holder = Some(i as u32);
        l.path = Some(format!("bcache.bucket[{i}].lock"));
        l.lab = Some(LabCounts {
            n: n[i],
            nts: nts[i],
        });
    }
    // xv6 has no heartbeat.
    for h in &mut s.harts {
        h.heartbeat = None;
    }
    s
}

fn hart(h: u32, state: HartState, held: &[LockId]) -> HartDiagnosis {
    HartDiagnosis {
        hart: h,
        pc: 0x8000_0100 + u64::from(h),
        privilege: Some(1),
        interrupted_pc: None,
        frames: vec![],
        state,
        held: held
            .iter()
            .map(|&lock| HeldLock {
                lock,
                site: Some(0x8000_0200 + u64::from(lock)),
            })
            .collect(),
        process: Some(ProcRef {
            slot: h,
            pid: i64::from(h) + 3,
            name: "bcachetest".into(),
        }),
        last_trap: None,
        regs_digest: u64::from(h),
    }
}

fn spinning(lock: Option<LockId>) -> HartState {
    HartState::Acquiring {
        lock,
        evidence: lock.map(|_| LockEvidence::Variable {
            name: "lk".into(),
            function: "acquire".into(),
        }),
        site: Some(0x8000_0300),
    }
}

/// A stop's snapshot: hart 0 holds lock 0 and spins on lock 1, hart 1 the other way round.
fn abba(t: u64, n: [i64; 2], nts: [i64; 2], told: bool) -> Snapshot {
    let mut s = locks(t, n, nts);
    s.diagnosis = Some(Diagnosis {
        time_ns: t,
        harts: vec![
            hart(0, spinning(told.then_some(1)), &[0]),
            hart(1, spinning(Some(0)), &[1]),
        ],
        ..Default::default()
    });
    s
}

fn stopped(a: &mut Analyzer, s: &Snapshot) {
    a.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Sample,
        hart: None,
        harts: vec![],
    }));
    a.observe(s, Consistency::Stopped);
    a.apply(&Feed::Resumed);
}

#[test]
fn two_stops_apart_confirm_a_deadlock_one_does_not() {
    let mut a = Analyzer::default();
    stopped(&mut a, &abba(S, [10, 20], [5, 5], true));
    assert_eq!(
        a.check().verdict,
        Verdict::Ok,
        "one stop is only a suspicion"
    );
    assert!(a.hang().is_none_or(|h| !h.confirmed));
    // Too soon: not compared.
    let mut b = Analyzer::default();
    stopped(&mut b, &abba(S, [10, 20], [5, 5], true));
    b.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Sample,
        hart: None,
        harts: vec![],
    }));
    b.observe(
        &abba(S + 50 * MS, [10, 20], [9, 9], true),
        Consistency::Stopped,
    );
    assert_ne!(b.check().verdict, Verdict::Deadlock);

    a.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Sample,
        hart: None,
        harts: vec![],
    }));
    a.observe(
        &abba(S + 300 * MS, [10, 20], [900, 700], true),
        Consistency::Stopped,
    );
    let c = a.check();
    assert_eq!(c.verdict, Verdict::Deadlock, "{}", c.summary);
    let h = a.hang().unwrap();
    assert!(h.confirmed);
    assert_eq!(h.kind, Some(HangKind::Deadlock));
    let cycle = &c.deadlocks[0];
    assert_eq!(cycle.edges.len(), 2);
    assert_eq!(
        cycle.edges[0].lock_name, "bcache.bucket[1].lock",
        "named by path"
    );
    assert_eq!(
        cycle.edges[0].holder_pc,
        Some(0x8000_0201),
        "the holder's acquire site"
    );
    assert_eq!(cycle.edges[0].waiting_for_ns, 300 * MS);
    assert!(
        c.summary
            .starts_with("deadlock: hart0 holds bcache.bucket[0].lock"),
        "{}",
        c.summary
    );
}

#[test]
fn a_lock_acquired_between_the_stops_is_no_deadlock() {
    let mut a = Analyzer::default();
    stopped(&mut a, &abba(S, [10, 20], [5, 5], true));
    a.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Sample,
        hart: None,
        harts: vec![],
    }));
    // Lock 1 was acquired in between (n moved): contention, not a deadlock.
    a.observe(
        &abba(S + 300 * MS, [10, 21], [9, 9], true),
        Consistency::Stopped,
    );
    assert_ne!(a.check().verdict, Verdict::Deadlock);
}

#[test]
fn a_lock_no_location_told_is_the_one_whose_nts_climbed() {
    let mut a = Analyzer::default();
    stopped(&mut a, &abba(S, [10, 20], [5, 5], false));
    a.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Sample,
        hart: None,
        harts: vec![],
    }));
    // Only lock 1's nts climbed (hart 0 spins on it); lock 0's did not move... but hart 1
    // spins on lock 0 too: give lock 0 no climb so that exactly one climbing lock is left.
    a.observe(
        &abba(S + 300 * MS, [10, 20], [5, 800], false),
        Consistency::Stopped,
    );
    let h = a.hang().unwrap();
    let h0 = h.diagnosis.harts.iter().find(|x| x.hart == 0).unwrap();
    assert_eq!(
        h0.state,
        HartState::Acquiring {
            lock: Some(1),
            evidence: Some(LockEvidence::CounterClimb),
            site: Some(0x8000_0300)
        }
    );
    assert_eq!(a.check().verdict, Verdict::Deadlock);
}

#[test]
fn a_hart_spinning_on_a_lock_nobody_holds_is_a_stall() {
    // Lock 0 is locked but its cpu says nobody holds it (released wrongly, or never
    // initialised): hart 0 spins on it at both stops.
    let stop = |t: u64| {
        let mut s = locks(t, [10, 20], [5, 5]);
        s.locks[0].holder = None;
        s.diagnosis = Some(Diagnosis {
            time_ns: t,
            harts: vec![
                hart(0, spinning(Some(0)), &[]),
                hart(1, HartState::Running, &[1]),
            ],
            ..Default::default()
        });
        s
    };
    let mut a = Analyzer::default();
    stopped(&mut a, &stop(S));
    a.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Sample,
        hart: None,
        harts: vec![],
    }));
    a.observe(&stop(S + 300 * MS), Consistency::Stopped);
    let c = a.check();
    assert_eq!(c.verdict, Verdict::Stall, "{}", c.summary);
    assert_eq!(a.hang().unwrap().kind, Some(HangKind::Stall));
    let st = c.stall.as_ref().unwrap();
    assert_eq!(st.harts.len(), 1);
    assert!(
        c.summary.contains("hart 0 spun on bcache.bucket"),
        "{}",
        c.summary
    );
}

/// Two processes asleep on each other's sleeplocks, every hart idle.
fn sleep_cycle(t: u64) -> Snapshot {
    let mut s = Snap::new(t, &[("sleep lock", "s")], 2).build();
    let proc_ref = |pid: i64| ProcRef {
        slot: pid as u32,
        pid,
        name: format!("p{pid}"),
    };
    s.processes = (4..=5)
        .map(|pid| ProcessSnapshot {
            slot: pid as u32,
            pid,
            name: format!("p{pid}"),
            state: "SLEEPING".into(),
            ..Default::default()
        })
        .collect();
    let sleeper = |pid: i64, on: &str, holder: i64| SleeperDiagnosis {
        slot: pid as u32,
        pid,
        name: format!("p{pid}"),
        chan: Some(0x8000_1000 + pid as u64),
        chan_name: Some(format!("sleeplock of {on}")),
        frames: vec![],
        unwind_error: None,
        sleeplock: Some(SleepOn {
            path: on.into(),
            locked: true,
            holder: Some(proc_ref(holder)),
        }),
    };
    let idle = |h| HartDiagnosis {
        process: None,
        ..hart(h, HartState::Idle, &[])
    };
    s.diagnosis = Some(Diagnosis {
        time_ns: t,
        harts: vec![idle(0), idle(1)],
        sleepers: vec![sleeper(4, "buf 3", 5), sleeper(5, "buf 7", 4)],
        ..Default::default()
    });
    s
}

#[test]
fn processes_asleep_on_each_others_sleeplocks_are_a_deadlock() {
    let mut a = Analyzer::default();
    stopped(&mut a, &sleep_cycle(S));
    a.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Sample,
        hart: None,
        harts: vec![],
    }));
    a.observe(&sleep_cycle(S + 400 * MS), Consistency::Stopped);
    let c = a.check();
    assert_eq!(c.verdict, Verdict::Deadlock, "{}", c.summary);
    assert_eq!(a.hang().unwrap().kind, Some(HangKind::SleepDeadlock));
    assert_eq!(
        c.summary,
        "sleeplock deadlock: pid 4 (p4) sleeps on sleeplock of buf 3 held by pid 5 (p5), which sleeps on sleeplock of buf 7 held by pid 4 (p4): the cycle closes"
    );
}

#[test]
fn a_lock_held_while_its_nts_climbs_and_nobody_acquires_it_is_suspicious() {
    let mut a = Analyzer::default();
    a.observe(&locks(S, [10, 20], [5, 5]), Consistency::Live);
    assert!(a.hang_suspicion().is_none());
    a.observe(&locks(S + 100 * MS, [10, 21], [5, 9]), Consistency::Live);
    assert!(a.hang_suspicion().is_none());
    a.observe(&locks(S + 450 * MS, [10, 21], [5, 900]), Consistency::Live);
    let why = a
        .hang_suspicion()
        .expect("lock 1 held, spun on, unacquired for 350 ms");
    assert!(
        why.contains("held by hart1") && why.contains("spin"),
        "{why}"
    );
}

fn monitor() -> Monitor {
    Monitor::new(MonitorConfig::default(), None, SourceKind::SharedRam).unwrap()
}

fn snapshot(m: &mut Monitor, s: Snapshot) -> Option<StopReason> {
    m.apply(&Feed::Snapshot(Box::new(s)));
    m.capture_wanted()
}

#[test]
fn the_monitor_samples_twice_and_keeps_a_confirmed_hang_stopped() {
    let mut m = monitor();
    assert_eq!(snapshot(&mut m, locks(S, [10, 20], [5, 5])), None);
    assert_eq!(
        snapshot(&mut m, locks(S + 400 * MS, [10, 20], [900, 900])),
        Some(StopReason::Sample)
    );
    m.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Sample,
        hart: None,
        harts: vec![],
    }));
    // A probe snapshot without the diagnosis asks for nothing; the diagnosed one lets the
    // guest go, for a second look.
    assert_eq!(
        snapshot(&mut m, locks(S + 400 * MS, [10, 20], [900, 900])),
        None
    );
    assert!(!m.resume_wanted());
    assert_eq!(
        snapshot(&mut m, abba(S + 400 * MS, [10, 20], [900, 900], true)),
        None
    );
    assert!(m.resume_wanted(), "one stop confirms nothing: run again");
    m.apply(&Feed::Resumed);
    assert_eq!(
        snapshot(&mut m, locks(S + 500 * MS, [10, 20], [950, 950])),
        None
    );
    let due = S + 400 * MS + SAMPLE_APART_NS;
    assert_eq!(
        snapshot(&mut m, locks(due, [10, 20], [990, 990])),
        Some(StopReason::Sample)
    );
    m.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Sample,
        hart: None,
        harts: vec![],
    }));
    assert_eq!(
        snapshot(&mut m, abba(due, [10, 20], [990, 990], true)),
        None
    );
    assert!(!m.resume_wanted(), "confirmed: the guest stays stopped");
    let v = m.view();
    assert_eq!(v.check.verdict, Verdict::Deadlock);
    assert!(v.hang.as_ref().is_some_and(|h| h.confirmed));
}

#[test]
fn a_sample_that_finds_nothing_stuck_backs_off() {
    let mut m = monitor();
    snapshot(&mut m, locks(S, [10, 20], [5, 5]));
    assert_eq!(
        snapshot(&mut m, locks(S + 400 * MS, [10, 20], [900, 900])),
        Some(StopReason::Sample)
    );
    m.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Sample,
        hart: None,
        harts: vec![],
    }));
    let mut calm = locks(S + 400 * MS, [10, 20], [900, 900]);
    calm.diagnosis = Some(Diagnosis {
        time_ns: S + 400 * MS,
        harts: vec![
            hart(0, HartState::Running, &[0]),
            hart(1, HartState::Running, &[1]),
        ],
        ..Default::default()
    });
    assert_eq!(snapshot(&mut m, calm), None);
    assert!(m.resume_wanted());
    m.apply(&Feed::Resumed);
    // Still suspicious, but the next look waits.
    assert_eq!(
        snapshot(&mut m, locks(S + 2 * S, [10, 20], [990, 990])),
        None
    );
    assert_eq!(
        snapshot(&mut m, locks(S + 6 * S, [10, 20], [995, 995])),
        Some(StopReason::Sample)
    );
}
