//! Disassembly around a pc: RV64 + compressed, absolute targets with symbols, decoding from the
//! function start, and the bytes coming from guest memory.

#[path = "fixtures/symbols/support.rs"]
mod support;

use lockscope_engine::memory::{GuestMemory, MemoryError};
use lockscope_engine::symbols::{Symbols, SymbolsError};
use support::*;

fn fixture() -> Symbols {
    Symbols::load(fixture_elf()).unwrap()
}

#[test]
fn compressed_branches_show_absolute_targets_and_symbols() {
    let s = fixture();
    let run = s.symbol("symbols_fixture::work::run").unwrap().clone();
    let dis = s
        .disassemble_around(run.address, 0, 64, &mut s.elf_memory())
        .unwrap();
    let body: Vec<_> = dis
        .instructions
        .iter()
        .filter(|i| i.address < run.address + run.size)
        .collect();
    // The whole function decodes (capstone stops at the first compressed instruction unless
    // told about the C extension) and ends with its return.
    assert_eq!(body.last().unwrap().mnemonic, "c.jr");
    let branch = body
        .iter()
        .find(|i| i.mnemonic == "c.bnez")
        .expect("run's loop ends in a compressed branch");
    assert_eq!(branch.bytes.len(), 2);
    let target = branch.target.unwrap();
    assert!(run.address <= target && target < branch.address, "{branch}");
    assert_eq!(
        branch.operands,
        format!(
            "s1, {target:#x} <symbols_fixture::work::run+{:#x}>",
            target - run.address
        )
    );
    assert_eq!(
        branch.target_symbol.as_deref(),
        Some(format!("symbols_fixture::work::run+{:#x}", target - run.address).as_str())
    );
}

#[test]
fn auipc_jalr_calls_name_the_callee() {
    let s = fixture();
    let deep = s.symbol("symbols_fixture::work::deep").unwrap().clone();
    let stop = s.symbol("fixture_stop").unwrap().address;
    let dis = s
        .disassemble_around(deep.address, 0, 32, &mut s.elf_memory())
        .unwrap();
    let call = dis
        .instructions
        .iter()
        .find(|i| i.mnemonic == "jalr")
        .unwrap();
    assert_eq!(call.target, Some(stop));
    assert_eq!(call.target_symbol.as_deref(), Some("fixture_stop"));
    assert!(
        call.to_string()
            .ends_with(&format!("# {stop:#x} <fixture_stop>")),
        "{call}"
    );
}

#[test]
fn decoding_starts_at_the_function_start() {
    let s = fixture();
    let stop = s.symbol("fixture_stop").unwrap().clone();
    // Four compressed prologue instructions precede fixture_stop+8.
    let pc = stop.address + 8;
    let dis = s.disassemble_around(pc, 4, 2, &mut s.elf_memory()).unwrap();
    assert!(dis.synced && dis.pc_on_boundary);
    assert_eq!(dis.function.as_deref(), Some("fixture_stop+0x8"));
    let addrs: Vec<u64> = dis.instructions.iter().map(|i| i.address).collect();
    let b = stop.address;
    assert_eq!(addrs[..5], [b, b + 2, b + 4, b + 6, b + 8]);
    assert_eq!(dis.instructions.len(), 7);
    let at: Vec<_> = dis.instructions.iter().filter(|i| i.at_pc).collect();
    assert_eq!((at.len(), at[0].address), (1, pc));
    assert_eq!(dis.instructions[0].mnemonic, "c.addi");
    assert_eq!(dis.instructions[3].mnemonic, "c.addi4spn");
}

#[test]
fn a_pc_inside_an_instruction_marks_the_one_containing_it() {
    let s = fixture();
    let stop = s.symbol("fixture_stop").unwrap().clone();
    let dis = s
        .disassemble_around(stop.address, 0, 16, &mut s.elf_memory())
        .unwrap();
    let wide = dis
        .instructions
        .iter()
        .find(|i| i.bytes.len() == 4)
        .unwrap()
        .clone();
    let dis = s
        .disassemble_around(wide.address + 2, 1, 1, &mut s.elf_memory())
        .unwrap();
    assert!(!dis.pc_on_boundary);
    let at = dis.instructions.iter().find(|i| i.at_pc).unwrap();
    assert_eq!(at.address, wide.address);
}

#[test]
fn near_the_start_of_a_function_fewer_instructions_come_before() {
    let s = fixture();
    let stop = s.symbol("fixture_stop").unwrap().address;
    let dis = s
        .disassemble_around(stop + 2, 10, 0, &mut s.elf_memory())
        .unwrap();
    assert_eq!(dis.instructions.len(), 2);
    assert!(dis.instructions[1].at_pc);
}

/// Code read from "guest memory": the ELF's text at its address, with one instruction patched
/// the way a debugger's software breakpoint would (c.ebreak).
struct PatchedText {
    base: u64,
    bytes: Vec<u8>,
}

impl GuestMemory for PatchedText {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let off = addr.checked_sub(self.base).map(|o| o as usize);
        match off {
            Some(o) if o + buf.len() <= self.bytes.len() => {
                buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
                Ok(())
            }
            _ => Err(MemoryError::OutOfRange {
                addr,
                end: addr + buf.len() as u64,
                base: self.base,
                limit: self.base + self.bytes.len() as u64,
            }),
        }
    }
}

#[test]
fn bytes_come_from_the_memory_given() {
    let s = fixture();
    let text = s.text_ranges()[0].clone();
    let mut bytes = s
        .read_static(text.start, (text.end - text.start) as usize)
        .unwrap();
    let stop = s.symbol("fixture_stop").unwrap().address;
    let off = (stop + 8 - text.start) as usize;
    bytes[off..off + 2].copy_from_slice(&0x9002u16.to_le_bytes()); // c.ebreak
    let mut mem = PatchedText {
        base: text.start,
        bytes,
    };
    let dis = s.disassemble_around(stop + 8, 1, 1, &mut mem).unwrap();
    let at = dis.instructions.iter().find(|i| i.at_pc).unwrap();
    assert_eq!(at.mnemonic, "c.ebreak");

    // Memory that cannot be read is an error, not a panic or a guess.
    let mut short = PatchedText {
        base: text.start,
        bytes: vec![0x01, 0x00],
    };
    let err = s
        .disassemble_around(stop + 8, 2, 2, &mut short)
        .unwrap_err();
    assert!(matches!(err, SymbolsError::Memory(_)), "{err}");
}

#[test]
fn undecodable_bytes_become_data_and_decoding_goes_on() {
    let s = fixture();
    let text = s.text_ranges()[0].clone();
    let stop = s.symbol("fixture_stop").unwrap().address;
    let mut bytes = s
        .read_static(text.start, (text.end - text.start) as usize)
        .unwrap();
    let off = (stop + 2 - text.start) as usize;
    bytes[off..off + 2].copy_from_slice(&[0xff, 0xff]); // a reserved >64-bit encoding
    let mut mem = PatchedText {
        base: text.start,
        bytes,
    };
    let dis = s.disassemble_around(stop + 4, 2, 1, &mut mem).unwrap();
    let names: Vec<&str> = dis
        .instructions
        .iter()
        .map(|i| i.mnemonic.as_str())
        .collect();
    assert_eq!(names[1], ".2byte", "{names:?}");
    assert_eq!(dis.instructions[1].operands, "0xffff");
    assert!(dis.instructions[2].at_pc && dis.instructions[2].mnemonic == "c.sdsp");
}

#[test]
fn a_pc_outside_the_text_decodes_from_the_pc() {
    let s = fixture();
    // Bytes at a non-text address (as for code the ELF does not know): no symbol, not synced.
    let mut mem = PatchedText {
        base: 0x8010_0000,
        bytes: [0x01, 0x00, 0x01, 0x00, 0x82, 0x80].to_vec(), // c.nop; c.nop; c.jr ra
    };
    let dis = s.disassemble_around(0x8010_0002, 3, 3, &mut mem).unwrap();
    assert!(!dis.synced);
    assert_eq!(dis.function, None);
    assert_eq!(dis.instructions[0].address, 0x8010_0002);
    assert!(dis.instructions[0].at_pc);
}
