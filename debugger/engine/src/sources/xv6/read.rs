//! Building the source from the discovered layout, and reading one snapshot.
//!
//! Every global that holds something the snapshot needs is read with one bulk read per
//! snapshot ([`Regions`]); only the locks known solely through the registry (in kalloc'd
//! memory) and the free-list nodes are read one by one.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::memory::{GuestMemory, MemoryError};
use crate::model::{
    BcacheSnapshot, BucketSnapshot, BufSnapshot, CpuState, Finding, FindingKind, HartRun,
    HartSnapshot, KmemList, KmemSnapshot, LabCounts, LockCounters, LockMeta, LockState, Outcome,
    ProcRef, ProcessSnapshot, SavedContext, Snapshot, TargetConfig,
};
use crate::symbols::types::{TypeId, TypeKind, Types};

use super::image::{c_string, Image, Place, MAX_NAME};
use super::layout::{self, Core, Field};
use super::walk::{wildcard, Walker};
use super::{bcache, findings, kmem, LockDef, Role, RwDef, Xv6Error, Xv6Source, MAX_LOCKS};

/// Globals larger than this are not bulk-read; what is needed in them is read piecewise.
const MAX_REGION: u64 = 1 << 20;
/// Ranges closer than this are read as one.
const MERGE_GAP: u64 = 1024;
/// Fields shown per reader-writer lock.
const MAX_RW_FIELDS: usize = 64;

/// The guest memory one snapshot reads in bulk.
pub(super) struct Regions {
    spans: Vec<(u64, Vec<u8>)>,
}

impl Regions {
    fn new(mut ranges: Vec<(u64, u64)>) -> Regions {
        ranges.retain(|&(_, len)| len > 0 && len <= MAX_REGION);
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, len) in ranges {
            let end = a.saturating_add(len);
            match merged.last_mut() {
                Some((ma, mend))
                    if a <= mend.saturating_add(MERGE_GAP) && end - *ma <= MAX_REGION =>
                {
                    *mend = (*mend).max(end);
                }
                _ => merged.push((a, end)),
            }
        }
        Regions {
            spans: merged
                .into_iter()
                .map(|(a, end)| (a, vec![0; (end - a) as usize]))
                .collect(),
        }
    }

    fn read(&mut self, mem: &mut dyn GuestMemory) -> Result<(), MemoryError> {
        for (a, buf) in &mut self.spans {
            mem.read(*a, buf)?;
        }
        Ok(())
    }

    /// The bytes at `addr..addr+len`, if one span holds them.
    pub(super) fn get(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let i = self.spans.partition_point(|(a, _)| *a <= addr);
        let (a, buf) = self.spans.get(i.checked_sub(1)?)?;
        let start = usize::try_from(addr - a).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        buf.get(start..end)
    }

    pub(super) fn bytes(&self) -> usize {
        self.spans.iter().map(|(_, b)| b.len()).sum()
    }
}

/// Reads `len` bytes at `addr`, from the regions when they hold them.
fn fetch(regions: &Regions, mem: &mut dyn GuestMemory, addr: u64, len: u64) -> Option<Vec<u8>> {
    if let Some(b) = regions.get(addr, len) {
        return Some(b.to_vec());
    }
    let mut v = vec![0; usize::try_from(len).ok()?];
    mem.read(addr, &mut v).ok()?;
    Some(v)
}

fn word(regions: &Regions, mem: &mut dyn GuestMemory, addr: u64) -> Option<u64> {
    if let Some(b) = regions.get(addr, 8) {
        return Some(u64::from_le_bytes(b.try_into().ok()?));
    }
    let mut b = [0u8; 8];
    mem.read(addr, &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// Flattens the fields of a reader-writer lock other than its inner spinlock.
fn rw_fields(
    types: &Types,
    ty: TypeId,
    base: u64,
    prefix: &str,
    skip: TypeId,
    depth: usize,
    out: &mut Vec<(String, Field, Option<TypeId>)>,
) {
    if depth > 3 {
        return;
    }
    for m in types.members(ty) {
        if out.len() >= MAX_RW_FIELDS || types.same(m.ty, skip) {
            continue;
        }
        let name = match &m.name {
            Some(n) if prefix.is_empty() => n.clone(),
            Some(n) => format!("{prefix}.{n}"),
            None => prefix.to_owned(),
        };
        let off = base + m.offset;
        let enum_ty =
            matches!(types.get(types.strip(m.ty)).kind, TypeKind::Enum(_)).then_some(m.ty);
        if let Some(f) = Field::scalar(types, m.ty, off, m.bits) {
            out.push((name, f, enum_ty));
        } else if let Some((e, Some(n))) = types.array(m.ty) {
            let stride = types.size_of(e).unwrap_or(0);
            for i in 0..n.min(MAX_RW_FIELDS as u64) {
                if let Some(f) = Field::scalar(types, e, off + i * stride, None) {
                    if out.len() < MAX_RW_FIELDS {
                        out.push((format!("{name}[{i}]"), f, None));
                    }
                }
            }
        } else if types.is_struct(m.ty) {
            rw_fields(types, m.ty, off, &name, skip, depth + 1, out);
        }
    }
}

/// Finds every lock, sleeplock and reader-writer lock in the globals, the buffer cache and the
/// allocator, and plans the bulk reads.
pub(super) fn build(
    path: PathBuf,
    types: Arc<Types>,
    image: Image,
    core: Core,
) -> Result<Xv6Source, Xv6Error> {
    let t = &*types;
    let spin = t.canonical(core.spinlock.ty);
    let sleep = core.sleeplock.as_ref().map(|s| t.canonical(s.ty));
    let rw_types = layout::rwlock_types(t, core.spinlock.ty);
    let mut wanted = vec![spin];
    wanted.extend(sleep);
    wanted.extend(rw_types.iter().copied());
    let mut statics: Vec<(String, u64)> = Vec::new();
    let mut sleeplocks: Vec<(String, u64)> = Vec::new();
    let mut rw_found: Vec<(String, u64, TypeId)> = Vec::new();
    let mut walker = Walker::new(t, wanted);
    walker.walk_globals(&mut |n| {
        if n.array.is_some() {
            return true;
        }
        if n.ty == spin {
            if statics.len() < MAX_LOCKS {
                statics.push((n.path.to_owned(), n.addr));
            }
            false
        } else {
            if Some(n.ty) == sleep {
                sleeplocks.push((n.path.to_owned(), n.addr));
            } else if rw_types.contains(&n.ty) {
                rw_found.push((n.path.to_owned(), n.addr, n.ty));
            }
            true
        }
    });

    let bcache = bcache::find_buf(t, core.sleeplock.as_ref().map(|s| s.ty), core.spinlock.ty)
        .and_then(|buf| bcache::find_bcache(t, buf, core.spinlock.ty));
    let kmem = kmem::find_kmem(t, &statics);

    let mut roles = HashMap::new();
    if let Some(k) = &kmem {
        for l in &k.lists {
            if let Some(a) = l.lock {
                roles.insert(a, Role::Allocator);
            }
        }
    }
    if let Some(b) = &bcache {
        for a in b.buckets.iter().filter_map(|d| d.lock).chain(b.evict_lock) {
            roles.insert(a, Role::Cache);
        }
    }
    // The lab never names the registry's own lock (`lock_locks`) nor registers it.
    let mut exempt = HashSet::new();
    if let Some(reg) = &core.registry {
        if let Some(g) = t.globals().iter().find(|g| g.address == reg.addr) {
            for other in t.globals().iter().filter(|o| o.unit == g.unit) {
                if t.same(other.ty, core.spinlock.ty) {
                    exempt.insert(other.address);
                }
            }
        }
    }

    let rwlocks = rw_found
        .into_iter()
        .filter_map(|(path, addr, ty)| {
            let lock = t
                .members(ty)
                .iter()
                .find(|m| t.same(m.ty, core.spinlock.ty))?;
            let mut fields = Vec::new();
            rw_fields(t, ty, 0, "", core.spinlock.ty, 0, &mut fields);
            Some(RwDef {
                lock: addr + lock.offset,
                path,
                addr,
                fields,
            })
        })
        .collect::<Vec<_>>();

    // What each snapshot reads in bulk.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let lsize = core.spinlock.size;
    ranges.extend(statics.iter().map(|(_, a)| (*a, lsize)));
    ranges.push((core.cpu.cpus.addr, core.cpu.cpus.len_bytes()));
    if let Some(p) = &core.proc {
        ranges.push((p.table.addr, p.table.len_bytes()));
    }
    if let Some(r) = &core.registry {
        ranges.push((r.addr, r.len_bytes()));
    }
    if let Some(s) = &core.sleeplock {
        let size = t.size_of(s.ty).unwrap_or(0);
        ranges.extend(sleeplocks.iter().map(|(_, a)| (*a, size)));
    }
    for r in &rwlocks {
        let size = r.fields.iter().map(|(_, f, _)| f.end()).max().unwrap_or(0);
        ranges.push((r.addr, size.max(lsize)));
    }
    if let Some(b) = &bcache {
        ranges.extend(b.pool_arrays.iter().map(|a| (a.addr, a.len_bytes())));
        for d in &b.buckets {
            match d.head {
                Some(bcache::Head::Sentinel(h)) => ranges.push((h, b.buf.size)),
                Some(bcache::Head::Pointer(h)) => ranges.push((h, 8)),
                None => {}
            }
        }
    }
    if let Some(k) = &kmem {
        ranges.extend(k.lists.iter().map(|l| (l.head, 8)));
    }
    for (a, f) in [core.ticks, core.panicked].into_iter().flatten() {
        ranges.push((a, f.end()));
    }
    let regions = Regions::new(ranges);

    let mut locks = Vec::with_capacity(statics.len());
    let mut ids = HashMap::with_capacity(statics.len());
    for (p, a) in statics {
        if ids.contains_key(&a) {
            continue; // a union member seen twice
        }
        ids.insert(a, locks.len() as u32);
        locks.push(LockDef {
            addr: a,
            path: Some(p),
            live: true,
            last: None,
        });
    }
    let free_walk_budget = ((image.ram.end - image.ram.start) / kmem::PAGE) as usize;
    Ok(Xv6Source {
        path,
        types,
        image,
        core,
        sleeplocks,
        rwlocks,
        bcache,
        kmem,
        roles,
        exempt,
        locks,
        ids,
        regions,
        names: HashMap::new(),
        confirmed: HashSet::new(),
        marks: Vec::new(),
        nharts: None,
        free_walk_budget,
        page_table: None,
    })
}

/// A lock's fields decoded.
pub(super) struct RawLock {
    pub locked: i64,
    pub name: u64,
    pub cpu: u64,
    pub nts: Option<i64>,
    pub n: Option<i64>,
}

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
                    live: true,
                    last: None,
                });
            }
        }
        Some(registered)
    }

    pub(super) fn read_snapshot(
        &mut self,
        mem: &mut dyn GuestMemory,
        now_ns: u64,
    ) -> Result<Snapshot, Xv6Error> {
        self.regions.read(mem)?;
        let mut cands: Vec<(Finding, u64)> = Vec::new();
        let registered = self.read_registry(mem, &mut cands);
        let cpus = self.core.cpu.cpus.clone();
        let size = self.core.spinlock.size;

        // Locks.
        let mut locks = Vec::with_capacity(self.locks.len());
        for id in 0..self.locks.len() {
            let (addr, path) = (self.locks[id].addr, self.locks[id].path.clone());
            let in_registry = registered.as_ref().is_some_and(|r| r.contains(&addr));
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
                self.locks[id].live = false;
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
            };
            findings::check_lock(
                self,
                mem,
                &state,
                &raw,
                name.as_deref(),
                in_registry,
                registered.is_some(),
                &mut cands,
            );
            self.locks[id].live = true;
            self.locks[id].last = Some(state.clone());
            locks.push(state);
        }

        // Processes and harts.
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
        let by_pid: HashMap<i64, ProcRef> = processes
            .iter()
            .map(|p| {
                (
                    p.pid,
                    ProcRef {
                        slot: p.slot,
                        pid: p.pid,
                        name: p.name.clone(),
                    },
                )
            })
            .collect();

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
            let started = c.context_ra.and_then(|f| f.word(b)).is_some_and(|v| v != 0);
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

        // Sleeplocks.
        let mut sleeplocks = Vec::new();
        let mut sleep_at: HashMap<u64, String> = HashMap::new();
        if let Some(s) = &self.core.sleeplock {
            let len = [Some(s.locked), s.pid, s.name]
                .iter()
                .flatten()
                .map(|f| f.end())
                .max()
                .unwrap_or(0);
            for (path, addr) in &self.sleeplocks {
                let Some(b) = self.regions.get(*addr, len) else {
                    continue;
                };
                let locked = s.locked.get(b).is_some_and(|v| v != 0);
                let pid = s.pid.and_then(|f| f.get(b)).unwrap_or(0);
                sleep_at.insert(*addr, path.clone());
                sleeplocks.push(crate::model::SleeplockSnapshot {
                    path: path.clone(),
                    name: s
                        .name
                        .and_then(|f| f.word(b))
                        .and_then(|p| self.image.constant_str(p)),
                    addr: *addr,
                    locked,
                    holder: if locked {
                        by_pid.get(&pid).cloned()
                    } else {
                        None
                    },
                    lock: self.lock_id(addr + s.lk),
                });
            }
        }

        // Reader-writer locks.
        let rwlocks = self
            .rwlocks
            .iter()
            .map(|r| {
                let len = r.fields.iter().map(|(_, f, _)| f.end()).max().unwrap_or(0);
                let b = fetch(&self.regions, mem, r.addr, len).unwrap_or_default();
                crate::model::RwLockSnapshot {
                    path: r.path.clone(),
                    addr: r.addr,
                    lock: self.lock_id(r.lock),
                    fields: r
                        .fields
                        .iter()
                        .map(|(name, f, enum_ty)| {
                            let value = f.get(&b);
                            let text = match (value, enum_ty) {
                                (None, _) => "?".into(),
                                (Some(v), Some(e)) => self
                                    .types
                                    .enumerator(*e, v)
                                    .map_or_else(|| v.to_string(), str::to_owned),
                                (Some(v), None) if f.size == 8 && !f.signed => format!("{v:#x}"),
                                (Some(v), None) => v.to_string(),
                            };
                            crate::model::FieldValue {
                                name: name.clone(),
                                value,
                                text,
                            }
                        })
                        .collect(),
                }
            })
            .collect();

        let bcache = self.read_bcache(mem, &by_pid, &mut cands);
        let kmem = self.read_kmem(mem, &mut cands);

        // Name what sleeping processes wait on.
        let ticks_addr = self.core.ticks.map(|(a, _)| a);
        for p in &mut processes {
            let Some(ch) = p.chan else { continue };
            p.chan_name = if Some(ch) == ticks_addr {
                Some("ticks".into())
            } else if let Some(path) = sleep_at.get(&ch) {
                Some(match (&bcache, self.bcache.as_ref()) {
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
                    .as_ref()
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

        let ticks = self.core.ticks.and_then(|(a, f)| {
            let b = self.regions.get(a, f.end())?;
            f.get(b).map(|v| v as u64)
        });
        let panicked = self.core.panicked.and_then(|(a, f)| {
            let b = self.regions.get(a, f.end())?;
            f.get(b)
        });

        let findings = findings::confirm(self, cands, mem.concurrent());
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

    fn read_bcache(
        &mut self,
        mem: &mut dyn GuestMemory,
        by_pid: &HashMap<i64, ProcRef>,
        cands: &mut Vec<(Finding, u64)>,
    ) -> Option<BcacheSnapshot> {
        let layout = self.bcache.as_ref()?;
        let bl = &layout.buf;
        let sl = self.core.sleeplock.as_ref();
        let mut bufs = Vec::with_capacity(layout.pool.len());
        for (i, &addr) in layout.pool.iter().enumerate() {
            let Some(b) = self.regions.get(addr, bl.size) else {
                continue;
            };
            let get = |f: Option<Field>| f.and_then(|f| f.get(b));
            let (locked, pid) = match (bl.sleeplock, sl) {
                (Some(o), Some(s)) => {
                    let at = |f: Field| Field {
                        offset: o + f.offset,
                        ..f
                    };
                    (
                        at(s.locked).get(b).is_some_and(|v| v != 0),
                        s.pid.and_then(|f| at(f).get(b)),
                    )
                }
                _ => (false, None),
            };
            let lock = match (bl.sleeplock, sl) {
                (Some(o), Some(s)) => self.lock_id(addr + o + s.lk),
                (Some(o), None) => self.lock_id(addr + o),
                _ => None,
            };
            bufs.push(BufSnapshot {
                index: i as u32,
                dev: get(bl.dev).unwrap_or(0) as u32,
                blockno: bl.blockno.get(b).unwrap_or(0) as u32,
                refcnt: bl.refcnt.get(b).unwrap_or(0) as u32,
                valid: get(bl.valid).is_some_and(|v| v != 0),
                last_use_ticks: get(bl.stamp).unwrap_or(0) as u64,
                bucket: None,
                lock,
                disk: bl.disk.and_then(|f| f.get(b)).map(|v| v != 0),
                holder_pid: if locked {
                    pid.filter(|p| by_pid.contains_key(p) || *p != 0)
                } else {
                    None
                },
                addr: Some(addr),
            });
        }
        let regions = &self.regions;
        let next = bl.next;
        let walked = layout.walk(&mut |a| word(regions, mem, a), &mut |i| {
            let addr = *layout.pool.get(i as usize)?;
            let f = next?;
            let b = regions.get(addr, f.end())?;
            f.word(b)
        });
        for (b, bucket) in bufs.iter_mut().zip(&walked.bucket_of) {
            b.bucket = *bucket;
        }
        cands.extend(walked.findings);
        // A block cached in two buffers.
        let mut holders: HashMap<(u32, u32), u32> = HashMap::new();
        for b in &bufs {
            if !(b.valid || b.refcnt > 0) {
                continue;
            }
            if let Some(first) = holders.insert((b.dev, b.blockno), b.index) {
                cands.push((
                    Finding {
                        kind: FindingKind::BlockCachedTwice,
                        path: layout
                            .pool_arrays
                            .first()
                            .map_or_else(|| "bcache".into(), |a| a.path.clone()),
                        message: format!(
                            "block {} (dev {}) is cached in two bufs, {first} and {}: writes to one are lost; this makes the lab's OK meaningless",
                            b.blockno, b.dev, b.index
                        ),
                    },
                    ((b.dev as u64) << 32) | b.blockno as u64,
                ));
            }
        }
        let buckets = layout
            .buckets
            .iter()
            .enumerate()
            .map(|(i, d)| BucketSnapshot {
                index: i as u32,
                lock: d.lock.and_then(|a| self.lock_id(a)),
                nbuf: walked.counts[i],
                ..Default::default()
            })
            .collect();
        Some(BcacheSnapshot {
            mode: if layout.buckets.len() > 1 {
                "hashed"
            } else {
                "global"
            }
            .into(),
            evict_lock: layout.evict_lock.and_then(|a| self.lock_id(a)),
            buckets,
            bufs,
            counts_unavailable: true,
            layout: Some(layout.description.clone()),
        })
    }

    fn read_kmem(
        &mut self,
        mem: &mut dyn GuestMemory,
        cands: &mut Vec<(Finding, u64)>,
    ) -> Option<KmemSnapshot> {
        let layout = self.kmem.as_ref()?;
        let regions = &self.regions;
        let heads: Vec<Option<u64>> = layout
            .lists
            .iter()
            .map(|l| word(regions, mem, l.head))
            .collect();
        let pages = self.image.heap_start()..self.image.ram.end;
        let walked = layout.walk(
            &heads,
            pages.clone(),
            self.image.ram.start,
            &mut self.marks,
            self.free_walk_budget,
            &mut |a| word(regions, mem, a),
        );
        cands.extend(walked.findings);
        let lists = layout
            .lists
            .iter()
            .zip(&walked.counts)
            .enumerate()
            .map(|(i, (l, &n))| KmemList {
                hart: i as u32,
                free_pages: n,
                lock: l.lock.and_then(|a| self.ids.get(&a).copied()),
                ..Default::default()
            })
            .collect();
        Some(KmemSnapshot {
            mode: if layout.lists.len() > 1 {
                "percpu"
            } else {
                "global"
            }
            .into(),
            lists,
            list_paths: layout.lists.iter().map(|l| l.path.clone()).collect(),
            pages_at_start: Some((pages.end.saturating_sub(pages.start)) / kmem::PAGE),
            incomplete: walked.incomplete,
        })
    }
}
