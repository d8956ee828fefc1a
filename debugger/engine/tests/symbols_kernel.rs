//! Symbols on the real lockscope kernel ELF (`LOCKSCOPE_KERNEL`, or where `cargo xtask build`
//! puts it): the ABI symbols, lock-site lookups at every call into the spinlock module checked
//! against gdb-multiarch, and the unwind of every hart of a panicked kernel in QEMU checked
//! against gdb's backtrace. They need the built kernel: `cargo xtask test` builds it first.

#[path = "fixtures/symbols/support.rs"]
mod support;

use std::path::{Path, PathBuf};

use lockscope_engine::model::HartRegs;
use lockscope_engine::symbols::{Instruction, SymbolKind, Symbols, UnwindLimits, UnwindStop};
use support::*;

/// A private copy of the kernel ELF (another build may replace the original while we run), and
/// its symbols with paths shown relative to the repository.
fn kernel() -> Option<(Symbols, tempfile::TempDir, PathBuf)> {
    let path = kernel_elf()
        .expect("no kernel ELF: run the tests with `cargo xtask test`, which builds it");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("lockscope-kernel");
    std::fs::copy(&path, &copy).unwrap();
    let mut s = Symbols::load(&copy).unwrap();
    s.set_source_root(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    Some((s, dir, copy))
}

fn in_spinlock_module(name: &str) -> bool {
    name.contains("::spinlock::")
}

/// Calls from outside the spinlock module to its out-of-line lock entry points, as
/// (return address, callee name).
fn lock_calls(s: &Symbols) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for f in s
        .symbols()
        .iter()
        .filter(|f| f.kind == SymbolKind::Function)
    {
        if in_spinlock_module(&f.name) || f.size == 0 {
            continue;
        }
        let dis = s
            .disassemble_around(f.address, 0, f.size as usize, &mut s.elf_memory())
            .unwrap();
        let body: Vec<&Instruction> = dis
            .instructions
            .iter()
            .take_while(|i| i.address < f.address + f.size)
            .collect();
        for i in body {
            let Some(callee) = i.target.and_then(|t| s.function_at(t)) else {
                continue;
            };
            let name = &callee.symbol.name;
            let entry = name.ends_with("::lock") || name.contains("::acquire");
            if i.mnemonic == "jalr" && in_spinlock_module(name) && entry && callee.offset == 0 {
                out.push((i.address + i.bytes.len() as u64, name.clone()));
            }
        }
    }
    out
}

#[test]
fn kernel_abi_symbols_and_constant_root() {
    let Some((s, _dir, _)) = kernel() else { return };
    assert!(
        s.has_debug_info(),
        "the kernel profile must keep debug = true"
    );
    let root = s.abi_root().unwrap();
    assert_eq!(root.kind, SymbolKind::Data);
    assert_eq!(
        root.size as usize,
        std::mem::size_of::<lockscope_abi::Root>()
    );
    let r: lockscope_abi::Root = s.read_static_pod(root.address).unwrap();
    assert_eq!(r.magic, lockscope_abi::ROOT_MAGIC);
    assert_eq!(r.version, lockscope_abi::ABI_VERSION);
    assert_eq!(
        r.root_size as usize,
        std::mem::size_of::<lockscope_abi::Root>()
    );
    assert_eq!(r.max_harts as usize, lockscope_abi::MAX_HARTS);
    assert_eq!(r.ring_entries as usize, lockscope_abi::RING_ENTRIES);
    let halt = s.panic_halt().unwrap();
    assert_eq!(halt.kind, SymbolKind::Function);
    assert!(s.is_text(halt.address));
    let frames = s.frames(halt.address).unwrap();
    let loc = frames.last().unwrap().location.clone().unwrap();
    assert_eq!(loc.short, "kernel/src/panic.rs");
}

#[test]
fn kernel_lock_sites_are_the_callers_and_match_gdb() {
    let Some((s, _dir, elf)) = kernel() else {
        return;
    };
    let calls = lock_calls(&s);
    assert!(calls.len() >= 5, "only {} lock calls found", calls.len());
    let mut cmds = Vec::new();
    for (ra, callee) in &calls {
        // The kernel makes lock()/acquire() out of line, so the return address is already in
        // the caller: its innermost frame is outside the spinlock module.
        let frames = s.return_frames(*ra).unwrap();
        let first = &frames[0];
        assert!(
            !in_spinlock_module(first.function.as_deref().unwrap_or("")),
            "call to {callee} returning to {ra:#x}: innermost frame {first}"
        );
        let site = s.lock_site(*ra).unwrap();
        assert_eq!(&*site, first);
        let loc = site.location.as_ref().unwrap();
        assert!(loc.short.starts_with("kernel/src/"), "{site}");
        assert!(!loc.short.ends_with("spinlock.rs"), "{site}");
        cmds.push(format!("echo PROBE {:#x}\\n", ra - 1));
        cmds.push(format!("info line *{:#x}", ra - 1));
    }
    let out = gdb_batch(&elf, &cmds);
    let (mut checked, mut no_line) = (0, 0);
    for block in out.split("PROBE ").skip(1) {
        let mut lines = block.lines();
        let probe = parse_hex(lines.next().unwrap());
        let line = lines.next().unwrap();
        // `Line 88 of "src/kalloc.rs" starts at address ...`
        let (n, rest) = line
            .strip_prefix("Line ")
            .and_then(|l| l.split_once(" of \""))
            .unwrap_or_else(|| panic!("{line}"));
        let file = rest.split('"').next().unwrap();
        let loc = s.location(probe).unwrap().unwrap();
        if loc.line.is_none() {
            // A call shared by several sites (line 0): gdb's line is a guess, ours is none.
            no_line += 1;
            continue;
        }
        assert_eq!(loc.line, Some(n.parse().unwrap()), "at {probe:#x}: {line}");
        assert!(loc.file.ends_with(file), "at {probe:#x}: {loc:?} vs {file}");
        checked += 1;
    }
    eprintln!(
        "{} lock calls: {checked} lines equal to gdb's, {no_line} without a line",
        calls.len()
    );
    assert_eq!(checked + no_line, calls.len());
    assert!(
        no_line * 10 <= calls.len(),
        "{no_line} of {} lock sites have no line",
        calls.len()
    );
}

/// Rows compared with gdb: (pc, inlined, last name segment, file name, line).
type Row = (u64, bool, String, String, u32);

fn last_segment(name: &str) -> String {
    plain_name(name).rsplit("::").next().unwrap().to_owned()
}

#[test]
fn kernel_panic_unwinds_every_hart_like_gdb() {
    let Some((s, dir, elf)) = kernel() else {
        return;
    };
    let harts = 2;
    let py = dir.path().join("frames.py");
    std::fs::write(&py, GDB_FRAMES_PY).unwrap();
    let qemu = QemuKernel::start(&elf, harts, "bug=panic-test panic=halt");
    let mut cmds = vec![
        format!("target remote 127.0.0.1:{}", qemu.port),
        "break lockscope_panic_halt".into(),
        "continue".into(),
    ];
    for t in 1..=harts {
        let bin = dir.path().join(format!("hart{t}.bin"));
        cmds.push(format!("thread {t}"));
        cmds.push(format!("echo HART {} {}\\n", t - 1, bin.display()));
        cmds.push("info registers pc ra sp s0".into());
        cmds.push(format!("source {}", py.display()));
        cmds.push(format!(
            "dump binary memory {} $sp $sp+0x4000",
            bin.display()
        ));
        cmds.push("echo END\\n".into());
    }
    cmds.push("kill".into());
    let out = gdb_batch(&elf, &cmds);
    drop(qemu);

    let blocks: Vec<&str> = out.split("HART ").skip(1).collect();
    assert_eq!(blocks.len(), harts, "gdb output:\n{out}");
    for block in blocks {
        let block = block.split("END").next().unwrap();
        let (hart, bin) = block.lines().next().unwrap().split_once(' ').unwrap();
        let reg = |r: &str| {
            let l = block
                .lines()
                .find(|l| l.starts_with(&format!("{r} ")))
                .unwrap_or_else(|| panic!("no {r}:\n{out}"));
            parse_hex(l.split_whitespace().nth(1).unwrap())
        };
        let regs = HartRegs {
            pc: reg("pc"),
            ra: reg("ra"),
            sp: reg("sp"),
            fp: reg("s0"),
            ..HartRegs::default()
        };
        let mut mem = Dump {
            regions: vec![(regs.sp, std::fs::read(bin).unwrap())],
        };
        let unwind = s.unwind(&regs, &mut mem, &UnwindLimits::default());
        assert!(
            matches!(
                unwind.stop,
                UnwindStop::EndOfChain | UnwindStop::ReturnNotText { .. }
            ),
            "hart {hart}: {}",
            unwind.stop
        );
        let mut ours: Vec<Row> = Vec::new();
        for raw in &unwind.frames {
            for f in s.raw_frame_frames(raw).unwrap().iter() {
                let (file, line) = match &f.location {
                    Some(l) => (
                        l.file.file_name().unwrap().to_string_lossy().into_owned(),
                        l.line.unwrap_or(0),
                    ),
                    None => ("-".into(), 0),
                };
                let mut name = last_segment(f.function.as_deref().unwrap_or("-"));
                // The #[panic_handler] is named by its linkage name in the ELF and addr2line,
                // by its Rust name (`lockscope_kernel::panic::panic`) in gdb.
                if name == "rust_begin_unwind" {
                    name = "panic".into();
                }
                ours.push((raw.pc, f.inlined, name, file, line));
            }
        }
        let gdb: Vec<Row> = parse_gdb_frames(block)
            .into_iter()
            .map(|f| {
                let file = f.file.rsplit('/').next().unwrap().to_owned();
                (f.pc, f.inlined, last_segment(&f.name), file, f.line)
            })
            .collect();
        // gdb stops where its CFI ends (at the assembly entry); we may show that entry too.
        assert!(gdb.len() >= 4, "hart {hart}: gdb saw only {gdb:?}");
        assert!(ours.len() >= gdb.len(), "hart {hart}: {ours:?} vs {gdb:?}");
        for (o, g) in ours.iter().zip(&gdb) {
            if o.4 == 0 && o.3 != "-" {
                // A line-0 row: gdb shows the previous row's file and line, we show none.
                assert_eq!((o.0, o.1, &o.2), (g.0, g.1, &g.2), "hart {hart}");
            } else {
                assert_eq!(o, g, "hart {hart}: {ours:?} vs {gdb:?}");
            }
        }
        assert!(ours.len() <= gdb.len() + 1, "hart {hart}: {ours:?}");
    }
}

/// The kernel in QEMU, stopped at reset under its gdb stub (the engine's QEMU harness); killed
/// on drop.
struct QemuKernel {
    _q: lockscope_engine::qemu::QemuProcess,
    port: u16,
}

impl QemuKernel {
    fn start(elf: &Path, harts: usize, bootargs: &str) -> QemuKernel {
        require_tool("qemu-system-riscv64");
        let q = lockscope_engine::qemu::QemuConfig::new(elf)
            .smp(harts as u32)
            .bootargs(bootargs)
            .console(lockscope_engine::qemu::Console::File(
                elf.with_file_name("console.txt"),
            ))
            .spawn_with_gdb(std::time::Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}"));
        QemuKernel {
            _q: q.process,
            port: q.addr.port(),
        }
    }
}
