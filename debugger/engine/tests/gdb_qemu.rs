//! The gdb client against a real QEMU 7.2 (`qemu-system-riscv64 -machine virt`) and real
//! gdb-multiarch: harts and registers, memory, reading while running, polling, the connection's
//! life (breakpoints and steps are in gdb_qemu_breakpoints.rs). Each test boots its own QEMU on a
//! free port; they run one at a time.

mod closed_port;
#[path = "gdb_util.rs"]
mod util;

use std::collections::BTreeMap;
use std::time::Duration;

use lockscope_engine::gdb::{bench, Config, GdbClient, GdbError, RunState, StopCause, ThreadId};
use lockscope_engine::memory::{GuestMemory, MemoryError};
use util::*;

const RAM_END: u64 = 0x8000_0000 + 128 * 1024 * 1024;

fn thread(tid: u64) -> ThreadId {
    ThreadId { pid: Some(1), tid }
}

#[test]
fn lists_harts_and_reads_their_registers() {
    let q = Qemu::start(4);
    let mut c = q.connect();
    let threads = c.threads().unwrap();
    assert_eq!(threads, (1..=4).map(thread).collect::<Vec<_>>());
    assert_eq!(c.last_stop().unwrap().cause, StopCause::Attached);
    // QEMU's numbering, checked against the description it sent: CSR n is 66 + n.
    assert_eq!(c.register_number("pc"), Some(32));
    assert_eq!(c.register_number("priv"), Some(65));
    for (name, csr) in [
        ("sepc", 0x141),
        ("scause", 0x142),
        ("stval", 0x143),
        ("satp", 0x180),
    ] {
        assert_eq!(c.register_number(name), Some(66 + csr), "{name}");
    }
    for &t in &threads {
        // At reset every hart is in M-mode at QEMU's reset vector.
        let r = c.read_hart_registers(t).unwrap();
        assert_eq!(r.pc(), 0x1000);
        assert_eq!(r.privilege, Some(3));
        assert_eq!(r.scause, Some(0));
        assert_eq!(r.satp, Some(0));
        assert_eq!(
            c.read_register(t, "mhartid").unwrap(),
            u64::from(t.cpu_index().unwrap())
        );
        assert_eq!(c.read_register(t, "pc").unwrap(), 0x1000);
    }
    // Run the reset code and the program a little, then check per-hart values.
    load_program(&mut c, Some(100));
    run_until(&mut c, "every hart parked", |c| {
        threads
            .iter()
            .all(|&t| c.read_core_registers(t).unwrap().pc == DONE)
    });
    for &t in &threads {
        let r = c.read_core_registers(t).unwrap();
        let hart = u64::from(t.cpu_index().unwrap());
        assert_eq!(r.pc, DONE, "{t} parked");
        assert_eq!(r.x[10], hart, "a0 is the hart id");
        assert_eq!(r.x[9], 0x100 + hart, "s1");
        assert_eq!(r.x[5], COUNTERS + 8 * hart, "t0");
    }
    assert_eq!(read_counters(&mut c, 4), vec![100; 4]);
    let e = c.read_register(threads[0], "no-such-register").unwrap_err();
    assert!(matches!(e, GdbError::NoRegister { .. }), "{e}");
}

#[test]
fn memory_in_chunks_with_clear_errors() {
    let q = Qemu::start(1);
    let mut c = q.connect();
    let base = 0x8010_0000;
    let pattern: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    c.write_memory(base, &pattern).unwrap();
    for (off, len) in [
        (0, 1),
        (3, 7),
        (1, 2047),
        (0, 2048),
        (5, 2049),
        (0, 65_536),
        (123, 69_000),
    ] {
        let mut buf = vec![0u8; len];
        c.read_memory(base + off as u64, &mut buf).unwrap();
        assert_eq!(buf, &pattern[off..off + len], "read of {len} at +{off}");
    }
    let sent = c.stats().packets_sent;
    let mut buf = vec![0u8; 65_536];
    c.read_memory(base, &mut buf).unwrap();
    assert_eq!(
        c.stats().packets_sent - sent,
        32,
        "64 KiB is 32 reads of 2048 bytes"
    );

    let e = c.read_memory(0, &mut [0u8; 8]).unwrap_err();
    assert!(matches!(e, GdbError::BadAddressRead { addr: 0, .. }), "{e}");
    assert!(e.to_string().contains("no RAM or device"), "{e}");
    let e = c.read_memory(RAM_END - 4, &mut [0u8; 8]).unwrap_err();
    assert!(matches!(e, GdbError::BadAddressRead { .. }), "{e}");
    let e = c.read_memory(u64::MAX - 2, &mut [0u8; 8]).unwrap_err();
    assert!(matches!(e, GdbError::BadAddressRead { .. }), "{e}");
    // The error did not break the connection.
    let mut ok = [0u8; 4];
    GuestMemory::read(&mut c, base, &mut ok).unwrap();
    assert_eq!(ok, pattern[..4]);
    let e = GuestMemory::read(&mut c, 0, &mut ok).unwrap_err();
    assert!(matches!(
        e,
        MemoryError::Failed {
            addr: 0,
            len: 4,
            ..
        }
    ));
}

#[test]
fn reading_while_running_is_refused_without_stopping_the_guest() {
    let q = Qemu::start(2);
    let mut c = q.connect();
    load_program(&mut c, None);
    c.resume().unwrap();
    let e = c.read_memory(COUNTERS, &mut [0u8; 8]).unwrap_err();
    assert!(matches!(e, GdbError::Running { .. }), "{e}");
    assert!(e.to_string().contains("interrupt it first"), "{e}");
    let e = GuestMemory::read(&mut c, COUNTERS, &mut [0u8; 8]).unwrap_err();
    assert!(e.to_string().contains("running"), "{e}");
    assert!(matches!(
        c.read_core_registers(thread(1)),
        Err(GdbError::Running { .. })
    ));
    assert!(matches!(
        c.insert_breakpoint(LOOP),
        Err(GdbError::Running { .. })
    ));
    assert!(matches!(c.step(thread(1)), Err(GdbError::Running { .. })));
    assert!(matches!(c.resume(), Err(GdbError::Running { .. })));
    // Had any byte gone out, QEMU would have stopped and said so.
    assert_eq!(c.wait_stop(Duration::from_millis(300)).unwrap(), None);
    assert_eq!(c.state(), RunState::Running);
    let stop = c.interrupt().unwrap();
    assert_eq!(stop.cause, StopCause::Interrupted);
    run_until(&mut c, "both harts counted", |c| {
        read_counters(c, 2).iter().all(|&n| n > 0)
    });
}

#[test]
fn a_second_client_is_told_the_stub_is_busy() {
    let q = Qemu::start(1);
    let first = q.connect();
    let config = Config {
        connect_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let e = GdbClient::connect(&q.addr_str(), config.clone()).unwrap_err();
    assert!(matches!(e, GdbError::Busy { .. }), "{e}");
    assert!(e.to_string().contains("another debugger"), "{e}");
    first.detach().unwrap();
    let mut second = GdbClient::connect(&q.addr_str(), config).unwrap();
    second.read_core_registers(thread(1)).unwrap();
}

#[test]
fn no_stub_says_how_to_start_one() {
    let (_reserved, port) = closed_port::closed_port();
    let e = GdbClient::connect(&format!("127.0.0.1:{port}"), Config::default()).unwrap_err();
    assert!(matches!(e, GdbError::NoStub { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("no gdb stub at 127.0.0.1:{port}: start QEMU with -gdb tcp::{port}, or use `lockscope run`")), "{msg}");
    let e = GdbClient::connect("no-such-host.invalid:1234", Config::default()).unwrap_err();
    assert!(matches!(e, GdbError::BadAddress { .. }), "{e}");
}

#[test]
fn qemu_dying_is_reported() {
    // While running: the wait sees the connection close.
    let mut q = Qemu::start(2);
    let mut c = q.connect();
    load_program(&mut c, None);
    c.resume().unwrap();
    q.kill();
    let e = c.wait_stop(Duration::from_secs(2)).unwrap_err();
    assert!(matches!(e, GdbError::Disconnected { .. }), "{e}");
    assert!(e.is_fatal());
    assert!(e.to_string().contains("QEMU exited or was killed"), "{e}");
    let e = c.interrupt().unwrap_err();
    assert!(matches!(e, GdbError::Unusable { .. }), "{e}");
    drop(c);
    drop(q);

    // While stopped: the next command sees it.
    let mut q = Qemu::start(1);
    let mut c = q.connect();
    q.kill();
    let e = c.read_memory(PROGRAM, &mut [0u8; 8]).unwrap_err();
    assert!(e.is_fatal(), "{e}");
    assert!(
        matches!(e, GdbError::Disconnected { .. } | GdbError::Io { .. }),
        "{e}"
    );
}

#[test]
fn guest_shutdown_is_reported() {
    let q = Qemu::start(1);
    let mut c = q.connect();
    // lui t0, 0x100; lui t1, 0x5; addi t1, t1, 0x555; sw t1, 0(t0): the virt test device's
    // "pass" code, which powers the machine off.
    let words = [
        0x0010_02b7u32,
        0x0000_5337,
        0x5553_0313,
        0x0062_a023,
        0x0000_006f,
    ];
    let code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    c.write_memory(PROGRAM, &code).unwrap();
    c.resume().unwrap();
    let e = c.wait_stop(Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(
            e,
            GdbError::Exited { status: 0 } | GdbError::Disconnected { .. }
        ),
        "{e}"
    );
    assert!(e.is_fatal());
}

#[test]
fn pause_with_polls_and_resumes() {
    let q = Qemu::start(2);
    let mut c = q.connect();
    load_program(&mut c, None);
    c.resume().unwrap();
    // Each poll stops the guest, reads, and lets it run again: the counters keep going up.
    let mut last = 0;
    for _ in 0..20 {
        last = eventually("the guest runs between polls", || {
            let p = c.pause_with(|c| Ok(read_counters(c, 2))).unwrap();
            assert!(p.stop.is_none());
            assert!(c.is_running());
            assert!(p.pause > Duration::ZERO);
            let sum: u64 = p.value.iter().sum();
            assert!(sum >= last, "counters went back: {sum} < {last}");
            (sum > last).then_some(sum)
        });
    }
    // A failing read inside still resumes the guest.
    let e = c
        .pause_with(|c| c.read_memory(0, &mut [0u8; 8]))
        .unwrap_err();
    assert!(matches!(e, GdbError::BadAddressRead { .. }));
    assert!(c.is_running());
    // A breakpoint hit is handed over, with the guest left stopped.
    let p = c.pause_with(|c| Ok(c.is_running())).unwrap();
    assert!(!p.value);
    c.pause_with(|c| c.insert_breakpoint(LOOP_ADDI)).unwrap();
    let stop = eventually("the breakpoint stop is reported", || {
        c.pause_with(|c| Ok(read_counters(c, 2))).unwrap().stop
    });
    assert!(stop.hit_breakpoint(), "{stop:?}");
    assert!(!c.is_running());
}

/// Registers by gdb's ABI names in `info registers`.
const ABI: [&str; 32] = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1", "a0", "a1", "a2", "a3", "a4",
    "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4",
    "t5", "t6",
];

/// `Thread N (Thread P.T ...)` sections of gdb output: tid -> register name -> value.
fn parse_gdb_registers(out: &str) -> BTreeMap<u64, BTreeMap<String, u64>> {
    let mut all: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    let mut current = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("Thread ") {
            if let Some(i) = rest.find("(Thread 1.") {
                let tid: String = rest[i + 10..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                current = Some(tid.parse::<u64>().unwrap());
                continue;
            }
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(t), [name, value, ..]) = (current, &f[..]) {
            if let Some(hex) = value.strip_prefix("0x") {
                all.entry(t)
                    .or_default()
                    .insert(name.to_string(), u64::from_str_radix(hex, 16).unwrap());
            }
        }
    }
    all
}

#[test]
fn registers_and_memory_agree_with_gdb_multiarch() {
    let q = Qemu::start(4);
    let mut c = q.connect();
    // Each hart counts to 500 and parks: a fixed point that both debuggers see alike.
    load_program(&mut c, Some(500));
    let threads = c.threads().unwrap();
    run_until(&mut c, "every hart parked", |c| {
        threads
            .iter()
            .all(|&t| c.read_core_registers(t).unwrap().pc == DONE)
    });
    let mut ours = BTreeMap::new();
    for &t in &threads {
        let r = c.read_hart_registers(t).unwrap();
        assert_eq!(r.pc(), DONE, "{t} has not parked");
        ours.insert(t.tid, (r, c.read_register(t, "mhartid").unwrap()));
    }
    let mut mem = [0u8; 32];
    c.read_memory(COUNTERS, &mut mem).unwrap();
    c.detach().unwrap();

    let out = gdb_batch(
        q.port,
        &[
            "info threads",
            "thread apply all info registers",
            "thread apply all info registers priv mhartid scause sepc stval satp",
            "x/4gx 0x80001000",
            "detach",
        ],
    );
    let theirs = parse_gdb_registers(&out);
    assert_eq!(
        theirs.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "{out}"
    );
    for (tid, (r, mhartid)) in &ours {
        let g = &theirs[tid];
        for (i, name) in ABI.iter().enumerate().skip(1) {
            assert_eq!(g[*name], r.core.x[i], "thread {tid} {name}\n{out}");
        }
        assert_eq!(g["pc"], r.pc());
        assert_eq!(g["priv"], u64::from(r.privilege.unwrap()));
        assert_eq!(g["mhartid"], *mhartid);
        assert_eq!(Some(g["scause"]), r.scause);
        assert_eq!(Some(g["sepc"]), r.sepc);
        assert_eq!(Some(g["stval"]), r.stval);
        assert_eq!(Some(g["satp"]), r.satp);
    }
    let words: Vec<u64> = mem
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let line = out
        .lines()
        .find(|l| l.starts_with("0x80001000:"))
        .expect("x output");
    let line2 = out
        .lines()
        .find(|l| l.starts_with("0x80001010:"))
        .expect("x output");
    let gdb_words: Vec<u64> = line
        .split_whitespace()
        .chain(line2.split_whitespace())
        .filter(|w| !w.ends_with(':'))
        .map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).unwrap())
        .collect();
    assert_eq!(gdb_words, words);
    assert_eq!(words, vec![500; 4]);
}

/// Records the fixtures under tests/fixtures/gdb from QEMU and gdb-multiarch. Run after
/// changing what the client sends: `cargo test -p lockscope-engine --test gdb_qemu -- --ignored record`.
#[test]
#[ignore = "rewrites the recorded fixtures"]
fn record_fixtures() {
    let version = std::process::Command::new(QEMU)
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();

    let q = Qemu::start(4);
    let rec = Recorder::start(q.addr());
    let log = client_session(&rec.addr_str());
    let t = rec.finish();
    let header = format!("{version}, -machine virt -bios none -smp 4 -S\nlockscope's client running tests/gdb_util.rs client_session()\nc: client to stub, s: stub to client; \\xNN escapes");
    std::fs::write(fixtures().join("qemu72-client.rsp"), t.to_text(&header)).unwrap();
    std::fs::write(
        fixtures().join("qemu72-client.expected"),
        log.join("\n") + "\n",
    )
    .unwrap();
    drop(q);

    let q = Qemu::start(4);
    {
        let mut c = q.connect();
        load_program(&mut c, None);
        c.detach().unwrap();
    }
    let rec = Recorder::start(q.addr());
    let out = gdb_batch(
        rec.port,
        &[
            "info threads",
            "thread apply all info registers",
            "info registers priv mstatus satp scause",
            "x/8gx 0x80001000",
            "break *0x80000018",
            "continue",
            "info registers pc",
            "stepi",
            "thread 3",
            "stepi",
            "delete",
            "x/4i 0x80000014",
            "detach",
        ],
    );
    let t = rec.finish();
    let header = format!("{version}, -machine virt -bios none -smp 4, guest running the counter loop\ngdb-multiarch 13.1 -batch: info threads, registers, x, break, continue, stepi, detach\nc: client to stub, s: stub to client; \\xNN escapes");
    std::fs::write(
        fixtures().join("qemu72-gdb-multiarch.rsp"),
        t.to_text(&header),
    )
    .unwrap();
    std::fs::write(fixtures().join("qemu72-gdb-multiarch.out"), out).unwrap();
}

/// Prints the pause a polling cycle imposes on the guest. No assertions on time:
/// `cargo test -p lockscope-engine --release --test gdb_qemu -- --ignored --nocapture measure`.
#[test]
#[ignore = "benchmark: prints numbers"]
fn measure_polling_pause() {
    let q = Qemu::start(4);
    let mut c = q.connect();
    load_program(&mut c, None);
    for len in [8usize, 4096, 65_536] {
        let r = bench::measure_reads(&mut c, 0x8000_0000, len, 200).unwrap();
        println!(
            "stopped read {len:>6} B: median {:?} p99 {:?} ({:.1} MB/s)",
            r.read.median,
            r.read.p99,
            r.throughput / 1e6
        );
    }
    c.resume().unwrap();
    for len in [8usize, 4096, 65_536] {
        let r = bench::measure_pauses(&mut c, 0x8000_0000, len, 200, Duration::from_millis(20))
            .unwrap();
        println!(
            "pause (interrupt + read {len:>6} B + resume): median {:?} p99 {:?} max {:?}; interrupt alone: median {:?} p99 {:?} max {:?} ({} cycles)",
            r.pause.median, r.pause.p99, r.pause.max, r.interrupt.median, r.interrupt.p99, r.interrupt.max, r.pause.samples
        );
    }
}
