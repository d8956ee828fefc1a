//! The kernel's functions, decoded once, with the exits, calls and returns the planner looks
//! for; and the context switch's watches.

use std::collections::HashSet;

use lockscope_plugin_abi::{Watch, WatchKind};

use super::super::insn::{decode, flow, Flow, Insn};
use super::super::PluginError;
use crate::symbols::{SymbolKind, Symbols};

pub(super) struct Func<'a> {
    pub(super) name: &'a str,
    pub(super) start: u64,
    pub(super) insns: Vec<Insn>,
}

impl Func<'_> {
    pub(super) fn end(&self) -> u64 {
        self.insns.last().map_or(self.start, |l| l.next())
    }

    /// Does `i` leave the function: a return, or a tail call (`j pop_off` ending `read_release`
    /// is a return as far as the caller is concerned)?
    pub(super) fn is_exit(&self, i: &Insn) -> bool {
        i.is_return()
            || matches!(i.jump(), Some((t, false)) if t < self.start || t >= self.end())
            || (matches!(i.mnemonic.as_str(), "jr" | "c.jr") && i.reg(0) != Some("ra"))
    }

    pub(super) fn exits(&self) -> impl Iterator<Item = &Insn> {
        self.insns.iter().filter(|i| self.is_exit(i))
    }

    /// After the call at `insns[k]` returns, does the function go straight to its exit (no
    /// branch, jump or call first)?
    pub(super) fn returns_after(&self, k: usize) -> bool {
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
    pub(super) fn calls(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
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
pub(super) fn decode_all<'s>(
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
pub(super) fn switch_watches(
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
