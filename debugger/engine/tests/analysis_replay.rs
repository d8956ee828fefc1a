//! Replaying recorded feeds, and robustness against any feed.

#[path = "fixtures/analysis/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;

use lockscope_engine::analysis::*;
use lockscope_engine::feed::{Feed, HartStop, StopInfo, StopReason};
use lockscope_engine::model::*;
use lockscope_engine::trace::{TraceHeader, TraceReader, TraceWriter};
use proptest::prelude::*;
use support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/analysis");

/// A fixture: one JSON [`Feed`] per line, written by hand to read like a session.
fn fixture(name: &str) -> Vec<Feed> {
    let f = std::fs::File::open(format!("{FIXTURES}/{name}")).unwrap();
    BufReader::new(f)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

fn check_bucket_order_deadlock(a: &Analyzer) {
    let c = a.check();
    assert_eq!(c.verdict, Verdict::Deadlock);
    assert_eq!(c.deadlocks.len(), 1);
    let d = &c.deadlocks[0];
    assert!(d.confirmed);
    assert_eq!(d.seen_for_ns, 300 * MS);
    let chain: Vec<(HartId, &str, HartId)> = d
        .edges
        .iter()
        .map(|e| (e.waiter, e.lock_name.as_str(), e.holder))
        .collect();
    assert_eq!(
        chain,
        vec![(0, "bcache.bucket7", 1), (1, "bcache.bucket3", 0)]
    );
    assert_eq!(d.edges[0].holder_pc, Some(0x8000_2a10));
    assert_eq!(d.edges[0].waiter_pc, 0x8000_2a88);
    // The same bug seen from the events, as a potential deadlock with both sites.
    assert_eq!(c.inversions.len(), 1);
    assert_eq!(
        c.inversions[0].names,
        vec!["bcache.bucket3", "bcache.bucket7"]
    );
    assert!(c.inversions[0]
        .edges
        .iter()
        .all(|e| e.first.from_pc == 0x8000_2a10 && e.first.to_pc == 0x8000_2a88));
    // Contention on bucket 5 from the normal traffic, with its wait from events.
    let b5 = a.lock_row(5);
    assert_eq!(b5.wait.min_ns, Some(510));
    assert_eq!(b5.top_sites[0].pc, 0x8000_2a10);
    assert_eq!(a.ingest_stats().lost, 3);
    // Everything serializes for --json.
    let json = serde_json::to_string(&a.report()).unwrap();
    assert!(json.contains("\"bcache.bucket7\""));
    let cj: serde_json::Value = serde_json::to_value(&c).unwrap();
    assert_eq!(cj["verdict"], "deadlock");
    assert_eq!(
        cj["deadlocks"][0]["edges"][0]["lock_name"],
        "bcache.bucket7"
    );
}

#[test]
fn bucket_order_deadlock_feed_gives_deadlock_with_inversion() {
    let mut a = Analyzer::default();
    for f in fixture("bucket_order_deadlock.jsonl") {
        a.apply(&f);
    }
    check_bucket_order_deadlock(&a);
}

#[test]
fn the_same_feed_replays_from_a_recorded_trace() {
    let header = TraceHeader {
        abi_version: 1,
        kernel: None,
        kernel_fingerprint: None,
        smp: 2,
        bootargs: "workload=bcachetest bug=bucket-order".into(),
        source: "fixture".into(),
    };
    let path = Path::new("bucket_order_deadlock.lstrace");
    let mut bytes = Vec::new();
    let mut w = TraceWriter::new(&mut bytes, path, &header).unwrap();
    for f in fixture("bucket_order_deadlock.jsonl") {
        w.write(&f).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let len = bytes.len() as u64;
    let mut r = TraceReader::new(bytes.as_slice(), path, Some(len)).unwrap();
    let mut a = Analyzer::default();
    assert_eq!(a.replay(&mut r).unwrap(), 9);
    check_bucket_order_deadlock(&a);
}

#[test]
fn snapshots_while_stopped_are_consistent_and_stop_stacks_reach_the_panic_view() {
    let mut a = Analyzer::default();
    let running = Snap::new(S, &[("kmem0", "kmem")], 2)
        .holds(0, 0, 0x10, 0)
        .spins(0, 0, 0x14, 5)
        .build();
    a.apply(&Feed::Snapshot(Box::new(running.clone())));
    assert!(!a.deadlocks()[0].confirmed, "live: only suspected");
    a.apply(&Feed::Stop(StopInfo {
        reason: StopReason::Panic,
        hart: Some(1),
        harts: vec![HartStop {
            hart: 1,
            regs: HartRegs {
                pc: 0x8000_0100,
                ..HartRegs::default()
            },
            frames: vec![
                StackFrame {
                    pc: 0x8000_0100,
                    kind: FrameKind::Pc,
                },
                StackFrame {
                    pc: 0x8000_0204,
                    kind: FrameKind::Return,
                },
            ],
            full: None,
        }],
    }));
    let mut stopped = running.clone();
    stopped.time_ns = S + 1;
    stopped.panic = Some(PanicSnapshot {
        hart: 1,
        message: "release kmem0".into(),
        trap: None,
        pc: 0x8000_0100,
        fp: 0,
        frames: vec![],
        time_ns: None,
    });
    a.apply(&Feed::Snapshot(Box::new(stopped.clone())));
    assert!(a.deadlocks()[0].confirmed, "stopped: consistent at once");
    let p = a.panic().unwrap();
    let pcs: Vec<u64> = p.harts[1].frames.iter().map(|f| f.pc).collect();
    assert_eq!(pcs, vec![0x8000_0100, 0x8000_0204]);
    assert_eq!(p.harts[1].regs.unwrap().pc, 0x8000_0100);
    assert!(p.harts[0].frames.is_empty());
    assert_eq!(
        a.check().verdict,
        Verdict::Panic,
        "a panic outranks the deadlock"
    );
    a.apply(&Feed::Resumed);
    assert!(a.last_stop().is_none());
    stopped.time_ns = S + 2;
    a.apply(&Feed::Snapshot(Box::new(stopped)));
    assert!(a.panic().unwrap().harts[1].frames.is_empty());
}

fn any_event() -> impl Strategy<Value = LockEvent> {
    (
        0u64..10_000,
        prop_oneof![0u32..4, Just(7u32), Just(u32::MAX)],
        prop_oneof![0u32..6, Just(65_535u32), Just(70_000u32)],
        0u8..4,
        0u64..8,
    )
        .prop_map(|(t, hart, lock, k, pc)| LockEvent {
            time_ns: t,
            hart,
            lock,
            kind: match k {
                0 => EventKind::Spin,
                1 => EventKind::Acquired { contended: false },
                2 => EventKind::Acquired { contended: true },
                _ => EventKind::Released,
            },
            pc,
            mode: None,
            trylock: false,
        })
}

fn any_snapshot() -> impl Strategy<Value = Snapshot> {
    let hart = (
        0u32..6,
        any::<bool>(),
        proptest::collection::vec((0u32..8, 0u64..4), 0..4),
        proptest::option::of((0u32..8, 0u64..100)),
        0u64..3,
    );
    (
        0u64..5_000_000_000,
        proptest::collection::vec(hart, 0..6),
        proptest::collection::vec(
            (any::<u64>(), any::<u64>(), proptest::option::of(0u32..8)),
            0..6,
        ),
    )
        .prop_map(|(t, harts, locks)| {
            let mut s = Snap::new(t, &[], 0).build();
            s.locks = locks
                .into_iter()
                .enumerate()
                .map(|(i, (acq, wait, holder))| LockState {
                    meta: LockMeta {
                        id: i as u32,
                        name: format!("l{i}"),
                        class: "c".into(),
                    },
                    counters: LockCounters {
                        acquires: acq,
                        contended: acq / 2,
                        spins: acq,
                        wait_total_ns: wait,
                        wait_max_ns: wait,
                        hold_total_ns: u64::MAX,
                        hold_max_ns: u64::MAX,
                    },
                    holder,
                    ..Default::default()
                })
                .collect();
            s.harts = harts
                .into_iter()
                .map(|(h, running, held, spin, hb)| HartSnapshot {
                    hart: h,
                    run: if running {
                        HartRun::Running
                    } else {
                        HartRun::Idle
                    },
                    heartbeat: Some(hb),
                    held: held
                        .into_iter()
                        .map(|(lock, since)| Held {
                            lock,
                            pc: 1,
                            since_ns: Some(since),
                        })
                        .collect(),
                    held_truncated: false,
                    spinning: spin.map(|(lock, since)| Spin {
                        lock,
                        pc: 2,
                        since_ns: since,
                    }),
                    ops: None,
                    regs: None,
                    ..Default::default()
                })
                .collect();
            s
        })
}

#[derive(Debug, Clone)]
enum Step {
    Events(Vec<LockEvent>),
    Lost(u32, u64),
    Snapshot(Box<Snapshot>, bool),
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec(any_event(), 0..40).prop_map(Step::Events),
        1 => (0u32..5, 0u64..10).prop_map(|(h, n)| Step::Lost(h, n)),
        2 => (any_snapshot(), any::<bool>()).prop_map(|(s, stopped)| Step::Snapshot(Box::new(s), stopped)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever it is fed, the analysis answers without panicking and within its bounds.
    #[test]
    fn any_feed_is_answered_within_bounds(steps in proptest::collection::vec(any_step(), 0..30)) {
        let cfg = AnalysisConfig { max_locks: 5, max_harts: 4, max_order_edges: 12, max_sites_per_lock: 3, ..AnalysisConfig::default() };
        let mut a = Analyzer::new(cfg).unwrap();
        for s in &steps {
            match s {
                Step::Events(e) => a.ingest(e),
                Step::Lost(h, n) => a.note_lost(*h, *n),
                Step::Snapshot(s, stopped) => a.observe(s, if *stopped { Consistency::Stopped } else { Consistency::Live }),
            }
        }
        let r = a.report();
        let c = a.check();
        let snap_locks = a.snapshot().map_or(0, |s| s.locks.len());
        prop_assert!(r.locks.len() <= snap_locks + 5);
        prop_assert!(r.lock_order.edges <= 12);
        for l in &r.locks {
            prop_assert!(l.top_sites.len() <= 3);
            if let Some(p) = l.contention_pct { prop_assert!(p.is_finite()); }
        }
        prop_assert!(serde_json::to_string(&r).is_ok());
        prop_assert!(serde_json::to_string(&c).is_ok());
    }
}

/// Recorded from the real kernel in QEMU (`-smp 2`, `workload=idle bug=panic-test panic=halt`),
/// read live through shared RAM by the engine's reader. The console printed:
/// `panic: panic-test (depth 1)` on hart 0 and the backtrace 0x800085ee 0x800002e6 0x800002f6
/// 0x80000296 0x80001130.
#[test]
fn recorded_panic_test_gives_the_panic_with_its_backtrace() {
    let path = Path::new(FIXTURES).join("panic_test_2harts.lstrace");
    let mut r = TraceReader::open(&path).unwrap();
    assert_eq!(r.header().source, "shared-ram");
    let mut a = Analyzer::default();
    assert!(a.replay(&mut r).unwrap() >= 2);
    let c = a.check();
    assert_eq!(c.verdict, Verdict::Panic);
    assert_eq!(c.summary, "panic on hart 0: panic-test (depth 1)");
    let p = c.panic.unwrap();
    assert!(p.trap.is_none(), "a plain panic, not a trap");
    assert_eq!(
        p.frames[..5],
        [0x800085ee, 0x800002e6, 0x800002f6, 0x80000296, 0x80001130]
    );
    let runs: Vec<HartRun> = a.hart_rows().iter().map(|h| h.run).collect();
    assert_eq!(runs, vec![HartRun::Panicked, HartRun::Halted]);
    // Hart 1 was stopped while waiting for the lock hart 0 holds: a chain, not a deadlock.
    assert!(a.deadlocks().is_empty());
    assert!(c.deadlocks.is_empty() && c.stall.is_none());
}
