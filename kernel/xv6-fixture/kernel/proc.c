// Kernel threads ("processes"), the per-hart scheduler, sleep and wakeup.

#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "riscv.h"
#include "spinlock.h"
#include "proc.h"
#include "defs.h"

struct cpu cpus[NCPU];
struct proc proc[NPROC];

static int nextpid = 1;
static struct spinlock pid_lock;

// Taken before any p->lock when parent links are read or changed; it also makes a parent's
// sleep in kwait() and a child's wakeup in kexit() race-free.
static struct spinlock wait_lock;

// The hart's id. Call with interrupts off, or the thread may move to another hart.
int cpuid(void)
{
  return r_tp();
}

struct cpu *mycpu(void)
{
  return &cpus[cpuid()];
}

struct proc *myproc(void)
{
  push_off();
  struct proc *p = mycpu()->proc;
  pop_off();
  return p;
}

// Give every proc slot a kernel stack page, mapped at KSTACK(i). Called while building the
// kernel page table.
void proc_mapstacks(pagetable_t pt)
{
  for (int i = 0; i < NPROC; i++) {
    char *pa = kalloc();
    if (pa == 0)
      panic("proc_mapstacks: out of memory");
    kvmmap(pt, KSTACK(i), (uint64)pa, PGSIZE, PTE_R | PTE_W);
  }
}

void procinit(void)
{
  initlock(&pid_lock, "nextpid");
  initlock(&wait_lock, "wait_lock");
  for (int i = 0; i < NPROC; i++) {
    initlock(&proc[i].lock, "proc");
    proc[i].state = UNUSED;
    proc[i].kstack = KSTACK(i);
  }
}

static int allocpid(void)
{
  acquire(&pid_lock);
  int pid = nextpid++;
  release(&pid_lock);
  return pid;
}

// Where every new thread starts: still holding p->lock from the scheduler.
static void kthread_start(void)
{
  struct proc *p = myproc();
  release(&p->lock);
  p->fn(p->arg);
  kexit(0);
}

// Start a thread running fn(arg) as a child of the caller. Returns its pid, or -1 when every
// proc slot is taken.
int kthread(char *name, void (*fn)(uint64), uint64 arg)
{
  struct proc *p;

  for (p = proc; p < &proc[NPROC]; p++) {
    acquire(&p->lock);
    if (p->state == UNUSED)
      break;
    release(&p->lock);
  }
  if (p == &proc[NPROC])
    return -1;

  p->pid = allocpid();
  p->state = USED;
  p->killed = 0;
  p->xstate = 0;
  p->chan = 0;
  p->fn = fn;
  p->arg = arg;
  safestrcpy(p->name, name, sizeof(p->name));
  memset(&p->context, 0, sizeof(p->context));
  p->context.ra = (uint64)kthread_start;
  p->context.sp = p->kstack + PGSIZE;
  int pid = p->pid;
  release(&p->lock);

  acquire(&wait_lock);
  p->parent = myproc();
  release(&wait_lock);

  acquire(&p->lock);
  p->state = RUNNABLE;
  release(&p->lock);
  return pid;
}

// End the calling thread. It stays a ZOMBIE until its parent's kwait() collects it.
void kexit(int status)
{
  struct proc *p = myproc();

  acquire(&wait_lock);
  if (p->parent)
    wakeup(p->parent);
  acquire(&p->lock);
  p->xstate = status;
  p->state = ZOMBIE;
  release(&wait_lock);
  sched();
  panic("kexit: a zombie ran again");
}

// Wait for a child to exit; returns its pid, or -1 if the caller has no children.
int kwait(int *status)
{
  struct proc *me = myproc();

  acquire(&wait_lock);
  for (;;) {
    int children = 0;
    for (struct proc *p = proc; p < &proc[NPROC]; p++) {
      if (p->parent != me)
        continue;
      acquire(&p->lock);
      children++;
      if (p->state == ZOMBIE) {
        int pid = p->pid;
        if (status)
          *status = p->xstate;
        p->state = UNUSED;
        p->pid = 0;
        p->parent = 0;
        p->name[0] = 0;
        release(&p->lock);
        release(&wait_lock);
        return pid;
      }
      release(&p->lock);
    }
    if (children == 0) {
      release(&wait_lock);
      return -1;
    }
    sleep(me, &wait_lock);
  }
}

// Each hart's scheduler, on its boot stack: pick a RUNNABLE thread, run it until it gives the
// hart back (yield, sleep or exit), repeat. With nothing to run, wait for an interrupt.
void scheduler(void)
{
  struct cpu *c = mycpu();

  c->proc = 0;
  for (;;) {
    // Devices must be able to interrupt, or a hart whose threads all sleep waits forever.
    intr_on();
    int ran = 0;
    for (struct proc *p = proc; p < &proc[NPROC]; p++) {
      acquire(&p->lock);
      if (p->state == RUNNABLE) {
        p->state = RUNNING;
        c->proc = p;
        swtch(&c->context, &p->context);
        c->proc = 0;
        ran = 1;
      }
      release(&p->lock);
    }
    if (!ran)
      asm volatile("wfi");
  }
}

// Switch to this hart's scheduler. The caller holds p->lock and nothing else, and has already
// changed p->state. intena belongs to this thread, not to the hart, so it is saved here.
void sched(void)
{
  struct proc *p = myproc();

  if (!holding(&p->lock))
    panic("sched p->lock");
  if (mycpu()->noff != 1)
    panic("sched locks");
  if (p->state == RUNNING)
    panic("sched running");
  if (intr_get())
    panic("sched interruptible");

  int intena = mycpu()->intena;
  swtch(&p->context, &mycpu()->context);
  mycpu()->intena = intena;
}

// Let another thread run on this hart.
void yield(void)
{
  struct proc *p = myproc();
  acquire(&p->lock);
  p->state = RUNNABLE;
  sched();
  release(&p->lock);
}

// Release lk and sleep on chan; take lk again when woken. Holding p->lock from before lk is
// released until the thread is asleep means no wakeup(chan) can slip in between.
void sleep(void *chan, struct spinlock *lk)
{
  struct proc *p = myproc();

  acquire(&p->lock);
  release(lk);
  p->chan = chan;
  p->state = SLEEPING;
  sched();
  p->chan = 0;
  release(&p->lock);
  acquire(lk);
}

// Make every thread sleeping on chan runnable. Call without any p->lock held.
void wakeup(void *chan)
{
  for (struct proc *p = proc; p < &proc[NPROC]; p++) {
    if (p == myproc())
      continue;
    acquire(&p->lock);
    if (p->state == SLEEPING && p->chan == chan)
      p->state = RUNNABLE;
    release(&p->lock);
  }
}

// ^P on the console, and the shell's `ps`: one line per thread. Takes no locks, so it works
// when the kernel is wedged.
void procdump(void)
{
  static char *states[] = {
    [UNUSED] "unused", [USED] "used", [SLEEPING] "sleep",
    [RUNNABLE] "runble", [RUNNING] "run", [ZOMBIE] "zombie",
  };

  int n = 0;
  printf("\n");
  for (struct proc *p = proc; p < &proc[NPROC]; p++) {
    if (p->state == UNUSED)
      continue;
    n++;
    char *st = (p->state >= 0 && p->state < NELEM(states)) ? states[p->state] : "???";
    printf("%d %s %s chan=%p\n", p->pid, st, p->name, p->chan);
  }
  printf("%d threads\n", n);
}
