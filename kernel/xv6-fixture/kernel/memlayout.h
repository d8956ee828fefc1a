// Physical layout of QEMU's virt machine, and where this kernel maps things.
//
// 0x0C000000 PLIC
// 0x10000000 UART0 (16550), interrupt 10
// 0x10001000 virtio-mmio slot 0 (the disk), interrupt 1
// 0x80000000 RAM: QEMU -kernel loads the ELF here; free pages run from `end` to PHYSTOP
//
// Everything above is mapped at its own address. The per-thread kernel stacks are not: each
// lives high in the Sv39 address space, below an unused top page, with an unmapped guard page
// under it, so a stack overflow faults instead of scribbling on a neighbour.

#define UART0 0x10000000L
#define UART0_IRQ 10

#define VIRTIO0 0x10001000L
#define VIRTIO0_IRQ 1

#define PLIC 0x0c000000L
#define PLIC_PRIORITY (PLIC + 0x0)
#define PLIC_SENABLE(hart) (PLIC + 0x2080 + (hart) * 0x100)
#define PLIC_SPRIORITY(hart) (PLIC + 0x201000 + (hart) * 0x2000)
#define PLIC_SCLAIM(hart) (PLIC + 0x201004 + (hart) * 0x2000)

#define KERNBASE 0x80000000L
#define PHYSTOP (KERNBASE + 128 * 1024 * 1024)

#define PGSIZE 4096
#define MAXVA (1L << (9 + 9 + 9 + 12 - 1)) // top of the lower half of Sv39

// The top page is left unmapped (xv6 kernels keep a trampoline there).
#define TOPPAGE (MAXVA - PGSIZE)
// Kernel stack of proc[i]: one page, with an unmapped guard page below it.
#define KSTACK(i) (TOPPAGE - ((i) + 1) * 2 * PGSIZE)
