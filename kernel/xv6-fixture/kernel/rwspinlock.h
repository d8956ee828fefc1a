// A reader-writer spinlock with writer priority: any number of readers, or one writer; once a
// writer waits, new readers wait too, so a stream of readers cannot starve writers.
// Holders run with interrupts off, like spinlock holders.
struct rwspinlock {
  struct spinlock lk;  // protects the fields below; never held while waiting
  int readers;         // readers inside
  int writer;          // 1 while a writer is inside
  int waiting;         // writers waiting to enter
  int wpid;            // pid of the writer inside
};
