//! The access naming and call-site reading on what the real cross compiler emits at xv6's `-O`,
//! in DWARF 2 and 5: a NULL base register, a member inside a nested struct, gcc folding a NULL
//! it knew about into `lw a0,80(zero)`, nothing that fits, and a constant passed to a call.

use super::*;
use crate::memory::GuestMemory;
use crate::model::AccessKind;
use crate::symbols::types::cc::{build, have_gcc, DWARF_FLAGS};
use crate::symbols::types::Types;
use crate::symbols::{MemoryUse, Symbols};

const BUF_C: &str = r#"
typedef unsigned int uint;
struct sleeplock { uint locked; char *name; int pid; };
struct buf { int valid; int disk; uint dev; uint blockno; struct sleeplock lock;
             uint refcnt; uint timestamp; struct buf *prev; struct buf *next; };
struct buf bufs[8];
void use(struct buf *);
void panic(char *);

uint refcnt_of(struct buf *b) { return b->refcnt; }

char *name_of(struct buf *b) { return b->lock.name; }

/* gcc knows b is NULL after the call and folds it into an absolute address. */
uint folded(void) {
  struct buf *b = 0;
  use(0);
  return b->refcnt;
}

/* The prev/head mix-up: head->prev is NULL, so head->prev->next is an absolute load. */
struct buf *mixed_up(struct buf *head) {
  struct buf *b = 0;
  head->prev = b;
  return head->prev->next;
}

/* Far beyond any struct member. */
uint far(void) {
  uint *p = 0;
  use(0);
  return p[500];
}

void complain(void) { panic("bget: no buffers"); }
"#;

const USE_C: &str =
    "struct buf; void use(struct buf *b) { (void)b; } void panic(char *s) { for (;;) (void)s; }";

fn kernels() -> Vec<(String, Symbols, Types)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for flag in DWARF_FLAGS {
        let elf = build(
            dir.path(),
            &[("buf.c", BUF_C), ("use.c", USE_C)],
            &[flag, "-O"],
            "refcnt_of",
        );
        let syms = Symbols::load(&elf).unwrap();
        let types = Types::load(&syms).unwrap();
        out.push((flag.to_string(), syms, types));
    }
    out
}

/// The load of `func` through a base register (`zero` for a folded NULL).
fn load_in(s: &Symbols, func: &str, zero_base: bool) -> (u64, i64) {
    let start = s.symbol(func).unwrap().address;
    s.function_instructions(start)
        .unwrap()
        .iter()
        .find_map(|i| match i.memory() {
            Some((MemoryUse::Load, base, disp, _))
                if (base == "zero") == zero_base && base != "sp" && base != "s0" =>
            {
                Some((i.address, disp))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no load in {func}"))
}

fn no_regs() -> FrameRegs {
    FrameRegs {
        x: [0; 32],
        known: 1,
        cfa: None,
    }
}

fn trap(pc: u64, stval: u64) -> Trap {
    Trap {
        sepc: pc,
        scause: 13,
        stval,
    }
}

#[test]
fn a_null_base_register_names_the_variable_and_member() {
    if !have_gcc() {
        return;
    }
    for (flag, s, t) in kernels() {
        let (pc, disp) = load_in(&s, "refcnt_of", false);
        let mut mem = s.elf_memory();
        let a = name_access(&s, &t, trap(pc, disp as u64), Some(&no_regs()), &mut mem);
        assert_eq!(a.kind, AccessKind::Load, "{flag}");
        assert_eq!(a.base_value, Some(0), "{flag}");
        let n = a.named.as_ref().unwrap_or_else(|| panic!("{flag}: {a:#?}"));
        assert_eq!(n.variable, "b", "{flag}");
        assert_eq!(n.member.as_deref(), Some("refcnt"), "{flag}");
        assert_eq!(n.pointer_type, "struct buf *", "{flag}");
        assert_eq!(n.pointee.as_deref(), Some("struct buf"), "{flag}");
        assert_eq!(n.member_offset, disp as u64, "{flag}");
        assert!(a.candidates.is_empty(), "{flag}");

        // A wild pointer: the member from stval - base.
        let base = 0x8765_4320u64;
        let a = name_access(
            &s,
            &t,
            trap(pc, base + disp as u64),
            Some(&no_regs()),
            &mut mem,
        );
        assert_eq!(a.base_value, Some(base), "{flag}");
        assert_eq!(
            a.named.as_ref().and_then(|n| n.member.as_deref()),
            Some("refcnt"),
            "{flag}"
        );
    }
}

#[test]
fn a_member_of_a_nested_struct_is_a_path() {
    if !have_gcc() {
        return;
    }
    for (flag, s, t) in kernels() {
        let (pc, disp) = load_in(&s, "name_of", false);
        let mut mem = s.elf_memory();
        let a = name_access(&s, &t, trap(pc, disp as u64), Some(&no_regs()), &mut mem);
        let n = a.named.as_ref().unwrap_or_else(|| panic!("{flag}: {a:#?}"));
        assert_eq!(n.member.as_deref(), Some("lock.name"), "{flag}");
    }
}

#[test]
fn a_folded_null_gives_candidates_not_a_verdict() {
    if !have_gcc() {
        return;
    }
    for (flag, s, t) in kernels() {
        // `lw a0,off(zero)`: b is the NULL gcc folded.
        let (pc, disp) = load_in(&s, "folded", true);
        let mut mem = s.elf_memory();
        let a = name_access(&s, &t, trap(pc, disp as u64), Some(&no_regs()), &mut mem);
        assert_eq!(a.base_register.as_deref(), Some("zero"), "{flag}");
        assert!(
            a.named.is_none(),
            "{flag}: a folded NULL names nothing for sure"
        );
        let b = a.candidates.iter().find(|c| c.variable == "b");
        let b = b.unwrap_or_else(|| panic!("{flag}: {a:#?}"));
        assert_eq!(b.member.as_deref(), Some("refcnt"), "{flag}");
        assert_eq!(b.value, Some(0), "{flag}: DWARF says b is 0 here");
        assert!(
            a.note.as_deref().is_some_and(|n| n.contains("folded")),
            "{flag}"
        );

        // head->prev->next: head is live and has `next` at the offset; b is the NULL.
        let (pc, disp) = load_in(&s, "mixed_up", true);
        let a = name_access(&s, &t, trap(pc, disp as u64), Some(&no_regs()), &mut mem);
        let vars: Vec<(&str, Option<&str>)> = a
            .candidates
            .iter()
            .map(|c| (c.variable.as_str(), c.member.as_deref()))
            .collect();
        assert!(vars.contains(&("head", Some("next"))), "{flag}: {vars:?}");
        assert!(a.named.is_none(), "{flag}");
    }
}

#[test]
fn nothing_fits_still_says_offset_instruction_and_why() {
    if !have_gcc() {
        return;
    }
    for (flag, s, t) in kernels() {
        let (pc, disp) = load_in(&s, "far", true);
        assert!(disp >= 2000, "{flag}: {disp}");
        let mut mem = s.elf_memory();
        let a = name_access(&s, &t, trap(pc, disp as u64), Some(&no_regs()), &mut mem);
        assert!(
            a.named.is_none() && a.candidates.is_empty(),
            "{flag}: {a:#?}"
        );
        assert_eq!(a.offset, disp, "{flag}");
        assert!(
            a.instruction.contains("(zero)"),
            "{flag}: {}",
            a.instruction
        );
        assert!(
            a.note
                .as_deref()
                .is_some_and(|n| n.contains("no pointer variable live here")),
            "{flag}: {:?}",
            a.note
        );
    }
}

#[test]
fn a_constant_argument_is_read_from_the_call_site() {
    if !have_gcc() {
        return;
    }
    for (flag, s, _) in kernels() {
        let start = s.symbol("complain").unwrap().address;
        let target = s.symbol("panic").unwrap().address;
        let code = s.function_instructions(start).unwrap();
        let call = code
            .iter()
            .find(|i| i.is_call() && i.target == Some(target))
            .unwrap_or_else(|| panic!("{flag}: no call of panic"));
        let mut mem = s.elf_memory();
        let a0 = argument_a0(&s, call.address, None, Some(&mut mem)).expect("a0 at the call");
        let mut text = [0u8; 16];
        mem.read(a0, &mut text).unwrap();
        assert_eq!(&text, b"bget: no buffers", "{flag}");
        assert_eq!(
            calls_before(&s, call.end(), &[target])
                .first()
                .map(|c| c.address),
            Some(call.address)
        );
    }
}
