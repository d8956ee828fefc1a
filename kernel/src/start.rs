//! M-mode start (xv6's start.c): configure the machine, then drop to S-mode in `main`.

use riscv::register::{mepc, mstatus};

extern "C" {
    fn main() -> !;
}

/// Sstc enable bit in `menvcfg`: lets S-mode program its own timer through `stimecmp`.
const MENVCFG_STCE: u64 = 1 << 63;

/// Reached from `_entry` on every hart, in M-mode, on the hart's boot stack.
#[no_mangle]
extern "C" fn start(hartid: usize, dtb: usize) -> ! {
    if hartid == 0 {
        crate::fdt::set_dtb(dtb);
    }
    // SAFETY: M-mode configuration of this hart before it ever runs S-mode code; the values
    // follow xv6's start.c. CSR numbers: medeleg 0x302, mideleg 0x303, mie 0x304,
    // mcounteren 0x306, menvcfg 0x30a, pmpcfg0 0x3a0, pmpaddr0 0x3b0, stimecmp 0x14d, satp 0x180.
    unsafe {
        mstatus::set_mpp(mstatus::MPP::Supervisor);
        mepc::write(main as *const () as usize);
        // No paging until vm::init_hart.
        core::arch::asm!("csrw 0x180, zero");
        // All exceptions and interrupts go to S-mode.
        core::arch::asm!("csrw 0x302, {}", in(reg) 0xffffusize);
        core::arch::asm!("csrw 0x303, {}", in(reg) 0xffffusize);
        // S-mode may access all of physical memory.
        core::arch::asm!("csrw 0x3b0, {}", in(reg) 0x3f_ffff_ffff_ffffusize);
        core::arch::asm!("csrw 0x3a0, {}", in(reg) 0xfusize);
        // Timer: Sstc (QEMU >= 7.0). Enable S-mode timer interrupts in mie, stimecmp through
        // menvcfg.STCE, and reading `time` from S-mode through mcounteren.TM.
        core::arch::asm!("csrs 0x304, {}", in(reg) 1usize << 5);
        core::arch::asm!("csrs 0x30a, {}", in(reg) MENVCFG_STCE);
        core::arch::asm!("csrs 0x306, {}", in(reg) 2usize);
        // Far in the future until trap::init_hart arms it.
        core::arch::asm!("csrw 0x14d, {}", in(reg) u64::MAX);
        // Keep the hart id in tp for hart::id().
        core::arch::asm!("mv tp, {}", in(reg) hartid);
    }
    let menvcfg: u64;
    // SAFETY: reads a CSR.
    unsafe { core::arch::asm!("csrr {}, 0x30a", out(reg) menvcfg) };
    if menvcfg & MENVCFG_STCE == 0 {
        // No Sstc: without timer interrupts nothing works. Say so and stop QEMU.
        crate::uart::init();
        crate::console::write_raw(
            "lockscope-kernel: this CPU has no Sstc (stimecmp); use QEMU 7.0 or newer\n",
        );
        crate::exit::fail(crate::exit::CODE_BOOTARGS);
    }
    // Enter main with a fresh stack and zero ra/fp so backtraces end at main.
    let (_, top) = crate::layout::stack_bounds(hartid);
    // SAFETY: mret to main in S-mode (mstatus.MPP and mepc set above) on this hart's own stack.
    unsafe {
        core::arch::asm!(
            "mv sp, {top}",
            "li ra, 0",
            "li s0, 0",
            "mret",
            top = in(reg) top,
            options(noreturn)
        )
    }
}
