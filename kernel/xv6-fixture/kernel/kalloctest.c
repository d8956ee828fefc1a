// kalloctest, after the lab's: test1 measures contention on the allocator's locks while every
// hart allocates and frees; test2 checks that no page is lost.

#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "riscv.h"
#include "defs.h"

#define WARMUP 64      // allocations per worker before measuring: the steals happen here
#define ROUNDS 20000   // kalloc/kfree pairs per worker, measured
#define TOT_MAX 10     // the lab's limit on kmem spins during test1

static volatile int warm, go;
static int nw;  // workers in this run, fixed by the parent before it spawns them

static void churn(int n)
{
  for (int i = 0; i < n; i++) {
    char *p = kalloc();
    if (p == 0)
      panic("kalloctest: out of memory");
    p[0] = i;
    kfree(p);
  }
}

static void worker(uint64 arg)
{
  // Keep a few pages, so this hart's list has stock before measuring: the warm-up's steals
  // are the only cross-hart traffic.
  char *keep[WARMUP];
  for (int i = 0; i < WARMUP; i++)
    keep[i] = kalloc();
  for (int i = 0; i < WARMUP; i++)
    kfree(keep[i]);
  spin_barrier(&warm, nw);
  while (!go)
    yield();
  churn(ROUNDS);
}

static void test1(void)
{
  int n = nw = nworkers();

  printf("start test1\n");
  warm = 0;
  go = 0;
  for (int i = 0; i < n; i++)
    spawn("kalloctest", worker, i);
  while (warm < n)
    yield();
  int before = ntas(0);
  go = 1;
  waitall(n);
  printf("test1 results:\n");
  int after = ntas(1);
  if (after - before < TOT_MAX)
    printf("test1 OK\n");
  else
    printf("test1 FAIL\n");
}

// Take every page there is, then give them all back: the free count must come back whole.
static void test2(void)
{
  printf("start test2\n");
  int before = kfreecount(-1);
  int stolen = kmem_steals;
  printf("total free number of pages: %d (out of %d)\n", before,
         (int)((PHYSTOP - KERNBASE) / PGSIZE));
  char *list = 0;
  int got = 0;
  for (char *p; (p = kalloc()) != 0; got++) {
    *(char **)p = list;
    list = p;
    if (got % 4096 == 0)
      printf(".");
  }
  printf("\n");
  printf("test2: %d pages moved between harts' lists by stealing\n", kmem_steals - stolen);
  while (list) {
    char *next = *(char **)list;
    kfree(list);
    list = next;
  }
  int after = kfreecount(-1);
  if (got == before && after == before)
    printf("test2 OK\n");
  else
    printf("test2 FAIL: %d free, %d allocated, %d free after\n", before, got, after);
}

void kalloctest(void)
{
  test1();
  test2();
}
