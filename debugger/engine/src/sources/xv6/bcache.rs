//! The buffer cache, whatever the student called its parts: `struct buf` by its shape, the
//! pool of buffers, and the buckets in one of four shapes:
//!
//! - an array of bucket structs, each holding a spinlock and a list head (a sentinel `struct
//!   buf` or a `struct buf *`): `bcache.bucket[i].lock` / `bcache.bucket[i].head`;
//! - parallel arrays of locks and heads: `bcache.lock[i]` / `bcache.head[i]`;
//! - a 2-D array of bufs, one row per bucket, beside an array of locks;
//! - the starter's single list: one lock and one sentinel head.
//!
//! Each snapshot follows every bucket's list: bounded, cycle-safe, every pointer checked to land
//! on a buffer of the pool, a sentinel head never counted as a buffer.

use std::collections::HashMap;

use crate::model::{Finding, FindingKind};
use crate::symbols::types::{TypeId, TypeKind, Types};

use super::layout::{ArrayVar, Field};
use super::walk::{wildcard, Walker};

/// Buffers in a pool, at most (xv6 has 30; a student's cache a few hundred).
pub(super) const MAX_POOL: usize = 1 << 16;

pub(super) struct BufLayout {
    pub ty: TypeId,
    pub size: u64,
    pub valid: Option<Field>,
    pub disk: Option<Field>,
    pub dev: Option<Field>,
    pub blockno: Field,
    pub refcnt: Field,
    pub next: Option<Field>,
    /// Offset of its `struct sleeplock`.
    pub sleeplock: Option<u64>,
    /// A last-use time stamp, if the student kept one under a recognizable name.
    pub stamp: Option<Field>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Head {
    /// A `struct buf` used as the list's sentinel (circular, or NULL-terminated).
    Sentinel(u64),
    /// A `struct buf *` (NULL-terminated).
    Pointer(u64),
}

pub(super) struct BucketDef {
    pub lock: Option<u64>,
    pub head: Option<Head>,
    /// For a 2-D pool: the range of pool indices that are this bucket.
    pub row: Option<std::ops::Range<u32>>,
    pub path: String,
}

pub(super) struct BcacheLayout {
    pub buf: BufLayout,
    /// Every buffer's address; the index is `BufSnapshot::index`.
    pub pool: Vec<u64>,
    pub pool_index: HashMap<u64, u32>,
    /// The pool's arrays, for bulk reads.
    pub pool_arrays: Vec<ArrayVar>,
    pub buckets: Vec<BucketDef>,
    pub evict_lock: Option<u64>,
    pub description: String,
}

/// `struct buf`: integer `blockno` and `refcnt`, and a `data` array. Tagged `buf` wins.
pub(super) fn find_buf(
    types: &Types,
    sleeplock: Option<TypeId>,
    spinlock: TypeId,
) -> Option<BufLayout> {
    let mut candidates: Vec<TypeId> = types
        .structs()
        .into_iter()
        .filter(|&s| {
            Field::of(types, s, "blockno").is_some()
                && Field::of(types, s, "refcnt").is_some()
                && types.member(s, "data").is_some()
        })
        .collect();
    candidates.sort_by_key(|&s| types.get(s).name.as_deref() != Some("buf"));
    let ty = *candidates.first()?;
    let self_ptr = |name: &str| {
        let m = types.member(ty, name)?;
        let target = types.pointee(m.ty)??;
        types.same(target, ty).then(|| Field::of(types, ty, name))?
    };
    let stamp = [
        "timestamp",
        "lastuse",
        "last_use",
        "time",
        "tick",
        "ticks",
        "lru",
        "used",
    ]
    .iter()
    .find_map(|n| Field::of(types, ty, n));
    Some(BufLayout {
        ty,
        size: types.size_of(ty)?,
        valid: Field::of(types, ty, "valid"),
        disk: Field::of(types, ty, "disk"),
        dev: Field::of(types, ty, "dev"),
        blockno: Field::of(types, ty, "blockno")?,
        refcnt: Field::of(types, ty, "refcnt")?,
        next: self_ptr("next").or_else(|| {
            // A student's own name for the link: the first pointer to a buf.
            types.members(ty).iter().find_map(|m| {
                let t = types.pointee(m.ty)??;
                if types.same(t, ty) {
                    Field::scalar(types, m.ty, m.offset, None)
                } else {
                    None
                }
            })
        }),
        sleeplock: types
            .members(ty)
            .iter()
            .find(|m| sleeplock.is_some_and(|s| types.same(m.ty, s)) || types.same(m.ty, spinlock))
            .map(|m| m.offset),
        stamp,
    })
}

#[derive(Debug)]
struct Seen {
    path: String,
    addr: u64,
    kind: Seen1,
}

#[derive(Debug, PartialEq, Eq)]
enum Seen1 {
    Lock,
    Buf,
    BufPtr,
    /// An array: element kind, dimensions, stride of the innermost element.
    Array(Box<Seen1>, Vec<u64>, u64),
}

fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

fn last(path: &str) -> &str {
    let p = parent(path).len();
    path[p..].trim_start_matches('.')
}

fn is_element(path: &str) -> bool {
    path.ends_with(']')
}

fn head_name(path: &str) -> bool {
    let n = last(path).to_ascii_lowercase();
    ["head", "bucket", "table", "hash", "list"]
        .iter()
        .any(|k| n.contains(k))
}

/// Finds the pool and the buckets. `None` when the kernel has no buffer pool.
pub(super) fn find_bcache(types: &Types, buf: BufLayout, spinlock: TypeId) -> Option<BcacheLayout> {
    let buf_ptrs: Vec<TypeId> = types
        .ids()
        .filter(|&id| match types.get(id).kind {
            TypeKind::Pointer(Some(t)) => types.same(t, buf.ty),
            _ => false,
        })
        .collect();
    let spin = types.canonical(spinlock);
    let bufc = types.canonical(buf.ty);
    let ptrs: Vec<TypeId> = buf_ptrs.iter().map(|&p| types.canonical(p)).collect();
    let mut walker = Walker::new(types, [spinlock, buf.ty].into_iter().chain(buf_ptrs));
    let mut seen: Vec<Seen> = Vec::new();
    let kind_of = |t: TypeId| {
        if t == spin {
            Some(Seen1::Lock)
        } else if t == bufc {
            Some(Seen1::Buf)
        } else if ptrs.contains(&t) {
            Some(Seen1::BufPtr)
        } else {
            None
        }
    };
    walker.walk_globals(&mut |n| {
        let Some(k) = kind_of(n.array.map_or(n.ty, |(e, _)| e)) else {
            return false;
        };
        let kind = match n.array {
            None => k,
            Some((e, dims)) => {
                let dims: Option<Vec<u64>> = dims.iter().copied().collect();
                let (Some(dims), Some(stride)) = (dims, types.size_of(e)) else {
                    return false;
                };
                Seen1::Array(Box::new(k), dims, stride)
            }
        };
        seen.push(Seen {
            path: n.path.to_owned(),
            addr: n.addr,
            kind,
        });
        false
    });

    let arrays = |k: &Seen1| {
        seen.iter()
            .filter(|s| matches!(&s.kind, Seen1::Array(e, _, _) if **e == *k))
            .collect::<Vec<_>>()
    };
    let buf_arrays = arrays(&Seen1::Buf);
    let lock_arrays = arrays(&Seen1::Lock);
    let ptr_arrays = arrays(&Seen1::BufPtr);
    let dims_of = |s: &Seen| match &s.kind {
        Seen1::Array(_, d, st) => (d.clone(), *st),
        _ => (Vec::new(), 0),
    };

    let mut buckets: Vec<BucketDef> = Vec::new();
    let mut heads_array: Option<&Seen> = None;
    let mut description = String::new();
    let mut bucket_locks: Vec<u64> = Vec::new();

    // 1. An array of bucket structs: elements holding one lock and one head.
    type Member<'a> = (&'a str, Option<u64>, Option<Head>);
    let mut groups: HashMap<String, Vec<Member<'_>>> = HashMap::new();
    let mut by_parent: HashMap<&str, (Vec<&Seen>, Vec<&Seen>)> = HashMap::new();
    for s in &seen {
        let p = parent(&s.path);
        match s.kind {
            Seen1::Lock => by_parent.entry(p).or_default().0.push(s),
            Seen1::Buf | Seen1::BufPtr => by_parent.entry(p).or_default().1.push(s),
            _ => {}
        }
    }
    for (p, (locks, heads)) in &by_parent {
        if is_element(p) && locks.len() == 1 && heads.len() == 1 {
            let head = match heads[0].kind {
                Seen1::Buf => Head::Sentinel(heads[0].addr),
                _ => Head::Pointer(heads[0].addr),
            };
            groups
                .entry(wildcard(p))
                .or_default()
                .push((p, Some(locks[0].addr), Some(head)));
        }
    }
    if let Some((class, mut members)) = groups.into_iter().max_by_key(|(_, m)| m.len()) {
        members.sort_by_key(|(_, lock, _)| *lock);
        description = format!(
            "{class}: {} buckets, each a lock and a list head",
            members.len()
        );
        for (p, lock, head) in members {
            bucket_locks.extend(lock);
            buckets.push(BucketDef {
                lock,
                head,
                row: None,
                path: p.to_owned(),
            });
        }
    }

    // 2. Parallel arrays of locks and heads of the same length.
    if buckets.is_empty() {
        let mut pairs: Vec<(&Seen, &Seen)> = Vec::new();
        for l in &lock_arrays {
            let (ld, _) = dims_of(l);
            if ld.len() != 1 || ld[0] < 2 {
                continue;
            }
            let total = |s: &Seen| dims_of(s).0.iter().product::<u64>();
            let same_len = |h: &&&Seen| dims_of(h).0 == ld;
            let ptr = ptr_arrays.iter().find(same_len);
            // An array of sentinel bufs beside a separate pool: named like heads, or the
            // shorter of the two.
            let sentinel = if buf_arrays.len() > 1 {
                let of_len: Vec<&&Seen> = buf_arrays.iter().filter(same_len).collect();
                of_len
                    .iter()
                    .find(|b| head_name(&b.path))
                    .or_else(|| {
                        of_len.iter().find(|b| {
                            buf_arrays
                                .iter()
                                .any(|o| o.addr != b.addr && total(o) > ld[0])
                        })
                    })
                    .map(|b| **b)
            } else {
                None
            };
            if let Some(h) = ptr.copied().or(sentinel) {
                pairs.push((l, h));
            }
        }
        // Locks and heads in the same struct first.
        pairs.sort_by_key(|(l, h)| parent(&l.path) != parent(&h.path));
        if let Some(&(l, h)) = pairs.first() {
            let (d, lstride) = dims_of(l);
            let (_, hstride) = dims_of(h);
            let sentinel = matches!(&h.kind, Seen1::Array(e, _, _) if **e == Seen1::Buf);
            description = format!("{} and {}: {} buckets", l.path, h.path, d[0]);
            for i in 0..d[0] {
                let lock = l.addr + i * lstride;
                let head = h.addr + i * hstride;
                bucket_locks.push(lock);
                buckets.push(BucketDef {
                    lock: Some(lock),
                    head: Some(if sentinel {
                        Head::Sentinel(head)
                    } else {
                        Head::Pointer(head)
                    }),
                    row: None,
                    path: format!("{}[{i}]", h.path),
                });
            }
            if sentinel {
                heads_array = Some(h);
            }
        }
    }

    // The pool: every buf array that is not the heads.
    let pool_seen: Vec<&Seen> = buf_arrays
        .iter()
        .copied()
        .filter(|s| heads_array.is_none_or(|h| h.addr != s.addr))
        .collect();
    let mut pool = Vec::new();
    let mut pool_arrays = Vec::new();
    for s in &pool_seen {
        let (d, stride) = dims_of(s);
        let count = d.iter().try_fold(1u64, |a, &x| a.checked_mul(x))?;
        if pool.len() as u64 + count > MAX_POOL as u64 {
            return None;
        }
        pool_arrays.push(ArrayVar {
            path: s.path.clone(),
            addr: s.addr,
            count,
            stride,
        });
        pool.extend((0..count).map(|i| s.addr + i * stride));
    }
    if pool.is_empty() {
        return None;
    }

    // 3. A 2-D pool: one row per bucket, beside an array of as many locks.
    if buckets.is_empty() {
        let two_d = pool_seen.iter().find(|s| dims_of(s).0.len() == 2);
        if let Some(s) = two_d {
            let (d, _) = dims_of(s);
            let (rows, per) = (d[0], d[1]);
            let locks = lock_arrays
                .iter()
                .filter(|l| dims_of(l).0 == [rows])
                .min_by_key(|l| parent(&l.path) != parent(&s.path));
            let first = pool_arrays
                .iter()
                .take_while(|a| a.addr != s.addr)
                .map(|a| a.count as u32)
                .sum::<u32>();
            description = format!("{}: {rows} buckets of {per} bufs", s.path);
            for i in 0..rows as u32 {
                let lock = locks.map(|l| l.addr + i as u64 * dims_of(l).1);
                bucket_locks.extend(lock);
                let start = first + i * per as u32;
                buckets.push(BucketDef {
                    lock,
                    head: None,
                    row: Some(start..start + per as u32),
                    path: format!("{}[{i}]", s.path),
                });
            }
        }
    }

    // 4. The starter: one lock and one sentinel head beside the pool.
    if buckets.is_empty() {
        let pool_parent = parent(&pool_seen[0].path);
        let head = seen.iter().find(|s| {
            matches!(s.kind, Seen1::Buf | Seen1::BufPtr) && parent(&s.path) == pool_parent
        });
        let lock = seen
            .iter()
            .find(|s| s.kind == Seen1::Lock && parent(&s.path) == pool_parent);
        if let Some(h) = head {
            description = format!("{}: one list", h.path);
            bucket_locks.extend(lock.map(|l| l.addr));
            buckets.push(BucketDef {
                lock: lock.map(|l| l.addr),
                head: Some(match h.kind {
                    Seen1::Buf => Head::Sentinel(h.addr),
                    _ => Head::Pointer(h.addr),
                }),
                row: None,
                path: h.path.clone(),
            });
        }
    }

    // Another lock beside the pool (or the buckets) serializes eviction.
    let pool_parent = parent(&pool_seen[0].path).to_owned();
    let evict_lock = seen
        .iter()
        .find(|s| {
            s.kind == Seen1::Lock
                && parent(&s.path) == pool_parent
                && !bucket_locks.contains(&s.addr)
        })
        .map(|s| s.addr);
    if description.is_empty() {
        description = format!("{}: no buckets found", pool_seen[0].path);
    }
    let pool_index = pool
        .iter()
        .enumerate()
        .map(|(i, &a)| (a, i as u32))
        .collect();
    Some(BcacheLayout {
        buf,
        pool,
        pool_index,
        pool_arrays,
        buckets,
        evict_lock,
        description,
    })
}

/// What one snapshot's walk of the bucket lists found.
pub(super) struct Walked {
    /// Buffers per bucket.
    pub counts: Vec<u32>,
    /// The bucket each buffer is on (the first, if on several).
    pub bucket_of: Vec<Option<u32>>,
    /// Candidate findings with their address, for confirmation across snapshots.
    pub findings: Vec<(Finding, u64)>,
}

impl BcacheLayout {
    /// Follows every bucket's list. `read_word(addr)` reads 8 bytes of guest memory.
    pub(super) fn walk(
        &self,
        read_word: &mut dyn FnMut(u64) -> Option<u64>,
        buf_next: &mut dyn FnMut(u32) -> Option<u64>,
    ) -> Walked {
        let n = self.pool.len();
        let mut w = Walked {
            counts: vec![0; self.buckets.len()],
            bucket_of: vec![None; n],
            findings: Vec::new(),
        };
        let meaningless = "this makes the lab's OK meaningless";
        for (b, def) in self.buckets.iter().enumerate() {
            if let Some(row) = &def.row {
                for i in row.clone() {
                    if let Some(slot) = w.bucket_of.get_mut(i as usize) {
                        *slot = Some(b as u32);
                        w.counts[b] += 1;
                    }
                }
                continue;
            }
            let Some(head) = def.head else { continue };
            let (sentinel, first) = match head {
                Head::Sentinel(h) => {
                    let Some(next) = self.buf.next else { continue };
                    (Some(h), read_word(h + next.offset))
                }
                Head::Pointer(h) => (None, read_word(h)),
            };
            let Some(mut p) = first else { continue };
            let mut on_list = vec![false; n];
            // At most every buffer once, then the way back to the sentinel.
            for _ in 0..=n {
                if p == 0 || Some(p) == sentinel {
                    break;
                }
                let Some(&i) = self.pool_index.get(&p) else {
                    let what = match sentinel {
                        Some(_) => "neither a buffer nor the list's head",
                        None => "not a buffer",
                    };
                    w.findings.push((
                        Finding {
                            kind: FindingKind::BucketStrayPointer,
                            path: def.path.clone(),
                            message: format!(
                                "bucket {b} ({}): the list reaches {p:#x}, {what}; {meaningless}",
                                def.path
                            ),
                        },
                        p,
                    ));
                    break;
                };
                if on_list[i as usize] {
                    w.findings.push((
                        Finding {
                            kind: FindingKind::BucketCycle,
                            path: def.path.clone(),
                            message: format!(
                                "bucket {b} ({}): the list loops back to buf {i} ({p:#x}) without reaching its head; {meaningless}",
                                def.path
                            ),
                        },
                        p,
                    ));
                    break;
                }
                on_list[i as usize] = true;
                w.counts[b] += 1;
                match w.bucket_of[i as usize] {
                    None => w.bucket_of[i as usize] = Some(b as u32),
                    Some(other) => w.findings.push((
                        Finding {
                            kind: FindingKind::BufInTwoBuckets,
                            path: def.path.clone(),
                            message: format!(
                                "buf {i} ({p:#x}) is on the lists of buckets {other} and {b}; {meaningless}"
                            ),
                        },
                        p,
                    )),
                }
                match buf_next(i) {
                    Some(next) => p = next,
                    None => break,
                }
            }
        }
        w
    }
}
