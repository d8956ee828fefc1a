//! Lock statistics in the lab's format (`statslock`'s output), shared by the workloads.

use crate::abi;
use crate::spinlock::RawSpinLock;
use core::sync::atomic::Ordering;
use lockscope_abi::{name_str, MAX_LOCKS, NAME_LEN};

/// What the lab's statistics show of a lock, read from its table entry (the counters may still
/// move for locks other harts use, which is fine for a report).
#[derive(Clone, Copy)]
pub struct LockStats {
    pub name: [u8; NAME_LEN],
    pub spins: u64,
    pub acquires: u64,
}

pub fn lock_stats(id: u32) -> LockStats {
    let info = abi::lock(id);
    let mut name = [0; NAME_LEN];
    for (n, a) in name.iter_mut().zip(info.name()) {
        *n = a.load(Ordering::Relaxed);
    }
    LockStats {
        name,
        spins: info.spins().load(Ordering::Relaxed),
        acquires: info.acquires().load(Ordering::Relaxed),
    }
}

/// `lock: NAME: #test-and-set N #acquire() M`.
pub fn print_lock(l: &LockStats) {
    println!(
        "lock: {}: #test-and-set {} #acquire() {}",
        name_str(&l.name).unwrap_or("?"),
        l.spins,
        l.acquires
    );
}

/// Failed test-and-sets of these locks so far.
pub fn spins<'a>(locks: impl Iterator<Item = &'a RawSpinLock>) -> u64 {
    locks.map(|l| lock_stats(l.id()).spins).sum()
}

/// `--- lock kmem/bcache stats` and a line per lock; returns their failed test-and-sets.
pub fn print_section<'a>(locks: impl Iterator<Item = &'a RawSpinLock>) -> u64 {
    println!("--- lock kmem/bcache stats");
    let mut all = 0;
    for l in locks {
        let s = lock_stats(l.id());
        all += s.spins;
        print_lock(&s);
    }
    all
}

/// `--- top 5 contended locks:` over every registered lock, by failed test-and-sets.
pub fn print_top5() {
    let nlocks = abi::root()
        .nlocks()
        .load(Ordering::Acquire)
        .min(MAX_LOCKS as u32);
    println!("--- top 5 contended locks:");
    let mut top: [Option<LockStats>; 5] = [None; 5];
    for id in 0..nlocks {
        let s = lock_stats(id);
        if s.spins == 0 {
            continue;
        }
        // Insertion into a 5-slot list ordered by spins, largest first.
        let mut cur = Some(s);
        for slot in top.iter_mut() {
            match (slot.as_ref(), cur.as_ref()) {
                (None, _) => {
                    *slot = cur.take();
                    break;
                }
                (Some(t), Some(c)) if c.spins > t.spins => core::mem::swap(slot, &mut cur),
                _ => {}
            }
        }
    }
    for l in top.iter().flatten() {
        print_lock(l);
    }
}
