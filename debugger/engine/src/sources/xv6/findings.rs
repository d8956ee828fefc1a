//! The lab's pitfalls that its own tests do not notice, checked on each lock, and the rule
//! that turns candidates into findings.
//!
//! Shared RAM is read while the guest runs: a list can be caught half-relinked and a buffer
//! half-reassigned. On such memory a candidate becomes a finding only when the next snapshot
//! finds the same thing at the same address again; a stopped guest is consistent, so its
//! candidates are findings at once.

use std::collections::HashSet;

use crate::memory::GuestMemory;
use crate::model::{Finding, FindingKind, LockState};

use super::image::{read_now, Place};
use super::{Role, VirtMemory, Xv6Source};

/// A lock's fields decoded.
pub(super) struct RawLock {
    pub locked: i64,
    pub name: u64,
    pub cpu: u64,
    pub nts: Option<i64>,
    pub n: Option<i64>,
}

const MEANINGLESS: &str = "this makes the lab's OK meaningless";

/// Checks one lock: where its name points, whether it was initialised and registered, its
/// counters, and whether the lab's statistics can count it.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_lock(
    src: &mut Xv6Source,
    mem: &mut dyn GuestMemory,
    state: &LockState,
    raw: &RawLock,
    name: Option<&str>,
    in_registry: bool,
    has_registry: bool,
    out: &mut Vec<(Finding, u64)>,
) {
    let addr = state.addr.unwrap_or(0);
    let p = state
        .path
        .clone()
        .unwrap_or_else(|| format!("{}@{addr:#x}", name.unwrap_or("lock")));
    let mut push = |kind, message: String| {
        out.push((
            Finding {
                kind,
                path: p.clone(),
                message,
            },
            addr,
        ))
    };
    let exempt = src.exempt.contains(&addr);
    let n = raw.n.unwrap_or(0);
    let nts = raw.nts.unwrap_or(0);
    let used = n != 0 || nts != 0 || raw.locked != 0;

    if raw.name == 0 {
        if used && !exempt {
            push(
                FindingKind::LockUninitialised,
                format!(
                    "lock {p} is used (n = {n}, nts = {nts}) but has no name: initlock was never called on it, so the lab's statistics never list it; {MEANINGLESS}"
                ),
            );
        }
    } else {
        let place = src.image.place(raw.name);
        match &place {
            Place::Stack(where_) => {
                let now = name_now(src, mem, raw.name, &place);
                push(
                    FindingKind::LockNameOnStack,
                    format!(
                        "lock {p}: its name points into a stack ({where_}), a local buffer of a function that has returned; it reads now as {now}; the lab's statistics can never match this lock; {MEANINGLESS}"
                    ),
                );
            }
            Place::Heap => {
                let now = name_now(src, mem, raw.name, &place);
                push(
                    FindingKind::LockNameOnHeap,
                    format!(
                        "lock {p}: its name points into kalloc'd memory at {:#x}, which can be freed and reused; it reads now as {now}; {MEANINGLESS}",
                        raw.name
                    ),
                );
            }
            Place::Invalid => push(
                FindingKind::LockNameInvalid,
                format!(
                    "lock {p}: its name pointer {:#x} points nowhere valid (neither the kernel image nor RAM); {MEANINGLESS}",
                    raw.name
                ),
            ),
            Place::Constant if name.is_none() => push(
                FindingKind::LockNameInvalid,
                format!(
                    "lock {p}: its name pointer {:#x} points into the kernel's constants but not at a string; {MEANINGLESS}",
                    raw.name
                ),
            ),
            _ => {}
        }
        if has_registry && !in_registry && state.path.is_some() && n > 0 && !exempt {
            push(
                FindingKind::LockNotRegistered,
                format!(
                    "lock {p} ({}) is used but not in the lab's locks[]: it was not set up with initlock, or locks[] was full; the lab's statistics never count it; {MEANINGLESS}",
                    name.unwrap_or("no name")
                ),
            );
        }
    }
    for (what, v) in [("n (#acquire)", raw.n), ("nts (#test-and-set)", raw.nts)] {
        if let Some(v) = v.filter(|&v| v < 0) {
            push(
                FindingKind::CounterWrapped,
                format!(
                    "lock {p}: {what} = {v}: the int wrapped past 2^31 (it counts {} as unsigned); the lab's totals over it are wrong; {MEANINGLESS}",
                    v as u32
                ),
            );
        }
    }
    let role = src.roles.get(&addr).copied();
    if let (Some(role), Some(name)) = (role, name) {
        let (prefix, what, test) = match role {
            Role::Allocator => ("kmem", "allocator", "kalloctest"),
            Role::Cache => ("bcache", "buffer-cache", "bcachetest"),
        };
        if !name.starts_with(prefix) {
            push(
                FindingKind::LockNameNotCounted,
                format!(
                    "{what} lock {p} is named {name:?}, which does not start with {prefix:?}: the lab's statslock skips it, so {test}'s tot= does not measure its contention; {MEANINGLESS}"
                ),
            );
        }
    }
}

/// What a lock's name reads as now; a kernel stack is read through the kernel page table.
fn name_now(src: &mut Xv6Source, mem: &mut dyn GuestMemory, ptr: u64, place: &Place) -> String {
    if matches!(place, Place::Stack(_)) && !src.image.ram.contains(&ptr) {
        return match src.kernel_page_table(mem) {
            Ok(mut t) => read_now(&mut VirtMemory { mem, table: &mut t }, &src.image, ptr),
            Err(_) => "nothing readable (no kernel page table yet)".into(),
        };
    }
    read_now(mem, &src.image, ptr)
}

/// What identifies a candidate across snapshots: kind, path, and the address it is about.
pub(super) type Key = (FindingKind, String, u64);

/// Keeps the candidates that count as findings now (see the module docs), remembering this
/// look's in `seen` for the next.
pub(super) fn confirm(
    seen: &mut HashSet<Key>,
    cands: Vec<(Finding, u64)>,
    concurrent: bool,
) -> Vec<Finding> {
    let mut now = HashSet::with_capacity(cands.len());
    let mut out = Vec::new();
    for (f, key) in cands {
        let k = (f.kind, f.path.clone(), key);
        if !now.insert(k.clone()) {
            continue;
        }
        if !concurrent || seen.contains(&k) {
            out.push(f);
        }
    }
    *seen = now;
    out
}
