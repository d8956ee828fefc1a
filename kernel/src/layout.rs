//! Physical memory map of QEMU `virt` (direct-mapped: virtual == physical).

/// SiFive test device: write to it to end QEMU.
pub const TEST_DEVICE: usize = 0x10_0000;
pub const PLIC: usize = 0x0c00_0000;
pub const PLIC_SIZE: usize = 0x40_0000;
pub const UART0: usize = 0x1000_0000;
pub const UART0_IRQ: u32 = 10;
/// First virtio-mmio slot; QEMU has 8, 0x1000 apart, IRQs 1..=8.
pub const VIRTIO0: usize = 0x1000_1000;
pub const VIRTIO_SLOTS: usize = 8;
pub const VIRTIO0_IRQ: u32 = 1;

pub const KERNBASE: usize = 0x8000_0000;
pub const PGSIZE: usize = 4096;
/// Kernel stack per hart; must match `STACK_SIZE` in asm/entry.S and kernel.ld.
pub const STACK_SIZE: usize = 0x10000;

extern "C" {
    #[link_name = "text_start"]
    static TEXT_START: u8;
    #[link_name = "etext"]
    static ETEXT: u8;
    #[link_name = "end"]
    static END: u8;
    #[link_name = "boot_stack"]
    static BOOT_STACK: u8;
}

pub fn text_start() -> usize {
    // Linker-defined symbol: only its address is taken.
    core::ptr::addr_of!(TEXT_START) as usize
}

/// End of kernel text (page aligned).
pub fn etext() -> usize {
    // Linker-defined symbol: only its address is taken.
    core::ptr::addr_of!(ETEXT) as usize
}

/// First address after the kernel image, stacks included (page aligned).
pub fn kernel_end() -> usize {
    // Linker-defined symbol: only its address is taken.
    core::ptr::addr_of!(END) as usize
}

/// The bounds of hart `id`'s kernel stack.
pub fn stack_bounds(id: usize) -> (usize, usize) {
    // Linker-defined symbol: only its address is taken.
    let base = core::ptr::addr_of!(BOOT_STACK) as usize;
    (base + id * STACK_SIZE, base + (id + 1) * STACK_SIZE)
}

pub const fn pg_round_up(a: usize) -> usize {
    (a + PGSIZE - 1) & !(PGSIZE - 1)
}

pub const fn pg_round_down(a: usize) -> usize {
    a & !(PGSIZE - 1)
}
