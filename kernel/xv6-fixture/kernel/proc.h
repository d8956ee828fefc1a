// Registers swtch() saves: the callee-saved ones, plus ra and sp.
struct context {
  uint64 ra;
  uint64 sp;
  uint64 s0;
  uint64 s1;
  uint64 s2;
  uint64 s3;
  uint64 s4;
  uint64 s5;
  uint64 s6;
  uint64 s7;
  uint64 s8;
  uint64 s9;
  uint64 s10;
  uint64 s11;
};

// Per-hart state. cpus[] is indexed by hart id, which each hart keeps in tp.
struct cpu {
  struct proc *proc;       // the thread running here, or 0 in the scheduler
  struct context context;  // the scheduler's registers, for swtch()
  int noff;                // depth of push_off() nesting
  int intena;              // were interrupts on before the outermost push_off()?
};

extern struct cpu cpus[NCPU];

enum procstate { UNUSED, USED, SLEEPING, RUNNABLE, RUNNING, ZOMBIE };

// A kernel thread. The fixture has no user space: each "process" runs a kernel function on its
// own kernel stack, mapped at KSTACK(i).
struct proc {
  struct spinlock lock;

  // p->lock must be held to use these:
  enum procstate state;
  void *chan;              // sleeping on chan, if non-zero
  int killed;
  int xstate;              // exit status, for the parent's kwait()
  int pid;

  // wait_lock must be held to use this:
  struct proc *parent;

  // Private to the thread, or set before it first runs:
  uint64 kstack;           // virtual address of its kernel stack (KSTACK(i))
  struct context context;  // swtch() here to run it
  void (*fn)(uint64);      // what it runs, and the argument
  uint64 arg;
  char name[16];
};
