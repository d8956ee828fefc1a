//! Reading one snapshot: the registry and every lock here, the rest in `procs` and `objects`.

use std::collections::{HashMap, HashSet};

use crate::memory::GuestMemory;
use crate::model::{
    Finding, FindingKind, LabCounts, LockCounters, LockMeta, LockState, Outcome, ProcRef, Snapshot,
    TargetConfig,
};

use super::findings::{self, RawLock};
use super::image::{c_string, Place, MAX_NAME};
use super::regions::fetch;
use super::walk::wildcard;
use super::{LockDef, Xv6Error, Xv6Source, MAX_LOCKS};

impl Xv6Source {
    /// Bytes read in bulk by each snapshot.
    pub fn bulk_bytes(&self) -> usize {
        self.regions.bytes()
    }

    fn lock_name(&mut self, mem: &mut dyn GuestMemory, ptr: u64) -> Option<String> {
        match self.image.place(ptr) {
            Place::Constant => {
                if let Some(s) = self.names.get(&ptr) {
                    return Some(s.clone());
                }
                let s = self.image.constant_str(ptr)?;
                if self.names.len() < MAX_LOCKS {
                    self.names.insert(ptr, s.clone());
                }
                Some(s)
            }
            Place::Global(_) | Place::Heap => {
                let b = fetch(&self.regions, mem, ptr, MAX_NAME as u64)
                    .or_else(|| fetch(&self.regions, mem, ptr, 16))?;
                c_string(&b).filter(|s| !s.is_empty())
            }
            _ => None,
        }
    }

    fn decode_lock(&self, b: &[u8]) -> Option<RawLock> {
        let l = &self.core.spinlock;
        Some(RawLock {
            locked: l.locked.get(b)?,
            name: l.name.word(b)?,
            cpu: l.cpu.word(b)?,
            nts: l.nts.and_then(|f| f.get(b)),
            n: l.n.and_then(|f| f.get(b)),
        })
    }

    /// Registry entries now, adding newly registered locks. Entries that are not locks in
    /// memory become findings.
    fn read_registry(
        &mut self,
        mem: &mut dyn GuestMemory,
        cands: &mut Vec<(Finding, u64)>,
    ) -> Option<HashSet<u64>> {
        let reg = self.core.registry.clone()?;
        let bytes = fetch(&self.regions, mem, reg.addr, reg.len_bytes())?;
        let mut registered = HashSet::new();
        for (i, e) in bytes.chunks_exact(8).enumerate() {
            let p = u64::from_le_bytes(e.try_into().ok()?);
            if p == 0 {
                continue;
            }
            if p % 4 != 0 || !self.image.readable(p, self.core.spinlock.size) {
                cands.push((
                    Finding {
                        kind: FindingKind::RegistryEntryInvalid,
                        path: format!("{}[{i}]", reg.path),
                        message: format!(
                            "{}[{i}] = {p:#x} does not point at a lock in RAM; the lab's statistics read garbage there; this makes the lab's OK meaningless",
                            reg.path
                        ),
                    },
                    p,
                ));
                continue;
            }
            registered.insert(p);
            if !self.ids.contains_key(&p) && self.locks.len() < super::MAX_LOCKS {
                self.ids.insert(p, self.locks.len() as u32);
                self.locks.push(LockDef {
                    addr: p,
                    path: None,
                    last: None,
                });
            }
        }
        Some(registered)
    }

    /// Every lock: those in globals, then those known only from the registry.
    fn read_locks(
        &mut self,
        mem: &mut dyn GuestMemory,
        registered: Option<&HashSet<u64>>,
        cands: &mut Vec<(Finding, u64)>,
    ) -> Vec<LockState> {
        let cpus = self.core.cpu.cpus.clone();
        let size = self.core.spinlock.size;
        let mut locks = Vec::with_capacity(self.locks.len());
        for id in 0..self.locks.len() {
            let (addr, path) = (self.locks[id].addr, self.locks[id].path.clone());
            let in_registry = registered.is_some_and(|r| r.contains(&addr));
            let live = path.is_some() || in_registry;
            let raw = if live {
                fetch(&self.regions, mem, addr, size).and_then(|b| self.decode_lock(&b))
            } else {
                None
            };
            let Some(raw) = raw else {
                // Freed from the registry, or unreadable: its last state, not held.
                let mut last = self.locks[id].last.clone().unwrap_or_else(|| LockState {
                    meta: LockMeta {
                        id: id as u32,
                        name: format!("lock@{addr:#x}"),
                        class: "?".into(),
                    },
                    addr: Some(addr),
                    ..Default::default()
                });
                last.holder = None;
                last.locked = None;
                locks.push(last);
                continue;
            };
            let name = self.lock_name(mem, raw.name);
            let holder = match cpus.index_of(raw.cpu) {
                Some(h) => Some(h as u32),
                None if raw.cpu == 0 => None,
                None => {
                    let p = path.clone().unwrap_or_else(|| format!("lock@{addr:#x}"));
                    cands.push((
                        Finding {
                            kind: FindingKind::HolderInvalid,
                            message: format!(
                                "lock {p}: cpu = {:#x} is neither NULL nor an entry of {}[]; the lock is corrupt or was never initialised",
                                raw.cpu, cpus.path
                            ),
                            path: p,
                        },
                        raw.cpu,
                    ));
                    None
                }
            };
            let shown = name
                .clone()
                .or_else(|| path.clone())
                .unwrap_or_else(|| format!("lock@{addr:#x}"));
            let class = match &path {
                Some(p) => wildcard(p),
                None => name.clone().unwrap_or_else(|| "?".into()),
            };
            let lab = match (raw.n, raw.nts) {
                (Some(n), Some(nts)) => Some(LabCounts { n, nts }),
                _ => None,
            };
            let state = LockState {
                meta: LockMeta {
                    id: id as u32,
                    name: shown,
                    class,
                },
                counters: LockCounters {
                    acquires: raw.n.map_or(0, |v| v as u32 as u64),
                    spins: raw.nts.map_or(0, |v| v as u32 as u64),
                    ..Default::default()
                },
                holder,
                path: path.clone(),
                addr: Some(addr),
                locked: Some(raw.locked != 0),
                lab,
                index: path
                    .as_deref()
                    .map_or_else(Vec::new, crate::model::index_from_path),
            };
            findings::check_lock(
                self,
                mem,
                &state,
                &raw,
                name.as_deref(),
                in_registry,
                registered.is_some(),
                cands,
            );
            self.locks[id].last = Some(state.clone());
            locks.push(state);
        }

        locks
    }

    pub(super) fn read_snapshot(
        &mut self,
        mem: &mut dyn GuestMemory,
        now_ns: u64,
    ) -> Result<Snapshot, Xv6Error> {
        self.regions.read(mem)?;
        let concurrent = mem.concurrent();
        let mut cands: Vec<(Finding, u64)> = Vec::new();
        let registered = self.read_registry(mem, &mut cands);
        let locks = self.read_locks(mem, registered.as_ref(), &mut cands);
        let (mut processes, proc_at) = self.read_processes();
        let harts = self.read_harts(&proc_at, &mut processes);
        let by_pid: HashMap<i64, ProcRef> = processes
            .iter()
            .map(|p| {
                let r = ProcRef {
                    slot: p.slot,
                    pid: p.pid,
                    name: p.name.clone(),
                };
                (p.pid, r)
            })
            .collect();
        let (sleeplocks, sleep_at) = self.read_sleeplocks(&by_pid);
        let rwlocks = self.read_rwlocks(mem);
        let bcache = self.read_bcache(mem, &by_pid, &mut cands);
        let (kmem, kmem_findings) = self.read_kmem(mem, concurrent);
        self.name_channels(&mut processes, &locks, &proc_at, &sleep_at, bcache.as_ref());

        let ticks = self.core.ticks.and_then(|(a, f)| {
            let b = self.regions.get(a, f.end())?;
            f.get(b).map(|v| v as u64)
        });
        let panicked = self.core.panicked.and_then(|(a, f)| {
            let b = self.regions.get(a, f.end())?;
            f.get(b)
        });
        let mut findings = findings::confirm(&mut self.confirmed, cands, concurrent);
        findings.extend(kmem_findings);
        Ok(Snapshot {
            time_ns: now_ns,
            ticks,
            config: TargetConfig {
                nharts: harts.len() as u32,
                kalloc: kmem.as_ref().map(|k| k.mode.clone()),
                bcache: bcache.as_ref().map(|b| b.mode.clone()),
                ..Default::default()
            },
            outcome: (panicked.unwrap_or(0) != 0).then_some(Outcome::Panic),
            locks,
            harts,
            kmem,
            bcache,
            processes,
            sleeplocks,
            rwlocks,
            findings,
            ..Default::default()
        })
    }
}
