//! `cargo xtask fixtures`: the sample recordings in `traces/` and the dashboard's view fixtures,
//! recorded from the real kernel.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

use crate::cmd::root;
use crate::kernel::{build_kernel, build_lockscope, ensure_disk};

/// One scenario: the sample recording it makes, the view fixture taken from it, how the kernel
/// boots, how long to watch (until the verdict when `None`), and whether the kernel goes inside.
struct Run {
    sample: &'static str,
    view: Option<&'static str>,
    bootargs: &'static str,
    watch: Option<&'static str>,
    with_kernel: bool,
}

const fn run(sample: &'static str, view: Option<&'static str>, bootargs: &'static str) -> Run {
    Run {
        sample,
        view,
        bootargs,
        watch: None,
        with_kernel: false,
    }
}

/// Every scenario: healthy, `kalloc=global`, and each `bug=`. A few seconds of each is plenty
/// (a recording costs about 0.35 bytes an event), and the faults end at their verdict.
const RUNS: [Run; 10] = [
    Run {
        watch: Some("3"),
        ..run("healthy-mixed", Some("healthy"), "workload=mixed secs=30")
    },
    Run {
        watch: Some("3"),
        ..run(
            "kalloc-global",
            Some("kalloc_global"),
            "workload=kalloctest kalloc=global secs=30",
        )
    },
    run(
        "bucket-order-deadlock",
        Some("deadlock"),
        "bug=bucket-order",
    ),
    // A TA opens this one without the tree: the kernel travels inside.
    Run {
        with_kernel: true,
        ..run(
            "refcnt-leak-panic",
            Some("bget_no_buffers"),
            "bug=refcnt-leak",
        )
    },
    run("null-next-kerneltrap", Some("null_next"), "bug=null-next"),
    run("double-acquire-panic", None, "bug=double-acquire"),
    Run {
        watch: Some("3"),
        ..run("stale-ticks", None, "bug=stale-ticks ops=2000")
    },
    // To the end: the second order comes in bcachetest's test1.
    run(
        "order-inversion",
        None,
        "workload=bcachetest bug=order-inversion secs=1",
    ),
    Run {
        watch: Some("10"),
        ..run(
            "kmem-steal-race",
            None,
            "workload=kalloctest bug=kmem-steal-race",
        )
    },
    run("panic-test", None, "bug=panic-test"),
];

/// Largest sample kept in the repository.
const MAX_SAMPLE: u64 = 2 << 20;
/// The xv6 sample's snapshots carry the process table and every buf: about 2.4 MB for
/// bcachetest and rwlktest.
const MAX_XV6_SAMPLE: u64 = 3 << 20;

/// Records real sessions with `lockscope check --record` (format version 2) into `traces/`,
/// next to the kernel ELF they were recorded with, and turns some into the dashboard's view
/// fixtures (`lockscope replay --dump-view`).
pub fn fixtures() -> Result<()> {
    let elf = build_kernel()?;
    let disk = ensure_disk()?;
    let lockscope = build_lockscope()?;
    let traces = root().join("traces");
    let kernel = traces.join("lockscope-kernel.elf");
    std::fs::copy(&elf, &kernel).context("copying the kernel ELF into traces/")?;
    let views = root().join("debugger/tui/tests/fixtures");
    for r in &RUNS {
        let out = traces.join(format!("{}.lsrec", r.sample));
        // A loaded machine can keep the probe from draining the rings in time: a sample with
        // lost events is recorded again (three tries).
        for attempt in 1..=3 {
            let mut c = Command::new(&lockscope);
            c.args(["check", "--smp", "4", "--bootargs", r.bootargs])
                .arg("--kernel")
                .arg(&kernel)
                .arg("--disk")
                .arg(&disk)
                .arg("--record")
                .arg(&out)
                .args(["--for", r.watch.unwrap_or("120")])
                .stdout(std::process::Stdio::null());
            if r.with_kernel {
                c.arg("--with-kernel");
            }
            // check exits 3 or 4 on the bug scenarios: that is the point.
            let st = c.status().context("running lockscope check")?;
            if st.code() == Some(2) {
                bail!("lockscope check `{}` failed to run", r.bootargs);
            }
            let lost = lost_events(&lockscope, &out)?;
            if lost == 0 {
                break;
            }
            println!(
                "trace {}: {lost} events lost (attempt {attempt} of 3)",
                r.sample
            );
        }
        let size = std::fs::metadata(&out)?.len();
        println!("trace {}: `{}`, {} KiB", r.sample, r.bootargs, size >> 10);
        if size > MAX_SAMPLE {
            bail!(
                "{} is {} KiB, more than the {} KiB a sample may take: watch it for less",
                out.display(),
                size >> 10,
                MAX_SAMPLE >> 10
            );
        }
        if let Some(v) = r.view {
            let mut c = Command::new(&lockscope);
            c.arg("replay")
                .arg(&out)
                .args(["--check", "--dump-view"])
                .arg(views.join(format!("{v}.view.json")))
                .stdout(std::process::Stdio::null());
            c.status().context("running lockscope replay")?;
            println!("fixture {v}: from {}", r.sample);
        }
    }
    xv6_sample(&lockscope, &traces)?;
    println!("now review the dashboard snapshots: cargo test -p lockscope-tui; cargo insta review");
    Ok(())
}

/// The xv6 sample: the C fixture kernel (our own code, in xv6's shape) running bcachetest and
/// rwlktest under its own Makefile's QEMU line with lockscope's plugin, recorded as a student's
/// session would be. Its ELF goes inside (`--with-kernel`).
fn xv6_sample(lockscope: &Path, traces: &Path) -> Result<()> {
    let root = root();
    let built = crate::fixture::build_fixture(&root, &crate::fixture::default_out(&root), &[])?;
    // A scratch copy, so the built fixture stays as tests expect it.
    let tree = root.join("target/tmp/xv6-sample-tree");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.parent().unwrap_or(&root))?;
    let st = Command::new("cp")
        .arg("-r")
        .arg(&built)
        .arg(&tree)
        .status()
        .context("copying the fixture tree")?;
    if !st.success() {
        bail!("copying {} failed", built.display());
    }
    let out = traces.join("xv6-bcachetest-rwlktest.lsrec");
    for attempt in 1..=3 {
        let st = Command::new(lockscope)
            .args(["check", "--xv6"])
            .arg(&tree)
            .args([
                "--snapshot",
                "--type",
                "bcachetest",
                "--type",
                "rwlktest",
                "--with-kernel",
            ])
            .arg("--record")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .context("running lockscope check --xv6")?;
        if st.code() == Some(2) {
            bail!("lockscope check --xv6 failed to run");
        }
        let lost = lost_events(lockscope, &out)?;
        if lost == 0 {
            break;
        }
        println!("trace xv6: {lost} events lost (attempt {attempt} of 3)");
    }
    let _ = std::fs::remove_dir_all(&tree);
    let size = std::fs::metadata(&out)?.len();
    println!("trace xv6-bcachetest-rwlktest: {} KiB", size >> 10);
    if size > MAX_XV6_SAMPLE {
        bail!(
            "{} is {} KiB, more than the {} KiB the xv6 sample may take",
            out.display(),
            size >> 10,
            MAX_XV6_SAMPLE >> 10
        );
    }
    Ok(())
}

/// Events the recording says were lost.
fn lost_events(lockscope: &std::path::Path, rec: &std::path::Path) -> Result<u64> {
    let o = Command::new(lockscope)
        .arg("replay")
        .arg(rec)
        .args(["--check", "--json"])
        .output()
        .context("running lockscope replay")?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .with_context(|| format!("lockscope replay --json of {}", rec.display()))?;
    Ok(v["lost_events"].as_u64().unwrap_or(0))
}
