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
                            p.heartbeat.store(u64::from_le_bytes(buf), Ordering::SeqCst);
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
            assert!(self.errors.lock().unwrap().is_empty(), "{:?}", self.errors);
            (self.polls.load(Ordering::SeqCst) >= start + n).then_some(())
        });
    }

    /// Waits until the kernel's heartbeat, read by lockscope's polls, moves past `than`.
    fn wait_progress(&self, than: u64) -> u64 {
        poll_until(
            "the kernel to make progress",
            Duration::from_secs(30),
            || {
                let h = self.heartbeat.load(Ordering::SeqCst);
                (h > than).then_some(h)
            },
        )
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
    poll_until(
        "gdb at its first checkpoint",
        Duration::from_secs(60),
        || exists(&dir, "refuse").then_some(()),
    );
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
    poll_until(
        "gdb to be running",
        Duration::from_secs(30),
        || match proxy.report_stop(2).unwrap() {
            ReportOutcome::Reported => Some(()),
            _ => None,
        },
    );

    // Ctrl-C while the guest runs under gdb and lockscope polls.
    poll_until("gdb to continue again", Duration::from_secs(60), || {
        exists(&dir, "int").then_some(())
    });
    poller.wait_polls(5);
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
        assert!(
            out.contains(&format!("Thread 1.{t} (CPU#{}", t - 1)),
            "{out}"
        );
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
    assert!(
        poller.errors.lock().unwrap().is_empty(),
        "{:?}",
        poller.errors
    );

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

/// A client that speaks like xv6's grader (gradelib.py): no acks, no `qSupported`, a
/// hardware breakpoint and a plain `c`, then it waits for `T05`.
struct Grader {
    s: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Grader {
    fn connect(addr: SocketAddr) -> Self {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Self { s, buf: Vec::new() }
    }

    fn send(&mut self, cmd: &str) {
        use std::io::Write;
        let sum = cmd.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        write!(self.s, "${cmd}#{sum:02x}").unwrap();
    }

    /// The next packet's payload (acks skipped), within `timeout`.
    fn packet(&mut self, timeout: Duration) -> Option<String> {
        use std::io::Read;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            if let Some(start) = text.find('$') {
                if let Some(end) = text[start..].find('#') {
                    let end = start + end;
                    if text.len() >= end + 3 {
                        self.buf.drain(..end + 3);
                        return Some(text[start + 1..end].to_string());
                    }
                }
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            let mut b = [0u8; 4096];
            if let Ok(n) = self.s.read(&mut b) {
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&b[..n]);
            }
        }
    }
}

#[test]
fn grader_drives_a_held_guest_while_lockscope_keeps_its_own_breakpoint() {
    let _serial = serial();
    let q = Qemu::boot(2, "workload=kalloctest secs=600 exit=no", false, false);
    let syms = Symbols::load(kernel()).expect("kernel symbols");
    let harts_addr = syms.symbol("lockscope_kernel::abi::HARTS").unwrap().address;
    let alloc = syms
        .symbol("lockscope_kernel::kalloc::alloc")
        .unwrap()
        .address;
    // Every hart traps here 100 times a second (the timer).
    let trap = syms.symbol("kerneltrap").unwrap().address;

    // `make qemu-gdb`: QEMU waits for gdb (-S) whatever lockscope does.
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let options = lockscope_engine::gdbserver::ProxyOptions {
        hold_for_user: true,
        ..Default::default()
    };
    let proxy = GdbProxy::start_with(q.addr(), listen, options).expect("proxy starts");
    let status = proxy.user_status().stopped.expect("held for gdb");
    assert_eq!(status.reason, UserStopReason::WaitingForGdb);

    // lockscope connects, sets a breakpoint of its own, and resumes: the guest stays held.
    let mut ls = GdbClient::connect_addr(proxy.private_addr(), Config::default()).unwrap();
    ls.insert_breakpoint(trap).unwrap();
    assert!(ls.resume().unwrap().is_none());
    let mut hb = [0u8; 8];
    for _ in 0..5 {
        let p = ls
            .pause_with(|c| c.read_memory(harts_addr, &mut hb))
            .unwrap();
        assert!(p.stop.is_none());
        assert_eq!(
            u64::from_le_bytes(hb),
            0,
            "the guest ran before gdb said so"
        );
    }

    // The grader: a hardware breakpoint and `c`, no acks; it gets its own T05.
    let mut g = Grader::connect(proxy.user_addr());
    g.send(&format!("Z1,{alloc:x},1"));
    g.send("c");
    assert_eq!(g.packet(Duration::from_secs(10)).as_deref(), Some("OK"));
    let mut ls_hits = 0;
    let stop = loop {
        if let Some(p) = g.packet(Duration::from_millis(20)) {
            break p;
        }
        // Meanwhile lockscope's breakpoint fires too, for lockscope only.
        if let Some(stop) = ls.wait_stop(Duration::from_millis(20)).unwrap() {
            assert!(stop.hit_breakpoint(), "{stop:?}");
            assert!(
                stop.at_breakpoints.iter().all(|(_, a)| *a == trap),
                "{stop:?}"
            );
            ls_hits += 1;
            ls.resume().unwrap();
        }
        assert!(ls_hits < 10_000, "the grader's breakpoint never came");
    };
    // No multiprocess for a client that did not ask: `T05thread:01;` as QEMU would say.
    assert!(stop.starts_with("T05thread:0"), "{stop}");
    // The grader's hart is at its breakpoint.
    g.send("g");
    let regs = g.packet(Duration::from_secs(5)).unwrap();
    let pc = u64::from_le_bytes(
        (0..8)
            .map(|i| u8::from_str_radix(&regs[32 * 16 + 2 * i..32 * 16 + 2 * i + 2], 16).unwrap())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    );
    assert_eq!(pc, alloc);
    assert_eq!(
        proxy.user_status().stopped.map(|s| s.reason),
        Some(UserStopReason::Trap)
    );
    // While the grader holds the guest, lockscope's polls still read it.
    let p = ls
        .pause_with(|c| c.read_memory(harts_addr, &mut hb))
        .unwrap();
    assert!(p.stop.is_none());
    // (The first allocation comes at boot, before any heartbeat.)
    let held = u64::from_le_bytes(hb);

    // The grader goes away (gradelib just closes): the guest runs on, and lockscope's
    // breakpoint, which a `D` would have removed, still fires.
    drop(g);
    let mut after = 0;
    poll_until(
        "lockscope's breakpoint after the grader left",
        Duration::from_secs(30),
        || {
            if let Some(stop) = ls.wait_stop(Duration::from_millis(20)).unwrap() {
                assert!(
                    stop.at_breakpoints.iter().all(|(_, a)| *a == trap),
                    "{stop:?}"
                );
                after += 1;
                ls.resume().unwrap();
            }
            (after >= 3).then_some(())
        },
    );
    let p = ls.pause_with(|c| c.remove_breakpoint(trap)).unwrap();
    if p.stop.is_some() {
        ls.resume().unwrap();
    }
    poll_until("the guest to run on", Duration::from_secs(30), || {
        let p = ls
            .pause_with(|c| c.read_memory(harts_addr, &mut hb))
            .unwrap();
        assert!(p.stop.is_none(), "{:?}", p.stop);
        (u64::from_le_bytes(hb) > held + 100).then_some(())
    });
    assert!(proxy.user_status().stopped.is_none());
    ls.detach().unwrap();
    proxy.shutdown().unwrap();
}

/// Memory reads of a stopped guest are answered from shared RAM where QEMU would answer the
/// same, and say what QEMU says: kernel text read through the kernel's Sv39 table, a stack
/// through it, a device register (relayed), an unmapped address (QEMU's error), a read
/// longer than QEMU takes in one packet.
#[test]
fn memory_reads_from_guest_ram_say_what_qemu_says() {
    let _serial = serial();
    let q = Qemu::boot(2, "workload=kalloctest secs=600 exit=no", false, true);
    let commands = |target: SocketAddr| -> Vec<String> {
        vec![
            format!("target remote {target}"),
            // Stopped in S mode with paging on, in a function whose text is static.
            "break lockscope_kernel::kalloc::alloc".into(),
            "continue".into(),
            "delete".into(),
            "p $priv".into(),
            "x/64xw lockscope_kernel::kalloc::alloc".into(),
            // virtio-mmio's magic value: a device register, the same every time.
            "x/1xw 0x10001000".into(),
            "x/1xw 0x0".into(),
            "x/1xw 0x4000000000".into(),
            // gdb splits this into packets; the text and rodata are the same each boot.
            "python print('SUM', sum(gdb.selected_inferior().read_memory(0x80000000, 65536).tobytes()))".into(),
            "detach".into(),
        ]
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let options = lockscope_engine::gdbserver::ProxyOptions {
        ram: Some(lockscope_engine::gdbserver::proxy::RamFile {
            path: q.ram_file(),
            base: lockscope_engine::qemu::RAM_BASE,
        }),
        ..Default::default()
    };
    let proxy = GdbProxy::start_with(q.addr(), listen, options).expect("proxy starts");
    let dir = q.dir.path().to_path_buf();
    let through =
        Gdb::spawn(&kernel(), &commands(proxy.user_addr()), &dir).finish(Duration::from_secs(120));
    let from_ram = proxy.reads_from_ram();
    proxy.shutdown().unwrap();
    let direct = Gdb::spawn(&kernel(), &commands(q.addr()), &dir).finish(Duration::from_secs(120));

    // What gdb printed for memory, either way.
    let memory = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| {
                (l.starts_with("0x") && l.contains(":\t"))
                    || l.starts_with("SUM")
                    || l.contains("Cannot access memory")
            })
            .map(str::to_owned)
            .collect()
    };
    let (a, b) = (memory(&through), memory(&direct));
    assert!(a.len() >= 10, "through the proxy:\n{through}");
    assert_eq!(a, b, "through the proxy:\n{through}\ndirect:\n{direct}");
    assert!(through.contains("$1 = 1"), "stopped in S mode:\n{through}");
    assert!(
        a.iter().any(|l| l.contains("0x74726976")),
        "the device register was relayed to QEMU: {a:?}"
    );
    assert_eq!(
        a.iter()
            .filter(|l| l.contains("Cannot access memory"))
            .count(),
        2,
        "{a:?}"
    );
    // 64 KiB in 2 KiB packets and the function's text: most reads never went to QEMU.
    assert!(from_ram >= 32, "{from_ram} reads from RAM");
}
