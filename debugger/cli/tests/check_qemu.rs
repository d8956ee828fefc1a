//! `lockscope check` end to end: the real binary boots the real kernel in QEMU and its verdict,
//! counters and error messages are checked. Needs the kernel built (`cargo xtask test` does it).

#[path = "../../engine/tests/closed_port/mod.rs"]
mod closed_port;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use lockscope_engine::qemu::{Console, QemuConfig};

use serde_json::Value;
use support::*;

/// Parses the kernel's own `lock: NAME: #test-and-set N #acquire() M` lines of its stats
/// section (the top-5 section after it repeats some).
fn kernel_stats(console: &str) -> Vec<(String, u64, u64)> {
    console
        .lines()
        .skip_while(|l| !l.starts_with("--- lock kmem/bcache stats"))
        .take_while(|l| !l.starts_with("--- top 5"))
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("lock: ")?;
            let (name, rest) = rest.split_once(": #test-and-set ")?;
            let (tas, acq) = rest.split_once(" #acquire() ")?;
            Some((
                name.to_string(),
                tas.parse().ok()?,
                acq.trim().parse().ok()?,
            ))
        })
        .collect()
}

fn lock<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no lock {name} in {report}"))
}

#[test]
fn healthy_kalloctest_is_ok_and_counts_equal_the_kernels_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let out = lockscope()
        .args(["check", "--json", "--smp", "4", "--for", "120"])
        .args(["--bootargs", "workload=kalloctest secs=1"])
        .arg("--console-log")
        .arg(&log)
        .output()
        .unwrap();
    let (code, report) = json_report(&out);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["ending"]["Exited"]["status"], 0);
    let console = std::fs::read_to_string(&log).unwrap();
    let stats = kernel_stats(&console);
    let kmem: Vec<_> = stats
        .iter()
        .filter(|(n, ..)| n.starts_with("kmem"))
        .collect();
    assert_eq!(kmem.len(), 4, "the kernel printed {console}");
    for (name, tas, acq) in kmem {
        let l = lock(&report, name);
        assert_eq!(
            l["acquires"], *acq,
            "{name}: lockscope vs the kernel's #acquire()"
        );
        assert_eq!(
            l["spins"], *tas,
            "{name}: lockscope vs the kernel's #test-and-set"
        );
    }
    assert_eq!(
        report["lost_events"], 0,
        "no events lost at default settings"
    );
    assert!(report["events"].as_u64().unwrap() > 10_000);
}

/// The verdict and the sum of `#test-and-set` over the kmem locks, from lockscope's report
/// (recorded into `record` when given). Also checks the console log: without `--console-log`
/// it is kept only after a fault, and then lockscope says where.
fn kmem_spins(bootargs: &str, record: Option<&std::path::Path>) -> (String, u64, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = lockscope();
    cmd.args(["check", "--json", "--smp", "4", "--for", "120"])
        .args(["--bootargs", bootargs])
        .env("TMPDIR", tmp.path());
    if let Some(r) = record {
        cmd.arg("--record").arg(r);
    }
    let out = cmd.output().unwrap();
    let (_, report) = json_report(&out);
    let logs: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("lockscope-console-"))
        .collect();
    let err = String::from_utf8_lossy(&out.stderr);
    if report["severity"] == "fault" {
        assert_eq!(logs.len(), 1, "the log of a fault is kept: {logs:?}");
        let log = std::fs::read_to_string(&logs[0]).unwrap();
        assert!(log.contains("kalloctest"), "{log}");
        assert!(
            err.contains(&format!("guest console log: {}", logs[0].display())),
            "{err}"
        );
    } else {
        assert!(logs.is_empty(), "no log is left behind: {logs:?}");
        assert!(!err.contains("console log"), "{err}");
    }
    let spins = report["locks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["class"] == "kmem")
        .map(|l| l["spins"].as_u64().unwrap())
        .sum();
    (
        report["verdict"].as_str().unwrap().to_string(),
        spins,
        report,
    )
}

#[test]
fn global_kalloc_shows_far_more_contention_than_percpu_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("global.lstrace");
    let (global_verdict, global, report) =
        kmem_spins("workload=kalloctest kalloc=global secs=1", Some(&trace));
    let (percpu_verdict, percpu, _) = kmem_spins("workload=kalloctest kalloc=percpu secs=1", None);
    // The starter's single list fails kalloctest's own threshold, as in the lab.
    assert_eq!(global_verdict, "fail");
    assert_eq!(percpu_verdict, "ok");
    assert!(
        global > 10 * percpu.max(100),
        "kmem #test-and-set: global {global}, percpu {percpu}"
    );

    // Where the one kmem lock is contended: its top call sites, in kalloc.rs, with their
    // contended acquisitions adding up to (at most) the lock's own.
    let kmem = report["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["class"] == "kmem" && l["contended"].as_u64().unwrap() > 0)
        .unwrap_or_else(|| panic!("a contended kmem lock: {report}"));
    let sites = kmem["sites"].as_array().unwrap();
    assert!(!sites.is_empty(), "{kmem}");
    let mut sum = 0;
    for s in sites {
        let at = s["location"].as_str().unwrap_or("");
        assert!(at.starts_with("kernel/src/kalloc.rs:"), "{s}");
        assert!(at.rsplit(':').next().unwrap().parse::<u32>().is_ok(), "{s}");
        assert!(s["function"].as_str().unwrap().contains("kalloc"), "{s}");
        let n = s["count"].as_u64().unwrap();
        assert!(n > 0 && s["wait_max_ns"].as_u64().unwrap() >= s["wait_avg_ns"].as_u64().unwrap());
        sum += n;
    }
    assert!(sum <= kmem["contended"].as_u64().unwrap(), "{kmem}");
    let counts: Vec<u64> = sites.iter().map(|s| s["count"].as_u64().unwrap()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "most first: {counts:?}"
    );

    // The text shows them too, also from the recording.
    let out = lockscope()
        .args(["replay", "--check"])
        .arg(&trace)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let section = text
        .split("--- contention sites")
        .nth(1)
        .unwrap_or_else(|| panic!("no sites section: {text}"));
    let name = kmem["name"].as_str().unwrap();
    assert!(section.contains(&format!("{name} (")), "{section}");
    assert!(section.contains("kernel/src/kalloc.rs:"), "{section}");
}

#[test]
fn an_x86_elf_is_refused_with_exit_2() {
    let me = std::env::current_exe().unwrap();
    let out = lockscope()
        .args(["check", "--kernel"])
        .arg(&me)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x86_64"), "{err}");
    assert!(err.contains("RISC-V kernel ELF"), "{err}");
}

#[test]
fn a_riscv_elf_without_the_abi_symbol_is_refused_with_exit_2() {
    let elf = workspace().join("debugger/engine/tests/fixtures/symbols/fixture.elf");
    assert!(elf.is_file(), "fixture {} is missing", elf.display());
    let out = lockscope()
        .args(["check", "--kernel"])
        .arg(&elf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LOCKSCOPE_ROOT"), "{err}");
    assert!(err.contains("lockscope kernel"), "{err}");
}

#[test]
fn no_stub_on_the_port_says_how_to_start_one() {
    let (_reserved, port) = closed_port::closed_port();
    let out = lockscope()
        .args(["check", "--attach", &format!("127.0.0.1:{port}")])
        .arg("--kernel")
        .arg(kernel())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no gdb stub at 127.0.0.1:{port}: start QEMU with -gdb tcp::{port}, or use `lockscope run`")),
        "{err}"
    );
}

#[test]
fn qemu_killed_mid_session_is_reported_and_what_was_gathered_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let child = lockscope()
        .args(["check", "--json", "--smp", "2", "--for", "120"])
        .args(["--bootargs", "workload=kalloctest secs=60"])
        .arg("--console-log")
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the workload runs (however loaded the host), then kill QEMU.
    let deadline = Instant::now() + Duration::from_secs(60);
    let qemu = loop {
        let started = std::fs::read_to_string(&log).is_ok_and(|c| c.contains("start kalloctest"));
        if let Some(pid) = child_named(child.id(), "qemu-system-ris").filter(|_| started) {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the workload did not start under lockscope"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(1));
    let killed = Command::new("kill")
        .args(["-9", &qemu.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("QEMU was killed"), "{err}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report is still printed");
    assert!(
        report["events"].as_u64().unwrap() > 0,
        "what was gathered before the kill is kept: {report}"
    );
    assert!(lock(&report, "kmem0")["acquires"].as_u64().unwrap() > 0);
}

/// Runs `lockscope check --json` on these boot arguments.
fn check_json(bootargs: &str, smp: u32) -> (i32, Value) {
    let out = lockscope()
        .args(["check", "--json", "--for", "120", "--smp", &smp.to_string()])
        .args(["--bootargs", bootargs])
        .output()
        .unwrap();
    json_report(&out)
}

fn texts(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect()
}

fn locations(frames: &Value) -> Vec<String> {
    frames
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["function"].as_str().unwrap_or("?"),
                f["location"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn healthy_bcachetest_and_mixed_are_ok_with_no_inversion_despite_steals() {
    for bootargs in ["workload=bcachetest", "workload=mixed secs=1"] {
        let (code, r) = check_json(bootargs, 4);
        assert_eq!(code, 0, "{bootargs}: {r}");
        assert_eq!(r["verdict"], "ok", "{bootargs}");
        assert_eq!(r["ending"]["Exited"]["status"], 0, "{bootargs}");
        assert!(
            r["check"]["inversions"].as_array().unwrap().is_empty(),
            "{bootargs}: {r}"
        );
        let buckets = r["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 13, "{bootargs}");
        let acquires: u64 = r["locks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["class"] == "bcache.bucket")
            .map(|l| l["acquires"].as_u64().unwrap())
            .sum();
        assert!(acquires > 1000, "{bootargs}: bucket locks were used");
    }
}

#[test]
fn bucket_order_is_a_deadlock_over_two_bucket_locks_with_bio_sites() {
    // Two harts: with more, three can close a cycle among themselves. A race: a run whose
    // harts never met ends with the inversion alone (exit 4); another boot gives it a chance.
    let (mut code, mut r) = check_json("workload=bcachetest bug=bucket-order", 2);
    if code == 4 {
        assert_eq!(r["verdict"], "lock-order-inversion", "{r}");
        (code, r) = check_json("workload=bcachetest bug=bucket-order", 2);
    }
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["verdict"], "deadlock");
    let cycles = r["check"]["deadlocks"].as_array().unwrap();
    let edges = cycles[0]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "two harts, two locks: {r}");
    let locks: Vec<&str> = edges
        .iter()
        .map(|e| e["lock_name"].as_str().unwrap())
        .collect();
    assert!(
        locks.iter().all(|l| l.starts_with("bcache.bucket")),
        "{locks:?}"
    );
    assert_ne!(locks[0], locks[1]);
    let harts: Vec<u64> = edges
        .iter()
        .map(|e| e["waiter"].as_u64().unwrap())
        .collect();
    assert_ne!(harts[0], harts[1]);
    // Each waiter is the other's holder.
    assert_eq!(edges[0]["holder"], edges[1]["waiter"]);
    assert_eq!(edges[1]["holder"], edges[0]["waiter"]);
    let chain = &texts(&r["deadlocks"])[0];
    assert!(
        chain.contains("bio.rs:"),
        "sites in the bcache source: {chain}"
    );
    for l in &locks {
        assert!(chain.contains(l), "{chain}");
    }
    // What each deadlocked hart did last: its acquisition of the lock the other waits for,
    // then its endless spin on the other's, at the buggy scan.
    let last = r["last_events"].as_array().unwrap();
    assert_eq!(last.len(), 2, "{r}");
    for (h, e) in last.iter().zip(edges) {
        assert_eq!(h["hart"], e["waiter"]);
        let evs = h["events"].as_array().unwrap();
        let end = evs.last().unwrap();
        assert_eq!(end["kind"], "spin", "{h}");
        assert_eq!(end["lock_name"], e["lock_name"], "{h}");
        assert!(
            end["site"]["location"]
                .as_str()
                .unwrap_or("")
                .contains("bio/buggy.rs:"),
            "{h}"
        );
        let other = edges.iter().find(|x| x["holder"] == h["hart"]).unwrap();
        assert!(
            evs.iter()
                .any(|x| x["kind"] == "acquired" && x["lock_name"] == other["lock_name"]),
            "hart {} took the lock the other waits for: {h}",
            h["hart"]
        );
    }
    // Lockdep's index rule found it too: hart 0's check of block 0, before the workers start,
    // misses and scans every bucket upward from bucket 0; hart 1's scan from bucket 1 starts by
    // going down to bucket 0.
    let kinds: Vec<&str> = r["inversions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"instance-order"), "{kinds:?}");
}

#[test]
fn refcnt_leak_is_a_panic_in_bget_with_file_and_line() {
    let (code, r) = check_json("workload=bcachetest bug=refcnt-leak", 4);
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["verdict"], "panic");
    assert_eq!(r["check"]["panic"]["message"], "bget: no buffers");
    let bt = locations(&r["backtrace"]);
    assert!(
        bt.iter()
            .any(|f| f.contains("bget") && f.contains("kernel/src/bio.rs:")),
        "{bt:#?}"
    );
    let fault = &r["fault"];
    assert!(
        fault["function"].as_str().unwrap().contains("bget"),
        "{fault}"
    );
}

#[test]
fn double_acquire_names_the_bucket_lock() {
    let (code, r) = check_json("workload=bcachetest bug=double-acquire", 4);
    assert_eq!(code, 3, "{r}");
    let summary = r["summary"].as_str().unwrap();
    match r["verdict"].as_str().unwrap() {
        "panic" => {
            let msg = r["check"]["panic"]["message"].as_str().unwrap();
            assert!(msg.starts_with("acquire bcache.bucket"), "{msg}");
        }
        "deadlock" => assert!(
            summary.contains("self-deadlock") && summary.contains("bcache.bucket"),
            "{summary}"
        ),
        v => panic!("verdict {v}: {r}"),
    }
}

#[test]
fn null_next_is_a_load_page_fault_at_a_bcache_line() {
    let (code, r) = check_json("workload=bcachetest bug=null-next", 4);
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["verdict"], "panic");
    let trap = &r["check"]["panic"]["trap"];
    assert_eq!(trap["scause"]["name"], "load page fault", "{r}");
    assert_eq!(trap["scause"]["raw"], 0xd);
    let stval = trap["stval"].as_u64().unwrap();
    assert!(
        stval < 0x1000,
        "a small offset from a null pointer: {stval:#x}"
    );
    let fault = &r["fault"];
    let at = format!("{} {}", fault["function"], fault["location"]);
    assert!(
        at.contains("kernel/src/bio.rs:"),
        "faulting file:line in the bcache: {at}"
    );
    assert!(r["summary"].as_str().unwrap().contains("load page fault"));
}

#[test]
fn order_inversion_passes_the_workload_but_warns_with_both_orders() {
    let (code, r) = check_json("workload=bcachetest bug=order-inversion", 4);
    assert_eq!(code, 4, "{r}");
    assert_eq!(r["verdict"], "lock-order-inversion");
    assert_eq!(
        r["ending"]["Exited"]["status"], 0,
        "bcachetest still passes"
    );
    let inv = &r["inversions"][0];
    let orders = texts(&inv["orders"]);
    assert_eq!(orders.len(), 2, "{inv}");
    let (a, b) = orders[0].split_once(" -> ").unwrap();
    assert_eq!(orders[1], format!("{b} -> {a}"), "the same pair both ways");
    for pair in inv["sites"].as_array().unwrap() {
        for site in pair.as_array().unwrap() {
            assert!(
                site["location"].as_str().unwrap_or("").contains(".rs:"),
                "both acquisition sites symbolized: {site}"
            );
        }
    }
}

#[test]
fn attach_watches_a_running_qemu_through_its_stub_and_leaves_it_running() {
    let q = QemuConfig::new(kernel())
        .smp(2)
        .bootargs("workload=kalloctest secs=60")
        .console(Console::None)
        .spawn_with_gdb(Duration::from_secs(30))
        .unwrap();
    let out = lockscope()
        .args([
            "check",
            "--json",
            "--for",
            "5",
            "--attach",
            &q.addr.to_string(),
            // The harness starts QEMU held at reset (-S): a guest held there stays held unless
            // lockscope is told to continue it.
            "--continue",
        ])
        .arg("--kernel")
        .arg(kernel())
        .output()
        .unwrap();
    let (code, report) = json_report(&out);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["ending"], "Detached");
    assert!(
        report["kernel_reader"]
            .as_str()
            .is_some_and(|k| k.starts_with("lockscope ABI v")),
        "{report}"
    );
    assert!(
        report["pauses"]["count"].as_u64().unwrap() > 0,
        "it polled through the stub: {report}"
    );
    assert!(lock(&report, "kmem0")["acquires"].as_u64().unwrap() > 0);
    assert!(report["events"].as_u64().unwrap() > 0, "{report}");
    assert!(
        q.process.is_alive(),
        "an attached check leaves QEMU running"
    );
}

/// `lockscope check ARGS --gdb-listen 127.0.0.1:PORT --json` in the background, real
/// gdb-multiarch's `info threads` and `detach` through that port while it runs, then the
/// check's output (with gdb's text and the port).
fn check_beside_gdb(args: &[&str]) -> (String, std::process::Output, u16) {
    let port = support::xv6::free_port();
    let child = lockscope()
        .args(["check", "--json"])
        .args(args)
        .args(["--gdb-listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let g = support::xv6::gdb(&kernel(), port, &["info threads", "detach"]);
    (g, child.wait_with_output().unwrap(), port)
}

#[test]
fn gdb_listen_serves_the_users_gdb_while_the_check_runs() {
    // Real gdb-multiarch through lockscope's proxy, beside lockscope's own client: the harts,
    // and a detach that leaves the guest running.
    let (g, out, port) = check_beside_gdb(&[
        "--for",
        "120",
        "--smp",
        "2",
        "--bootargs",
        "workload=kalloctest",
    ]);
    assert!(g.contains("Thread 1.2"), "two harts as threads:\n{g}");
    let (code, v) = json_report(&out);
    assert_eq!(code, 0, "the check's verdict still comes: {v}");
    assert_eq!(v["verdict"], "ok");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("target remote 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn attach_with_gdb_listen_puts_the_users_gdb_through_lockscope() {
    let q = QemuConfig::new(kernel())
        .smp(2)
        .bootargs("workload=kalloctest secs=60")
        .console(Console::None)
        .spawn_with_gdb(Duration::from_secs(30))
        .unwrap();
    // QEMU's stub takes one client: lockscope's is the proxy's upstream, and the user's gdb
    // gets in through the proxy instead of waiting in QEMU's backlog.
    let kernel = kernel();
    let addr = q.addr.to_string();
    let (g, out, _) = check_beside_gdb(&[
        "--for",
        "8",
        "--continue",
        "--attach",
        &addr,
        "--kernel",
        kernel.to_str().unwrap(),
    ]);
    assert!(g.contains("Thread 1.2"), "two harts as threads:\n{g}");
    let (code, v) = json_report(&out);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verdict"], "ok");
    assert!(
        q.process.is_alive(),
        "the guest runs on after both detached"
    );
}
