//! The platform-level interrupt controller: routes device interrupts (UART, virtio-blk) to
//! S-mode on every hart.

use crate::hart;
use crate::layout::{PLIC, UART0_IRQ, VIRTIO0_IRQ, VIRTIO_SLOTS};

fn reg(off: usize) -> *mut u32 {
    (PLIC + off) as *mut u32
}

fn write(off: usize, v: u32) {
    // SAFETY: the PLIC is mapped device memory; offsets come from the PLIC spec.
    unsafe { reg(off).write_volatile(v) }
}

fn read(off: usize) -> u32 {
    // SAFETY: as in `write`.
    unsafe { reg(off).read_volatile() }
}

fn senable(h: usize) -> usize {
    0x2080 + h * 0x100
}

fn spriority(h: usize) -> usize {
    0x20_1000 + h * 0x2000
}

fn sclaim(h: usize) -> usize {
    0x20_1004 + h * 0x2000
}

/// Device IRQs this kernel takes.
fn irqs() -> impl Iterator<Item = u32> {
    core::iter::once(UART0_IRQ).chain(VIRTIO0_IRQ..VIRTIO0_IRQ + VIRTIO_SLOTS as u32)
}

/// Hart 0, once: give every device IRQ a non-zero priority.
pub fn init() {
    for irq in irqs() {
        write(irq as usize * 4, 1);
    }
}

/// Every hart: enable the IRQs for this hart's S-mode context.
pub fn init_hart() {
    let h = hart::id();
    let mask = irqs().fold(0u32, |m, irq| m | (1 << irq));
    write(senable(h), mask);
    write(spriority(h), 0);
}

/// An external interrupt: claim it, dispatch it, complete it.
pub fn dev_intr() {
    let h = hart::id();
    let irq = read(sclaim(h));
    match irq {
        0 => {}
        UART0_IRQ => crate::uart::intr(),
        i if crate::virtio_disk::irq() == Some(i) => crate::virtio_disk::intr(),
        // Other virtio slots hold no device this kernel drives.
        i if (VIRTIO0_IRQ..VIRTIO0_IRQ + VIRTIO_SLOTS as u32).contains(&i) => {}
        other => println!("plic: unexpected irq {other}"),
    }
    if irq != 0 {
        write(sclaim(h), irq);
    }
}
