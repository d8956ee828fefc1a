//! The Sv39 kernel page table: RAM and devices direct-mapped, page 0 unmapped so a null
//! dereference traps with a page fault (scause 0xd or 0xf), as in xv6.

use crate::kalloc;
use crate::layout::*;
use core::sync::atomic::{AtomicUsize, Ordering};

const PTE_V: usize = 1 << 0;
const PTE_R: usize = 1 << 1;
const PTE_W: usize = 1 << 2;
const PTE_X: usize = 1 << 3;
/// Accessed and dirty preset: QEMU would fault otherwise only on hardware without A/D updates,
/// and setting them keeps every implementation happy.
const PTE_AD: usize = (1 << 6) | (1 << 7);

/// Root page table, shared by all harts.
static KPAGETABLE: AtomicUsize = AtomicUsize::new(0);
/// End of the RAM the page table covers.
static PHYSTOP: AtomicUsize = AtomicUsize::new(0);

fn px(level: usize, va: usize) -> usize {
    (va >> (12 + 9 * level)) & 0x1ff
}

fn pa_to_pte(pa: usize) -> usize {
    (pa >> 12) << 10
}

fn pte_to_pa(pte: usize) -> usize {
    (pte >> 10) << 12
}

/// The leaf PTE for `va`, allocating intermediate tables.
fn walk(root: usize, va: usize) -> *mut usize {
    let mut table = root as *mut usize;
    for level in [2, 1] {
        // SAFETY: `table` is a page-table page (4096 bytes, 512 entries); px() < 512.
        let pte = unsafe { table.add(px(level, va)) };
        // SAFETY: as above.
        let v = unsafe { *pte };
        if v & PTE_V != 0 {
            table = pte_to_pa(v) as *mut usize;
        } else {
            let page = kalloc::alloc().expect("vm: out of memory for page tables");
            // SAFETY: a fresh page from kalloc, exclusively ours.
            unsafe {
                core::ptr::write_bytes(page, 0, PGSIZE);
                *pte = pa_to_pte(page as usize) | PTE_V;
            }
            table = page as *mut usize;
        }
    }
    // SAFETY: leaf table page; px() < 512.
    unsafe { table.add(px(0, va)) }
}

fn map(root: usize, va: usize, size: usize, pa: usize, perm: usize) {
    let mut a = pg_round_down(va);
    let last = pg_round_down(va + size - 1);
    let mut pa = pa;
    loop {
        let pte = walk(root, a);
        // SAFETY: `walk` returns a valid PTE slot.
        unsafe {
            assert!(*pte & PTE_V == 0, "vm: remap {a:#x}");
            *pte = pa_to_pte(pa) | perm | PTE_V | PTE_AD;
        }
        if a == last {
            break;
        }
        a += PGSIZE;
        pa += PGSIZE;
    }
}

/// Hart 0, once, after kalloc::init: builds the kernel page table.
pub fn init(phystop: usize) {
    let root = kalloc::alloc().expect("vm: out of memory") as usize;
    // SAFETY: a fresh page from kalloc.
    unsafe { core::ptr::write_bytes(root as *mut u8, 0, PGSIZE) };
    map(root, TEST_DEVICE, PGSIZE, TEST_DEVICE, PTE_R | PTE_W);
    map(root, PLIC, PLIC_SIZE, PLIC, PTE_R | PTE_W);
    map(root, UART0, PGSIZE, UART0, PTE_R | PTE_W);
    map(root, VIRTIO0, VIRTIO_SLOTS * PGSIZE, VIRTIO0, PTE_R | PTE_W);
    let etext = etext();
    map(root, KERNBASE, etext - KERNBASE, KERNBASE, PTE_R | PTE_X);
    map(root, etext, phystop - etext, etext, PTE_R | PTE_W);
    PHYSTOP.store(phystop, Ordering::Relaxed);
    KPAGETABLE.store(root, Ordering::Release);
}

/// Every hart: turn on paging with the kernel page table.
pub fn init_hart() {
    let root = KPAGETABLE.load(Ordering::Acquire);
    assert!(root != 0, "vm: page table not built");
    // SAFETY: the table direct-maps the kernel, its stacks and the devices it uses, so execution
    // continues at the same addresses.
    unsafe { crate::arch::enable_paging(root >> 12) };
}
