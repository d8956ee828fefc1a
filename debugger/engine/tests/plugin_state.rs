//! The plugin's published per-hart state and its clock, on the lockscope kernel under QEMU 7.2:
//! a deadlock is known exactly without a stop; a gdb stop is taken out of event times; the
//! release of a lock taken by a test-and-set the plugin does not watch is never a release.

#[path = "plugin_util.rs"]
mod util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lockscope_engine::gdb::{Config, GdbClient};
use lockscope_engine::sources::plugin::{monotonic_ns, PluginEventKind, WatchKind};
use util::*;

/// bug=bucket-order on 2 harts: both harts publish "spinning on the lock the other holds",
/// unchanged over time, and each ring ends with that hart's acquisition and its endless spin.
#[test]
fn deadlock_is_published_without_a_stop() {
    let _g = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let elf = kernel();
    let plan = kernel_plan(&elf);
    let cycle = |run: &Run| {
        let st = run.file.hart_states();
        if st.len() != 2 {
            return None;
        }
        let (a, b) = (&st[0], &st[1]);
        let (sa, sb) = (a.spinning?, b.spinning?);
        let a_holds = a.held.iter().any(|h| h.addr == sb.addr);
        let b_holds = b.held.iter().any(|h| h.addr == sa.addr);
        (a_holds && b_holds).then_some((sa, sb))
    };
    // The race behind the bug does not show on every boot (the kernel's own test allows
    // several): boot until it does.
    let mut boots = 0;
    let (mut run, first) = 'boots: loop {
        boots += 1;
        let mut run = boot(
            Which::Qemu72,
            &elf,
            2,
            "workload=bcachetest bug=bucket-order",
            &plan,
            true,
            &[],
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            run.drain();
            if let Some(c) = cycle(&run) {
                break 'boots (run, c);
            }
            assert!(
                Instant::now() < deadline,
                "no deadlock published within 60 s:\n{}",
                run.console()
            );
            if run.child.try_wait().unwrap().is_some() {
                assert!(
                    boots < 5,
                    "5 boots without the deadlock:\n{}",
                    run.console()
                );
                continue 'boots;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Still the same spins (same locks, same start) 300 ms later: a deadlock, not contention.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(300) {
        run.drain();
        std::thread::sleep(Duration::from_millis(10));
    }
    let later = cycle(&run).expect("the cycle went away");
    assert_eq!(
        (first.0.addr, first.0.since_ns),
        (later.0.addr, later.0.since_ns)
    );
    assert_eq!(
        (first.1.addr, first.1.since_ns),
        (later.1.addr, later.1.since_ns)
    );
    assert!(
        later.0.spins > first.0.spins,
        "hart 0 stopped testing its lock"
    );
    assert_ne!(first.0.site_pc, 0);
    run.drain();
    for (h, spin, other) in [(0u32, first.0, first.1), (1, first.1, first.0)] {
        let mine: Vec<_> = run.events.iter().filter(|e| e.hart == h).collect();
        let n = mine.len();
        assert!(n >= 3);
        // ... Acquired(the lock the other spins on) ... Contended(the lock it spins on)
        assert_eq!(
            mine[n - 1].kind,
            PluginEventKind::Contended,
            "hart {h}'s last event"
        );
        assert_eq!(mine[n - 1].addr, spin.addr);
        assert_eq!(mine[n - 1].time_ns, spin.since_ns);
        assert_eq!(
            mine[n - 1].owner,
            Some(1 - h),
            "the owner named at contention"
        );
        // Its acquisition of the lock the other wants is in the ring, never released after.
        let took = mine
            .iter()
            .rposition(|e| e.kind == PluginEventKind::Acquired && e.addr == other.addr)
            .expect("the acquisition of the held lock is in the ring");
        assert!(
            !mine[took..]
                .iter()
                .any(|e| e.kind == PluginEventKind::Released && e.addr == other.addr),
            "hart {h} released the lock it holds"
        );
        assert_eq!(
            mine[took].site_pc,
            run.file
                .hart_state(h)
                .unwrap()
                .held
                .iter()
                .find(|x| x.addr == other.addr)
                .unwrap()
                .site_pc
        );
    }
}

/// A gdb stop of 2 s in the middle of kalloctest: with the stop written into the control block,
/// no hart's events jump by it; wall time across the stop did.
#[test]
fn stops_are_taken_out_of_event_times() {
    let _g = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let elf = kernel();
    let plan = kernel_plan(&elf);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gdb = format!("tcp:127.0.0.1:{port}");
    let mut run = boot(
        Which::Qemu72,
        &elf,
        2,
        "workload=kalloctest kalloc=percpu secs=3",
        &plan,
        false,
        &["-gdb", &gdb],
    );
    // Both harts busy in kalloctest before the stop.
    let t0 = Instant::now();
    while (0..2).any(|h| run.events.iter().filter(|e| e.hart == h).count() < 10_000) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "kalloctest did not start:\n{}",
            run.console()
        );
        run.drain();
        std::thread::sleep(Duration::from_millis(5));
    }
    // Connecting stops the VM (QEMU's stub stops it for a new client).
    let c = GdbClient::connect(&format!("127.0.0.1:{port}"), Config::default()).unwrap();
    let stopped_at = monotonic_ns();
    run.file.note_stopped(stopped_at);
    run.drain();
    let before = run.events.len();
    let wall = Instant::now();
    while wall.elapsed() < Duration::from_secs(2) {
        run.drain();
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = run.events.len() - before;
    run.file.note_resumed(monotonic_ns());
    c.detach().unwrap();
    let code = run.drain_until_exit(Duration::from_secs(60));
    eprintln!(
        "{} events ({during} while stopped), {} lost, longest gap between drains {:?}",
        run.events.len(),
        run.lost,
        run.max_gap
    );
    assert_eq!(code, Some(0), "{}", run.console());
    assert_eq!(run.lost, 0);
    assert!(run.file.stopped_total_ns() >= 2_000_000_000);
    assert_eq!(during, 0, "events while stopped: the VM did not stop");
    for h in 0..2 {
        let times: Vec<u64> = run
            .events
            .iter()
            .filter(|e| e.hart == h)
            .map(|e| e.time_ns)
            .collect();
        assert!(times.len() > 1000);
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "hart {h}: time went back"
        );
        let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        let split = run.events[..before].iter().filter(|e| e.hart == h).count();
        assert!(split < times.len(), "hart {h} has no events after the stop");
        let across = times[split] - times[split - 1];
        assert!(
            across < 1_000_000_000,
            "hart {h}: {} ms between its events either side of the 2 s stop",
            across / 1_000_000
        );
        assert!(
            gap < 1_000_000_000,
            "hart {h}: a {} ms gap between events: the 2 s stop was not taken out",
            gap / 1_000_000
        );
    }
}

/// Watch only the spin loop's test-and-sets (as if the first attempt were an inlined acquire the
/// plugin cannot see): uncontended acquisitions are unseen, and their releases come as unseen
/// releases, never as releases; the seen ones pair exactly.
#[test]
fn releases_of_unseen_acquisitions_are_not_releases() {
    let _g = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let elf = kernel();
    let mut plan = kernel_plan(&elf);
    let first_tas = plan
        .watch
        .iter()
        .filter(|w| w.kind == WatchKind::Tas as u32)
        .map(|w| w.pc)
        .min()
        .unwrap();
    plan.watch.retain(|w| w.pc != first_tas);
    let mut run = boot(
        Which::Qemu72,
        &elf,
        2,
        "workload=kalloctest kalloc=global secs=1",
        &plan,
        false,
        &[],
    );
    let code = run.drain_until_exit(Duration::from_secs(60));
    assert!(matches!(code, Some(0 | 2)), "{}", run.console());
    assert_eq!(run.lost, 0);
    let locks = kernel_locks(&elf, &mut run.ram());
    let mut unseen: BTreeMap<u64, u64> = BTreeMap::new();
    for e in run
        .events
        .iter()
        .filter(|e| e.kind == PluginEventKind::UnseenRelease)
    {
        *unseen.entry(e.addr).or_default() += 1;
    }
    let seen = per_lock(&run.events);
    let kmem = locks.iter().find(|l| l.name == "kmem").unwrap();
    assert!(kmem.contended > 10 && kmem.acquires > kmem.contended);
    for l in &locks {
        let got = seen.get(&(l.addr & !3)).copied().unwrap_or_default();
        assert_eq!(
            got.0, l.contended,
            "{}: only contended acquisitions are seen",
            l.name
        );
        assert_eq!(
            got.3, got.0,
            "{}: releases pair with seen acquisitions only",
            l.name
        );
        let u = unseen.get(&(l.addr & !3)).copied().unwrap_or(0);
        assert_eq!(u, l.acquires - l.contended, "{}: unseen releases", l.name);
    }
    let published: u64 = run
        .file
        .hart_states()
        .iter()
        .map(|s| s.unseen_releases)
        .sum();
    assert_eq!(published, unseen.values().sum::<u64>());
}
