//! Recordings end to end with the real binary: `lockscope check --record` of the real kernel
//! hitting `bget: no buffers` in QEMU, then `replay` (its stops, its verdict now and at an
//! earlier moment), `export` to Perfetto, and the saved stop in real gdb-multiarch through
//! `lockscope serve` and through `export --core`. Needs the kernel built (`cargo xtask test`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockscope_engine::feed::Feed;
use lockscope_engine::recording::Recording;
use serde_json::Value;
use support::*;

/// Runs gdb-multiarch in batch mode on the kernel with `commands`; everything it printed.
fn gdb(commands: &[String]) -> String {
    let mut c = Command::new("gdb-multiarch");
    c.args(["-batch", "-nx"]);
    for e in [
        "set pagination off",
        "set confirm off",
        "set width 0",
        "set language rust",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(commands.iter().cloned())
    {
        c.args(["-ex", &e]);
    }
    c.arg(kernel()).stdin(Stdio::null());
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gdb-multiarch (apt-get install gdb-multiarch)");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gdb-multiarch did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let s = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{s}");
    s
}

/// `bt` reaches bget and its caller bread, with their lines; every hart is a thread.
fn check_stack(out: &str) {
    assert!(
        out.lines()
            .any(|l| l.contains("lockscope_kernel::bio::bget ") && l.contains("src/bio.rs:")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("lockscope_kernel::bio::bread") && l.contains("src/bio.rs:")),
        "{out}"
    );
    assert!(
        out.matches("Thread ").count() + out.matches("LWP ").count() >= 4,
        "{out}"
    );
}

/// The last snapshot's hits of bucket 0: the recording's state at the stop.
fn recorded_bucket0_hits(rec: &Path) -> u64 {
    let rec = Recording::open(rec).unwrap();
    let snap = rec
        .feeds()
        .filter_map(|f| match f {
            Feed::Snapshot(s) => Some(s),
            _ => None,
        })
        .last()
        .expect("snapshots");
    snap.bcache.as_ref().unwrap().buckets[0].hits
}

/// `p` of the kernel's published hits counter of bucket 0 (what snapshots read).
const HITS: &str = "p lockscope_kernel::abi::BUCKETS[0].0.value.hits";

/// The value of the one `$N = value` line gdb printed.
fn printed_hits(out: &str) -> u64 {
    let values: Vec<u64> = out
        .lines()
        .filter(|l| l.starts_with('$'))
        .filter_map(|l| l.split(" = ").nth(1)?.trim().parse().ok())
        .collect();
    assert_eq!(values.len(), 1, "one p: {out}");
    values[0]
}

fn serve(rec: &Path) -> (Child, String) {
    let mut child = lockscope()
        .arg("serve")
        .arg(rec)
        .args(["--stop", "0", "--gdb-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("target remote ")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, addr)
}

#[test]
fn a_recorded_panic_replays_exports_and_opens_in_gdb() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rec = dir.path().join("leak.lsrec");
    let out = lockscope()
        .args([
            "check",
            "--json",
            "--smp",
            "4",
            "--bootargs",
            "bug=refcnt-leak",
        ])
        .arg("--record")
        .arg(&rec)
        .args(["--keep", "10m", "--with-kernel"])
        .output()
        .unwrap();
    let (code, report) = json_report(&out);
    assert_eq!(code, 3, "{report}");
    assert_eq!(report["verdict"], "panic");

    // The recording: version 2, no path of this machine, its stop with registers and RAM.
    let bytes = std::fs::read(&rec).unwrap();
    assert!(bytes.starts_with(b"LSREC\0\x02\n"));
    let header = Recording::open(&rec).unwrap().header().clone();
    assert!(header.with_kernel, "{header:?}");
    assert_eq!(header.keep.as_deref(), Some("600s"));
    assert_eq!(header.kernel_name.as_deref(), Some("lockscope-kernel"));
    let tree = workspace().canonicalize().unwrap();
    let tree = tree.to_string_lossy();
    assert!(
        !bytes.windows(tree.len()).any(|w| w == tree.as_bytes()),
        "the recording names {tree}"
    );
    let out = lockscope()
        .arg("replay")
        .arg(&rec)
        .arg("--stops")
        .output()
        .unwrap();
    let stops = String::from_utf8_lossy(&out.stdout);
    assert!(
        stops.contains("stop 0:") && stops.contains("panic") && stops.contains("RAM 128 MiB"),
        "{stops}"
    );
    assert!(stops.contains("4 harts with registers"), "{stops}");

    // Replayed: the same verdict and counters as the live check.
    let out = lockscope()
        .arg("replay")
        .arg(&rec)
        .args(["--check", "--json"])
        .output()
        .unwrap();
    let (code, replayed) = json_report(&out);
    assert_eq!(code, 3);
    assert_eq!(replayed["verdict"], "panic");
    assert_eq!(replayed["backtrace"], report["backtrace"]);
    let acquires = |r: &Value| -> u64 {
        r["locks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["acquires"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(acquires(&replayed), acquires(&report));
    // Without the tree: the kernel inside the recording symbolizes it.
    let out = Command::new(env!("CARGO_BIN_EXE_lockscope"))
        .env_remove("LOCKSCOPE_KERNEL")
        .env("LOCKSCOPE_WORKSPACE", dir.path())
        .current_dir(dir.path())
        .arg("replay")
        .arg(&rec)
        .arg("--check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bio::bget") && text.contains("bio.rs:"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // As of an early moment: before the panic, fewer events.
    let out = lockscope()
        .arg("replay")
        .arg(&rec)
        .args(["--check", "--json", "--at", "20ms"])
        .output()
        .unwrap();
    let (code, early) = json_report(&out);
    assert_eq!(
        (code, &early["verdict"]),
        (0, &Value::from("ok")),
        "{early}"
    );
    assert!(early["events"].as_u64().unwrap() < replayed["events"].as_u64().unwrap());

    // Perfetto.
    let pf = dir.path().join("leak.pftrace");
    let out = lockscope()
        .arg("export")
        .arg(&rec)
        .arg("-o")
        .arg(&pf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ui.perfetto.dev"));
    assert!(std::fs::metadata(&pf).unwrap().len() > 1000);

    let hits = recorded_bucket0_hits(&rec);
    assert!(hits > 0);

    // The stop through `lockscope serve` and real gdb.
    let (mut server, addr) = serve(&rec);
    let out = gdb(&[
        format!("target remote {addr}"),
        "info threads".into(),
        "bt".into(),
        "thread apply all bt 3".into(),
        HITS.into(),
        "x/8gx $sp".into(),
        "detach".into(),
    ]);
    let _ = server.kill();
    let _ = server.wait();
    check_stack(&out);
    assert!(out.contains("[post-mortem, panic]"), "{out}");
    assert_eq!(
        printed_hits(&out),
        hits,
        "p of a global is what the recording's snapshot holds"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("0x") && l.contains(":\t0x"))
            .count(),
        4,
        "x/8gx $sp: {out}"
    );

    // The same stop as a core file.
    let core = dir.path().join("core");
    let out = lockscope()
        .arg("export")
        .arg(&rec)
        .arg("--core")
        .arg(&core)
        .args(["--kernel"])
        .arg(kernel())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = gdb(&[
        format!("core-file {}", core.display()),
        "info threads".into(),
        "bt".into(),
        HITS.into(),
    ]);
    check_stack(&out);
    assert_eq!(printed_hits(&out), hits);

    // A wrong stop number lists the stops.
    let out = lockscope()
        .arg("serve")
        .arg(&rec)
        .args(["--stop", "7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no stop 7") && err.contains("stop 0:"),
        "{err}"
    );
}
