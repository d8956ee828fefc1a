//! The plugin on the xv6-shaped C fixture kernel (lab-style `acquire`/`release` with `n` and
//! `nts`, sleeplocks, the 2025 lab's rwspinlock), under QEMU 7.2 and QEMU 10. The lab's tests
//! are typed into its console; then, at a stop where no hart is inside `acquire` (xv6 counts `n`
//! at entry), the plugin's acquisitions and failed test-and-sets equal every lock's `n` and
//! `nts`; rwlktest's reads and writes equal the plugin's read and write holds; nothing is lost.

#[path = "plugin_util.rs"]
mod util;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockscope_engine::gdb::{Config, GdbClient};
use lockscope_engine::memory::GuestMemory;
use lockscope_engine::qemu::{Console, QemuConfig};
use lockscope_engine::sources::plugin::{
    self as plugin, abi, LockFunctions, PluginApi, PluginEventKind, PluginFile, PluginStatus,
};
use lockscope_engine::symbols::Symbols;
use util::*;

/// xv6's lab `struct spinlock`: locked@0, name@8, cpu@16, nts@24, n@28.
const NTS: usize = 24;
const N: usize = 28;
const NLOCK: usize = 500;

fn run_fixture(which: Which) {
    let _g = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (elf, fs) = fixture();
    let syms = Symbols::load(&elf).unwrap();
    let plan = plugin::plan(&syms, &LockFunctions::xv6()).unwrap();
    assert!(
        plan.blind
            .iter()
            .all(|b| !matches!(b, plugin::Blind::TasOutside { .. })),
        "{:?}",
        plan.blind
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin");
    let smp = 3;
    let mut file =
        PluginFile::create(&path, smp, abi::DEFAULT_RING_ENTRIES, &plan, (8, 0)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ram = dir.path().join("ram");
    let mut cfg = QemuConfig::new(&elf)
        .smp(smp)
        .disk(&fs)
        .shared_ram(&ram)
        .gdb_port(port)
        .console(Console::Stdio);
    let api = match which {
        Which::Qemu72 => PluginApi::V1,
        Which::Qemu10 => {
            let q = qemu10();
            cfg.extra_args.push("-L".into());
            cfg.extra_args.push(qemu10_data(&q).into());
            cfg.qemu = q;
            PluginApi::V2
        }
    };
    cfg.extra_args
        .extend(plugin::qemu_plugin_args(&plugin_so(api), &path));
    let mut child = cfg
        .command()
        .unwrap()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);
    let console = Arc::new(Mutex::new(String::new()));
    let c2 = console.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            c2.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut events = Vec::new();
    let mut lost = 0;
    let mut drain = |file: &mut PluginFile, events: &mut Vec<_>| {
        lost += file.drain(usize::MAX, events).unwrap().lost;
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut wait_for = |text: &str, file: &mut PluginFile, events: &mut Vec<_>, from: usize| {
        loop {
            drain(file, events);
            let c = console.lock().unwrap();
            if c[from..].contains(text) {
                return c.len();
            }
            assert!(Instant::now() < deadline, "no {text:?} in:\n{c}");
            assert!(child.0.try_wait().unwrap().is_none(), "QEMU exited:\n{c}");
            drop(c);
            // The rings hold 650 ms of the busiest load: a slower drain leaves the guest the
            // host's cores (the fixture boots slowly when starved).
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut at = wait_for("$ ", &mut file, &mut events, 0);
    assert!(
        matches!(file.status(), PluginStatus::Running { .. }),
        "{:?}",
        file.status()
    );
    for (cmd, done) in [
        ("kalloctest", "test2 "),
        ("bcachetest", "test1 "),
        ("rwlktest", "rwlktest "),
    ] {
        stdin.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        at = wait_for(done, &mut file, &mut events, at);
        at = wait_for("$ ", &mut file, &mut events, at);
    }
    let text = console.lock().unwrap().clone();
    for ok in ["test1 OK", "test2 OK", "test0: OK", "rwlktest OK"] {
        assert!(text.contains(ok), "no {ok:?}:\n{text}");
    }

    // A stop where no hart is inside acquire(): then n and nts are the plugin's counts.
    let acquire = syms.symbol("acquire").unwrap().clone();
    let inside = |pc: u64| (acquire.address..acquire.address + acquire.size).contains(&pc);
    let mut gdb = GdbClient::connect(&format!("127.0.0.1:{port}"), Config::default()).unwrap();
    let mut tries = 0;
    loop {
        let threads = gdb.threads().unwrap();
        let pcs: Vec<u64> = threads
            .iter()
            .map(|&t| gdb.read_core_registers(t).unwrap().pc)
            .collect();
        if !pcs.iter().any(|&pc| inside(pc)) {
            break;
        }
        tries += 1;
        assert!(tries < 50, "a hart was inside acquire at 50 stops");
        gdb.resume().unwrap();
        std::thread::sleep(Duration::from_millis(7));
        gdb.interrupt().unwrap();
    }
    drain(&mut file, &mut events);
    assert_eq!(lost, 0, "events lost");

    let mut mem =
        lockscope_engine::memory::SharedRam::open(&ram, lockscope_engine::qemu::RAM_BASE).unwrap();
    let table = syms.symbol("locks").unwrap().address;
    let mut ptrs = vec![0u64; NLOCK];
    mem.read(table, bytemuck::cast_slice_mut(&mut ptrs))
        .unwrap();
    ptrs.retain(|&p| p != 0);
    ptrs.push(syms.symbol("lock_locks").unwrap().address);
    let seen = per_lock(&events);
    let mut checked = 0;
    for &lk in &ptrs {
        let mut raw = [0u8; 32];
        mem.read(lk, &mut raw).unwrap();
        let nts = u32::from_le_bytes(raw[NTS..NTS + 4].try_into().unwrap()) as u64;
        let n = u32::from_le_bytes(raw[N..N + 4].try_into().unwrap()) as u64;
        let got = seen.get(&lk).copied().unwrap_or_default();
        assert_eq!(
            (got.0, got.2),
            (n, nts),
            "lock at {lk:#x}: plugin (acquires, failed test-and-sets) vs its n and nts"
        );
        checked += (n > 0) as u32;
    }
    assert!(checked > 20, "only {checked} locks were taken");
    // Every release pairs with an acquisition, and what is still held is published.
    let held: usize = file.hart_states().iter().map(|s| s.held.len()).sum();
    let acq = events
        .iter()
        .filter(|e| {
            e.kind == PluginEventKind::Acquired && e.flags & (abi::FLAG_READ | abi::FLAG_WRITE) == 0
        })
        .count();
    let rel = events
        .iter()
        .filter(|e| {
            e.kind == PluginEventKind::Released && e.flags & (abi::FLAG_READ | abi::FLAG_WRITE) == 0
        })
        .count();
    assert_eq!(acq, rel + held, "acquisitions = releases + held");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == PluginEventKind::UnseenRelease)
            .count(),
        0
    );
    // rwlktest: "rwlktest: R reads, W writes, ..." equals the plugin's read and write holds.
    let line = text
        .lines()
        .find(|l| l.starts_with("rwlktest: ") && l.contains(" reads, "))
        .unwrap();
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let mut rw: BTreeMap<(u8, PluginEventKind), u64> = BTreeMap::new();
    for e in &events {
        if e.flags & (abi::FLAG_READ | abi::FLAG_WRITE) != 0 {
            *rw.entry((e.flags & (abi::FLAG_READ | abi::FLAG_WRITE), e.kind))
                .or_default() += 1;
        }
    }
    let get = |f: u8, k| rw.get(&(f, k)).copied().unwrap_or(0);
    assert_eq!(
        get(abi::FLAG_READ, PluginEventKind::Acquired),
        nums[0],
        "read holds; {line}"
    );
    assert_eq!(
        get(abi::FLAG_WRITE, PluginEventKind::Acquired),
        nums[1],
        "write holds; {line}"
    );
    assert_eq!(get(abi::FLAG_READ, PluginEventKind::Released), nums[0]);
    assert_eq!(get(abi::FLAG_WRITE, PluginEventKind::Released), nums[1]);
    // Sleeplocks (the buffers, during bcachetest): taken and released in pairs, with sites.
    let sa = events
        .iter()
        .filter(|e| e.kind == PluginEventKind::SleepAcquired)
        .count();
    let sr = events
        .iter()
        .filter(|e| e.kind == PluginEventKind::SleepReleased)
        .count();
    assert!(sa > 100, "{sa} sleeplock acquisitions");
    assert_eq!(sa, sr);
    eprintln!(
        "{which:?}: {} events, {} locks checked, rw {rw:?}, sleeplocks {sa}",
        events.len(),
        checked
    );
}

#[test]
fn lab_counters_equal_the_plugin_on_qemu72() {
    run_fixture(Which::Qemu72);
}

#[test]
fn lab_counters_equal_the_plugin_on_qemu10() {
    run_fixture(Which::Qemu10);
}
