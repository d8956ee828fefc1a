struct buf;
struct context;
struct cpu;
struct proc;
struct spinlock;
struct sleeplock;
struct rwspinlock;

// bio.c
void binit(void);
struct buf *bread(uint, uint);
void bwrite(struct buf *);
void brelse(struct buf *);
int baudit(void);

// console.c
void consoleinit(void);
void consoleintr(int);
void consputc(int);
int consgets(char *, int);

// kalloc.c
void kinit(void);
void *kalloc(void);
void kfree(void *);
int kfreecount(int);
int kaudit(void);
extern int kmem_steals;

// main.c
extern volatile int nharts;

// plic.c
void plicinit(void);
void plicinithart(void);
int plic_claim(void);
void plic_complete(int);

// printf.c
int printf(char *, ...) __attribute__((format(printf, 1, 2)));
int snprintf(char *, int, char *, ...) __attribute__((format(printf, 3, 4)));
void panic(char *) __attribute__((noreturn));
void printfinit(void);
extern volatile int panicked;

// proc.c
int cpuid(void);
struct cpu *mycpu(void);
struct proc *myproc(void);
void procinit(void);
void proc_mapstacks(pagetable_t);
int kthread(char *, void (*)(uint64), uint64);
void kexit(int) __attribute__((noreturn));
int kwait(int *);
void scheduler(void) __attribute__((noreturn));
void sched(void);
void yield(void);
void sleep(void *, struct spinlock *);
void wakeup(void *);
void procdump(void);

// rwspinlock.c
void initrwlock(struct rwspinlock *, char *);
void read_acquire(struct rwspinlock *);
void read_release(struct rwspinlock *);
void write_acquire(struct rwspinlock *);
void write_release(struct rwspinlock *);

// sh.c
void shellinit(void);

// sleeplock.c
void initsleeplock(struct sleeplock *, char *);
void acquiresleep(struct sleeplock *);
void releasesleep(struct sleeplock *);
int holdingsleep(struct sleeplock *);

// spinlock.c
void initlock(struct spinlock *, char *);
void freelock(struct spinlock *);
void acquire(struct spinlock *);
void release(struct spinlock *);
int holding(struct spinlock *);
void push_off(void);
void pop_off(void);
int statslock(char *, int);
int lockaudit(void);

// string.c
void *memset(void *, int, uint64);
void *memmove(void *, const void *, uint64);
void *memcpy(void *, const void *, uint64);
int memcmp(const void *, const void *, uint64);
int strlen(const char *);
int strncmp(const char *, const char *, uint);
int strcmp(const char *, const char *);
char *safestrcpy(char *, const char *, int);
int atoi(const char *);

// swtch.S
void swtch(struct context *, struct context *);

// tests: kalloctest.c, bcachetest.c, rwlktest.c, testlib.c
void kalloctest(void);
void bcachetest(void);
void rwlktest(void);
int ntas(int);
int spawn(char *, void (*)(uint64), uint64);
void waitall(int);
void spin_barrier(volatile int *, int);
uint64 rand_next(uint64 *);
int nworkers(void);
void blk_stamp(uchar *, uint, uint);
int blk_check(uchar *, uint, uint);

// trap.c
extern uint ticks;
extern struct spinlock tickslock;
void trapinit(void);
void trapinithart(void);

// uart.c
void uartinit(void);
void uartputc_sync(int);
void uartintr(void);

// virtio_disk.c
void virtio_disk_init(void);
void virtio_disk_rw(struct buf *, int);
void virtio_disk_intr(void);

// vm.c
void kvminit(void);
void kvminithart(void);
void kvmmap(pagetable_t, uint64, uint64, uint64, int);
pte_t *walk(pagetable_t, uint64, int);

#define NELEM(x) (sizeof(x) / sizeof((x)[0]))
