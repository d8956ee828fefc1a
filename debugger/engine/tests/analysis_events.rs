//! Statistics built from lock events and counters.

#[path = "fixtures/analysis/support.rs"]
mod support;

use lockscope_engine::analysis::*;
use lockscope_engine::model::*;
use support::*;

fn analyzer() -> Analyzer {
    Analyzer::new(AnalysisConfig::default()).unwrap()
}

#[test]
fn wait_and_hold_times_pair_per_hart() {
    let mut a = analyzer();
    a.ingest(&[
        acq(100, 0, 0, 0xa0),
        spin(110, 1, 0, 0xb0),
        rel(150, 0, 0, 0xa4),
        acq_c(160, 1, 0, 0xb4),
        rel(300, 1, 0, 0xb8),
        // A second contention from another site with a longer wait.
        acq(400, 0, 0, 0xa0),
        spin(401, 1, 0, 0xc0),
        rel(1401, 0, 0, 0xa4),
        acq_c(1402, 1, 0, 0xc4),
        rel(1410, 1, 0, 0xc8),
    ]);
    let r = a.lock_row(0);
    assert!(!r.counters_exact, "no snapshot: counts come from events");
    assert_eq!((r.acquires, r.contended, r.spins), (4, 2, 2));
    assert_eq!(r.wait.count, 2);
    assert_eq!(r.wait.min_ns, Some(50));
    assert_eq!(r.wait.max_ns, Some(1001));
    assert_eq!(r.wait.total_ns, 1051);
    assert_eq!(r.hold.min_ns, Some(8));
    assert_eq!(r.hold.max_ns, Some(1001));
    assert_eq!(r.hold.hist.samples, 4);
    assert_eq!(r.wait.hist.samples, 2);
    // 50 lands in [32, 63], 1001 in [512, 1023].
    let lows: Vec<(u64, u64)> = r
        .wait
        .hist
        .buckets
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.lo_ns, b.count))
        .collect();
    assert_eq!(lows, vec![(32, 1), (512, 1)]);
    assert_eq!(r.contention_pct, Some(50.0));
    // Contention points: one per spin pc, most contended first, ties by pc.
    assert_eq!(r.top_sites.len(), 2);
    assert_eq!(r.top_sites[0].pc, 0xb0);
    assert_eq!(r.top_sites[0].wait_total_ns, 50);
    assert_eq!(r.top_sites[1].pc, 0xc0);
    assert_eq!(r.top_sites[1].wait_max_ns, 1001);
    assert_eq!(r.events, 10);
    let s = a.ingest_stats();
    assert_eq!(s.events, 10);
    assert_eq!(
        s.unmatched_contended + s.unmatched_releases + s.double_acquires,
        0
    );
}

#[test]
fn counters_win_over_events_for_totals_but_events_give_min_and_histogram() {
    let mut a = analyzer();
    a.ingest(&[
        spin(10, 1, 0, 0xb0),
        acq_c(30, 1, 0, 0xb4),
        rel(40, 1, 0, 0xb8),
    ]);
    let snap = Snap::new(1000, &[("kmem0", "kmem")], 2)
        .counters(
            0,
            LockCounters {
                acquires: 100,
                contended: 10,
                spins: 250,
                wait_total_ns: 5000,
                wait_max_ns: 900,
                hold_total_ns: 20_000,
                hold_max_ns: 700,
            },
        )
        .build();
    a.observe(&snap, Consistency::Live);
    let r = a.lock_row(0);
    assert!(r.counters_exact);
    assert_eq!((r.name.as_str(), r.class.as_str()), ("kmem0", "kmem"));
    assert_eq!((r.acquires, r.contended, r.spins), (100, 10, 250));
    assert_eq!(r.wait.avg_ns, Some(500));
    assert_eq!(r.wait.max_ns, Some(900));
    assert!(r.wait.exact);
    assert_eq!(r.wait.min_ns, Some(20), "min comes from the one event pair");
    assert_eq!(
        r.wait.hist.samples, 1,
        "the histogram says what it is based on"
    );
    assert_eq!(r.hold.avg_ns, Some(200));
    assert_eq!(r.contention_pct, Some(10.0));
}

#[test]
fn counters_alone_give_stats_and_leave_event_features_empty() {
    // A target with no event ring: an unmodified xv6 read through DWARF.
    let mut a = analyzer();
    let names = [("kmem", "kmem"), ("bcache", "bcache")];
    let c = LockCounters {
        acquires: 4000,
        contended: 40,
        spins: 900,
        ..LockCounters::default()
    };
    a.observe(
        &Snap::new(S, &names, 2).counters(0, c).build(),
        Consistency::Live,
    );
    let r = a.lock_row(0);
    assert_eq!((r.acquires, r.spins), (4000, 900));
    assert_eq!(r.wait.min_ns, None);
    assert!(r.wait.hist.buckets.is_empty());
    assert!(r.top_sites.is_empty());
    assert_eq!(r.events, 0);
    let order = a.lock_order();
    assert!(order.inversions.is_empty() && order.guarded.is_empty());
    assert_eq!(order.edges, 0);
    assert_eq!(a.check().verdict, Verdict::Ok);
}

#[test]
fn loss_mid_pair_drops_the_pair_instead_of_inventing_a_time() {
    let mut a = analyzer();
    a.note_trace_start(0);
    a.ingest(&[spin(100, 0, 0, 0xb0)]);
    a.note_lost(0, 7);
    // The matching acquisition arrives after the gap; the Spin before it may not be ours.
    a.ingest(&[acq_c(5_000, 0, 0, 0xb4)]);
    a.note_lost(0, 3);
    a.ingest(&[rel(9_000, 0, 0, 0xb8)]);
    let r = a.lock_row(0);
    assert_eq!(r.wait.count, 0, "no wait time across a gap");
    assert_eq!(r.hold.hist.samples, 0, "no hold time across a gap");
    let s = a.ingest_stats();
    assert_eq!(s.lost, 10);
    assert_eq!(s.unmatched_contended, 1);
    assert_eq!(
        s.unmatched_releases, 0,
        "a release after a gap is not an anomaly"
    );
    let rows = a.hart_rows();
    assert_eq!(rows[0].lost, 10);
    assert!(!rows[0].order_in_sync);
}

#[test]
fn nested_locks_released_out_of_order_pair_correctly() {
    let mut a = analyzer();
    a.note_trace_start(0);
    a.ingest(&[
        acq(0, 0, 1, 0x10),
        acq(10, 0, 2, 0x20),
        acq(15, 0, 3, 0x30),
        rel(20, 0, 1, 0x14), // outermost released first
        rel(50, 0, 3, 0x34),
        rel(100, 0, 2, 0x24),
    ]);
    assert_eq!(a.lock_row(1).hold.max_ns, Some(20));
    assert_eq!(a.lock_row(2).hold.max_ns, Some(90));
    assert_eq!(a.lock_row(3).hold.max_ns, Some(35));
    assert_eq!(a.ingest_stats().unmatched_releases, 0);
    // Nothing is held at the end.
    assert!(a.hart_rows()[0].held.is_empty());
}

#[test]
fn release_of_an_unheld_lock_on_a_hart_in_sync_is_counted() {
    let mut a = analyzer();
    a.note_trace_start(0);
    a.ingest(&[rel(5, 0, 4, 0x44)]);
    assert_eq!(a.ingest_stats().unmatched_releases, 1);
}

#[test]
fn feed_beyond_the_bounds_is_counted_not_stored() {
    let cfg = AnalysisConfig {
        max_locks: 8,
        max_harts: 4,
        max_sites_per_lock: 2,
        ..AnalysisConfig::default()
    };
    let mut a = Analyzer::new(cfg).unwrap();
    let mut evs = Vec::new();
    for l in 0..20 {
        evs.push(acq(l as u64, 0, l, 0x100));
    }
    evs.push(acq(1, 9, 0, 0x100)); // hart beyond max_harts
    evs.push(acq(1, 0, 70_000, 0x100)); // not a lockscope lock id
    evs.push(acq(1, 1, u32::MAX, 0x100));
    for pc in 0..5u64 {
        evs.push(spin(100 + pc, 2, 0, 0x200 + pc));
        evs.push(acq_c(101 + pc, 2, 0, 0x300));
        evs.push(rel(102 + pc, 2, 0, 0x400));
    }
    a.ingest(&evs);
    let s = a.ingest_stats().clone();
    assert_eq!(s.dropped_untracked_lock, 12);
    assert_eq!(s.dropped_bad_hart, 1);
    assert_eq!(s.dropped_bad_lock, 2);
    assert_eq!(a.lock_rows().len(), 8);
    let r = a.lock_row(0);
    assert_eq!(r.top_sites.len(), 2);
    assert_eq!(r.sites_other.count, 3);
    assert_eq!(s.site_overflow, 3);
}

#[test]
fn nesting_deeper_than_the_stack_puts_the_hart_out_of_sync() {
    let mut a = analyzer();
    a.note_trace_start(0);
    let evs: Vec<LockEvent> = (0..20).map(|l| acq(l as u64, 0, l, 0x10)).collect();
    a.ingest(&evs);
    assert_eq!(a.ingest_stats().stack_overflows, 1);
    assert!(!a.hart_rows()[0].order_in_sync);
}

#[test]
fn classes_group_instances() {
    let mut a = analyzer();
    let names = [
        ("kmem0", "kmem"),
        ("kmem1", "kmem"),
        ("bcache.bucket0", "bcache.bucket"),
    ];
    let c = |acquires, contended| LockCounters {
        acquires,
        contended,
        wait_total_ns: contended * 100,
        wait_max_ns: contended * 10,
        ..LockCounters::default()
    };
    a.ingest(&[
        spin(1, 0, 0, 0x50),
        acq_c(5, 0, 0, 0x54),
        rel(6, 0, 0, 0x58),
        spin(7, 1, 1, 0x50),
        acq_c(17, 1, 1, 0x54),
        rel(18, 1, 1, 0x58),
    ]);
    a.observe(
        &Snap::new(S, &names, 2)
            .counters(0, c(10, 1))
            .counters(1, c(30, 3))
            .counters(2, c(5, 0))
            .build(),
        Consistency::Live,
    );
    let classes = a.class_rows();
    let kmem = classes.iter().find(|c| c.class == "kmem").unwrap();
    assert_eq!(kmem.locks, vec![0, 1]);
    assert_eq!((kmem.acquires, kmem.contended), (40, 4));
    assert_eq!(kmem.wait.total_ns, 400);
    assert_eq!(kmem.wait.max_ns, Some(30));
    assert_eq!(kmem.wait.min_ns, Some(4));
    assert_eq!(kmem.contention_pct, Some(10.0));
    // Both instances spun at the same pc: one merged site.
    assert_eq!(kmem.top_sites.len(), 1);
    assert_eq!(kmem.top_sites[0].count, 2);
    assert!(classes
        .iter()
        .any(|c| c.class == "bcache.bucket" && c.locks == vec![2]));
}

#[test]
fn bcache_and_kmem_views_total_their_parts() {
    let mut a = analyzer();
    let mut s = Snap::new(
        S,
        &[
            ("bcache.bucket0", "bcache.bucket"),
            ("bcache.bucket1", "bcache.bucket"),
        ],
        1,
    )
    .build();
    s.bcache = Some(BcacheSnapshot {
        mode: "hashed".into(),
        evict_lock: None,
        buckets: vec![
            BucketSnapshot {
                index: 0,
                lock: Some(0),
                nbuf: 2,
                hits: 30,
                misses: 10,
                steals: 1,
            },
            BucketSnapshot {
                index: 1,
                lock: Some(1),
                nbuf: 1,
                hits: 0,
                misses: 0,
                steals: 0,
            },
        ],
        bufs: (0..3)
            .map(|i| BufSnapshot {
                index: i,
                dev: 1,
                blockno: i,
                refcnt: if i == 2 { 0 } else { 1 },
                valid: true,
                last_use_ticks: 0,
                bucket: Some(if i < 2 { 0 } else { 1 }),
                lock: None,
                ..Default::default()
            })
            .chain(std::iter::once(BufSnapshot {
                index: 3,
                dev: 1,
                blockno: 3,
                refcnt: 5,
                valid: true,
                last_use_ticks: 0,
                bucket: Some(99), // a bucket the table does not have
                lock: None,
                ..Default::default()
            }))
            .collect(),
        ..Default::default()
    });
    s.kmem = Some(KmemSnapshot {
        mode: "percpu".into(),
        lists: vec![
            KmemList {
                hart: 0,
                free_pages: 100,
                steals: 2,
                pages_stolen: 50,
                ..KmemList::default()
            },
            KmemList {
                hart: 1,
                free_pages: 20,
                steals: 1,
                pages_stolen: 10,
                ..KmemList::default()
            },
        ],
        ..Default::default()
    });
    a.observe(&s, Consistency::Live);
    let b = a.bcache().unwrap();
    assert_eq!(b.buckets[0].in_use, 2);
    assert_eq!(b.buckets[1].in_use, 0);
    assert_eq!(b.buckets[0].hit_rate, Some(0.75));
    assert_eq!(b.buckets[1].hit_rate, None);
    assert_eq!(b.buckets[0].lock_name.as_deref(), Some("bcache.bucket0"));
    assert_eq!(
        (b.nbuf, b.in_use, b.hits, b.misses, b.steals),
        (3, 2, 30, 10, 1)
    );
    let k = a.kmem().unwrap();
    assert_eq!((k.free_pages, k.steals, k.pages_stolen), (120, 3, 60));
}

#[test]
fn config_out_of_range_says_what_to_use() {
    let bad = AnalysisConfig {
        history_interval_ns: 0,
        ..AnalysisConfig::default()
    };
    let err = Analyzer::new(bad).err().unwrap().to_string();
    assert!(err.contains("history_interval_ns = 0"), "{err}");
    assert!(err.contains("at least 1000"), "{err}");
    let bad = AnalysisConfig {
        max_locks: 1 << 20,
        ..AnalysisConfig::default()
    };
    assert!(Analyzer::new(bad).is_err());
}
