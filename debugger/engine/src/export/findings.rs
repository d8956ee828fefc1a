//! The findings of a Perfetto export: panics, deadlocks, stalls and lock-order inversions as
//! instant events, with `function file:line` sites from the symbols when there are any.

use std::collections::BTreeMap;

use super::out::{arg_str, arg_u64, ExportError, Out};
use crate::monitor::Monitor;

/// Panics, deadlocks, stalls and inversions, each reported once, with `file:line` sites.
#[derive(Default)]
pub(crate) struct Findings {
    panic: bool,
    deadlock: bool,
    stall: bool,
    sites: BTreeMap<u64, String>,
}

impl Findings {
    /// `function file:line` of a return address, memoized.
    pub fn site(&mut self, m: &Monitor, pc: u64) -> String {
        if let Some(s) = self.sites.get(&pc) {
            return s.clone();
        }
        let s = match m.symbols() {
            Some(sym) => match sym.return_frames(pc) {
                Ok(frames) => frames
                    .first()
                    .map(|f| {
                        let func = f
                            .function
                            .as_deref()
                            .map(crate::monitor::short_function)
                            .unwrap_or("??");
                        match &f.location {
                            Some(l) => format!("{func} {l}"),
                            None => func.to_string(),
                        }
                    })
                    .unwrap_or_else(|| format!("{pc:#x}")),
                Err(_) => format!("{pc:#x}"),
            },
            None => format!("{pc:#x}"),
        };
        self.sites.insert(pc, s.clone());
        s
    }

    pub fn after_snapshot(&mut self, m: &Monitor, t: u64, o: &mut Out) -> Result<(), ExportError> {
        let a = m.analyzer();
        if let (Some(p), false) = (a.panic(), self.panic) {
            self.panic = true;
            let at = p.trap.as_ref().map_or(p.pc, |tr| tr.sepc);
            let place = match m.symbols().and_then(|s| s.location(at).ok().flatten()) {
                Some(l) => l.to_string(),
                None => format!("{at:#x}"),
            };
            o.instant(
                p.time_ns.unwrap_or(t),
                format!("panic: {}", p.message),
                vec![
                    arg_u64("hart", p.hart as u64),
                    arg_str("message", p.message.clone()),
                    arg_str("at", place),
                ],
            )?;
        }
        let confirmed = a.deadlocks().iter().find(|c| c.confirmed).cloned();
        if let (Some(c), false) = (&confirmed, self.deadlock) {
            for e in &c.edges {
                self.site(m, e.waiter_pc);
                if let Some(pc) = e.holder_pc {
                    self.site(m, pc);
                }
            }
            let desc = c.describe(|pc| {
                self.sites
                    .get(&pc)
                    .cloned()
                    .unwrap_or_else(|| format!("{pc:#x}"))
            });
            let locks: Vec<String> = c.edges.iter().map(|e| e.lock_name.clone()).collect();
            let harts: Vec<String> = c.edges.iter().map(|e| e.waiter.to_string()).collect();
            o.instant(
                t,
                "deadlock".into(),
                vec![
                    arg_str("cycle", desc),
                    arg_str("locks", locks.join(", ")),
                    arg_str("harts", harts.join(", ")),
                ],
            )?;
        }
        self.deadlock = confirmed.is_some();
        let stall = a.stall().filter(|s| !s.harts.is_empty()).cloned();
        if let (Some(s), false) = (&stall, self.stall) {
            for h in &s.harts {
                let at =
                    h.pc.map(
                        |pc| match m.symbols().and_then(|s| s.location(pc).ok().flatten()) {
                            Some(l) => l.to_string(),
                            None => format!("{pc:#x}"),
                        },
                    )
                    .unwrap_or_default();
                let mut args = vec![arg_u64("hart", h.hart as u64), arg_str("at", at)];
                if let crate::analysis::StallReason::SpinningTooLong { lock, .. } = h.reason {
                    args.push(arg_str("lock", a.lock_row(lock).name));
                }
                o.instant(t, format!("stall: hart {}", h.hart), args)?;
            }
        }
        self.stall = stall.is_some();
        Ok(())
    }

    /// Every lock-order inversion, at the time its last edge was first taken.
    pub fn inversions(&mut self, m: &Monitor, o: &mut Out) -> Result<(), ExportError> {
        for inv in m.analyzer().lock_order().inversions {
            let t = inv.edges.iter().map(|e| e.first.time_ns).max().unwrap_or(0);
            let mut args = vec![arg_str("locks", inv.names.join(" -> "))];
            for e in &inv.edges {
                args.push(arg_str(
                    &format!("{} -> {}", e.from_name, e.to_name),
                    format!(
                        "hart {}: {} then {}",
                        e.first.hart,
                        self.site(m, e.first.from_pc),
                        self.site(m, e.first.to_pc)
                    ),
                ));
            }
            o.instant(
                t,
                format!("lock-order inversion: {}", inv.names.join(" -> ")),
                args,
            )?;
        }
        Ok(())
    }
}
