//! The xv6 reader on the C fixture kernel (kernel/xv6-fixture, an xv6-shaped locks-lab kernel
//! of our own) running in real QEMU with shared RAM: built through its own Makefile, booted
//! with the command line `make -n qemu` prints, read while it runs, driven at its `$ ` prompt.
//!
//! The fixture comes from `LOCKSCOPE_XV6_FIXTURE` (default: the workspace's
//! kernel/xv6-fixture) and is built in a copy, so the tree is never touched.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockscope_engine::memory::{GuestMemory, SharedRam};
use lockscope_engine::model::{FindingKind, HartRun, Snapshot};
use lockscope_engine::sources::xv6::{VirtMemory, Xv6Source};
use lockscope_engine::sources::Source;
use lockscope_engine::symbols::Symbols;

#[path = "xv6_fixture_tree.rs"]
mod fixture_tree;
use fixture_tree::{copy_tree, fixture_source};

const RAM_BASE: u64 = 0x8000_0000;
const RAM_MIB: u64 = 128;

/// One QEMU at a time: the machine has two cores and these tests time nothing, but a starved
/// guest makes every deadline longer.
static QEMU_LOCK: Mutex<()> = Mutex::new(());

struct Built {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    /// The QEMU command line the Makefile runs, split into words.
    qemu: Vec<String>,
}

fn build(vars: &[&str]) -> Built {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture_source(), dir.path());
    let make = |extra: &[&str]| {
        let out = Command::new("make")
            .current_dir(dir.path())
            .args(vars)
            .args(extra)
            .output()
            .expect("run make");
        assert!(
            out.status.success(),
            "make {vars:?} {extra:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    make(&["-j2", "-s"]);
    let dry = make(&["-n", "qemu"]);
    let line = dry
        .lines()
        .find(|l| l.starts_with("qemu-system-riscv64 "))
        .unwrap_or_else(|| panic!("no QEMU command in `make -n qemu`:\n{dry}"));
    assert!(
        !line.contains(['"', '\'']),
        "unquoted words expected: {line}"
    );
    Built {
        kernel: dir.path().join("kernel/kernel"),
        qemu: line.split_whitespace().map(str::to_owned).collect(),
        dir,
    }
}

/// The fixture in QEMU with its RAM in a shared file; the console on pipes. Killed on drop.
struct Guest {
    child: Child,
    stdin: ChildStdin,
    console: Arc<Mutex<String>>,
    ram: PathBuf,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Guest {
    fn boot(b: &Built) -> Guest {
        let lock = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let shm = Path::new("/dev/shm");
        let ram_dir = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        let ram = ram_dir.join(format!(
            "lockscope-xv6-test-{}-{}",
            std::process::id(),
            b.dir.path().file_name().unwrap().to_string_lossy()
        ));
        let mut args: Vec<String> = b.qemu[1..].to_vec();
        // A read-only disk image: the guest's writes go to a temporary overlay.
        for a in &mut args {
            if a.starts_with("file=") && a.contains("fs.img") {
                a.push_str(",snapshot=on");
            }
        }
        args.extend([
            "-object".into(),
            format!(
                "memory-backend-file,id=ram,size={RAM_MIB}M,share=on,mem-path={}",
                ram.display()
            ),
            "-machine".into(),
            "memory-backend=ram".into(),
        ]);
        let mut child = Command::new(&b.qemu[0])
            .args(&args)
            .current_dir(b.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run qemu-system-riscv64 (apt-get install qemu-system-misc)");
        let console = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let sink = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                sink.lock().unwrap().push_str(&text);
            }
        });
        let stdin = child.stdin.take().unwrap();
        Guest {
            child,
            stdin,
            console,
            ram,
            _lock: lock,
        }
    }

    fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// Waits until the console, from byte `from` on, contains `text`; returns where it ends.
    fn wait_for(&mut self, text: &str, from: usize, secs: u64) -> usize {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let c = self.console();
            if let Some(i) = c.get(from..).and_then(|t| t.find(text)) {
                return from + i + text.len();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("QEMU exited ({status}) before {text:?}:\n{c}\n{err}");
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the console within {secs} s:\n{c}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_line(&mut self, line: &str) -> usize {
        let at = self.console().len();
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
        at
    }

    fn shared_ram(&mut self) -> SharedRam {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let full = std::fs::metadata(&self.ram).is_ok_and(|m| m.len() == RAM_MIB << 20);
            if full {
                return SharedRam::open(&self.ram, RAM_BASE).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "QEMU never created {}",
                self.ram.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ram);
    }
}

fn open(b: &Built, ram: &mut SharedRam) -> (Symbols, Xv6Source) {
    let syms = Symbols::load(&b.kernel).unwrap();
    let mut src = Xv6Source::open(&syms).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !src.ready(ram, true).unwrap() {
        assert!(
            Instant::now() < deadline,
            "the kernel never showed up in RAM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (syms, src)
}

fn lock_n(s: &Snapshot, prefix: &str) -> u64 {
    s.locks
        .iter()
        .filter(|l| l.path.as_deref().is_some_and(|p| p.starts_with(prefix)))
        .map(|l| l.counters.acquires)
        .sum()
}

/// What each snapshot of a running test showed.
#[derive(Default)]
struct Watch {
    snapshots: u32,
    cost: Duration,
    max_cost: Duration,
    harts_busy: usize,
    /// Most free lists holding pages at once.
    lists_used: usize,
    findings: Vec<String>,
}

impl Watch {
    fn take(&mut self, src: &mut Xv6Source, mem: &mut SharedRam, t: u64) -> Snapshot {
        let start = Instant::now();
        let s = src.snapshot(mem, t).unwrap();
        let took = start.elapsed();
        self.cost += took;
        self.max_cost = self.max_cost.max(took);
        self.snapshots += 1;
        // Every hart's process is in the table, running, on that hart.
        let mut busy = 0;
        for h in &s.harts {
            let Some(p) = h.cpu.as_ref().and_then(|c| c.proc.as_ref()) else {
                continue;
            };
            busy += 1;
            let row = s.processes.iter().find(|q| q.slot == p.slot);
            let row = row
                .unwrap_or_else(|| panic!("hart {} runs slot {} not in the table", h.hart, p.slot));
            assert_eq!(row.pid, p.pid);
            assert_eq!(row.hart, Some(h.hart));
            assert_eq!(h.run, HartRun::Running);
        }
        self.harts_busy = self.harts_busy.max(busy);
        if let Some(k) = &s.kmem {
            let used = k.lists.iter().filter(|l| l.free_pages > 0).count();
            self.lists_used = self.lists_used.max(used);
        }
        for f in &s.findings {
            self.findings
                .push(format!("{:?} {}: {}", f.kind, f.path, f.message));
        }
        s
    }

    /// Snapshots until the console shows `until` after `from`.
    fn run_until(
        &mut self,
        g: &mut Guest,
        src: &mut Xv6Source,
        mem: &mut SharedRam,
        until: &str,
        from: usize,
        secs: u64,
    ) -> (Snapshot, usize) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.take(src, mem, 0);
            if let Some(i) = g.console().get(from..).and_then(|t| t.find(until)) {
                return (s, from + i + until.len());
            }
            assert!(
                Instant::now() < deadline,
                "no {until:?} within {secs} s:\n{}",
                g.console()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn report(&self, what: &str, src: &Xv6Source) {
        eprintln!(
            "{what}: {} snapshots, mean {:?}, max {:?}, {} bytes read in bulk each",
            self.snapshots,
            self.cost / self.snapshots.max(1),
            self.max_cost,
            src.bulk_bytes()
        );
    }
}

#[test]
fn xv6_fixture_live_bcachetest_and_kalloctest() {
    let b = build(&["BCACHE=bucket", "DWARF=5", "CPUS=3"]);
    let mut g = Guest::boot(&b);
    let mut ram = g.shared_ram();
    let (syms, mut src) = open(&b, &mut ram);
    assert!(src
        .bcache_layout()
        .unwrap()
        .starts_with("bcache.bucket[*]: 13 buckets"));
    let mut at = g.wait_for("$ ", 0, 120);
    let mut w = Watch::default();

    // Idle at the prompt: three harts, the shell asleep, every buf on exactly one list.
    let idle = w.take(&mut src, &mut ram, 0);
    assert_eq!(idle.harts.len(), 3, "{:?}", idle.harts);
    let sh = idle
        .processes
        .iter()
        .find(|p| p.name == "sh")
        .expect("the shell");
    assert_eq!(sh.state, "SLEEPING");
    assert!(
        sh.chan_name.is_some(),
        "the shell's channel is named: {sh:?}"
    );
    let bc = idle.bcache.as_ref().unwrap();
    assert_eq!(bc.buckets.iter().map(|b| b.nbuf).sum::<u32>(), 30);
    assert!(bc.bufs.iter().all(|b| b.bucket.is_some()));
    assert!(!src.panicked(&mut ram));

    // The sleeping shell's kernel stack, through the kernel's page table: the saved frame
    // pointer leads to a return address in the kernel's code.
    let ctx = sh.context.unwrap();
    let kstack = sh.kstack.unwrap();
    assert!(
        ctx.sp >= kstack && ctx.sp < kstack + 4096,
        "{ctx:?} in {kstack:#x}"
    );
    let mut table = src.kernel_page_table(&mut ram).unwrap();
    let mut v = VirtMemory {
        mem: &mut ram,
        table: &mut table,
    };
    let mut word = [0u8; 8];
    v.read(ctx.fp - 8, &mut word).unwrap();
    let ra = u64::from_le_bytes(word);
    assert!(
        syms.is_text(ra),
        "saved return address {ra:#x} is in the text"
    );

    // bcachetest: bucket locks count, harts run its workers.
    let before = lock_n(&idle, "bcache.bucket[");
    at = g.type_line("bcachetest").max(at);
    let (_, end) = w.run_until(&mut g, &mut src, &mut ram, "test1 OK", at, 300);
    at = g.wait_for("$ ", end, 60);
    let after = w.take(&mut src, &mut ram, 0);
    assert!(
        lock_n(&after, "bcache.bucket[") > before + 8000,
        "bucket locks were taken: {before} -> {}",
        lock_n(&after, "bcache.bucket[")
    );
    assert!(
        w.harts_busy >= 2,
        "seen at most {} harts running test threads",
        w.harts_busy
    );
    let lab = after
        .locks
        .iter()
        .find(|l| l.path.as_deref() == Some("bcache.bucket[2].lock"))
        .unwrap();
    assert_eq!(lab.meta.name, "bcache.bucket");
    assert!(lab.lab.unwrap().n > 8000);
    // At rest, each cached block is in its hash bucket, once.
    let bc = after.bcache.as_ref().unwrap();
    assert_eq!(bc.buckets.iter().map(|b| b.nbuf).sum::<u32>(), 30);
    for buf in bc.bufs.iter().filter(|b| b.valid) {
        assert_eq!(buf.bucket, Some(buf.blockno % 13), "{buf:?}");
    }
    // The test's tally lock lives in kalloc'd memory: known only from the registry.
    assert!(
        after
            .locks
            .iter()
            .any(|l| l.path.is_none() && l.meta.name != "?"),
        "a registry-only lock"
    );
    w.report("bcachetest", &src);

    // kalloctest: the per-hart allocator locks count; pages come back.
    let kbefore = lock_n(&after, "kmem[");
    let start = after.kmem.as_ref().unwrap().pages_at_start.unwrap();
    at = g.type_line("kalloctest").max(at);
    let (_, end) = w.run_until(&mut g, &mut src, &mut ram, "test2 OK", at, 300);
    g.wait_for("$ ", end, 60);
    // The free lists are walked every half second: at rest the pages come back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (done, free) = loop {
        let s = w.take(&mut src, &mut ram, 0);
        let km = s.kmem.as_ref().unwrap();
        let free: u64 = km.lists.iter().map(|l| l.free_pages).sum();
        if (free + 512 >= start && !km.incomplete) || Instant::now() > deadline {
            break (s, free);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(lock_n(&done, "kmem[") > kbefore + 10_000);
    assert!(!done.kmem.as_ref().unwrap().incomplete);
    assert!(
        free <= start && free + 512 >= start,
        "{free} free pages of {start} at boot"
    );
    assert!(
        w.lists_used >= 2,
        "steals spread pages over the harts' lists: at most {} held pages",
        w.lists_used
    );
    w.report("bcachetest+kalloctest", &src);
    assert_eq!(
        w.findings,
        Vec::<String>::new(),
        "a sound kernel has no findings"
    );

    // What a snapshot costs at rest, with and without walking the ~32k free pages (measured,
    // not asserted: timing targets belong in `cargo xtask bench`).
    let modes = [
        ("with a free-list walk", Duration::ZERO),
        ("without", Duration::from_secs(3600)),
    ];
    for (what, every) in modes {
        src.set_free_list_interval(every);
        let mut at_rest = Watch::default();
        for _ in 0..20 {
            at_rest.take(&mut src, &mut ram, 0);
        }
        at_rest.report(&format!("at rest, {what}"), &src);
    }
}

#[test]
fn xv6_fixture_findings_on_bug_switches() {
    let b = build(&[
        "BCACHE=parallel",
        "DWARF=2",
        "CPUS=3",
        "BUG=stack-name odd-names double-kfree uninit-lock dup-block",
    ]);
    let mut g = Guest::boot(&b);
    let mut ram = g.shared_ram();
    let (_, mut src) = open(&b, &mut ram);
    assert!(src
        .bcache_layout()
        .unwrap()
        .starts_with("bcache.locks and bcache.heads: 13"));
    let mut at = g.wait_for("$ ", 0, 120);
    let mut w = Watch::default();

    let has = |s: &Snapshot, kind: FindingKind, path: &str| {
        s.findings
            .iter()
            .find(|f| f.kind == kind && f.path.starts_with(path))
            .cloned()
    };
    // At the prompt: names on the boot stack, names statslock skips, the double kfree.
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = w.take(&mut src, &mut ram, 0);
        if has(&s, FindingKind::PageTwiceOnList, "kmem[").is_some() || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let f = has(&s, FindingKind::LockNameOnStack, "kmem[").expect("kmem names on stack0");
    assert!(f.message.contains("stack0+"), "{}", f.message);
    assert!(has(&s, FindingKind::LockNameNotCounted, "bcache.locks[").is_some());
    assert!(
        has(&s, FindingKind::LockNameNotCounted, "bcache.lock").is_some(),
        "the evict lock"
    );
    let f = has(&s, FindingKind::PageTwiceOnList, "kmem[0].freelist").expect("the double kfree");
    assert!(f.message.contains("double kfree"));
    assert!(s.kmem.as_ref().unwrap().incomplete);

    // bcachetest uses the last bucket, whose lock was never initialised; the kernel's own
    // audit says which blocks are cached twice, and lockscope must agree.
    at = g.type_line("bcachetest").max(at);
    let (_, end) = w.run_until(&mut g, &mut src, &mut ram, "test1 results", at, 300);
    at = g.wait_for("$ ", end, 120);
    at = g.type_line("audit").max(at);
    let end = g.wait_for("audit: ", at, 60);
    let end = g.wait_for("\n$ ", end, 60);
    let audit = g.console()[at..end].to_owned();
    let s = w.take(&mut src, &mut ram, 0);
    let s2 = w.take(&mut src, &mut ram, 0);
    assert_eq!(
        s.findings, s2.findings,
        "a guest at rest reads the same twice"
    );
    let f = has(&s2, FindingKind::LockUninitialised, "bcache.locks[12]").unwrap_or_else(|| {
        panic!(
            "uninitialised bucket lock: {:#?}\naudit:\n{audit}",
            s2.findings
        )
    });
    assert!(f.message.contains("initlock"));
    let mut twice: Vec<String> = audit
        .lines()
        .filter_map(|l| l.strip_prefix("audit: block "))
        .filter(|l| l.contains("cached twice"))
        .filter_map(|l| l.split(' ').next().map(str::to_owned))
        .collect();
    let mut ours: Vec<String> = s2
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::BlockCachedTwice)
        .filter_map(|f| {
            f.message
                .strip_prefix("block ")?
                .split(' ')
                .next()
                .map(str::to_owned)
        })
        .collect();
    twice.sort();
    twice.dedup();
    ours.sort();
    assert_eq!(
        ours, twice,
        "blocks cached twice, as the kernel's audit says:\n{audit}"
    );
    w.report("bugs", &src);
}
