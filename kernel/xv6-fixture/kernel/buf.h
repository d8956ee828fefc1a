// A cached disk block.
struct buf {
  int valid;            // data holds the block's contents
  int disk;             // the disk owns the buffer (a request is in flight)
  uint dev;
  uint blockno;
  struct sleeplock lock;
  uint refcnt;          // references from bget() callers; 0 means it may be recycled
  uint timestamp;       // ticks at the last brelse() that dropped refcnt to 0 (LRU key)
  struct buf *prev;     // bucket (or LRU) list links
  struct buf *next;
  uchar data[BSIZE];
};
