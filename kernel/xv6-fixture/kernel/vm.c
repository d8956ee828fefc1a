// The kernel's Sv39 page table: devices, the kernel image and RAM mapped at their own
// addresses, and each thread's kernel stack high up at KSTACK(i).

#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "riscv.h"
#include "defs.h"

pagetable_t kernel_pagetable;

extern char etext[];

// The PTE for va, creating the intermediate tables on the way when alloc is set.
pte_t *walk(pagetable_t pt, uint64 va, int alloc)
{
  if (va >= MAXVA)
    panic("walk: address beyond Sv39");
  for (int level = 2; level > 0; level--) {
    pte_t *pte = &pt[PX(level, va)];
    if (*pte & PTE_V) {
      pt = (pagetable_t)PTE2PA(*pte);
    } else {
      if (!alloc || (pt = kalloc()) == 0)
        return 0;
      memset(pt, 0, PGSIZE);
      *pte = PA2PTE(pt) | PTE_V;
    }
  }
  return &pt[PX(0, va)];
}

// Map [va, va+size) to [pa, pa+size) with permissions perm. Boot-time only: panics on failure.
void kvmmap(pagetable_t pt, uint64 va, uint64 pa, uint64 size, int perm)
{
  if (va % PGSIZE || pa % PGSIZE || size % PGSIZE || size == 0)
    panic("kvmmap: not page aligned");
  for (uint64 off = 0; off < size; off += PGSIZE) {
    pte_t *pte = walk(pt, va + off, 1);
    if (pte == 0)
      panic("kvmmap: out of memory");
    if (*pte & PTE_V)
      panic("kvmmap: already mapped");
    *pte = PA2PTE(pa + off) | perm | PTE_V;
  }
}

void kvminit(void)
{
  pagetable_t pt = kalloc();
  memset(pt, 0, PGSIZE);

  kvmmap(pt, UART0, UART0, PGSIZE, PTE_R | PTE_W);
  kvmmap(pt, VIRTIO0, VIRTIO0, PGSIZE, PTE_R | PTE_W);
  kvmmap(pt, PLIC, PLIC, 0x400000, PTE_R | PTE_W);
  kvmmap(pt, KERNBASE, KERNBASE, (uint64)etext - KERNBASE, PTE_R | PTE_X);
  kvmmap(pt, (uint64)etext, (uint64)etext, PHYSTOP - (uint64)etext, PTE_R | PTE_W);
  proc_mapstacks(pt);

  kernel_pagetable = pt;
}

// Turn paging on for this hart.
void kvminithart(void)
{
  sfence_vma();  // earlier page-table writes before the switch
  csr_write(satp, MAKE_SATP(kernel_pagetable));
  sfence_vma();  // no stale translations after it
}
