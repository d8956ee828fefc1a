// Reader-writer spinlock with writer priority (the 2025 locks lab's second part).
//
// The inner spinlock only guards the counters; waiting happens outside it, re-checking with
// plain loads, so waiters do not hammer the inner lock. A holder (reader or writer) keeps
// interrupts off from acquire to release, like a spinlock holder.

#include "types.h"
#include "param.h"
#include "spinlock.h"
#include "rwspinlock.h"
#include "riscv.h"
#include "proc.h"
#include "defs.h"

void initrwlock(struct rwspinlock *rw, char *name)
{
  initlock(&rw->lk, name);
  rw->readers = 0;
  rw->writer = 0;
  rw->waiting = 0;
  rw->wpid = 0;
}

void read_acquire(struct rwspinlock *rw)
{
  push_off();
  for (;;) {
    acquire(&rw->lk);
    // Writer priority: a waiting writer goes before any new reader.
    if (!rw->writer && rw->waiting == 0) {
      rw->readers++;
      release(&rw->lk);
      return;
    }
    release(&rw->lk);
    while (*(volatile int *)&rw->writer || *(volatile int *)&rw->waiting)
      ;
  }
}

void read_release(struct rwspinlock *rw)
{
  acquire(&rw->lk);
  if (rw->readers <= 0)
    panic("read_release: no readers");
  rw->readers--;
  release(&rw->lk);
  pop_off();
}

void write_acquire(struct rwspinlock *rw)
{
  push_off();
  acquire(&rw->lk);
  rw->waiting++;
  while (rw->writer || rw->readers > 0) {
    release(&rw->lk);
    while (*(volatile int *)&rw->writer || *(volatile int *)&rw->readers > 0)
      ;
    acquire(&rw->lk);
  }
  rw->waiting--;
  rw->writer = 1;
  rw->wpid = myproc() ? myproc()->pid : 0;
  release(&rw->lk);
}

void write_release(struct rwspinlock *rw)
{
  acquire(&rw->lk);
  if (!rw->writer)
    panic("write_release: no writer");
  rw->writer = 0;
  rw->wpid = 0;
  release(&rw->lk);
  pop_off();
}
