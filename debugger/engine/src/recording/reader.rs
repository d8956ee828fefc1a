//! Opening a recording: the index when the writer finished, a scan of the chunks when it did
//! not, a resynchronisation on the next chunk magic after damage. What could not be read is
//! listed as [`Problem`]s; everything else replays.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::codec;
use super::format::StopRecord;
use super::format::{ChunkKind, FILE_MAGIC};
use super::ram::RecordedRam;
pub(crate) use super::scan::read_payload;
use super::scan::{read_index, scan, Storage};
pub use super::scan::{ChunkRef, Problem};
use super::{io_err, RecordingError, RecordingHeader};
use crate::feed::{Feed, StopInfo};

/// A feed chunk, as the timeline indexes it.
#[derive(Clone, Copy, Debug)]
pub struct FeedChunk {
    pub chunk: ChunkRef,
    /// Target time range of the chunk's events and snapshots.
    pub t0: u64,
    pub t1: u64,
    pub items: u32,
    /// Chunks are missing just before this one (a damaged header, skipped bytes): events may
    /// have been lost there.
    pub gap_before: bool,
}

/// A stop saved in the recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedStop {
    /// The writer's number for it (stops dropped by `keep` leave gaps).
    pub number: usize,
    pub time_ns: u64,
    /// The `Feed::Stop` item: reason, reporting hart, every hart's registers (`full`: every
    /// general register and the saved CSRs, when the session captured them) and stack.
    pub info: Option<StopInfo>,
    /// The guest RAM range saved with it.
    pub ram: Option<Range<u64>>,
    /// Addresses of the RAM blocks stored (the rest of the range is zero).
    pub ram_blocks: Vec<u64>,
}

/// What a file's first bytes say it is.
pub(crate) enum FileKind {
    /// A version-1 trace (`LSTRACE1`).
    V1,
    /// A version-2 recording.
    V2,
}

/// Reads the magic of `path`: a version-1 trace, a version-2 recording, or the error that says
/// what it is instead.
pub(crate) fn file_kind(path: &Path) -> Result<FileKind, RecordingError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut magic = [0u8; 8];
    let n = file.read_at(&mut magic, 0).map_err(io_err(path))?;
    if n == 8 && &magic == b"LSTRACE1" {
        return Ok(FileKind::V1);
    }
    if n == 8 && magic[..6] == FILE_MAGIC[..6] && magic[6] != FILE_MAGIC[6] {
        return Err(RecordingError::NewerVersion {
            path: path.to_owned(),
            version: magic[6],
        });
    }
    if n < 8 || &magic != FILE_MAGIC {
        return Err(RecordingError::NotARecording {
            path: path.to_owned(),
        });
    }
    Ok(FileKind::V2)
}

/// An open recording.
pub struct Recording {
    pub(super) path: PathBuf,
    storage: Arc<Storage>,
    header: RecordingHeader,
    chunks: Vec<ChunkRef>,
    problems: Mutex<Vec<Problem>>,
    version: u32,
}

impl Recording {
    /// Opens one version-2 file (a `keep` segment): neither the segments of `path` nor a
    /// version-1 trace.
    pub(crate) fn open_v2(path: &Path) -> Result<Self, RecordingError> {
        match file_kind(path)? {
            FileKind::V2 => Self::open_files(path, &[path.to_owned()], 2, Vec::new()),
            FileKind::V1 => Err(RecordingError::NotARecording {
                path: path.to_owned(),
            }),
        }
    }

    pub(super) fn open_files(
        path: &Path,
        files: &[PathBuf],
        version: u32,
        mut problems: Vec<Problem>,
    ) -> Result<Self, RecordingError> {
        let mut handles = Vec::new();
        let mut names = Vec::new();
        let mut chunks = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let file = File::open(f).map_err(io_err(f))?;
            let name = if version == 1 {
                path.display().to_string()
            } else {
                f.display().to_string()
            };
            let len = file.metadata().map_err(io_err(f))?.len();
            let mut found = match read_index(&file, len) {
                Some(c) => c,
                None => {
                    problems.push(Problem::Unfinished { file: name.clone() });
                    scan(&file, len, &name, &mut problems)
                }
            };
            for c in &mut found {
                c.file = i;
            }
            chunks.extend(found);
            handles.push(file);
            names.push(name);
        }
        if files.len() > 1
            && !problems
                .iter()
                .any(|p| matches!(p, Problem::Unfinished { .. }))
        {
            problems.push(Problem::Unfinished {
                file: path.display().to_string(),
            });
        }
        let storage = Arc::new(Storage {
            names,
            files: handles,
        });
        let first = chunks
            .first()
            .filter(|c| c.header.kind == ChunkKind::Header)
            .copied()
            .ok_or_else(|| RecordingError::NoHeader {
                path: path.to_owned(),
                problem: "the first chunk is missing or not a header".into(),
            })?;
        let payload =
            read_payload(&storage, &first).map_err(|problem| RecordingError::NoHeader {
                path: path.to_owned(),
                problem,
            })?;
        let header: RecordingHeader =
            serde_json::from_slice(&payload).map_err(|e| RecordingError::NoHeader {
                path: path.to_owned(),
                problem: e.to_string(),
            })?;
        if header.format != 2 {
            return Err(RecordingError::NewerVersion {
                path: path.to_owned(),
                version: header.format.min(255) as u8,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            storage,
            header,
            chunks,
            problems: Mutex::new(problems),
            version,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// 2, or 1 for a version-1 trace opened through conversion.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Everything that could not be read so far. Opening finds cuts and damaged chunk headers;
    /// a damaged payload is found when its chunk is read.
    pub fn problems(&self) -> Vec<Problem> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note(&self, p: Problem) {
        let mut v = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if !v.contains(&p) {
            v.push(p);
        }
    }

    /// Every chunk found, in order.
    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// The chunks that carry feed items, in replay order: a segment's carried snapshot counts
    /// only when nothing came before it.
    pub fn feed_chunks(&self) -> Vec<FeedChunk> {
        let mut out = Vec::new();
        let mut seen_feeds = false;
        let mut gap = false;
        let mut prev: Option<&ChunkRef> = None;
        for c in &self.chunks {
            // Chunks are numbered from 0 in each file: a jump means some could not be read.
            let expected = match prev {
                Some(p) if p.file == c.file => p.header.seq.wrapping_add(1),
                _ => 0,
            };
            gap |= c.header.seq != expected;
            prev = Some(c);
            let keep = match c.header.kind {
                ChunkKind::Feeds => {
                    seen_feeds = true;
                    true
                }
                ChunkKind::Carry => !seen_feeds,
                _ => false,
            };
            if keep {
                out.push(FeedChunk {
                    chunk: *c,
                    t0: c.header.t0,
                    t1: c.header.t1,
                    items: c.header.items,
                    gap_before: std::mem::take(&mut gap),
                });
            }
        }
        out
    }

    /// The feed items of one chunk; a damaged chunk is noted as a problem and gives `None`.
    pub fn read_feeds(&self, c: &ChunkRef) -> Option<Vec<Feed>> {
        let r = read_payload(&self.storage, c).and_then(|p| codec::decode(&p, c.header.items));
        match r {
            Ok(f) => Some(f),
            Err(problem) => {
                self.note(self.damaged(c, problem));
                None
            }
        }
    }

    /// The feed items of one chunk. Where events may have been lost (the chunk is damaged, or
    /// chunks before it are missing) it adds a report that every hart lost events there (at
    /// least one each: how many is not known), so that the analysis does not trust what it
    /// rebuilt from those harts' events across the gap.
    pub fn feeds_or_gap(&self, c: &FeedChunk) -> Vec<Feed> {
        // Harts are known when the session booted the guest; 64 bounds a bad header.
        let gap = || Feed::Events {
            events: Vec::new(),
            lost: (0..self.header.smp.min(64)).map(|h| (h, 1)).collect(),
        };
        let known = self.header.smp > 0;
        let mut out = Vec::new();
        if c.gap_before && known {
            out.push(gap());
        }
        match self.read_feeds(&c.chunk) {
            Some(f) => out.extend(f),
            None if known && !c.gap_before => out.push(gap()),
            None => {}
        }
        out
    }

    fn damaged(&self, c: &ChunkRef, problem: String) -> Problem {
        Problem::Damaged {
            file: self.storage.names[c.file].clone(),
            chunk: c.ordinal,
            offset: c.offset,
            problem,
        }
    }

    /// Every feed item in order; a damaged chunk is replaced by a loss on every hart (see
    /// [`Recording::feeds_or_gap`] and [`Recording::problems`]).
    pub fn feeds(&self) -> impl Iterator<Item = Feed> + '_ {
        self.feed_chunks()
            .into_iter()
            .flat_map(move |c| self.feeds_or_gap(&c))
    }

    /// The stops saved in the recording, oldest first.
    pub fn stops(&self) -> Vec<RecordedStop> {
        let mut out: Vec<RecordedStop> = Vec::new();
        for c in self
            .chunks
            .iter()
            .filter(|c| c.header.kind == ChunkKind::StopRegs)
        {
            let rec: StopRecord = match read_payload(&self.storage, c)
                .and_then(|p| serde_json::from_slice(&p).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(problem) => {
                    self.note(self.damaged(c, problem));
                    continue;
                }
            };
            let s = match out.iter_mut().find(|s| s.number == rec.stop) {
                Some(s) => s,
                None => {
                    out.push(RecordedStop {
                        number: rec.stop,
                        time_ns: rec.time_ns,
                        info: None,
                        ram: None,
                        ram_blocks: Vec::new(),
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            if rec.info.is_some() {
                s.info = rec.info;
                s.time_ns = rec.time_ns;
            }
            if rec.ram.is_some() {
                s.ram = rec.ram;
                s.ram_blocks = rec.ram_blocks;
            }
        }
        out.sort_by_key(|s| s.number);
        out
    }

    /// The guest RAM of stop `n` (an index into [`Recording::stops`]), read lazily: a block is
    /// decompressed when first read, and only a few are kept.
    pub fn stop_ram(&self, n: usize) -> Result<RecordedRam, RecordingError> {
        let stops = self.stops();
        let stop = stops.get(n).ok_or_else(|| RecordingError::NoSuchStop {
            path: self.path.clone(),
            stop: n,
            count: stops.len(),
        })?;
        let range = stop.ram.clone().ok_or_else(|| RecordingError::NoRam {
            path: self.path.clone(),
            stop: n,
        })?;
        let blocks = self
            .chunks
            .iter()
            .filter(|c| c.header.kind == ChunkKind::Ram && c.header.items as usize == stop.number)
            .copied()
            .collect();
        Ok(RecordedRam::new(
            self.storage.clone(),
            range,
            blocks,
            stop.ram_blocks.clone(),
        ))
    }

    /// The kernel ELF carried by the recording (`with_kernel`).
    pub fn kernel_elf(&self) -> Result<Vec<u8>, RecordingError> {
        let parts: Vec<&ChunkRef> = {
            // Every segment repeats the kernel: take the first file's parts.
            let first_file = self
                .chunks
                .iter()
                .find(|c| c.header.kind == ChunkKind::Kernel)
                .map(|c| c.file);
            self.chunks
                .iter()
                .filter(|c| c.header.kind == ChunkKind::Kernel && Some(c.file) == first_file)
                .collect()
        };
        let Some(first) = parts.first().map(|c| **c) else {
            return Err(RecordingError::NoKernel {
                path: self.path.clone(),
            });
        };
        let total = first.header.t1;
        // Allocate only what the parts' own (bounded) sizes add up to.
        let parts_len: u64 = parts.iter().map(|c| c.header.raw_len as u64).sum();
        if total != parts_len {
            return Err(self.corrupt(
                &first,
                format!("claims a {total}-byte kernel in parts of {parts_len} bytes"),
            ));
        }
        let mut elf = vec![0u8; total as usize];
        let mut filled = 0u64;
        for c in parts {
            let data = read_payload(&self.storage, c).map_err(|p| self.corrupt(c, p))?;
            let start = c.header.t0;
            let end = start
                .checked_add(data.len() as u64)
                .filter(|&e| e <= total && c.header.t1 == total)
                .ok_or_else(|| self.corrupt(c, "a kernel part outside the kernel".into()))?;
            elf[start as usize..end as usize].copy_from_slice(&data);
            filled += data.len() as u64;
        }
        if filled != total {
            return Err(self.corrupt(
                &first,
                format!("kernel parts cover {filled} of {total} bytes"),
            ));
        }
        Ok(elf)
    }

    /// Writes the carried kernel ELF to `to`.
    pub fn extract_kernel(&self, to: &Path) -> Result<(), RecordingError> {
        let elf = self.kernel_elf()?;
        std::fs::write(to, elf).map_err(io_err(to))
    }

    fn corrupt(&self, c: &ChunkRef, problem: String) -> RecordingError {
        RecordingError::Corrupt {
            path: PathBuf::from(&self.storage.names[c.file]),
            chunk: c.ordinal,
            offset: c.offset,
            problem,
        }
    }
}
