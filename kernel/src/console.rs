//! Console output under the `cons` lock, and the `print!`/`println!` macros.

use crate::spinlock::SpinLock;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

pub static CONS: SpinLock<()> = SpinLock::new("cons", "console", ());

/// Cleared by a panicking hart: another hart may hold the lock forever.
static LOCKING: AtomicBool = AtomicBool::new(false);

pub fn init() {
    LOCKING.store(true, Ordering::Release);
}

/// Stops taking the console lock (xv6's `pr.locking = 0` on panic).
pub fn no_locking() {
    LOCKING.store(false, Ordering::Release);
}

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                crate::uart::putc_sync(b'\r');
            }
            crate::uart::putc_sync(b);
        }
        Ok(())
    }
}

pub fn print(args: fmt::Arguments) {
    if LOCKING.load(Ordering::Acquire) {
        let _g = CONS.lock();
        let _ = Uart.write_fmt(args);
    } else {
        let _ = Uart.write_fmt(args);
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Writes a string with no lock and no formatting (for M-mode, before locks exist).
pub fn write_raw(s: &str) {
    let _ = Uart.write_str(s);
}
