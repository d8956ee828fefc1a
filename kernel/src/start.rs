//! M-mode start (xv6's start.c): configure the machine, then drop to S-mode in `main`.

use crate::arch;

extern "C" {
    fn main() -> !;
}

/// Reached from `_entry` on every hart, in M-mode, on the hart's boot stack.
#[no_mangle]
extern "C" fn start(hartid: usize, dtb: usize) -> ! {
    if hartid == 0 {
        crate::fdt::set_dtb(dtb);
    }
    // SAFETY: M-mode, on this hart's boot path, before it runs any S-mode code; `tp` is the
    // hart's own id from `mhartid` (a0 at `_entry`).
    let sstc = unsafe {
        arch::set_hart_id(hartid);
        arch::machine_setup(main as *const () as usize)
    };
    if !sstc {
        // No Sstc: without timer interrupts nothing works. Say so and stop QEMU. (QEMU 7.2's
        // `rv64` CPU has it, so the classic M-mode timer vector is not needed.)
        crate::uart::init();
        crate::console::write_raw(
            "lockscope-kernel: this CPU has no Sstc (stimecmp); use QEMU 7.0 or newer\n",
        );
        crate::exit::fail(lockscope_abi::exit::BOOTARGS);
    }
    let (_, top) = crate::layout::stack_bounds(hartid);
    // SAFETY: machine_setup set mstatus.MPP and mepc; `top` is this hart's own stack.
    unsafe { arch::enter_supervisor(top) }
}
