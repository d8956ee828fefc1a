//! Deadlocks, stalls, rates and panics from snapshots.

#[path = "fixtures/analysis/support.rs"]
mod support;

use lockscope_engine::analysis::*;
use lockscope_engine::model::*;
use support::*;

fn buckets() -> Vec<(String, String)> {
    named("bcache.bucket", "bcache.bucket", 13)
}

/// Hart 1 holds bucket 3 and spins on bucket 7; hart 2 holds bucket 7 and spins on bucket 3.
fn abba(t: u64) -> Snapshot {
    Snap::new(t, &refs(&buckets()), 3)
        .holds(1, 3, 0x8000_0088, 1_000)
        .spins(1, 7, 0x8000_0095, 2_000)
        .holds(2, 7, 0x8000_0091, 1_500)
        .spins(2, 3, 0x8000_0097, 2_500)
        .build()
}

#[test]
fn a_two_hart_cycle_is_suspected_then_confirmed() {
    let mut a = Analyzer::default();
    a.observe(&abba(10 * MS), Consistency::Live);
    let d = a.deadlocks();
    assert_eq!(d.len(), 1);
    assert!(!d[0].confirmed, "one live snapshot may be torn");
    assert!(!d[0].self_deadlock);
    assert_eq!(a.check().verdict, Verdict::Ok);
    assert_eq!(a.check().suspected_deadlocks, 1);

    a.observe(&abba(100 * MS), Consistency::Live);
    assert!(
        !a.deadlocks()[0].confirmed,
        "90 ms is less than the 200 ms default"
    );
    a.observe(&abba(260 * MS), Consistency::Live);
    let d = &a.deadlocks()[0];
    assert!(d.confirmed);
    assert_eq!(d.first_seen_ns, 10 * MS);
    assert_eq!(d.seen_for_ns, 250 * MS);
    let e = &d.edges;
    assert_eq!(e.len(), 2);
    assert_eq!((e[0].waiter, e[0].lock, e[0].holder), (1, 7, 2));
    assert_eq!(
        (e[0].waiter_pc, e[0].holder_pc),
        (0x8000_0095, Some(0x8000_0091))
    );
    assert_eq!((e[1].waiter, e[1].lock, e[1].holder), (2, 3, 1));
    assert_eq!(e[1].lock_name, "bcache.bucket3");
    let site = |pc: u64| format!("bio.rs:{:x}", pc & 0xff);
    assert_eq!(
        d.describe(site),
        "hart1 holds bcache.bucket3 (bio.rs:88) -> waits bcache.bucket7 at bio.rs:95 \
         <- held by hart2 (bio.rs:91) -> waits bcache.bucket3 at bio.rs:97"
    );
    let check = a.check();
    assert_eq!(check.verdict, Verdict::Deadlock);
    assert_eq!(check.severity, Severity::Fault);
    assert!(
        check
            .summary
            .starts_with("deadlock: hart1 holds bcache.bucket3 (0x80000088)"),
        "{}",
        check.summary
    );
    assert!(
        verdict_sentence(&check, &Named)
            .starts_with("deadlock: hart1 holds bcache.bucket3 (site80000088.rs:1) -> waits"),
        "{}",
        verdict_sentence(&check, &Named)
    );
}

#[test]
fn a_torn_snapshot_is_not_confirmed() {
    let mut a = Analyzer::default();
    a.observe(&abba(10 * MS), Consistency::Live);
    // 300 ms later hart 2 spins on bucket 3 again, but it is a new spin (released in between).
    let mut later = abba(310 * MS);
    later.harts[2].spinning.as_mut().unwrap().since_ns = 300 * MS;
    a.observe(&later, Consistency::Live);
    assert_eq!(a.deadlocks().len(), 1);
    assert!(!a.deadlocks()[0].confirmed);
    // And a snapshot where the cycle is gone clears it.
    a.observe(
        &Snap::new(320 * MS, &refs(&buckets()), 3).build(),
        Consistency::Live,
    );
    assert!(a.deadlocks().is_empty());
    assert_eq!(a.check().verdict, Verdict::Ok);
}

#[test]
fn a_stopped_snapshot_confirms_at_once() {
    let mut a = Analyzer::default();
    a.observe(&abba(10 * MS), Consistency::Stopped);
    assert!(a.deadlocks()[0].confirmed);
}

#[test]
fn a_three_hart_cycle_is_one_cycle_starting_at_the_lowest_hart() {
    let mut a = Analyzer::default();
    let s = Snap::new(S, &refs(&buckets()), 4)
        .holds(3, 1, 0x31, 0)
        .spins(3, 2, 0x32, 10)
        .holds(1, 2, 0x12, 0)
        .spins(1, 3, 0x13, 10)
        .holds(2, 3, 0x23, 0)
        .spins(2, 1, 0x21, 10)
        .build();
    a.observe(&s, Consistency::Stopped);
    let d = a.deadlocks();
    assert_eq!(d.len(), 1);
    let chain: Vec<(HartId, LockId, HartId)> = d[0]
        .edges
        .iter()
        .map(|e| (e.waiter, e.lock, e.holder))
        .collect();
    assert_eq!(chain, vec![(1, 3, 2), (2, 1, 3), (3, 2, 1)]);
}

#[test]
fn spinning_on_a_lock_held_by_oneself_is_self_deadlock() {
    let mut a = Analyzer::default();
    let s = Snap::new(S, &[("kmem0", "kmem")], 2)
        .holds(0, 0, 0x100, 0)
        .spins(0, 0, 0x104, 10)
        .build();
    a.observe(&s, Consistency::Stopped);
    let d = a.deadlocks();
    assert_eq!(d.len(), 1);
    assert!(d[0].self_deadlock);
    assert_eq!(d[0].edges[0].holder_pc, Some(0x100));
    let c = a.check();
    assert_eq!(c.verdict, Verdict::Deadlock);
    assert!(
        c.summary
            .starts_with("self-deadlock: hart0 holds kmem0 (0x100) and spins on it again at 0x104"),
        "{}",
        c.summary
    );
}

#[test]
fn a_chain_without_a_cycle_is_not_a_deadlock() {
    let mut a = Analyzer::default();
    let s = Snap::new(S, &refs(&buckets()), 3)
        .holds(0, 1, 0x10, 0)
        .spins(1, 1, 0x11, 0)
        .holds(1, 2, 0x12, 0)
        .spins(2, 2, 0x13, 0)
        .build();
    a.observe(&s, Consistency::Stopped);
    assert!(a.deadlocks().is_empty());
}

#[test]
fn stall_is_told_apart_from_idle_and_from_short_spins() {
    let names = [("kmem0", "kmem"), ("kmem1", "kmem")];
    let snap = |t: u64, beat: u64| {
        Snap::new(t, &names, 4)
            .heartbeat(0, 7) // running, stuck
            .pc(0, 0x8000_1234)
            .run(1, HartRun::Idle) // idle: its heartbeat may stop
            .heartbeat(1, 9)
            .heartbeat(2, beat) // running and spinning briefly each time, but progressing
            .spins(2, 0, 0x50, t - 10)
            .heartbeat(3, beat) // running, progressing
            .build()
    };
    let mut a = Analyzer::default();
    a.observe(&snap(S, 1), Consistency::Live);
    assert!(a.stall().is_none());
    a.observe(&snap(2 * S, 2), Consistency::Live);
    assert!(a.stall().is_none(), "1 s is below the 2 s default");
    a.observe(&snap(3 * S + 1, 3), Consistency::Live);
    let st = a.stall().unwrap();
    assert!(!st.system_hang);
    assert_eq!(st.harts.len(), 1);
    let h = &st.harts[0];
    assert_eq!(
        (h.hart, h.reason, h.pc),
        (0, StallReason::NoProgress, Some(0x8000_1234))
    );
    assert_eq!(h.for_ns, 2 * S + 1);
    let rows = a.hart_rows();
    assert_eq!(rows[0].heartbeat_advancing, Some(false));
    assert_eq!(rows[3].heartbeat_advancing, Some(true));
    let c = a.check();
    assert_eq!(c.verdict, Verdict::Stall);
    assert!(
        c.summary
            .contains("hart 0 made no progress for 2000 ms at pc 0x80001234"),
        "{}",
        c.summary
    );
    // A symbolized view says the same sentence with its own names for the places.
    assert_eq!(
        verdict_sentence(&c, &Named),
        c.summary
            .replace("pc 0x80001234", "stuck::here kernel/src/stuck.rs:7")
    );
}

/// Names as a view with symbols gives them.
struct Named;

impl VerdictNames for Named {
    fn lock(&self, id: LockId) -> String {
        format!("lock{id}")
    }
    fn chain_site(&self, pc: u64) -> String {
        format!("site{pc:x}.rs:1")
    }
    fn site(&self, pc: u64) -> String {
        format!("f{pc:x} site{pc:x}.rs:1")
    }
    fn pc(&self, _pc: u64) -> String {
        "stuck::here kernel/src/stuck.rs:7".into()
    }
    fn fault(&self) -> Option<String> {
        Some("bio::bget kernel/src/bio.rs:622".into())
    }
}

#[test]
fn all_running_harts_stuck_is_a_system_hang() {
    let names = [("kmem0", "kmem"), ("kmem1", "kmem")];
    // Hart 0 finished holding kmem1 (a leaked lock) and went idle; harts 1 and 2 spin on it.
    let snap = |t: u64| {
        Snap::new(t, &names, 3)
            .run(0, HartRun::Idle)
            .holds(0, 1, 0x70, 0)
            .spins(1, 1, 0x80, 100)
            .spins(2, 1, 0x90, 200)
            .build()
    };
    let mut a = Analyzer::default();
    a.observe(&snap(S), Consistency::Live);
    assert!(a.stall().is_none());
    a.observe(&snap(3 * S), Consistency::Live);
    let st = a.stall().unwrap();
    assert!(st.system_hang);
    assert_eq!(st.harts.len(), 2);
    assert_eq!(
        st.harts[0].reason,
        StallReason::SpinningTooLong {
            lock: 1,
            holder: Some(0)
        }
    );
    assert_eq!(st.harts[0].pc, Some(0x80), "no registers: the spin pc");
    assert!(a.deadlocks().is_empty());
    assert!(a
        .check()
        .summary
        .starts_with("system hang: hart 1 spun on kmem1"));
}

#[test]
fn harts_in_a_deadlock_count_for_the_hang_but_are_reported_as_the_deadlock() {
    let mut a = Analyzer::default();
    let mut s = abba(3 * S);
    s.harts[0].run = HartRun::Idle;
    a.observe(&s, Consistency::Stopped);
    let st = a.stall().unwrap();
    assert!(st.system_hang);
    assert!(st.harts.is_empty());
    assert_eq!(a.check().verdict, Verdict::Deadlock);
}

#[test]
fn rates_and_history_come_from_counter_deltas() {
    let names = [("kmem0", "kmem")];
    let c = |acquires, contended| LockCounters {
        acquires,
        contended,
        spins: contended * 3,
        ..LockCounters::default()
    };
    let mut a = Analyzer::default();
    // One snapshot every 250 ms; 1000 acquisitions and 10 contentions each.
    for k in 0..=40u64 {
        let snap = Snap::new(k * 250 * MS, &names, 1)
            .counters(0, c(k * 1000, k * 10))
            .build();
        a.observe(&snap, Consistency::Live);
    }
    let r = a.lock_row(0);
    let rates = r.rates.unwrap();
    // The window's intervals hold the deltas since the snapshot at 5.25 s.
    assert_eq!(rates.span_ns, 4750 * MS);
    assert!((rates.acquires_per_s - 4000.0).abs() < 1e-6, "{rates:?}");
    assert!((rates.contended_per_s - 40.0).abs() < 1e-6);
    assert!((rates.spins_per_s - 120.0).abs() < 1e-6);
    // 500 ms intervals: 2 snapshots' worth each; the first interval only has one delta.
    let mut expected = vec![20; 20];
    expected[0] = 10;
    assert_eq!(r.history_contended, expected);
    assert_eq!(r.history_acquires[1..], [2000; 19]);
}

#[test]
fn counters_going_down_reset_the_history_without_underflow() {
    let names = [("kmem0", "kmem")];
    let c = |acquires: u64| LockCounters {
        acquires,
        contended: acquires / 10,
        spins: acquires / 5,
        ..LockCounters::default()
    };
    let mut a = Analyzer::default();
    for k in 0..10u64 {
        a.observe(
            &Snap::new(k * 500 * MS, &names, 1)
                .counters(0, c(1_000_000 + k * 100))
                .build(),
            Consistency::Live,
        );
    }
    assert!(!a.lock_row(0).history_contended.is_empty());
    // A new boot whose clock happens to be later: the counters drop.
    a.observe(
        &Snap::new(5 * S, &names, 1).counters(0, c(50)).build(),
        Consistency::Live,
    );
    let r = a.lock_row(0);
    assert!(r.history_contended.is_empty());
    assert!(r.rates.is_none(), "no span since the reset yet");
    a.observe(
        &Snap::new(5 * S + 500 * MS, &names, 1)
            .counters(0, c(150))
            .build(),
        Consistency::Live,
    );
    let r = a.lock_row(0);
    assert!((r.rates.unwrap().acquires_per_s - 200.0).abs() < 1e-6);
    assert!(
        r.history_acquires.iter().all(|&v| v <= 100),
        "{:?}",
        r.history_acquires
    );

    // A new boot whose clock restarted: everything time-based starts over too.
    a.observe(
        &Snap::new(MS, &names, 1).counters(0, c(10)).build(),
        Consistency::Live,
    );
    assert!(a.lock_row(0).rates.is_none());
    assert!(a.lock_row(0).history_contended.is_empty());
}

#[test]
fn panic_view_decodes_the_trap_and_check_reports_it() {
    let mut s = Snap::new(S, &[("kmem0", "kmem")], 2)
        .run(0, HartRun::Panicked)
        .run(1, HartRun::Halted)
        .pc(1, 0x8000_2000)
        .build();
    s.outcome = Some(Outcome::Panic);
    s.panic = Some(PanicSnapshot {
        hart: 0,
        message: "kerneltrap".into(),
        trap: Some(TrapInfo {
            scause: 0xd,
            sepc: 0x8000_1111,
            stval: 0x8,
        }),
        pc: 0x8000_1000,
        fp: 0x8010_0000,
        frames: vec![0x8000_1004, 0x8000_1204],
        time_ns: Some(S - 5),
    });
    let mut a = Analyzer::default();
    a.observe(&s, Consistency::Stopped);
    let p = a.panic().unwrap();
    let trap = p.trap.as_ref().unwrap();
    assert_eq!(trap.scause.name, "load page fault");
    assert_eq!(p.frames.len(), 2);
    assert_eq!(p.harts[1].regs.unwrap().pc, 0x8000_2000);
    let c = a.check();
    assert_eq!(c.verdict, Verdict::Panic);
    assert_eq!(
        c.summary,
        "panic on hart 0: kerneltrap (load page fault (scause 0xd) at sepc 0x80001111, stval 0x8)"
    );
    assert_eq!(
        verdict_sentence(&c, &Named),
        format!("{} at bio::bget kernel/src/bio.rs:622", c.summary)
    );
    let json: serde_json::Value = serde_json::to_value(&c).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["verdict"], "panic");
    assert_eq!(json["severity"], "fault");
    assert_eq!(json["panic"]["trap"]["scause"]["name"], "load page fault");
}

#[test]
fn a_panicked_hart_without_a_record_is_still_a_panic() {
    let mut a = Analyzer::default();
    a.observe(
        &Snap::new(S, &[("kmem0", "kmem")], 2)
            .run(1, HartRun::Panicked)
            .build(),
        Consistency::Live,
    );
    let c = a.check();
    assert_eq!(c.verdict, Verdict::Panic);
    assert!(c.panic.is_none());
}

#[test]
fn hart_rows_show_held_locks_and_what_they_wait_for() {
    let mut a = Analyzer::default();
    a.observe(&abba(10 * MS), Consistency::Live);
    let rows = a.hart_rows();
    let h1 = &rows[1];
    assert_eq!(h1.held.len(), 1);
    assert_eq!(
        (h1.held[0].name.as_str(), h1.held[0].pc),
        ("bcache.bucket3", 0x8000_0088)
    );
    assert_eq!(h1.held[0].held_for_ns, Some(10 * MS - 1_000));
    let w = h1.waiting.as_ref().unwrap();
    assert_eq!(
        (w.name.as_str(), w.holder, w.for_ns),
        ("bcache.bucket7", Some(2), 10 * MS - 2_000)
    );
    assert!(rows[0].waiting.is_none());
    let l7 = a.lock_row(7);
    assert_eq!((l7.holder, l7.waiters.clone()), (Some(2), vec![1]));
}

#[test]
fn a_small_step_back_in_time_is_jitter_not_a_new_boot() {
    let names = [("kmem0", "kmem")];
    let c = |acquires: u64| LockCounters {
        acquires,
        contended: acquires / 10,
        ..LockCounters::default()
    };
    let mut a = Analyzer::default();
    for k in 0..6u64 {
        a.observe(
            &Snap::new(k * 500 * MS, &names, 1)
                .counters(0, c(k * 100))
                .build(),
            Consistency::Live,
        );
    }
    let before = a.lock_row(0).history_acquires;
    assert_eq!(before.len(), 5);
    // The source's time estimate steps back 3 ms; counters still go up.
    a.observe(
        &Snap::new(2500 * MS - 3 * MS, &names, 1)
            .counters(0, c(600))
            .build(),
        Consistency::Live,
    );
    let r = a.lock_row(0);
    assert_eq!(r.history_acquires, before, "history kept");
    assert!(r.rates.is_some());
    assert_eq!(r.acquires, 600);
    // Still behind the newest time, and into an earlier interval: nothing moves back.
    a.observe(
        &Snap::new(2500 * MS - MS, &names, 1)
            .counters(0, c(700))
            .build(),
        Consistency::Live,
    );
    a.observe(
        &Snap::new(3000 * MS, &names, 1).counters(0, c(800)).build(),
        Consistency::Live,
    );
    assert_eq!(a.lock_row(0).history_acquires[..5], before[..]);
    assert_eq!(
        a.lock_row(0).history_acquires[5],
        300,
        "the 2.5 s interval: 400 -> 700, the clamped snapshots included"
    );
}
