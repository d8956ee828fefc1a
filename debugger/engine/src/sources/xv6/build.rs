//! Building the source from the discovered layout: every lock, sleeplock and reader-writer
//! lock in the globals, the buffer cache and the allocator, and the plan of bulk reads.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::symbols::types::{TypeId, TypeKind, Types};

use super::image::Image;
use super::layout::{self, Core, Field};
use super::regions::Regions;
use super::walk::Walker;
use super::{bcache, kmem, LockDef, Role, RwDef, Xv6Error, Xv6Source, MAX_LOCKS};

/// Fields shown per reader-writer lock.
const MAX_RW_FIELDS: usize = 64;

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
    // A sentinel head is a buf only in type: its sleeplock is never initialised nor used.
    if let Some(b) = &bcache {
        let heads: Vec<std::ops::Range<u64>> = b
            .buckets
            .iter()
            .filter_map(|d| match d.head {
                Some(bcache::Head::Sentinel(h)) => Some(h..h + b.buf.size),
                _ => None,
            })
            .collect();
        let in_head = |a: &u64| heads.iter().any(|r| r.contains(a));
        statics.retain(|(_, a)| !in_head(a));
        sleeplocks.retain(|(_, a)| !in_head(a));
    }
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
        free_walk_interval: super::FREE_WALK_INTERVAL,
        free_walk: None,
        free_walk_confirmed: HashSet::new(),
        page_table: None,
    })
}
