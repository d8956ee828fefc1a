//! What the plugin watches, computed from the kernel ELF: the lock functions' ranges, their
//! test-and-sets and the instruction each one reaches only on success, the releasing stores,
//! and every call instruction that enters an acquire function. Also what it cannot see:
//! test-and-sets outside the lock functions (inlined acquires, raw `__sync_lock_test_and_set`),
//! acquire functions whose address is taken (indirect calls) or that are tail-called.

use capstone::arch::riscv::{ArchExtraMode, ArchMode, RiscVOperand};
use capstone::arch::{BuildsCapstone, BuildsCapstoneExtraMode};
use capstone::Capstone;
use lockscope_plugin_abi::{self as abi, Watch, WatchKind};

use super::PluginError;
use crate::symbols::{SymbolKind, Symbols};

/// The lock functions of a kernel, by (demangled) symbol name. A name that is not in the ELF is
/// skipped; `acquire` and `release` must each resolve to at least one function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockFunctions {
    /// Functions that contain the test-and-set loop.
    pub acquire: Vec<String>,
    /// Functions whose callers are the acquisition's call site (`file:line`); calls between
    /// these and `acquire` are not sites. Empty: the `acquire` functions.
    pub entries: Vec<String>,
    /// Functions that release the lock word.
    pub release: Vec<String>,
    pub sleep_acquire: Vec<String>,
    pub sleep_release: Vec<String>,
    /// Reader-writer locks (the 2025 lab): their test-and-sets and releases, flagged.
    pub read_acquire: Vec<String>,
    pub read_release: Vec<String>,
    pub write_acquire: Vec<String>,
    pub write_release: Vec<String>,
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl LockFunctions {
    /// xv6-riscv and its labs: `acquire`/`release`, sleeplocks, the 2025 lab's rwlock.
    pub fn xv6() -> Self {
        Self {
            acquire: names(&["acquire"]),
            entries: Vec::new(),
            release: names(&["release"]),
            sleep_acquire: names(&["acquiresleep"]),
            sleep_release: names(&["releasesleep"]),
            read_acquire: names(&["read_acquire"]),
            read_release: names(&["read_release"]),
            write_acquire: names(&["write_acquire"]),
            write_release: names(&["write_release"]),
        }
    }

    /// lockscope's own kernel: every acquisition goes through `RawSpinLock::acquire_at`, entered
    /// from `acquire`, `SpinLock::lock` and `SleepLock::acquire` (whose callers are the sites).
    pub fn lockscope_kernel() -> Self {
        let p = "lockscope_kernel::spinlock::";
        Self {
            acquire: vec![format!("{p}RawSpinLock::acquire_at")],
            entries: vec![
                format!("{p}RawSpinLock::acquire_at"),
                format!("{p}RawSpinLock::acquire"),
                format!("{p}SpinLock<T>::lock"),
                format!("{p}SleepLock::acquire"),
            ],
            release: vec![format!("{p}RawSpinLock::release_at")],
            ..Default::default()
        }
    }
}

/// What could not be seen, found while planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blind {
    /// A test-and-set outside the lock functions: an inlined acquire, a trylock or a raw
    /// `__sync_lock_test_and_set`. Its acquisitions are not seen; a `release()` of such a lock
    /// shows as an unseen release, never as a release.
    TasOutside { pc: u64, function: String },
    /// An acquire function's address is taken here: calls through it have no call site.
    AddressTaken {
        pc: u64,
        function: String,
        target: String,
    },
    /// A tail call (`j acquire`): the acquisition's site is unknown.
    TailCall {
        pc: u64,
        function: String,
        target: String,
    },
    /// An acquire function test-and-set whose success instruction could not be found: its
    /// acquisition is taken at the function's return instead (still exact, a few instructions
    /// later).
    NoSuccessPc { pc: u64, function: String },
}

impl std::fmt::Display for Blind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blind::TasOutside { pc, function } => write!(
                f,
                "test-and-set outside the lock functions at {pc:#x} in {function}: an inlined acquire, a trylock or a raw __sync_lock_test_and_set; its acquisitions are not seen"
            ),
            Blind::AddressTaken { pc, function, target } => write!(
                f,
                "the address of {target} is taken at {pc:#x} in {function}: acquisitions through that pointer have no call site"
            ),
            Blind::TailCall { pc, function, target } => write!(
                f,
                "tail call to {target} at {pc:#x} in {function}: those acquisitions have no call site"
            ),
            Blind::NoSuccessPc { pc, function } => write!(
                f,
                "no success branch found after the test-and-set at {pc:#x} in {function}; acquisition taken at its return"
            ),
        }
    }
}

/// The watch table for the plugin file, and what it cannot see.
#[derive(Clone, Debug, Default)]
pub struct WatchPlan {
    /// Sorted by pc.
    pub watch: Vec<Watch>,
    pub blind: Vec<Blind>,
    /// Each lock function found: (name, start, end).
    pub functions: Vec<(String, u64, u64)>,
    /// Call sites into acquire functions.
    pub call_sites: usize,
}

impl WatchPlan {
    pub fn count(&self, kind: WatchKind) -> usize {
        self.watch.iter().filter(|w| w.kind == kind as u32).count()
    }
}

/// One decoded instruction.
#[derive(Clone, Debug)]
struct Insn {
    addr: u64,
    len: u64,
    mnemonic: String,
    ops: Vec<Op>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Reg(String),
    Imm(i64),
    Mem { base: String, disp: i64 },
}

impl Insn {
    fn reg(&self, i: usize) -> Option<&str> {
        match self.ops.get(i) {
            Some(Op::Reg(r)) => Some(r),
            _ => None,
        }
    }
    fn next(&self) -> u64 {
        self.addr + self.len
    }
    fn base(&self) -> Option<&str> {
        self.ops.iter().find_map(|o| match o {
            Op::Mem { base, .. } => Some(base.as_str()),
            _ => None,
        })
    }
    fn is_tas(&self) -> bool {
        let m = self.mnemonic.as_str();
        [
            "amoswap.w",
            "amoswap.d",
            "amoor.w",
            "amoor.d",
            "sc.w",
            "sc.d",
        ]
        .iter()
        .any(|p| m.starts_with(p))
            && self.reg(0).is_some_and(|r| r != "zero")
    }
    /// A test-and-set as compilers emit it for a lock outside the lock functions:
    /// `__sync_lock_test_and_set` is `amoswap.w.aq`, Rust's `swap(true, Acquire)` `amoor.w.aq`.
    /// (`sc` also appears in compare-and-swap loops of counters, so it is not reported.)
    fn is_raw_tas(&self) -> bool {
        let m = self.mnemonic.as_str();
        (m.starts_with("amoswap.") || m.starts_with("amoor.")) && m.contains(".aq") && self.is_tas()
    }
    fn is_store(&self) -> bool {
        matches!(
            self.mnemonic.as_str(),
            "sb" | "sh" | "sw" | "sd" | "c.sw" | "c.sd" | "c.swsp" | "c.sdsp"
        )
    }
    /// A store to the stack (a prologue's register save).
    fn is_stack_store(&self) -> bool {
        matches!(self.mnemonic.as_str(), "c.swsp" | "c.sdsp") || self.base() == Some("sp")
    }
    fn is_return(&self) -> bool {
        match self.mnemonic.as_str() {
            "ret" | "c.jr" => self.mnemonic == "ret" || self.reg(0) == Some("ra"),
            "jalr" => {
                self.reg(0) == Some("zero") && self.ops.iter().any(|o| o == &Op::Reg("ra".into()))
            }
            _ => false,
        }
    }
    /// A conditional branch on `reg` against zero: Some(taken_means_zero).
    fn branch_on_zero(&self, reg: &str) -> Option<(bool, u64)> {
        let target = |imm: i64| self.addr.wrapping_add_signed(imm);
        match (self.mnemonic.as_str(), self.ops.as_slice()) {
            ("beqz" | "c.beqz", [Op::Reg(r), Op::Imm(i)]) if r == reg => Some((true, target(*i))),
            ("bnez" | "c.bnez", [Op::Reg(r), Op::Imm(i)]) if r == reg => Some((false, target(*i))),
            ("beq", [Op::Reg(a), Op::Reg(b), Op::Imm(i)])
                if (a == reg && b == "zero") || (b == reg && a == "zero") =>
            {
                Some((true, target(*i)))
            }
            ("bne", [Op::Reg(a), Op::Reg(b), Op::Imm(i)])
                if (a == reg && b == "zero") || (b == reg && a == "zero") =>
            {
                Some((false, target(*i)))
            }
            _ => None,
        }
    }
    fn is_control(&self) -> bool {
        let m = self.mnemonic.as_str();
        m.starts_with('b')
            || m.starts_with("c.b")
            || m.starts_with('j')
            || m.starts_with("c.j")
            || m == "ret"
    }
    /// The static target of a direct jump or call: (target, links to ra).
    fn jump(&self) -> Option<(u64, bool)> {
        let t = |i: i64| self.addr.wrapping_add_signed(i);
        match (self.mnemonic.as_str(), self.ops.as_slice()) {
            ("jal", [Op::Imm(i)]) => Some((t(*i), true)),
            ("jal", [Op::Reg(rd), Op::Imm(i)]) => Some((t(*i), rd == "ra")),
            ("j" | "c.j", [Op::Imm(i)]) => Some((t(*i), false)),
            _ => None,
        }
    }
}

fn capstone() -> Result<Capstone, PluginError> {
    Capstone::new()
        .riscv()
        .mode(ArchMode::RiscV64)
        .extra_mode([ArchExtraMode::RiscVC].into_iter())
        .detail(true)
        .build()
        .map_err(|e| PluginError::Disassembler(e.to_string()))
}

/// Decodes `bytes` at `addr`; undecodable halfwords are skipped.
fn decode(cs: &Capstone, bytes: &[u8], addr: u64) -> Result<Vec<Insn>, PluginError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < bytes.len() {
        let insns = cs
            .disasm_all(&bytes[off..], addr + off as u64)
            .map_err(|e| PluginError::Disassembler(e.to_string()))?;
        let mut advanced = 0;
        for i in insns.iter() {
            let detail = cs
                .insn_detail(i)
                .map_err(|e| PluginError::Disassembler(e.to_string()))?;
            let reg = |r| cs.reg_name(r).unwrap_or_else(|| "?".into());
            let ops = detail
                .arch_detail()
                .operands()
                .into_iter()
                .filter_map(|op| match op {
                    capstone::arch::ArchOperand::RiscVOperand(op) => Some(op),
                    #[allow(unreachable_patterns)]
                    _ => None,
                })
                .filter_map(|op| match op {
                    RiscVOperand::Reg(r) => Some(Op::Reg(reg(r))),
                    RiscVOperand::Imm(v) => Some(Op::Imm(v)),
                    RiscVOperand::Mem(m) => Some(Op::Mem {
                        base: reg(m.base()),
                        disp: m.disp(),
                    }),
                    RiscVOperand::Invalid => None,
                })
                .collect();
            out.push(Insn {
                addr: i.address(),
                len: i.len() as u64,
                mnemonic: i.mnemonic().unwrap_or("?").to_owned(),
                ops,
            });
            advanced += i.len();
        }
        off += advanced + if off + advanced < bytes.len() { 2 } else { 0 };
    }
    Ok(out)
}

/// The value an `auipc rd, imm` puts in `rd`.
fn auipc(i: &Insn) -> Option<(&str, u64)> {
    if i.mnemonic != "auipc" {
        return None;
    }
    let rd = i.reg(0)?;
    let Some(Op::Imm(imm)) = i.ops.get(1) else {
        return None;
    };
    let imm20 = ((imm & 0xfffff) << 44) >> 44;
    Some((rd, i.addr.wrapping_add_signed(imm20 << 12)))
}

/// The instruction reached only when the test-and-set at `insns[at]` succeeded: follow its
/// result register through copies and masks to the first branch on it.
fn success_pc(insns: &[Insn], at: usize) -> Option<u64> {
    let mut regs: Vec<String> = vec![insns[at].reg(0)?.to_owned()];
    for i in insns.iter().skip(at + 1).take(12) {
        if let Some((zero_taken, target)) = regs.iter().find_map(|r| i.branch_on_zero(r)) {
            // amoswap/amoor: old value 0 means acquired; sc: 0 means the store happened.
            return Some(if zero_taken { target } else { i.next() });
        }
        if i.is_control() {
            return None;
        }
        let Some(rd) = i.reg(0) else { continue };
        if i.is_store() || i.mnemonic.starts_with("fence") {
            continue;
        }
        // A copy of a tracked value keeps it tracked (`sext.w a5,a5`, `zext.b a0,a2`,
        // `andi a0,a0,0xff`); compressed forms (`c.andi a0,0xff`) read their destination.
        let copy = matches!(
            i.mnemonic.as_str(),
            "zext.b"
                | "zext.h"
                | "zext.w"
                | "sext.w"
                | "sext.b"
                | "andi"
                | "c.andi"
                | "mv"
                | "c.mv"
                | "addiw"
                | "c.addiw"
        );
        let src = if i.mnemonic.starts_with("c.") && i.mnemonic != "c.mv" {
            Some(rd)
        } else {
            i.reg(1)
        };
        let tracked = |r: &str| regs.iter().any(|t| t == r);
        if copy && src.is_some_and(tracked) {
            if !tracked(rd) {
                regs.push(rd.to_owned());
            }
        } else {
            // Anything else that writes a tracked register ends its tracking.
            regs.retain(|r| r != rd);
            if regs.is_empty() {
                return None;
            }
        }
    }
    None
}

/// Where a function leaves: its returns, and its tail calls (`j pop_off` ending `read_release`
/// is a return as far as the caller is concerned).
fn exits<'f>(f: &'f Func<'_>) -> impl Iterator<Item = &'f Insn> {
    let end = f.insns.last().map_or(f.start, |l| l.next());
    f.insns.iter().filter(move |i| {
        i.is_return()
            || matches!(i.jump(), Some((t, false)) if t < f.start || t >= end)
            || (matches!(i.mnemonic.as_str(), "jr" | "c.jr") && i.reg(0) != Some("ra"))
    })
}

struct Func<'a> {
    name: &'a str,
    start: u64,
    insns: Vec<Insn>,
}

/// Computes the watch table for `symbols` with these lock functions.
pub fn plan(symbols: &Symbols, funcs: &LockFunctions) -> Result<WatchPlan, PluginError> {
    let cs = capstone()?;
    // Every function of the kernel, decoded once.
    let mut all: Vec<Func<'_>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for s in symbols.symbols() {
        if s.kind != SymbolKind::Function
            || s.size == 0
            || s.size > 1 << 20
            || !seen.insert(s.address)
        {
            continue;
        }
        let Ok(bytes) = symbols.read_static(s.address, s.size as usize) else {
            continue;
        };
        all.push(Func {
            name: &s.name,
            start: s.address,
            insns: decode(&cs, &bytes, s.address)?,
        });
    }
    let of = |list: &[String]| -> Vec<usize> {
        all.iter()
            .enumerate()
            .filter(|(_, f)| list.iter().any(|n| n == f.name))
            .map(|(i, _)| i)
            .collect()
    };
    let acquire = of(&funcs.acquire);
    let release = of(&funcs.release);
    if acquire.is_empty() || release.is_empty() {
        return Err(PluginError::NoLockFunctions {
            acquire: funcs.acquire.join(", "),
            release: funcs.release.join(", "),
        });
    }
    let entries = if funcs.entries.is_empty() {
        acquire.clone()
    } else {
        of(&funcs.entries)
    };
    let (read_acq, write_acq) = (of(&funcs.read_acquire), of(&funcs.write_acquire));
    let (read_rel, write_rel) = (of(&funcs.read_release), of(&funcs.write_release));
    let (sleep_acq, sleep_rel) = (of(&funcs.sleep_acquire), of(&funcs.sleep_release));

    let mut p = WatchPlan::default();
    let w = |pc, aux, kind: WatchKind, flags: u32| Watch {
        pc,
        aux,
        kind: kind as u32,
        flags,
    };
    let lock_fn: std::collections::HashSet<usize> = acquire
        .iter()
        .chain(&release)
        .chain(&entries)
        .chain(&read_acq)
        .chain(&write_acq)
        .chain(&read_rel)
        .chain(&write_rel)
        .chain(&sleep_acq)
        .chain(&sleep_rel)
        .copied()
        .collect();
    for &i in &lock_fn {
        let f = &all[i];
        let end = f.insns.last().map_or(f.start, |l| l.next());
        p.functions.push((f.name.to_owned(), f.start, end));
    }
    p.functions.sort_by_key(|f| f.1);

    // Test-and-sets of the acquire functions, with their success instruction.
    {
        let (list, flags) = (&acquire, 0u32);
        for &fi in list {
            let f = &all[fi];
            let mut need_return = false;
            for (k, insn) in f.insns.iter().enumerate() {
                if !insn.is_tas() {
                    continue;
                }
                let ok = success_pc(&f.insns, k);
                p.watch
                    .push(w(insn.addr, ok.unwrap_or(0), WatchKind::Tas, flags));
                match ok {
                    Some(pc) => p.watch.push(w(pc, 0, WatchKind::Acquired, flags)),
                    None => {
                        need_return = true;
                        p.blind.push(Blind::NoSuccessPc {
                            pc: insn.addr,
                            function: f.name.to_owned(),
                        });
                    }
                }
            }
            if need_return {
                for insn in exits(f) {
                    p.watch.push(w(insn.addr, 0, WatchKind::Return, flags));
                }
            }
        }
    }
    // Releasing stores: an AMO, or a store of zero right after a fence (the release ordering).
    {
        let list = &release;
        for &fi in list {
            let f = &all[fi];
            for (k, insn) in f.insns.iter().enumerate() {
                let amo =
                    insn.mnemonic.starts_with("amoswap") || insn.mnemonic.starts_with("amoand");
                let zero_store = insn.is_store()
                    && insn.reg(0) == Some("zero")
                    && k > 0
                    && f.insns[k - 1].mnemonic.starts_with("fence");
                if amo || zero_store {
                    p.watch.push(w(insn.addr, 0, WatchKind::Release, 0));
                }
            }
        }
    }
    // Sleeplocks: their stores off the stack (`lk->locked` is told apart at run time).
    for (list, kind) in [
        (&sleep_acq, WatchKind::SleepAcquireStore),
        (&sleep_rel, WatchKind::SleepReleaseStore),
    ] {
        for &fi in list {
            for insn in all[fi]
                .insns
                .iter()
                .filter(|i| i.is_store() && !i.is_stack_store())
            {
                p.watch.push(w(insn.addr, 0, kind, 0));
            }
        }
    }

    // Reader-writer lock functions: the hold begins or ends at their return.
    let (read, write) = (abi::FLAG_READ as u32, abi::FLAG_WRITE as u32);
    let rel = abi::WATCH_RELEASE_SIDE;
    let rw_lists = [
        (&read_acq, read),
        (&write_acq, write),
        (&read_rel, read | rel),
        (&write_rel, write | rel),
    ];
    for (list, flags) in rw_lists {
        for &fi in list {
            for insn in exits(&all[fi]) {
                p.watch.push(w(insn.addr, 0, WatchKind::RwReturn, flags));
            }
        }
    }

    // Call sites, and what cannot be seen, over the whole kernel.
    let target_kind = |t: u64| -> Option<(WatchKind, u32, &str)> {
        let hit = |l: &[usize]| l.iter().find(|&&i| all[i].start == t).map(|&i| all[i].name);
        if let Some(n) = hit(&entries) {
            return Some((WatchKind::Call, 0, n));
        }
        for (list, flags) in rw_lists {
            if let Some(n) = hit(list) {
                return Some((WatchKind::RwCall, flags, n));
            }
        }
        hit(&sleep_acq).map(|n| (WatchKind::SleepCall, 0, n))
    };
    let entry_set: std::collections::HashSet<usize> =
        entries.iter().chain(&acquire).copied().collect();
    for (fi, f) in all.iter().enumerate() {
        for (k, insn) in f.insns.iter().enumerate() {
            if insn.is_raw_tas() && !lock_fn.contains(&fi) {
                p.blind.push(Blind::TasOutside {
                    pc: insn.addr,
                    function: f.name.to_owned(),
                });
            }
            let prev = k.checked_sub(1).map(|j| &f.insns[j]);
            let (target, link) = if let Some(j) = insn.jump() {
                j
            } else if let Some((rd, base)) = prev.and_then(auipc) {
                match (insn.mnemonic.as_str(), insn.ops.as_slice()) {
                    ("jalr", [Op::Reg(l), Op::Reg(rs), Op::Imm(imm)]) if rs == rd => {
                        (base.wrapping_add_signed(*imm), l == "ra")
                    }
                    ("jalr", [Op::Reg(rs), Op::Imm(imm)]) if rs == rd => {
                        (base.wrapping_add_signed(*imm), true)
                    }
                    ("jalr", [Op::Mem { base: rs, disp }]) if rs == rd => {
                        (base.wrapping_add_signed(*disp), true)
                    }
                    ("jalr", [Op::Reg(l), Op::Mem { base: rs, disp }]) if rs == rd => {
                        (base.wrapping_add_signed(*disp), l == "ra")
                    }
                    ("addi" | "c.addi", [Op::Reg(_), Op::Reg(rs), Op::Imm(imm)]) if rs == rd => {
                        let t = base.wrapping_add_signed(*imm);
                        if let Some((_, _, name)) = target_kind(t) {
                            p.blind.push(Blind::AddressTaken {
                                pc: insn.addr,
                                function: f.name.to_owned(),
                                target: name.to_owned(),
                            });
                        }
                        continue;
                    }
                    _ => continue,
                }
            } else {
                continue;
            };
            let Some((kind, flags, name)) = target_kind(target) else {
                continue;
            };
            // Calls between the wrappers and the acquire function are not sites.
            if kind == WatchKind::Call && entry_set.contains(&fi) {
                continue;
            }
            if !link {
                if !entry_set.contains(&fi) {
                    p.blind.push(Blind::TailCall {
                        pc: insn.addr,
                        function: f.name.to_owned(),
                        target: name.to_owned(),
                    });
                }
                continue;
            }
            // A call from inside a reader-writer function carries that function's kind, so a
            // thread that moved to another hart between its call and here is still followed.
            let rw_kind = rw_lists
                .iter()
                .find(|(l, _)| l.contains(&fi))
                .map(|(_, f)| *f);
            let flags = match (kind, rw_kind) {
                (WatchKind::Call, Some(rwf)) => flags | abi::WATCH_IN_RW | rwf,
                _ => flags,
            };
            p.watch.push(w(insn.addr, insn.next(), kind, flags));
            p.call_sites += (kind == WatchKind::Call) as usize;
        }
    }
    p.watch.sort_by_key(|w| (w.pc, w.kind));
    p.watch.dedup();
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(addr: u64, len: u64, mnemonic: &str, ops: &[Op]) -> Insn {
        Insn {
            addr,
            len,
            mnemonic: mnemonic.into(),
            ops: ops.to_vec(),
        }
    }
    fn r(s: &str) -> Op {
        Op::Reg(s.into())
    }

    #[test]
    fn success_follows_the_result_through_copies() {
        // xv6: amoswap.w.aq a5,a5,(s1); sext.w a5,a5; bnez a5,loop; fence  -> the fence.
        let mem = Op::Mem {
            base: "s1".into(),
            disp: 0,
        };
        let xv6 = [
            insn(0x100, 4, "amoswap.w.aq", &[r("a5"), r("a5"), mem.clone()]),
            insn(0x104, 2, "sext.w", &[r("a5"), r("a5")]),
            insn(0x106, 2, "c.bnez", &[r("a5"), Op::Imm(-6)]),
            insn(0x108, 4, "fence", &[]),
        ];
        assert_eq!(success_pc(&xv6, 0), Some(0x108));
        // Rust: amoor.w.aq a2,a0,(a3); zext.b a2,a2; beqz a2,done  -> done.
        let rust = [
            insn(0x200, 4, "amoor.w.aq", &[r("a2"), r("a0"), mem.clone()]),
            insn(0x204, 4, "zext.b", &[r("a2"), r("a2")]),
            insn(0x208, 2, "c.beqz", &[r("a2"), Op::Imm(0x26)]),
        ];
        assert_eq!(success_pc(&rust, 0), Some(0x22e));
        // The result is overwritten before any branch: unknown.
        let lost = [
            insn(0x300, 4, "amoswap.w.aq", &[r("a5"), r("a5"), mem]),
            insn(0x304, 2, "li", &[r("a5"), Op::Imm(1)]),
            insn(0x306, 2, "c.bnez", &[r("a5"), Op::Imm(-6)]),
        ];
        assert_eq!(success_pc(&lost, 0), None);
    }
}
