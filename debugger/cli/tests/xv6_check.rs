//! `lockscope check` and `attach` on the xv6-shaped C fixture kernel: `check --xv6 TREE --type
//! bcachetest` (built and booted by the tree's own Makefile) giving the lab's table per test
//! and the findings of a bug switch; attaching to a QEMU someone else started with
//! `-S -gdb tcp::PORT` (polling through the stub, the held guest left held until asked); and
//! the errors for ELFs that are not xv6 kernels.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::xv6::{free_port, one_qemu, Tree};
use support::*;

/// A small tmpfs, unmounted on drop: a /dev/shm without room for the guest's RAM.
struct SmallTmpfs(tempfile::TempDir);

impl SmallTmpfs {
    fn mount() -> Option<SmallTmpfs> {
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } != 0 {
            return None;
        }
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallTmpfs(dir))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn lock_named<'a>(v: &'a Value, path: &str) -> &'a Value {
    v["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == path)
        .unwrap_or_else(|| panic!("no lock {path} in {v}"))
}

#[test]
fn check_types_bcachetest_and_reports_each_tests_window_and_the_findings() {
    let _one = one_qemu();
    let tree = Tree::new();
    let small = SmallTmpfs::mount();
    let mut c = lockscope();
    c.args(["check", "--xv6"])
        .arg(tree.path())
        .args([
            "--snapshot",
            "--make",
            "BUG=odd-names",
            "--type",
            "bcachetest",
        ])
        .args(["--for", "240", "--json"]);
    if let Some(s) = &small {
        c.env("LOCKSCOPE_RAM_DIR", s.0.path());
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (code, v) = json_report(&out);
    assert_eq!(code, 0, "the lab's own tests pass: {v}\n{stderr}");
    assert_eq!(v["verdict"], "ok");
    // Lock events come from lockscope's QEMU plugin, loaded by default.
    let reader = v["kernel_reader"].as_str().unwrap();
    assert!(
        reader.starts_with("xv6 (DWARF) + QEMU plugin ("),
        "{reader}\n{stderr}"
    );
    assert_eq!(v["no_lock_events"], false);
    assert!(v["events"].as_u64().unwrap() > 1000, "{}", v["events"]);
    if let Some(s) = &small {
        // 16 MiB cannot hold the guest's 128 MiB: the next directory was used, and said so.
        let dir = s.0.path().display().to_string();
        assert!(
            stderr.contains(&format!("{dir} has 16 MiB free, the guest needs 128 MiB")),
            "{stderr}"
        );
    }

    // The lab's table per test, over each test's window.
    let tests = v["lab_tests"].as_array().unwrap();
    let names: Vec<&str> = tests.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["test0", "test1"], "{v}");
    for t in tests {
        assert_eq!(t["result"], "ok", "{t}");
        assert_eq!(t["measured"], true, "{t}");
        assert!(t["start_line"].as_str().unwrap().starts_with("start test"));
    }
    let test1 = &tests[1];
    assert_eq!(
        test1["end_line"].as_str().unwrap().split(':').next(),
        Some("test1 results")
    );
    // BUG=odd-names names the eviction lock "evict": the lab's tot= skips it, the same total
    // over every cache lock does not.
    let evict = test1["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == "bcache.lock")
        .unwrap_or_else(|| panic!("the eviction lock moved in test1: {test1}"));
    assert_eq!(evict["name"], "evict");
    assert_eq!(evict["lab_counted"], false);
    assert_eq!(evict["allocator_or_cache"], true);
    assert!(
        test1["tot_all"].as_i64().unwrap()
            >= test1["tot"].as_i64().unwrap() + evict["nts"].as_i64().unwrap(),
        "{test1}"
    );

    // Each lock's variable and holder; the findings of the bug switch.
    let l = lock_named(&v, "bcache.bucket[3].lock");
    assert_eq!(l["name"], "bucket");
    assert!(l.get("holder").is_some(), "{l}");
    assert!(
        l["hold_avg_ns"].as_u64().is_some_and(|ns| ns > 0),
        "hold times from the plugin's events: {l}"
    );
    // Where harts waited, with the C source line of each call of acquire().
    let sites: Vec<&Value> = v["locks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["sites"].as_array().unwrap())
        .collect();
    assert!(
        sites.iter().any(|s| s["location"]
            .as_str()
            .is_some_and(|l| l.contains("kernel/") && l.contains(".c:"))),
        "contention sites at C lines: {sites:?}"
    );
    let findings = v["findings"].as_array().unwrap();
    let not_counted: Vec<&str> = findings
        .iter()
        .filter(|f| f["kind"] == "lock_name_not_counted")
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for path in ["bcache.lock", "bcache.bucket[0].lock", "kmem[0].lock"] {
        assert!(not_counted.contains(&path), "{path} in {findings:?}");
    }
    assert!(findings
        .iter()
        .all(|f| f["message"].as_str().unwrap().contains("meaningless")));
}

/// QEMU started by someone else, as the Makefile's `qemu-gdb` would: held at reset with its gdb
/// stub on `port`. Killed on drop.
struct HeldQemu(Child);

impl HeldQemu {
    fn start(tree: &Tree, port: u16) -> HeldQemu {
        let dry = tree.make(&["-n", "qemu"]);
        let line = dry
            .lines()
            .find(|l| l.starts_with("qemu-system-riscv64 "))
            .expect("the fixture's QEMU line");
        let child = Command::new("qemu-system-riscv64")
            .args(line.split_whitespace().skip(1))
            .args(["-S", "-gdb", &format!("tcp::{port}")])
            .arg("-snapshot")
            .current_dir(tree.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        HeldQemu(child)
    }
}

impl Drop for HeldQemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn attach_check(kernel: &Path, port: u16, extra: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = lockscope()
            .args(["check", "--attach", &format!("127.0.0.1:{port}")])
            .arg("--kernel")
            .arg(kernel)
            .args(["--for", "3", "--json"])
            .args(extra)
            .output()
            .unwrap();
        if out.status.code() == Some(0) {
            return json_report(&out).1;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            Instant::now() < deadline && err.contains("refused"),
            "attach failed: {err}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn acquires(v: &Value) -> u64 {
    v["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["acquires"].as_u64().unwrap())
        .sum()
}

#[test]
fn attach_polls_an_xv6_guest_through_its_stub_and_a_held_guest_stays_held() {
    let _one = one_qemu();
    let tree = Tree::new();
    tree.make(&["-s", "-j2"]);
    let port = free_port();
    let _qemu = HeldQemu::start(&tree, port);

    // Held at reset (-S): lockscope reads it, but leaves it held.
    let held = attach_check(&tree.kernel(), port, &[]);
    assert_eq!(held["kernel_reader"], "xv6 (DWARF)", "{held}");
    assert_eq!(acquires(&held), 0, "nothing ran: {held}");
    let held_again = attach_check(&tree.kernel(), port, &[]);
    assert_eq!(acquires(&held_again), 0, "still held: {held_again}");

    // --continue lets it run; lockscope polls through the stub.
    let running = attach_check(&tree.kernel(), port, &["--continue"]);
    assert!(
        acquires(&running) > 1000,
        "kinit's frees at least: {running}"
    );
    assert!(
        running["pauses"]["count"].as_u64().unwrap() > 0,
        "{running}"
    );
    assert!(!running["locks"].as_array().unwrap().is_empty());
}

#[test]
fn elfs_that_are_not_xv6_kernels_are_refused_with_what_to_do() {
    let engine = workspace().join("debugger/engine/tests/fixtures/symbols");
    let not_a_kernel = engine.join("fixture.elf");
    let out = lockscope()
        .args(["attach", "127.0.0.1:9", "--kernel"])
        .arg(&not_a_kernel)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("struct spinlock") && err.contains("cpus[NCPU]"),
        "{err}"
    );
    assert!(err.contains("kernel/kernel"), "{err}");

    let out = lockscope()
        .args(["attach", "127.0.0.1:9", "--kernel"])
        .arg(engine.join("fixture-nodwarf.elf"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("rebuild it with -g"), "{err}");
    assert!(err.contains("-ggdb"), "{err}");

    // `lockscope qemu` does not stand between the student and QEMU: it says why it cannot
    // watch, and runs QEMU alone (here a stand-in that exits at once with QEMU's status).
    let out = lockscope()
        .args(["qemu", "--qemu", "/bin/true", "--", "-kernel"])
        .arg(engine.join("fixture-nodwarf.elf"))
        .args(["-m", "128M"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("rebuild it with -g"), "{err}");
    assert!(err.contains("running QEMU without lockscope"), "{err}");
}

/// `check --xv6` on a kernel whose bcache leaks a reference per lookup: bcachetest ends in
/// `panic: bget: no buffers`, and the check names the process, the locks the panicking hart
/// holds with the lines that took them, why no buffer was free, and every hart's stack, in
/// its text and in its JSON.
#[test]
fn check_xv6_panic_names_process_held_locks_bufs_and_every_hart() {
    let _one = one_qemu();
    let tree = Tree::new();
    let run = |json: bool| {
        let mut c = lockscope();
        c.args(["check", "--xv6"])
            .arg(tree.path())
            .args(["--snapshot", "--make", "BUG=refcnt-leak"])
            .args(["--type", "bcachetest", "--for", "240"]);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };

    let out = run(false);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}\n{err}");
    assert!(text.contains("lockscope check: panic (fault)"), "{text}");
    assert!(text.contains("bget: no buffers"), "{text}");
    assert!(
        !text.contains("no panic record"),
        "the stop's diagnosis stands in for a record: {text}"
    );
    assert!(text.contains("process: pid "), "{text}");
    assert!(text.contains("(bcachetest)"), "{text}");
    assert!(
        text.contains("locks the panicking hart holds:")
            && text.lines().any(|l| l.contains("bcache.")
                && l.contains("taken at bget ")
                && l.contains("bio.c:")),
        "{text}"
    );
    assert!(text.contains("buffer cache: "), "{text}");
    assert!(
        text.contains("a reference was taken and never dropped"),
        "{text}"
    );
    assert!(text.contains("every hart at the stop:"), "{text}");
    for h in 0..3 {
        assert!(text.contains(&format!("  hart {h} (")), "hart {h}: {text}");
    }

    let (code, v) = json_report(&run(true));
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["verdict"], "panic");
    let d = &v["panic_diagnosis"];
    assert_eq!(d["process"]["name"], "bcachetest", "{v}");
    let held = d["held"].as_array().unwrap();
    assert!(
        held.iter().any(
            |l| l["path"].as_str().is_some_and(|p| p.starts_with("bcache."))
                && l["site"]["location"]
                    .as_str()
                    .is_some_and(|s| s.contains("bio.c:"))
        ),
        "{d}"
    );
    let bufs = &d["bufs"];
    let total = bufs["total"].as_u64().unwrap();
    let referenced = bufs["referenced"].as_array().unwrap();
    // The other harts run on until they see `panicked`: by the stop they may have dropped a
    // reference or two, so most (not necessarily all) bufs are still referenced.
    assert!(
        total > 0 && referenced.len() as u64 <= total && referenced.len() as u64 * 4 >= total * 3,
        "{bufs}"
    );
    assert!(
        referenced.iter().any(|b| b["refcnt"].as_u64().unwrap() > 1),
        "{bufs}"
    );
    let harts = v["panic_harts"].as_array().unwrap();
    assert_eq!(harts.len(), 3, "{v}");
    assert!(
        harts
            .iter()
            .all(|h| !h["frames"].as_array().unwrap().is_empty()),
        "every hart's stack: {v}"
    );
    // bget is inlined into bread: both show on the panicking hart's stack.
    let fns: Vec<&str> = v["backtrace"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(fns.contains(&"bget") && fns.contains(&"bread"), "{fns:?}");
}

#[test]
fn a_plugin_qemu_will_not_load_leaves_a_session_reading_state_only_and_saying_why() {
    let _one = one_qemu();
    let tree = Tree::new();
    // A "plugin" QEMU refuses: not a shared object at all.
    let dir = tempfile::tempdir().unwrap();
    for name in ["liblockscope_qemu_v1.so", "liblockscope_qemu_v2.so"] {
        std::fs::write(dir.path().join(name), b"not an ELF").unwrap();
    }
    let out = lockscope()
        .args(["check", "--xv6"])
        .arg(tree.path())
        .args(["--type", "kalloctest", "--for", "240", "--json"])
        .env("LOCKSCOPE_PLUGIN_DIR", dir.path())
        .output()
        .unwrap();
    let (code, v) = json_report(&out);
    assert_eq!(code, 0, "the session ran without the plugin: {v}");
    let reader = v["kernel_reader"].as_str().unwrap();
    assert!(
        reader.starts_with("xv6 (DWARF); no lock events: "),
        "{reader}"
    );
    assert_eq!(v["no_lock_events"], true);
    let tests = v["lab_tests"].as_array().unwrap();
    assert!(!tests.is_empty(), "kalloctest ran: {v}");
    assert!(
        reader.contains("QEMU did not start with lockscope's plugin"),
        "the header says why: {reader}"
    );
}

#[test]
fn check_xv6_with_the_plugin_names_a_bucket_deadlock_with_both_sites() {
    let _one = one_qemu();
    let tree = Tree::new();
    let out = lockscope()
        .args(["check", "--xv6"])
        .arg(tree.path())
        .args(["--snapshot", "--make", "BUG=bucket-order"])
        .args(["--type", "bcachetest", "--for", "240", "--json"])
        .output()
        .unwrap();
    let (code, v) = json_report(&out);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["verdict"], "deadlock", "{v}");
    // The plugin publishes what each hart holds and spins on: the cycle is exact, no stop
    // needed, each edge with the C line of its acquire().
    let edges = v["check"]["deadlocks"][0]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{v}");
    assert_eq!(edges[0]["holder"], edges[1]["waiter"]);
    assert_eq!(edges[1]["holder"], edges[0]["waiter"]);
    let chain = v["deadlocks"][0].as_str().unwrap();
    assert!(
        chain.contains("bcache.bucket") && chain.contains("bio.c:"),
        "{chain}"
    );
}
