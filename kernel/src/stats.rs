//! Lock statistics in the lab's format (`statslock`'s output), shared by the workloads.

use crate::abi::{self, a64};
use crate::spinlock::RawSpinLock;
use core::sync::atomic::Ordering;
use lockscope_abi::{name_str, LockInfo, MAX_LOCKS};

/// A lock's table entry, counters read atomically (they may still move for locks other harts
/// use, which is fine for a report).
pub fn lock_stats(id: u32) -> LockInfo {
    let info = abi::lock_info(id);
    // SAFETY: a registered entry of the lock table.
    unsafe {
        let mut l = *info;
        l.spins = a64(&raw mut (*info).spins).load(Ordering::Relaxed);
        l.acquires = a64(&raw mut (*info).acquires).load(Ordering::Relaxed);
        l
    }
}

/// `lock: NAME: #test-and-set N #acquire() M`.
pub fn print_lock(l: &LockInfo) {
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
    // SAFETY: field of the root static.
    let nlocks = unsafe { abi::a32(&raw mut (*abi::root()).nlocks) }
        .load(Ordering::Acquire)
        .min(MAX_LOCKS as u32);
    println!("--- top 5 contended locks:");
    let mut top: [Option<LockInfo>; 5] = [None; 5];
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
