//! What the kernel needs from QEMU's device tree, read once by hart 0 at boot.

use core::sync::atomic::{AtomicUsize, Ordering};
use lockscope_abi::{BOOTARGS_LEN, MAX_HARTS};

/// The device tree address QEMU passed in `a1`, saved by hart 0 in M-mode.
static DTB: AtomicUsize = AtomicUsize::new(0);

pub fn set_dtb(addr: usize) {
    DTB.store(addr, Ordering::Relaxed);
}

pub struct BootInfo {
    /// Harts in `/cpus`, capped at [`MAX_HARTS`].
    pub nharts: u32,
    pub timebase_hz: u64,
    pub ram_base: usize,
    pub ram_size: usize,
    bootargs: [u8; BOOTARGS_LEN],
    bootargs_len: usize,
    dtb: usize,
}

impl BootInfo {
    pub fn bootargs(&self) -> &str {
        // Only ever filled from a `&str` cut at a char boundary.
        core::str::from_utf8(&self.bootargs[..self.bootargs_len]).unwrap_or("")
    }

    /// End of the RAM the allocator may use: below the device tree if QEMU put it in RAM.
    pub fn free_end(&self) -> usize {
        let ram_end = self.ram_base + self.ram_size;
        if self.dtb >= self.ram_base && self.dtb < ram_end {
            crate::layout::pg_round_down(self.dtb)
        } else {
            ram_end
        }
    }
}

pub fn read() -> BootInfo {
    let addr = DTB.load(Ordering::Relaxed);
    // SAFETY: QEMU passes a valid flattened device tree in a1; it is in RAM or ROM that is
    // identity-mapped and never written by the kernel before this point.
    let fdt = match unsafe { fdt::Fdt::from_ptr(addr as *const u8) } {
        Ok(f) => f,
        Err(e) => panic!("bad device tree at {addr:#x}: {e:?}"),
    };
    let nharts = fdt.cpus().count().clamp(1, MAX_HARTS) as u32;
    let timebase_hz = fdt
        .cpus()
        .next()
        .map(|c| c.timebase_frequency() as u64)
        .unwrap_or(10_000_000);
    let mem = fdt.memory();
    let region = mem
        .regions()
        .next()
        .expect("device tree has no memory region");
    let ram_base = region.starting_address as usize;
    let ram_size = region.size.unwrap_or(128 << 20);
    let mut bootargs = [0u8; BOOTARGS_LEN];
    let args = fdt.chosen().bootargs().unwrap_or("").trim();
    let mut n = args.len().min(BOOTARGS_LEN - 1);
    while !args.is_char_boundary(n) {
        n -= 1;
    }
    bootargs[..n].copy_from_slice(&args.as_bytes()[..n]);
    BootInfo {
        nharts,
        timebase_hz,
        ram_base,
        ram_size,
        bootargs,
        bootargs_len: n,
        dtb: addr,
    }
}
