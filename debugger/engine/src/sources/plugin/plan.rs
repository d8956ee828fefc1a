//! What the plugin watches, computed from the kernel ELF: the lock functions' ranges, their
//! test-and-sets and the instruction each one reaches only on success, the releasing stores,
//! every call instruction that enters an acquire function, the reader-writer functions and the
//! context switch. Also what it cannot see: test-and-sets outside the lock functions (inlined
//! acquires, raw `__sync_lock_test_and_set`), acquire functions whose address is taken
//! (indirect calls) or that are tail-called.

mod func;
mod spec;

use std::collections::{HashMap, HashSet};

use lockscope_plugin_abi::{self as abi, Watch, WatchKind};

use super::insn::{capstone, flow, success_pc, Flow};
use super::PluginError;
use crate::symbols::Symbols;

use func::{decode_all, switch_watches, Func};
pub use spec::{Blind, LockFunctions, WatchPlan};

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
