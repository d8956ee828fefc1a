//! The console thread: forwards QEMU's serial output to the engine and to the console log.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::messages::Outbox;
use crate::feed::Feed;

/// Forwards `out` to the engine; with `log`, also appends it there (a console QEMU logs
/// itself is only read).
/// `snap_now` is raised when a line that may open or close a lab test's window goes by, so
/// that the counters at that moment are read at once.
pub(super) fn console_thread(
    mut out: Box<dyn Read + Send>,
    log: Option<PathBuf>,
    to: Outbox,
    snap_now: Arc<AtomicBool>,
) {
    let mut file = log.and_then(|log| File::options().create(true).append(true).open(log).ok());
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(&buf[..n]);
        }
        pending.extend_from_slice(&buf[..n]);
        // Keep an incomplete UTF-8 sequence for the next read.
        let cut = match std::str::from_utf8(&pending) {
            Ok(_) => pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => pending.len(),
        };
        let text = String::from_utf8_lossy(&pending[..cut]).into_owned();
        pending.drain(..cut);
        let boundary = crate::monitor::may_bound_a_test(&text);
        if !to.send(super::messages::Msg::Feed(Feed::Console(text))) {
            break;
        }
        if boundary {
            snap_now.store(true, Ordering::Release);
        }
        // The UART sends a byte at a time; let a line gather instead of feeding each byte.
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(f) = file.as_mut() {
        let _ = f.flush();
    }
}
