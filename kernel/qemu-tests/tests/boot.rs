//! Boots the real kernel in QEMU and checks its console, its exit status and, through a
//! shared guest-RAM file, the ABI structures it leaves behind.

use lockscope_abi::*;
use lockscope_engine::qemu::{ExitVerdict, QemuConfig};
use lockscope_kernel_tests::{boot, boot_with, kernel, number_after, source_line, symbol, Ram};

fn kalloctest_passes(smp: u32) {
    let c = boot(smp, "workload=kalloctest secs=1");
    assert_eq!(c.verdict, ExitVerdict::Pass, "console:\n{}", c.console);
    assert!(c.console.contains("kalloctest OK"), "{}", c.console);
    assert!(c.console.contains("--- lock kmem/bcache stats"));
    for h in 0..smp {
        assert!(
            c.console
                .contains(&format!("lock: kmem{h}: #test-and-set ")),
            "no kmem{h} line:\n{}",
            c.console
        );
        let rate = number_after(&c.console, &format!("kalloctest: hart {h}: "));
        assert!(
            rate.is_some_and(|ops| ops > 0),
            "hart {h} did no work:\n{}",
            c.console
        );
    }
    let tot = number_after(&c.console, "tot= ").expect("a tot= line");
    assert!(tot <= 10, "tot= {tot}");
}

#[test]
fn kalloctest_passes_on_1_hart() {
    kalloctest_passes(1);
}

#[test]
fn kalloctest_passes_on_2_harts() {
    kalloctest_passes(2);
}

#[test]
fn kalloctest_passes_on_4_harts() {
    kalloctest_passes(4);
}

#[test]
fn kalloctest_passes_on_8_harts() {
    kalloctest_passes(8);
}

#[test]
fn percpu_tot_is_far_below_global_on_4_harts() {
    let global = boot(4, "kalloc=global secs=1");
    assert_eq!(global.verdict, ExitVerdict::Fail, "{}", global.console);
    assert!(
        global.console.contains("kalloctest FAIL: tot= "),
        "{}",
        global.console
    );
    assert!(global.console.contains("lock: kmem: #test-and-set "));
    let percpu = boot(4, "kalloc=percpu secs=1");
    assert_eq!(percpu.verdict, ExitVerdict::Pass, "{}", percpu.console);
    let g = number_after(&global.console, "tot= ").unwrap();
    let p = number_after(&percpu.console, "tot= ").unwrap();
    assert!(
        g > 1000 && g > 100 * p.max(1),
        "global tot= {g}, percpu tot= {p}"
    );
}

#[test]
fn unknown_boot_argument_is_named_with_the_valid_ones() {
    let c = boot(1, "workload=kalloctest colour=blue");
    assert_eq!(c.verdict, ExitVerdict::BadBootargs, "{}", c.console);
    assert!(
        c.console
            .contains("bootargs: unknown argument 'colour=blue'"),
        "{}",
        c.console
    );
    assert!(c.console.contains("valid boot arguments"));
    for key in ["workload=", "kalloc=", "harts=", "trace=", "panic=", "bug="] {
        assert!(
            c.console.contains(&format!("  {key}")),
            "{key} not listed:\n{}",
            c.console
        );
    }
    let c = boot(1, "kalloc=fast");
    assert_eq!(c.verdict, ExitVerdict::BadBootargs);
    assert!(c
        .console
        .contains("bad value 'fast' for kalloc= (valid: percpu|global)"));
}

fn root_of(ram: &Ram, elf: &[u8]) -> Root {
    let (addr, _) = symbol(elf, ROOT_SYMBOL).unwrap();
    let root: Root = ram.read(addr);
    assert_eq!(root.magic, ROOT_MAGIC);
    assert_ne!(root.flags & FLAG_READY, 0, "root not published");
    root
}

fn lock_names(ram: &Ram, root: &Root) -> Vec<String> {
    (0..root.nlocks as usize)
        .map(|i| {
            let l: LockInfo = ram.index(root.locks, i);
            name_str(&l.name).unwrap().to_string()
        })
        .collect()
}

#[test]
fn panic_test_prints_a_backtrace_and_fills_the_panic_record() {
    let dir = tempfile::tempdir().unwrap();
    let ram_file = dir.path().join("ram");
    let c = boot_with(
        QemuConfig::new(kernel())
            .smp(4)
            .bootargs("bug=panic-test panic=exit")
            .shared_ram(&ram_file),
    );
    assert_eq!(c.verdict, ExitVerdict::Panic, "{}", c.console);
    let lines: Vec<&str> = c.console.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("panic: panic-test"))
        .unwrap_or_else(|| panic!("no panic line:\n{}", c.console));
    let bt = lines
        .iter()
        .position(|l| *l == "backtrace:")
        .expect("a backtrace: line");
    assert!(bt > at);
    let printed: Vec<u64> = lines[bt + 1..]
        .iter()
        .map_while(|l| u64::from_str_radix(l.strip_prefix("0x")?, 16).ok())
        .collect();
    assert!(printed.len() >= 3, "short backtrace:\n{}", c.console);

    let elf = std::fs::read(kernel()).unwrap();
    let ram = Ram::load(&ram_file);
    let root = root_of(&ram, &elf);
    assert_eq!(root.bug, Bug::PanicTest as u32);
    assert_eq!(root.live.outcome, Outcome::Panic as u32);
    let rec: PanicRecord = ram.read(root.panic);
    assert_eq!(rec.state, PANIC_DONE);
    assert_eq!(rec.hart, 0);
    assert_eq!(rec.from_trap, 0);
    let msg = std::str::from_utf8(&rec.msg[..rec.msg_len as usize]).unwrap();
    assert_eq!(msg, "panic-test (depth 1)");
    assert_eq!(&rec.frames[..rec.nframes as usize], &printed[..]);
    assert!(rec.frames[..rec.nframes as usize]
        .iter()
        .all(|&f| f >= root.text_start && f < root.text_end));

    // The frames symbolize to the functions that led to the panic.
    let loader = addr2line::Loader::new(kernel()).unwrap();
    let files: Vec<String> = printed
        .iter()
        .filter_map(|&pc| source_line(&loader, pc))
        .map(|(f, l)| format!("{f}:{l}"))
        .collect();
    // The line of the panic! in bugs.rs, wherever it moves.
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/bugs.rs"),
    )
    .unwrap();
    let line = src
        .lines()
        .position(|l| l.contains("panic!(\"panic-test (depth"))
        .expect("the panic-test panic! in bugs.rs")
        + 1;
    let want = format!("src/bugs.rs:{line}");
    assert!(
        files.iter().any(|f| f.ends_with(&want)),
        "{want} not in {files:?}"
    );

    // Hart 0 panicked holding `panictest`; hart 1 was stopped while spinning on it.
    let names = lock_names(&ram, &root);
    let pt = names
        .iter()
        .position(|n| n == "panictest")
        .expect("panictest lock") as u32;
    let h0: HartState = ram.index(root.harts, 0);
    let h1: HartState = ram.index(root.harts, 1);
    assert_eq!(h0.status, HartStatus::Panicked as u32);
    assert_eq!(h1.status, HartStatus::Halted as u32);
    assert_eq!(h0.depth, 1);
    assert_eq!(h0.held[0].lock, pt);
    assert_eq!(h1.spin_lock, pt);
    let (file, _) = source_line(&loader, h1.spin_pc).unwrap();
    assert!(file.ends_with("src/bugs.rs"), "spin pc in {file}");
    let info: LockInfo = ram.index(root.locks, pt as usize);
    assert_eq!(info.holder, 0);
}

/// Reads every intact event of hart `h`'s ring, as a reader after the guest stopped.
fn ring_events(ram: &Ram, root: &Root, h: usize) -> (u64, Vec<(u64, Event)>) {
    let hdr: RingHeader = ram.index(root.rings, h);
    assert_eq!(hdr.entries as usize, RING_ENTRIES);
    assert_eq!(hdr.hart as usize, h);
    let entries = hdr.entries as u64;
    let (first, end) = ring_intact_range(0, hdr.write, hdr.write, entries);
    let events = (first..end)
        .map(|i| {
            (
                i,
                ram.index::<Event>(hdr.events, ring_slot(i, entries) as usize),
            )
        })
        .collect();
    (hdr.write, events)
}

#[test]
fn rings_hold_ordered_events_whose_pcs_point_at_the_callers() {
    let dir = tempfile::tempdir().unwrap();
    let ram_file = dir.path().join("ram");
    let c = boot_with(
        QemuConfig::new(kernel())
            .smp(2)
            .bootargs("kalloc=percpu ops=20000")
            .shared_ram(&ram_file),
    );
    assert_eq!(c.verdict, ExitVerdict::Pass, "{}", c.console);
    let elf = std::fs::read(kernel()).unwrap();
    let ram = Ram::load(&ram_file);
    let root = root_of(&ram, &elf);
    assert_ne!(root.flags & FLAG_TRACE, 0);
    assert_eq!(root.nharts, 2);
    assert_eq!(root.live.phase, Phase::Done as u32);
    assert_eq!(root.live.outcome, Outcome::Pass as u32);
    let names = lock_names(&ram, &root);
    for n in ["cons", "tickslock", "kmem0", "kmem1"] {
        assert!(
            names.iter().any(|x| x == n),
            "{n} not registered: {names:?}"
        );
    }
    let loader = addr2line::Loader::new(kernel()).unwrap();
    for h in 0..2 {
        let (write, events) = ring_events(&ram, &root, h);
        assert!(
            write > RING_ENTRIES as u64,
            "hart {h} wrote only {write} events"
        );
        assert_eq!(events.len(), RING_ENTRIES - 1);
        let mut last_ts = 0;
        for (i, e) in &events {
            assert_eq!(e.seq, *i as u32);
            assert_eq!(e.hart as usize, h);
            assert!(EventKind::from_u8(e.kind).is_some());
            assert!((e.lock as u32) < root.nlocks);
            assert!(e.ts >= last_ts, "time went backwards at event {i}");
            last_ts = e.ts;
        }
        // The newest events are kalloctest's kalloc/kfree: their pcs are in kalloc.rs, the
        // lock's caller, not in spinlock.rs.
        for kind in [EventKind::Acquired, EventKind::Released] {
            let (_, e) = events
                .iter()
                .rev()
                .find(|(_, e)| e.kind == kind as u8 && names[e.lock as usize].starts_with("kmem"))
                .expect("a kmem event");
            let (file, line) = source_line(&loader, e.pc).unwrap();
            assert!(
                file.ends_with("src/kalloc.rs"),
                "{kind:?} pc {:#x} in {file}:{line}",
                e.pc
            );
        }
        // Counters agree with the ring: this hart's own kmem lock was used without contention.
        let kh: KmemHart = ram.index(root.kmem, h);
        let info: LockInfo = ram.index(root.locks, kh.lock as usize);
        assert_eq!(name_str(&info.name), Some(format!("kmem{h}").as_str()));
        assert!(info.acquires >= 20000);
        // The lab-format line is the final count: nothing takes a kmem lock after the report.
        let line = format!(
            "lock: kmem{h}: #test-and-set {} #acquire() {}",
            info.spins, info.acquires
        );
        assert!(c.console.contains(&line), "no `{line}` in:\n{}", c.console);
        assert_eq!(info.holder, NONE);
        let hs: HartState = ram.index(root.harts, h);
        assert_eq!(hs.depth, 0);
        assert_eq!(hs.spin_lock, NONE);
        assert!(hs.ops >= 20000 && hs.heartbeat > 0);
    }
}

#[test]
fn trace_off_keeps_counters_but_writes_no_events() {
    let dir = tempfile::tempdir().unwrap();
    let ram_file = dir.path().join("ram");
    let c = boot_with(
        QemuConfig::new(kernel())
            .smp(2)
            .bootargs("trace=off ops=2000")
            .shared_ram(&ram_file),
    );
    assert_eq!(c.verdict, ExitVerdict::Pass, "{}", c.console);
    let elf = std::fs::read(kernel()).unwrap();
    let ram = Ram::load(&ram_file);
    let root = root_of(&ram, &elf);
    assert_eq!(root.flags & FLAG_TRACE, 0);
    for h in 0..2 {
        let hdr: RingHeader = ram.index(root.rings, h);
        assert_eq!(hdr.write, 0, "hart {h} recorded with trace=off");
        let kh: KmemHart = ram.index(root.kmem, h);
        let info: LockInfo = ram.index(root.locks, kh.lock as usize);
        assert!(info.acquires >= 2000);
    }
}

#[test]
fn harts_limits_the_workload_and_parks_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ram_file = dir.path().join("ram");
    let c = boot_with(
        QemuConfig::new(kernel())
            .smp(4)
            .bootargs("harts=2 ops=2000")
            .shared_ram(&ram_file),
    );
    assert_eq!(c.verdict, ExitVerdict::Pass, "{}", c.console);
    assert!(
        c.console.contains("lockscope-kernel: 2 of 4 harts"),
        "{}",
        c.console
    );
    assert!(!c.console.contains("kalloctest: hart 2:"));
    let elf = std::fs::read(kernel()).unwrap();
    let ram = Ram::load(&ram_file);
    let root = root_of(&ram, &elf);
    assert_eq!(root.nharts, 2);
    for h in 0..4 {
        let hs: HartState = ram.index(root.harts, h);
        if h < 2 {
            assert!(hs.ops >= 2000, "hart {h} ops {}", hs.ops);
        } else {
            assert_eq!(hs.status, HartStatus::Offline as u32, "hart {h}");
            assert_eq!(hs.ops, 0);
        }
    }
    let names = lock_names(&ram, &root);
    assert!(names.iter().any(|n| n == "kmem1"));
    assert!(!names.iter().any(|n| n == "kmem2"), "{names:?}");
}
