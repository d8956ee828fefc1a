// Machine-mode setup, run by every hart once, on its stack0 slice: hand the whole machine to
// supervisor mode and mret into main().
#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "riscv.h"
#include "defs.h"

void main(void);

// Boot stacks, one 4 KiB slice per hart (entry.S). Each hart's scheduler keeps running on it.
__attribute__((aligned(16))) char stack0[4096 * NCPU];

// Timer interrupts come straight to supervisor mode through the Sstc extension (stimecmp):
// allow S-mode to use stimecmp and to read `time`, and ask for the first tick.
static void timerinit(void)
{
  csr_set(mie, MIE_STIE);
  csr_set(CSR_MENVCFG, 1L << 63);  // STCE
  csr_set(mcounteren, 2);          // TM: S-mode may read time
  csr_write(CSR_STIMECMP, r_time() + TICK_CYCLES);
}

void start(void)
{
  uint64 s = csr_read(mstatus);
  s = (s & ~MSTATUS_MPP_MASK) | MSTATUS_MPP_S;  // mret goes to supervisor mode...
  csr_write(mstatus, s);
  csr_write(mepc, (uint64)main);                // ...at main
  csr_write(satp, 0);                           // with paging off until kvminithart()

  // Every exception and interrupt goes to supervisor mode.
  csr_write(medeleg, 0xffff);
  csr_write(mideleg, 0xffff);
  csr_set(sie, SIE_SEIE | SIE_STIE | SIE_SSIE);

#ifndef BUG_NO_PMP
  // One PMP entry covering all of memory. QEMU 6 and later deny supervisor mode every access
  // when no entry is configured: without this, the first fetch after mret faults, and the
  // kernel hangs before it prints anything.
  csr_write(pmpaddr0, 0x3fffffffffffffL);
  csr_write(pmpcfg0, 0xf);                      // R, W, X, top-of-range
#endif

  timerinit();

  uint64 id = csr_read(mhartid);
  asm volatile("mv tp, %0" : : "r"(id));        // cpuid() reads it from tp
  asm volatile("mret");
}
