// The console: output through the UART, and a line-edited input buffer the shell reads.

#include "types.h"
#include "param.h"
#include "spinlock.h"
#include "riscv.h"
#include "defs.h"

#define BACKSPACE 0x100
#define CTRL(x) ((x) - '@')

static struct {
  struct spinlock lock;
  char buf[128];
  uint r;  // next character consgets() reads
  uint w;  // end of the complete lines
  uint e;  // end of the line being edited
} cons;

void consputc(int c)
{
  if (c == BACKSPACE) {
    uartputc_sync('\b');
    uartputc_sync(' ');
    uartputc_sync('\b');
  } else {
    uartputc_sync(c);
  }
}

// Called by the UART interrupt with each character typed: echo it, edit the line, and wake
// the reader when a line is complete.
void consoleintr(int c)
{
  acquire(&cons.lock);
  switch (c) {
  case CTRL('P'):
    procdump();
    break;
  case CTRL('U'):
    while (cons.e != cons.w && cons.buf[(cons.e - 1) % sizeof(cons.buf)] != '\n') {
      cons.e--;
      consputc(BACKSPACE);
    }
    break;
  case '\b':
  case 0x7f:
    if (cons.e != cons.w) {
      cons.e--;
      consputc(BACKSPACE);
    }
    break;
  default:
    if (c != 0 && cons.e - cons.r < sizeof(cons.buf)) {
      if (c == '\r')
        c = '\n';
      consputc(c);
      cons.buf[cons.e++ % sizeof(cons.buf)] = c;
      if (c == '\n' || cons.e - cons.r == sizeof(cons.buf)) {
        cons.w = cons.e;
        wakeup(&cons.r);
      }
    }
    break;
  }
  release(&cons.lock);
}

// Read one line (without its newline) into dst, sleeping until it is typed.
int consgets(char *dst, int n)
{
  int i = 0;

  acquire(&cons.lock);
  for (;;) {
    while (cons.r == cons.w)
      sleep(&cons.r, &cons.lock);
    char c = cons.buf[cons.r++ % sizeof(cons.buf)];
    if (c == '\n')
      break;
    if (i < n - 1)
      dst[i++] = c;
  }
  release(&cons.lock);
  dst[i] = 0;
  return i;
}

void consoleinit(void)
{
  initlock(&cons.lock, "cons");
  uartinit();
}
