//! Writing a recording: feeds go into a chunk encoder; a chunk is compressed, checksummed and
//! written when it is full, a second old, or at a stop, so a killed writer loses at most the
//! chunk it had open.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::codec::ChunkEncoder;
use super::format::{ChunkHeader, ChunkKind, StopRecord, FLAG_ZSTD};
use super::keep::{Keep, Segments};
use super::ram::{encode_ram_block, RAM_BLOCK};
use super::sink::FileSink;
use super::{io_err, RecordingError, RecordingHeader};
use crate::feed::Feed;
use crate::memory::GuestMemory;

/// Parts of the kernel ELF are at most this large.
const KERNEL_PART: usize = 8 << 20;
/// A stop's RAM is at most this large (QEMU `virt` boots with a few GiB at most).
const MAX_STOP_RAM: u64 = 64 << 30;

/// What [`RecordingWriter::stop_ram`] saved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamSaved {
    /// The stop it belongs to.
    pub stop: usize,
    /// Guest RAM read.
    pub bytes_in: u64,
    /// Bytes written to the recording for it (zero pages cost nothing).
    pub bytes_out: u64,
}

/// How a recording is written.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// zstd level of feed chunks (3 is zstd's default: fast, and most of the ratio).
    pub level: i32,
    /// A feed chunk is closed at this many bytes before compression...
    pub chunk_bytes: usize,
    /// ...or this many events...
    pub chunk_events: u64,
    /// ...or when it has been open this long (what a killed writer can lose).
    pub chunk_interval: Duration,
    /// Keep only the last part of the session.
    pub keep: Option<Keep>,
    /// Put the kernel ELF in the recording.
    pub kernel_elf: Option<Vec<u8>>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            level: 3,
            chunk_bytes: 1 << 20,
            chunk_events: 256 << 10,
            chunk_interval: Duration::from_secs(1),
            keep: None,
            kernel_elf: None,
        }
    }
}

/// What the writer has done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    pub feeds: u64,
    pub events: u64,
    pub chunks: u64,
    /// Bytes written to the file(s), all segments together (dropped ones included).
    pub bytes: u64,
    pub stops: u64,
    pub ram_bytes_in: u64,
    pub ram_bytes_out: u64,
}

/// Writes a version-2 recording. Same shape as [`crate::trace::TraceWriter`]: `write` every feed
/// item, then `finish` (or drop, which finishes as well as it can).
///
/// After a write error (a full disk) every later call returns [`RecordingError::Stopped`]: what
/// was written before stays readable up to its last whole chunk.
pub struct RecordingWriter {
    path: PathBuf,
    header: RecordingHeader,
    options: WriterOptions,
    sink: Option<FileSink>,
    segments: Option<Segments>,
    enc: ChunkEncoder,
    raw: Vec<u8>,
    stored: Vec<u8>,
    compressor: zstd::bulk::Compressor<'static>,
    opened: Instant,
    /// Target time of the newest item, for stops and `keep`.
    now_ns: u64,
    stops: usize,
    /// The newest snapshot, encoded, to start a `keep` segment with.
    last_snapshot: Option<Feed>,
    failed: Option<String>,
    stats: WriterStats,
}

impl RecordingWriter {
    pub fn create(
        path: &Path,
        header: &RecordingHeader,
        options: WriterOptions,
    ) -> Result<Self, RecordingError> {
        let mut header = header.clone();
        header.format = 2;
        header.with_kernel = options.kernel_elf.is_some();
        header.keep = options.keep.map(|k| k.to_string());
        let compressor = zstd::bulk::Compressor::new(options.level).map_err(io_err(path))?;
        let mut w = Self {
            path: path.to_owned(),
            header,
            segments: options.keep.map(|k| Segments::new(path, k)),
            options,
            sink: None,
            enc: ChunkEncoder::default(),
            raw: Vec::new(),
            stored: Vec::new(),
            compressor,
            opened: Instant::now(),
            now_ns: 0,
            stops: 0,
            last_snapshot: None,
            failed: None,
            stats: WriterStats::default(),
        };
        let first = match &mut w.segments {
            Some(s) => s.next_path()?,
            None => path.to_owned(),
        };
        w.start_file(&first)?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Opens a file (the recording or a new segment) and writes its leading chunks.
    fn start_file(&mut self, path: &Path) -> Result<(), RecordingError> {
        let mut sink = FileSink::create(path)?;
        let json = serde_json::to_vec(&self.header).expect("a header always serializes");
        let h = plain(ChunkKind::Header, json.len(), 1);
        self.stats.bytes += sink.chunk(h, &json)?;
        if let Some(elf) = &self.options.kernel_elf {
            let total = elf.len() as u64;
            for (i, part) in elf.chunks(KERNEL_PART).enumerate() {
                let stored = zstd::bulk::compress(part, 9).map_err(io_err(path))?;
                let start = (i * KERNEL_PART) as u64;
                let h = ChunkHeader {
                    t0: start,
                    t1: total,
                    ..packed(ChunkKind::Kernel, part.len(), i as u32)
                };
                self.stats.bytes += sink.chunk(h, &stored)?;
            }
        }
        if let Some(snap) = &self.last_snapshot {
            let mut enc = ChunkEncoder::default();
            enc.push(snap);
            let (t0, t1) = (enc.t0, enc.t1);
            enc.finish(&mut self.raw);
            let stored =
                zstd::bulk::compress(&self.raw, self.options.level).map_err(io_err(path))?;
            let h = ChunkHeader {
                t0,
                t1,
                ..packed(ChunkKind::Carry, self.raw.len(), 1)
            };
            self.stats.bytes += sink.chunk(h, &stored)?;
        }
        self.sink = Some(sink);
        Ok(())
    }

    fn check(&self) -> Result<(), RecordingError> {
        match &self.failed {
            Some(first) => Err(RecordingError::Stopped {
                path: self.path.clone(),
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Remembers the first I/O error; every later call fails fast (a half-written chunk must
    /// stay the last thing in the file).
    fn guard<T>(&mut self, r: Result<T, RecordingError>) -> Result<T, RecordingError> {
        if let Err(e @ RecordingError::Io { .. }) = &r {
            if self.failed.is_none() {
                self.failed = Some(e.to_string());
            }
        }
        r
    }

    /// Records one feed item. Cheap: events are appended to column buffers; a chunk is
    /// compressed and written only when it is full or old.
    pub fn write(&mut self, feed: &Feed) -> Result<(), RecordingError> {
        self.check()?;
        if self.enc.is_empty() {
            self.opened = Instant::now();
        }
        self.enc.push(feed);
        self.stats.feeds += 1;
        match feed {
            Feed::Events { events, .. } => {
                self.stats.events += events.len() as u64;
                if let Some(e) = events.last() {
                    self.now_ns = self.now_ns.max(e.time_ns);
                }
            }
            Feed::Snapshot(s) => {
                self.now_ns = self.now_ns.max(s.time_ns);
                if self.segments.is_some() {
                    match &mut self.last_snapshot {
                        Some(Feed::Snapshot(b)) => b.clone_from(s),
                        _ => self.last_snapshot = Some(feed.clone()),
                    }
                }
            }
            _ => {}
        }
        let r = match feed {
            // A stop is what a post-mortem needs: make it durable now.
            Feed::Stop(info) => self.close_chunk().and_then(|_| {
                self.stops += 1;
                self.stats.stops += 1;
                let rec = StopRecord {
                    stop: self.stops - 1,
                    time_ns: self.now_ns,
                    info: Some(info.clone()),
                    ..StopRecord::default()
                };
                self.stop_record(&rec)
            }),
            Feed::End(_) => self.close_chunk(),
            _ if self.enc.raw_len() >= self.options.chunk_bytes
                || self.enc.n_events >= self.options.chunk_events
                || self.opened.elapsed() >= self.options.chunk_interval =>
            {
                self.close_chunk()
            }
            _ => Ok(()),
        };
        self.guard(r)
    }

    /// Writes the open chunk, if any.
    fn close_chunk(&mut self) -> Result<(), RecordingError> {
        if self.enc.is_empty() {
            return Ok(());
        }
        let (t0, t1, items) = (self.enc.t0, self.enc.t1, self.enc.n_items);
        self.enc.finish(&mut self.raw);
        self.stored.clear();
        self.stored
            .reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
        self.compressor
            .compress_to_buffer(&self.raw, &mut self.stored)
            .map_err(io_err(&self.path))?;
        let h = ChunkHeader {
            t0,
            t1,
            ..packed(ChunkKind::Feeds, self.raw.len(), items)
        };
        let sink = self.sink.as_mut().expect("a file is open");
        self.stats.bytes += sink.chunk(h, &self.stored)?;
        self.stats.chunks += 1;
        self.rotate()
    }

    /// With `keep`: starts a new segment when this one is long enough, and drops old ones.
    fn rotate(&mut self) -> Result<(), RecordingError> {
        let Some(seg) = &mut self.segments else {
            return Ok(());
        };
        let sink = self.sink.as_ref().expect("a file is open");
        if !seg.full(sink) {
            return Ok(());
        }
        let done = self.sink.take().expect("a file is open");
        let (span, bytes) = (
            done.last_time
                .saturating_sub(done.first_time.unwrap_or(done.last_time)),
            done.offset,
        );
        self.stats.bytes += done.finish(3)?;
        seg.closed(span, bytes)?;
        let next = seg.next_path()?;
        self.start_file(&next)
    }

    /// Saves guest RAM `ram` for the latest stop, read through `mem` in 1 MiB blocks. All-zero
    /// pages cost nothing. Call it while the guest is stopped, after `write(&Feed::Stop(..))`.
    pub fn stop_ram(
        &mut self,
        mem: &mut dyn GuestMemory,
        ram: Range<u64>,
    ) -> Result<RamSaved, RecordingError> {
        self.check()?;
        let r = match self.stops.checked_sub(1) {
            Some(stop) => self.write_ram(stop, mem, ram),
            None => Err(RecordingError::Invalid {
                what: "stop_ram".into(),
                problem: "no stop was recorded yet: write the Feed::Stop first".into(),
            }),
        };
        self.guard(r)
    }

    /// Saves guest RAM for stop number `stop` (the writer numbers the `Feed::Stop`s it is given
    /// from 0), which may not have been written yet: a session's gdb thread saves the RAM while
    /// it holds the guest stopped, and the stop itself reaches the writer through the monitor.
    /// Readers merge the two by number.
    pub fn stop_ram_of(
        &mut self,
        stop: usize,
        mem: &mut dyn GuestMemory,
        ram: Range<u64>,
    ) -> Result<RamSaved, RecordingError> {
        self.check()?;
        let r = self.write_ram(stop, mem, ram);
        self.guard(r)
    }

    fn write_ram(
        &mut self,
        stop: usize,
        mem: &mut dyn GuestMemory,
        ram: Range<u64>,
    ) -> Result<RamSaved, RecordingError> {
        if ram.end <= ram.start || ram.end - ram.start > MAX_STOP_RAM {
            return Err(RecordingError::Invalid {
                what: format!("guest RAM {:#x}..{:#x}", ram.start, ram.end),
                problem: format!(
                    "a stop's RAM must be between 1 byte and {} GiB",
                    MAX_STOP_RAM >> 30
                ),
            });
        }
        let mut block = vec![0u8; RAM_BLOCK as usize];
        let mut addr = ram.start;
        let mut cctx = zstd::bulk::Compressor::new(1).map_err(io_err(&self.path))?;
        let mut stored_blocks = Vec::new();
        let mut saved = RamSaved {
            stop,
            bytes_in: 0,
            bytes_out: 0,
        };
        while addr < ram.end {
            let len = (ram.end - addr).min(RAM_BLOCK) as usize;
            let buf = &mut block[..len];
            mem.read(addr, buf).map_err(|e| RecordingError::Invalid {
                what: format!("guest RAM at {addr:#x}"),
                problem: e.to_string(),
            })?;
            self.stats.ram_bytes_in += len as u64;
            saved.bytes_in += len as u64;
            if let Some(raw) = encode_ram_block(buf, &mut self.raw) {
                let stored = cctx.compress(raw).map_err(io_err(&self.path))?;
                let h = ChunkHeader {
                    t0: addr,
                    t1: addr + len as u64,
                    ..packed(ChunkKind::Ram, raw.len(), stop as u32)
                };
                let sink = self.sink.as_mut().expect("a file is open");
                let n = sink.chunk(h, &stored)?;
                self.stats.bytes += n;
                self.stats.ram_bytes_out += n;
                saved.bytes_out += n;
                stored_blocks.push(addr);
            }
            addr += len as u64;
        }
        self.stop_record(&StopRecord {
            stop,
            time_ns: self.now_ns,
            ram: Some(ram),
            ram_blocks: stored_blocks,
            ..StopRecord::default()
        })?;
        Ok(saved)
    }

    fn stop_record(&mut self, rec: &StopRecord) -> Result<(), RecordingError> {
        let json = serde_json::to_vec(rec).expect("a stop record always serializes");
        let stored = zstd::bulk::compress(&json, 3).map_err(io_err(&self.path))?;
        let h = ChunkHeader {
            t0: rec.time_ns,
            t1: rec.time_ns,
            ..packed(ChunkKind::StopRegs, json.len(), rec.stop as u32)
        };
        let sink = self.sink.as_mut().expect("a file is open");
        self.stats.bytes += sink.chunk(h, &stored)?;
        Ok(())
    }

    /// Writes the open chunk now (the session calls it when it pauses or ends).
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.check()?;
        let r = self.close_chunk();
        self.guard(r)
    }

    /// Writes the open chunk, the index and the trailer. With `keep`, joins the kept segments
    /// into the recording's path and removes them.
    pub fn finish(mut self) -> Result<WriterStats, RecordingError> {
        self.finish_inner()?;
        Ok(self.stats.clone())
    }

    fn finish_inner(&mut self) -> Result<(), RecordingError> {
        self.check()?;
        let r = self.close_chunk();
        self.guard(r)?;
        if let Some(sink) = self.sink.take() {
            let span = sink
                .last_time
                .saturating_sub(sink.first_time.unwrap_or(sink.last_time));
            let bytes = sink.offset;
            let r = sink.finish(3);
            let n = self.guard(r)?;
            self.stats.bytes += n;
            if let Some(seg) = &mut self.segments {
                let r = seg.closed(span, bytes).and_then(|_| seg.join());
                self.guard(r)?;
            }
        }
        self.failed = Some("the recording was finished".into());
        Ok(())
    }
}

impl Drop for RecordingWriter {
    fn drop(&mut self) {
        if self.failed.is_none() {
            let _ = self.finish_inner();
        }
    }
}

fn plain(kind: ChunkKind, len: usize, items: u32) -> ChunkHeader {
    ChunkHeader {
        kind,
        flags: 0,
        seq: 0,
        stored_len: len as u32,
        raw_len: len as u32,
        items,
        t0: 0,
        t1: 0,
        payload_crc: 0,
    }
}

fn packed(kind: ChunkKind, raw_len: usize, items: u32) -> ChunkHeader {
    ChunkHeader {
        flags: FLAG_ZSTD,
        ..plain(kind, raw_len, items)
    }
}
