//! The version-2 container: a file magic, then chunks, each a fixed header and a payload.
//!
//! ```text
//! file    = "LSREC\0\x02\n" chunk* [trailer]
//! chunk   = header(48 bytes) payload(stored_len bytes)
//! header  = "LSCK" kind:u8 flags:u8 0:u16 seq:u32 stored_len:u32 raw_len:u32 items:u32
//!           t0:u64 t1:u64 payload_crc:u32 header_crc:u32          (all little endian)
//! trailer = index_offset:u64 "LSRECEND"                            (16 bytes, after the index chunk)
//! ```
//!
//! `header_crc` is the CRC-32C of the 44 bytes before it, so a flipped bit in a length is caught
//! before the length is used; `payload_crc` covers the stored (compressed) payload. The magic
//! `LSCK` lets a reader find the next chunk after a damaged one. Every length is bounded here,
//! before anything is allocated for it.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::RecordingError;
use crate::feed::StopInfo;

pub const FILE_MAGIC: &[u8; 8] = b"LSREC\0\x02\n";
pub const CHUNK_MAGIC: &[u8; 4] = b"LSCK";
pub const TRAILER_MAGIC: &[u8; 8] = b"LSRECEND";
pub const HEADER_LEN: usize = 48;
pub const TRAILER_LEN: usize = 16;

/// No chunk payload, stored or decompressed, may be larger: the writer cuts chunks far below
/// this (about 1 MiB of events, 1 MiB of RAM), so a header claiming more is damage.
pub const MAX_STORED: u32 = 32 << 20;
pub const MAX_RAW: u32 = 32 << 20;

/// Payload is zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;

/// What a chunk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChunkKind {
    /// The JSON [`super::RecordingHeader`]; the first chunk.
    Header,
    /// Feed items in order: event batches (columnar), snapshots, the rest (JSON).
    Feeds,
    /// Registers of every hart at a stop (JSON), beyond the `Feed::Stop` item itself.
    StopRegs,
    /// One block of a stop's guest RAM (zero pages left out).
    Ram,
    /// A part of the kernel ELF (`with_kernel`).
    Kernel,
    /// A snapshot repeated at the start of a `keep` segment, so the kept part starts with state.
    /// Skipped when the segment follows its predecessor.
    Carry,
    /// The index of every chunk; the last chunk, followed by the trailer.
    Index,
}

impl ChunkKind {
    pub fn code(self) -> u8 {
        match self {
            ChunkKind::Header => 1,
            ChunkKind::Feeds => 2,
            ChunkKind::StopRegs => 3,
            ChunkKind::Ram => 4,
            ChunkKind::Kernel => 5,
            ChunkKind::Carry => 6,
            ChunkKind::Index => 7,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => ChunkKind::Header,
            2 => ChunkKind::Feeds,
            3 => ChunkKind::StopRegs,
            4 => ChunkKind::Ram,
            5 => ChunkKind::Kernel,
            6 => ChunkKind::Carry,
            7 => ChunkKind::Index,
            _ => return None,
        })
    }
}

/// A decoded chunk header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    pub kind: ChunkKind,
    pub flags: u8,
    /// The chunk's number in the file, from 0 (the header chunk).
    pub seq: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    /// Feed items (feed chunks), or a kind-specific count.
    pub items: u32,
    /// Target time range covered, in ns (0..0 when the chunk has no time).
    pub t0: u64,
    pub t1: u64,
    pub payload_crc: u32,
}

impl ChunkHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(CHUNK_MAGIC);
        b[4] = self.kind.code();
        b[5] = self.flags;
        b[8..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.items.to_le_bytes());
        b[24..32].copy_from_slice(&self.t0.to_le_bytes());
        b[32..40].copy_from_slice(&self.t1.to_le_bytes());
        b[40..44].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates a header: magic, header CRC, kind, and the length bounds.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, HeaderProblem> {
        if &b[0..4] != CHUNK_MAGIC {
            return Err(HeaderProblem::NoMagic);
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if crc32c::crc32c(&b[..44]) != u32_at(44) {
            return Err(HeaderProblem::BadCrc);
        }
        let kind = ChunkKind::from_code(b[4]).ok_or(HeaderProblem::UnknownKind(b[4]))?;
        let h = ChunkHeader {
            kind,
            flags: b[5],
            seq: u32_at(8),
            stored_len: u32_at(12),
            raw_len: u32_at(16),
            items: u32_at(20),
            t0: u64_at(24),
            t1: u64_at(32),
            payload_crc: u32_at(40),
        };
        if h.stored_len > MAX_STORED {
            return Err(HeaderProblem::TooLong {
                what: "stored",
                len: h.stored_len as u64,
                max: MAX_STORED,
            });
        }
        if h.raw_len > MAX_RAW {
            return Err(HeaderProblem::TooLong {
                what: "decompressed",
                len: h.raw_len as u64,
                max: MAX_RAW,
            });
        }
        if h.flags & FLAG_ZSTD == 0 && h.raw_len != h.stored_len {
            return Err(HeaderProblem::Inconsistent);
        }
        Ok(h)
    }
}

/// Why 48 bytes are not a valid chunk header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    NoMagic,
    BadCrc,
    UnknownKind(u8),
    TooLong {
        what: &'static str,
        len: u64,
        max: u32,
    },
    Inconsistent,
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::NoMagic => write!(f, "no chunk starts here (magic LSCK missing)"),
            HeaderProblem::BadCrc => write!(f, "the chunk header fails its CRC-32C"),
            HeaderProblem::UnknownKind(k) => {
                write!(
                    f,
                    "unknown chunk kind {k} (written by a newer lockscope? update it)"
                )
            }
            HeaderProblem::TooLong { what, len, max } => write!(
                f,
                "the chunk claims {len} {what} bytes, more than the {max}-byte limit of any chunk"
            ),
            HeaderProblem::Inconsistent => {
                write!(f, "an uncompressed chunk with two different lengths")
            }
        }
    }
}

/// Decompresses (or copies) a payload whose CRC has been checked, refusing any output size
/// other than the header's `raw_len`.
pub fn unpack(h: &ChunkHeader, stored: &[u8]) -> Result<Vec<u8>, String> {
    if h.flags & FLAG_ZSTD == 0 {
        return Ok(stored.to_vec());
    }
    let out =
        zstd::bulk::decompress(stored, h.raw_len as usize).map_err(|e| format!("zstd: {e}"))?;
    if out.len() != h.raw_len as usize {
        return Err(format!(
            "decompressed to {} bytes, the header says {}",
            out.len(),
            h.raw_len
        ));
    }
    Ok(out)
}

/// The trailer: where the index chunk starts.
pub fn encode_trailer(index_offset: u64) -> [u8; TRAILER_LEN] {
    let mut b = [0u8; TRAILER_LEN];
    b[..8].copy_from_slice(&index_offset.to_le_bytes());
    b[8..].copy_from_slice(TRAILER_MAGIC);
    b
}

pub fn decode_trailer(b: &[u8; TRAILER_LEN]) -> Option<u64> {
    (&b[8..] == TRAILER_MAGIC).then(|| u64::from_le_bytes(b[..8].try_into().expect("8 bytes")))
}

/// LEB128 varints: the column codec of event chunks.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A bounds-checked reader over a decoded payload.
pub struct Cursor<'a> {
    pub buf: &'a [u8],
    pub at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    pub fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.at)
                .ok_or_else(|| format!("a number runs past the end at byte {}", self.at))?;
            self.at += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("a number longer than 64 bits at byte {}", self.at))
    }

    /// A varint that must not exceed `max` (a count about to be allocated for).
    pub fn count(&mut self, max: u64, what: &str) -> Result<usize, String> {
        let v = self.varint()?;
        if v > max {
            return Err(format!("claims {v} {what}, at most {max} fit here"));
        }
        Ok(v as usize)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .buf
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| format!("{n} bytes run past the end at byte {}", self.at))?;
        self.at += n;
        Ok(s)
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }
}

impl From<HeaderProblem> for String {
    fn from(p: HeaderProblem) -> String {
        p.to_string()
    }
}

/// Shorthand for the corrupt-chunk error.
pub fn corrupt(path: &std::path::Path, chunk: u64, offset: u64, problem: String) -> RecordingError {
    RecordingError::Corrupt {
        path: path.to_owned(),
        chunk,
        offset,
        problem,
    }
}

/// One stop's record in the StopRegs chunks; chunks for the same stop merge. Every hart's
/// registers are in the [`StopInfo`] (`HartStop::full`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StopRecord {
    pub stop: usize,
    pub time_ns: u64,
    pub info: Option<StopInfo>,
    #[serde(default)]
    pub ram: Option<Range<u64>>,
    /// Addresses of the RAM blocks stored (the others are all zero).
    #[serde(default)]
    pub ram_blocks: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_flips_are_caught() {
        let h = ChunkHeader {
            kind: ChunkKind::Feeds,
            flags: FLAG_ZSTD,
            seq: 7,
            stored_len: 1000,
            raw_len: 4000,
            items: 12,
            t0: 5,
            t1: 99,
            payload_crc: 0xdead_beef,
        };
        let b = h.encode();
        assert_eq!(ChunkHeader::decode(&b).unwrap(), h);
        for i in 0..HEADER_LEN * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            assert!(ChunkHeader::decode(&c).is_err(), "bit {i}");
        }
    }

    #[test]
    fn varints_and_zigzag() {
        let mut out = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            put_varint(&mut out, v);
        }
        let mut c = Cursor::new(&out);
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(c.varint().unwrap(), v);
        }
        assert!(c.varint().is_err());
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
