// The types of the xv6-shaped image the reader's unit tests read (see xv6ish.c).
typedef unsigned int uint;
typedef unsigned long uint64;
typedef unsigned char uchar;
typedef uint64 *pagetable_t;

#define NCPU 8
#define NPROC 16
#define NBUF 30
#define NBUCKET 13
#define NLOCK 500

struct cpu;
struct spinlock { uint locked; char *name; struct cpu *cpu; int nts; int n; };
struct sleeplock { uint locked; struct spinlock lk; char *name; int pid; };
struct context { uint64 ra; uint64 sp; uint64 s0; uint64 s1; };
struct proc;
struct cpu { struct proc *proc; struct context context; int noff; int intena; };
enum procstate { UNUSED, USED, SLEEPING, RUNNABLE, RUNNING, ZOMBIE };
struct proc {
  struct spinlock lock;
  enum procstate state; void *chan; int killed; int xstate; int pid;
  uint64 kstack; struct context context; char name[16];
};
struct buf {
  int valid; int disk; uint dev; uint blockno; struct sleeplock lock; uint refcnt;
  struct buf *prev; struct buf *next; uint timestamp; uchar data[1024];
};
struct run { struct run *next; };
extern struct cpu cpus[NCPU];
extern struct spinlock tickslock;
struct kmem { struct spinlock lock; struct run *freelist; };
extern struct kmem kmem[NCPU];
struct proc;
extern struct proc proc[NPROC];
struct rwspinlock { struct spinlock l; int readers[4]; int writer; enum procstate mode; };
extern struct rwspinlock rwlk;
