//! The frame-pointer unwinder against real QEMU and gdb-multiarch.
//!
//! `unwind_matches_gdb_on_a_live_qemu` boots the fixture in QEMU stopped under its gdb stub,
//! runs it through five stops with gdb-multiarch (in a function body, at function entries, in
//! the middle of a prologue, on an epilogue's return), and at each compares our unwind of the
//! registers and the stack gdb dumped with gdb's own backtrace (which uses DWARF CFI, not frame
//! pointers). With `LOCKSCOPE_RECORD_SYMBOLS=1` it also rewrites the transcript
//! `tests/fixtures/symbols/stops.txt`, which the other tests replay without QEMU.

#[path = "fixtures/symbols/support.rs"]
mod support;

use std::fmt::Write as _;

use lockscope_engine::model::HartRegs;
use lockscope_engine::symbols::{RawFrameKind, Symbols, UnwindLimits, UnwindStop};
use proptest::prelude::*;
use support::*;

/// One stop: registers, the stack from sp up, and gdb's frames.
#[derive(Clone, Debug)]
struct Stop {
    name: String,
    regs: HartRegs,
    mem: Dump,
    gdb: Vec<GdbFrame>,
}

#[derive(Clone, Debug)]
struct Transcript {
    elf_fnv: u64,
    /// FIXTURE_LAST_SITE after the first acquire: the return address the fixture's lock recorded.
    last_site: u64,
    stops: Vec<Stop>,
}

fn fixture() -> Symbols {
    Symbols::load(fixture_elf()).unwrap()
}

fn transcript_path() -> std::path::PathBuf {
    fixture_dir().join("stops.txt")
}

/// Boots the fixture and records the stops with gdb-multiarch.
fn record(s: &Symbols) -> Transcript {
    let elf = fixture_elf();
    let addr = |name: &str| s.symbol(name).unwrap().address;
    let acquire = addr("symbols_fixture::spinlock::Lock::acquire");
    let stop_fn = s.symbol("fixture_stop").unwrap().clone();
    let leaf = addr("fixture_leaf");
    let stack_top = addr("_stack_top");
    let last_site = addr("FIXTURE_LAST_SITE");
    let code = |at: u64| {
        s.disassemble_around(at, 0, 64, &mut s.elf_memory())
            .unwrap()
            .instructions
    };
    let ret = code(stop_fn.address)
        .into_iter()
        .take_while(|i| i.address < stop_fn.address + stop_fn.size)
        .last()
        .unwrap();
    assert_eq!(
        ret.mnemonic, "c.jr",
        "fixture_stop should end in its return"
    );
    let set_fp = code(leaf)
        .into_iter()
        .find(|i| i.operands.starts_with("s0, sp"))
        .unwrap();
    let fault = code(addr("fixture_fault"))
        .into_iter()
        .find(|i| i.mnemonic == "c.unimp")
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let py = dir.path().join("frames.py");
    std::fs::write(&py, GDB_FRAMES_PY).unwrap();
    let qemu = Qemu::start(&elf);
    let mut cmds = vec![format!("target remote 127.0.0.1:{}", qemu.port)];
    let stops = [
        ("acquire-entry", format!("tbreak *{acquire:#x}")),
        // gdb's own choice of the first line after the prologue.
        ("stop-body", "tbreak fixture_stop".to_owned()),
        ("stop-return", format!("tbreak *{:#x}", ret.address)),
        ("leaf-entry", format!("tbreak *{leaf:#x}")),
        ("leaf-setting-fp", format!("tbreak *{:#x}", set_fp.address)),
        // The illegal instruction, before it runs, then its trap handler.
        ("fault-insn", format!("tbreak *{:#x}", fault.address)),
        ("trap-handler", "tbreak fixture_trap".to_owned()),
    ];
    for (_, b) in &stops {
        cmds.push(b.clone());
    }
    for (i, (name, _)) in stops.iter().enumerate() {
        let bin = dir.path().join(format!("{i}.bin"));
        cmds.push("continue".into());
        cmds.push(format!("echo STOP {name} {}\\n", bin.display()));
        // The fixture runs in M-mode: mepc is its trap pc (sepc in the S-mode kernel).
        cmds.push("info registers pc ra sp s0 mepc".into());
        cmds.push(format!("source {}", py.display()));
        cmds.push(format!(
            "dump binary memory {} $sp {stack_top:#x}",
            bin.display()
        ));
        cmds.push("echo END\\n".into());
    }
    cmds.push("echo SITE\\n".into());
    cmds.push(format!("x/gx {last_site:#x}"));
    cmds.push("kill".into());
    let out = gdb_batch(&elf, &cmds);
    drop(qemu);

    let mut recorded = Vec::new();
    for block in out.split("STOP ").skip(1) {
        let block = block.split("END").next().unwrap();
        let mut lines = block.lines();
        let (name, bin) = lines.next().unwrap().split_once(' ').unwrap();
        let reg = |r: &str| {
            let l = block
                .lines()
                .find(|l| l.starts_with(&format!("{r} ")))
                .unwrap_or_else(|| panic!("no {r} in gdb output:\n{out}"));
            parse_hex(l.split_whitespace().nth(1).unwrap())
        };
        let regs = HartRegs {
            pc: reg("pc"),
            ra: reg("ra"),
            sp: reg("sp"),
            fp: reg("s0"),
            sepc: Some(reg("mepc")),
            ..HartRegs::default()
        };
        let bytes = std::fs::read(bin).unwrap_or_else(|e| panic!("{bin}: {e}\n{out}"));
        recorded.push(Stop {
            name: name.to_owned(),
            regs,
            mem: Dump {
                regions: vec![(regs.sp, bytes)],
            },
            gdb: parse_gdb_frames(block),
        });
    }
    assert_eq!(recorded.len(), stops.len(), "gdb output:\n{out}");
    let site_line = out.split("SITE\n").nth(1).unwrap().lines().next().unwrap();
    let site = parse_hex(site_line.split(':').nth(1).unwrap());
    Transcript {
        elf_fnv: fnv1a(&std::fs::read(&elf).unwrap()),
        last_site: site,
        stops: recorded,
    }
}

fn save(t: &Transcript) -> String {
    let mut o = String::new();
    writeln!(
        o,
        "# Stops of tests/fixtures/symbols/fixture.elf recorded from QEMU and gdb-multiarch"
    )
    .unwrap();
    writeln!(
        o,
        "# by tests/symbols_unwind.rs; re-record with LOCKSCOPE_RECORD_SYMBOLS=1."
    )
    .unwrap();
    writeln!(o, "elf-fnv {:#x}", t.elf_fnv).unwrap();
    writeln!(o, "last-site {:#x}", t.last_site).unwrap();
    for s in &t.stops {
        let r = &s.regs;
        writeln!(o, "stop {}", s.name).unwrap();
        let trap_pc = r.sepc.unwrap_or(0);
        writeln!(
            o,
            "regs {:#x} {:#x} {:#x} {:#x} {trap_pc:#x}",
            r.pc, r.ra, r.sp, r.fp
        )
        .unwrap();
        for (base, bytes) in &s.mem.regions {
            writeln!(o, "mem {base:#x} {}", hex_encode(bytes)).unwrap();
        }
        for f in &s.gdb {
            writeln!(
                o,
                "frame {:#x} {} {} {} {}",
                f.pc, f.inlined as u8, f.name, f.file, f.line
            )
            .unwrap();
        }
    }
    o
}

fn load_transcript() -> Transcript {
    let text = std::fs::read_to_string(transcript_path()).unwrap();
    let mut t = Transcript {
        elf_fnv: 0,
        last_site: 0,
        stops: Vec::new(),
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, rest) = line.split_once(' ').unwrap();
        match key {
            "elf-fnv" => t.elf_fnv = parse_hex(rest),
            "last-site" => t.last_site = parse_hex(rest),
            "stop" => t.stops.push(Stop {
                name: rest.to_owned(),
                regs: HartRegs::default(),
                mem: Dump::default(),
                gdb: Vec::new(),
            }),
            "regs" => {
                let v: Vec<u64> = rest.split(' ').map(parse_hex).collect();
                let s = t.stops.last_mut().unwrap();
                s.regs = HartRegs {
                    pc: v[0],
                    ra: v[1],
                    sp: v[2],
                    fp: v[3],
                    sepc: Some(v[4]),
                    ..HartRegs::default()
                };
            }
            "mem" => {
                let (base, hex) = rest.split_once(' ').unwrap();
                let s = t.stops.last_mut().unwrap();
                s.mem.regions.push((parse_hex(base), hex_decode(hex)));
            }
            "frame" => {
                let f = parse_gdb_frames(&format!("FRAME {rest}"));
                t.stops.last_mut().unwrap().gdb.extend(f);
            }
            other => panic!("unknown transcript line {other}"),
        }
    }
    let current = fnv1a(&std::fs::read(fixture_elf()).unwrap());
    assert_eq!(
        t.elf_fnv, current,
        "stops.txt was recorded from another build of fixture.elf; re-record with \
         LOCKSCOPE_RECORD_SYMBOLS=1 cargo test -p lockscope-engine --test symbols_unwind"
    );
    t
}

/// A frame as compared with gdb: (pc, inlined, last name segment, file name, line).
type Row = (u64, bool, String, String, u32);

fn last_segment(name: &str) -> String {
    plain_name(name).rsplit("::").next().unwrap().to_owned()
}

fn our_rows(s: &Symbols, stop: &Stop) -> (Vec<Row>, UnwindStop) {
    let mut mem = stop.mem.clone();
    let unwind = s.unwind(&stop.regs, &mut mem, &UnwindLimits::default());
    let mut rows = Vec::new();
    for raw in &unwind.frames {
        for f in s.raw_frame_frames(raw).unwrap().iter() {
            let (file, line) = match &f.location {
                Some(l) => (
                    l.file.file_name().unwrap().to_string_lossy().into_owned(),
                    l.line.unwrap_or(0),
                ),
                None => ("-".to_owned(), 0),
            };
            rows.push((
                raw.pc,
                f.inlined,
                last_segment(f.function.as_deref().unwrap_or("-")),
                file,
                line,
            ));
        }
    }
    (rows, unwind.stop)
}

fn gdb_rows(stop: &Stop) -> Vec<Row> {
    stop.gdb
        .iter()
        .map(|f| {
            let file = f.file.rsplit('/').next().unwrap().to_owned();
            (f.pc, f.inlined, last_segment(&f.name), file, f.line)
        })
        .collect()
}

fn check_against_gdb(s: &Symbols, t: &Transcript) {
    let by_name = |n: &str| t.stops.iter().find(|s| s.name == n).unwrap();
    for stop in &t.stops {
        let (ours, why) = our_rows(s, stop);
        assert_eq!(why, UnwindStop::EndOfChain, "{}", stop.name);
        let expected = if stop.name == "trap-handler" {
            // gdb knows nothing of traps: below the trap vector it shows the interrupted
            // function's caller twice. The truth is the handler and the vector on top of the
            // stack gdb saw just before the trap, at the faulting instruction.
            let mut rows = gdb_rows(stop)[..2].to_vec();
            rows.extend(gdb_rows(by_name("fault-insn")));
            rows
        } else {
            gdb_rows(stop)
        };
        assert_eq!(ours, expected, "stop {}", stop.name);
        assert_eq!(ours.last().unwrap().2, "_start", "{}", stop.name);
    }
    // The lock site: the recorded return address is gdb's frame 1 at acquire's entry, and our
    // site is the first frame gdb shows outside the spinlock module.
    let entry = t.stops.iter().find(|s| s.name == "acquire-entry").unwrap();
    let caller = entry
        .gdb
        .iter()
        .find(|f| !f.inlined && f.pc != entry.regs.pc)
        .unwrap();
    assert_eq!(t.last_site, caller.pc);
    let expected = entry
        .gdb
        .iter()
        .skip(1)
        .find(|f| !f.file.ends_with("spinlock.rs"))
        .unwrap();
    let site = s.lock_site(t.last_site).unwrap();
    let loc = site.location.clone().unwrap();
    assert_eq!(
        (
            last_segment(site.function.as_deref().unwrap()),
            loc.line.unwrap()
        ),
        (last_segment(&expected.name), expected.line)
    );
    assert!(
        loc.file.ends_with(&expected.file),
        "{loc:?} vs {expected:?}"
    );
}

#[test]
fn unwind_matches_gdb_on_a_live_qemu() {
    let s = fixture();
    let t = record(&s);
    if std::env::var_os("LOCKSCOPE_RECORD_SYMBOLS").is_some() {
        std::fs::write(transcript_path(), save(&t)).unwrap();
    }
    check_against_gdb(&s, &t);
}

#[test]
fn unwind_matches_the_recorded_gdb_transcript() {
    let s = fixture();
    let t = load_transcript();
    assert_eq!(t.stops.len(), 7);
    check_against_gdb(&s, &t);
}

#[test]
fn prologue_and_epilogue_stops_take_the_caller_from_ra() {
    let s = fixture();
    let t = load_transcript();
    for stop in &t.stops {
        let mut mem = stop.mem.clone();
        let u = s.unwind(&stop.regs, &mut mem, &UnwindLimits::default());
        let framed = !matches!(
            stop.name.as_str(),
            "acquire-entry" | "stop-return" | "leaf-entry" | "leaf-setting-fp"
        );
        assert_eq!(s.frame_is_set(stop.regs.pc), framed, "{}", stop.name);
        assert_eq!(u.frames[0].kind, RawFrameKind::Pc);
        if !framed {
            assert_eq!(u.frames[1].pc, stop.regs.ra, "{}", stop.name);
            assert_eq!(u.frames[1].fp, None);
        }
    }
}

#[test]
fn a_trap_vector_in_the_chain_gets_the_trap_pc_below_it() {
    let s = fixture();
    let t = load_transcript();
    let stop = t.stops.iter().find(|s| s.name == "trap-handler").unwrap();
    let trap_pc = stop.regs.sepc.unwrap();
    let u = s.unwind(&stop.regs, &mut stop.mem.clone(), &UnwindLimits::default());
    let kinds: Vec<RawFrameKind> = u.frames.iter().map(|f| f.kind).collect();
    use RawFrameKind::*;
    assert_eq!(kinds, [Pc, Return, Trap, Return, Return, Return]);
    assert_eq!(u.frames[2].pc, trap_pc);
    assert_eq!(u.frames[2].lookup_pc(), trap_pc);
    let fault = s.frames(trap_pc).unwrap();
    assert_eq!(fault[0].function.as_deref(), Some("fixture_fault"));
    // Without the trap pc the interrupted function is simply missing, nothing else changes.
    let regs = HartRegs {
        sepc: None,
        ..stop.regs
    };
    let without = s.unwind(&regs, &mut stop.mem.clone(), &UnwindLimits::default());
    let mut expected = u.frames.clone();
    expected.remove(2);
    assert_eq!(without.frames, expected);
}

fn body_stop() -> (Symbols, Stop) {
    let t = load_transcript();
    let stop = t.stops.into_iter().find(|s| s.name == "stop-body").unwrap();
    (fixture(), stop)
}

/// Writes a u64 into the dumped stack at a guest address.
fn poke(stop: &mut Stop, addr: u64, value: u64) {
    let (base, bytes) = &mut stop.mem.regions[0];
    let off = (addr - *base) as usize;
    bytes[off..off + 8].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn a_frame_pointer_that_goes_backwards_stops_the_walk() {
    let (s, mut stop) = body_stop();
    // The innermost record's saved fp now points at itself: a loop.
    let fp = stop.regs.fp;
    poke(&mut stop, fp - 16, fp);
    let u = s.unwind(&stop.regs, &mut stop.mem, &UnwindLimits::default());
    assert_eq!(
        u.stop,
        UnwindStop::BadFramePointer {
            fp,
            reason: "does not increase along the chain"
        }
    );
    assert_eq!(u.frames.len(), 2);
}

#[test]
fn a_return_address_outside_the_text_stops_the_walk() {
    let (s, mut stop) = body_stop();
    let fp = stop.regs.fp;
    poke(&mut stop, fp - 8, 0x1234_5678);
    let u = s.unwind(&stop.regs, &mut stop.mem, &UnwindLimits::default());
    assert_eq!(u.stop, UnwindStop::ReturnNotText { ra: 0x1234_5678 });
    assert_eq!(u.frames.len(), 1);
    assert!(u.stop.to_string().contains("0x12345678"));
}

#[test]
fn bad_frame_pointers_are_rejected_before_reading() {
    let (s, stop) = body_stop();
    let limits = UnwindLimits::default();
    // sp 0 is "unknown" (a panic record has no sp), so only the RAM bounds catch a low fp.
    let sp = stop.regs.sp;
    let cases = [
        (stop.regs.fp + 4, sp, "is not 8-byte aligned"),
        (0x1000, 0, "is outside guest RAM"),
        (0x8000_0000 + (128 << 20) + 16, sp, "is outside guest RAM"),
        (sp - 16, sp, "is below the stack pointer"),
    ];
    for (fp, sp, reason) in cases {
        let regs = HartRegs {
            fp,
            sp,
            ..stop.regs
        };
        let u = s.unwind(&regs, &mut stop.mem.clone(), &limits);
        assert_eq!(
            u.stop,
            UnwindStop::BadFramePointer { fp, reason },
            "{fp:#x}"
        );
    }
}

#[test]
fn a_frame_larger_than_the_limit_stops_the_walk() {
    let (s, mut stop) = body_stop();
    let limits = UnwindLimits {
        max_frame_size: 16,
        ..UnwindLimits::default()
    };
    let u = s.unwind(&stop.regs, &mut stop.mem, &limits);
    assert!(
        matches!(u.stop, UnwindStop::BadFramePointer { .. }),
        "{:?}",
        u.stop
    );
    assert_eq!(u.frames.len(), 2);
}

#[test]
fn depth_is_bounded() {
    let (s, mut stop) = body_stop();
    let limits = UnwindLimits {
        max_depth: 3,
        ..UnwindLimits::default()
    };
    let u = s.unwind(&stop.regs, &mut stop.mem, &limits);
    assert_eq!((u.frames.len(), u.stop), (3, UnwindStop::DepthLimit));
}

#[test]
fn unreadable_memory_stops_the_walk_with_the_address() {
    let (s, stop) = body_stop();
    let mut empty = Dump::default();
    let u = s.unwind(&stop.regs, &mut empty, &UnwindLimits::default());
    assert!(
        matches!(u.stop, UnwindStop::Memory { addr, .. } if addr == stop.regs.fp - 16),
        "{:?}",
        u.stop
    );
}

#[test]
fn a_pc_outside_the_text_gives_one_frame() {
    let (s, mut stop) = body_stop();
    let regs = HartRegs {
        pc: 0x10,
        ..stop.regs
    };
    let u = s.unwind(&regs, &mut stop.mem, &UnwindLimits::default());
    assert_eq!((u.frames.len(), u.stop), (1, UnwindStop::PcNotText));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Garbage registers and stack: the walk ends, within the depth limit, never panicking.
    #[test]
    fn garbage_never_panics(
        pc in prop_oneof![any::<u64>(), 0x8000_0000u64..0x8000_0160],
        ra in prop_oneof![any::<u64>(), 0x8000_0000u64..0x8000_0160],
        sp in any::<u64>(),
        fp in prop_oneof![any::<u64>(), (0x8000_4000u64..0x8000_4200).prop_map(|f| f & !7)],
        sepc in proptest::option::of(prop_oneof![any::<u64>(), 0x8000_0000u64..0x8000_0200]),
        stack in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let s = fixture();
        let mut mem = Dump { regions: vec![(0x8000_4000, stack)] };
        let limits = UnwindLimits::default();
        let regs = HartRegs { pc, ra, sp, fp, sepc, ..HartRegs::default() };
        let u = s.unwind(&regs, &mut mem, &limits);
        prop_assert!(!u.frames.is_empty() && u.frames.len() <= limits.max_depth);
        for w in u.frames.windows(2) {
            if let (Some(a), Some(b)) = (w[0].fp, w[1].fp) {
                prop_assert!(b > a);
            }
        }
        for f in &u.frames[1..] {
            prop_assert!(s.is_text(f.pc));
            let _ = s.raw_frame_frames(f);
        }
        prop_assert!(u.frames.iter().filter(|f| f.kind == RawFrameKind::Trap).count() <= 1);
    }
}
