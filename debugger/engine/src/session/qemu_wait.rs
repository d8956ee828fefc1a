//! The qemu-wait thread: notices QEMU exiting.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::launch::Qemu;
use super::messages::{Msg, Outbox, StopFlag};

pub(super) fn qemu_wait_thread(qemu: Arc<Qemu>, to: Outbox, stop: StopFlag) {
    loop {
        if let Some(status) = qemu.try_wait() {
            // Let QEMU's last stderr line arrive.
            std::thread::sleep(Duration::from_millis(50));
            to.send(Msg::QemuExited {
                code: status.code(),
                stderr: qemu.stderr_text(),
            });
            return;
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
