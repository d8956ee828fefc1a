//! The type reader on C programs compiled by the real cross compiler, in DWARF 2 and 5.

use super::cc::{build, have_gcc, DWARF_FLAGS};
use super::*;
use crate::symbols::Symbols;

const SPINLOCK_C: &str = r#"
typedef unsigned int uint;
struct cpu;
struct spinlock { uint locked; char *name; struct cpu *cpu; int nts; int n; };
#define NLOCK 500
static struct spinlock *locks[NLOCK];
void initlock(struct spinlock *lk, char *name) {
  lk->name = name; lk->locked = 0; lk->cpu = 0;
  for (int i = 0; i < NLOCK; i++) if (locks[i] == 0) { locks[i] = lk; break; }
}
"#;

const PROC_C: &str = r#"
typedef unsigned int uint;
struct spinlock { uint locked; char *name; struct cpu *cpu; int nts; int n; };
struct context { unsigned long ra, sp, s[12]; };
struct cpu { struct proc *proc; struct context context; int noff; int intena; };
struct cpu cpus[8];
enum procstate { UNUSED, USED, SLEEPING, RUNNABLE, RUNNING, ZOMBIE };
struct proc { struct spinlock lock; enum procstate state; void *chan; int killed; int xstate;
              int pid; char name[16]; };
struct proc proc[64];
typedef struct { int a; struct spinlock lk; } wrapped_t;
wrapped_t grid[2][3];
struct flags { unsigned a:3; unsigned b:5; int c:4; unsigned long wide:40; } flags = {5, 17, -3, 0x12345678ab};
union u { int i; long l; } un;
const volatile int cv = 7;
void initlock(struct spinlock *lk, char *name);
int counter_fn(int x) { static int counter; counter += x; return counter; }
void entry(void) { initlock(&proc[0].lock, "proc"); counter_fn(1); }
"#;

fn kernels() -> Vec<(String, Symbols, Types)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for flag in DWARF_FLAGS {
        let elf = build(
            dir.path(),
            &[("spinlock.c", SPINLOCK_C), ("proc.c", PROC_C)],
            &[flag, "-O0"],
            "entry",
        );
        let syms = Symbols::load(&elf).unwrap();
        let types = Types::load(&syms).unwrap();
        out.push((flag.to_string(), syms, types));
    }
    out
}

fn global<'a>(t: &'a Types, name: &str) -> &'a Global {
    t.global(name).unwrap_or_else(|| panic!("no global {name}"))
}

#[test]
fn spinlock_layout_and_cross_unit_identity() {
    if !have_gcc() {
        return;
    }
    for (flag, _, t) in kernels() {
        let spin = t.structs_named("spinlock");
        assert_eq!(spin.len(), 1, "{flag}: one struct spinlock across units");
        let s = spin[0];
        assert_eq!(t.size_of(s), Some(32), "{flag}");
        let offs: Vec<(String, u64)> = t
            .members(s)
            .iter()
            .map(|m| (m.name.clone().unwrap(), m.offset))
            .collect();
        assert_eq!(
            offs,
            [
                ("locked", 0),
                ("name", 8),
                ("cpu", 16),
                ("nts", 24),
                ("n", 28)
            ]
            .map(|(n, o)| (n.to_string(), o)),
            "{flag}"
        );
        // spinlock.c only declares `struct cpu`; the declaration resolves to proc.c's.
        let cpu_field = t.member(s, "cpu").unwrap();
        let cpu = t.pointee(cpu_field.ty).unwrap().unwrap();
        assert_eq!(
            t.size_of(cpu),
            Some(128),
            "{flag}: cpu pointer reaches the definition"
        );
        assert_eq!(t.member(cpu, "intena").unwrap().offset, 124, "{flag}");
        let (cpu_elem, dims) = t.array_dims(global(&t, "cpus").ty);
        assert_eq!(dims, [Some(8)]);
        assert!(t.same(cpu_elem, cpu), "{flag}");
        assert_eq!(t.display(cpu_field.ty), "struct cpu *");
        // Every unit's copy maps to the same representative.
        let copies: Vec<TypeId> = t
            .ids()
            .filter(|&id| t.get(id).name.as_deref() == Some("spinlock"))
            .collect();
        assert!(copies.len() >= 2, "{flag}: each unit has its own copy");
        assert!(copies.iter().all(|&c| t.canonical(c) == s), "{flag}");
    }
}

#[test]
fn file_static_and_function_static_globals() {
    if !have_gcc() {
        return;
    }
    for (flag, syms, t) in kernels() {
        let locks = global(&t, "locks");
        assert!(!locks.external, "{flag}: `static` at file scope");
        assert!(locks.unit.ends_with("spinlock.c"), "{flag}: {}", locks.unit);
        assert!(locks.function.is_none());
        let (elem, count) = t.array(locks.ty).unwrap();
        assert_eq!(count, Some(500), "{flag}");
        let target = t.pointee(elem).unwrap().unwrap();
        assert!(t.same(target, t.structs_named("spinlock")[0]), "{flag}");
        assert_eq!(t.size_of(locks.ty), Some(4000));
        // The ELF has it as a LOCAL symbol at the same address.
        let sym = syms.symbol("locks").unwrap();
        assert!(!sym.global);
        assert_eq!(sym.address, locks.address, "{flag}");

        let counter = global(&t, "counter");
        assert_eq!(counter.function.as_deref(), Some("counter_fn"), "{flag}");
        assert!(!counter.external);
        assert_eq!(t.size_of(counter.ty), Some(4));
        assert_eq!(syms.symbol_at(counter.address).unwrap().offset, 0);

        let proc = global(&t, "proc");
        assert!(proc.external);
        let (p, dims) = t.array_dims(proc.ty);
        assert_eq!(dims, [Some(64)]);
        let state = t.member(p, "state").unwrap();
        assert_eq!(t.enumerator(state.ty, 2), Some("SLEEPING"), "{flag}");
        let name = t.member(p, "name").unwrap();
        let (c, n) = t.array(name.ty).unwrap();
        assert!(t.is_char(c));
        assert_eq!(n, Some(16));
    }
}

#[test]
fn nested_arrays_of_typedefd_structs() {
    if !have_gcc() {
        return;
    }
    for (flag, _, t) in kernels() {
        let grid = global(&t, "grid");
        let (elem, dims) = t.array_dims(grid.ty);
        assert_eq!(dims, [Some(2), Some(3)], "{flag}");
        assert!(matches!(t.get(elem).kind, TypeKind::Typedef(_)));
        assert_eq!(t.get(elem).name.as_deref(), Some("wrapped_t"));
        assert!(t.is_struct(elem));
        assert_eq!(t.size_of(elem), Some(40));
        assert_eq!(t.size_of(grid.ty), Some(240), "{flag}");
        let (row, _) = t.array(grid.ty).unwrap();
        assert_eq!(t.size_of(row), Some(120));
        let lk = t.member(elem, "lk").unwrap();
        assert_eq!(lk.offset, 8);
        assert!(t.same(lk.ty, t.structs_named("spinlock")[0]));
    }
}

#[test]
fn bit_fields_enums_unions_and_qualifiers() {
    if !have_gcc() {
        return;
    }
    for (flag, syms, t) in kernels() {
        let flags = global(&t, "flags");
        let size = t.size_of(flags.ty).unwrap() as usize;
        let bytes = syms.read_static(flags.address, size).unwrap();
        let field = |name: &str| {
            let m = t.member(flags.ty, name).unwrap();
            assert!(m.bits.is_some(), "{flag}: {name} is a bit field");
            t.read_int(m.ty, m.bits, &bytes[m.offset as usize..])
        };
        assert_eq!(field("a"), Some(5), "{flag}");
        assert_eq!(field("b"), Some(17), "{flag}");
        assert_eq!(field("c"), Some(-3), "{flag}: signed bit field");
        assert_eq!(field("wide"), Some(0x12345678ab), "{flag}");

        let un = global(&t, "un");
        assert!(matches!(t.get(t.strip(un.ty)).kind, TypeKind::Union(_)));
        assert_eq!(t.size_of(un.ty), Some(8));
        assert!(t.members(un.ty).iter().all(|m| m.offset == 0));

        let cv = global(&t, "cv");
        assert!(matches!(t.get(cv.ty).kind, TypeKind::Qualified(..)));
        assert_eq!(t.integer(cv.ty), Some(true));
        let bytes = syms.read_static(cv.address, 4).unwrap();
        assert_eq!(t.read_int(cv.ty, None, &bytes), Some(7));
        let shown = t.display(cv.ty);
        assert!(
            shown.contains("const") && shown.contains("volatile") && shown.ends_with(" int"),
            "{flag}: {shown}"
        );
    }
}

#[test]
fn without_debug_info_or_with_a_truncated_elf_it_says_so() {
    if !have_gcc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let elf = build(
        dir.path(),
        &[("proc.c", PROC_C), ("spinlock.c", SPINLOCK_C)],
        &["-g0"],
        "entry",
    );
    let syms = Symbols::load(&elf).unwrap();
    let err = Types::load(&syms).unwrap_err();
    assert!(matches!(err, TypesError::NoDebugInfo { .. }), "{err}");
    assert!(err.to_string().contains("rebuild it with -g"), "{err}");

    let elf = build(
        dir.path(),
        &[("proc.c", PROC_C), ("spinlock.c", SPINLOCK_C)],
        &["-gdwarf-5"],
        "entry",
    );
    let bytes = std::fs::read(elf).unwrap();
    for cut in [16, 64, bytes.len() / 3, bytes.len() - 100] {
        assert!(
            Types::from_elf("cut", &bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

/// Flipped bytes in the DWARF sections give errors or odd types, never a panic or a hang.
#[test]
fn corrupted_dwarf_never_panics() {
    if !have_gcc() {
        return;
    }
    use object::{Object, ObjectSection};
    let dir = tempfile::tempdir().unwrap();
    for flag in DWARF_FLAGS {
        let elf = build(
            dir.path(),
            &[("proc.c", PROC_C), ("spinlock.c", SPINLOCK_C)],
            &[flag, "-O2"],
            "entry",
        );
        let bytes = std::fs::read(&elf).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let mut spans = Vec::new();
        for name in [
            ".debug_info",
            ".debug_abbrev",
            ".debug_loc",
            ".debug_loclists",
        ] {
            if let Some((off, len)) = file.section_by_name(name).and_then(|s| s.file_range()) {
                spans.push((off as usize, len as usize));
            }
        }
        let text = file.section_by_name(".text").unwrap().address();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..400 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let (off, len) = spans[i % spans.len()];
            let mut bad = bytes.clone();
            let at = off + (seed as usize) % len;
            bad[at] ^= (seed >> 32) as u8 | 1;
            if let Ok(t) = Types::from_elf("flipped", &bad) {
                for g in t.globals() {
                    let _ = t.display(g.ty);
                    let _ = t.size_of(g.ty);
                    let _ = t.array_dims(g.ty);
                }
                for pc in [text, text + 8, text + 40] {
                    if let Ok(scope) = t.scope_at(pc) {
                        for f in &scope.frames {
                            for v in &f.variables {
                                let _ = t.evaluate(
                                    &v.location,
                                    scope.frame_base.as_ref(),
                                    &mut Regs::default(),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

const SCOPE_C: &str = r#"
struct spinlock { unsigned locked; char *name; void *cpu; int nts; int n; };
__attribute__((noinline)) void acquire(struct spinlock *lk) { __atomic_fetch_add(&lk->n, 1, 0); }
__attribute__((noinline)) int work(int i) { return i * 3; }
__attribute__((noinline)) int take(struct spinlock *lk, int k) {
  int total = 0;
  for (int i = 0; i < k; i++) { acquire(lk); total += work(i); }
  return total;
}
struct spinlock l;
int entry(void) { return take(&l, 3); }
"#;

#[derive(Default)]
struct Regs {
    x: [u64; 32],
    cfa: u64,
}

impl FrameContext for Regs {
    fn register(&mut self, r: u16) -> Option<u64> {
        self.x.get(r as usize).copied()
    }
    fn cfa(&mut self) -> Option<u64> {
        Some(self.cfa)
    }
    fn read_memory(&mut self, _addr: u64, _size: u8) -> Option<u64> {
        None
    }
}

/// The address of the first call to `callee` inside `func` (a `jal`/`jalr` through ra).
fn call_site(syms: &Symbols, func: &str, callee: &str) -> u64 {
    let f = syms.symbol(func).unwrap().clone();
    let target = syms.symbol(callee).unwrap().address;
    let dis = syms
        .disassemble_around(f.address, 0, 64, &mut syms.elf_memory())
        .unwrap();
    dis.instructions
        .iter()
        .find(|i| i.target == Some(target))
        .unwrap_or_else(|| panic!("no call to {callee} in {func}"))
        .address
}

#[test]
fn parameters_in_location_lists_at_two_pcs() {
    if !have_gcc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for flag in DWARF_FLAGS {
        let elf = build(dir.path(), &[("scope.c", SCOPE_C)], &[flag, "-O2"], "entry");
        let syms = Symbols::load(&elf).unwrap();
        let t = Types::load(&syms).unwrap();
        let take = syms.symbol("take").unwrap().address;

        // At the entry, `lk` is in a0 (x10) and `k` in a1.
        let scope = t.scope_at(take).unwrap();
        assert_eq!(scope.frames.len(), 1, "{flag}: {scope:?}");
        assert_eq!(scope.frames[0].function.as_deref(), Some("take"));
        let lk = scope.variable("lk").expect("lk in scope");
        assert!(lk.parameter);
        let spin = t.structs_named("spinlock")[0];
        assert!(t.same(t.pointee(lk.ty.unwrap()).unwrap().unwrap(), spin));
        let mut regs = Regs::default();
        assert_eq!(
            t.evaluate(&lk.location, scope.frame_base.as_ref(), &mut regs)
                .unwrap(),
            Place::Register(10),
            "{flag}"
        );

        // At the call to acquire inside the loop, the list says lk moved to a saved register.
        let pc = call_site(&syms, "take", "acquire");
        let scope = t.scope_at(pc).unwrap();
        let lk = scope.variable("lk").expect("lk in scope in the loop");
        assert!(
            matches!(lk.location, VarLocation::Expr { .. }),
            "{flag}: {lk:?}"
        );
        let place = t
            .evaluate(&lk.location, scope.frame_base.as_ref(), &mut regs)
            .unwrap();
        let saved = [8u16, 9, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27];
        assert!(
            matches!(place, Place::Register(r) if saved.contains(&r)),
            "{flag}: lk at the call is in a callee-saved register, got {place:?}"
        );
        assert!(scope.variable("i").is_some() || scope.variable("total").is_some());
        // Outside any function there is no scope.
        assert!(t.scope_at(0x10).unwrap().frames.is_empty());
    }
}

#[test]
fn frame_base_locals_at_o0() {
    if !have_gcc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for flag in DWARF_FLAGS {
        let elf = build(dir.path(), &[("scope.c", SCOPE_C)], &[flag, "-O0"], "entry");
        let syms = Symbols::load(&elf).unwrap();
        let t = Types::load(&syms).unwrap();
        let pc = call_site(&syms, "take", "work");
        let scope = t.scope_at(pc).unwrap();
        let total = scope.variable("total").expect("total");
        assert!(!total.parameter);
        let mut regs = Regs {
            cfa: 0x8000_1000,
            ..Default::default()
        };
        regs.x[8] = 0x8000_1000;
        let place = t
            .evaluate(&total.location, scope.frame_base.as_ref(), &mut regs)
            .unwrap();
        match place {
            Place::Address(a) => assert!(
                (0x8000_0f00..0x8000_1000).contains(&a),
                "{flag}: a local lives below the CFA, got {a:#x}"
            ),
            other => panic!("{flag}: total at -O0 is in memory, got {other:?}"),
        }
        // `i` is in a lexical block nested in the function; it is listed first.
        let names: Vec<&str> = scope.frames[0]
            .variables
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names.first(), Some(&"i"), "{flag}: {names:?}");
    }
}

/// The types are shared between the session's threads.
#[test]
fn types_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Types>();
    shared::<crate::sources::xv6::Xv6Source>();
}
