//! Ending QEMU through the SiFive test device: QEMU exits with status 0 for pass and with
//! `code` for `FAIL | code << 16`.

use crate::layout::TEST_DEVICE;

const PASS: u32 = 0x5555;
const FAIL: u32 = 0x3333;

/// The workload ran and its check failed (kalloctest FAIL).
pub const CODE_FAIL: u32 = 2;
/// Bad boot arguments, or a workload this kernel does not have.
pub const CODE_BOOTARGS: u32 = 3;
/// The kernel panicked (with `panic=exit`).
pub const CODE_PANIC: u32 = 4;

fn write(v: u32) -> ! {
    // SAFETY: the test device is mapped device memory; writing it ends the machine.
    unsafe { (TEST_DEVICE as *mut u32).write_volatile(v) };
    // QEMU acts on the write; never reached there.
    loop {
        riscv::asm::wfi();
    }
}

pub fn pass() -> ! {
    write(PASS)
}

/// `code` must not be 0 (QEMU would report success) nor 1 (QEMU's own errors use it).
pub fn fail(code: u32) -> ! {
    write(FAIL | (code << 16))
}
