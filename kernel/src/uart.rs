//! The 16550 UART of QEMU virt: polled output, interrupt-driven input (discarded for now).

use crate::layout::UART0;

const RHR: usize = 0; // receive holding
const THR: usize = 0; // transmit holding
const IER: usize = 1; // interrupt enable
const FCR: usize = 2; // FIFO control
const LCR: usize = 3; // line control
const LSR: usize = 5; // line status

const LSR_RX_READY: u8 = 1 << 0;
const LSR_TX_IDLE: u8 = 1 << 5;

fn reg(r: usize) -> *mut u8 {
    (UART0 + r) as *mut u8
}

fn read(r: usize) -> u8 {
    // SAFETY: UART0 is mapped device memory (identity-mapped before and after paging).
    unsafe { reg(r).read_volatile() }
}

fn write(r: usize, v: u8) {
    // SAFETY: as in `read`.
    unsafe { reg(r).write_volatile(v) }
}

pub fn init() {
    write(IER, 0x00);
    // Baud divisor latch: 38.4K.
    write(LCR, 0x80);
    write(0, 0x03);
    write(1, 0x00);
    // 8 bits, no parity.
    write(LCR, 0x03);
    // Reset and enable FIFOs.
    write(FCR, 0x07);
    // Receive interrupts only: output is polled.
    write(IER, 0x01);
}

/// Writes one byte, waiting for the transmitter. Callers serialize through the console lock.
pub fn putc_sync(c: u8) {
    while read(LSR) & LSR_TX_IDLE == 0 {
        core::hint::spin_loop();
    }
    write(THR, c);
}

/// UART interrupt: drain input. The kernel has no shell, so input is dropped.
pub fn intr() {
    while read(LSR) & LSR_RX_READY != 0 {
        let _ = read(RHR);
    }
}
