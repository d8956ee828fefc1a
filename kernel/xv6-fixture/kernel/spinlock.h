// A spinlock, with the two counters the locks lab adds for its statistics.
struct spinlock {
  uint locked;      // 1 while held
  char *name;       // for messages and statistics
  struct cpu *cpu;  // the holder, while held
  int nts;          // failed test-and-set attempts (time spent spinning)
  int n;            // calls to acquire()
};
