//! Ending QEMU through the SiFive test device: QEMU exits with status 0 for PASS and with
//! `code` for `FAIL | code << 16`. The codes are `lockscope_abi::exit`'s, shared with the
//! debugger.

use crate::layout::TEST_DEVICE;
use lockscope_abi::exit;

const DEVICE_PASS: u32 = 0x5555;
const DEVICE_FAIL: u32 = 0x3333;

fn write(v: u32) -> ! {
    // SAFETY: the test device is mapped device memory; writing it ends the machine.
    unsafe { (TEST_DEVICE as *mut u32).write_volatile(v) };
    // QEMU acts on the write; never reached there.
    loop {
        riscv::asm::wfi();
    }
}

/// QEMU exits with [`exit::PASS`].
pub fn pass() -> ! {
    write(DEVICE_PASS)
}

/// QEMU exits with `code`: [`exit::FAIL`], [`exit::BOOTARGS`] or [`exit::PANIC`].
pub fn fail(code: i32) -> ! {
    // 0 would read as success and 1 is QEMU's own error status.
    debug_assert!(code > 1 && code <= 0xffff);
    write(DEVICE_FAIL | ((code as u32) << 16))
}

const _: () = assert!(
    exit::PASS == 0,
    "the test device's PASS makes QEMU exit with 0"
);
