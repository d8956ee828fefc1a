// bcachetest, after the lab's.
//
// test0: every worker reads its own two blocks over and over. The blocks of different workers
// hash to different buckets, so a hashed cache has nothing to contend on: tot must stay
// under 500. The starter's single lock fails it.
// test1: correctness under concurrency. Each worker writes blocks of its own and reads them
// back, reads random blocks (most of them misses: recycling, moving bufs between buckets),
// then all workers miss at the same moment in different buckets, then read the same blocks at
// once (waiting on each other's sleeplocks).

#include "types.h"
#include "param.h"
#include "riscv.h"
#include "spinlock.h"
#include "sleeplock.h"
#include "buf.h"
#include "defs.h"

#define TOT_MAX 500
#define READS0 4000     // test0 reads per worker
#define OWN 8           // test1 blocks written per worker
#define OWN_BASE 1000   // worker w writes blocks OWN_BASE + w*OWN ..
#define RANDOM 200      // test1 random reads per worker
#define RANDOM_SPAN 600 // ... from blocks 0 .. RANDOM_SPAN-1
#define SHARED 8        // test1 rounds of everyone reading one block
#define SHARED_BASE 1500
#define APART 32        // test1 rounds of everyone missing at once, each in its own bucket
#define APART_BASE 1550  // .. 1550 + 31*13 + 7 < FSSIZE

static volatile int warm, go, arrived, failures;
static int nw;  // workers in this run, fixed by the parent before it spawns them

// test1's read count, in kalloc'd memory: its lock is registered but belongs to no variable.
struct tally {
  struct spinlock lock;
  int reads;
};
static struct tally *tally;

static void count_reads(int n)
{
  acquire(&tally->lock);
  tally->reads += n;
  release(&tally->lock);
}
static volatile uint shared_start, give_up;

static void fail(char *what, uint blockno)
{
  printf("bcachetest: %s: block %d has the wrong contents\n", what, blockno);
  __sync_fetch_and_add(&failures, 1);
}

// Worker w's test0 blocks: w+1 and w+1+NBUCKET, both in bucket w+1.
static void reader0(uint64 w)
{
  uint blocks[2] = { w + 1, w + 1 + NBUCKET };

  for (int i = 0; i < 2; i++)
    brelse(bread(ROOTDEV, blocks[i]));
  spin_barrier(&warm, nw);
  while (!go)
    yield();
  for (int i = 0; i < READS0; i++) {
    struct buf *b = bread(ROOTDEV, blocks[i % 2]);
    if (i % 512 == 0 && !blk_check(b->data, blocks[i % 2], 0))
      fail("test0", blocks[i % 2]);
    brelse(b);
  }
}

static void test0(void)
{
  int n = nw = nworkers();

  printf("start test0\n");
  warm = go = 0;
  for (int i = 0; i < n; i++)
    spawn("bcachetest", reader0, i);
  while (warm < n)
    yield();
  int before = ntas(0);
  go = 1;
  waitall(n);
  printf("test0 results:\n");
  int after = ntas(1);
  if (after - before < TOT_MAX && failures == 0)
    printf("test0: OK\n");
  else
    printf("test0: FAIL\n");
}

static void worker1(uint64 w)
{
  uint64 seed = 0x9e3779b97f4a7c15UL * (w + 1);
  struct buf *b;

  // Own blocks: write a new generation, read it back.
  for (int gen = 1; gen <= 2; gen++) {
    for (int i = 0; i < OWN; i++) {
      uint bn = OWN_BASE + w * OWN + i;
      b = bread(ROOTDEV, bn);
      blk_stamp(b->data, bn, gen);
      bwrite(b);
      brelse(b);
    }
    for (int i = 0; i < OWN; i++) {
      uint bn = OWN_BASE + w * OWN + i;
      b = bread(ROOTDEV, bn);
      if (!blk_check(b->data, bn, gen))
        fail("test1 own", bn);
      brelse(b);
    }
  }

  count_reads(4 * OWN);

  // Random blocks, as fs.img has them.
  for (int i = 0; i < RANDOM; i++) {
    uint bn = rand_next(&seed) % RANDOM_SPAN;
    b = bread(ROOTDEV, bn);
    if (!blk_check(b->data, bn, 0))
      fail("test1 random", bn);
    brelse(b);
  }
  count_reads(RANDOM);

  // The last two parts start together: at the same timer tick, everyone misses at once, each
  // on a block of its own bucket (evictions run side by side); then everyone reads block
  // SHARED_BASE+r, holding it a moment so the others queue on its sleeplock. A worker that
  // never arrives (stuck on a lost wakeup, say) holds the others back 5 s at most; under host
  // load the others can take seconds longer.
  if (give_up == 0)
    __sync_val_compare_and_swap(&give_up, 0, ticks + 500);
  __sync_fetch_and_add(&arrived, 1);
  while (arrived < nw && ticks < give_up)
    yield();
  __sync_val_compare_and_swap(&shared_start, 0, ticks + 1);

  for (int r = 0; r < APART; r++) {
    while (ticks < shared_start + r)
      yield();
    uint bn = APART_BASE + r * NBUCKET + w;  // bucket (APART_BASE + w) % NBUCKET, a new block
    b = bread(ROOTDEV, bn);
    if (!blk_check(b->data, bn, 0))
      fail("test1 apart", bn);
    brelse(b);
  }

  for (int r = 0; r < SHARED; r++) {
    while (ticks < shared_start + APART + 2 * r)
      yield();
    uint bn = SHARED_BASE + r;
    b = bread(ROOTDEV, bn);
    uint64 t0 = r_time();
    while (r_time() - t0 < 1000)  // 100 us
      ;
    if (!blk_check(b->data, bn, 0))
      fail("test1 shared", bn);
    brelse(b);
  }
  count_reads(APART + SHARED);
}

static void test1(void)
{
  int n = nw = nworkers();

  printf("start test1\n");
  arrived = 0;
  shared_start = give_up = 0;
  tally = kalloc();
  if (tally == 0)
    panic("bcachetest: out of memory");
  initlock(&tally->lock, "tally");
  tally->reads = 0;
  for (int i = 0; i < n; i++)
    spawn("bcachetest", worker1, i);
  waitall(n);
  printf("test1 results: %d reads\n", tally->reads);
  freelock(&tally->lock);
  kfree(tally);
  ntas(1);
  if (failures == 0)
    printf("test1 OK\n");
  else
    printf("test1 FAIL\n");
}

void bcachetest(void)
{
  failures = 0;
  test0();
  test1();
}
