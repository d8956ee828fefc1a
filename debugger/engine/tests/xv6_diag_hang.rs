//! Hangs of the xv6-shaped fixture kernel found without anyone pressing anything, under a live
//! lockscope session: an ABBA deadlock of two bucket locks, a reader re-entering a
//! writer-priority rwspinlock, a lost wakeup (a stall with no cycle), and a boot that hangs
//! before the console works. Each is confirmed by two stops a few hundred ms apart.

#[path = "xv6_diag_support/mod.rs"]
mod support;

use std::sync::Arc;

use lockscope_engine::analysis::HangKind;
use lockscope_engine::monitor::View;
use lockscope_engine::{StopReason, TargetState, Verdict};

use support::*;

/// Waits for a confirmed hang (the guest left stopped) and returns the view.
fn confirmed(run: &Run, name: &str, b: &Built) -> Arc<View> {
    let v = run.until("a confirmed hang", COMMAND, |v| {
        let h = v.hang.as_ref()?;
        let stopped = matches!(v.state, TargetState::Stopped { .. });
        (h.confirmed && stopped).then(|| Arc::new(v.clone()))
    });
    eprintln!("{name}: {}", v.verdict_sentence());
    if let Some(h) = &v.hang {
        eprintln!("{}", h.headline);
        for x in &h.harts {
            eprintln!(
                "  hart{} {} at {:?}",
                x.hart,
                x.state,
                x.at.as_ref().map(|p| p.short())
            );
        }
        for r in &h.rw {
            eprintln!("  {r}");
        }
        for c in &h.chains {
            eprintln!("  {c}");
        }
        for n in &h.notes {
            eprintln!("  note: {n}");
        }
    }
    record_view(name, &v, b);
    v
}

#[test]
fn bucket_order_deadlock_is_found_to_the_locks_harts_and_lines() {
    let b = Built::new(&["BUG=bucket-order", "BCACHE=parallel", "DWARF=2"]);
    let run = Run::start(&b);
    run.prompt();
    // Two harts must evict at the same instant; on a loaded host that can take a few runs.
    let mut v = None;
    for _ in 0..10 {
        let lines = run.view().console.len();
        run.type_line("bcachetest");
        let hung = run.wait_prompt_or(lines, COMMAND, |v| {
            (v.hang.as_ref().is_some_and(|h| h.confirmed)
                && matches!(v.state, TargetState::Stopped { .. }))
            .then_some(())
        });
        if hung.is_some() {
            v = Some(confirmed(&run, "xv6_deadlock", &b));
            break;
        }
    }
    let v = v.expect("10 runs of bcachetest and no deadlock");
    assert_eq!(
        v.check.verdict,
        Verdict::Deadlock,
        "{}",
        v.verdict_sentence()
    );
    assert_eq!(
        v.state,
        TargetState::Stopped {
            reason: StopReason::Sample
        }
    );
    let h = v.hang.as_ref().unwrap();
    assert_eq!(h.kind, Some(HangKind::Deadlock));
    assert!(
        h.apart_ns.is_some_and(|n| n >= 200_000_000),
        "{:?}",
        h.apart_ns
    );
    let c = v.report.deadlocks.iter().find(|d| d.confirmed).unwrap();
    assert!(c.edges.len() >= 2, "{c:?}");
    let wait_line = format!("bio.c:{}", b.line_of("bio.c", "acquire(BUCKET_LOCK(o));"));
    for e in &c.edges {
        let lock = v.report.locks.iter().find(|l| l.id == e.lock).unwrap();
        assert_eq!(lock.name, "bcache.bucket", "{e:?}");
        // Named by its path (`bcache.locks[4]` in this layout): every bucket lock has the same
        // name string.
        assert!(e.lock_name.starts_with("bcache.locks["), "{e:?}");
        // Each waiter waits in recycle; each holder took its bucket in bget.
        assert_eq!(v.place(e.waiter_pc).file_line(), wait_line, "{e:?}");
        let held_at = v
            .place(e.holder_pc.expect("where the holder took it"))
            .file_line();
        assert!(held_at.starts_with("bio.c:"), "{held_at}");
    }
    let sentence = v.verdict_sentence();
    assert!(sentence.starts_with("deadlock: hart"), "{sentence}");
    assert!(sentence.contains(&wait_line), "{sentence}");
}

#[test]
fn rwlock_reentry_hangs_reader_and_writer() {
    let b = Built::new(&["BUG=rw-reenter"]);
    let run = Run::start(&b);
    run.prompt();
    run.type_line("rwlktest");
    let v = confirmed(&run, "xv6_rwlock", &b);
    assert_eq!(
        v.check.verdict,
        Verdict::Deadlock,
        "{}",
        v.verdict_sentence()
    );
    let h = v.hang.as_ref().unwrap();
    assert_eq!(h.kind, Some(HangKind::RwDeadlock));
    let rw = &v.report.hang.as_ref().unwrap().rw[0];
    assert_eq!(rw.rwlock, "rwlk");
    assert!(!rw.readers.is_empty() && !rw.writers.is_empty(), "{rw:?}");
    assert!(
        rw.readers.iter().any(|r| r.earlier.is_some()),
        "a reader re-entered: {rw:?}"
    );
    assert_eq!(rw.writers_waiting, Some(1), "{rw:?}");
    let sentence = v.verdict_sentence();
    assert!(
        sentence.contains("asks again for a read lock it already holds"),
        "{sentence}"
    );
    let check_line = format!(
        "rwlktest.c:{}",
        b.line_of("rwlktest.c", "  read_acquire(&rwlk);\n#endif\n  if (pair_a")
    );
    assert!(sentence.contains(&check_line), "{check_line} in {sentence}");
}

#[test]
fn lost_wakeup_stalls_with_every_sleeper_and_its_stack() {
    let b = Built::new(&["BUG=lost-wakeup"]);
    let run = Run::start(&b);
    run.prompt();
    run.type_line("bcachetest");
    let v = confirmed(&run, "xv6_stall", &b);
    assert_eq!(v.check.verdict, Verdict::Stall, "{}", v.verdict_sentence());
    let h = v.hang.as_ref().unwrap();
    assert_eq!(h.kind, Some(HangKind::Stall));
    // A worker asleep on a buf's free sleeplock, its stack through the page table.
    let s = h
        .sleepers
        .iter()
        .find(|s| {
            s.sleeplock
                .as_deref()
                .is_some_and(|x| x.starts_with("free"))
        })
        .unwrap_or_else(|| panic!("{:#?}", h.sleepers));
    assert_eq!(s.name, "bcachetest");
    let funcs: Vec<&str> = s
        .frames
        .iter()
        .filter_map(|f| f.function.as_deref())
        .collect();
    assert!(
        funcs.starts_with(&["sched", "sleep", "acquiresleep"]),
        "{funcs:?}"
    );
    assert!(funcs.contains(&"bread"), "{funcs:?}");
    assert!(
        h.sleepers.iter().any(|s| s.name == "sh"),
        "the shell waits for its children"
    );
    assert!(!h.chains.is_empty());
    assert!(
        v.verdict_sentence().contains("nobody will wake it"),
        "{}",
        v.verdict_sentence()
    );
}

#[test]
fn boot_without_pmp_says_where_each_hart_is_stuck() {
    let b = Built::new(&["BUG=no-pmp"]);
    let run = Run::start(&b);
    let v = confirmed(&run, "xv6_boot_hang", &b);
    assert_eq!(v.check.verdict, Verdict::Stall, "{}", v.verdict_sentence());
    let h = v.hang.as_ref().unwrap();
    assert_eq!(h.kind, Some(HangKind::Boot));
    assert_eq!(h.harts.len(), b.cpus as usize);
    assert!(h.harts.iter().all(|x| x.pc < 0x8000_0000), "{:?}", h.harts);
    assert!(h.notes.iter().any(|n| n.contains("PMP")), "{:?}", h.notes);
    assert!(
        v.verdict_sentence().starts_with("boot hang"),
        "{}",
        v.verdict_sentence()
    );
    assert!(v.console.iter().all(|l| !l.contains("booting")));
}
