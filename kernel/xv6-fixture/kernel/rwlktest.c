// rwlktest: readers and one writer share a pair of counters under a rwspinlock. The writer
// keeps them equal; readers check that they never see them differ, that no writer is inside
// with them, and that readers do get in together. Readers read until the writer is done, and
// the writer only writes while a reader is inside.
//
// On one hart no reader can be inside while the writer runs (holders keep interrupts off), so
// there the writer writes between yields and each reader reads a fixed READS_ONE_HART times:
// a fixed amount of work (lockscope's plugin benchmark measures it under -icount).

#include "types.h"
#include "param.h"
#include "riscv.h"
#include "spinlock.h"
#include "rwspinlock.h"
#include "defs.h"

#define WRITES 300
#define HOLD 400  // a reader's work inside the lock, before it checks the pair
#define READS_ONE_HART 20000

struct rwspinlock rwlk;
static volatile uint64 pair_a, pair_b;
static volatile int inside_readers, inside_writer, max_readers, errors, writes_done, reads;
static volatile int started;  // start barrier: threads reach their harts up to a tick apart
static int nw;
static int one_hart;

static void pause(int n)
{
  for (volatile int i = 0; i < n; i++)
    ;
}

// What a reader does inside: check the pair. With the re-entry bug the check takes the read
// lock again, which deadlocks when a writer started waiting in between.
static void check_pair(void)
{
#ifdef BUG_RW_REENTER
  read_acquire(&rwlk);
#endif
  if (pair_a != pair_b)
    __sync_fetch_and_add(&errors, 1);
#ifdef BUG_RW_REENTER
  read_release(&rwlk);
#endif
}

static void reader(uint64 arg)
{
  int n = 0;
  spin_barrier(&started, nw);
  while (one_hart ? n < READS_ONE_HART : !writes_done) {
    read_acquire(&rwlk);
    int in = __sync_add_and_fetch(&inside_readers, 1);
    if (in > max_readers)
      max_readers = in;  // a racy maximum is fine: it only needs to reach 2
    if (inside_writer)
      __sync_fetch_and_add(&errors, 1);
    pause(HOLD);
    // Until readers have once been inside together, linger a little (bounded) so the other
    // reader can join: on a loaded host the harts' threads may otherwise never overlap.
    for (int k = 0; k < 200 && max_readers < 2 && !one_hart; k++)
      pause(HOLD);
    check_pair();
    __sync_fetch_and_sub(&inside_readers, 1);
    read_release(&rwlk);
    n++;
  }
  __sync_fetch_and_add(&reads, n);
}

static void writer(uint64 arg)
{
  spin_barrier(&started, nw);
  for (int i = 0; i < WRITES; i++) {
    // Write while a reader is inside: each write waits for readers to leave and holds new
    // ones back (writer priority).
    while (inside_readers == 0 && !one_hart)
      yield();
    if (one_hart)
      yield();
    write_acquire(&rwlk);
    inside_writer = 1;
    if (inside_readers != 0)
      __sync_fetch_and_add(&errors, 1);
    pair_a++;
    pause(20);
    pair_b++;
    inside_writer = 0;
    write_release(&rwlk);
  }
  writes_done = 1;
}

void rwlktest(void)
{
  int n = nw = nworkers();
  int nreaders = n - 1;
  one_hart = nharts == 1;

  printf("start rwlktest: %d readers, 1 writer\n", nreaders);
  freelock(&rwlk.lk);  // registered by an earlier run
  initrwlock(&rwlk, "rwlk");
  pair_a = pair_b = 0;
  inside_readers = inside_writer = max_readers = errors = writes_done = reads = started = 0;
  for (int i = 0; i < nreaders; i++)
    spawn("rwreader", reader, i);
  spawn("rwwriter", writer, 0);
  waitall(n);
  printf("rwlktest: %d reads, %d writes, up to %d readers inside at once\n",
         reads, WRITES, max_readers);
  if (errors == 0 && pair_a == WRITES && pair_b == WRITES)
    printf("rwlktest OK\n");
  else
    printf("rwlktest FAIL: %d errors\n", errors);
}
