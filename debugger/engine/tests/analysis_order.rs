//! Potential deadlocks from the lock-order graph.

#[path = "fixtures/analysis/support.rs"]
mod support;

use lockscope_engine::analysis::*;
use lockscope_engine::model::*;
use support::*;

const EVICT: LockId = 13;

/// 13 bucket locks and the eviction lock.
fn bucket_names() -> Vec<(String, String)> {
    let mut v = named("bcache.bucket", "bcache.bucket", 13);
    v.push(("bcache.evict".into(), "bcache.evict".into()));
    v
}

fn analyzer(nharts: u32) -> Analyzer {
    let mut a = Analyzer::default();
    for h in 0..nharts {
        a.note_trace_start(h);
    }
    a
}

/// Hart `h` takes `first` then `second` (optionally under `gate`) and releases them.
fn nested(
    t: u64,
    h: HartId,
    gate: Option<LockId>,
    first: LockId,
    second: LockId,
) -> Vec<LockEvent> {
    let pc = |l: LockId| 0x8000_0000 + l as u64 * 0x10;
    let mut v = Vec::new();
    if let Some(g) = gate {
        v.push(acq(t, h, g, 0x9000));
    }
    v.push(acq(t + 1, h, first, pc(first)));
    v.push(acq(t + 2, h, second, pc(second) + 4));
    v.push(rel(t + 3, h, second, 0));
    v.push(rel(t + 4, h, first, 0));
    if let Some(g) = gate {
        v.push(rel(t + 5, h, g, 0));
    }
    v
}

#[test]
fn steals_in_a_consistent_order_are_not_an_inversion() {
    let mut a = analyzer(4);
    // With names, the buckets are instances of one class: lockdep's index rule applies too.
    a.observe(
        &Snap::new(1, &refs(&bucket_names()), 4).build(),
        Consistency::Live,
    );
    let mut t = 0;
    for round in 0..50u32 {
        for h in 0..4u32 {
            // Own bucket i, then steal from j, only ever lower id first.
            let i = (round + h) % 13;
            let j = (round * 7 + h * 3 + 1) % 13;
            if i == j {
                continue;
            }
            let (lo, hi) = (i.min(j), i.max(j));
            a.ingest(&nested(t, h, None, lo, hi));
            t += 10;
        }
    }
    let o = a.lock_order();
    assert!(o.edges > 10, "steals between many bucket pairs were seen");
    assert!(o.inversions.is_empty(), "{:?}", o.inversions);
    assert!(o.guarded.is_empty());
    assert_eq!(a.check().verdict, Verdict::Ok);
}

#[test]
fn a_true_two_lock_inversion_across_two_harts_is_reported_with_both_sites() {
    let mut a = analyzer(2);
    a.ingest(&nested(100, 0, None, 3, 7));
    a.ingest(&nested(200, 1, None, 7, 3));
    a.observe(
        &Snap::new(1000, &refs(&bucket_names()), 2).build(),
        Consistency::Live,
    );
    let o = a.lock_order();
    assert_eq!(o.inversions.len(), 1);
    let inv = &o.inversions[0];
    assert!(!inv.guarded);
    assert_eq!(inv.locks, vec![3, 7]);
    assert_eq!(inv.names, vec!["bcache.bucket3", "bcache.bucket7"]);
    let (ab, ba) = (&inv.edges[0], &inv.edges[1]);
    assert_eq!((ab.from, ab.to, ab.first.hart), (3, 7, 0));
    assert_eq!(
        (ab.first.from_pc, ab.first.to_pc),
        (0x8000_0030, 0x8000_0074)
    );
    assert_eq!((ba.from, ba.to, ba.first.hart), (7, 3, 1));
    assert_eq!(
        (ba.first.from_pc, ba.first.to_pc),
        (0x8000_0070, 0x8000_0034)
    );
    assert_eq!(ab.first.time_ns, 102);

    let check = a.check();
    assert_eq!(check.verdict, Verdict::LockOrderInversion);
    assert_eq!(check.severity, Severity::Warning);
    assert!(
        check.summary.contains("bcache.bucket3 -> bcache.bucket7"),
        "{}",
        check.summary
    );
    assert!(
        check.summary.contains("bcache.bucket7 -> bcache.bucket3"),
        "{}",
        check.summary
    );
}

#[test]
fn both_orders_under_the_eviction_lock_are_guarded_not_reported() {
    let mut a = analyzer(2);
    a.ingest(&nested(100, 0, Some(EVICT), 3, 7));
    a.ingest(&nested(200, 1, Some(EVICT), 7, 3));
    a.ingest(&nested(300, 1, Some(EVICT), 7, 3));
    let o = a.lock_order();
    assert!(o.inversions.is_empty());
    assert_eq!(o.guarded.len(), 1);
    assert_eq!(o.guarded[0].common_gates, vec![EVICT]);
    assert_eq!(a.check().verdict, Verdict::Ok);
    assert_eq!(a.check().guarded_inversions, 1);
}

#[test]
fn one_occurrence_outside_the_gate_makes_the_inversion_real() {
    let mut a = analyzer(2);
    a.ingest(&nested(100, 0, Some(EVICT), 3, 7));
    a.ingest(&nested(200, 1, Some(EVICT), 7, 3));
    // The same order once more, but without the eviction lock: it can interleave now.
    a.ingest(&nested(300, 1, None, 7, 3));
    let o = a.lock_order();
    assert_eq!(o.inversions.len(), 1);
    assert!(o.inversions[0].common_gates.is_empty());
}

#[test]
fn a_three_lock_cycle_across_three_harts_is_found() {
    let mut a = analyzer(3);
    a.ingest(&nested(0, 0, None, 1, 2));
    a.ingest(&nested(10, 1, None, 2, 5));
    a.ingest(&nested(20, 2, None, 5, 1));
    let o = a.lock_order();
    assert_eq!(o.inversions.len(), 1);
    assert_eq!(o.inversions[0].locks, vec![1, 2, 5]);
    let harts: Vec<HartId> = o.inversions[0].edges.iter().map(|e| e.first.hart).collect();
    assert_eq!(harts, vec![0, 1, 2]);
}

#[test]
fn a_spin_while_holding_counts_as_an_order_even_if_never_acquired() {
    // An actual ABBA deadlock: neither second acquisition ever completes.
    let mut a = analyzer(2);
    a.ingest(&[
        acq(0, 0, 3, 0x30),
        acq(1, 1, 7, 0x70),
        spin(2, 0, 7, 0x74),
        spin(3, 1, 3, 0x34),
    ]);
    assert_eq!(a.lock_order().inversions.len(), 1);
}

#[test]
fn after_a_loss_no_edges_until_snapshots_prove_the_stack_complete() {
    let names = bucket_names();
    let snap = |t| Snap::new(t, &refs(&names), 2).build();
    let mut a = analyzer(2);
    a.ingest(&nested(0, 0, None, 3, 7));
    // Hart 1 held the eviction lock from an event that was lost; it then takes 7 then 3 under
    // it. Without the gate in its rebuilt stack that would look like a real inversion.
    a.note_lost(1, 100);
    a.ingest(&[
        acq(50, 1, 7, 0x70),
        acq(51, 1, 3, 0x34),
        rel(52, 1, 3, 0),
        rel(53, 1, 7, 0),
    ]);
    assert!(a.lock_order().inversions.is_empty());
    assert!(!a.hart_rows()[1].order_in_sync);

    // A snapshot showing hart 1 holding nothing: the locks from before the gap are released
    // by now, but events drained before the next snapshot may predate this one.
    a.observe(&snap(10 * MS), Consistency::Live);
    assert!(!a.hart_rows()[1].order_in_sync);
    a.ingest(&[
        acq(10 * MS - 5, 1, 7, 0x70),
        acq(10 * MS - 4, 1, 3, 0x34),
        rel(10 * MS - 3, 1, 3, 0),
        rel(10 * MS - 2, 1, 7, 0),
    ]);
    assert!(a.lock_order().inversions.is_empty());
    // The next snapshot completes the proof; from then on the hart's order counts.
    a.observe(&snap(30 * MS), Consistency::Live);
    assert!(a.hart_rows()[1].order_in_sync);
    a.ingest(&nested(31 * MS, 1, None, 7, 3));
    assert_eq!(a.lock_order().inversions.len(), 1);
}

#[test]
fn a_loss_between_the_two_snapshots_restarts_the_proof() {
    let names = bucket_names();
    let snap = |t| Snap::new(t, &refs(&names), 1).build();
    let mut a = Analyzer::default();
    a.observe(&snap(MS), Consistency::Live);
    a.note_lost(0, 5);
    a.observe(&snap(2 * MS), Consistency::Live);
    assert!(!a.hart_rows()[0].order_in_sync);
    a.observe(&snap(3 * MS), Consistency::Live);
    assert!(a.hart_rows()[0].order_in_sync);
}

#[test]
fn a_hart_seen_holding_locks_does_not_resync() {
    let names = bucket_names();
    let mut a = Analyzer::default();
    a.ingest(&[acq(5, 0, 1, 0x10)]);
    let holding = Snap::new(S, &refs(&names), 1)
        .holds(0, EVICT, 0x9000, 1)
        .build();
    a.observe(&holding, Consistency::Stopped);
    a.observe(&holding.clone(), Consistency::Stopped);
    assert!(!a.hart_rows()[0].order_in_sync);
    a.observe(
        &Snap::new(2 * S, &refs(&names), 1).build(),
        Consistency::Stopped,
    );
    assert!(!a.hart_rows()[0].order_in_sync);
    a.observe(
        &Snap::new(3 * S, &refs(&names), 1).build(),
        Consistency::Stopped,
    );
    assert!(a.hart_rows()[0].order_in_sync);
}

#[test]
fn edge_table_overflow_is_counted() {
    let cfg = AnalysisConfig {
        max_order_edges: 4,
        ..AnalysisConfig::default()
    };
    let mut a = Analyzer::new(cfg).unwrap();
    a.note_trace_start(0);
    for b in 1..10 {
        a.ingest(&nested(b as u64 * 10, 0, None, 0, b));
    }
    assert_eq!(a.lock_order().edges, 4);
    assert_eq!(a.ingest_stats().order_edge_overflow, 5);
}

#[test]
fn a_release_lost_unnoticed_is_healed_by_snapshots_showing_the_hart_empty() {
    let names = bucket_names();
    let snap = |t| Snap::new(t, &refs(&names), 1).build();
    let mut a = analyzer(1);
    // The release of bucket 1 never arrives and no gap is reported (a torn slot, say).
    a.ingest(&[acq(5, 0, 1, 0x10)]);
    a.observe(&snap(S), Consistency::Live);
    // Events drained before the next snapshot may predate the first: the entry stays for now.
    a.ingest(&[acq(S - 10, 0, 4, 0x40), rel(S - 5, 0, 4, 0x44)]);
    assert_eq!(a.ingest_stats().stale_held_dropped, 0);
    // The next snapshot still shows nothing held: the entry is stale and goes.
    a.observe(&snap(2 * S), Consistency::Live);
    assert_eq!(a.ingest_stats().stale_held_dropped, 1);
    a.ingest(&nested(2 * S, 0, None, 2, 3));
    let o = a.lock_order();
    assert_eq!(
        o.edges, 2,
        "1 -> 4 before the snapshots, 2 -> 3 after; no 1 -> 2 or 1 -> 3"
    );
    assert!(a.hart_rows()[0].held.is_empty());
}

#[test]
fn a_lock_the_next_snapshot_shows_held_is_kept() {
    let names = bucket_names();
    let mut a = analyzer(1);
    a.ingest(&[acq(5, 0, 1, 0x10)]);
    // A torn first snapshot misses the held lock; the next one shows it.
    a.observe(&Snap::new(S, &refs(&names), 1).build(), Consistency::Live);
    a.observe(
        &Snap::new(2 * S, &refs(&names), 1)
            .holds(0, 1, 0x10, 5)
            .build(),
        Consistency::Live,
    );
    assert_eq!(a.ingest_stats().stale_held_dropped, 0);
    a.ingest(&[rel(3 * S, 0, 1, 0x14)]);
    assert_eq!(a.ingest_stats().unmatched_releases, 0);
    assert_eq!(
        a.lock_row(1).hold.min_ns,
        Some(3 * S - 5),
        "the hold was measured"
    );
}
