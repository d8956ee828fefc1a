//! `cargo xtask fixtures`: the dashboard's view fixtures and the sample traces in `traces/`,
//! recorded from the real kernel.

use anyhow::{bail, Context, Result};
use std::process::Command;

use crate::kernel::{build_kernel, build_lockscope, ensure_disk};
use crate::root;

/// Records real sessions with `lockscope check --record` and turns them into the dashboard's
/// view fixtures (`lockscope replay --dump-view`) and the sample traces in `traces/`, all
/// symbolized with one kernel ELF kept next to the traces.
pub fn fixtures() -> Result<()> {
    let elf = build_kernel()?;
    let disk = ensure_disk()?;
    let lockscope = build_lockscope()?;
    let traces = root().join("traces");
    let kernel = traces.join("lockscope-kernel.elf");
    std::fs::copy(&elf, &kernel).context("copying the kernel ELF into traces/")?;
    let views = root().join("debugger/tui/tests/fixtures");
    let scratch = std::env::temp_dir().join(format!("lockscope-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    // (view fixture, sample trace, boot arguments, seconds to watch)
    type Run<'a> = (Option<&'a str>, Option<&'a str>, &'a str, Option<&'a str>);
    let runs: [Run; 8] = [
        (Some("healthy"), None, "workload=mixed secs=30", Some("3")),
        (
            Some("kalloc_global"),
            None,
            "workload=kalloctest kalloc=global secs=30",
            Some("3"),
        ),
        (
            Some("deadlock"),
            Some("bucket-order-deadlock"),
            "bug=bucket-order",
            None,
        ),
        (Some("bget_no_buffers"), None, "bug=refcnt-leak", None),
        (
            Some("null_next"),
            Some("null-next-kerneltrap"),
            "bug=null-next",
            None,
        ),
        // Counters and state only (trace=off): the events of a whole run are tens of MB.
        (
            None,
            Some("refcnt-leak-panic"),
            "bug=refcnt-leak trace=off",
            None,
        ),
        (
            None,
            Some("healthy-mixed"),
            "workload=mixed secs=2 trace=off",
            None,
        ),
        (
            None,
            Some("stale-ticks"),
            "bug=stale-ticks ops=2000 trace=off",
            None,
        ),
    ];
    for (view, sample, bootargs, watch) in runs {
        let name = view.or(sample).expect("each run keeps something");
        let trace = scratch.join(format!("{name}.lstrace"));
        let mut c = Command::new(&lockscope);
        c.args(["check", "--smp", "4", "--bootargs", bootargs])
            .arg("--kernel")
            .arg(&kernel)
            .arg("--disk")
            .arg(&disk)
            .arg("--record")
            .arg(&trace)
            .args(["--for", watch.unwrap_or("120")])
            .stdout(std::process::Stdio::null());
        // check exits 3 or 4 on the bug scenarios: that is the point.
        let st = c.status().context("running lockscope check")?;
        if st.code() == Some(2) {
            bail!("lockscope check `{bootargs}` failed to run");
        }
        if let Some(v) = view {
            let mut r = Command::new(&lockscope);
            r.arg("replay")
                .arg(&trace)
                .args(["--check", "--dump-view"])
                .arg(views.join(format!("{v}.view.json")))
                .stdout(std::process::Stdio::null());
            r.status().context("running lockscope replay")?;
            println!("fixture {v}: `{bootargs}`");
        }
        if let Some(t) = sample {
            std::fs::copy(&trace, traces.join(format!("{t}.lstrace")))?;
            println!("trace {t}: `{bootargs}`");
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("now review the dashboard snapshots: cargo test -p lockscope-tui; cargo insta review");
    Ok(())
}
