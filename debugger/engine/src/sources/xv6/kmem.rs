//! The page allocator's free lists, one global or one per CPU, whatever their names: every
//! global pointer to xv6's `struct run` (a small struct whose member points to its own type)
//! is a list head, and the spinlock beside it is its lock. Each snapshot walks the lists,
//! bounded by the number of pages in RAM, checking that every pointer is a free page.

use crate::model::{Finding, FindingKind};
use crate::symbols::types::{TypeId, TypeKind, Types};

use super::walk::Walker;

pub(super) const PAGE: u64 = 4096;

pub(super) struct FreeList {
    pub path: String,
    /// Address of the head pointer.
    pub head: u64,
    pub lock: Option<u64>,
}

pub(super) struct KmemLayout {
    pub lists: Vec<FreeList>,
    /// Offset of the link in `struct run`.
    pub next: u64,
}

/// `struct run`: tagged `run` if possible, else any struct of at most 16 bytes with a member
/// pointing to its own type.
fn find_run(types: &Types) -> Option<(TypeId, u64)> {
    let mut candidates: Vec<(TypeId, u64)> = types
        .structs()
        .into_iter()
        .filter(|&s| types.size_of(s).is_some_and(|n| n <= 16))
        .filter_map(|s| {
            let m = types.members(s).iter().find(|m| {
                types
                    .pointee(m.ty)
                    .flatten()
                    .is_some_and(|t| types.same(t, s))
            })?;
            Some((s, m.offset))
        })
        .collect();
    candidates.sort_by_key(|&(s, _)| types.get(s).name.as_deref() != Some("run"));
    candidates.first().copied()
}

/// The spinlock that guards the value at `path`: a lock member of the same struct
/// (`kmem[2].freelist` -> `kmem[2].lock`), or the same element of a parallel array of locks
/// (`kmem.freelist[2]` -> `kmem.lock[2]`).
pub(super) fn sibling_lock(path: &str, locks: &[(String, u64)]) -> Option<u64> {
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    if let Some(base) = path.strip_suffix(']') {
        let open = base.rfind('[')?;
        let index = &path[open..];
        let array = &base[..open];
        let parent = &array[..array.rfind('.')?];
        return locks
            .iter()
            .find(|(p, _)| {
                p.strip_prefix(parent)
                    .and_then(|r| r.strip_prefix('.'))
                    .and_then(|r| r.strip_suffix(index))
                    .is_some_and(ident)
            })
            .map(|(_, a)| *a);
    }
    let parent = &path[..path.rfind(['.', '['])?];
    locks
        .iter()
        .find(|(p, _)| {
            p.strip_prefix(parent)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(ident)
        })
        .map(|(_, a)| *a)
}

pub(super) fn find_kmem(types: &Types, locks: &[(String, u64)]) -> Option<KmemLayout> {
    let (run, next) = find_run(types)?;
    let ptrs: Vec<TypeId> = types
        .ids()
        .filter(
            |&id| matches!(types.get(id).kind, TypeKind::Pointer(Some(t)) if types.same(t, run)),
        )
        .collect();
    let mut lists = Vec::new();
    let mut walker = Walker::new(types, ptrs);
    walker.walk_globals(&mut |n| {
        if n.array.is_none() {
            lists.push(FreeList {
                path: n.path.to_owned(),
                head: n.addr,
                lock: sibling_lock(n.path, locks),
            });
        }
        true
    });
    (!lists.is_empty()).then_some(KmemLayout { lists, next })
}

/// One snapshot's walk of the free lists.
pub(super) struct Walked {
    pub counts: Vec<u64>,
    /// A walk stopped before the end of its list.
    pub incomplete: bool,
    pub findings: Vec<(Finding, u64)>,
}

impl KmemLayout {
    /// Walks every list. `heads` are the head pointers' values; pages must lie in `pages`;
    /// `marks` is scratch space (one entry per page of RAM), reused across snapshots; at most
    /// `budget` nodes are read in all.
    pub(super) fn walk(
        &self,
        heads: &[Option<u64>],
        pages: std::ops::Range<u64>,
        ram_start: u64,
        marks: &mut Vec<u16>,
        mut budget: usize,
        read_word: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> Walked {
        let meaningless = "this makes the lab's OK meaningless";
        let npages = (pages.end.saturating_sub(ram_start) / PAGE) as usize;
        marks.clear();
        marks.resize(npages, 0);
        let mut w = Walked {
            counts: vec![0; self.lists.len()],
            incomplete: false,
            findings: Vec::new(),
        };
        for (l, list) in self.lists.iter().enumerate() {
            let Some(mut p) = heads.get(l).copied().flatten() else {
                w.incomplete = true;
                continue;
            };
            let tag = (l + 1).min(u16::MAX as usize) as u16;
            while p != 0 {
                if budget == 0 {
                    w.incomplete = true;
                    break;
                }
                budget -= 1;
                if p % PAGE != 0 || !pages.contains(&p) {
                    w.findings.push((
                        Finding {
                            kind: FindingKind::FreeListStrayPointer,
                            path: list.path.clone(),
                            message: format!(
                                "free list {}: reaches {p:#x}, which is not a free page (pages are {:#x}..{:#x}); {meaningless}",
                                list.path, pages.start, pages.end
                            ),
                        },
                        p,
                    ));
                    w.incomplete = true;
                    break;
                }
                let page = ((p - ram_start) / PAGE) as usize;
                let Some(mark) = marks.get_mut(page) else {
                    break;
                };
                if *mark == tag {
                    w.findings.push((
                        Finding {
                            kind: FindingKind::PageTwiceOnList,
                            path: list.path.clone(),
                            message: format!(
                                "free list {}: page {p:#x} is on it twice (freed twice: a double kfree), so the list loops; {meaningless}",
                                list.path
                            ),
                        },
                        p,
                    ));
                    w.incomplete = true;
                    break;
                }
                if *mark != 0 {
                    let other = &self.lists[(*mark - 1) as usize].path;
                    w.findings.push((
                        Finding {
                            kind: FindingKind::PageOnTwoLists,
                            path: list.path.clone(),
                            message: format!(
                                "page {p:#x} is on two free lists, {other} and {}; {meaningless}",
                                list.path
                            ),
                        },
                        p,
                    ));
                    w.incomplete = true;
                    break;
                }
                *mark = tag;
                w.counts[l] += 1;
                match read_word(p + self.next) {
                    Some(n) => p = n,
                    None => {
                        w.incomplete = true;
                        break;
                    }
                }
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::sibling_lock;

    #[test]
    fn locks_beside_their_lists() {
        let locks = vec![
            ("kmem[0].lock".to_string(), 1),
            ("kmem[1].lock".to_string(), 2),
            ("pk.locks[0]".to_string(), 3),
            ("pk.locks[1]".to_string(), 4),
            ("g.lock".to_string(), 5),
        ];
        assert_eq!(sibling_lock("kmem[1].freelist", &locks), Some(2));
        assert_eq!(sibling_lock("pk.heads[1]", &locks), Some(4));
        assert_eq!(sibling_lock("g.freelist", &locks), Some(5));
        assert_eq!(sibling_lock("lonely", &locks), None);
    }
}
