// Helpers the shell's tests share: worker threads, barriers, random numbers, block patterns,
// and the lab's lock statistics.

#include "types.h"
#include "param.h"
#include "riscv.h"
#include "spinlock.h"
#include "proc.h"
#include "defs.h"

// One worker per hart that booted, so every hart has one to run and they contend for real.
int nworkers(void)
{
  int n = nharts;
  return n < 2 ? 2 : n;
}

int spawn(char *name, void (*fn)(uint64), uint64 arg)
{
  int pid = kthread(name, fn, arg);
  if (pid < 0)
    panic("spawn: no free proc slot");
  return pid;
}

// Wait for n children to exit.
void waitall(int n)
{
  for (int i = 0; i < n; i++) {
    if (kwait(0) < 0)
      panic("waitall: fewer children than expected");
  }
}

// Wait until n threads have arrived at *count. Spins, yielding the hart, so threads that are
// running on different harts leave together (a sleep would wait for the next timer tick).
void spin_barrier(volatile int *count, int n)
{
  __sync_fetch_and_add(count, 1);
  while (*count < n)
    yield();
}

// xorshift64: a fast, repeatable sequence per seed.
uint64 rand_next(uint64 *state)
{
  uint64 x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *state = x;
  return x;
}

// A block's contents: a header naming the block and a generation, then bytes derived from
// both. mkimg/mkimg.c writes generation 0 into every block of fs.img.
void blk_stamp(uchar *data, uint blockno, uint gen)
{
  memmove(data, "fixtblk", 8);
  memmove(data + 8, &blockno, 4);
  memmove(data + 12, &gen, 4);
  for (int i = 16; i < BSIZE; i++)
    data[i] = (blockno * 7 + gen * 13 + i) & 0xff;
}

// 1 if data holds what blk_stamp(blockno, gen) wrote.
int blk_check(uchar *data, uint blockno, uint gen)
{
  uint n, g;
  memmove(&n, data + 8, 4);
  memmove(&g, data + 12, 4);
  if (memcmp(data, "fixtblk", 8) != 0 || n != blockno || g != gen)
    return 0;
  for (int i = 16; i < BSIZE; i++) {
    if (data[i] != ((blockno * 7 + gen * 13 + i) & 0xff))
      return 0;
  }
  return 1;
}

static char statsbuf[8192];  // only the shell's thread runs tests

// The lab's statistics: print them if asked, and return tot=.
int ntas(int print)
{
  statslock(statsbuf, sizeof(statsbuf));
  if (print)
    printf("%s", statsbuf);
  char *t = statsbuf;
  while (*t && strncmp(t, "tot= ", 5) != 0)
    t++;
  return *t ? atoi(t + 5) : 0;
}
