// A lock that may be held across sleep(): waiters give up the CPU instead of spinning.
struct sleeplock {
  uint locked;         // 1 while held
  struct spinlock lk;  // protects this struct
  char *name;
  int pid;             // the holder's pid
};
