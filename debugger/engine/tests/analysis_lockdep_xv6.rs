//! Lockdep for a student kernel, end to end: the xv6-shaped C fixture kernel in real QEMU 7.2,
//! its lock events from lockscope's QEMU plugin, its state from the xv6 reader (shared RAM),
//! both fed to the analysis the way a session does (drain, then snapshot).
//!
//! - Healthy (kalloctest, bcachetest, rwlktest): nothing to report. Its misses scan the buckets
//!   `(h + i) % 13` holding their own bucket's lock, both ways round, but always under
//!   `bcache.lock`: the broken index order is guarded. No read is re-entered, no spinlock is
//!   held across acquiresleep.
//! - `BUG="bucket-order sleep-holding"`, bcachetest: the misses skip `bcache.lock`, and `bget`
//!   calls `acquiresleep` holding its bucket's lock. Both are reported from the first misses,
//!   before the deadlock or the "sched locks" panic they lead to.

#[path = "plugin_util.rs"]
mod util;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockscope_engine::analysis::{
    Analyzer, Consistency, Inversion, InversionKind, NestOrder, Verdict,
};
use lockscope_engine::memory::SharedRam;
use lockscope_engine::model::{LockId, Snapshot};
use lockscope_engine::qemu::{Console, QemuConfig, RAM_BASE};
use lockscope_engine::sources::plugin::{
    self as plugin, to_lock_events, LockAddrMap, LockFunctions, PluginApi, PluginFile,
};
use lockscope_engine::sources::xv6::Xv6Source;
use lockscope_engine::sources::Source;
use lockscope_engine::symbols::Symbols;
use util::*;

const HARTS: u32 = 3;

/// The fixture built with `vars` in a copy of its tree: (kernel ELF, fs.img, the copy).
fn build(vars: &[&str]) -> (PathBuf, PathBuf, tempfile::TempDir) {
    let src = std::env::var_os("LOCKSCOPE_XV6_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("kernel/xv6-fixture"));
    let dir = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(dir.path().join("fx"))
        .status()
        .unwrap();
    assert!(st.success());
    let fx = dir.path().join("fx");
    let out = std::process::Command::new("make")
        .current_dir(&fx)
        .args(["-j2", "-s", "kernel/kernel", "fs.img"])
        .args(vars)
        .output()
        .expect("running make (install make and gcc-riscv64-unknown-elf)");
    assert!(
        out.status.success(),
        "building the fixture {vars:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (fx.join("kernel/kernel"), fx.join("fs.img"), dir)
}

/// The fixture under QEMU 7.2 with the plugin, shared RAM and its console on a socket; the
/// analysis fed from both as it runs.
struct Lab {
    child: std::process::Child,
    file: PluginFile,
    ram: SharedRam,
    source: Xv6Source,
    analyzer: Analyzer,
    map: LockAddrMap,
    stdin: std::os::unix::net::UnixStream,
    console: Arc<Mutex<String>>,
    last_snapshot: Instant,
    pub snapshots: u64,
    pub events: u64,
    pub lost: u64,
    _dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Lab {
    fn boot(elf: &std::path::Path, fs: &std::path::Path) -> Lab {
        let syms = Symbols::load(elf).unwrap();
        let plan = plugin::plan(&syms, &LockFunctions::xv6()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin");
        let file = PluginFile::create(
            &path,
            HARTS,
            4 * plugin::abi::DEFAULT_RING_ENTRIES,
            &plan,
            (8, 0),
        )
        .unwrap();
        let ram = dir.path().join("ram");
        let mut cfg = QemuConfig::new(elf)
            .smp(HARTS)
            .disk(fs)
            .shared_ram(&ram)
            .console(Console::File(dir.path().join("unused-console")));
        let sock = dir.path().join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        cfg.extra_args.push("-chardev".into());
        cfg.extra_args
            .push(format!("socket,id=con,path={}", sock.display()).into());
        cfg.extra_args
            .extend(plugin::qemu_plugin_args(&plugin_so(PluginApi::V1), &path));
        let cmd = cfg.command().unwrap();
        let args: Vec<std::ffi::OsString> = cmd
            .get_args()
            .map(|a| {
                if a.to_string_lossy().starts_with("file:") {
                    "chardev:con".into()
                } else {
                    a.to_owned()
                }
            })
            .collect();
        let child = std::process::Command::new(cmd.get_program())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let t0 = Instant::now();
        let conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(_) if t0.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("QEMU did not connect its console: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        let stdin = conn.try_clone().unwrap();
        let mut out = conn;
        let console = Arc::new(Mutex::new(String::new()));
        let sink = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut ram = loop {
            if std::fs::metadata(&ram).is_ok_and(|m| m.len() > 0) {
                if let Ok(r) = SharedRam::open(&ram, RAM_BASE) {
                    break r;
                }
            }
            assert!(Instant::now() < deadline, "QEMU never made its RAM file");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut source = Xv6Source::open(&syms).unwrap();
        while !source.ready(&mut ram, true).unwrap() {
            assert!(Instant::now() < deadline, "the kernel never showed up");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut analyzer = Analyzer::default();
        // The plugin ran from the first instruction: nothing was held before its first event.
        for h in 0..HARTS {
            analyzer.note_trace_start(h);
        }
        let mut lab = Lab {
            child,
            file,
            ram,
            source,
            analyzer,
            map: LockAddrMap::default(),
            stdin,
            console,
            last_snapshot: Instant::now(),
            snapshots: 0,
            events: 0,
            lost: 0,
            _dir: dir,
        };
        lab.snapshot();
        lab
    }

    /// A snapshot, and the address map it gives: spinlocks by address, reader-writer locks and
    /// sleeplocks by their own address, named by their inner spinlock.
    fn snapshot(&mut self) -> Snapshot {
        let s = self
            .source
            .snapshot(&mut self.ram, self.file.now_ns())
            .unwrap();
        self.map = LockAddrMap::new(
            s.locks
                .iter()
                .filter_map(|l| Some((l.addr?, l.meta.id as LockId))),
        )
        .with_rw(s.rwlocks.iter().filter_map(|r| Some((r.addr, r.lock?))))
        .with_sleep(s.sleeplocks.iter().filter_map(|x| Some((x.addr, x.lock?))));
        self.analyzer.observe(&s, Consistency::Live);
        self.snapshots += 1;
        self.last_snapshot = Instant::now();
        s
    }

    /// Drains the rings into the analysis, then (every 100 ms) reads a snapshot.
    fn step(&mut self) {
        let mut raw = Vec::new();
        self.lost += self.file.drain(usize::MAX, &mut raw).unwrap().lost;
        let mut events = Vec::new();
        to_lock_events(&raw, &self.map, &mut events);
        self.events += events.len() as u64;
        self.analyzer.ingest(&events);
        if self.last_snapshot.elapsed() > Duration::from_millis(100) {
            self.snapshot();
        }
    }

    fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    fn type_line(&mut self, line: &str) -> usize {
        let at = self.console().len();
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        at
    }

    /// Feeds the analysis until `done` holds or the console shows `until` after `from`.
    fn run_until(&mut self, until: &str, from: usize, done: impl Fn(&Analyzer) -> bool) -> usize {
        self.run_within(until, from, done, Duration::from_secs(240))
            .unwrap_or_else(|| panic!("no {until:?} within 240 s:\n{}", self.console()))
    }

    /// [`Lab::run_until`], or `None` once `limit` has passed (a kernel that hangs).
    fn run_within(
        &mut self,
        until: &str,
        from: usize,
        done: impl Fn(&Analyzer) -> bool,
        limit: Duration,
    ) -> Option<usize> {
        let deadline = Instant::now() + limit;
        loop {
            self.step();
            if done(&self.analyzer) {
                return Some(from);
            }
            if let Some(i) = self.console().get(from..).and_then(|c| c.find(until)) {
                self.step();
                return Some(from + i + until.len());
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "QEMU exited:\n{}",
                self.console()
            );
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn lock_id(s: &Snapshot, path: &str) -> LockId {
    s.locks
        .iter()
        .find(|l| l.path.as_deref() == Some(path))
        .unwrap_or_else(|| panic!("no lock at {path}"))
        .meta
        .id
}

#[test]
fn a_healthy_lab_kernel_has_nothing_to_report_and_its_gated_scan_is_guarded() {
    let _g = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (elf, fs, _tree) = build(&[]);
    let mut lab = Lab::boot(&elf, &fs);
    let mut at = lab.run_until("$ ", 0, |_| false);
    for (cmd, done) in [
        ("bcachetest", "test1 "),
        ("rwlktest", "rwlktest "),
        ("kalloctest", "test2 "),
    ] {
        let from = lab.type_line(cmd);
        at = lab.run_until(done, from.max(at), |_| false);
        at = lab.run_until("$ ", at, |_| false);
    }
    let text = lab.console();
    for ok in ["test0: OK", "test1 OK", "rwlktest OK", "test2 OK"] {
        assert!(text.contains(ok), "no {ok:?}:\n{text}");
    }
    let s = lab.snapshot();
    let a = &lab.analyzer;
    let stats = a.ingest_stats().clone();
    eprintln!(
        "healthy: {} events ({} lost), {} snapshots, {stats:?}",
        lab.events, lab.lost, lab.snapshots
    );
    assert!(
        stats.rw_events > 1000,
        "rwlktest's holds arrived: {stats:?}"
    );
    assert!(stats.sleep_events > 100, "the buffers' sleeplocks arrived");
    let o = a.lock_order();
    assert!(o.inversions.is_empty(), "{:#?}", o.inversions);
    assert!(a.sleep_holding().is_empty(), "{:#?}", a.sleep_holding());
    // The misses' scans nest bucket locks both ways round, under bcache.lock.
    let gate = lock_id(&s, "bcache.lock");
    let scan = o
        .guarded
        .iter()
        .find(|g| g.kind == InversionKind::InstanceOrder)
        .unwrap_or_else(|| panic!("the scan's order: {:#?}", o.guarded));
    assert_eq!(scan.class.as_deref(), Some("bcache.bucket"));
    assert_eq!(scan.common_gates, [gate]);
    let ways: Vec<NestOrder> = scan.orders_seen.iter().map(|(w, _)| *w).collect();
    assert!(
        ways.contains(&NestOrder::Ascending) && ways.contains(&NestOrder::Descending),
        "{scan:#?}"
    );
    assert_ne!(a.check().verdict, Verdict::LockOrderInversion);
    assert_ne!(a.check().verdict, Verdict::SpinlockAcrossSleep);
}

#[test]
fn a_scan_without_its_gate_and_a_spinlock_held_into_acquiresleep_are_found_before_they_hang() {
    let _g = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (elf, fs, _tree) = build(&["BUG=bucket-order sleep-holding"]);
    let mut lab = Lab::boot(&elf, &fs);
    let at = lab.run_until("$ ", 0, |_| false);
    let from = lab.type_line("bcachetest");
    // The scan's wrong way round is reported as an order break of the bucket class, or, when
    // two harts' scans met both ways round first, as the two-lock cycles that cover it.
    let bucket_inversion = |i: &Inversion| match i.kind {
        InversionKind::InstanceOrder => i.class.as_deref() == Some("bcache.bucket"),
        InversionKind::Cycle => i.names.iter().all(|n| n.contains("bcache.bucket[")),
        _ => false,
    };
    let found = |a: &Analyzer| {
        !a.sleep_holding().is_empty() && a.lock_order().inversions.iter().any(bucket_inversion)
    };
    // Found within a minute, or the hang they lead to is the failure's answer.
    let _ = lab.run_within("test1 ", from.max(at), found, Duration::from_secs(60));
    let a = &lab.analyzer;
    assert!(
        found(a),
        "both found before bcachetest got to test1 (or hung):\nspinlock across sleep: {:#?}\ninversions: {:#?}\nguarded: {:#?}\n{:?}, {} events, {} lost\n{}",
        a.sleep_holding(),
        a.lock_order().inversions,
        a.lock_order().guarded,
        a.ingest_stats(),
        lab.events,
        lab.lost,
        lab.console()
    );
    let s = lab.snapshot();
    let a = &lab.analyzer;
    // bget holds its bucket's lock (taken in bget, inlined into bread) across acquiresleep of
    // the buffer's sleeplock.
    let sl = &a.sleep_holding()[0];
    let bucket = s.lock(sl.lock).unwrap();
    assert!(
        bucket
            .path
            .as_deref()
            .is_some_and(|p| p.starts_with("bcache.bucket[")),
        "{sl:#?}"
    );
    assert_eq!(sl.sleeplock_name, "buffer");
    assert!(sl.held_pc != 0 && sl.pc != 0, "both sites: {sl:#?}");
    let syms = Symbols::load(&elf).unwrap();
    let place = |pc: u64| {
        syms.location(pc - 1)
            .ok()
            .flatten()
            .map(|l| l.to_string())
            .unwrap_or_default()
    };
    assert!(
        place(sl.held_pc).contains("bio.c:"),
        "{}",
        place(sl.held_pc)
    );
    assert!(place(sl.pc).contains("bio.c:"), "{}", place(sl.pc));
    // The scan's nestings of bucket locks, with no gate, go both ways round.
    let inv = a
        .lock_order()
        .inversions
        .into_iter()
        .find(bucket_inversion)
        .unwrap();
    assert!(inv.common_gates.is_empty() && !inv.guarded, "{inv:#?}");
    assert!(inv.edges.len() >= 2, "{inv:#?}");
    for e in &inv.edges {
        assert!(place(e.first.from_pc).contains("bio.c:"));
        assert!(place(e.first.to_pc).contains("bio.c:"));
    }
    let check = a.check();
    assert!(
        matches!(
            check.verdict,
            Verdict::SpinlockAcrossSleep | Verdict::Deadlock | Verdict::Panic | Verdict::Stall
        ),
        "{:?}: {}",
        check.verdict,
        check.summary
    );
    eprintln!("found: {}", check.summary);
}
