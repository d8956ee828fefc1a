// An xv6-shaped kernel image for the reader's unit tests. Nothing runs: the state the tests
// read is the static initializers here and in spinlock.c (the linker fills in every pointer),
// plus what the tests write into the image. SHAPE picks the buffer cache's layout; BUGS plants
// the lab's classic mistakes.
#include "xv6ish.h"

__attribute__((aligned(16))) char stack0[4096 * NCPU];
volatile int panicked = 0;
uint ticks = 7;
pagetable_t kernel_pagetable;
char *pipename = "pipe";

#define LOCK(nm) { .name = nm }
#define SLEEP(nm) { .lk = LOCK("sleep lock"), .name = nm }

#ifdef BUGS
struct spinlock tickslock = { .name = stack0 + 4000, .n = 12, .nts = -7 };
struct spinlock forgotten = { .n = 5 };
struct spinlock unregistered = { .name = "ghost", .n = 3 };
#else
struct spinlock tickslock = { .name = "time", .n = 12, .nts = 3, .locked = 1, .cpu = &cpus[1] };
#endif

// The buffer cache.
#if SHAPE == 1
// An array of bucket structs, each a lock and a sentinel head.
struct bucket { struct spinlock lock; struct buf head; };
struct { struct spinlock lock; struct buf buf[NBUF]; struct bucket bucket[NBUCKET]; } bcache = {
  .lock = LOCK("bcache"),
  .buf = {
    [0] = { .valid = 1, .dev = 1, .blockno = 13, .next = &bcache.buf[1], .lock = SLEEP("buffer") },
    [1] = { .valid = 1, .dev = 1, .blockno = 26, .next = &bcache.bucket[0].head, .lock = SLEEP("buffer") },
    [3] = { .valid = 1, .dev = 1, .blockno = 33, .refcnt = 1, .next = &bcache.bucket[7].head,
            .lock = { .locked = 1, .pid = 2, .lk = LOCK("sleep lock"), .name = "buffer" } },
#ifdef BUGS
    [2] = { .next = &bcache.buf[4] },
    [4] = { .next = &bcache.buf[2] },
    [5] = { .valid = 1, .dev = 1, .blockno = 42, .next = (struct buf *)0x80000008 },
    [6] = { .valid = 1, .dev = 1, .blockno = 42, .next = &bcache.bucket[3].head },
#endif
  },
  .bucket = {
    [0] = { .lock = LOCK("bcache.bucket"), .head = { .next = &bcache.buf[0] } },
    [7] = { .lock = LOCK("bcache.bucket"), .head = { .next = &bcache.buf[3] } },
#ifdef BUGS
    [1] = { .lock = LOCK("bucket"), .head = { .next = &bcache.buf[2] } },
    [2] = { .lock = LOCK("bcache.bucket"), .head = { .next = &bcache.buf[5] } },
    [3] = { .lock = LOCK("bcache.bucket"), .head = { .next = &bcache.buf[6] } },
    [4] = { .lock = LOCK("bcache.bucket"), .head = { .next = &bcache.buf[0] } },
#endif
  },
};
#elif SHAPE == 2
// Parallel arrays of locks and head pointers (NULL-terminated lists).
struct { struct spinlock lock[NBUCKET]; struct buf *heads[NBUCKET]; struct buf buf[NBUF]; } bcache = {
  .lock = { [0] = LOCK("bcache0"), [7] = LOCK("bcache7") },
  .heads = { [0] = &bcache.buf[0], [7] = &bcache.buf[3] },
  .buf = {
    [0] = { .valid = 1, .dev = 1, .blockno = 13, .next = &bcache.buf[1] },
    [1] = { .valid = 1, .dev = 1, .blockno = 26 },
    [3] = { .valid = 1, .dev = 1, .blockno = 33, .refcnt = 1,
            .lock = { .locked = 1, .pid = 2, .lk = LOCK("sleep lock"), .name = "buffer" } },
  },
};
#elif SHAPE == 3
// A 2-D array: one row of bufs per bucket, beside an array of locks.
struct { struct spinlock lock[NBUCKET]; struct buf buf[NBUCKET][3]; } bcache = {
  .lock = { [0] = LOCK("bcache.bucket") },
  .buf = { [0] = { [0] = { .valid = 1, .dev = 1, .blockno = 13 } },
           [1] = { [0] = { .valid = 1, .dev = 1, .blockno = 33, .refcnt = 1,
                  .lock = { .locked = 1, .pid = 2, .lk = LOCK("sleep lock"), .name = "buffer" } } } },
};
#else
// The starter: one lock, one circular list through a sentinel head.
struct { struct spinlock lock; struct buf buf[NBUF]; struct buf head; } bcache = {
  .lock = LOCK("bcache"),
  .buf = {
    [0] = { .valid = 1, .dev = 1, .blockno = 13, .next = &bcache.buf[1], .prev = &bcache.head },
    [1] = { .valid = 1, .dev = 1, .blockno = 26, .next = &bcache.buf[3] },
    [3] = { .valid = 1, .dev = 1, .blockno = 33, .refcnt = 1, .next = &bcache.head,
            .lock = { .locked = 1, .pid = 2, .lk = LOCK("sleep lock"), .name = "buffer" } },
  },
  .head = { .next = &bcache.buf[0] },
};
#endif

// The per-CPU allocator; the tests build the lists in pages above the kernel.
#ifdef BUGS
struct kmem kmem[NCPU] = { [0] = { .lock = LOCK("kmem") }, [1] = { .lock = LOCK("mem1") } };
#else
struct kmem kmem[NCPU] = { [0] = { .lock = LOCK("kmem") }, [1] = { .lock = LOCK("kmem") } };
#endif

struct rwspinlock rwlk = { .l = LOCK("rwlk"), .readers = { 1, 0, 2, 0 }, .writer = -1, .mode = RUNNING };

struct proc proc[NPROC] = {
  [0] = { .lock = LOCK("proc"), .state = SLEEPING, .pid = 1, .name = "init", .chan = &ticks,
          .kstack = 0x3fffffd000, .context = { .ra = 0x80000010, .sp = 0x3fffffdf80, .s0 = 0x3fffffdfa0 } },
  [1] = { .lock = LOCK("proc"), .state = RUNNING, .pid = 2, .name = "bcachetest" },
#if SHAPE == 1
  [2] = { .lock = LOCK("proc"), .state = SLEEPING, .pid = 3, .name = "sh", .chan = &bcache.buf[3].lock },
#endif
  [3] = { .lock = LOCK("proc"), .state = SLEEPING, .pid = 4, .name = "wait", .chan = &proc[1] },
};

struct cpu cpus[NCPU] = {
  [0] = { .proc = &proc[1], .noff = 1, .intena = 1, .context = { .ra = 0x80000020 } },
  [1] = { .context = { .ra = 0x80000020 } },
};


void _entry(void) {
  panicked = 1;
}
