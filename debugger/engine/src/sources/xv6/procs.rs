//! The process table and the per-CPU records, and what sleeping processes wait on.

use std::collections::HashMap;

use crate::model::{
    BcacheSnapshot, CpuState, HartRun, HartSnapshot, LockState, ProcRef, ProcessSnapshot,
    SavedContext,
};

use super::Xv6Source;

/// Where each process's `struct proc` is: slot, pid, name.
pub(super) type ProcAt = HashMap<u64, (u32, i64, String)>;

impl Xv6Source {
    /// The used slots of the process table.
    pub(super) fn read_processes(&self) -> (Vec<ProcessSnapshot>, ProcAt) {
        let mut processes = Vec::new();
        let mut proc_at: HashMap<u64, (u32, i64, String)> = HashMap::new();
        if let Some(p) = &self.core.proc {
            for slot in 0..p.table.count {
                let base = p.table.element(slot);
                let Some(b) = self.regions.get(base, p.table.stride) else {
                    break;
                };
                let (Some(state), Some(pid)) = (p.state.get(b), p.pid.get(b)) else {
                    continue;
                };
                if state == 0 {
                    continue; // UNUSED
                }
                let name = p
                    .name
                    .and_then(|(o, n)| b.get(o as usize..(o + n) as usize))
                    .map(|s| {
                        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
                        String::from_utf8_lossy(&s[..end]).into_owned()
                    })
                    .unwrap_or_default();
                let state_name = self
                    .types
                    .enumerator(p.state_ty, state)
                    .map(str::to_owned)
                    .unwrap_or_else(|| state.to_string());
                let sleeping = state_name.to_ascii_uppercase().contains("SLEEP");
                let chan = p
                    .chan
                    .and_then(|f| f.word(b))
                    .filter(|&c| sleeping && c != 0);
                proc_at.insert(base, (slot as u32, pid, name.clone()));
                processes.push(ProcessSnapshot {
                    slot: slot as u32,
                    pid,
                    name,
                    state: state_name,
                    chan,
                    chan_name: None,
                    killed: p.killed.and_then(|f| f.get(b)).is_some_and(|v| v != 0),
                    hart: None,
                    kstack: p.kstack.and_then(|f| f.word(b)),
                    context: p.context.as_ref().and_then(|c| {
                        Some(SavedContext {
                            ra: c.ra.word(b)?,
                            sp: c.sp.word(b)?,
                            fp: c.fp.word(b)?,
                        })
                    }),
                    lock: p.lock.and_then(|o| self.lock_id(base + o)),
                });
            }
        }
        (processes, proc_at)
    }

    /// Each hart's `struct cpu`; marks the processes they run.
    pub(super) fn read_harts(
        &self,
        proc_at: &ProcAt,
        processes: &mut [ProcessSnapshot],
    ) -> Vec<HartSnapshot> {
        let cpus = &self.core.cpu.cpus;
        let c = &self.core.cpu;
        let max_harts = self
            .nharts
            .map_or(cpus.count, |n| (n as u64).min(cpus.count));
        let mut harts = Vec::new();
        for h in 0..max_harts {
            let Some(b) = self.regions.get(cpus.element(h), cpus.stride) else {
                break;
            };
            let proc_ptr = c.proc.word(b).unwrap_or(0);
            let proc = proc_at.get(&proc_ptr).map(|(slot, pid, name)| ProcRef {
                slot: *slot,
                pid: *pid,
                name: name.clone(),
            });
            // A hart that entered its scheduler has touched its record (`intena` after the
            // first push_off, `context` after the first switch); an absent one has not.
            let started = b.iter().any(|&x| x != 0);
            let noff = c.noff.and_then(|f| f.get(b)).unwrap_or(0);
            let run = if proc_ptr != 0 {
                HartRun::Running
            } else if started {
                HartRun::Idle
            } else if self.nharts.is_some() || noff != 0 {
                HartRun::Booting
            } else {
                HartRun::Offline
            };
            if let Some(pr) = &proc {
                if let Some(p) = processes.iter_mut().find(|p| p.slot == pr.slot) {
                    p.hart = Some(h as u32);
                }
            }
            harts.push(HartSnapshot {
                hart: h as u32,
                run,
                cpu: Some(CpuState {
                    proc,
                    noff,
                    intena: c.intena.and_then(|f| f.get(b)).is_some_and(|v| v != 0),
                }),
                ..Default::default()
            });
        }
        if self.nharts.is_none() {
            // Harts that never ran are QEMU's missing CPUs, not the kernel's.
            while harts.last().is_some_and(|h| h.run == HartRun::Offline) {
                harts.pop();
            }
        }

        harts
    }

    /// Names each sleeping process's channel when it is a known object.
    pub(super) fn name_channels(
        &self,
        processes: &mut [ProcessSnapshot],
        locks: &[LockState],
        proc_at: &ProcAt,
        sleep_at: &HashMap<u64, String>,
        bcache: Option<&BcacheSnapshot>,
    ) {
        let ticks_addr = self.core.ticks.map(|(a, _)| a);
        for p in processes.iter_mut() {
            let Some(ch) = p.chan else { continue };
            p.chan_name = if Some(ch) == ticks_addr {
                Some("ticks".into())
            } else if let Some(path) = sleep_at.get(&ch) {
                Some(match (bcache, self.bcache.as_ref()) {
                    (Some(bc), Some(layout)) => layout
                        .buf
                        .sleeplock
                        .and_then(|o| layout.pool_index.get(&(ch - o)))
                        .and_then(|&i| bc.bufs.get(i as usize))
                        .map(|b| format!("sleeplock of buf {} (block {})", b.index, b.blockno))
                        .unwrap_or_else(|| format!("sleeplock {path}")),
                    _ => format!("sleeplock {path}"),
                })
            } else if let Some(i) = self.bcache.as_ref().and_then(|l| l.pool_index.get(&ch)) {
                let block = bcache
                    .and_then(|b| b.bufs.get(*i as usize))
                    .map(|b| b.blockno);
                Some(match block {
                    Some(n) => format!("buf {i} (block {n})"),
                    None => format!("buf {i}"),
                })
            } else if let Some((slot, pid, name)) = proc_at.get(&ch) {
                // Before locks: `wait` sleeps on a proc, whose first member is its lock.
                Some(format!("proc[{slot}] (pid {pid}, {name})"))
            } else if let Some(&id) = self.ids.get(&ch) {
                Some(format!("lock {}", locks[id as usize].meta.name))
            } else {
                self.image.symbol_at(ch)
            };
        }
    }
}
