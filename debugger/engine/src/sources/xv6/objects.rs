//! Sleeplocks, reader-writer locks, the buffer cache and the page allocator in one snapshot.

use std::collections::HashMap;
use std::time::Instant;

use crate::memory::GuestMemory;
use crate::model::{
    BcacheSnapshot, BucketSnapshot, BufSnapshot, FieldValue, Finding, FindingKind, KmemList,
    KmemSnapshot, ProcRef, RwLockSnapshot, SleeplockSnapshot,
};

use super::layout::Field;
use super::regions::{fetch, word};
use super::{findings, kmem, Xv6Source};

impl Xv6Source {
    /// Every sleeplock, and where each is (to name channels).
    pub(super) fn read_sleeplocks(
        &self,
        by_pid: &HashMap<i64, ProcRef>,
    ) -> (Vec<SleeplockSnapshot>, HashMap<u64, String>) {
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
                sleeplocks.push(SleeplockSnapshot {
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

        (sleeplocks, sleep_at)
    }

    /// Every reader-writer lock with its author's fields.
    pub(super) fn read_rwlocks(&self, mem: &mut dyn GuestMemory) -> Vec<RwLockSnapshot> {
        self.rwlocks
            .iter()
            .map(|r| {
                let len = r.fields.iter().map(|(_, f, _)| f.end()).max().unwrap_or(0);
                let b = fetch(&self.regions, mem, r.addr, len).unwrap_or_default();
                RwLockSnapshot {
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
                            FieldValue {
                                name: name.clone(),
                                value,
                                text,
                            }
                        })
                        .collect(),
                }
            })
            .collect()
    }

    pub(super) fn read_bcache(
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

    /// The free lists, walked at most every `free_walk_interval`; with the walk's confirmed
    /// findings.
    pub(super) fn read_kmem(
        &mut self,
        mem: &mut dyn GuestMemory,
        concurrent: bool,
    ) -> (Option<KmemSnapshot>, Vec<Finding>) {
        let Some(layout) = self.kmem.as_ref() else {
            return (None, Vec::new());
        };
        if let Some((at, snap, found)) = &self.free_walk {
            if at.elapsed() < self.free_walk_interval {
                return (Some(snap.clone()), found.clone());
            }
        }
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
        let snap = KmemSnapshot {
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
        };
        let found = findings::confirm(&mut self.free_walk_confirmed, walked.findings, concurrent);
        self.free_walk = Some((Instant::now(), snap.clone(), found.clone()));
        (Some(snap), found)
    }
}
