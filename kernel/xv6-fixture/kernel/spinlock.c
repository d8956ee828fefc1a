// Spinlocks, with the locks lab's counters and statistics.
//
// acquire() counts every call in n and every failed test-and-set in nts. Both are updated with
// atomic adds because waiters bump nts while the holder runs. initlock() records every lock in
// locks[], so statslock() can report them all, including locks that live in kalloc'd memory.

#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "spinlock.h"
#include "riscv.h"
#include "proc.h"
#include "defs.h"

static struct spinlock *locks[NLOCK];
// Protects locks[]. Initialised statically: it cannot register itself.
static struct spinlock lock_locks = { .name = "lock_locks" };

static void register_lock(struct spinlock *lk)
{
  acquire(&lock_locks);
  for (int i = 0; i < NLOCK; i++) {
    if (locks[i] == 0) {
      locks[i] = lk;
      release(&lock_locks);
      return;
    }
  }
  panic("initlock: locks[] is full; raise NLOCK");
}

void initlock(struct spinlock *lk, char *name)
{
  lk->name = name;
  lk->locked = 0;
  lk->cpu = 0;
  lk->nts = 0;
  lk->n = 0;
  register_lock(lk);
}

// Forget a lock whose memory is about to be freed.
void freelock(struct spinlock *lk)
{
  acquire(&lock_locks);
  for (int i = 0; i < NLOCK; i++) {
    if (locks[i] == lk) {
      locks[i] = 0;
      break;
    }
  }
  release(&lock_locks);
}

void acquire(struct spinlock *lk)
{
  push_off();  // an interrupt handler taking lk on this hart would spin forever
  if (holding(lk))
    panic("acquire");

  __sync_fetch_and_add(&lk->n, 1);

  // amoswap.w.aq: atomically set locked and get what it was.
  while (__sync_lock_test_and_set(&lk->locked, 1) != 0)
    __sync_fetch_and_add(&lk->nts, 1);

  // Keep the critical section's loads and stores after the lock is taken.
  __sync_synchronize();

  lk->cpu = mycpu();
}

void release(struct spinlock *lk)
{
  if (!holding(lk))
    panic("release");

  lk->cpu = 0;

  // Make the critical section's stores visible before the lock reads as free.
  __sync_synchronize();
  __sync_lock_release(&lk->locked);

  pop_off();
}

// Is this hart holding lk? Interrupts must be off.
int holding(struct spinlock *lk)
{
  return lk->locked && lk->cpu == mycpu();
}

// push_off/pop_off are intr_off/intr_on that nest: interrupts come back on only when the
// outermost pop_off() runs, and only if they were on before the outermost push_off().
void push_off(void)
{
  int was_on = intr_get();

  intr_off();
  struct cpu *c = mycpu();
  if (c->noff == 0)
    c->intena = was_on;
  c->noff += 1;
}

void pop_off(void)
{
  struct cpu *c = mycpu();

  if (intr_get())
    panic("pop_off: interrupts are on");
  if (c->noff < 1)
    panic("pop_off: not pushed");
  c->noff -= 1;
  if (c->noff == 0 && c->intena)
    intr_on();
}

// ---- statistics, in the lab's format ----

static int prefixed(char *name, char *prefix)
{
  return name != 0 && strncmp(name, prefix, strlen(prefix)) == 0;
}

static int lockline(char *buf, int sz, struct spinlock *lk)
{
  return snprintf(buf, sz, "lock: %s: #test-and-set %d #acquire() %d\n",
                  lk->name ? lk->name : "(null)", lk->nts, lk->n);
}

// Writes the kmem and bcache locks' counters, the five most contended locks and
// "tot= N", the kmem/bcache failed test-and-sets summed, into buf. Returns the length.
int statslock(char *buf, int sz)
{
  int len = 0;
  int tot = 0;
  struct spinlock *top[5] = { 0 };

  acquire(&lock_locks);
  len += snprintf(buf + len, sz - len, "--- lock kmem/bcache stats\n");
  for (int i = 0; i < NLOCK; i++) {
    struct spinlock *lk = locks[i];
    if (lk == 0)
      continue;
    if (prefixed(lk->name, "kmem") || prefixed(lk->name, "bcache")) {
      tot += lk->nts;
      len += lockline(buf + len, sz - len, lk);
    }
    // Insert into the top five by nts.
    for (int t = 0; t < 5; t++) {
      if (top[t] == 0 || lk->nts > top[t]->nts) {
        for (int u = 4; u > t; u--)
          top[u] = top[u - 1];
        top[t] = lk;
        break;
      }
    }
  }
  len += snprintf(buf + len, sz - len, "--- top 5 contended locks:\n");
  for (int t = 0; t < 5 && top[t]; t++)
    len += lockline(buf + len, sz - len, top[t]);
  release(&lock_locks);
  len += snprintf(buf + len, sz - len, "tot= %d\n", tot);
  return len;
}

extern char stack0[];
extern char etext[], erodata[];

// For the shell's `audit`: registered locks whose names are not constant strings.
int lockaudit(void)
{
  int bad = 0;

  acquire(&lock_locks);
  for (int i = 0; i < NLOCK; i++) {
    struct spinlock *lk = locks[i];
    if (lk == 0)
      continue;
    char *s = lk->name;
    if (s >= stack0 && s < stack0 + 4096 * NCPU) {
      printf("audit: lock %p: name points into stack0+%d\n", lk, (int)(s - stack0));
      bad++;
    } else if (s != 0 && (s < etext || s >= erodata)) {
      printf("audit: lock %p: name %p is not in rodata\n", lk, s);
      bad++;
    }
  }
  release(&lock_locks);
  return bad;
}
