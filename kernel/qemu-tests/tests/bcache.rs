//! The buffer cache over virtio-blk, booted for real: bcachetest on 1..8 harts, the global
//! starter's contention, data integrity on the disk image afterwards, the ABI tables, and every
//! buffer-cache `bug=` scenario's symptom.

use lockscope_abi::disk::{self, BSIZE, NBLOCKS};
use lockscope_abi::*;
use lockscope_engine::qemu::{ExitVerdict, QemuConfig};
use lockscope_kernel_tests::*;
use std::time::Duration;

const NBUF: usize = 30;
const NBUCKET: usize = 13;

fn root(ram: &Ram) -> Root {
    let elf = std::fs::read(kernel()).unwrap();
    let (addr, _) = symbol(&elf, ROOT_SYMBOL).unwrap();
    let root: Root = ram.read(addr);
    assert_eq!(root.magic, ROOT_MAGIC);
    assert_ne!(root.flags & FLAG_READY, 0, "root not published");
    root
}

fn lock_names(ram: &Ram, root: &Root) -> Vec<(String, String)> {
    (0..root.nlocks as usize)
        .map(|i| {
            let l: LockInfo = ram.index(root.locks, i);
            (
                name_str(&l.name).unwrap().to_string(),
                name_str(&l.class).unwrap().to_string(),
            )
        })
        .collect()
}

/// Hits and misses over all buckets, from the ABI.
fn lookups(ram: &Ram, root: &Root) -> (u64, u64) {
    let h: BcacheHeader = ram.read(root.bcache);
    (0..h.nbucket as usize)
        .map(|i| ram.index::<BucketInfo>(h.buckets, i))
        .fold((0, 0), |(a, b), k| (a + k.hits, b + k.misses))
}

fn bcachetest_passes(smp: u32) -> DiskRun {
    let r = boot_with_disk(smp, "workload=bcachetest secs=1");
    let c = &r.c;
    assert_eq!(c.verdict, ExitVerdict::Pass, "console:\n{}", c.console);
    for line in [
        "test0: OK",
        "test1 OK",
        "bcachetest OK",
        "--- lock kmem/bcache stats",
    ] {
        assert!(c.console.contains(line), "no `{line}`:\n{}", c.console);
    }
    for k in 0..NBUCKET {
        let line = format!("lock: bcache.bucket{k}: #test-and-set ");
        assert!(c.console.contains(&line), "no `{line}`:\n{}", c.console);
    }
    let tot = number_after(&c.console, "tot= ").expect("a tot= line");
    assert!(tot <= 500, "tot= {tot}:\n{}", c.console);
    for h in 0..smp {
        let line = format!("test1: hart {h}: ");
        let l = c.console.lines().find(|l| l.starts_with(&line)).unwrap();
        assert!(l.ends_with("64 writes, all verified"), "{l}");
    }
    r
}

#[test]
fn bcachetest_passes_on_1_hart() {
    bcachetest_passes(1);
}

#[test]
fn bcachetest_passes_on_2_harts() {
    bcachetest_passes(2);
}

#[test]
fn bcachetest_passes_on_8_harts() {
    bcachetest_passes(8);
}

/// 4 harts, and afterwards: the ABI tables are consistent and the disk image holds exactly
/// what test1 wrote.
#[test]
fn bcachetest_passes_on_4_harts_and_the_disk_and_abi_agree() {
    let r = bcachetest_passes(4);
    let ram = r.ram();
    let root = root(&ram);
    assert_eq!(root.workload, Workload::Bcachetest as u32);
    assert_eq!(root.bcache_mode, BcacheMode::Hashed as u32);
    assert_eq!(root.live.outcome, Outcome::Pass as u32);
    assert_ne!(root.bcache, 0, "bcache not published");
    let h: BcacheHeader = ram.read(root.bcache);
    assert_eq!((h.nbuf as usize, h.nbucket as usize), (NBUF, NBUCKET));
    let names = lock_names(&ram, &root);
    assert_eq!(names[h.evict_lock as usize].0, "bcache.evict");
    assert!(names
        .iter()
        .any(|(n, c)| n == "virtio_disk" && c == "virtio_disk"));

    let mut nbuf = 0;
    let (mut hits, mut misses) = (0, 0);
    for k in 0..NBUCKET {
        let b: BucketInfo = ram.index(h.buckets, k);
        assert_eq!(
            names[b.lock as usize],
            (format!("bcache.bucket{k}"), "bcache.bucket".into())
        );
        nbuf += b.nbuf as usize;
        hits += b.hits;
        misses += b.misses;
    }
    assert_eq!(nbuf, NBUF, "buffers lost or duplicated between buckets");
    assert!(hits > 1000 && misses > 500, "hits {hits} misses {misses}");
    let mut cached = std::collections::HashSet::new();
    for i in 0..NBUF {
        let b: BufInfo = ram.index(h.bufs, i);
        assert_eq!(names[b.lock as usize], (format!("buf{i}"), "buf".into()));
        assert_eq!(b.refcnt, 0, "buf{i} still referenced after the test");
        if b.blockno != u32::MAX {
            assert_eq!(
                b.blockno as usize % NBUCKET,
                b.bucket as usize,
                "buf{i} in the wrong bucket"
            );
            assert!(cached.insert(b.blockno), "block {} cached twice", b.blockno);
        }
    }

    // The disk: every block intact; each hart's written cold blocks hold its last write.
    // test1 (256 operations) writes cold block j of hart h (block 13 (8 + j) + h) when
    // j % 4 == 3, twice; the second write is sequence 32 + (j + 1) / 4.
    let image = std::fs::read(&r.disk).unwrap();
    assert_eq!(image.len(), NBLOCKS as usize * BSIZE);
    let mut written = 0;
    for (n, block) in image.chunks_exact(BSIZE).enumerate() {
        let g = disk::verify(block.try_into().unwrap(), n as u32)
            .unwrap_or_else(|e| panic!("block {n}: {e}"));
        let (row, col) = (n / NBUCKET, n % NBUCKET);
        let j = row.wrapping_sub(8);
        let expect = if col < 4 && j < 128 && j % 4 == 3 {
            ((col as u64 + 1) << 56) | (32 + (j as u64 + 1) / 4)
        } else {
            0
        };
        assert_eq!(
            g, expect,
            "block {n} has generation {g:#x}, expected {expect:#x}"
        );
        written += (g != 0) as usize;
    }
    assert_eq!(written, 4 * 32);
}

#[test]
fn hashed_tot_is_far_below_global_on_4_harts() {
    let global = boot_with_disk(4, "workload=bcachetest bcache=global secs=1");
    assert_eq!(global.c.verdict, ExitVerdict::Fail, "{}", global.c.console);
    assert!(
        global.c.console.contains("test0: FAIL: tot= "),
        "{}",
        global.c.console
    );
    assert!(global.c.console.contains("lock: bcache: #test-and-set "));
    // The starter still caches correctly.
    assert!(
        global.c.console.contains("test1 OK"),
        "{}",
        global.c.console
    );
    let ram = global.ram();
    let root = root(&ram);
    let h: BcacheHeader = ram.read(root.bcache);
    assert_eq!(
        (h.nbucket, h.mode, h.evict_lock),
        (1, BcacheMode::Global as u32, NONE)
    );
    let b: BucketInfo = ram.index(h.buckets, 0);
    assert_eq!(lock_names(&ram, &root)[b.lock as usize].0, "bcache");
    assert_eq!(b.nbuf as usize, NBUF);

    let hashed = boot_with_disk(4, "workload=bcachetest bcache=hashed secs=1");
    assert_eq!(hashed.c.verdict, ExitVerdict::Pass, "{}", hashed.c.console);
    let g = number_after(&global.c.console, "tot= ").unwrap();
    let k = number_after(&hashed.c.console, "tot= ").unwrap();
    eprintln!("test0 tot= on 4 harts: global {g}, hashed {k}");
    assert!(
        g > 10_000 && g > 100 * k.max(1),
        "global tot= {g}, hashed tot= {k}"
    );
}

#[test]
fn mixed_interleaves_both_workloads_and_passes() {
    let r = boot_with_disk(4, "workload=mixed secs=1");
    assert_eq!(r.c.verdict, ExitVerdict::Pass, "{}", r.c.console);
    assert!(r.c.console.contains("mixed OK"), "{}", r.c.console);
    assert!(r.c.console.contains("lock: kmem3: #test-and-set "));
    let ram = r.ram();
    let root = root(&ram);
    assert_eq!(root.workload, Workload::Mixed as u32);
    let (hits, misses) = lookups(&ram, &root);
    assert!(hits > 0 && misses > 0);
    for h in 0..4 {
        let kh: KmemHart = ram.index(root.kmem, h);
        assert!(kh.allocs > 0, "hart {h} allocated nothing");
    }
}

#[test]
fn without_a_disk_bcachetest_says_how_to_attach_one() {
    let c = boot(1, "workload=bcachetest");
    assert_eq!(c.verdict, ExitVerdict::BadBootargs, "{}", c.console);
    assert!(
        c.console.contains("workload=bcachetest needs the disk"),
        "{}",
        c.console
    );
    assert!(
        c.console.contains("target/kernel/disk.img"),
        "{}",
        c.console
    );
}

/// The hit rate of an 2-hart bcachetest, from the ABI counters, and of test1's hot/cold part
/// from the console.
fn hit_rates(args: &str) -> (f64, u64) {
    let r = boot_with_disk(2, args);
    assert_eq!(r.c.verdict, ExitVerdict::Pass, "{}", r.c.console);
    let ram = r.ram();
    let (h, m) = lookups(&ram, &root(&ram));
    let hot =
        r.c.console
            .lines()
            .find_map(|l| l.strip_prefix("test1: hot/cold part: "))
            .and_then(|l| l.rsplit_once("hit rate "))
            .and_then(|(_, p)| p.trim_end_matches('%').parse().ok())
            .expect("a hot/cold hit rate line");
    (h as f64 / (h + m) as f64, hot)
}

#[test]
fn stale_ticks_collapses_the_hit_rate_and_still_passes() {
    let (healthy, healthy_hot) = hit_rates("workload=bcachetest ops=2000");
    let (stale, stale_hot) = hit_rates("workload=bcachetest ops=2000 bug=stale-ticks");
    eprintln!(
        "hit rate healthy {healthy:.3} (hot/cold {healthy_hot}%), stale-ticks {stale:.3} (hot/cold {stale_hot}%)"
    );
    assert!(healthy > 0.45, "healthy hit rate {healthy}");
    assert!(
        stale < healthy / 3.0,
        "stale-ticks {stale} vs healthy {healthy}"
    );
    assert!(
        healthy_hot >= 50 && stale_hot <= 20,
        "{healthy_hot}% vs {stale_hot}%"
    );
}

/// The kernel's panic record, after a run that panicked.
fn panic_record(r: &DiskRun) -> (PanicRecord, String) {
    assert_eq!(r.c.verdict, ExitVerdict::Panic, "{}", r.c.console);
    let ram = r.ram();
    let root = root(&ram);
    let rec: PanicRecord = ram.read(root.panic);
    assert_eq!(rec.state, PANIC_DONE);
    let msg = std::str::from_utf8(&rec.msg[..rec.msg_len as usize])
        .unwrap()
        .to_string();
    (rec, msg)
}

/// The functions the panic's backtrace passes through, innermost first.
fn backtrace_functions(rec: &PanicRecord) -> Vec<String> {
    let loader = addr2line::Loader::new(kernel()).unwrap();
    let mut names = Vec::new();
    for &pc in &rec.frames[..rec.nframes as usize] {
        let Ok(mut frames) = loader.find_frames(pc - 1) else {
            continue;
        };
        while let Ok(Some(f)) = frames.next() {
            if let Some(name) = f.function.as_ref().and_then(|n| n.demangle().ok()) {
                names.push(name.to_string());
            }
        }
    }
    names
}

#[test]
fn refcnt_leak_runs_out_of_buffers_in_bget() {
    let r = boot_with_disk(2, "bug=refcnt-leak");
    assert!(
        r.c.console.contains("panic: bget: no buffers"),
        "{}",
        r.c.console
    );
    let (rec, msg) = panic_record(&r);
    assert_eq!(msg, "bget: no buffers");
    let fns = backtrace_functions(&rec);
    assert!(fns.iter().any(|f| f.ends_with("bio::bget")), "{fns:?}");
    assert!(fns.iter().any(|f| f.ends_with("bio::bread")), "{fns:?}");
}

#[test]
fn double_acquire_panics_on_the_bucket_lock() {
    let r = boot_with_disk(2, "bug=double-acquire");
    let (rec, msg) = panic_record(&r);
    let n: usize = msg
        .strip_prefix("acquire bcache.bucket")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("message {msg:?}"));
    assert!(n < NBUCKET);
    assert!(r
        .c
        .console
        .contains(&format!("panic: acquire bcache.bucket{n}")));
    let fns = backtrace_functions(&rec);
    assert!(fns.iter().any(|f| f.ends_with("bio::bget")), "{fns:?}");
}

#[test]
fn null_next_faults_on_a_load_in_the_bucket_walk() {
    let r = boot_with_disk(2, "bug=null-next");
    assert!(r.c.console.contains("scause 0xd "), "{}", r.c.console);
    let (rec, msg) = panic_record(&r);
    assert_eq!(msg, "kerneltrap");
    assert_eq!(rec.from_trap, 1);
    assert_eq!(rec.scause, 0xd, "load page fault");
    assert!(
        rec.stval < 0x100,
        "stval {:#x} is not a field of a null pointer",
        rec.stval
    );
    let loader = addr2line::Loader::new(kernel()).unwrap();
    let loc = loader.find_location(rec.sepc).unwrap().unwrap();
    assert!(
        loc.file.unwrap().ends_with("src/bio.rs"),
        "sepc at {:?}",
        loc.file
    );
}

#[test]
fn order_inversion_still_passes() {
    let r = boot_with_disk(4, "workload=bcachetest bug=order-inversion secs=1");
    assert_eq!(r.c.verdict, ExitVerdict::Pass, "{}", r.c.console);
    assert!(r.c.console.contains("bcachetest OK"));
}

#[test]
fn kmem_steal_race_breaks_kalloctest() {
    // A race: it shows only if the victim hart runs while a thief's window is open, which a
    // host busy with other tests can prevent. Up to six boots of two seconds each; it must
    // break one of them (an idle host breaks the first).
    let mut consoles = Vec::new();
    for _ in 0..6 {
        let c = boot(4, "workload=kalloctest bug=kmem-steal-race secs=2");
        match c.verdict {
            ExitVerdict::Fail => {
                assert!(c.console.contains("kalloctest FAIL"), "{}", c.console);
                return;
            }
            // The kernel's exit says panic. Its message need not read whole on the console:
            // two harts that hit the corrupt page at once print over each other (a panic and
            // a kerneltrap's `scause` line, interleaved character by character).
            ExitVerdict::Panic => return,
            _ => {}
        }
        consoles.push(format!("verdict {:?}:\n{}", c.verdict, c.console));
    }
    panic!("the race never showed in 6 boots:\n{}", consoles.join("\n"));
}

#[test]
fn bucket_order_deadlocks_harts_in_a_cycle_of_bucket_locks() {
    // Not 8 harts: on a 2-core host 8 vCPUs met in a cycle in too few boots to test.
    for smp in [2, 4] {
        // A race: on a loaded host one boot can finish the workload before two harts meet;
        // a second boot gives it another chance.
        let mut found = None;
        let mut dirs = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let cfg = QemuConfig::new(kernel())
                .smp(smp)
                .bootargs("bug=bucket-order")
                .disk(fresh_disk(dir.path()))
                .shared_ram(dir.path().join("ram"));
            dirs.push(dir);
            found = watch_for_hang(cfg, Duration::from_secs(3), Duration::from_secs(120));
            if found.is_some() {
                break;
            }
        }
        let hang = found
            .unwrap_or_else(|| panic!("bug=bucket-order on {smp} harts did not hang in 2 boots"));
        eprintln!(
            "bucket-order on {smp} harts: heartbeats stopped after {:?}",
            hang.stalled_after
        );
        let ram = &hang.ram;
        let root = root(ram);
        let names = lock_names(ram, &root);
        let harts: Vec<HartState> = (0..smp as usize)
            .map(|h| ram.index(root.harts, h))
            .collect();
        let holds = |h: &HartState, l: u32| {
            h.held[..h.depth.min(8) as usize]
                .iter()
                .any(|e| e.lock == l)
        };
        // The hart holding the lock hart `a` spins on.
        let next = |a: usize| -> Option<usize> {
            let l = harts[a].spin_lock;
            (l != NONE).then_some(())?;
            (0..harts.len()).find(|&b| b != a && holds(&harts[b], l))
        };
        // Follow spin -> holder from each hart; a cycle comes back to where it started.
        let cycle = (0..harts.len()).find_map(|start| {
            let mut path = vec![start];
            let mut at = start;
            for _ in 0..harts.len() {
                at = next(at)?;
                if at == start {
                    return Some(path);
                }
                if path.contains(&at) {
                    return None;
                }
                path.push(at);
            }
            None
        });
        let cycle = cycle.unwrap_or_else(|| {
            let state: Vec<String> = harts
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let held: Vec<&str> = h.held[..h.depth.min(8) as usize]
                        .iter()
                        .map(|e| names[e.lock as usize].0.as_str())
                        .collect();
                    let spin = names
                        .get(h.spin_lock as usize)
                        .map_or("-", |n| n.0.as_str());
                    format!(
                        "hart {i}: status {} holds {held:?} spins on {spin}",
                        h.status
                    )
                })
                .collect();
            panic!(
                "no harts wait on each other in a cycle:\n{}\n{}",
                state.join("\n"),
                hang.console
            )
        });
        // Two harts make a two-hart cycle; with more, three or four can close one.
        if smp == 2 {
            assert_eq!(cycle.len(), 2);
        }
        for &h in &cycle {
            let l = harts[h].spin_lock;
            assert!(
                names[l as usize].0.starts_with("bcache.bucket"),
                "{:?}",
                names[l as usize]
            );
            assert_eq!(
                harts[h].depth, 1,
                "each hart holds just its own bucket lock"
            );
        }
        let shown: Vec<String> = cycle
            .iter()
            .map(|&h| format!("hart {h} spins on {}", names[harts[h].spin_lock as usize].0))
            .collect();
        eprintln!("  cycle: {}", shown.join(", "));
    }
}
