//! What the plugin watches, computed from the kernel ELF: the lock functions' ranges, their
//! test-and-sets and the instruction each one reaches only on success, the releasing stores,
//! every call instruction that enters an acquire function, the reader-writer functions and the
//! context switch. Also what it cannot see: test-and-sets outside the lock functions (inlined
//! acquires, raw `__sync_lock_test_and_set`), acquire functions whose address is taken
//! (indirect calls) or that are tail-called.

use std::collections::{HashMap, HashSet};

use lockscope_plugin_abi::{self as abi, Watch, WatchKind};

use super::insn::{capstone, decode, flow, success_pc, Flow, Insn};
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
    /// The context switch (xv6 `swtch(old, new)`: stores the running thread's registers at
    /// `a0`, loads the next one's from `a1`). Lets the plugin follow a thread across harts.
    pub switch: Vec<String>,
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
            switch: names(&["swtch"]),
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
    /// No context switch lockscope knows (`LockFunctions::switch`): events name no thread, and
    /// what a thread was doing when it moved to another hart (a pending call site, a
    /// reader-writer function, a sleeplock acquisition) is lost.
    NoSwitch { names: String },
    /// A reader-writer function that takes no spinlock through a call lockscope sees (an
    /// implementation with atomics only, or an inlined acquire): its holds are not seen.
    RwWithoutInnerLock { function: String },
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
            Blind::NoSwitch { names } => write!(
                f,
                "no context switch found (looked for {names}): events name no thread, and a thread that moves to another hart inside a lock function loses its call site"
            ),
            Blind::RwWithoutInnerLock { function } => write!(
                f,
                "{function} takes no spinlock through a call lockscope sees (atomics only, or an inlined acquire): its read and write holds are not seen"
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
    /// Functions that only reader-writer functions call (the lab's `read_acquire_inner`):
    /// their acquisitions are the rw lock's inner ones.
    pub rw_helpers: Vec<String>,
}

impl WatchPlan {
    pub fn count(&self, kind: WatchKind) -> usize {
        self.watch.iter().filter(|w| w.kind == kind as u32).count()
    }
}

struct Func<'a> {
    name: &'a str,
    start: u64,
    insns: Vec<Insn>,
}

impl Func<'_> {
    fn end(&self) -> u64 {
        self.insns.last().map_or(self.start, |l| l.next())
    }

    /// Does `i` leave the function: a return, or a tail call (`j pop_off` ending `read_release`
    /// is a return as far as the caller is concerned)?
    fn is_exit(&self, i: &Insn) -> bool {
        i.is_return()
            || matches!(i.jump(), Some((t, false)) if t < self.start || t >= self.end())
            || (matches!(i.mnemonic.as_str(), "jr" | "c.jr") && i.reg(0) != Some("ra"))
    }

    fn exits(&self) -> impl Iterator<Item = &Insn> {
        self.insns.iter().filter(|i| self.is_exit(i))
    }

    /// After the call at `insns[k]` returns, does the function go straight to its exit (no
    /// branch, jump or call first)?
    fn returns_after(&self, k: usize) -> bool {
        for i in self.insns.iter().skip(k + 1).take(24) {
            if self.is_exit(i) {
                return true;
            }
            if i.is_control() {
                return false;
            }
        }
        false
    }

    /// Its direct calls: (instruction index, target).
    fn calls(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        (0..self.insns.len()).filter_map(|k| {
            let prev = k.checked_sub(1).map(|j| &self.insns[j]);
            match flow(prev, &self.insns[k]) {
                Some(Flow::Jump(t, true)) => Some((k, t)),
                _ => None,
            }
        })
    }
}

/// Decodes every function of the kernel once.
fn decode_all<'s>(
    symbols: &'s Symbols,
    cs: &capstone::Capstone,
) -> Result<Vec<Func<'s>>, PluginError> {
    let mut all = Vec::new();
    let mut seen = HashSet::new();
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
            insns: decode(cs, &bytes, s.address)?,
        });
    }
    Ok(all)
}

/// The context switch's store of the outgoing context and load of the incoming one at the
/// same offset (xv6: `sd ra, 0(a0)` ... `ld ra, 0(a1)`). `swtch` is an assembly label without
/// a size: decode up to its first return.
fn switch_watches(
    symbols: &Symbols,
    cs: &capstone::Capstone,
    names: &[String],
) -> Result<Vec<Watch>, PluginError> {
    for name in names {
        let Ok(sym) = symbols.symbol(name) else {
            continue;
        };
        let len = if sym.size > 0 {
            sym.size.min(1024)
        } else {
            256
        };
        let Ok(bytes) = symbols.read_static(sym.address, len as usize) else {
            continue;
        };
        let insns = decode(cs, &bytes, sym.address)?;
        let end = insns
            .iter()
            .position(|i| i.is_return())
            .unwrap_or(insns.len());
        let body = &insns[..end];
        let store = body.iter().find_map(|i| match i.mem() {
            Some(("a0", d)) if i.is_store() => Some((i.addr, d)),
            _ => None,
        });
        let Some((spc, disp)) = store else { continue };
        let load = body
            .iter()
            .find(|i| i.is_load() && i.mem() == Some(("a1", disp)));
        if let Some(l) = load {
            return Ok(vec![
                Watch {
                    pc: spc,
                    aux: disp as u64,
                    kind: WatchKind::SwitchOut as u32,
                    flags: 0,
                },
                Watch {
                    pc: l.addr,
                    aux: disp as u64,
                    kind: WatchKind::SwitchIn as u32,
                    flags: 0,
                },
            ]);
        }
    }
    Ok(Vec::new())
}

/// Computes the watch table for `symbols` with these lock functions.
pub fn plan(symbols: &Symbols, funcs: &LockFunctions) -> Result<WatchPlan, PluginError> {
    let cs = capstone()?;
    let all = decode_all(symbols, &cs)?;
    let by_start: HashMap<u64, usize> = all.iter().enumerate().map(|(i, f)| (f.start, i)).collect();
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
    let lock_fn: HashSet<usize> = acquire
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
        p.functions.push((f.name.to_owned(), f.start, f.end()));
    }
    p.functions.sort_by_key(|f| f.1);

    // Test-and-sets of the acquire functions, with their success instruction.
    for &fi in &acquire {
        let f = &all[fi];
        let mut need_return = false;
        for (k, insn) in f.insns.iter().enumerate() {
            if !insn.is_tas() {
                continue;
            }
            let ok = success_pc(&f.insns, k);
            p.watch
                .push(w(insn.addr, ok.unwrap_or(0), WatchKind::Tas, 0));
            match ok {
                Some(pc) => p.watch.push(w(pc, 0, WatchKind::Acquired, 0)),
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
            for insn in f.exits() {
                p.watch.push(w(insn.addr, 0, WatchKind::Return, 0));
            }
        }
    }
    // Releasing stores: an AMO, or a store of zero right after a fence (the release ordering).
    for &fi in &release {
        let f = &all[fi];
        for (k, insn) in f.insns.iter().enumerate() {
            let amo = insn.mnemonic.starts_with("amoswap") || insn.mnemonic.starts_with("amoand");
            let zero_store = insn.is_store()
                && insn.reg(0) == Some("zero")
                && k > 0
                && f.insns[k - 1].mnemonic.starts_with("fence");
            if amo || zero_store {
                p.watch.push(w(insn.addr, 0, WatchKind::Release, 0));
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
    // The context switch.
    let switch = switch_watches(symbols, &cs, &funcs.switch)?;
    if switch.is_empty() && !funcs.switch.is_empty() {
        p.blind.push(Blind::NoSwitch {
            names: funcs.switch.join(", "),
        });
    }
    p.watch.extend(switch);

    // Reader-writer lock functions.
    let (read, write) = (abi::FLAG_READ as u32, abi::FLAG_WRITE as u32);
    let rel = abi::WATCH_RELEASE_SIDE;
    let rw_lists = [
        (&read_acq, read),
        (&write_acq, write),
        (&read_rel, read | rel),
        (&write_rel, write | rel),
    ];
    let rw_flags: HashMap<usize, u32> = rw_lists
        .iter()
        .flat_map(|(l, f)| l.iter().map(move |&i| (i, *f)))
        .collect();
    let callers = callers(&all, &by_start);
    let helpers = rw_helpers(&all, &callers, &rw_flags, &lock_fn);
    p.rw_helpers = helpers.iter().map(|&i| all[i].name.to_owned()).collect();
    let release_set: HashSet<u64> = release.iter().map(|&i| all[i].start).collect();
    let entry_set: HashSet<u64> = entries.iter().map(|&i| all[i].start).collect();
    // Per rw function: does its hold begin or end at its return (WATCH_AT_RETURN)?
    let mut at_return: HashMap<usize, bool> = HashMap::new();
    for (&fi, &flags) in &rw_flags {
        let scope = rw_scope(&all, &by_start, &helpers, fi);
        let mut inner_acquire = false;
        let (mut success, mut waits) = (false, Vec::new());
        for &gi in &scope {
            let g = &all[gi];
            for (k, t) in g.calls() {
                inner_acquire |= entry_set.contains(&t);
                if !release_set.contains(&t) {
                    continue;
                }
                if g.returns_after(k) {
                    success = true;
                } else {
                    waits.push(g.insns[k].addr);
                }
            }
        }
        if !inner_acquire {
            p.blind.push(Blind::RwWithoutInnerLock {
                function: all[fi].name.to_owned(),
            });
        }
        let release_side = flags & rel != 0;
        let ret = if release_side {
            success || !waits.is_empty()
        } else {
            success
        };
        at_return.insert(fi, !ret);
        if !ret {
            for insn in all[fi].exits() {
                p.watch.push(w(insn.addr, 0, WatchKind::RwReturn, flags));
            }
        }
        if !release_side {
            for pc in waits {
                p.watch.push(w(pc, 0, WatchKind::RwWait, flags));
            }
        }
    }
    let in_rw = |fi: usize| rw_flags.contains_key(&fi) || helpers.contains(&fi);

    // Call sites, and what cannot be seen, over the whole kernel.
    let target_kind = |t: u64| -> Option<(WatchKind, u32, &str)> {
        let ti = *by_start.get(&t)?;
        let name = all[ti].name;
        if entries.contains(&ti) {
            return Some((WatchKind::Call, 0, name));
        }
        if let Some(&flags) = rw_flags.get(&ti) {
            let at = if at_return[&ti] {
                abi::WATCH_AT_RETURN
            } else {
                0
            };
            return Some((WatchKind::RwCall, flags | at, name));
        }
        sleep_acq
            .contains(&ti)
            .then_some((WatchKind::SleepCall, 0, name))
    };
    let wrappers: HashSet<usize> = entries.iter().chain(&acquire).copied().collect();
    for (fi, f) in all.iter().enumerate() {
        for (k, insn) in f.insns.iter().enumerate() {
            if insn.is_raw_tas() && !lock_fn.contains(&fi) {
                p.blind.push(Blind::TasOutside {
                    pc: insn.addr,
                    function: f.name.to_owned(),
                });
            }
            let prev = k.checked_sub(1).map(|j| &f.insns[j]);
            let (target, link) = match flow(prev, insn) {
                Some(Flow::Jump(t, link)) => (t, link),
                Some(Flow::AddressOf(t)) => {
                    if let Some((_, _, name)) = target_kind(t) {
                        p.blind.push(Blind::AddressTaken {
                            pc: insn.addr,
                            function: f.name.to_owned(),
                            target: name.to_owned(),
                        });
                    }
                    continue;
                }
                None => continue,
            };
            let Some((kind, flags, name)) = target_kind(target) else {
                continue;
            };
            // Calls between the wrappers and the acquire function are not sites; acquisitions
            // inside reader-writer functions carry the rw function's site.
            if kind == WatchKind::Call && (wrappers.contains(&fi) || in_rw(fi)) {
                continue;
            }
            if !link {
                if !wrappers.contains(&fi) {
                    p.blind.push(Blind::TailCall {
                        pc: insn.addr,
                        function: f.name.to_owned(),
                        target: name.to_owned(),
                    });
                }
                continue;
            }
            p.watch.push(w(insn.addr, insn.next(), kind, flags));
            p.call_sites += (kind == WatchKind::Call) as usize;
        }
    }
    p.watch.sort_by_key(|w| (w.pc, w.kind));
    p.watch.dedup();
    Ok(p)
}

/// Who calls each function (direct calls only).
fn callers(all: &[Func<'_>], by_start: &HashMap<u64, usize>) -> HashMap<usize, Vec<usize>> {
    let mut m: HashMap<usize, Vec<usize>> = HashMap::new();
    for (fi, f) in all.iter().enumerate() {
        for (_, t) in f.calls() {
            if let Some(&ti) = by_start.get(&t) {
                m.entry(ti).or_default().push(fi);
            }
        }
    }
    m
}

/// Functions called only from reader-writer functions (or from other such helpers): the lab's
/// `read_acquire_inner` when it is not inlined. Lock functions are never helpers.
fn rw_helpers(
    all: &[Func<'_>],
    callers: &HashMap<usize, Vec<usize>>,
    rw: &HashMap<usize, u32>,
    lock_fn: &HashSet<usize>,
) -> HashSet<usize> {
    // A function whose address is taken may be called from anywhere.
    let mut taken = HashSet::new();
    for f in all {
        for k in 0..f.insns.len() {
            let prev = k.checked_sub(1).map(|j| &f.insns[j]);
            if let Some(Flow::AddressOf(t)) = flow(prev, &f.insns[k]) {
                taken.insert(t);
            }
        }
    }
    let mut helpers = HashSet::new();
    loop {
        let mut changed = false;
        for (&ti, cs) in callers {
            if helpers.contains(&ti)
                || rw.contains_key(&ti)
                || lock_fn.contains(&ti)
                || taken.contains(&all[ti].start)
            {
                continue;
            }
            if cs.iter().all(|c| rw.contains_key(c) || helpers.contains(c)) {
                helpers.insert(ti);
                changed = true;
            }
        }
        if !changed {
            return helpers;
        }
    }
}

/// Function `fi` and the helpers it reaches.
fn rw_scope(
    all: &[Func<'_>],
    by_start: &HashMap<u64, usize>,
    helpers: &HashSet<usize>,
    fi: usize,
) -> Vec<usize> {
    let mut scope = vec![fi];
    let mut k = 0;
    while k < scope.len() {
        for (_, t) in all[scope[k]].calls() {
            if let Some(&ti) = by_start.get(&t) {
                if helpers.contains(&ti) && !scope.contains(&ti) {
                    scope.push(ti);
                }
            }
        }
        k += 1;
    }
    scope
}
