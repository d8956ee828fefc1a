//! Loading ELFs, the symbol table, static data, DWARF frames and source context, on the RV64
//! fixture built from tests/fixtures/symbols/fixture (see build.sh there).

#[path = "fixtures/symbols/support.rs"]
mod support;

use std::sync::Arc;

use lockscope_engine::symbols::{SiteFilter, SymbolKind, Symbols, SymbolsError};
use object::{Object, ObjectSymbol};
use proptest::prelude::*;
use support::*;

fn fixture() -> Symbols {
    Symbols::load(fixture_elf()).expect("loading the fixture ELF")
}

/// The return address of the call from `caller` to `callee` (the first such call).
fn return_address_of_call(s: &Symbols, caller: &str, callee: &str) -> u64 {
    let caller = s.symbol(caller).unwrap();
    let callee = s.symbol(callee).unwrap().address;
    let dis = s
        .disassemble_around(caller.address, 0, 200, &mut s.elf_memory())
        .unwrap();
    let call = dis
        .instructions
        .iter()
        .take_while(|i| i.address < caller.address + caller.size)
        .find(|i| i.target == Some(callee))
        .unwrap_or_else(|| panic!("no call to {callee:#x} in {}", caller.name));
    call.address + call.bytes.len() as u64
}

#[test]
fn named_symbols_have_addresses_sizes_and_kinds() {
    let s = fixture();
    let root = s.symbol("FIXTURE_ROOT").unwrap();
    assert_eq!((root.size, root.kind), (32, SymbolKind::Data));
    let stop = s.symbol("fixture_stop").unwrap();
    assert_eq!(stop.kind, SymbolKind::Function);
    assert!(stop.size > 0);
    let start = s.symbol("_start").unwrap();
    assert_eq!(start.address, 0x8000_0000);
    // Demangled and raw names both find a Rust function.
    let run = s.symbol("symbols_fixture::work::run").unwrap();
    assert!(run.raw_name.starts_with("_ZN15symbols_fixture4work3run17h"));
    assert_eq!(
        s.symbol(&run.raw_name.clone()).unwrap().address,
        run.address
    );
    let err = s.symbol("no_such_symbol").unwrap_err();
    assert!(matches!(err, SymbolsError::NoSuchSymbol { .. }));
    assert!(err.to_string().contains("no_such_symbol"), "{err}");
}

#[test]
fn abi_symbol_lookups_name_what_is_missing() {
    // The fixture is not the kernel: the helpers must say which symbol is missing.
    let s = fixture();
    let err = s.abi_root().unwrap_err().to_string();
    assert!(
        err.contains("LOCKSCOPE_ROOT") && err.contains("lockscope kernel"),
        "{err}"
    );
    let err = s.panic_halt().unwrap_err().to_string();
    assert!(err.contains("lockscope_panic_halt"), "{err}");
}

#[test]
fn local_labels_and_mapping_symbols_are_filtered() {
    let bytes = std::fs::read(fixture_elf()).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let raw: Vec<String> = file
        .symbols()
        .filter_map(|s| s.name().ok().map(str::to_owned))
        .collect();
    // The fixture really has them (RISC-V keeps .Lpcrel_hi labels; LLVM emits $x/$d).
    assert!(raw.iter().any(|n| n.starts_with(".Lpcrel_hi")), "{raw:?}");
    assert!(raw.iter().any(|n| n == "$x"), "{raw:?}");

    let s = fixture();
    assert!(s
        .symbols()
        .iter()
        .all(|sym| !sym.raw_name.starts_with(".L") && !sym.raw_name.starts_with('$')));
    // Every address of the code belongs to a real function, never to a label.
    let text = &s.text_ranges()[0];
    for pc in (text.start..text.end).step_by(2) {
        let hit = s
            .function_at(pc)
            .unwrap_or_else(|| panic!("{pc:#x} has no function"));
        assert!(
            !hit.symbol.name.starts_with('.'),
            "{pc:#x}: {}",
            hit.symbol.name
        );
        assert_eq!(hit.symbol.address + hit.offset, pc);
        // Unsized labels (the trap vector) run to the next symbol.
        assert!(
            hit.symbol.size == 0 || hit.offset < hit.symbol.size,
            "{pc:#x} past {}",
            hit.symbol.name
        );
    }
}

#[test]
fn function_at_gives_the_offset_and_display_form() {
    let s = fixture();
    let stop = s.symbol("fixture_stop").unwrap().clone();
    let hit = s.function_at(stop.address + 6).unwrap();
    assert_eq!((hit.symbol.name.as_str(), hit.offset), ("fixture_stop", 6));
    assert_eq!(hit.to_string(), "fixture_stop+0x6");
    assert_eq!(
        s.function_at(stop.address).unwrap().to_string(),
        "fixture_stop"
    );
    // Data is not a function, and symbol_at finds it with its offset.
    let root = s.symbol("FIXTURE_ROOT").unwrap().address;
    assert!(s.function_at(root).is_none());
    assert_eq!(
        s.symbol_at(root + 8).unwrap().to_string(),
        "FIXTURE_ROOT+0x8"
    );
}

#[test]
fn text_ranges_are_the_executable_sections() {
    let s = fixture();
    let text = s.text_ranges();
    assert_eq!(text.len(), 1);
    assert_eq!(
        (text[0].name.as_str(), text[0].start),
        (".text", 0x8000_0000)
    );
    let last_end = s
        .symbols()
        .iter()
        .filter(|f| f.kind == SymbolKind::Function)
        .map(|f| f.address + f.size)
        .max();
    assert_eq!(Some(text[0].end), last_end);
    assert!(s.is_text(0x8000_0000));
    assert!(!s.is_text(text[0].end));
    let root = s.symbol("FIXTURE_ROOT").unwrap().address;
    let err = s.frames(root).unwrap_err().to_string();
    assert!(
        err.contains("is not in the code") && err.contains("0x80000000.."),
        "{err}"
    );
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FixtureRoot {
    magic: u64,
    version: u32,
    size: u32,
    words: [u64; 2],
}

#[test]
fn static_data_is_read_by_virtual_address() {
    let s = fixture();
    let root: FixtureRoot = s
        .read_static_pod(s.symbol("FIXTURE_ROOT").unwrap().address)
        .unwrap();
    assert_eq!(&root.magic.to_le_bytes(), b"FIXTURE!");
    assert_eq!((root.version, root.size), (3, 32));
    assert_eq!(root.words, [0x1122_3344_5566_7788, 0x99aa_bbcc_ddee_ff00]);
    let seed = s.symbol("FIXTURE_SEED").unwrap().address;
    assert_eq!(s.read_static(seed, 8).unwrap(), 3u64.to_le_bytes());
    // .bss reads as zeros.
    let bss = s.symbol("FIXTURE_BSS").unwrap();
    assert_eq!(s.read_static(bss.address, 32).unwrap(), vec![0; 32]);
    // Code reads as the instructions: _start begins with `csrr t0, mhartid`.
    assert_eq!(
        s.read_static(0x8000_0000, 4).unwrap(),
        0xf140_22f3u32.to_le_bytes()
    );
}

#[test]
fn reads_outside_the_image_fail_without_allocating() {
    let s = fixture();
    for (addr, len) in [(0u64, 8usize), (0x7fff_fff8, 16), (u64::MAX - 4, 8)] {
        let err = s.read_static(addr, len).unwrap_err();
        assert!(matches!(err, SymbolsError::NotInImage { .. }), "{err}");
    }
    // A length claiming gigabytes is refused before any allocation.
    let err = s.read_static(0x8000_0000, usize::MAX / 2).unwrap_err();
    assert!(err.to_string().contains("not in the loaded image"), "{err}");
}

#[test]
fn a_text_file_is_not_an_elf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "just text\n").unwrap();
    let err = Symbols::load(&path).unwrap_err();
    assert!(matches!(err, SymbolsError::NotElf { .. }));
    let msg = err.to_string();
    assert!(msg.contains("notes.txt is not an ELF file"), "{msg}");
    assert!(
        msg.contains("target/kernel/riscv64gc-unknown-none-elf/release/lockscope-kernel"),
        "{msg}"
    );
}

#[test]
fn an_x86_64_elf_is_refused_with_the_kernel_path() {
    let exe = std::env::current_exe().unwrap();
    let err = Symbols::load(&exe).unwrap_err();
    assert!(matches!(err, SymbolsError::WrongArch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("is an x86_64 ELF; lockscope needs the RISC-V kernel ELF, e.g. target/kernel/riscv64gc-unknown-none-elf/release/lockscope-kernel"),
        "{msg}"
    );
}

#[test]
fn a_stripped_elf_is_refused() {
    let err = Symbols::load(stripped_elf()).unwrap_err();
    assert!(matches!(err, SymbolsError::Stripped { .. }), "{err}");
    assert!(err.to_string().contains("rebuild without strip"), "{err}");
}

#[test]
fn missing_and_directory_paths_are_clear_errors() {
    let err = Symbols::load("/nonexistent/lockscope-kernel").unwrap_err();
    assert!(matches!(err, SymbolsError::Io { .. }));
    assert!(
        err.to_string().contains("/nonexistent/lockscope-kernel"),
        "{err}"
    );
    let err = Symbols::load(fixture_dir()).unwrap_err();
    assert!(matches!(err, SymbolsError::NotAFile { .. }), "{err}");
}

#[test]
fn without_dwarf_symbols_work_but_lines_say_why_not() {
    let s = Symbols::load(nodwarf_elf()).expect("an ELF without DWARF still loads");
    assert!(!s.has_debug_info());
    let stop = s.symbol("fixture_stop").unwrap().clone();
    assert_eq!(s.function_at(stop.address + 4).unwrap().offset, 4);
    let frames = s.frames(stop.address + 4).unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].function.as_deref(), Some("fixture_stop"));
    assert!(frames[0].location.is_none() && !frames[0].inlined);
    let err = s.location(stop.address + 4).unwrap_err();
    assert!(matches!(err, SymbolsError::NoDebugInfo { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("no DWARF debug info") && msg.contains("debug = true"),
        "{msg}"
    );
}

#[test]
fn inlined_frames_are_listed_innermost_first() {
    let s = fixture();
    // run() calls acquire() from the inlined Lock::lock(), itself inlined from step().
    let ra = return_address_of_call(
        &s,
        "symbols_fixture::work::run",
        "symbols_fixture::spinlock::Lock::acquire",
    );
    let frames = s.return_frames(ra).unwrap();
    let names: Vec<_> = frames
        .iter()
        .map(|f| (f.function.clone().unwrap(), f.inlined))
        .collect();
    assert_eq!(
        names,
        [
            ("symbols_fixture::spinlock::Lock::lock".to_owned(), true),
            ("symbols_fixture::work::step".to_owned(), true),
            ("symbols_fixture::work::run".to_owned(), false),
        ]
    );
    // Each frame's line is the call it makes, as the source on disk says.
    let texts: Vec<String> = frames
        .iter()
        .map(|f| {
            let loc = f.location.as_ref().unwrap();
            s.source_context(loc, 0)
                .unwrap()
                .focus_text()
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    assert_eq!(
        texts,
        [
            "self.acquire();",
            "let _guard = COUNTER.lock();",
            "total = total.wrapping_add(step(i));",
        ]
    );
}

#[test]
fn lock_site_skips_the_spinlock_module() {
    let s = fixture();
    let ra = return_address_of_call(
        &s,
        "symbols_fixture::work::run",
        "symbols_fixture::spinlock::Lock::acquire",
    );
    let site = s.lock_site(ra).unwrap();
    assert_eq!(
        site.function.as_deref(),
        Some("symbols_fixture::work::step")
    );
    assert!(Arc::ptr_eq(&site, &s.lock_site(ra).unwrap()), "memoized");
    let loc = site.location.clone().unwrap();
    assert_eq!(
        loc.short,
        "debugger/engine/tests/fixtures/symbols/fixture/src/work.rs"
    );
    assert_eq!(
        loc.to_string(),
        format!("{}:{}", loc.short, loc.line.unwrap())
    );
    // When every frame is lock implementation, the outermost one is the site.
    let mut s = s;
    s.set_site_filter(SiteFilter {
        modules: vec!["spinlock".into(), "work".into()],
        files: vec![],
        function_prefixes: vec![],
    });
    assert_eq!(
        s.lock_site(ra).unwrap().function.as_deref(),
        Some("symbols_fixture::work::run")
    );
}

#[test]
fn paths_are_shown_relative_to_the_repository_and_std() {
    let s = fixture();
    let stop = s.symbol("fixture_stop").unwrap().address;
    let frames = s.frames(stop + 8).unwrap();
    let std_loc = frames[0].location.as_ref().unwrap();
    assert_eq!(frames[0].function.as_deref(), Some("core::hint::black_box"));
    assert_eq!(std_loc.short, "core/src/hint.rs");
    let own = frames[1].location.as_ref().unwrap();
    assert!(own.file.is_absolute() && own.file.is_file(), "{own:?}");
    assert!(own.file.ends_with(&own.short), "{own:?}");
}

#[test]
fn source_context_reads_a_few_lines_when_the_file_exists() {
    let s = fixture();
    let stop = s.symbol("fixture_stop").unwrap().address;
    let loc = s.location(stop + 8).unwrap().unwrap(); // core's hint.rs: not on disk here
    let own = s.frames(stop + 8).unwrap()[1].location.clone().unwrap();
    let ctx = s.source_context(&own, 2).unwrap();
    assert_eq!(ctx.lines.len(), 5);
    assert_eq!(ctx.first_line + 2, own.line.unwrap());
    assert!(
        ctx.focus_text().unwrap().contains("black_box(i)"),
        "{ctx:?}"
    );
    if !loc.file.exists() {
        assert!(s.source_context(&loc, 2).is_none());
    }
    // Near the top of a file the window is cut at line 1.
    let mut top = own.clone();
    top.line = Some(1);
    assert_eq!(s.source_context(&top, 3).unwrap().first_line, 1);
    // Past the end of the file there is nothing to show.
    top.line = Some(100_000);
    assert!(s.source_context(&top, 3).is_none());
}

#[test]
fn lookups_are_memoized() {
    let s = fixture();
    let pc = s.symbol("fixture_stop").unwrap().address + 8;
    let a = s.frames(pc).unwrap();
    let b = s.frames(pc).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn symbols_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Symbols>();
    let s = Arc::new(fixture());
    let text = s.text_ranges()[0].clone();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            let text = text.clone();
            std::thread::spawn(move || {
                (text.start..text.end)
                    .step_by(2)
                    .filter(|&pc| s.frames(pc).is_ok())
                    .count()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap() as u64, (text.end - text.start) / 2);
    }
}

#[test]
fn truncated_elfs_are_errors_not_panics() {
    let bytes = std::fs::read(fixture_elf()).unwrap();
    for len in (0..bytes.len()).step_by(61) {
        // Anything but a panic is fine; most prefixes lack the section headers at the end.
        if let Ok(s) = Symbols::from_bytes("truncated.elf", bytes[..len].to_vec()) {
            let _ = s.frames(0x8000_0000);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Corrupt bytes anywhere in the ELF: loading and every lookup either work or fail cleanly.
    #[test]
    fn corrupted_elfs_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..32)) {
        let mut bytes = std::fs::read(fixture_elf()).unwrap();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        if let Ok(s) = Symbols::from_bytes("corrupt.elf", bytes) {
            let ranges = s.text_ranges().to_vec();
            for t in ranges.iter().take(2) {
                let end = t.end.min(t.start + 0x200);
                for pc in (t.start..end).step_by(2) {
                    let _ = s.frames(pc);
                    let _ = s.lock_site(pc + 2);
                    let _ = s.disassemble_around(pc, 3, 3, &mut s.elf_memory());
                    let _ = s.frame_is_set(pc);
                }
            }
        }
    }
}
