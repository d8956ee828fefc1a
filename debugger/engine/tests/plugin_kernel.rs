//! The plugin on the lockscope kernel, under QEMU 7.2 (plugin API v1) and QEMU 10 (v2+): its
//! per-lock acquisitions, contended acquisitions and failed test-and-sets equal the kernel's
//! own exact counters; its call sites are the kernel's own recorded pcs; nothing is lost.

#[path = "plugin_util.rs"]
mod util;

use std::time::Duration;

use util::*;

fn exact_counts(which: Which, bootargs: &str, smp: u32) {
    let _g = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let elf = kernel();
    let plan = kernel_plan(&elf);
    let mut run = boot(which, &elf, smp, bootargs, &plan, true, &[]);
    let code = run.drain_until_exit(Duration::from_secs(120));
    // kalloc=global fails the lab's threshold by design (exit 2): it still ran to the end.
    assert!(
        matches!(code, Some(0 | 2)),
        "`{bootargs}` did not run to the end ({code:?}):\n{}",
        run.console()
    );
    assert_eq!(run.lost, 0, "events lost");
    assert_eq!(run.bad, 0, "bad slots");
    let mut ram = run.ram();
    let locks = kernel_locks(&elf, &mut ram);
    let seen = per_lock(&run.events);
    for l in &locks {
        let got = seen.get(&(l.addr & !3)).copied().unwrap_or_default();
        eprintln!("{:16} kernel acq {} cont {} spins {} | plugin {:?}", l.name, l.acquires, l.contended, l.spins, got);
    }
    for l in &locks {
        let got = seen.get(&(l.addr & !3)).copied().unwrap_or_default();
        assert_eq!(
            (got.0, got.1, got.2),
            (l.acquires, l.contended, l.spins),
            "lock {} ({:#x}): plugin (acquires, contended, spins) vs the kernel's counters",
            l.name,
            l.addr
        );
    }
}

#[test]
fn kalloctest_global_on_qemu72() {
    exact_counts(Which::Qemu72, "workload=kalloctest kalloc=global secs=1", 3);
}
