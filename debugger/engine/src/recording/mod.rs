//! Recordings, format version 2: a session's [`Feed`](crate::feed::Feed) stream in checksummed,
//! compressed chunks, with the guest RAM of every stop, optionally the kernel ELF, and an index.
//!
//! - [`RecordingWriter`]: what a session writes its feed with ([`Recorder`] shares one between
//!   the monitor and the thread that saves guest RAM at stops).
//! - [`Recording`]: opens a version-2 file (or a version-1 trace, converted in memory), survives
//!   a cut or damaged file and says what it lost ([`Problem`]), reads stops and their RAM lazily.
//! - [`Timeline`]: the state at any time of a recording, fast (keyframes built on open).
//! - [`convert_v1`]: rewrites a version-1 trace as version 2.
//!
//! The format is specified in docs/recording.md and in [`format`].

mod codec;
mod convert;
mod delta;
pub mod format;
mod headless;
mod keep;
mod marks;
mod open;
mod ram;
mod reader;
mod scan;
mod shared;
mod sink;
mod timeline;
mod writer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use convert::{convert_v1, Converted};
pub use delta::{delta_view, CounterDelta, RangeDelta};
pub use headless::{parse_time, view_at};
pub use keep::Keep;
pub use marks::{Mark, MarkKind};
pub use ram::RecordedRam;
pub use reader::{FeedChunk, RecordedStop, Recording};
pub use scan::{ChunkRef, Problem};
pub use shared::Recorder;
pub use timeline::{Direction, Position, Timeline, TimelineOptions};
pub use writer::{RamSaved, RecordingWriter, WriterOptions, WriterStats};

/// Where a recording came from. No path of the recording machine goes in here: the kernel is
/// named by its file name and identified by its build fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingHeader {
    /// 2 for this format.
    pub format: u32,
    /// lockscope ABI version of the kernel that was recorded (0 when not an ABI kernel).
    pub abi_version: u32,
    /// The kernel ELF's file name (`kernel`, `lockscope-kernel`), never its directory.
    pub kernel_name: Option<String>,
    /// [`crate::symbols::Symbols::fingerprint`] of that ELF.
    pub kernel_fingerprint: Option<String>,
    /// The recording carries the kernel ELF (`Recording::kernel_elf`).
    #[serde(default)]
    pub with_kernel: bool,
    /// QEMU harts.
    pub smp: u32,
    pub bootargs: String,
    /// How the data was read: `shared-ram`, `gdb`, `fixture`, `converted-v1`.
    pub source: String,
    /// `lockscope 0.1.0`.
    pub recorder: String,
    /// The `keep` policy the writer ran with (`2m`, `500MB`), when any.
    #[serde(default)]
    pub keep: Option<String>,
}

impl RecordingHeader {
    /// A header for `smp` harts booted with `bootargs`.
    pub fn new(smp: u32, bootargs: &str, source: &str) -> Self {
        Self {
            format: 2,
            abi_version: 0,
            kernel_name: None,
            kernel_fingerprint: None,
            with_kernel: false,
            smp,
            bootargs: bootargs.to_owned(),
            source: source.to_owned(),
            recorder: concat!("lockscope ", env!("CARGO_PKG_VERSION")).to_owned(),
            keep: None,
        }
    }

    /// Names the kernel by file name and fingerprint only.
    pub fn kernel(mut self, path: &Path, fingerprint: String) -> Self {
        self.kernel_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        self.kernel_fingerprint = Some(fingerprint);
        self
    }
}

/// Why a recording could not be written or opened at all. Damage inside a recording that can
/// still be read is not an error: it is a [`Problem`], listed by [`Recording::problems`].
#[derive(Debug, Error)]
pub enum RecordingError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a lockscope recording (it starts with neither LSREC nor LSTRACE1): pass a file written by `lockscope run --record`")]
    NotARecording { path: PathBuf },
    #[error("{path} is a lockscope recording of format version {version}, newer than this lockscope reads (1 and 2): update lockscope")]
    NewerVersion { path: PathBuf, version: u8 },
    #[error("{path}: chunk {chunk} at byte {offset} is corrupt: {problem}")]
    Corrupt {
        path: PathBuf,
        chunk: u64,
        offset: u64,
        problem: String,
    },
    #[error("{path} has no readable header chunk ({problem}): the recording was cut before its first chunk was written, or its start is damaged")]
    NoHeader { path: PathBuf, problem: String },
    #[error("{path}: version-1 trace: {source}")]
    V1 {
        path: PathBuf,
        source: crate::trace::TraceError,
    },
    #[error("{path}: the recording has no stop number {stop} (it has {count}; list them with `lockscope replay --stops`)")]
    NoSuchStop {
        path: PathBuf,
        stop: usize,
        count: usize,
    },
    #[error("{path}: stop {stop} was recorded without its guest RAM (it was saved by a lockscope that did not capture RAM, or the RAM capture failed)")]
    NoRam { path: PathBuf, stop: usize },
    #[error("{path}: the recording was made without the kernel (record with --with-kernel, or pass --kernel with the ELF it was recorded with)")]
    NoKernel { path: PathBuf },
    #[error("{path}: the recording stopped because of an earlier write error ({first}); start a new recording")]
    Stopped { path: PathBuf, first: String },
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
    #[error("{0}")]
    Analysis(#[from] crate::analysis::ConfigError),
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> RecordingError + '_ {
    move |source| RecordingError::Io {
        path: path.to_owned(),
        source,
    }
}
