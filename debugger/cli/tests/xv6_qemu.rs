//! `lockscope qemu` as an xv6 Makefile's QEMU, end to end: the C fixture kernel built and run by
//! its own Makefile (`make qemu-gdb QEMU="lockscope qemu --"`) in a real terminal (tmux),
//! the user's real gdb-multiarch on the Makefile's port, `lockscope attach` in parallel
//! (check-style JSON), bcachetest typed at the console, Ctrl-A X, the summary and the
//! recording. One boot checks all of it.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::tmux::Tmux;
use support::xv6::{free_port, gdb, one_qemu, Tree};
use support::*;

fn lockscope_in(registry: &Path) -> Command {
    let mut c = lockscope();
    c.env("LOCKSCOPE_REGISTRY_DIR", registry);
    c
}

fn run(mut c: Command) -> Output {
    c.output().expect("run lockscope")
}

/// `lockscope check --attach --for SECS --json` (joins the newest session).
fn attached(registry: &Path, secs: u32) -> Value {
    let out = run({
        let mut c = lockscope_in(registry);
        c.args(["check", "--attach", "--for", &secs.to_string(), "--json"]);
        c
    });
    let (code, v) = json_report(&out);
    assert_eq!(
        code,
        0,
        "attach check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

/// Acquisitions of the bucket locks (`bcache.bucket[i].lock`).
fn bucket_acquires(v: &Value) -> u64 {
    v["locks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("bcache.bucket["))
        })
        .map(|l| l["acquires"].as_u64().unwrap())
        .sum()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The registry entry of the running session, once it is there.
fn entry(registry: &Path, deadline: Instant) -> Value {
    loop {
        let found = std::fs::read_dir(registry).ok().and_then(|d| {
            d.flatten()
                .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
                .find(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("qemu-") && n.ends_with(".json")
                })
        });
        if let Some(e) = found {
            if let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(e.path()).unwrap()) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "no registry entry appeared");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn queries_are_qemu_byte_for_byte() {
    for args in [&["-help"][..], &["--version"], &["-machine", "help"]] {
        let ours = run({
            let mut c = lockscope();
            c.arg("qemu").arg("--").args(args);
            c
        });
        let theirs = Command::new("qemu-system-riscv64")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(ours.stdout, theirs.stdout, "{args:?}");
        assert_eq!(ours.stderr, theirs.stderr, "{args:?}");
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}");
    }
    // What the Makefile greps for.
    let help = run({
        let mut c = lockscope();
        c.args(["qemu", "--", "-help"]);
        c
    });
    assert!(String::from_utf8_lossy(&help.stdout)
        .lines()
        .any(|l| l.starts_with("-gdb")));
}

#[test]
fn make_qemu_gdb_with_lockscope_as_qemu_shares_the_guest_with_gdb_and_attach() {
    let _one = one_qemu();
    let tree = Tree::new();
    let registry = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let record: PathBuf = tree.path().join("session.trace");
    let port = free_port();
    let bin = env!("CARGO_BIN_EXE_lockscope");
    let command = format!(
        "cd '{}' && make qemu-gdb GDBPORT={port} QEMU=\"'{bin}' qemu --record '{}' --\"; echo \"make exited $?\"; sleep 120",
        tree.path().display(),
        record.display()
    );
    let t = Tmux::start_with(
        "xv6qemu",
        &command,
        &[("LOCKSCOPE_REGISTRY_DIR", registry.path().as_os_str())],
    );
    let e = entry(registry.path(), Instant::now() + Duration::from_secs(90));
    assert_eq!(e["harts"], 3, "{e}");
    assert!(
        e["gdb_listen"]
            .as_str()
            .is_some_and(|g| g.ends_with(&port.to_string())),
        "{e}"
    );

    // Guest RAM is private to the user: file 0600 in 0700 directories.
    let ram = PathBuf::from(e["ram_file"].as_str().unwrap());
    assert_eq!(mode(&ram), 0o600);
    assert_eq!(mode(ram.parent().unwrap()), 0o700);
    assert_eq!(mode(ram.parent().unwrap().parent().unwrap()), 0o700);

    // The user's gdb on the Makefile's port, while the guest is held by -S.
    let kernel = tree.kernel();
    let g = gdb(&kernel, port, &["info threads", "p ticks", "detach"]);
    assert!(g.contains("Thread 1.3"), "three harts as threads:\n{g}");
    assert!(g.contains("$1 = 0"), "ticks before boot:\n{g}");
    // Detaching lets the guest run, as with QEMU.
    t.wait_for("the shell's prompt", Duration::from_secs(60), |s| {
        s.lines().any(|l| l.trim_end() == "$")
    });

    let idle = attached(registry.path(), 2);
    // The lockscope qemu session loaded the plugin: attach reads its events too.
    assert!(
        idle["kernel_reader"]
            .as_str()
            .unwrap()
            .starts_with("xv6 (DWARF) + QEMU plugin ("),
        "{idle}"
    );
    assert_eq!(idle["findings"].as_array().unwrap().len(), 0, "{idle}");
    let buckets = idle["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 13, "{idle}");
    assert!(idle["bucket_counts_unavailable"].as_bool().unwrap());
    assert!(buckets[0]["hits"].is_null(), "no made-up counts: {idle}");
    assert_eq!(idle["cpus"].as_array().unwrap().len(), 3, "{idle}");
    let before = bucket_acquires(&idle);

    // bcachetest at the user's own console; attach watches counts climb and harts run it
    // (typed again whenever it ended before attach caught a hart in it: the test is short,
    // its threads sleep on the disk much of the time, and each look is one instant).
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut climbed, mut running, mut runs) = (false, false, 0);
    while !(climbed && running) {
        assert!(
            Instant::now() < deadline,
            "attach saw climbed={climbed} running={running}"
        );
        let screen = t.capture();
        if runs == 0 || (runs < 10 && screen.lines().last_nonempty() == Some("$")) {
            t.send("bcachetest");
            t.send("Enter");
            runs += 1;
        }
        let v = attached(registry.path(), 1);
        if v["buckets"].as_array().unwrap().is_empty() {
            // This look ended before its first snapshot (a loaded host): look again.
            continue;
        }
        climbed |= bucket_acquires(&v) > before + 100;
        running |= v["cpus"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["process"]["name"] == "bcachetest");
        let occupied: u64 = v["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["bufs"].as_u64().unwrap())
            .sum();
        assert_eq!(occupied, 30, "every buf in one bucket: {v}");
    }
    let screen = t.wait_for("bcachetest's end", Duration::from_secs(180), |s| {
        s.contains("test1 OK") && s.lines().last_nonempty() == Some("$")
    });
    assert!(screen.contains("test0: OK"), "{screen}");

    // gdb again, on the running guest, while attach reads.
    let reader = std::thread::spawn({
        let registry = registry.path().to_path_buf();
        move || attached(&registry, 3)
    });
    let g = gdb(&kernel, port, &["info threads", "p ticks > 0", "detach"]);
    assert!(g.contains("$1 = 1"), "ticks moved:\n{g}");
    let during = reader.join().unwrap();
    assert!(bucket_acquires(&during) > before, "{during}");
    assert!(during["events"].as_u64().unwrap() > 0, "{during}");
    assert_eq!(during["no_lock_events"], false, "{during}");

    // Ctrl-A X: QEMU ends, lockscope says how it went, make sees QEMU's status.
    t.send("C-a");
    t.send("x");
    let end = t.wait_for("make to end", Duration::from_secs(60), |s| {
        s.contains("make exited")
    });
    assert!(end.contains("make exited 0"), "{end}");
    let summary = end.replace('\n', "");
    assert!(
        summary.contains("lockscope: QEMU exited (status 0); verdict ok"),
        "{end}"
    );
    assert!(summary.contains("lab tests: test0 OK (tot= "), "{end}");
    assert!(
        summary.contains(&format!("recording: {}", record.display())),
        "{end}"
    );
    assert!(
        !ram.parent().unwrap().exists(),
        "the run directory is removed"
    );

    // The recording replays with the same lab tests, each measured over its window.
    let out = run({
        let mut c = lockscope();
        c.arg("replay").arg(&record).args(["--check", "--json"]);
        c
    });
    let (code, v) = json_report(&out);
    assert_eq!(code, 0, "{v}");
    // bcachetest ran `runs` times at the console: its two tests each time.
    let tests = v["lab_tests"].as_array().unwrap();
    let names: Vec<&str> = tests.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2 * runs, "{v}");
    assert!(names.chunks(2).all(|p| p == ["test0", "test1"]), "{v}");
    // A short test can start and end between two looks (its window is then unmeasured, and
    // says so); each of the two was measured at least once.
    for x in tests {
        assert_eq!(x["result"], "ok", "{x}");
        if x["measured"] == true {
            assert!(x["tot"].as_i64().unwrap() <= x["tot_all"].as_i64().unwrap());
        }
    }
    for name in ["test0", "test1"] {
        assert!(
            tests
                .iter()
                .any(|x| x["name"] == name && x["measured"] == true),
            "{name} measured once: {v}"
        );
    }
}

/// The last line with something on it.
trait LastNonEmpty<'a> {
    fn last_nonempty(self) -> Option<&'a str>;
}

impl<'a, I: DoubleEndedIterator<Item = &'a str>> LastNonEmpty<'a> for I {
    fn last_nonempty(mut self) -> Option<&'a str> {
        self.rfind(|l| !l.trim().is_empty()).map(str::trim_end)
    }
}

/// `make qemu` with lockscope as QEMU on a kernel whose bcache leaks a reference per lookup:
/// bcachetest panics with `bget: no buffers`, and when QEMU ends (a SIGTERM, as the grader
/// sends) the summary on the student's terminal holds the answer `lockscope check` gives: the
/// panicking hart's stack through bget and bread, the process, the locks it holds with their
/// lines, and why no buf was free.
#[test]
fn make_qemu_panic_is_diagnosed_in_the_summary() {
    let _one = one_qemu();
    let tree = Tree::new();
    let registry = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let bin = env!("CARGO_BIN_EXE_lockscope");
    let stderr = tree.path().join("lockscope.stderr");
    // stderr to a file: the summary is longer than the terminal.
    let command = format!(
        "cd '{}' && make qemu BUG=refcnt-leak QEMU=\"'{bin}' qemu --\" 2>'{}'; echo \"make exited $?\"; sleep 120",
        tree.path().display(),
        stderr.display()
    );
    let t = Tmux::start_with(
        "xv6panic",
        &command,
        &[("LOCKSCOPE_REGISTRY_DIR", registry.path().as_os_str())],
    );
    t.wait_for("the shell's prompt", Duration::from_secs(120), |s| {
        s.lines().any(|l| l.trim_end() == "$")
    });
    t.send("bcachetest");
    t.send("Enter");
    t.wait_for("the panic", Duration::from_secs(240), |s| {
        s.contains("panic: bget: no buffers")
    });
    // A second client sees the panic too; by the end of its look the session's own capture
    // (tens of milliseconds) is long done.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = run({
            let mut c = lockscope_in(registry.path());
            c.args(["check", "--attach", "--for", "1", "--json"]);
            c
        });
        let (_, v) = json_report(&out);
        if v["verdict"] == "panic" {
            break;
        }
        assert!(Instant::now() < deadline, "attach never saw the panic: {v}");
    }
    // The grader ends a test with SIGTERM to make's QEMU, here lockscope: it goes on to QEMU,
    // which shuts down cleanly, and make sees QEMU's status 0, as without lockscope.
    let pid = entry(registry.path(), Instant::now() + Duration::from_secs(10))["pid"]
        .as_i64()
        .unwrap();
    // SAFETY: kill(2) of the lockscope process this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let end = t.wait_for("make to end", Duration::from_secs(60), |s| {
        s.contains("make exited")
    });
    assert!(end.contains("make exited 0"), "{end}");
    let summary = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        summary.contains("terminating on signal 15"),
        "QEMU's own words: {summary}"
    );
    assert!(
        summary.contains("lockscope: QEMU exited (status 0); verdict panic"),
        "{summary}"
    );
    assert!(summary.contains("lockscope: --- panic"), "{summary}");
    assert!(
        summary.contains("lockscope: process: pid ") && summary.contains("(bcachetest)"),
        "{summary}"
    );
    assert!(
        summary
            .lines()
            .any(|l| l.contains("taken at bget ") && l.contains("bio.c:")),
        "the held lock with its line: {summary}"
    );
    assert!(
        summary.contains("lockscope: buffer cache: ")
            && summary.contains("a reference was taken and never dropped"),
        "{summary}"
    );
    assert!(
        summary
            .lines()
            .any(|l| l.contains(" bget ") && l.contains("[inlined]"))
            && summary.lines().any(|l| l.contains(" bread ")),
        "bget inlined into bread on the panicking hart's stack: {summary}"
    );
    assert!(
        summary.contains("lockscope: every hart at the stop:"),
        "{summary}"
    );
}
