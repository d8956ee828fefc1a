//! The gdb proxy against real QEMU 7.2 running the real kernel, with real gdb-multiarch as the
//! user's gdb and lockscope's own `GdbClient` polling through the private port at the same time.

#[path = "gdbserver_util.rs"]
mod util;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockscope_engine::gdb::{Config, GdbClient};
use lockscope_engine::gdbserver::proxy::{ReportOutcome, UserStopReason};
use lockscope_engine::gdbserver::{GdbProxy, ProxyEvent};
use lockscope_engine::symbols::Symbols;
use util::*;

/// lockscope's side: polls the guest through the proxy's private port, as a session without
/// shared RAM does, and notes anything that is not its own interrupt.
struct Poller {
    polls: AtomicU64,
    heartbeat: AtomicU64,
    foreign: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
    quit: AtomicBool,
}

impl Poller {
    fn start(addr: SocketAddr, heartbeat_addr: u64) -> (Arc<Self>, std::thread::JoinHandle<()>) {
        let p = Arc::new(Poller {
            polls: AtomicU64::new(0),
            heartbeat: AtomicU64::new(0),
            foreign: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            quit: AtomicBool::new(false),
        });
        let mut client =
            GdbClient::connect_addr(addr, Config::default()).expect("lockscope connects");
        assert!(client.resume().unwrap().is_none());
        let t = std::thread::spawn({
            let p = p.clone();
            move || {
                while !p.quit.load(Ordering::SeqCst) {
                    let mut buf = [0u8; 8];
                    match client.pause_with(|c| c.read_memory(heartbeat_addr, &mut buf)) {
                        Ok(paused) => {
                            if let Some(stop) = paused.stop {
                                p.foreign.lock().unwrap().push(format!("{stop:?}"));
                                let _ = client.resume();
                            }
                            p.heartbeat
                                .store(u64::from_le_bytes(buf), Ordering::SeqCst);
                            p.polls.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            p.errors.lock().unwrap().push(e.to_string());
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                if let Err(e) = client.detach() {
                    p.errors.lock().unwrap().push(format!("detach: {e}"));
                }
            }
        });
        (p, t)
    }

    /// Waits until lockscope has polled `n` more times (the guest runs and its polls go
    /// through).
    fn wait_polls(&self, n: u64) {
        let start = self.polls.load(Ordering::SeqCst);
        poll_until("lockscope's polls", Duration::from_secs(30), || {
            assert!(
                self.errors.lock().unwrap().is_empty(),
                "{:?}",
                self.errors
            );
            (self.polls.load(Ordering::SeqCst) >= start + n).then_some(())
        });
    }

    /// Waits until the kernel's heartbeat, read by lockscope's polls, moves past `than`.
    fn wait_progress(&self, than: u64) -> u64 {
        poll_until("the kernel to make progress", Duration::from_secs(30), || {
            let h = self.heartbeat.load(Ordering::SeqCst);
            (h > than).then_some(h)
        })
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn user_gdb_and_lockscope_share_qemu() {
    let _serial = serial();
    let q = Qemu::boot(4, "workload=kalloctest secs=600 exit=no", false, false);
    let syms = Symbols::load(kernel()).expect("kernel symbols");
    let harts_addr = syms.symbol("lockscope_kernel::abi::HARTS").unwrap().address;

    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = GdbProxy::start(q.addr(), listen).expect("proxy starts");
    let events = proxy.events();
    let (poller, poll_thread) = Poller::start(proxy.private_addr(), harts_addr);
    let first = poller.wait_progress(0);
    poller.wait_progress(first);

    let dir = q.dir.path().to_path_buf();
    let commands: Vec<String> = vec![
        format!("target remote {}", proxy.user_addr()),
        "info threads".into(),
        "thread apply all bt 3".into(),
        "p/x lockscope_kernel::vm::KPAGETABLE".into(),
        "x/1gx &lockscope_kernel::vm::KPAGETABLE".into(),
        "break lockscope_kernel::kalloc::alloc".into(),
        "continue".into(),
        "bt 2".into(),
        "continue".into(),
        "bt 2".into(),
        "delete".into(),
        mark(&dir, "refuse"),
        wait_for(&dir, "refused"),
        mark(&dir, "report"),
        "continue".into(),
        "info threads".into(),
        "bt 1".into(),
        mark(&dir, "int"),
        "continue".into(),
        "bt 1".into(),
        "detach".into(),
    ];
    let gdb = Gdb::spawn(&kernel(), &commands, &dir);

    // A second gdb while the first is attached is turned away with a message.
    poll_until("gdb at its first checkpoint", Duration::from_secs(60), || {
        exists(&dir, "refuse").then_some(())
    });
    let second = Gdb::spawn(
        &kernel(),
        &[format!("target remote {}", proxy.user_addr())],
        &dir,
    )
    .finish(Duration::from_secs(30));
    assert!(
        second.contains("another gdb is already connected"),
        "second gdb: {second}"
    );
    touch(&dir, "refused");

    // lockscope reports a stop (a panic or deadlock it found) on hart 2 to the running gdb.
    poll_until("gdb to continue", Duration::from_secs(60), || {
        exists(&dir, "report").then_some(())
    });
    poller.wait_polls(5);
    let outcome = poll_until("gdb to be running", Duration::from_secs(30), || {
        match proxy.report_stop(2).unwrap() {
            ReportOutcome::Reported => Some(()),
            _ => None,
        }
    });
    let _ = outcome;

    // Ctrl-C while the guest runs under gdb and lockscope polls.
    poll_until("gdb to continue again", Duration::from_secs(60), || {
        exists(&dir, "int").then_some(())
    });
    poller.wait_polls(5);
    let polls_before = poller.polls.load(Ordering::SeqCst);
    let _ = polls_before;
    // gdb resumes the guest after the marker: interrupt once lockscope sees it run again.
    let h = poller.heartbeat.load(Ordering::SeqCst);
    poller.wait_progress(h);
    gdb.interrupt();
    let out = gdb.finish(Duration::from_secs(90));

    // After `detach`, the guest runs on.
    let h = poller.heartbeat.load(Ordering::SeqCst);
    let later = poller.wait_progress(h);
    poller.wait_progress(later);
    poller.quit.store(true, Ordering::SeqCst);
    poll_thread.join().unwrap();

    println!("{out}");
    for t in 1..=4 {
        assert!(out.contains(&format!("Thread 1.{t} (CPU#{}", t - 1)), "{out}");
    }
    // A backtrace on every hart.
    assert!(count(&out, "#0 ") >= 4, "{out}");
    // `p` and `x` of a kernel global, and the same value as the guest's memory.
    let kpt = out
        .lines()
        .find(|l| l.contains("KPAGETABLE") && l.contains(">:"))
        .and_then(|l| l.split_whitespace().last())
        .expect("x output");
    assert!(kpt.starts_with("0x0000000087"), "{kpt}");
    let value = u64::from_str_radix(kpt.trim_start_matches("0x"), 16).unwrap();
    assert!(out.contains(&format!("value: {value:#x}")), "{out}");
    // The breakpoint was hit and continued twice, with lockscope polling throughout.
    assert_eq!(count(&out, "hit Breakpoint 1, "), 2, "{out}");
    assert!(out.contains("lockscope_kernel::kalloc::alloc"), "{out}");
    // The reported stop selects hart 2 (thread 3).
    assert!(out.contains("Thread 3 received signal SIGTRAP"), "{out}");
    assert!(out.contains("* 3    Thread 1.3"), "{out}");
    // Exactly one SIGINT: gdb's own Ctrl-C. lockscope's interrupts stayed invisible.
    assert_eq!(count(&out, "received signal SIGINT"), 1, "{out}");
    assert!(out.contains("[Inferior 1 (process 1) detached]"), "{out}");
    assert!(
        poller.foreign.lock().unwrap().is_empty(),
        "lockscope saw stops that were not its own: {:?}",
        poller.foreign
    );
    assert!(poller.errors.lock().unwrap().is_empty(), "{:?}", poller.errors);

    let events: Vec<ProxyEvent> = events.try_iter().collect();
    let has = |f: &dyn Fn(&ProxyEvent) -> bool| events.iter().any(f);
    assert!(has(&|e| matches!(e, ProxyEvent::UserAttached { .. })));
    assert!(has(&|e| matches!(e, ProxyEvent::UserRefused { .. })));
    assert!(has(&|e| matches!(
        e,
        ProxyEvent::UserStopped {
            reason: UserStopReason::Trap,
            ..
        }
    )));
    assert!(has(&|e| matches!(
        e,
        ProxyEvent::UserStopped {
            hart: Some(2),
            reason: UserStopReason::Reported
        }
    )));
    assert!(has(&|e| matches!(
        e,
        ProxyEvent::UserStopped {
            reason: UserStopReason::Interrupted,
            ..
        }
    )));
    assert!(has(&|e| matches!(e, ProxyEvent::UserResumed)));
    assert!(matches!(events.last(), Some(ProxyEvent::UserDetached)));
    let intervals = proxy.stopped_intervals();
    assert!(intervals.len() >= 3, "{intervals:?}");
    assert!(intervals.iter().all(|i| i.end.is_some()), "{intervals:?}");
    assert!(proxy.stopped_total() > Duration::ZERO);
    proxy.shutdown().unwrap();
}
