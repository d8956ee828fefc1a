// Formatted output to the console, snprintf, and panic.
//
// Formats: %d %u %x %p %s %c %%, with an optional l (%ld, %lu, %lx).

#include "types.h"
#include "param.h"
#include "spinlock.h"
#include "riscv.h"
#include "defs.h"

volatile int panicked = 0;  // set by panic(); other harts stop printing

static struct {
  struct spinlock lock;
  int locking;  // 0 once a panic is printing: do not wait for a lock a dead hart holds
} pr;

// Where formatted characters go: the console, or a bounded buffer.
struct sink {
  char *buf;  // 0: the console
  int size;
  int len;
};

static void put(struct sink *s, char c)
{
  if (s->buf == 0) {
    consputc(c);
  } else if (s->len + 1 < s->size) {
    s->buf[s->len] = c;
  }
  s->len++;
}

static void putnum(struct sink *s, uint64 x, int base, int is_signed)
{
  static char digits[] = "0123456789abcdef";
  char tmp[24];
  int i = 0;
  int neg = is_signed && (long)x < 0;

  if (neg)
    x = -(long)x;
  do {
    tmp[i++] = digits[x % base];
    x /= base;
  } while (x != 0);
  if (neg)
    tmp[i++] = '-';
  while (--i >= 0)
    put(s, tmp[i]);
}

static void format(struct sink *s, char *fmt, va_list ap)
{
  for (; *fmt; fmt++) {
    if (*fmt != '%') {
      put(s, *fmt);
      continue;
    }
    fmt++;
    int is_long = 0;
    if (*fmt == 'l') {
      is_long = 1;
      fmt++;
    }
    switch (*fmt) {
    case 'd':
      putnum(s, is_long ? va_arg(ap, long) : va_arg(ap, int), 10, 1);
      break;
    case 'u':
      putnum(s, is_long ? va_arg(ap, uint64) : va_arg(ap, uint), 10, 0);
      break;
    case 'x':
      putnum(s, is_long ? va_arg(ap, uint64) : va_arg(ap, uint), 16, 0);
      break;
    case 'p':
      put(s, '0');
      put(s, 'x');
      putnum(s, va_arg(ap, uint64), 16, 0);
      break;
    case 'c':
      put(s, va_arg(ap, int));
      break;
    case 's': {
      char *str = va_arg(ap, char *);
      if (str == 0)
        str = "(null)";
      while (*str)
        put(s, *str++);
      break;
    }
    case '%':
      put(s, '%');
      break;
    case 0:
      return;
    default:  // unknown: print it as written
      put(s, '%');
      put(s, *fmt);
      break;
    }
  }
}

int printf(char *fmt, ...)
{
  struct sink s = { 0, 0, 0 };
  va_list ap;
  int locking = pr.locking;

  if (locking)
    acquire(&pr.lock);
  va_start(ap, fmt);
  format(&s, fmt, ap);
  va_end(ap);
  if (locking)
    release(&pr.lock);
  return s.len;
}

// Like C's: writes at most size-1 characters and a terminating 0; returns the full length.
int snprintf(char *buf, int size, char *fmt, ...)
{
  struct sink s = { buf, size, 0 };
  va_list ap;

  if (size <= 0)
    return 0;
  va_start(ap, fmt);
  format(&s, fmt, ap);
  va_end(ap);
  buf[s.len < size ? s.len : size - 1] = 0;
  return s.len < size ? s.len : size - 1;
}

// Print the message, tell the other harts, and stop here for good: a debugger finds this
// hart spinning below with panicked set.
void panic(char *msg)
{
  pr.locking = 0;
  printf("panic: %s\n", msg);
  panicked = 1;
  for (;;)
    ;
}

void printfinit(void)
{
  initlock(&pr.lock, "pr");
  pr.locking = 1;
}
