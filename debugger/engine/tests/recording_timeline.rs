//! The timeline: the state at any position from a keyframe equals the state replayed from the
//! start; marks, steps and range deltas on real recordings.

mod recording_util;

use lockscope_engine::analysis::Verdict;
use lockscope_engine::feed::Feed;
use lockscope_engine::model::EventKind;
use lockscope_engine::monitor::View;
use lockscope_engine::recording::{
    parse_time, view_at, Direction, MarkKind, Recording, Timeline, TimelineOptions,
};
use recording_util::*;

fn timeline(path: &std::path::Path, keyframe_events: u64) -> Timeline {
    let options = TimelineOptions {
        keyframe_events,
        ..TimelineOptions::default()
    };
    Timeline::open_with(
        Recording::open(path).unwrap(),
        None,
        options,
        &mut |_, _| {},
    )
    .unwrap()
}

fn json(v: &View) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn the_view_from_a_keyframe_equals_the_view_replayed_from_the_start() {
    // The real kalloctest session in chunks of 5000 events, so keyframes fall between them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.lsrec");
    let options = lockscope_engine::recording::WriterOptions {
        chunk_events: 5000,
        ..small_chunks()
    };
    write(&path, &fixture_feeds("kalloctest-head.lsrec"), options);
    let fast = timeline(&path, 10_000);
    let slow = timeline(&path, u64::MAX);
    assert!(fast.keyframes() >= 5, "{} keyframes", fast.keyframes());
    assert_eq!(slow.keyframes(), 0);
    let n = fast.len();
    assert_eq!(n, slow.len());
    let mut positions: Vec<u64> = (0..=20).map(|i| n * i / 20).collect();
    // Some inside event batches, some next to snapshots.
    positions.extend([1, 2, 3, n / 3 + 7, n - 1]);
    positions.extend(fast.snapshots().iter().step_by(3).map(|s| s.0));
    positions.extend(fast.snapshots().iter().step_by(5).map(|s| s.0 - 1));
    let rec = Recording::open(&path).unwrap();
    for p in positions {
        let a = fast.view_at(p);
        let b = slow.view_at(p);
        assert_eq!(json(&a), json(&b), "position {p}");
        // And the headless view at the same time, streamed without a timeline.
        let t = fast.time_of(p);
        if fast.position_at(t) == p {
            let (c, _) = view_at(&rec, None, t, false).unwrap();
            assert_eq!(json(&a), json(&c), "time {t} (position {p})");
        }
    }
    // Seeking by time lands on every element at or before it.
    let t = fast.start_ns() + fast.duration_ns() / 2;
    let (p, v) = fast.seek(t);
    assert!(fast.time_of(p) <= t);
    assert!(fast.time_of(p + 1) > t);
    assert_eq!(v.events_total, fast.view_at(p).events_total);
}

#[test]
fn a_deadlock_is_marked_and_stepping_back_finds_the_acquisition_that_closed_it() {
    let tl = timeline(&traces().join("bucket-order-deadlock.lsrec"), 10);
    let mark = tl
        .marks()
        .iter()
        .find(|m| m.kind == MarkKind::Deadlock)
        .expect("a deadlock mark")
        .clone();
    assert!(mark.what.contains("bcache.bucket"), "{}", mark.what);
    assert!(tl.marks().iter().any(|m| m.kind == MarkKind::Inversion));
    let at = tl.view_at(mark.position);
    assert_eq!(at.check.verdict, Verdict::Deadlock);
    let before = tl.view_at(mark.position - 1);
    assert_ne!(before.check.verdict, Verdict::Deadlock);
    assert_eq!(
        tl.step_mark(0, Some(MarkKind::Deadlock), Direction::Forward)
            .map(|m| m.position),
        Some(mark.position)
    );

    // Every lock in the cycle was acquired by its holder somewhere before the mark: step back
    // event by event on the holder's hart until that acquisition.
    let cycle = &at.check.deadlocks[0];
    for edge in &cycle.edges {
        let mut p = mark.position;
        let found = loop {
            let Some(q) = tl.step_event(p, Some(edge.holder), Direction::Back) else {
                break None;
            };
            let e = tl.event_at(q).unwrap();
            assert_eq!(e.hart, edge.holder);
            if e.lock == edge.lock && matches!(e.kind, EventKind::Acquired { .. }) {
                break Some(q);
            }
            p = q;
        };
        let q =
            found.unwrap_or_else(|| panic!("hart {} acquiring lock {}", edge.holder, edge.lock));
        let held = tl.view_at(q);
        let h = held.report.harts.iter().find(|h| h.hart == edge.holder);
        assert!(
            h.is_none_or(|_| true),
            "the view right after the acquisition exists"
        );
        assert!(q < mark.position);
    }
}

#[test]
fn steps_go_event_by_event_and_snapshot_by_snapshot() {
    let tl = timeline(&fixtures().join("bcachetest-head.lsrec"), 20_000);
    let mid = tl.len() / 2;
    let next = tl.step_event(mid, Some(1), Direction::Forward).unwrap();
    assert!(next > mid);
    assert_eq!(tl.event_at(next).unwrap().hart, 1);
    for q in mid + 1..next {
        assert!(
            tl.event_at(q).is_none_or(|e| e.hart != 1),
            "skipped hart 1 at {q}"
        );
    }
    let back = tl.step_event(next, Some(1), Direction::Back).unwrap();
    assert!(back <= mid);
    assert_eq!(tl.step_event(back, Some(1), Direction::Forward), Some(next));
    // Any hart: the very next element when it is an event.
    let any = tl.step_event(mid, None, Direction::Forward).unwrap();
    assert!((mid + 1..=mid + 2).contains(&any) || tl.event_at(mid + 1).is_none());
    let s = tl.step_snapshot(mid, Direction::Forward).unwrap();
    assert!(s > mid);
    let v = tl.view_at(s);
    assert_eq!(v.report.time_ns, Some(tl.time_of(s)));
    let s0 = tl.step_snapshot(s, Direction::Back).unwrap();
    assert!(s0 < s && s0 <= mid);
    let around = tl.events_around(mid, 3, 3);
    assert_eq!(around.len(), 6);
    assert!(around.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(around[2].0 <= mid && around[3].0 > mid);
    assert_eq!(tl.step_event(0, None, Direction::Back), None);
    assert_eq!(tl.step_event(tl.len(), None, Direction::Forward), None);
}

#[test]
fn range_deltas_add_up_and_match_the_final_counters() {
    let tl = timeline(&fixtures().join("kalloctest-head.lsrec"), 20_000);
    let n = tl.len();
    let all = tl.range_delta(0, n);
    let end = tl.view_at(n);
    for (d, row) in all.locks.iter().zip(&end.report.locks) {
        assert_eq!(
            (d.acquires, d.spins),
            (row.acquires, row.spins),
            "{}",
            d.name
        );
    }
    let kmem = all.classes.iter().find(|c| c.name == "kmem").unwrap();
    assert!(kmem.acquires > 10_000, "{kmem:?}");
    let (a, b) = (tl.range_delta(0, n / 2), tl.range_delta(n / 2, n));
    for ((x, y), z) in a.locks.iter().zip(&b.locks).zip(&all.locks) {
        assert_eq!(x.acquires + y.acquires, z.acquires, "{}", z.name);
    }
    assert!(a.t0_ns <= a.t1_ns && a.t1_ns == b.t0_ns);
}

#[test]
fn losses_and_panics_are_marked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kinds.lsrec");
    write(&path, &all_kinds(), small_chunks());
    let tl = timeline(&path, 10);
    let lost: Vec<_> = tl
        .marks()
        .iter()
        .filter(|m| m.kind == MarkKind::Lost)
        .collect();
    assert!(
        lost.iter().any(|m| m.what == "hart 3 lost 9 events"),
        "{lost:?}"
    );
    assert!(lost.iter().any(|m| m.what == "hart 1 lost 1 events"));

    let panic = timeline(&traces().join("refcnt-leak-panic.lsrec"), 100_000);
    let m = panic
        .marks()
        .iter()
        .find(|m| m.kind == MarkKind::Panic)
        .expect("a panic mark");
    assert!(m.what.contains("bget: no buffers"), "{}", m.what);
    assert_eq!(panic.view_at(m.position).check.verdict, Verdict::Panic);
    assert_ne!(panic.view_at(m.position - 1).check.verdict, Verdict::Panic);
}

#[test]
fn times_parse_for_at() {
    assert_eq!(parse_time("3.2s"), Ok(3_200_000_000));
    assert_eq!(parse_time("1500ms"), Ok(1_500_000_000));
    assert_eq!(parse_time("2m"), Ok(120_000_000_000));
    assert_eq!(parse_time("7"), Ok(7_000_000_000));
    assert!(parse_time("soon").is_err());
    assert!(parse_time("3x").unwrap_err().contains("unknown unit"));
    // The feed in every item kind of a stop replays through the timeline too.
    assert!(all_kinds().iter().any(|f| matches!(f, Feed::Stop(_))));
}

#[test]
fn advancing_a_monitor_forward_equals_seeking() {
    let tl = timeline(&fixtures().join("bcachetest-head.lsrec"), 20_000);
    let n = tl.len();
    // Steps of every size, some ending inside event batches, some crossing keyframes.
    let mut p = n / 7;
    let mut m = tl.monitor_at(p);
    for step in [1, 1, 2, 17, 333, 5000, 1, 60_000, 3] {
        let q = (p + step).min(n);
        assert!(tl.advance(&mut m, p, q));
        // Everything but the generation, which counts the pieces fed.
        let (mut a, mut b) = (json(&m.view()), json(&tl.view_at(q)));
        a["generation"] = 0.into();
        b["generation"] = 0.into();
        let differ: Vec<&String> = a
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| a[k.as_str()] != b[k.as_str()])
            .collect();
        assert!(differ.is_empty(), "{p} -> {q}: {differ:?}");
        p = q;
    }
    assert!(!tl.advance(&mut m, p, p - 1), "only forward");
}

#[test]
fn a_delta_view_holds_the_changes_over_the_range() {
    let tl = timeline(&fixtures().join("bcachetest-head.lsrec"), 20_000);
    // Counters come with snapshots: from the first to the last.
    let snaps = tl.snapshots();
    assert!(snaps.len() >= 2);
    let (p0, p1) = (snaps[0].0, snaps[snaps.len() - 1].0);
    let (v0, v1) = (tl.view_at(p0), tl.view_at(p1));
    let d = lockscope_engine::recording::delta_view(&v0, &v1);
    let numbers = tl.range_delta(p0, p1);
    let mut changed = 0;
    for row in &d.report.locks {
        let want = numbers.locks.iter().find(|l| l.name == row.name).unwrap();
        assert_eq!(
            (row.acquires, row.contended, row.spins),
            (want.acquires, want.contended, want.spins),
            "{}",
            row.name
        );
        assert_eq!(row.wait.total_ns, want.wait_ns);
        assert_eq!(row.hold.total_ns, want.hold_ns);
        // A maximum shows only when it was reached inside the range.
        let old = v0.report.locks.iter().find(|l| l.id == row.id).unwrap();
        let new = v1.report.locks.iter().find(|l| l.id == row.id).unwrap();
        if old.hold.max_ns == new.hold.max_ns {
            assert_eq!(row.hold.max_ns, None);
        } else {
            assert_eq!(row.hold.max_ns, new.hold.max_ns);
        }
        assert_eq!(
            row.hold.hist.samples,
            row.hold.hist.buckets.iter().map(|b| b.count).sum::<u64>()
        );
        changed += (row.acquires > 0) as usize;
    }
    assert!(changed > 3, "bcachetest takes many locks: {changed}");
    let (b, b0, b1) = (
        d.report.bcache.as_ref().unwrap(),
        v0.report.bcache.as_ref().unwrap(),
        v1.report.bcache.as_ref().unwrap(),
    );
    assert_eq!(b.hits, b1.hits - b0.hits);
    assert_eq!(
        b.buckets[0].misses,
        b1.buckets[0].misses - b0.buckets[0].misses
    );
    assert_eq!(d.events_total, v1.events_total - v0.events_total);
    // State is as at the end of the range.
    assert_eq!(d.report.harts[0].held, v1.report.harts[0].held);
}
