#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "riscv.h"
#include "defs.h"

static volatile int started = 0;
volatile int nharts = 0;  // harts that reached their scheduler

#ifdef BUG_DOUBLE_KFREE
// A page freed twice: the free list now holds it twice (and loops through it).
static void free_twice(void)
{
  char *a = kalloc();
  char *b = kalloc();
  kfree(a);
  kfree(b);
  kfree(a);
}
#endif

// Hart 0 sets up the machine while the others wait; then every hart runs its scheduler.
void main(void)
{
  if (cpuid() == 0) {
    consoleinit();
    printfinit();
    printf("\nxv6-fixture kernel is booting\n\n");
    kinit();          // free pages
    kvminit();        // kernel page table, thread stacks at KSTACK addresses
    kvminithart();    // paging on
    procinit();
    trapinit();
    trapinithart();
    plicinit();
    plicinithart();
    binit();
    virtio_disk_init();
#ifdef BUG_DOUBLE_KFREE
    free_twice();
#endif
    shellinit();      // the first thread: the shell
    __sync_synchronize();
    started = 1;
  } else {
    while (started == 0)
      ;
    __sync_synchronize();
    printf("hart %d starting\n", cpuid());
    kvminithart();
    trapinithart();
    plicinithart();
  }
  __sync_fetch_and_add(&nharts, 1);
  scheduler();
}
