//! The dashboard end to end: the real `lockscope run` in a real terminal (tmux), on the real
//! kernel in QEMU. What a user sees is read back with `tmux capture-pane`.

mod support;

use std::time::Duration;

use support::tmux::Tmux;
use support::*;

/// The shell command that runs lockscope, then reports its exit status and keeps the pane.
fn shell(args: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_lockscope");
    format!(
        "LOCKSCOPE_KERNEL='{}' '{bin}' {args}; echo \"lockscope exited $?\"; sleep 60",
        kernel().display()
    )
}

/// Rows of the lock table whose name starts with `prefix` and whose acquisitions are non-zero.
fn busy_rows(screen: &str, prefix: &str) -> usize {
    screen
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(['│', ' ']);
            let mut cols = l.split_whitespace();
            let name = cols.next()?;
            let _class = cols.next()?;
            let acq: u64 = cols.next()?.replace(',', "").parse().ok()?;
            (name.starts_with(prefix) && acq > 0).then_some(())
        })
        .count()
}

#[test]
fn run_shows_bucket_locks_with_acquisitions_and_q_restores_the_terminal() {
    let t = Tmux::start(
        "bcache",
        &shell("run --smp 4 --bootargs 'workload=bcachetest secs=60'"),
    );
    let screen = t.wait_for(
        "bucket locks with acquisitions",
        Duration::from_secs(90),
        |s| busy_rows(s, "bcache.bucket") >= 3,
    );
    assert!(screen.contains("Locks"), "{screen}");
    assert!(
        t.alternate_screen(),
        "the dashboard uses the alternate screen"
    );
    t.send("q");
    let after = t.wait_for("lockscope to exit", Duration::from_secs(30), |s| {
        s.contains("lockscope exited")
    });
    assert!(after.contains("lockscope exited 0"), "{after}");
    assert!(
        !t.alternate_screen(),
        "the terminal left the alternate screen"
    );
    assert!(
        !after.contains("bcache.bucket"),
        "the dashboard is gone from the restored screen:\n{after}"
    );
}

#[test]
fn a_bucket_order_deadlock_opens_the_deadlock_view() {
    let t = Tmux::start(
        "deadlock",
        &shell("run --smp 4 --bootargs 'workload=bcachetest bug=bucket-order'"),
    );
    let screen = t.wait_for("the deadlock view", Duration::from_secs(120), |s| {
        s.contains("holds bcache.bucket") && s.contains("waits bcache.bucket")
    });
    assert!(screen.contains("Deadlock"), "{screen}");
    t.send("q");
    t.wait_for("lockscope to exit", Duration::from_secs(30), |s| {
        s.contains("lockscope exited 0")
    });
}
