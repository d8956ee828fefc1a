//! Cross-checks of symbolization and disassembly against real gdb-multiarch on the fixture ELF:
//! every instruction's function, offset and line, and every branch target.

#[path = "fixtures/symbols/support.rs"]
mod support;

use lockscope_engine::symbols::{demangle, Symbols};
use support::*;

/// Every instruction of the fixture's text, decoded in one run from its start.
fn all_instructions(s: &Symbols) -> Vec<lockscope_engine::symbols::Instruction> {
    let text = s.text_ranges()[0].clone();
    let dis = s
        .disassemble_around(text.start, 0, 4096, &mut s.elf_memory())
        .unwrap();
    let last = dis.instructions.last().unwrap();
    assert_eq!(last.address + last.bytes.len() as u64, text.end);
    dis.instructions
}

/// `Line 28 of "src/spinlock.rs" starts at ...` -> (28, "spinlock.rs").
fn parse_info_line(line: &str) -> Option<(u32, String)> {
    let rest = line.strip_prefix("Line ")?;
    let (n, rest) = rest.split_once(" of \"")?;
    let (file, _) = rest.split_once('"')?;
    let base = file.rsplit('/').next().unwrap().to_owned();
    Some((n.parse().ok()?, base))
}

/// `symbols_fixture::work::run::h2d20... + 37 in section .text` -> ("symbols_fixture::work::run", 37).
fn parse_info_symbol(line: &str) -> Option<(String, u64)> {
    let (sym, _) = line.split_once(" in section ")?;
    Some(match sym.split_once(" + ") {
        Some((name, off)) => (plain_name(name), off.parse().ok()?),
        None => (plain_name(sym), 0),
    })
}

#[test]
fn functions_offsets_and_lines_match_gdb() {
    let elf = fixture_elf();
    let s = Symbols::load(&elf).unwrap();
    let insns = all_instructions(&s);
    assert!(insns.len() > 80, "{} instructions", insns.len());
    // Instruction addresses, and the `ra - 1` probes of every call's return address.
    let mut probes: Vec<u64> = insns.iter().map(|i| i.address).collect();
    probes.extend(
        insns
            .iter()
            .filter(|i| i.mnemonic == "jalr" && i.operands.starts_with("ra,"))
            .map(|i| i.address + i.bytes.len() as u64 - 1),
    );
    let mut cmds = Vec::new();
    for p in &probes {
        cmds.push(format!("echo PROBE {p:#x}\\n"));
        cmds.push(format!("info line *{p:#x}"));
        cmds.push(format!("info symbol {p:#x}"));
    }
    let out = gdb_batch(&elf, &cmds);
    let mut compared_lines = 0;
    for block in out.split("PROBE ").skip(1) {
        let mut lines = block.lines();
        let pc = parse_hex(lines.next().unwrap());
        let gdb_line = lines.next().unwrap();
        let gdb_sym = lines.next().unwrap();

        let (name, off) = parse_info_symbol(gdb_sym).unwrap_or_else(|| panic!("{gdb_sym}"));
        let hit = s.function_at(pc).unwrap();
        assert_eq!(
            (plain_name(&hit.symbol.name), hit.offset),
            (name, off),
            "function at {pc:#x}"
        );

        let ours = s.location(pc).unwrap();
        match (parse_info_line(gdb_line), ours) {
            (Some((line, file)), Some(loc)) if loc.line.is_some() => {
                let base = loc.file.file_name().unwrap().to_string_lossy().into_owned();
                assert_eq!((loc.line.unwrap(), base), (line, file), "line at {pc:#x}");
                compared_lines += 1;
            }
            // Line 0 rows: gdb extends the previous row over them; we report no line.
            (_, Some(loc)) if loc.line.is_none() => {}
            (None, None) => assert!(gdb_line.starts_with("No line number"), "{gdb_line}"),
            (g, o) => panic!("at {pc:#x}: gdb {g:?} ({gdb_line}), ours {o:?}"),
        }
    }
    assert!(compared_lines > 80, "only {compared_lines} lines compared");
}

#[test]
fn disassembly_matches_gdb_boundaries_and_branch_targets() {
    let elf = fixture_elf();
    let s = Symbols::load(&elf).unwrap();
    let insns = all_instructions(&s);
    let out = gdb_batch(
        &elf,
        &[format!("x/{}i {:#x}", insns.len(), insns[0].address)],
    );
    let gdb: Vec<&str> = out.lines().filter(|l| l.contains(":\t")).collect();
    assert_eq!(gdb.len(), insns.len(), "{out}");
    let mut branches = 0;
    for (ours, theirs) in insns.iter().zip(&gdb) {
        let addr = parse_hex(
            theirs
                .trim_start_matches(['=', '>', ' '])
                .split(' ')
                .next()
                .unwrap(),
        );
        assert_eq!(ours.address, addr, "{theirs}");
        let text = theirs.split(":\t").nth(1).unwrap();
        let mnemonic = text.split('\t').next().unwrap();
        let is_branch = mnemonic.starts_with('b') || mnemonic == "j" || mnemonic == "jal";
        if !is_branch {
            continue;
        }
        // gdb: `bnez\ts1,0x8000003e <_ZN...+30>`.
        let args = text.split('\t').nth(1).unwrap();
        let target = args
            .split([',', ' '])
            .find(|a| a.starts_with("0x"))
            .map(parse_hex)
            .unwrap();
        assert_eq!(ours.target, Some(target), "{ours} vs {theirs}");
        assert!(ours.operands.contains(&format!("{target:#x} <")), "{ours}");
        let gdb_sym = args.split('<').nth(1).unwrap().trim_end_matches('>');
        let (gdb_name, gdb_off) = match gdb_sym.split_once('+') {
            Some((n, o)) => (n, o.parse::<u64>().unwrap()),
            None => (gdb_sym, 0),
        };
        // gdb names a no_mangle Rust function by its DWARF path (`symbols_fixture::fixture_main`),
        // the ELF by its symbol (`fixture_main`): compare the last path segment and the offset.
        let ours_sym = ours.target_symbol.as_deref().unwrap();
        let (ours_name, ours_off) = match ours_sym.split_once('+') {
            Some((n, o)) => (n, parse_hex(o)),
            None => (ours_sym, 0),
        };
        let last = |n: &str| plain_name(n).rsplit("::").next().unwrap().to_owned();
        assert_eq!(
            (last(ours_name), ours_off),
            (last(&demangle(gdb_name)), gdb_off),
            "{ours} vs {theirs}"
        );
        branches += 1;
    }
    assert!(branches >= 5, "only {branches} branches compared");
}
