//! One recording written from two threads: a live session's monitor writes the feed, and its
//! gdb thread saves guest RAM at each stop while it holds the guest stopped.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::writer::{RamSaved, RecordingWriter, WriterStats};
use super::RecordingError;
use crate::feed::Feed;
use crate::memory::GuestMemory;

/// A [`RecordingWriter`] shared between threads (clones are handles to the same writer).
///
/// After the first error every call fails with that error's [`RecordingError::Stopped`]: what
/// was written stays readable up to its last whole chunk.
#[derive(Clone)]
pub struct Recorder {
    path: PathBuf,
    writer: Arc<Mutex<Option<RecordingWriter>>>,
    /// RAM saves announced and not done yet: `finish` waits for them.
    pending: Arc<(Mutex<usize>, Condvar)>,
}

/// How long `finish` waits for announced RAM saves (128 MiB take well under a second).
const RAM_WAIT: Duration = Duration::from_secs(10);

impl Recorder {
    pub fn new(writer: RecordingWriter) -> Self {
        Self {
            path: writer.path().to_owned(),
            writer: Arc::new(Mutex::new(Some(writer))),
            pending: Arc::new((Mutex::new(0), Condvar::new())),
        }
    }

    /// Announces a RAM save to come (call it before the stop is sent to the monitor), so that
    /// a session that ends right after the stop still gets its RAM: [`Recorder::finish`]
    /// waits for it. Every announcement must be followed by [`Recorder::stop_ram`] or
    /// [`Recorder::ram_skipped`].
    pub fn ram_coming(&self) {
        *self.pending.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    /// An announced RAM save that will not happen.
    pub fn ram_skipped(&self) {
        let (m, cv) = &*self.pending;
        let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        cv.notify_all();
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Option<RecordingWriter>> {
        // A panic while writing leaves at worst a half-open chunk: readers cope with that.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut RecordingWriter) -> Result<T, RecordingError>,
    ) -> Result<T, RecordingError> {
        match self.lock().as_mut() {
            Some(w) => f(w),
            None => Err(RecordingError::Stopped {
                path: self.path.clone(),
                first: "the recording was finished".into(),
            }),
        }
    }

    /// Records one feed item (see [`RecordingWriter::write`]).
    pub fn write(&self, feed: &Feed) -> Result<(), RecordingError> {
        self.with(|w| w.write(feed))
    }

    /// Saves guest RAM for stop number `stop` (see [`RecordingWriter::stop_ram_of`]); ends
    /// an announcement ([`Recorder::ram_coming`]) if there is one.
    pub fn stop_ram(
        &self,
        stop: usize,
        mem: &mut dyn GuestMemory,
        ram: Range<u64>,
    ) -> Result<RamSaved, RecordingError> {
        let r = self.with(|w| w.stop_ram_of(stop, mem, ram));
        self.ram_skipped();
        r
    }

    /// Writes the open chunk now.
    pub fn flush(&self) -> Result<(), RecordingError> {
        self.with(|w| w.flush())
    }

    /// Finishes the recording (index and trailer; joins `keep` segments), once the announced
    /// RAM saves are done (or after a few seconds). Later calls fail.
    pub fn finish(&self) -> Result<WriterStats, RecordingError> {
        let (m, cv) = &*self.pending;
        let deadline = Instant::now() + RAM_WAIT;
        let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n = cv
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(n);
        match self.lock().take() {
            Some(w) => w.finish(),
            None => Err(RecordingError::Stopped {
                path: self.path.clone(),
                first: "the recording was finished".into(),
            }),
        }
    }
}
