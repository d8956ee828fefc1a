//! Following a file as another process appends to it (QEMU's console log), as a reader.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

/// How often the end of the file is looked at again.
const POLL: Duration = Duration::from_millis(20);

/// Reads a growing file; at its end, waits for more until `done` says the writer has gone,
/// then reads what is left and reports the end.
pub(super) struct Tail {
    file: File,
    done: Box<dyn Fn() -> bool + Send>,
}

impl Tail {
    pub(super) fn open(path: &Path, done: Box<dyn Fn() -> bool + Send>) -> io::Result<Tail> {
        Ok(Tail {
            file: File::open(path)?,
            done,
        })
    }
}

impl Read for Tail {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.file.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            if (self.done)() {
                // The writer's last bytes may have landed since the read above.
                return self.file.read(buf);
            }
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_tail_follows_appends_until_the_writer_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = File::create(&path).unwrap();
        w.write_all(b"one\n").unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let mut t = Tail::open(&path, Box::new(move || d.load(Ordering::Acquire))).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            w.write_all(b"two\n").unwrap();
            done.store(true, Ordering::Release);
        });
        let mut all = String::new();
        t.read_to_string(&mut all).unwrap();
        writer.join().unwrap();
        assert_eq!(all, "one\ntwo\n");
    }
}
