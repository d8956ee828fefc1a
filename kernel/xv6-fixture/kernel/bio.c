// The buffer cache: a fixed set of bufs holding copies of disk blocks.
//
// bread() returns a buf locked (its sleeplock) with the block's contents; bwrite() writes it
// back; brelse() gives it up. At most one thread uses a buf at a time, and a block is cached
// in at most one buf.
//
// The Makefile's BCACHE picks how the cache is shaped, the ways students shape it:
//   bucket    (default) an array of buckets, each a spinlock and a circular doubly linked
//             list behind a sentinel buf; a block lives in bucket blockno % NBUCKET
//   parallel  the same hashing with parallel arrays: bucket heads (0-terminated singly linked
//             lists) and bucket locks
//   grid      a 2-D array of bufs, one row per bucket, each row under its bucket's lock
//   global    the lab's starting point: one LRU list under one lock
// The hashed layouts recycle the least recently used free buf (by the ticks of its last
// release), taking it from any bucket (grid: from its own row).

#include "types.h"
#include "param.h"
#include "spinlock.h"
#include "sleeplock.h"
#include "riscv.h"
#include "defs.h"
#include "buf.h"

#define HASH(blockno) ((blockno) % NBUCKET)

#ifdef BUG_ODD_NAMES
// Names the lab's statslock skips: only bcache* and kmem* locks count in tot.
#define BUCKET_LOCK_NAME "bucket"
#define EVICT_LOCK_NAME "evict"
#else
#define BUCKET_LOCK_NAME "bcache.bucket"
#define EVICT_LOCK_NAME "bcache"
#endif

#if defined(BCACHE_BUCKET)

struct bucket {
  struct spinlock lock;
  struct buf head;  // sentinel: head.next is the most recently inserted buf
};

struct {
  struct spinlock lock;  // taken before any bucket lock by a miss, so evictions never deadlock
  struct buf buf[NBUF];
  struct bucket bucket[NBUCKET];
} bcache;

#define BUCKET_LOCK(h) (&bcache.bucket[h].lock)
#define FOR_EACH(b, h) \
  for (b = bcache.bucket[h].head.next; b != &bcache.bucket[h].head; b = b->next)
// Oldest insertions first: the likeliest to be free.
#define FOR_EACH_BACKWARDS(b, h) \
  for (b = bcache.bucket[h].head.prev; b != &bcache.bucket[h].head; b = b->prev)

static void bucket_push(int h, struct buf *b)
{
  struct buf *head = &bcache.bucket[h].head;
  b->next = head->next;
  b->prev = head;
  head->next->prev = b;
  head->next = b;
}

static void bucket_remove(int h, struct buf *b)
{
  b->next->prev = b->prev;
  b->prev->next = b->next;
}

static void buckets_init(void)
{
  for (int h = 0; h < NBUCKET; h++) {
    struct buf *head = &bcache.bucket[h].head;
#ifdef BUG_PREV_HEAD
    head->prev = head->next;  // copied before head->next is set: prev stays 0
    head->next = head;
#else
    head->prev = head;
    head->next = head;
#endif
  }
}

#elif defined(BCACHE_PARALLEL)

struct {
  struct spinlock lock;  // taken before any bucket lock by a miss, so evictions never deadlock
  struct buf buf[NBUF];
  struct buf *heads[NBUCKET];          // first buf of each bucket; linked by next, 0-ended
  struct spinlock locks[NBUCKET];      // locks[h] protects heads[h]'s list
} bcache;

#define BUCKET_LOCK(h) (&bcache.locks[h])
#define FOR_EACH(b, h) for (b = bcache.heads[h]; b != 0; b = b->next)
#define FOR_EACH_BACKWARDS(b, h) FOR_EACH(b, h)

static void bucket_push(int h, struct buf *b)
{
  b->prev = 0;
  b->next = bcache.heads[h];
  bcache.heads[h] = b;
}

static void bucket_remove(int h, struct buf *b)
{
  struct buf **pp = &bcache.heads[h];
  while (*pp != b)
    pp = &(*pp)->next;
  *pp = b->next;
  b->next = 0;
}

static void buckets_init(void)
{
}

#elif defined(BCACHE_GRID)

struct {
  struct spinlock lock[NBUCKET];        // lock[h] protects row buf[h]
  struct buf buf[NBUCKET][NBUFROW];     // block n can only live in row n % NBUCKET
} bcache;

#define BUCKET_LOCK(h) (&bcache.lock[h])
#define FOR_EACH(b, h) for (b = bcache.buf[h]; b < bcache.buf[h] + NBUFROW; b++)
#define FOR_EACH_BACKWARDS(b, h) FOR_EACH(b, h)

#elif defined(BCACHE_GLOBAL)

struct {
  struct spinlock lock;
  struct buf buf[NBUF];
  struct buf head;  // every buf, most recently used first
} bcache;

#else
#error "config.h must define one of BCACHE_BUCKET, BCACHE_PARALLEL, BCACHE_GRID, BCACHE_GLOBAL"
#endif

#ifndef BCACHE_GLOBAL

// The buf caching (dev, blockno) in bucket h, or 0. The caller holds the bucket's lock.
static struct buf *lookup(int h, uint dev, uint blockno)
{
  struct buf *b;
  FOR_EACH(b, h) {
    if (b->dev == dev && b->blockno == blockno) {
#ifdef BUG_REFCNT_LEAK
      b->refcnt++;  // "take a reference when found": bget takes one too, brelse drops one
#endif
      return b;
    }
  }
  return 0;
}

// The free buf of bucket h released longest ago, or 0. The caller holds the bucket's lock.
static struct buf *lru_free(int h)
{
  struct buf *b, *best = 0;
  FOR_EACH_BACKWARDS(b, h) {
    if (b->refcnt == 0 && (best == 0 || b->timestamp < best->timestamp))
      best = b;
  }
  return best;
}

#ifdef BCACHE_GRID

// A free buf of row h to reuse, or 0.
static struct buf *recycle(int h)
{
  return lru_free(h);
}

#else

// The least recently released free buf of the whole cache, moved into bucket h, or 0. The
// caller holds bcache.lock and bucket h's lock; each other bucket's lock is taken in turn, and
// kept while that bucket holds the best candidate so far.
static struct buf *recycle(int h)
{
  struct buf *best = lru_free(h);
  int owner = h;

#ifdef BUG_DOUBLE_ACQUIRE
  for (int i = 0; i < NBUCKET; i++) {  // starts with bucket h itself, whose lock we hold
#else
  for (int i = 1; i < NBUCKET; i++) {
#endif
    int o = (h + i) % NBUCKET;
    acquire(BUCKET_LOCK(o));
    struct buf *b = lru_free(o);
    if (b && (best == 0 || b->timestamp < best->timestamp)) {
      if (owner != h)
        release(BUCKET_LOCK(owner));
      best = b;
      owner = o;
    } else {
      release(BUCKET_LOCK(o));
    }
  }
#ifdef BUG_DUP_BLOCK
  // Taken out of its bucket; bget publishes it in bucket h once the block is read.
  if (best) {
    bucket_remove(owner, best);
    if (owner != h)
      release(BUCKET_LOCK(owner));
  }
#else
  if (best && owner != h) {
    bucket_remove(owner, best);
    release(BUCKET_LOCK(owner));
    bucket_push(h, best);
  }
#endif
  return best;
}

#endif

// The buf for (dev, blockno), with its refcnt taken and its sleeplock held.
static struct buf *bget(uint dev, uint blockno)
{
  int h = HASH(blockno);
  struct buf *b;

  acquire(BUCKET_LOCK(h));
  b = lookup(h, dev, blockno);
  if (b == 0) {
#ifndef BCACHE_GRID
    // Bucket locks are only ever nested under bcache.lock: drop ours, take bcache.lock,
    // take ours again.
    release(BUCKET_LOCK(h));
#ifndef BUG_BUCKET_ORDER
    acquire(&bcache.lock);
#endif
    acquire(BUCKET_LOCK(h));
    // While we held no lock another thread may have cached the block.
    b = lookup(h, dev, blockno);
#endif
    if (b == 0) {
      b = recycle(h);
      if (b == 0)
        panic("bget: no buffers");
      b->dev = dev;
      b->blockno = blockno;
      b->valid = 0;
#ifdef BUG_DUP_BLOCK
      // "Read the block before publishing the buf, so no lock is held during the disk
      // read": a thread that misses on the same block meanwhile loads it into a second buf.
      b->refcnt = 1;
      release(BUCKET_LOCK(h));
#ifndef BUG_BUCKET_ORDER
      release(&bcache.lock);
#endif
      acquiresleep(&b->lock);
      virtio_disk_rw(b, 0);
      b->valid = 1;
      acquire(BUCKET_LOCK(h));
      bucket_push(h, b);
      release(BUCKET_LOCK(h));
      return b;
#endif
    }
#if !defined(BCACHE_GRID) && !defined(BUG_BUCKET_ORDER)
    release(&bcache.lock);
#endif
  }
  b->refcnt++;
#ifdef BUG_SLEEP_HOLDING
  acquiresleep(&b->lock);  // may sleep, with the bucket's spinlock still held
  release(BUCKET_LOCK(h));
#else
  release(BUCKET_LOCK(h));
  acquiresleep(&b->lock);
#endif
  return b;
}

void brelse(struct buf *b)
{
  if (!holdingsleep(&b->lock))
    panic("brelse");
  releasesleep(&b->lock);

  // A buf with references keeps its block, so the bucket cannot change under us.
  int h = HASH(b->blockno);
  acquire(BUCKET_LOCK(h));
  b->refcnt--;
  if (b->refcnt == 0)
    b->timestamp = ticks;
  release(BUCKET_LOCK(h));
}

void binit(void)
{
#ifdef BUG_UNINIT_LOCK
  for (int h = 0; h < NBUCKET - 1; h++)  // the last bucket's lock is never initialised
#else
  for (int h = 0; h < NBUCKET; h++)
#endif
    initlock(BUCKET_LOCK(h), BUCKET_LOCK_NAME);

#ifdef BCACHE_GRID
  struct buf *b;
  for (int h = 0; h < NBUCKET; h++) {
    FOR_EACH(b, h)
      initsleeplock(&b->lock, "buffer");
  }
#else
  initlock(&bcache.lock, EVICT_LOCK_NAME);
  buckets_init();
  // Every buf starts in bucket 0; misses move them where they are needed.
  for (struct buf *b = bcache.buf; b < bcache.buf + NBUF; b++) {
    initsleeplock(&b->lock, "buffer");
    bucket_push(0, b);
  }
#endif
}

// For the shell's `audit`: a buf in the wrong bucket. Run at an idle prompt: it reads without
// locks, to stay out of the way of the lock order.
static int bucket_audit(void)
{
  int bad = 0;
  for (int h = 0; h < NBUCKET; h++) {
    struct buf *b;
    int steps = 0;
    if (BUCKET_LOCK(h)->name == 0) {
      printf("audit: bucket %d's lock was never initialised\n", h);
      bad++;
    }
    FOR_EACH(b, h) {
      if (++steps > NBUCKET * NBUFROW + NBUF) {
        printf("audit: bucket %d's list loops\n", h);
        bad++;
        break;
      }
      if (b->dev != 0 && HASH(b->blockno) != h) {
        printf("audit: block %d is in bucket %d, not %d\n", b->blockno, h, HASH(b->blockno));
        bad++;
      }
    }
  }
  return bad;
}

#endif

#ifdef BCACHE_GRID
#define ALLBUFS (&bcache.buf[0][0])
#define NALLBUFS (NBUCKET * NBUFROW)
#else
#define ALLBUFS (bcache.buf)
#define NALLBUFS NBUF
#endif

// For the shell's `audit`: a block cached in two bufs, and the hashed layouts' buckets.
int baudit(void)
{
  int bad = 0;
  struct buf *all = ALLBUFS;
  for (int i = 0; i < NALLBUFS; i++) {
    for (int j = i + 1; j < NALLBUFS; j++) {
      if (all[i].dev != 0 && all[i].dev == all[j].dev && all[i].blockno == all[j].blockno) {
        printf("audit: block %d is cached twice, in buf %d and buf %d\n", all[i].blockno, i, j);
        bad++;
      }
    }
  }
#ifndef BCACHE_GLOBAL
  bad += bucket_audit();
#endif
  return bad;
}

#ifdef BCACHE_GLOBAL

static struct buf *bget(uint dev, uint blockno)
{
  struct buf *b;

  acquire(&bcache.lock);
  for (b = bcache.head.next; b != &bcache.head; b = b->next) {
    if (b->dev == dev && b->blockno == blockno) {
      b->refcnt++;
      release(&bcache.lock);
      acquiresleep(&b->lock);
      return b;
    }
  }
  // Recycle the least recently used free buf: the list's tail end.
  for (b = bcache.head.prev; b != &bcache.head; b = b->prev) {
    if (b->refcnt == 0) {
      b->dev = dev;
      b->blockno = blockno;
      b->valid = 0;
      b->refcnt = 1;
      release(&bcache.lock);
      acquiresleep(&b->lock);
      return b;
    }
  }
  panic("bget: no buffers");
}

void brelse(struct buf *b)
{
  if (!holdingsleep(&b->lock))
    panic("brelse");
  releasesleep(&b->lock);

  acquire(&bcache.lock);
  b->refcnt--;
  if (b->refcnt == 0) {
    // Move to the front: most recently used.
    b->next->prev = b->prev;
    b->prev->next = b->next;
    b->next = bcache.head.next;
    b->prev = &bcache.head;
    bcache.head.next->prev = b;
    bcache.head.next = b;
    b->timestamp = ticks;
  }
  release(&bcache.lock);
}

void binit(void)
{
  initlock(&bcache.lock, EVICT_LOCK_NAME);
  bcache.head.prev = &bcache.head;
  bcache.head.next = &bcache.head;
  for (struct buf *b = bcache.buf; b < bcache.buf + NBUF; b++) {
    b->next = bcache.head.next;
    b->prev = &bcache.head;
    initsleeplock(&b->lock, "buffer");
    bcache.head.next->prev = b;
    bcache.head.next = b;
  }
}

#endif

// A locked buf holding the block's contents.
struct buf *bread(uint dev, uint blockno)
{
  struct buf *b = bget(dev, blockno);
  if (!b->valid) {
    virtio_disk_rw(b, 0);
    b->valid = 1;
  }
  return b;
}

// Write b's contents to disk. The caller holds b's sleeplock.
void bwrite(struct buf *b)
{
  if (!holdingsleep(&b->lock))
    panic("bwrite");
  virtio_disk_rw(b, 1);
}
