// rwlktest: readers and one writer share a pair of counters under a rwspinlock. The writer
// keeps them equal; readers check that they never see them differ, that no writer is inside
// with them, and that readers do get in together.

#include "types.h"
#include "param.h"
#include "riscv.h"
#include "spinlock.h"
#include "rwspinlock.h"
#include "defs.h"

#define READS 20000
#define WRITES 2000

struct rwspinlock rwlk;
static volatile uint64 pair_a, pair_b;
static volatile int inside_readers, inside_writer, max_readers, errors, readers_done;

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
  for (int i = 0; i < READS; i++) {
    read_acquire(&rwlk);
    int in = __sync_add_and_fetch(&inside_readers, 1);
    if (in > max_readers)
      max_readers = in;  // a racy maximum is fine: it only needs to reach 2
    if (inside_writer)
      __sync_fetch_and_add(&errors, 1);
    pause(50);
    check_pair();
    __sync_fetch_and_sub(&inside_readers, 1);
    read_release(&rwlk);
  }
  __sync_fetch_and_add(&readers_done, 1);
}

static void writer(uint64 arg)
{
  for (int i = 0; i < WRITES; i++) {
    write_acquire(&rwlk);
    inside_writer = 1;
    if (inside_readers != 0)
      __sync_fetch_and_add(&errors, 1);
    pair_a++;
    pause(20);
    pair_b++;
    inside_writer = 0;
    write_release(&rwlk);
    pause(200);
  }
}

void rwlktest(void)
{
  int n = nworkers();
  int nreaders = n - 1;

  printf("start rwlktest: %d readers, 1 writer\n", nreaders);
  freelock(&rwlk.lk);  // registered by an earlier run
  initrwlock(&rwlk, "rwlk");
  pair_a = pair_b = 0;
  inside_readers = inside_writer = max_readers = errors = readers_done = 0;
  for (int i = 0; i < nreaders; i++)
    spawn("rwreader", reader, i);
  spawn("rwwriter", writer, 0);
  waitall(n);
  printf("rwlktest: %d reads, %d writes, up to %d readers inside at once\n",
         nreaders * READS, WRITES, max_readers);
  if (errors == 0 && pair_a == WRITES && pair_b == WRITES)
    printf("rwlktest OK\n");
  else
    printf("rwlktest FAIL: %d errors\n", errors);
}
