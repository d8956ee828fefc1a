//! The xv6-shaped C fixture kernel (`kernel/xv6-fixture`), built and run the way a student
//! builds and runs a lab kernel: a copy of the tree, its own Makefile (riscv64-unknown-elf-gcc),
//! `make qemu` in real QEMU, commands typed at the `$ ` prompt. Each test boots one build
//! variant once and checks several things; hangs are confirmed from every hart's registers,
//! sampled twice through QEMU's monitor.

#[path = "xv6_fixture/harness.rs"]
mod harness;
#[path = "xv6_fixture/inspect.rs"]
mod inspect;

use harness::*;
use inspect::*;
use std::process::Command;
use std::time::Duration;

/// A hang is the same stuck state in two samples this far apart.
const APART: Duration = Duration::from_millis(500);

#[test]
fn makefile_is_shaped_like_the_labs() {
    let tree = Tree::build(&[]);
    let n = tree.make(&["-n", "qemu"]);
    assert!(n.status.success());
    assert_eq!(
        String::from_utf8_lossy(&n.stdout).trim(),
        "qemu-system-riscv64 -machine virt -bios none -kernel kernel/kernel -m 128M -smp 3 \
         -nographic -global virtio-mmio.force-legacy=false \
         -drive file=fs.img,if=none,format=raw,id=x0 \
         -device virtio-blk-device,drive=x0,bus=virtio-mmio-bus.0",
        "make -n qemu after a build prints exactly the QEMU command"
    );
    assert!(tree.path().join("fs.img").is_file());

    let port = uid() % 5000 + 25000;
    let gdb = tree.make(&["-n", "qemu-gdb", "CPUS=4"]);
    let gdb = String::from_utf8_lossy(&gdb.stdout);
    assert!(gdb.contains("-smp 4 "), "{gdb}");
    assert!(gdb.contains(&format!(" -S -gdb tcp::{port}")), "{gdb}");
    assert!(tree.make(&[".gdbinit"]).status.success());
    let gdbinit = std::fs::read_to_string(tree.path().join(".gdbinit")).unwrap();
    assert!(
        gdbinit.contains(&format!("target remote 127.0.0.1:{port}\n")),
        "{gdbinit}"
    );

    // Another QEMU is just a variable, as in the lab.
    let other = tree.make(&["-n", "qemu", "QEMU=lockscope qemu --"]);
    assert!(String::from_utf8_lossy(&other.stdout).starts_with("lockscope qemu -- -machine virt"));

    // A bad option is refused with what to choose.
    let bad = tree.make(&["BCACHE=tree"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("choose bucket, parallel, grid or global")
    );
    let bad = tree.make(&["BUG=prev-head", "BCACHE=grid"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("BUG=prev-head needs BCACHE=bucket"));
}

/// `cargo xtask test` builds the fixture once (xtask/src/fixture.rs) and passes the tree in
/// LOCKSCOPE_XV6_FIXTURE for other tests: a lab-shaped tree that `make -n qemu` runs.
#[test]
fn xtask_built_fixture_is_a_lab_shaped_tree() {
    let Some(dir) = std::env::var_os("LOCKSCOPE_XV6_FIXTURE") else {
        eprintln!("LOCKSCOPE_XV6_FIXTURE is not set (cargo xtask test sets it): nothing to check");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    assert!(
        dir.join("kernel/kernel").is_file() && dir.join("fs.img").is_file(),
        "{}",
        dir.display()
    );
    let n = Command::new("make")
        .current_dir(&dir)
        .args(["-n", "qemu"])
        .env_remove("MAKEFLAGS")
        .output()
        .expect("running make");
    let cmd = String::from_utf8_lossy(&n.stdout);
    assert!(
        cmd.trim().starts_with("qemu-system-riscv64 -machine virt") && cmd.lines().count() == 1,
        "the xtask-built tree is up to date and make -n qemu prints only QEMU's line:\n{cmd}"
    );
    let syms = Symbols::load(&dir.join("kernel/kernel"));
    for name in [
        "bcache", "kmem", "cpus", "proc", "locks", "panicked", "stack0",
    ] {
        assert!(syms.get(name).is_some(), "no {name} in the fixture kernel");
    }
}

#[test]
fn dwarf_version_is_what_was_asked_and_bget_is_inlined_into_bread() {
    for (vars, version) in [(&[][..], 5), (&["DWARF=2"][..], 2)] {
        let tree = Tree::build(vars);
        let versions = dwarf_versions(&tree);
        assert!(
            versions.len() >= 20,
            "one unit per source file: {versions:?}"
        );
        assert!(
            versions.iter().all(|v| *v == version),
            "{vars:?}: {versions:?}"
        );

        // The layouts lockscope's reader and the plugin are written against (lab kernels'),
        // kept stable for them.
        let layouts: [Layout; 6] = [
            (
                "spinlock",
                32,
                &[
                    ("locked", 0),
                    ("name", 8),
                    ("cpu", 16),
                    ("nts", 24),
                    ("n", 28),
                ],
            ),
            (
                "cpu",
                128,
                &[("proc", 0), ("context", 8), ("noff", 120), ("intena", 124)],
            ),
            (
                "sleeplock",
                56,
                &[("locked", 0), ("lk", 8), ("name", 40), ("pid", 48)],
            ),
            (
                "buf",
                1120,
                &[
                    ("valid", 0),
                    ("disk", 4),
                    ("dev", 8),
                    ("blockno", 12),
                    ("lock", 16),
                    ("refcnt", 72),
                    ("timestamp", 76),
                    ("prev", 80),
                    ("next", 88),
                    ("data", 96),
                ],
            ),
            (
                "rwspinlock",
                48,
                &[
                    ("lk", 0),
                    ("readers", 32),
                    ("writer", 36),
                    ("waiting", 40),
                    ("wpid", 44),
                ],
            ),
            (
                "proc",
                224,
                &[
                    ("lock", 0),
                    ("state", 32),
                    ("chan", 40),
                    ("killed", 48),
                    ("xstate", 52),
                    ("pid", 56),
                    ("parent", 64),
                    ("kstack", 72),
                    ("context", 80),
                    ("fn", 192),
                    ("arg", 200),
                    ("name", 208),
                ],
            ),
        ];
        for (name, size, members) in layouts {
            let (got_size, got) = struct_layout(&tree, name);
            let want: Vec<(String, u64)> =
                members.iter().map(|(m, o)| (m.to_string(), *o)).collect();
            assert_eq!((got_size, got), (size, want), "{vars:?}: struct {name}");
        }

        // bget is static and called once: gcc folds it into bread, as in real lab kernels.
        let syms = tool("riscv64-unknown-elf-readelf", &["-s", "-W"], &tree.kernel());
        assert!(
            !syms.lines().any(|l| l.ends_with(" bget")),
            "{vars:?}: bget has a symbol"
        );
        assert!(syms
            .lines()
            .any(|l| l.contains(" FUNC ") && l.ends_with(" bread")));
        let bread = tool(
            "riscv64-unknown-elf-objdump",
            &["-d", "--disassemble=bread"],
            &tree.kernel(),
        );
        assert!(
            bread.contains("<bread>:") && !bread.contains("<bget"),
            "{vars:?}:\n{bread}"
        );
        let (start, size) = tree.symbols().get("bread").expect("bread");
        let inlined = (start..start + size).step_by(2).any(|pc| {
            frames(&tree, pc)
                .windows(2)
                .any(|w| w[0] == "bget" && w[1] == "bread")
        });
        assert!(
            inlined,
            "{vars:?}: no pc in bread whose DWARF frames are bget inlined into bread"
        );
    }
}

#[test]
fn good_build_passes_kalloctest_bcachetest_and_rwlktest_in_lab_format() {
    let tree = Tree::build(&[]);
    let mut q = tree.boot();
    q.prompt();

    let out = q.run("kalloctest", COMMAND);
    assert!(out.contains("start test1\n"), "{out}");
    let stats = stats_after(&out, "test1 results:");
    let kmem: Vec<_> = stats
        .locks
        .iter()
        .filter(|l| l.0.starts_with("kmem"))
        .collect();
    assert_eq!(kmem.len(), 8, "one kmem lock per possible hart:\n{out}");
    // 20000 kalloc/kfree pairs per worker, one lock round trip each.
    let acquires: i64 = kmem.iter().map(|l| l.2).sum();
    assert!(acquires >= 2 * 20000 * CPUS as i64, "{out}");
    assert!(out.contains("test1 OK\n"), "{out}");
    assert!(out.contains("total free number of pages: "), "{out}");
    assert!(
        out.contains("(out of 32768)\n") && out.contains("test2 OK\n"),
        "{out}"
    );
    // Taking every page empties each hart's list, so harts steal from each other.
    let stolen: u64 = out
        .split("test2: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(stolen > 0, "{out}");

    let out = q.run("bcachetest", COMMAND);
    assert!(
        out.contains("start test0\n") && out.contains("start test1\n"),
        "{out}"
    );
    let test0 = stats_after(&out, "test0 results:");
    assert_eq!(count_named(&test0, "bcache.bucket"), 13, "{out}");
    assert_eq!(count_named(&test0, "bcache"), 1, "{out}");
    // Each worker reads two blocks of its own bucket, 4000 times: three buckets took thousands
    // of acquires each. Nobody else touches them then, so test0 passes whatever the host load.
    let busy = test0
        .locks
        .iter()
        .filter(|l| l.0 == "bcache.bucket" && l.2 >= 8000)
        .count();
    assert_eq!(busy, CPUS, "{out}");
    assert!(
        out.contains("test0: OK\n") && out.contains("test1 OK\n"),
        "{out}"
    );
    assert!(!out.contains("wrong contents"), "{out}");

    let out = q.run("rwlktest", COMMAND);
    assert!(out.contains("rwlktest OK\n"), "{out}");
    let most = out
        .split("up to ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(most >= 2, "readers never shared the lock:\n{out}");

    let out = q.run("audit", COMMAND);
    assert!(out.contains("audit: OK\n"), "{out}");
}

#[test]
fn legacy_virtio_dwarf2_parallel_arrays_pass_bcachetest() {
    let tree = Tree::build(&["VIRTIO=legacy", "DWARF=2", "BCACHE=parallel"]);
    let n = tree.make(&["-n", "qemu"]);
    let cmd = String::from_utf8_lossy(&n.stdout);
    assert!(
        cmd.starts_with("qemu-system-riscv64 ") && !cmd.contains("force-legacy"),
        "{cmd}"
    );
    let mut q = tree.boot();
    q.prompt();
    let out = q.run("bcachetest", COMMAND);
    assert_eq!(
        count_named(&stats_after(&out, "test0 results:"), "bcache.bucket"),
        13
    );
    assert!(
        out.contains("test0: OK\n") && out.contains("test1 OK\n"),
        "{out}"
    );
    assert!(q.run("audit", COMMAND).contains("audit: OK\n"));
    drop(q);

    // The same kernel under a QEMU that offers the modern interface says what to change.
    let modern = format!("{} -global virtio-mmio.force-legacy=false", cmd.trim());
    let q = tree.boot_command(&modern);
    q.expect(
        0,
        "panic: virtio disk: the device is modern (version 2) but this kernel was built with \
         VIRTIO=legacy: run QEMU without -global virtio-mmio.force-legacy=false\n",
        BOOT,
    );
}

#[test]
fn grid_layout_passes_bcachetest() {
    let tree = Tree::build(&["BCACHE=grid"]);
    let mut q = tree.boot();
    q.prompt();
    let out = q.run("bcachetest", COMMAND);
    let test0 = stats_after(&out, "test0 results:");
    assert_eq!(count_named(&test0, "bcache.bucket"), 13, "{out}");
    assert_eq!(
        count_named(&test0, "bcache"),
        0,
        "the grid has no eviction lock:\n{out}"
    );
    assert!(
        out.contains("test0: OK\n") && out.contains("test1 OK\n"),
        "{out}"
    );
    assert!(q.run("audit", COMMAND).contains("audit: OK\n"));
}

#[test]
fn global_layout_is_the_starters_single_lock() {
    let tree = Tree::build(&["BCACHE=global"]);
    let mut q = tree.boot();
    q.prompt();
    let out = q.run("bcachetest", COMMAND);
    let test0 = stats_after(&out, "test0 results:");
    assert_eq!(count_named(&test0, "bcache.bucket"), 0, "{out}");
    // One lock takes every lookup and release: 2 per read, 4000 reads per worker. Whether
    // harts spin on it enough to fail test0 (they do, by far, on an idle host) depends on how
    // the host schedules QEMU's vCPU threads, so only the lock's use is checked here.
    let bcache: Vec<_> = test0.locks.iter().filter(|l| l.0 == "bcache").collect();
    assert_eq!(bcache.len(), 1, "{out}");
    assert!(bcache[0].2 >= 2 * 4000 * CPUS as i64, "{out}");
    assert!(
        out.contains("test0: OK\n") || out.contains("test0: FAIL\n"),
        "{out}"
    );
    assert!(out.contains("test1 OK\n"), "{out}");
}

#[test]
fn refcnt_leak_panics_bget_no_buffers_and_spins() {
    let tree = Tree::build(&["BUG=refcnt-leak"]);
    let syms = tree.symbols();
    let mut q = tree.boot();
    q.prompt();
    let from = q.type_line("bcachetest");
    q.expect(from, "panic: bget: no buffers\n", COMMAND);
    // Like xv6: the panicking hart spins in panic() with panicked set; QEMU runs on.
    // Which harts are in panic(): the same ones, twice.
    q.stuck(from, APART, COMMAND, |h| {
        let in_panic: Vec<usize> = (0..h.len())
            .filter(|&i| syms.function(h[i].pc()) == Some("panic"))
            .collect();
        (!in_panic.is_empty()).then_some(in_panic)
    });
    assert!(q.alive());
}

#[test]
fn prev_head_mix_up_takes_a_load_page_fault_on_refcnt() {
    let tree = Tree::build(&["BUG=prev-head"]);
    let mut q = tree.boot();
    q.prompt();
    let from = q.type_line("bcachetest");
    let out = q.expect(from, "panic: kerneltrap\n", COMMAND);
    let trap = out
        .lines()
        .find(|l| l.starts_with("scause="))
        .unwrap_or_else(|| panic!("no trap line:\n{out}"));
    let fields: Vec<&str> = trap.split_whitespace().collect();
    assert_eq!(fields[0], "scause=0xd", "a load page fault: {trap}");
    assert_eq!(
        fields[2], "stval=0x48",
        "refcnt is at offset 0x48 of struct buf: {trap}"
    );
    let sepc = u64::from_str_radix(fields[1].trim_start_matches("sepc=0x"), 16).expect(trap);
    assert_eq!(
        frames(&tree, sepc).first().map(String::as_str),
        Some("lru_free"),
        "{trap}"
    );
}

#[test]
fn bucket_order_deadlocks_two_harts_on_two_bucket_locks() {
    let tree = Tree::build(&["BUG=bucket-order"]);
    let syms = tree.symbols();
    let mut q = tree.boot();
    q.prompt();
    // acquire keeps its lock argument in s1. Two or more harts spin in acquire on different
    // bucket locks inside bcache: the same harts on the same locks, twice.
    let deadlocked = |h: &[Hart]| {
        let mut on: Vec<(usize, u64)> = (0..h.len())
            .filter(|&i| {
                syms.function(h[i].pc()) == Some("acquire") && syms.inside("bcache", h[i].reg("s1"))
            })
            .map(|i| (i, h[i].reg("s1")))
            .collect();
        on.sort();
        let mut locks: Vec<u64> = on.iter().map(|x| x.1).collect();
        locks.sort();
        locks.dedup();
        (locks.len() >= 2).then_some(on)
    };
    // The deadlock needs two harts evicting at the same instant, which takes two vCPUs running
    // at once: nearly every run on a quiet host, not every run on a loaded one. Try a few times.
    for attempt in 1..=5 {
        let from = q.type_line("bcachetest");
        if let Some((_, spinning)) = q.stuck_or_prompt(from, APART, COMMAND, deadlocked) {
            assert!(spinning.len() >= 2, "{spinning:x?}");
            eprintln!("deadlocked in run {attempt} of bcachetest");
            return;
        }
        q.leave_monitor();
    }
    panic!("5 runs of bcachetest and no deadlock:\n{}", q.console());
}

#[test]
fn double_acquire_panics_acquire() {
    let tree = Tree::build(&["BUG=double-acquire"]);
    let mut q = tree.boot();
    q.prompt();
    let from = q.type_line("bcachetest");
    q.expect(from, "panic: acquire\n", COMMAND);
}

#[test]
fn bucket_lock_held_across_acquiresleep_panics_sched_locks() {
    let tree = Tree::build(&["BUG=sleep-holding"]);
    let mut q = tree.boot();
    q.prompt();
    let from = q.type_line("bcachetest");
    q.expect(from, "panic: sched locks\n", COMMAND);
}

#[test]
fn reader_reentering_the_rwspinlock_hangs_with_a_waiting_writer() {
    let tree = Tree::build(&["BUG=rw-reenter"]);
    let syms = tree.symbols();
    let mut q = tree.boot();
    q.prompt();
    let from = q.type_line("rwlktest");
    q.expect(from, "start rwlktest", COMMAND);
    // A hart in write_acquire and one in read_acquire, the same ones twice.
    let harts_in = |h: &[Hart], f: &str| -> Vec<usize> {
        (0..h.len())
            .filter(|&i| syms.function(h[i].pc()) == Some(f))
            .collect()
    };
    q.stuck(from, APART, COMMAND, |h| {
        let (r, w) = (harts_in(h, "read_acquire"), harts_in(h, "write_acquire"));
        (!r.is_empty() && !w.is_empty()).then_some((r, w))
    });
}

#[test]
fn lost_wakeup_stalls_with_workers_asleep_on_a_buf_nobody_wakes() {
    let tree = Tree::build(&["BUG=lost-wakeup"]);
    let syms = tree.symbols();
    let (stack0, size) = syms.get("stack0").expect("stack0");
    let mut q = tree.boot();
    q.prompt();
    let from = q.type_line("bcachetest");
    q.expect(from, "start test1", COMMAND);
    // Every hart back on its boot stack (stack0), in the scheduler: nothing left to run.
    let on_stack0 = |h: &Hart| h.reg("sp") > stack0 && h.reg("sp") <= stack0 + size;
    q.stuck(from, APART, COMMAND, |h| {
        h.iter().all(on_stack0).then_some(())
    });
    q.leave_monitor();

    // The same process list twice, with no worker left to run: some finished, the rest
    // sleep on a buf's sleeplock (inside bcache), and the shell waits for them.
    let threads = |list: &str| -> Vec<String> {
        list.lines()
            .filter(|l| l.contains(" chan="))
            .map(str::to_string)
            .collect()
    };
    let deadline = std::time::Instant::now() + COMMAND;
    let mut first = q.procdump();
    let second = loop {
        let now = q.len();
        assert!(
            q.wait(now, APART, |t| t.contains("\n$ ")).is_none(),
            "{}",
            q.console()
        );
        let second = q.procdump();
        let settled = threads(&second)
            .iter()
            .all(|l| !l.contains(" bcachetest ") || l.contains(" sleep "));
        if settled && threads(&first) == threads(&second) {
            break second;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stall:\n{}",
            q.console()
        );
        first = second;
    };
    let workers: Vec<String> = threads(&second)
        .into_iter()
        .filter(|l| l.contains(" bcachetest "))
        .collect();
    assert!(!workers.is_empty() && workers.len() < CPUS, "{second}");
    for w in &workers {
        let chan = w
            .rsplit("chan=0x")
            .next()
            .and_then(|a| u64::from_str_radix(a.trim(), 16).ok())
            .unwrap_or(0);
        assert!(
            w.contains(" sleep ") && syms.inside("bcache", chan),
            "`{w}` is not asleep on a buf"
        );
    }
    assert!(
        threads(&second).iter().any(|l| l.contains(" sleep sh ")),
        "{second}"
    );
}

#[test]
fn boot_without_a_pmp_entry_hangs_before_the_console() {
    let tree = Tree::build(&["BUG=no-pmp"]);
    let mut q = tree.boot();
    // Every hart faults on its first supervisor-mode fetch and loops at address 0.
    q.stuck(0, APART, BOOT, |h| {
        h.iter()
            .all(|h| h.pc() < 0x8000_0000)
            .then(|| h.iter().map(|h| h.pc()).collect::<Vec<_>>())
    });
    assert!(!q.console().contains("booting"), "{}", q.console());
}

#[test]
fn findings_stack_name_double_kfree_and_uninitialised_lock_show_in_audit() {
    let tree = Tree::build(&["BUG=stack-name double-kfree uninit-lock"]);
    let mut q = tree.boot();
    q.prompt();
    let out = q.run("audit", COMMAND);
    assert_eq!(
        out.matches(": name points into stack0+").count(),
        8,
        "the 8 kmem locks:\n{out}"
    );
    assert!(out.contains("is on the free list twice"), "{out}");
    assert!(
        out.contains("audit: bucket 12's lock was never initialised"),
        "{out}"
    );
}

#[test]
fn findings_odd_names_pass_unmeasured_and_dup_block_is_cached_twice() {
    let tree = Tree::build(&["BUG=odd-names dup-block"]);
    let mut q = tree.boot();
    q.prompt();
    let out = q.run("kalloctest", COMMAND);
    let stats = stats_after(&out, "test1 results:");
    assert!(
        stats.locks.is_empty(),
        "no lock is named kmem* or bcache*:\n{out}"
    );
    assert_eq!(stats.tot, 0, "{out}");
    assert!(out.contains("test1 OK\n"), "passes unmeasured:\n{out}");
    let out = q.run("bcachetest", COMMAND);
    assert!(
        out.contains("test0: OK\n") && out.contains("test1 OK\n"),
        "{out}"
    );
    let out = q.run("audit", COMMAND);
    assert!(out.contains(" is cached twice, in buf "), "{out}");
}
