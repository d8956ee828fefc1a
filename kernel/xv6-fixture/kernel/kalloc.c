// The page allocator: one free list per hart (the locks lab's first part).
//
// kinit() deals the free pages out evenly over the lists. kalloc() takes from its own hart's
// list; when that list is empty it steals up to STEAL pages from another hart's list, visiting
// them round-robin from the next one. It never holds two kmem locks at once, so two harts
// stealing from each other cannot deadlock. kfree() puts a page on its own hart's list.

#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "spinlock.h"
#include "riscv.h"
#include "defs.h"

#define STEAL 32

extern char end[];  // first address after the kernel image (kernel.ld)

struct run {
  struct run *next;
};

struct {
  struct spinlock lock;
  struct run *freelist;
} kmem[NCPU];

int kmem_steals;  // pages moved by steals, for kalloctest's report

#if defined(BUG_STACK_NAME)
// The name is built in a local array: once this returns, the lock's name points at dead stack
// (hart 0's slice of stack0) that later calls overwrite.
static void name_kmem_lock(int i)
{
  char name[16];
  snprintf(name, sizeof(name), "kmem%d", i);
  initlock(&kmem[i].lock, name);
}
#elif defined(BUG_ODD_NAMES)
// Names the lab's statslock skips: it only counts locks named kmem* and bcache*.
static char *kmem_names[NCPU] = { "freelist0", "freelist1", "freelist2", "freelist3",
                                  "freelist4", "freelist5", "freelist6", "freelist7" };
#else
static char *kmem_names[NCPU] = { "kmem0", "kmem1", "kmem2", "kmem3",
                                  "kmem4", "kmem5", "kmem6", "kmem7" };
#endif

static void push(int id, struct run *r)
{
  acquire(&kmem[id].lock);
  r->next = kmem[id].freelist;
  kmem[id].freelist = r;
  release(&kmem[id].lock);
}

static void check_page(void *pa)
{
  if ((uint64)pa % PGSIZE != 0 || (char *)pa < end || (uint64)pa >= PHYSTOP)
    panic("kfree");
}

// Deal the pages out to every hart's list in turn.
static void freerange(void *lo, void *hi)
{
  int id = 0;
  for (char *p = (char *)PGROUNDUP((uint64)lo); p + PGSIZE <= (char *)hi; p += PGSIZE) {
    check_page(p);
    memset(p, 1, PGSIZE);
    push(id, (struct run *)p);
    id = (id + 1) % NCPU;
  }
}

void kinit(void)
{
  for (int i = 0; i < NCPU; i++) {
#ifdef BUG_STACK_NAME
    name_kmem_lock(i);
#else
    initlock(&kmem[i].lock, kmem_names[i]);
#endif
  }
  freerange(end, (void *)PHYSTOP);
}

// Free the page at pa, onto this hart's list. Fills it with junk first so that a use after
// free reads garbage instead of stale data.
void kfree(void *pa)
{
  check_page(pa);
  memset(pa, 1, PGSIZE);

  push_off();  // cpuid() is only stable with interrupts off
  push(cpuid(), pa);
  pop_off();
}

// Take up to STEAL pages from another hart's list; keep one and put the rest on our own.
static struct run *steal(int id)
{
  for (int i = 1; i < NCPU; i++) {
    int v = (id + i) % NCPU;
    acquire(&kmem[v].lock);
    struct run *first = kmem[v].freelist;
    struct run *last = first;
    int n = 0;
    if (first) {
      n = 1;
      while (n < STEAL && last->next) {
        last = last->next;
        n++;
      }
      kmem[v].freelist = last->next;
      last->next = 0;
    }
    release(&kmem[v].lock);
    if (first == 0)
      continue;

    __sync_fetch_and_add(&kmem_steals, n);
    if (first->next) {
      acquire(&kmem[id].lock);
      last->next = kmem[id].freelist;
      kmem[id].freelist = first->next;
      release(&kmem[id].lock);
    }
    return first;
  }
  return 0;
}

// One 4096-byte page, or 0 when memory is exhausted.
void *kalloc(void)
{
  struct run *r;

  push_off();
  int id = cpuid();
  acquire(&kmem[id].lock);
  r = kmem[id].freelist;
  if (r)
    kmem[id].freelist = r->next;
  release(&kmem[id].lock);
  if (r == 0)
    r = steal(id);
  pop_off();

  if (r)
    memset(r, 5, PGSIZE);
  return r;
}

// Pages on hart id's list, or on all lists when id < 0. Bounded by RAM's page count, so a
// list that loops (a page freed twice) cannot hang the count.
int kfreecount(int id)
{
  int total = 0;
  for (int i = 0; i < NCPU; i++) {
    if (id >= 0 && i != id)
      continue;
    acquire(&kmem[i].lock);
    for (struct run *r = kmem[i].freelist; r && total < (PHYSTOP - KERNBASE) / PGSIZE; r = r->next)
      total++;
    release(&kmem[i].lock);
  }
  return total;
}

// For the shell's `audit`: a page that appears twice on a list (the list then loops).
// Floyd's cycle search: constant space, at most a few passes over the list.
int kaudit(void)
{
  int bad = 0;
  for (int i = 0; i < NCPU; i++) {
    acquire(&kmem[i].lock);
    struct run *slow = kmem[i].freelist, *fast = slow;
    while (fast && fast->next) {
      slow = slow->next;
      fast = fast->next->next;
      if (slow == fast) {
        printf("audit: %s: page %p is on the free list twice (the list loops)\n",
               kmem[i].lock.name, slow);
        bad++;
        break;
      }
    }
    release(&kmem[i].lock);
  }
  return bad;
}
