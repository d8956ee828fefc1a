//! [`AbiReader`]: snapshots and events of one lockscope kernel, read out of guest memory.

use lockscope_abi as abi;

use super::error::AbiError;
use super::layout::Layout;
use super::pod::{read_pod, read_pods};
use super::rings::{DrainStats, RingDrain};
use crate::memory::GuestMemory;
use crate::model::{
    BcacheSnapshot, BucketSnapshot, BufSnapshot, HartRun, HartSnapshot, Held, KmemList,
    KmemSnapshot, LockCounters, LockMeta, LockState, Outcome, PanicSnapshot, Snapshot, Spin,
    TargetConfig, TrapInfo,
};

fn lock_ref(id: u32) -> Option<u32> {
    (id != abi::NONE).then_some(id)
}

/// Reads snapshots and events of one lockscope kernel.
pub struct AbiReader {
    layout: Layout,
    rings: RingDrain,
}

impl AbiReader {
    /// Validates the root at `root_addr` (from the ELF symbol [`abi::ROOT_SYMBOL`]) against `ram`,
    /// the guest's physical RAM range. Fails with [`AbiError::NotReady`] while the kernel boots.
    pub fn open<M: GuestMemory + ?Sized>(
        mem: &mut M,
        root_addr: u64,
        ram: std::ops::Range<u64>,
    ) -> Result<Self, AbiError> {
        let layout = Layout::read(mem, root_addr, ram)?;
        let rings = RingDrain::new(&layout);
        Ok(Self { layout, rings })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Drains new events from every ring into `out`, reading at most `budget_bytes` of events.
    pub fn drain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        budget_bytes: usize,
        out: &mut Vec<crate::model::LockEvent>,
    ) -> Result<DrainStats, AbiError> {
        self.rings.drain(&self.layout, mem, budget_bytes, out)
    }

    /// Starts every ring cursor at the oldest event still in the ring, so that history before an
    /// attach is taken as far as it goes and not counted as lost.
    pub fn skip_to_history<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
    ) -> Result<(), AbiError> {
        self.rings.skip_to_history(&self.layout, mem)
    }

    pub fn lost_events(&self) -> u64 {
        self.rings.total_lost()
    }

    /// Reads everything but the rings. `now_ns` is the caller's best estimate of target time.
    pub fn snapshot<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        now_ns: u64,
    ) -> Result<Snapshot, AbiError> {
        let l = &self.layout;
        let root: abi::Root = read_pod(mem, l.root_addr)?;
        let ns = |t: u64| l.ns(t);

        let nlocks = root.nlocks;
        if nlocks > l.max_locks {
            return Err(AbiError::corrupt(
                "Root.nlocks",
                nlocks as u64,
                format!("more than the lock table's capacity {}", l.max_locks),
            ));
        }
        let infos: Vec<abi::LockInfo> = read_pods(mem, l.locks, nlocks as usize)?;
        let nharts = l.nharts;
        let mut locks = Vec::with_capacity(infos.len());
        for (i, info) in infos.iter().enumerate() {
            let name = abi::name_str(&info.name)
                .ok_or_else(|| AbiError::corrupt(format!("LockInfo[{i}].name"), 0, "not UTF-8"))?;
            let class = abi::name_str(&info.class)
                .ok_or_else(|| AbiError::corrupt(format!("LockInfo[{i}].class"), 0, "not UTF-8"))?;
            let holder = match info.holder {
                abi::NONE => None,
                h if h < l.max_harts => Some(h),
                h => {
                    return Err(AbiError::corrupt(
                        format!("LockInfo[{i}] ({name}).holder"),
                        h as u64,
                        format!("not a hart id (the kernel has at most {})", l.max_harts),
                    ))
                }
            };
            locks.push(LockState {
                meta: LockMeta {
                    id: i as u32,
                    name: name.to_owned(),
                    class: class.to_owned(),
                },
                counters: LockCounters {
                    acquires: info.acquires,
                    contended: info.contended,
                    spins: info.spins,
                    wait_total_ns: ns(info.wait_total),
                    wait_max_ns: ns(info.wait_max),
                    hold_total_ns: ns(info.hold_total),
                    hold_max_ns: ns(info.hold_max),
                },
                holder,
                index: crate::model::index_from_name(name),
                ..Default::default()
            });
        }
        let check_lock = |field: String, id: u32| -> Result<Option<u32>, AbiError> {
            match lock_ref(id) {
                Some(id) if id >= nlocks => Err(AbiError::corrupt(
                    field,
                    id as u64,
                    format!("not a registered lock (there are {nlocks})"),
                )),
                other => Ok(other),
            }
        };

        let states: Vec<abi::HartState> = read_pods(mem, l.harts, nharts as usize)?;
        let mut harts = Vec::with_capacity(states.len());
        for (h, s) in states.iter().enumerate() {
            let run = match abi::HartStatus::from_u32(s.status) {
                Some(abi::HartStatus::Offline) => HartRun::Offline,
                Some(abi::HartStatus::Booting) => HartRun::Booting,
                Some(abi::HartStatus::Running) => HartRun::Running,
                Some(abi::HartStatus::Idle) => HartRun::Idle,
                Some(abi::HartStatus::Halted) => HartRun::Halted,
                Some(abi::HartStatus::Panicked) => HartRun::Panicked,
                None => {
                    return Err(AbiError::corrupt(
                        format!("HartState[{h}].status"),
                        s.status as u64,
                        "not a hart status",
                    ))
                }
            };
            let shown = (s.depth as usize).min(abi::MAX_HELD);
            let mut held = Vec::with_capacity(shown);
            for (i, e) in s.held[..shown].iter().enumerate() {
                // A hart releasing a lock clears the entry and then lowers `depth`; a copy made
                // while it runs can see the cleared entry under the old depth. That is a torn
                // read, not corruption: the entries below are complete.
                let Some(lock) = check_lock(format!("HartState[{h}].held[{i}].lock"), e.lock)?
                else {
                    break;
                };
                held.push(Held {
                    lock,
                    pc: e.pc,
                    since_ns: Some(ns(e.since)),
                });
            }
            let spinning =
                check_lock(format!("HartState[{h}].spin_lock"), s.spin_lock)?.map(|lock| Spin {
                    lock,
                    pc: s.spin_pc,
                    since_ns: ns(s.spin_since),
                });
            harts.push(HartSnapshot {
                hart: h as u32,
                run,
                heartbeat: Some(s.heartbeat),
                held,
                held_truncated: s.depth as usize > abi::MAX_HELD,
                spinning,
                ops: Some(s.ops),
                regs: None,
                ..Default::default()
            });
        }

        let kmem_mode = abi::KallocMode::from_u32(root.kalloc_mode);
        let lists: Vec<abi::KmemHart> = read_pods(mem, l.kmem, nharts as usize)?;
        let mut kmem_lists = Vec::with_capacity(lists.len());
        for (h, k) in lists.iter().enumerate() {
            let lock = check_lock(format!("KmemHart[{h}].lock"), k.lock)?;
            if lock.is_none() && k.free_pages == 0 && k.allocs == 0 && k.frees == 0 {
                continue; // unused in this mode
            }
            kmem_lists.push(KmemList {
                hart: h as u32,
                free_pages: k.free_pages,
                allocs: k.allocs,
                frees: k.frees,
                steals: k.steals,
                pages_stolen: k.pages_stolen,
                lock,
            });
        }
        let kmem = Some(KmemSnapshot {
            mode: kmem_mode.map_or("unknown", |m| m.as_str()).to_owned(),
            lists: kmem_lists,
            ..Default::default()
        });

        let bcache = match &l.bcache {
            None => None,
            Some(b) => {
                let buckets: Vec<abi::BucketInfo> = read_pods(mem, b.buckets, b.nbucket as usize)?;
                let bufs: Vec<abi::BufInfo> = read_pods(mem, b.bufs, b.nbuf as usize)?;
                let mut bucket_rows = Vec::with_capacity(buckets.len());
                for (i, k) in buckets.iter().enumerate() {
                    bucket_rows.push(BucketSnapshot {
                        index: i as u32,
                        lock: check_lock(format!("BucketInfo[{i}].lock"), k.lock)?,
                        nbuf: k.nbuf,
                        hits: k.hits,
                        misses: k.misses,
                        steals: k.steals,
                    });
                }
                let mut buf_rows = Vec::with_capacity(bufs.len());
                for (i, f) in bufs.iter().enumerate() {
                    let bucket = match f.bucket {
                        abi::NONE => None,
                        k if k < b.nbucket => Some(k),
                        k => {
                            return Err(AbiError::corrupt(
                                format!("BufInfo[{i}].bucket"),
                                k as u64,
                                format!("there are {} buckets", b.nbucket),
                            ))
                        }
                    };
                    buf_rows.push(BufSnapshot {
                        index: i as u32,
                        dev: f.dev,
                        blockno: f.blockno,
                        refcnt: f.refcnt,
                        valid: f.valid != 0,
                        last_use_ticks: f.timestamp,
                        bucket,
                        lock: check_lock(format!("BufInfo[{i}].lock"), f.lock)?,
                        ..Default::default()
                    });
                }
                Some(BcacheSnapshot {
                    mode: abi::BcacheMode::from_u32(b.mode)
                        .map_or("unknown", |m| m.as_str())
                        .to_owned(),
                    evict_lock: check_lock("BcacheHeader.evict_lock".into(), b.evict_lock)?,
                    buckets: bucket_rows,
                    bufs: buf_rows,
                    ..Default::default()
                })
            }
        };

        let panic = self.read_panic(mem)?;

        let mut bootargs = vec![0u8; l.bootargs_len as usize];
        mem.read(l.bootargs, &mut bootargs)?;
        let bootargs = abi::name_str(&bootargs).unwrap_or("").to_owned();

        let outcome = match abi::Outcome::from_u32(root.live.outcome) {
            Some(abi::Outcome::Running) => Some(Outcome::Running),
            Some(abi::Outcome::Pass) => Some(Outcome::Pass),
            Some(abi::Outcome::Fail) => Some(Outcome::Fail),
            Some(abi::Outcome::Panic) => Some(Outcome::Panic),
            None => None,
        };

        Ok(Snapshot {
            time_ns: now_ns,
            ticks: Some(root.live.ticks),
            config: TargetConfig {
                bootargs,
                workload: abi::Workload::from_u32(root.workload).map(|w| w.as_str().to_owned()),
                kalloc: kmem_mode.map(|m| m.as_str().to_owned()),
                bcache: abi::BcacheMode::from_u32(root.bcache_mode).map(|m| m.as_str().to_owned()),
                bug: abi::Bug::from_u32(root.bug).map(|b| b.as_str().to_owned()),
                trace_on: root.flags & abi::FLAG_TRACE != 0,
                nharts,
            },
            phase: abi::Phase::from_u32(root.live.phase).map(|p| p.as_str().to_owned()),
            outcome,
            locks,
            harts,
            kmem,
            bcache,
            panic,
            ..Default::default()
        })
    }

    /// Reads the panic record alone: cheap enough to poll often.
    pub fn read_panic<M: GuestMemory + ?Sized>(
        &self,
        mem: &mut M,
    ) -> Result<Option<PanicSnapshot>, AbiError> {
        let l = &self.layout;
        let state: u32 = read_pod(mem, l.panic)?;
        if state != abi::PANIC_DONE {
            return Ok(None);
        }
        let rec: abi::PanicRecord = read_pod(mem, l.panic)?;
        if rec.hart >= l.max_harts {
            return Err(AbiError::corrupt(
                "PanicRecord.hart",
                rec.hart as u64,
                "not a hart id",
            ));
        }
        let nframes = rec.nframes as usize;
        if nframes > abi::PANIC_FRAMES {
            return Err(AbiError::corrupt(
                "PanicRecord.nframes",
                nframes as u64,
                format!("the record holds at most {}", abi::PANIC_FRAMES),
            ));
        }
        let msg_len = rec.msg_len as usize;
        if msg_len > abi::PANIC_MSG_LEN {
            return Err(AbiError::corrupt(
                "PanicRecord.msg_len",
                msg_len as u64,
                format!("the record holds at most {} bytes", abi::PANIC_MSG_LEN),
            ));
        }
        let message = String::from_utf8_lossy(&rec.msg[..msg_len]).into_owned();
        Ok(Some(PanicSnapshot {
            hart: rec.hart,
            message,
            trap: (rec.from_trap != 0).then_some(TrapInfo {
                scause: rec.scause,
                sepc: rec.sepc,
                stval: rec.stval,
            }),
            pc: rec.pc,
            fp: rec.fp,
            frames: rec.frames[..nframes].to_vec(),
            time_ns: Some(l.ns(rec.ts)),
        }))
    }
}
