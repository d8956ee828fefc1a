//! One recording written from two threads: a live session's monitor writes the feed, and its
//! gdb thread saves guest RAM at each stop while it holds the guest stopped.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

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
}

impl Recorder {
    pub fn new(writer: RecordingWriter) -> Self {
        Self {
            path: writer.path().to_owned(),
            writer: Arc::new(Mutex::new(Some(writer))),
        }
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

    /// Saves guest RAM for stop number `stop` (see [`RecordingWriter::stop_ram_of`]).
    pub fn stop_ram(
        &self,
        stop: usize,
        mem: &mut dyn GuestMemory,
        ram: Range<u64>,
    ) -> Result<RamSaved, RecordingError> {
        self.with(|w| w.stop_ram_of(stop, mem, ram))
    }

    /// Writes the open chunk now.
    pub fn flush(&self) -> Result<(), RecordingError> {
        self.with(|w| w.flush())
    }

    /// Finishes the recording (index and trailer; joins `keep` segments). Later calls fail.
    pub fn finish(&self) -> Result<WriterStats, RecordingError> {
        match self.lock().take() {
            Some(w) => w.finish(),
            None => Err(RecordingError::Stopped {
                path: self.path.clone(),
                first: "the recording was finished".into(),
            }),
        }
    }
}
