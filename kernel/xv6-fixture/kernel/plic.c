// The platform-level interrupt controller: routes the UART and disk interrupts to harts.

#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "riscv.h"
#include "defs.h"

#define word(a) (*(volatile uint32 *)(a))

void plicinit(void)
{
  // A source with priority 0 never interrupts.
  word(PLIC_PRIORITY + UART0_IRQ * 4) = 1;
  word(PLIC_PRIORITY + VIRTIO0_IRQ * 4) = 1;
}

// Let this hart's supervisor context take both interrupts.
void plicinithart(void)
{
  int hart = cpuid();
  word(PLIC_SENABLE(hart)) = (1 << UART0_IRQ) | (1 << VIRTIO0_IRQ);
  word(PLIC_SPRIORITY(hart)) = 0;  // threshold: accept every priority
}

int plic_claim(void)
{
  return word(PLIC_SCLAIM(cpuid()));
}

void plic_complete(int irq)
{
  word(PLIC_SCLAIM(cpuid())) = irq;
}
