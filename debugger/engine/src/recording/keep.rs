//! `keep`: record for as long as it takes, keep only the last part.
//!
//! The writer writes segments `FILE.part-000001`, `FILE.part-000002`, ..., each a complete
//! recording that starts with the newest snapshot (a carry chunk), and starts a new one when the
//! open one spans a quarter of the kept duration (or size). A closed segment is deleted once the
//! newer closed ones cover the kept amount on their own. `finish` joins the kept segments into
//! `FILE` (through a temporary file and a rename) and removes them. If the writer is killed, the
//! segments stay and [`super::Recording::open`] of `FILE` opens them as one recording.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::format::{ChunkHeader, ChunkKind, HEADER_LEN};
use super::sink::FileSink;
use super::{io_err, RecordingError};

/// How much of a session to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The last this many nanoseconds of target time.
    Duration(u64),
    /// About the last this many bytes.
    Bytes(u64),
}

impl FromStr for Keep {
    type Err = String;

    /// `90s`, `2m`, `1h`, `500ms`; `100KB`, `500MB`, `2GB` (powers of 1024).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let bad = || format!("--keep {s:?}: use a duration (30s, 2m, 1h) or a size (500MB, 2GB)");
        let v: f64 = num.parse().map_err(|_| bad())?;
        if !(v > 0.0 && v.is_finite()) {
            return Err(bad());
        }
        let ns = |mul: f64| Ok(Keep::Duration((v * mul) as u64));
        let bytes = |mul: f64| Ok(Keep::Bytes((v * mul) as u64));
        match unit.trim().to_ascii_lowercase().as_str() {
            "ms" => ns(1e6),
            "s" => ns(1e9),
            "m" | "min" => ns(60e9),
            "h" => ns(3600e9),
            "kb" | "k" | "kib" => bytes(1024.0),
            "mb" | "mib" => bytes(1024.0 * 1024.0),
            "gb" | "g" | "gib" => bytes(1024.0 * 1024.0 * 1024.0),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Keep::Duration(ns) => write!(f, "{}s", ns as f64 / 1e9),
            Keep::Bytes(b) => write!(f, "{}MB", b as f64 / (1 << 20) as f64),
        }
    }
}

/// The name of segment `n` of `path`.
fn segment_path(path: &Path, n: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".part-{n:06}"));
    path.with_file_name(name)
}

/// The segments of `path` on disk, oldest first.
pub(crate) fn segment_paths(path: &Path) -> Result<Vec<PathBuf>, RecordingError> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.part-");
    let mut found: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let num = n.strip_prefix(&prefix)?;
            (num.len() == 6)
                .then(|| num.parse::<u64>().ok())
                .flatten()
                .map(|k| (k, e.path()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

struct Closed {
    path: PathBuf,
    span_ns: u64,
    bytes: u64,
}

/// The writer's segment bookkeeping.
pub(crate) struct Segments {
    path: PathBuf,
    keep: Keep,
    next: u64,
    closed: Vec<Closed>,
    open: Option<PathBuf>,
}

impl Segments {
    pub fn new(path: &Path, keep: Keep) -> Self {
        Self {
            path: path.to_owned(),
            keep,
            next: 1,
            closed: Vec::new(),
            open: None,
        }
    }

    pub fn next_path(&mut self) -> Result<PathBuf, RecordingError> {
        if self.next == 1 {
            // Leftovers of an earlier killed recording to the same path would join this one.
            for p in segment_paths(&self.path)? {
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        let p = segment_path(&self.path, self.next);
        self.next += 1;
        self.open = Some(p.clone());
        Ok(p)
    }

    /// Whether the open segment is long enough to close.
    pub fn full(&self, sink: &FileSink) -> bool {
        match self.keep {
            Keep::Duration(ns) => {
                let span = sink
                    .last_time
                    .saturating_sub(sink.first_time.unwrap_or(sink.last_time));
                span >= (ns / 4).max(1)
            }
            Keep::Bytes(b) => sink.offset >= (b / 4).max(1),
        }
    }

    fn amount(&self, c: &Closed) -> u64 {
        match self.keep {
            Keep::Duration(_) => c.span_ns,
            Keep::Bytes(_) => c.bytes,
        }
    }

    /// The open segment was closed; drops the oldest segments the newer ones make unneeded.
    pub fn closed(&mut self, span_ns: u64, bytes: u64) -> Result<(), RecordingError> {
        let Some(path) = self.open.take() else {
            return Ok(());
        };
        self.closed.push(Closed {
            path,
            span_ns,
            bytes,
        });
        let want = match self.keep {
            Keep::Duration(ns) => ns,
            Keep::Bytes(b) => b,
        };
        while self.closed.len() > 1 {
            let newer: u64 = self.closed[1..].iter().map(|c| self.amount(c)).sum();
            if newer < want {
                break;
            }
            let old = self.closed.remove(0);
            std::fs::remove_file(&old.path).map_err(io_err(&old.path))?;
        }
        Ok(())
    }

    /// Joins the kept segments into the recording's path and removes them.
    pub fn join(&mut self) -> Result<(), RecordingError> {
        let parts: Vec<PathBuf> = self.closed.iter().map(|c| c.path.clone()).collect();
        join_segments(&self.path, &parts)?;
        self.closed.clear();
        Ok(())
    }
}

/// Writes the chunks of `parts` as one recording at `path`: one header, one kernel, the first
/// segment's carried snapshot, every feed, stop and RAM chunk; then removes the parts.
pub(crate) fn join_segments(path: &Path, parts: &[PathBuf]) -> Result<(), RecordingError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".joining");
    let tmp = path.with_file_name(tmp_name);
    let mut sink = FileSink::create(&tmp)?;
    for (i, part) in parts.iter().enumerate() {
        let rec = super::Recording::open_v2(part)?;
        let file = File::open(part).map_err(io_err(part))?;
        for c in rec.chunks() {
            let first_only = matches!(
                c.header.kind,
                ChunkKind::Header | ChunkKind::Kernel | ChunkKind::Carry
            );
            if c.header.kind == ChunkKind::Index || (first_only && i > 0) {
                continue;
            }
            let mut stored = vec![0u8; c.header.stored_len as usize];
            file.read_exact_at(&mut stored, c.offset + HEADER_LEN as u64)
                .map_err(io_err(part))?;
            if crc32c::crc32c(&stored) != c.header.payload_crc {
                // Damaged since it was written: leave it out rather than bless it.
                continue;
            }
            let h: ChunkHeader = c.header;
            sink.chunk(h, &stored)?;
        }
    }
    sink.finish(3)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    for p in parts {
        std::fs::remove_file(p).map_err(io_err(p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_parses_durations_and_sizes() {
        assert_eq!("2m".parse::<Keep>(), Ok(Keep::Duration(120_000_000_000)));
        assert_eq!("30s".parse::<Keep>(), Ok(Keep::Duration(30_000_000_000)));
        assert_eq!("500MB".parse::<Keep>(), Ok(Keep::Bytes(500 << 20)));
        assert_eq!("1.5GB".parse::<Keep>(), Ok(Keep::Bytes(3 << 29)));
        for bad in ["", "2", "2x", "-1s", "0s", "s"] {
            assert!(bad.parse::<Keep>().is_err(), "{bad}");
        }
    }
}
