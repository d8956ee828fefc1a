//! Lockdep's rules on synthetic event streams: nested instances of one class in one fixed order
//! (index ascending or descending, parent before child) or under a common gate, trylocks,
//! reads re-entered under a waiting writer, and spinlocks held across acquiresleep.

#[path = "fixtures/analysis/support.rs"]
mod support;

use lockscope_engine::analysis::*;
use lockscope_engine::model::*;
use support::*;

/// An xv6 buffer cache as the xv6 source reads it: `bcache.lock` (id 0) and 13 buckets (ids
/// 1..=13, bucket i is id i + 1) all named "bcache" by the student, at their variable paths;
/// then `bcache.evict` (id 14, its own class) and the sleeplock inner spinlock of buffer 0
/// (id 15).
const GLOBAL: LockId = 0;
const EVICT: LockId = 14;
const BUF0: LockId = 15;

fn bucket(i: u32) -> LockId {
    i + 1
}

fn xv6_snap(t: u64, nharts: u32) -> Snapshot {
    let mut names: Vec<(String, String)> = vec![("bcache".into(), "bcache.lock".into())];
    for i in 0..13 {
        names.push(("bcache".into(), format!("bcache.bucket[{i}].lock")));
    }
    names.push(("evict".into(), "evict".into()));
    names.push(("sleep lock".into(), "bcache.buf[0].lock.lk".into()));
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_str()))
        .collect();
    let mut s = Snap::new(t, &pairs, nharts).build();
    // The source's class is the wildcarded path; the analysis' rule decides.
    for (l, (_, path)) in s.locks.iter_mut().zip(&names) {
        l.meta.class = path.clone();
        l.path = Some(path.clone());
        l.index = index_from_path(path);
    }
    s.sleeplocks.push(SleeplockSnapshot {
        path: "bcache.buf[0].lock".into(),
        name: Some("buffer".into()),
        addr: 0x8000_9000,
        lock: Some(BUF0),
        ..Default::default()
    });
    s
}

fn analyzer(nharts: u32) -> Analyzer {
    let mut a = Analyzer::default();
    for h in 0..nharts {
        a.note_trace_start(h);
    }
    a.observe(&xv6_snap(1, nharts), Consistency::Live);
    a
}

fn pc(l: LockId) -> u64 {
    0x8000_0000 + l as u64 * 0x10
}

/// Hart `h` holds `outer` (and `gate` around it) while taking `inner`, then releases all.
fn nest(t: u64, h: HartId, gate: Option<LockId>, outer: LockId, inner: LockId) -> Vec<LockEvent> {
    let mut v = Vec::new();
    if let Some(g) = gate {
        v.push(acq(t, h, g, pc(g)));
    }
    v.push(acq(t + 1, h, outer, pc(outer)));
    v.push(acq(t + 2, h, inner, pc(inner) + 4));
    v.push(rel(t + 3, h, inner, 0));
    v.push(rel(t + 4, h, outer, 0));
    if let Some(g) = gate {
        v.push(rel(t + 5, h, g, 0));
    }
    v
}

fn kinds(o: &LockOrderReport) -> Vec<InversionKind> {
    o.inversions.iter().map(|i| i.kind).collect()
}

#[test]
fn a_stealing_scan_that_never_wraps_has_no_cycle_but_breaks_the_index_order() {
    // The measured lab solution: bget holds its own bucket b and scans (b + i) % 13. In a whole
    // bcachetest every scan went 1 < 2 < ... < 12 < 0: no scan wrapped past bucket 0.
    let mut a = analyzer(4);
    let mut t = 10;
    let mut distinct = std::collections::BTreeSet::new();
    for round in 0..3 {
        for b in 1..13u32 {
            let h = (b + round) % 4;
            for j in (b + 1..13).chain([0]) {
                a.ingest(&nest(t, h, None, bucket(b), bucket(j)));
                distinct.insert((b, j));
                t += 10;
            }
        }
    }
    assert_eq!(distinct.len(), 78);
    let o = a.lock_order();
    assert_eq!(o.edges, 78);
    assert!(
        !kinds(&o).contains(&InversionKind::Cycle),
        "no cycle: cycle detection alone misses it"
    );
    assert_eq!(kinds(&o), [InversionKind::InstanceOrder], "{o:#?}");
    let inv = &o.inversions[0];
    assert_eq!(inv.class.as_deref(), Some("bcache"));
    assert_eq!(
        inv.orders_seen,
        [(NestOrder::Ascending, 66), (NestOrder::Descending, 12)]
    );
    // The witness: the earliest nesting that went down (held 1, took 0, the end of bucket 1's
    // scan) and the earliest that went up (held 1, took 2).
    let (down, up) = (&inv.edges[0], &inv.edges[1]);
    assert_eq!((down.from, down.to), (bucket(1), bucket(0)));
    assert_eq!((up.from, up.to), (bucket(1), bucket(2)));
    assert_eq!(
        (down.first.from_pc, down.first.to_pc),
        (pc(bucket(1)), pc(bucket(0)) + 4),
        "both acquisition sites"
    );
    let check = a.check();
    assert_eq!(check.verdict, Verdict::LockOrderInversion);
    assert_eq!(check.severity, Severity::Warning);
    assert!(
        check.summary.contains(
            "bcache instances nested in no fixed order (66 ascending index, 12 descending index)"
        ),
        "{}",
        check.summary
    );
}

#[test]
fn one_fixed_order_ascending_or_descending_is_safe() {
    for descending in [false, true] {
        let mut a = analyzer(2);
        let mut t = 0;
        for b in 0..13u32 {
            for j in b + 1..13 {
                let (outer, inner) = if descending { (j, b) } else { (b, j) };
                a.ingest(&nest(t, b % 2, None, bucket(outer), bucket(inner)));
                t += 10;
            }
        }
        let o = a.lock_order();
        assert_eq!(o.edges, 78);
        assert!(o.inversions.is_empty(), "descending {descending}: {o:#?}");
        assert_eq!(a.check().verdict, Verdict::Ok);
    }
}

#[test]
fn the_wrap_is_found_with_the_first_nesting_that_breaks_the_order() {
    // "held 5, took 0; held 1, took 2": ascending except the wrap.
    let mut a = analyzer(2);
    a.ingest(&nest(0, 0, None, bucket(1), bucket(2)));
    a.ingest(&nest(10, 1, None, bucket(5), bucket(0)));
    a.ingest(&nest(20, 0, None, bucket(3), bucket(9)));
    let o = a.lock_order();
    assert_eq!(kinds(&o), [InversionKind::InstanceOrder]);
    let e = &o.inversions[0].edges;
    assert_eq!(
        [
            (e[0].from, e[0].to, e[0].first.hart),
            (e[1].from, e[1].to, e[1].first.hart)
        ],
        [(bucket(5), bucket(0), 1), (bucket(1), bucket(2), 0)]
    );
    let s = a.check().summary;
    assert!(
        // The bucket locks share a name: each is told apart by its variable.
        s.contains("bcache (bcache.bucket[5].lock) -> bcache (bcache.bucket[0].lock) (hart 1, 0x80000060 then 0x80000014)"),
        "{s}"
    );
}

#[test]
fn parent_before_child_is_a_fixed_order_and_the_reverse_breaks_it() {
    let mut a = analyzer(2);
    // bcache.lock, then a bucket: a lock in a structure before the locks of its members.
    for b in 0..12 {
        a.ingest(&nest(b as u64 * 10, b % 2, None, GLOBAL, bucket(b)));
    }
    assert!(a.lock_order().inversions.is_empty());
    // Once, a bucket's lock held while taking bcache.lock.
    a.ingest(&nest(500, 1, None, bucket(12), GLOBAL));
    let o = a.lock_order();
    assert_eq!(kinds(&o), [InversionKind::InstanceOrder], "{o:#?}");
    let inv = &o.inversions[0];
    assert_eq!(
        inv.orders_seen,
        [(NestOrder::ParentFirst, 12), (NestOrder::ChildFirst, 1)]
    );
    assert_eq!((inv.edges[0].from, inv.edges[0].to), (bucket(12), GLOBAL));
}

#[test]
fn nestings_that_disagree_under_a_common_gate_are_guarded() {
    let mut a = analyzer(2);
    a.ingest(&nest(0, 0, Some(EVICT), bucket(2), bucket(9)));
    a.ingest(&nest(10, 1, Some(EVICT), bucket(11), bucket(4)));
    let o = a.lock_order();
    assert!(o.inversions.is_empty(), "{o:#?}");
    assert_eq!(o.guarded.len(), 1);
    assert_eq!(o.guarded[0].kind, InversionKind::InstanceOrder);
    assert_eq!(o.guarded[0].common_gates, [EVICT]);
    assert_eq!(a.check().verdict, Verdict::Ok);
    assert_eq!(a.check().guarded_inversions, 1);
    // The same descending nesting once without the gate: it can interleave with the other now.
    a.ingest(&nest(20, 1, None, bucket(11), bucket(4)));
    let o = a.lock_order();
    assert_eq!(kinds(&o), [InversionKind::InstanceOrder]);
    assert!(o.inversions[0].common_gates.is_empty());
}

#[test]
fn a_trylock_adds_no_edge() {
    let mut a = analyzer(2);
    a.ingest(&nest(0, 0, None, bucket(1), bucket(2)));
    // Hart 1 holds bucket 5 and *tries* bucket 0: it never waits, so it orders nothing.
    let mut v = nest(10, 1, None, bucket(5), bucket(0));
    v[1].trylock = true;
    a.ingest(&v);
    let o = a.lock_order();
    assert_eq!(o.edges, 1, "only 1 -> 2");
    assert!(o.inversions.is_empty());
    assert_eq!(a.ingest_stats().trylocks, 1);
    // A lock taken by trylock still orders what is taken while it is held.
    let mut v = vec![acq(20, 1, bucket(8), pc(bucket(8)))];
    v[0].trylock = true;
    v.extend([
        acq(21, 1, bucket(3), 0x1234),
        rel(22, 1, bucket(3), 0),
        rel(23, 1, bucket(8), 0),
    ]);
    a.ingest(&v);
    assert_eq!(kinds(&a.lock_order()), [InversionKind::InstanceOrder]);
}

#[test]
fn instances_of_one_class_in_different_arrays_are_not_compared() {
    // Every sleeplock's inner spinlock is named "sleep lock": buffers' and inodes' are one
    // class, but bcache.buf[3] and itable.inode[5] have no index order between them.
    let paths = [
        "bcache.buf[3].lock.lk",
        "itable.inode[5].lock.lk",
        "bcache.buf[1].lock.lk",
        "bcache.buf[7].lock.lk",
    ];
    let mut s = Snap::new(1, &[("sleep lock", ""); 4], 2).build();
    for (l, p) in s.locks.iter_mut().zip(paths) {
        l.path = Some(p.into());
    }
    let mut a = Analyzer::default();
    a.note_trace_start(0);
    a.note_trace_start(1);
    a.observe(&s, Consistency::Live);
    a.ingest(&nest(0, 0, None, 0, 1)); // buf 3 -> inode 5
    a.ingest(&nest(10, 1, None, 1, 2)); // inode 5 -> buf 1
    a.ingest(&nest(20, 1, None, 2, 3)); // buf 1 -> buf 7: up
    assert!(a.lock_order().inversions.is_empty());
    // Within one array they compare: buf 3 -> buf 1 goes down.
    a.ingest(&nest(30, 0, None, 0, 2));
    let o = a.lock_order();
    assert_eq!(kinds(&o), [InversionKind::InstanceOrder]);
    assert_eq!(o.inversions[0].class.as_deref(), Some("sleep lock"));
}

#[test]
fn our_kernels_bucket_locks_are_ordered_by_the_number_their_name_ends_with() {
    let mut names = named("bcache.bucket", "bcache.bucket", 13);
    names.push(("bcache.evict".into(), "bcache.evict".into()));
    let mut a = Analyzer::default();
    a.note_trace_start(0);
    a.note_trace_start(1);
    let mut s = Snap::new(1, &refs(&names), 2).build();
    for l in &mut s.locks {
        l.index = index_from_name(&l.meta.name);
    }
    a.observe(&s, Consistency::Live);
    a.ingest(&nest(0, 0, None, 3, 7));
    a.ingest(&nest(10, 1, None, 12, 0));
    let o = a.lock_order();
    assert_eq!(kinds(&o), [InversionKind::InstanceOrder]);
    assert_eq!(o.inversions[0].class.as_deref(), Some("bcache.bucket"));
    // Without the index in the snapshot (a recording made before it existed) the names give it.
    let mut b = Analyzer::default();
    b.note_trace_start(0);
    b.note_trace_start(1);
    b.observe(&Snap::new(1, &refs(&names), 2).build(), Consistency::Live);
    b.ingest(&nest(0, 0, None, 3, 7));
    b.ingest(&nest(10, 1, None, 12, 0));
    assert_eq!(kinds(&b.lock_order()), [InversionKind::InstanceOrder]);
}

#[test]
fn a_cycle_is_reported_once_not_again_as_a_broken_order() {
    let mut a = analyzer(2);
    a.ingest(&nest(0, 0, None, bucket(3), bucket(7)));
    a.ingest(&nest(10, 1, None, bucket(7), bucket(3)));
    assert_eq!(kinds(&a.lock_order()), [InversionKind::Cycle]);
    // Another descending nesting outside the cycle is news: reported after the cycle.
    a.ingest(&nest(20, 1, None, bucket(9), bucket(1)));
    assert_eq!(
        kinds(&a.lock_order()),
        [InversionKind::Cycle, InversionKind::InstanceOrder]
    );
}

fn rw(e: LockEvent, mode: LockMode) -> LockEvent {
    LockEvent {
        mode: Some(mode),
        ..e
    }
}

/// A reader-writer lock (id 0, "rwlk") and a process lock (id 1) on 3 harts.
fn rw_analyzer() -> Analyzer {
    let mut a = Analyzer::default();
    for h in 0..3 {
        a.note_trace_start(h);
    }
    let mut s = Snap::new(1, &[("rwlk", "rwlk"), ("proc", "proc")], 3).build();
    s.processes.push(ProcessSnapshot {
        slot: 0,
        pid: 1,
        lock: Some(1),
        ..Default::default()
    });
    a.observe(&s, Consistency::Live);
    a
}

#[test]
fn a_read_taken_again_while_a_writer_waits_is_reported() {
    use LockMode::{Read, Write};
    let mut a = rw_analyzer();
    a.ingest(&[
        rw(acq(10, 0, 0, 0x100), Read),
        // Hart 1 starts waiting to write.
        rw(spin(11, 1, 0, 0x200), Write),
    ]);
    a.ingest(&[
        // Hart 0 reads again inside its read: under writer priority it waits for the writer,
        // which waits for hart 0's first read.
        rw(acq(12, 0, 0, 0x108), Read),
        rw(rel(13, 0, 0, 0), Read),
        rw(rel(14, 0, 0, 0), Read),
        rw(acq_c(15, 1, 0, 0x200), Write),
        rw(rel(16, 1, 0, 0), Write),
    ]);
    let o = a.lock_order();
    assert_eq!(kinds(&o), [InversionKind::RecursiveRead], "{o:#?}");
    let inv = &o.inversions[0];
    assert_eq!(inv.writer_waiting, Some(1));
    assert_eq!(
        (inv.edges[0].first.from_pc, inv.edges[0].first.to_pc),
        (0x100, 0x108)
    );
    let check = a.check();
    assert_eq!(check.verdict, Verdict::LockOrderInversion);
    assert!(
        check
            .summary
            .contains("hart 0 read rwlk again while reading it")
            && check.summary.contains("hart 1 was waiting to write"),
        "{}",
        check.summary
    );
    // Holds paired: the writer's wait, both reads released.
    let row = a.lock_row(0);
    assert_eq!(row.wait.hist.samples, 1);
    assert_eq!(a.ingest_stats().unmatched_rw_releases, 0);
    assert_eq!(a.ingest_stats().rw_events, 7);
}

#[test]
fn reads_on_different_harts_and_a_hold_released_elsewhere_are_fine() {
    use LockMode::Read;
    let mut a = rw_analyzer();
    a.ingest(&[
        rw(acq(10, 0, 0, 0x100), Read),
        rw(acq(11, 1, 0, 0x100), Read),
    ]);
    // The thread on hart 0 moved: its release comes from hart 2.
    a.ingest(&[rw(rel(12, 2, 0, 0), Read), rw(rel(13, 1, 0, 0), Read)]);
    a.ingest(&[rw(acq(14, 0, 0, 0x100), Read), rw(rel(15, 0, 0, 0), Read)]);
    assert!(a.lock_order().inversions.is_empty());
    assert_eq!(a.ingest_stats().unmatched_rw_releases, 0);
}

#[test]
fn a_hold_whose_release_was_never_seen_is_dropped_when_the_hart_switches_threads() {
    use LockMode::Read;
    let mut a = rw_analyzer();
    // Hart 0's reader was moved to another hart inside read_release and its release was not
    // seen. The hart then switches threads (it takes a process's lock) and another thread
    // reads: not a re-entry.
    a.ingest(&[
        rw(acq(10, 0, 0, 0x100), Read),
        acq(11, 0, 1, 0x300),
        rel(12, 0, 1, 0),
        rw(acq(13, 0, 0, 0x100), Read),
    ]);
    assert!(
        a.lock_order().inversions.is_empty(),
        "{:#?}",
        a.lock_order()
    );
}

#[test]
fn order_edges_include_reader_writer_holds() {
    use LockMode::{Read, Write};
    let s = Snap::new(1, &[("rwlk", "rwlk"), ("x", "x")], 2).build();
    let mut a = Analyzer::default();
    a.note_trace_start(0);
    a.note_trace_start(1);
    a.observe(&s, Consistency::Live);
    // Hart 0: read rwlk, then x. Hart 1: x, then write rwlk.
    a.ingest(&[
        rw(acq(10, 0, 0, 0x100), Read),
        acq(11, 0, 1, 0x110),
        rel(12, 0, 1, 0),
        rw(rel(13, 0, 0, 0), Read),
    ]);
    a.ingest(&[
        acq(20, 1, 1, 0x120),
        rw(acq(21, 1, 0, 0x130), Write),
        rw(rel(22, 1, 0, 0), Write),
        rel(23, 1, 1, 0),
    ]);
    let o = a.lock_order();
    assert_eq!(kinds(&o), [InversionKind::Cycle]);
    assert_eq!(o.inversions[0].names, ["rwlk", "x"]);
}

fn sleep_acq(t: u64, h: HartId, inner: LockId, pc: u64) -> LockEvent {
    LockEvent {
        mode: Some(LockMode::Sleep),
        ..acq(t, h, inner, pc)
    }
}

#[test]
fn a_spinlock_held_across_acquiresleep_is_flagged_before_sched_panics() {
    let mut a = analyzer(2);
    // bget holds bucket 4's lock while bread's acquiresleep takes buffer 0's sleeplock.
    a.ingest(&[
        acq(10, 1, bucket(4), 0x500),
        acq(11, 1, BUF0, 0x600),
        sleep_acq(12, 1, BUF0, 0x700),
        rel(13, 1, BUF0, 0),
        rel(14, 1, bucket(4), 0),
    ]);
    let found = a.sleep_holding();
    assert_eq!(found.len(), 1, "{found:#?}");
    let s = &found[0];
    assert_eq!(
        (s.lock, s.held_pc, s.pc, s.hart),
        (bucket(4), 0x500, 0x700, 1)
    );
    assert_eq!(s.lock_name, "bcache (bcache.bucket[4].lock)");
    assert_eq!(s.sleeplock_name, "buffer");
    let check = a.check();
    assert_eq!(check.verdict, Verdict::SpinlockAcrossSleep);
    assert_eq!(check.severity, Severity::Warning);
    assert!(
        check.summary.starts_with(
            "spinlock bcache (bcache.bucket[4].lock) (taken at 0x500) held across acquiresleep of buffer at 0x700 on hart 1"
        ),
        "{}",
        check.summary
    );
    // The sleeplock's own inner spinlock is not held across the sleep (sleep gives it up), and
    // no lock statistics come from sleeplock events.
    let mut b = analyzer(1);
    b.ingest(&[
        acq(10, 0, BUF0, 0x600),
        sleep_acq(11, 0, BUF0, 0x700),
        rel(12, 0, BUF0, 0),
    ]);
    assert!(b.sleep_holding().is_empty());
    assert_eq!(b.check().verdict, Verdict::Ok);
    assert_eq!(b.lock_row(BUF0).hold.hist.samples, 1);
    assert_eq!(b.ingest_stats().sleep_events, 1);
    assert_eq!(b.ingest_stats().double_acquires, 0);
}

#[test]
fn a_repeated_spinlock_across_acquiresleep_is_counted_once_per_site() {
    let mut a = analyzer(1);
    for k in 0..5 {
        let t = 100 * k;
        a.ingest(&[
            acq(t, 0, bucket(2), 0x500),
            acq(t + 1, 0, BUF0, 0x600),
            sleep_acq(t + 2, 0, BUF0, 0x700),
            rel(t + 3, 0, BUF0, 0),
            rel(t + 4, 0, bucket(2), 0),
        ]);
    }
    let found = a.sleep_holding();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].count, 5);
    assert!(a.check().summary.contains("(5 times)"));
}
