// The 16550 UART of QEMU's virt machine: polled output, interrupt-driven input.

#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "riscv.h"
#include "defs.h"

#define RHR 0  // receive holding register (read)
#define THR 0  // transmit holding register (write)
#define IER 1  // interrupt enable
#define FCR 2  // FIFO control
#define LCR 3  // line control
#define LSR 5  // line status

#define LCR_DLAB 0x80       // the next two registers set the baud-rate divisor
#define LCR_8N1 0x03
#define LSR_RX_READY 0x01
#define LSR_TX_IDLE 0x20

#define reg(r) ((volatile uchar *)(UART0 + (r)))

void uartinit(void)
{
  *reg(IER) = 0x00;
  *reg(LCR) = LCR_DLAB;
  *reg(0) = 0x03;      // divisor 3: 38.4k baud
  *reg(1) = 0x00;
  *reg(LCR) = LCR_8N1;
  *reg(FCR) = 0x07;    // FIFOs on, both cleared
  *reg(IER) = 0x01;    // interrupt when a character arrives
}

// Write one character, waiting for the transmitter. After a panic every other hart stops
// here, so the panic message stays the last thing on the console.
void uartputc_sync(int c)
{
  push_off();
  if (panicked) {
    for (;;)
      ;
  }
  while ((*reg(LSR) & LSR_TX_IDLE) == 0)
    ;
  *reg(THR) = c;
  pop_off();
}

static int uartgetc(void)
{
  if (*reg(LSR) & LSR_RX_READY)
    return *reg(RHR);
  return -1;
}

// Receive interrupt: hand every waiting character to the console.
void uartintr(void)
{
  int c;
  while ((c = uartgetc()) >= 0)
    consoleintr(c);
}
