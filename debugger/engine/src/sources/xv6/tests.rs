//! The xv6 reader on an xv6-shaped image compiled by the real cross compiler (DWARF 2 and 5):
//! its static initializers are the kernel's state, read through a byte image of its RAM.

use std::ops::Range;

use object::{Object, ObjectSegment};

use super::*;
use crate::memory::ByteImage;
use crate::memory::MemoryError;
use crate::model::{FindingKind, HartRun};
use crate::symbols::types::cc::{build, have_gcc, DWARF_FLAGS};

const SOURCES: [(&str, &str); 3] = [
    ("xv6ish.h", include_str!("testdata/xv6ish.h")),
    ("xv6ish.c", include_str!("testdata/xv6ish.c")),
    ("spinlock.c", include_str!("testdata/spinlock.c")),
];
const RAM: Range<u64> = 0x8000_0000..0x8040_0000;
const PAGE: u64 = 4096;

struct Kernel {
    syms: Symbols,
    src: Xv6Source,
    img: ByteImage,
    heap: u64,
    _dir: tempfile::TempDir,
}

impl Kernel {
    fn put(&mut self, addr: u64, bytes: &[u8]) {
        let off = (addr - self.img.base) as usize;
        self.img.bytes[off..off + bytes.len()].copy_from_slice(bytes);
    }
    fn put_u64(&mut self, addr: u64, v: u64) {
        self.put(addr, &v.to_le_bytes());
    }
    fn global(&self, name: &str) -> u64 {
        self.src.types().global(name).unwrap().address
    }
    fn offset(&self, ty_of: &str, member: &str) -> u64 {
        let t = self.src.types();
        let g = t.global(ty_of).unwrap();
        let (e, _) = t.array_dims(g.ty);
        t.member(e, member).unwrap().offset
    }
    fn page(&self, i: u64) -> u64 {
        self.heap + i * PAGE
    }
    fn snapshot(&mut self) -> Snapshot {
        self.src.snapshot(&mut self.img, 1).unwrap()
    }
}

fn kernel(shape: u32, bugs: bool, dwarf: &str) -> Kernel {
    let dir = tempfile::tempdir().unwrap();
    let shape_flag = format!("-DSHAPE={shape}");
    let mut flags = vec![dwarf, "-O0", shape_flag.as_str()];
    if bugs {
        flags.push("-DBUGS");
    }
    let elf = build(dir.path(), &SOURCES, &flags, "_entry");
    let syms = Symbols::load(&elf).unwrap();
    let mut img = ByteImage {
        base: RAM.start,
        bytes: vec![0; (RAM.end - RAM.start) as usize],
    };
    let data = std::fs::read(&elf).unwrap();
    let file = object::File::parse(&*data).unwrap();
    for seg in file.segments() {
        // The first segment starts below RAM with the ELF headers.
        let d = seg.data().unwrap();
        let skip = RAM.start.saturating_sub(seg.address()) as usize;
        if skip >= d.len() {
            continue;
        }
        let off = (seg.address() + skip as u64 - RAM.start) as usize;
        img.bytes[off..off + d.len() - skip].copy_from_slice(&d[skip..]);
    }
    let mut src = Xv6Source::open_with_ram(&syms, RAM).unwrap();
    src.set_free_list_interval(std::time::Duration::ZERO);
    let heap = src.image.heap_start();
    let mut k = Kernel {
        syms,
        src,
        img,
        heap,
        _dir: dir,
    };
    // Free lists: three pages for hart 0, two for hart 1.
    let list = k.offset("kmem", "freelist");
    let stride = {
        let t = k.src.types();
        t.size_of(t.array(k.global_ty("kmem")).unwrap().0).unwrap()
    };
    let kmem = k.global("kmem");
    for (i, next) in [(0, 1), (1, 2), (2, 0)] {
        let n = if next == 0 { 0 } else { k.page(next) };
        let a = k.page(i);
        k.put_u64(a, n);
    }
    k.put_u64(k.page(5), k.page(6));
    k.put_u64(k.page(6), 0);
    let (p0, p5) = (k.page(0), k.page(5));
    k.put_u64(kmem + list, p0);
    k.put_u64(kmem + stride + list, p5);
    k
}

fn lock<'a>(s: &'a Snapshot, path: &str) -> &'a crate::model::LockState {
    s.locks
        .iter()
        .find(|l| l.path.as_deref() == Some(path))
        .unwrap_or_else(|| panic!("no lock at {path}"))
}

#[test]
fn every_bucket_shape_is_found_and_walked() {
    if !have_gcc() {
        return;
    }
    for dwarf in DWARF_FLAGS {
        for (shape, layout, buckets) in [
            (1, "bcache.bucket[*]: 13 buckets", 13),
            (2, "bcache.lock and bcache.heads: 13 buckets", 13),
            (3, "bcache.buf: 13 buckets of 3 bufs", 13),
            (4, "bcache.head: one list", 1),
        ] {
            let mut k = kernel(shape, false, dwarf);
            let what = format!("{dwarf} shape {shape}");
            assert!(
                k.src.bcache_layout().unwrap().starts_with(layout),
                "{what}: {:?}",
                k.src.bcache_layout()
            );
            let s = k.snapshot();
            let b = s.bcache.as_ref().unwrap();
            assert_eq!(b.buckets.len(), buckets, "{what}");
            assert!(b.counts_unavailable);
            assert_eq!(s.findings, [], "{what}: a sound cache has no findings");
            let nbuf: Vec<u32> = b.buckets.iter().map(|x| x.nbuf).collect();
            match shape {
                1 => {
                    assert_eq!(b.bufs.len(), 30, "{what}: the sentinels are not buffers");
                    assert_eq!((nbuf[0], nbuf[7]), (2, 1), "{what}");
                    assert_eq!(nbuf.iter().sum::<u32>(), 3);
                    assert_eq!(b.bufs[1].bucket, Some(0));
                    assert_eq!(b.bufs[3].bucket, Some(7));
                    assert_eq!(b.bufs[2].bucket, None);
                    assert_eq!(b.mode, "hashed");
                    let l = lock(&s, "bcache.bucket[7].lock");
                    assert_eq!(b.buckets[7].lock, Some(l.meta.id));
                    assert_eq!(l.meta.class, "bcache.bucket[*].lock");
                    assert_eq!(b.evict_lock, Some(lock(&s, "bcache.lock").meta.id));
                }
                2 => {
                    assert_eq!(b.bufs.len(), 30);
                    assert_eq!((nbuf[0], nbuf[7]), (2, 1), "{what}");
                    assert_eq!(b.buckets[7].lock, Some(lock(&s, "bcache.lock[7]").meta.id));
                }
                3 => {
                    assert_eq!(b.bufs.len(), 39);
                    assert!(nbuf.iter().all(|&n| n == 3), "{what}: {nbuf:?}");
                    assert_eq!(b.bufs[3].bucket, Some(1));
                    assert_eq!(b.bufs[3].blockno, 33);
                }
                _ => {
                    assert_eq!(b.mode, "global");
                    assert_eq!(nbuf, [3], "{what}");
                    assert_eq!(b.buckets[0].lock, Some(lock(&s, "bcache.lock").meta.id));
                    assert_eq!(b.evict_lock, None);
                }
            }
            let held = b.bufs.iter().find(|x| x.blockno == 33).unwrap();
            assert_eq!(held.refcnt, 1);
            assert_eq!(held.holder_pid, Some(2), "{what}: the sleeplock's holder");
            assert!(held.valid);
        }
    }
}

#[test]
fn locks_harts_processes_and_the_allocator() {
    if !have_gcc() {
        return;
    }
    for dwarf in DWARF_FLAGS {
        let mut k = kernel(1, false, dwarf);
        // A pipe's lock, known only through the registry, in kalloc'd memory.
        let pipe = k.page(10);
        let name = u64::from_le_bytes(
            k.syms
                .read_static(k.global("pipename"), 8)
                .unwrap()
                .try_into()
                .unwrap(),
        );
        k.put_u64(pipe + 8, name);
        k.put(pipe + 24, &[1, 0, 0, 0, 4, 0, 0, 0]);
        k.put_u64(k.global("locks") + 6 * 8, pipe);
        let s = k.snapshot();

        let t = lock(&s, "tickslock");
        assert_eq!(t.meta.name, "time");
        assert_eq!(t.counters.acquires, 12);
        assert_eq!(t.counters.spins, 3);
        assert_eq!(t.lab, Some(crate::model::LabCounts { n: 12, nts: 3 }));
        assert_eq!(t.holder, Some(1), "{dwarf}: cpu points at cpus[1]");
        assert_eq!(t.locked, Some(true));
        let p = s
            .locks
            .iter()
            .find(|l| l.addr == Some(pipe))
            .expect("the pipe's lock");
        assert_eq!((p.path.as_deref(), p.meta.name.as_str()), (None, "pipe"));
        assert_eq!(p.meta.class, "pipe");
        assert_eq!(p.counters.acquires, 4);
        for path in [
            "proc[3].lock",
            "kmem[1].lock",
            "bcache.buf[29].lock.lk",
            "bcache.bucket[12].lock",
            "rwlk.l",
            "lock_locks",
        ] {
            lock(&s, path);
        }
        assert_eq!(lock(&s, "proc[0].lock").meta.class, "proc[*].lock");

        assert_eq!(
            s.harts.len(),
            2,
            "{dwarf}: harts that never ran are left out"
        );
        let h0 = s.harts[0].cpu.as_ref().unwrap();
        assert_eq!(s.harts[0].run, HartRun::Running);
        let pr = h0.proc.as_ref().unwrap();
        assert_eq!((pr.pid, pr.name.as_str()), (2, "bcachetest"));
        assert_eq!((h0.noff, h0.intena), (1, true));
        assert_eq!(s.harts[1].run, HartRun::Idle);

        let by_pid = |pid| s.processes.iter().find(|p| p.pid == pid).unwrap();
        assert_eq!(s.processes.len(), 4);
        assert_eq!(by_pid(1).state, "SLEEPING");
        assert_eq!(by_pid(1).chan_name.as_deref(), Some("ticks"));
        assert_eq!(by_pid(1).kstack, Some(0x3f_ffff_d000));
        assert_eq!(by_pid(1).context.unwrap().fp, 0x3f_ffff_dfa0);
        assert_eq!(by_pid(2).hart, Some(0));
        assert_eq!(
            by_pid(3).chan_name.as_deref(),
            Some("sleeplock of buf 3 (block 33)"),
            "{dwarf}"
        );
        assert_eq!(
            by_pid(4).chan_name.as_deref(),
            Some("proc[1] (pid 2, bcachetest)")
        );
        assert_eq!(by_pid(2).lock, Some(lock(&s, "proc[1].lock").meta.id));

        let sl = s
            .sleeplocks
            .iter()
            .find(|l| l.path == "bcache.buf[3].lock")
            .unwrap();
        assert!(sl.locked);
        assert_eq!(sl.holder.as_ref().unwrap().name, "bcachetest");
        assert_eq!(sl.name.as_deref(), Some("buffer"));
        assert_eq!(sl.lock, Some(lock(&s, "bcache.buf[3].lock.lk").meta.id));

        let rw = &s.rwlocks[0];
        assert_eq!(rw.path, "rwlk");
        assert_eq!(rw.lock, Some(lock(&s, "rwlk.l").meta.id));
        let f: Vec<(&str, &str)> = rw
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.text.as_str()))
            .collect();
        assert_eq!(
            f,
            [
                ("readers[0]", "1"),
                ("readers[1]", "0"),
                ("readers[2]", "2"),
                ("readers[3]", "0"),
                ("writer", "-1"),
                ("mode", "RUNNING")
            ],
            "{dwarf}"
        );

        let km = s.kmem.as_ref().unwrap();
        assert_eq!(km.mode, "percpu");
        assert_eq!(km.lists.len(), 8);
        assert_eq!(km.lists[0].free_pages, 3);
        assert_eq!(km.lists[1].free_pages, 2);
        assert_eq!(km.list_paths[1], "kmem[1].freelist");
        assert_eq!(km.lists[1].lock, Some(lock(&s, "kmem[1].lock").meta.id));
        assert!(!km.incomplete);
        assert_eq!(km.pages_at_start, Some((RAM.end - k.heap) / PAGE));

        assert_eq!(s.ticks, Some(7));
        assert_eq!(s.outcome, None);
        assert_eq!(s.findings, [], "{dwarf}: {:#?}", s.findings);
        assert!(!k.src.panicked(&mut k.img));
        k.put(k.global("panicked"), &[1, 0, 0, 0]);
        assert!(k.src.panicked(&mut k.img));
        assert_eq!(k.snapshot().outcome, Some(crate::model::Outcome::Panic));

        // Freed from the registry: kept with its last counts, not held.
        k.put_u64(k.global("locks") + 6 * 8, 0);
        let s = k.snapshot();
        let p = s.locks.iter().find(|l| l.addr == Some(pipe)).unwrap();
        assert_eq!(p.counters.acquires, 4);
        assert_eq!(p.locked, None);
    }
}

fn kinds(s: &Snapshot) -> Vec<(FindingKind, String)> {
    let mut v: Vec<_> = s
        .findings
        .iter()
        .map(|f| (f.kind, f.path.clone()))
        .collect();
    v.sort_by_key(|(k, p)| (format!("{k:?}"), p.clone()));
    v
}

/// Writes a one-page Sv39 table mapping `va` to `pa` (the tests' stand-in for kvminit).
fn map_page(k: &mut Kernel, tables: u64, va: u64, pa: u64) {
    let pte = |pa: u64, flags: u64| (pa / PAGE) << 10 | flags | 1;
    let (l2, l1, l0) = (tables, tables + PAGE, tables + 2 * PAGE);
    k.put_u64(l2 + ((va >> 30) & 0x1ff) * 8, pte(l1, 0));
    k.put_u64(l1 + ((va >> 21) & 0x1ff) * 8, pte(l0, 0));
    k.put_u64(l0 + ((va >> 12) & 0x1ff) * 8, pte(pa, 0b110));
    k.put_u64(k.global("kernel_pagetable"), l2);
}

#[test]
fn the_labs_mistakes_are_findings() {
    if !have_gcc() {
        return;
    }
    for dwarf in DWARF_FLAGS {
        let mut k = kernel(1, true, dwarf);
        // A double kfree on hart 0's list (page 2 -> page 0); hart 1's list runs into it.
        let (p0, p1) = (k.page(0), k.page(1));
        k.put_u64(k.page(2), p0);
        k.put_u64(k.page(6), p1);
        // A lock named from a process's kernel stack, read through the kernel page table.
        let kstack = 0x3f_ffff_d000;
        let stack_page = k.page(30);
        let tables = k.page(20);
        map_page(&mut k, tables, kstack, stack_page);
        k.put(stack_page + 0x100, b"bucket7\0");
        let l = k.page(11);
        k.put_u64(l + 8, kstack + 0x100);
        k.put(l + 28, &[1, 0, 0, 0]);
        k.put_u64(k.global("locks") + 8 * 8, l);
        let s = k.snapshot();
        let got = kinds(&s);
        let want = [
            (FindingKind::BlockCachedTwice, "bcache.buf"),
            (FindingKind::BucketCycle, "bcache.bucket[1]"),
            (FindingKind::BucketStrayPointer, "bcache.bucket[2]"),
            (FindingKind::BucketStrayPointer, "bcache.bucket[4]"),
            (FindingKind::BufInTwoBuckets, "bcache.bucket[4]"),
            (FindingKind::BufInTwoBuckets, "bcache.bucket[4]"),
            (FindingKind::CounterWrapped, "tickslock"),
            (FindingKind::LockNameNotCounted, "bcache.bucket[1].lock"),
            (FindingKind::LockNameNotCounted, "kmem[1].lock"),
            (FindingKind::LockNameOnStack, "tickslock"),
            (FindingKind::LockNotRegistered, "unregistered"),
            (FindingKind::LockUninitialised, "forgotten"),
            (FindingKind::PageOnTwoLists, "kmem[1].freelist"),
            (FindingKind::PageTwiceOnList, "kmem[0].freelist"),
            (FindingKind::RegistryEntryInvalid, "locks[7]"),
        ];
        let stack_lock = format!("lock@{l:#x}");
        let mut want: Vec<(FindingKind, String)> =
            want.iter().map(|(k, p)| (*k, p.to_string())).collect();
        want.push((FindingKind::LockNameOnStack, stack_lock.clone()));
        want.sort_by_key(|(k, p)| (format!("{k:?}"), p.clone()));
        want.retain(|w| w.0 != FindingKind::FreeListStrayPointer);
        assert_eq!(got, want, "{dwarf}: {:#?}", s.findings);
        for f in &s.findings {
            assert!(
                f.message.ends_with("this makes the lab's OK meaningless"),
                "{f:?}"
            );
        }
        let msg = |kind, path: &str| {
            s.findings
                .iter()
                .find(|f| f.kind == kind && f.path == path)
                .unwrap()
                .message
                .clone()
        };
        let m = msg(FindingKind::LockNameOnStack, "tickslock");
        assert!(
            m.contains("stack0+4000") && m.contains("empty string"),
            "{m}"
        );
        let m = msg(FindingKind::LockNameOnStack, &stack_lock);
        assert!(m.contains("\"bucket7\""), "{dwarf}: read through Sv39: {m}");
        let m = msg(FindingKind::LockNameNotCounted, "kmem[1].lock");
        assert!(
            m.contains("\"mem1\"") && m.contains("kalloctest's tot="),
            "{m}"
        );
        let m = msg(FindingKind::PageTwiceOnList, "kmem[0].freelist");
        assert!(
            m.contains(&format!("{p0:#x}")) && m.contains("double kfree"),
            "{m}"
        );
        // lock_locks is used and unnamed, as in the lab itself: not a finding.
        assert!(!s.findings.iter().any(|f| f.path == "lock_locks"));
        assert!(s.kmem.as_ref().unwrap().incomplete);
        // Bucket 1's cycle is walked once.
        assert_eq!(s.bcache.as_ref().unwrap().buckets[1].nbuf, 2);
    }
}

/// Shared RAM of a running guest: a finding must be seen twice in a row.
struct Running(ByteImage);

impl GuestMemory for Running {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.0.read(addr, buf)
    }
    fn concurrent(&self) -> bool {
        true
    }
}

#[test]
fn on_a_running_guest_findings_need_two_snapshots() {
    if !have_gcc() {
        return;
    }
    let mut k = kernel(1, true, "-gdwarf-5");
    let mut mem = Running(std::mem::replace(
        &mut k.img,
        ByteImage {
            base: 0,
            bytes: Vec::new(),
        },
    ));
    let first = k.src.snapshot(&mut mem, 1).unwrap();
    assert_eq!(first.findings, []);
    let second = k.src.snapshot(&mut mem, 2).unwrap();
    assert!(second.findings.len() >= 10);
    // Seen once, then gone (a list caught mid-update): never reported.
    let t = k.src.types().clone();
    let bucket = t.member(k.global_ty("bcache"), "bucket").unwrap();
    let (elem, _) = t.array(bucket.ty).unwrap();
    let head = t.member(elem, "head").unwrap().offset;
    let next = t
        .member(t.member(elem, "head").unwrap().ty, "next")
        .unwrap()
        .offset;
    let at = k.global("bcache") + bucket.offset + 5 * t.size_of(elem).unwrap() + head + next;
    mem.0.bytes[(at - RAM.start) as usize..][..8].copy_from_slice(&0x8000_0010u64.to_le_bytes());
    let third = k.src.snapshot(&mut mem, 3).unwrap();
    assert_eq!(third.findings, second.findings);
    mem.0.bytes[(at - RAM.start) as usize..][..8].copy_from_slice(&0u64.to_le_bytes());
    let fourth = k.src.snapshot(&mut mem, 4).unwrap();
    assert_eq!(fourth.findings, second.findings);
}

impl Kernel {
    fn global_ty(&self, name: &str) -> TypeId {
        self.src.types().global(name).unwrap().ty
    }
}

#[test]
fn the_kernel_stack_reads_through_the_page_table() {
    if !have_gcc() {
        return;
    }
    let mut k = kernel(1, false, "-gdwarf-2");
    let mut s = k.src.snapshot(&mut k.img, 1).unwrap();
    assert!(matches!(
        k.src.kernel_page_table(&mut k.img),
        Err(Xv6Error::BadPageTable { root: 0 })
    ));
    let p = s.processes.remove(0);
    let stack_page = k.page(30);
    let tables = k.page(20);
    map_page(&mut k, tables, p.kstack.unwrap(), stack_page);
    let fp = p.context.unwrap().fp;
    k.put_u64(stack_page + (fp - 8 - p.kstack.unwrap()), 0x8000_0042);
    let mut table = k.src.kernel_page_table(&mut k.img).unwrap();
    let mut v = VirtMemory {
        mem: &mut k.img,
        table: &mut table,
    };
    let mut b = [0u8; 8];
    v.read(fp - 8, &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), 0x8000_0042);
}

#[test]
fn corrupt_guest_memory_never_panics() {
    if !have_gcc() {
        return;
    }
    let mut k = kernel(1, true, "-gdwarf-5");
    let targets = [
        k.global("bcache"),
        k.global("kmem"),
        k.global("locks"),
        k.global("proc"),
        k.global("cpus"),
        k.page(0),
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let base = targets[i % targets.len()];
        let at = base + (seed % 4096) / 8 * 8;
        let v = match i % 4 {
            0 => seed,
            1 => k.page(seed % 16),
            2 => base + (seed >> 40) % 256,
            _ => u64::MAX,
        };
        k.put_u64(at, v);
        let _ = k.snapshot();
    }
}

#[test]
fn what_is_not_an_xv6_kernel_says_so() {
    if !have_gcc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let elf = build(dir.path(), &SOURCES, &["-g0", "-DSHAPE=1"], "_entry");
    let err = Xv6Source::open(&Symbols::load(&elf).unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("rebuild with -g (xv6's Makefile has -ggdb"),
        "{err}"
    );

    let other = "struct point { int x, y; } p; int _entry(void) { return p.x; }";
    let elf = build(dir.path(), &[("other.c", other)], &["-gdwarf-5"], "_entry");
    let err = Xv6Source::open(&Symbols::load(&elf).unwrap()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("neither a lockscope kernel") && msg.contains("struct spinlock"),
        "{msg}"
    );

    // Not RISC-V (this test program), or cut short: the ELF loader says so before us.
    let me = std::env::current_exe().unwrap();
    let err = Symbols::load(&me).unwrap_err().to_string();
    assert!(
        err.contains("lockscope needs the RISC-V kernel ELF"),
        "{err}"
    );
    let bytes = std::fs::read(&elf).unwrap();
    for cut in [8, 100, bytes.len() / 2] {
        let r = Symbols::from_bytes("cut", bytes[..cut].to_vec());
        if let Ok(syms) = r {
            assert!(Xv6Source::open(&syms).is_err(), "cut at {cut}");
        }
    }

    // A different kernel in RAM than the ELF.
    let mut k = kernel(4, false, "-gdwarf-5");
    assert!(k.src.ready(&mut k.img, false).unwrap());
    let (addr, _) = k.src.image.text_probe.clone();
    k.put(addr, &[0x13, 0, 0, 0]);
    k.put(addr + 4, &[0x6f, 0, 0, 0]);
    assert!(matches!(
        k.src.ready(&mut k.img, false),
        Err(SourceError::Xv6(Xv6Error::WrongKernel { .. }))
    ));
}
