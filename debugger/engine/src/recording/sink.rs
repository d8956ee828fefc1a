//! One recording file being written chunk by chunk: a whole recording, or one `keep` segment
//! (which `keep` also uses to join segments).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::format::{encode_trailer, ChunkHeader, ChunkKind, FILE_MAGIC, FLAG_ZSTD, HEADER_LEN};
use super::{io_err, RecordingError};

/// One file being written: a whole recording, or a segment of one.
pub(crate) struct FileSink {
    pub path: PathBuf,
    out: BufWriter<File>,
    pub offset: u64,
    pub seq: u32,
    /// Every chunk written: offset and header, for the index.
    pub index: Vec<(u64, ChunkHeader)>,
    pub first_time: Option<u64>,
    pub last_time: u64,
}

impl FileSink {
    pub fn create(path: &Path) -> Result<Self, RecordingError> {
        let file = File::create(path).map_err(io_err(path))?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        out.write_all(FILE_MAGIC).map_err(io_err(path))?;
        Ok(Self {
            path: path.to_owned(),
            out,
            offset: FILE_MAGIC.len() as u64,
            seq: 0,
            index: Vec::new(),
            first_time: None,
            last_time: 0,
        })
    }

    /// Writes one chunk (its header's `seq` is set here) and pushes it to the OS.
    pub fn chunk(&mut self, mut h: ChunkHeader, stored: &[u8]) -> Result<u64, RecordingError> {
        h.seq = self.seq;
        h.stored_len = stored.len() as u32;
        h.payload_crc = crc32c::crc32c(stored);
        let io = io_err(&self.path);
        self.out.write_all(&h.encode()).map_err(&io)?;
        self.out.write_all(stored).map_err(&io)?;
        self.out.flush().map_err(&io)?;
        self.index.push((self.offset, h));
        let n = (HEADER_LEN + stored.len()) as u64;
        self.offset += n;
        self.seq += 1;
        if h.kind == ChunkKind::Feeds && (h.t0, h.t1) != (0, 0) {
            self.first_time.get_or_insert(h.t0);
            self.last_time = self.last_time.max(h.t1);
        }
        Ok(n)
    }

    /// Writes the index chunk and the trailer, and syncs the file.
    pub fn finish(mut self, level: i32) -> Result<u64, RecordingError> {
        let mut raw = Vec::with_capacity(self.index.len() * (8 + HEADER_LEN));
        for (off, h) in &self.index {
            raw.extend_from_slice(&off.to_le_bytes());
            raw.extend_from_slice(&h.encode());
        }
        let stored = zstd::bulk::compress(&raw, level).map_err(io_err(&self.path))?;
        let index_offset = self.offset;
        let h = ChunkHeader {
            kind: ChunkKind::Index,
            flags: FLAG_ZSTD,
            seq: 0,
            stored_len: 0,
            raw_len: raw.len() as u32,
            items: self.index.len() as u32,
            t0: 0,
            t1: 0,
            payload_crc: 0,
        };
        let mut n = self.chunk(h, &stored)?;
        let io = io_err(&self.path);
        self.out
            .write_all(&encode_trailer(index_offset))
            .map_err(&io)?;
        n += 16;
        self.out.flush().map_err(&io)?;
        self.out.get_ref().sync_all().map_err(&io)?;
        Ok(n)
    }
}
