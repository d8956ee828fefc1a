// Supervisor-mode traps: device and timer interrupts, and exceptions, which are fatal.

#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "riscv.h"
#include "spinlock.h"
#include "proc.h"
#include "defs.h"

struct spinlock tickslock;
uint ticks;  // timer ticks since boot, counted by hart 0

void kernelvec(void);

void trapinit(void)
{
  initlock(&tickslock, "time");
}

void trapinithart(void)
{
  csr_write(stvec, (uint64)kernelvec);
}

static void clockintr(void)
{
  if (cpuid() == 0) {
    acquire(&tickslock);
    ticks++;
    wakeup(&ticks);
    release(&tickslock);
  }
  // Asking for the next tick also clears this one.
  csr_write(CSR_STIMECMP, r_time() + TICK_CYCLES);
}

// 2 for a timer tick, 1 for a device interrupt, 0 when scause is not an interrupt we know.
static int devintr(uint64 scause)
{
  if (scause == SCAUSE_EXTERNAL) {
    int irq = plic_claim();
    if (irq == UART0_IRQ)
      uartintr();
    else if (irq == VIRTIO0_IRQ)
      virtio_disk_intr();
    else if (irq)
      printf("devintr: unexpected interrupt %d\n", irq);
    if (irq)
      plic_complete(irq);
    return 1;
  }
  if (scause == SCAUSE_TIMER) {
    clockintr();
    return 2;
  }
  return 0;
}

// Called by kernelvec on whatever kernel stack was in use.
void kerneltrap(void)
{
  uint64 sepc = csr_read(sepc);
  uint64 sstatus = csr_read(sstatus);
  uint64 scause = csr_read(scause);

  if ((sstatus & SSTATUS_SPP) == 0)
    panic("kerneltrap: not from supervisor mode");
  if (intr_get())
    panic("kerneltrap: interrupts enabled");

  int which = devintr(scause);
  if (which == 0) {
    // An exception: a bad pointer, usually. sepc is the faulting instruction, stval the
    // address it touched.
    printf("scause=0x%lx sepc=0x%lx stval=0x%lx\n", scause, sepc, csr_read(stval));
    panic("kerneltrap");
  }

  // Time slice over: let another thread have this hart.
  if (which == 2 && myproc() != 0)
    yield();

  // yield() may have taken other traps; restore what kernelvec's sret needs.
  csr_write(sepc, sepc);
  csr_write(sstatus, sstatus);
}
