//! Finding the chunks of a file: from its index when the writer finished, else by walking the
//! chunk headers from the start and resynchronising on the next chunk magic after damage; and
//! what could not be read ([`Problem`]).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::format::{
    decode_trailer, unpack, ChunkHeader, ChunkKind, CHUNK_MAGIC, FILE_MAGIC, HEADER_LEN,
    TRAILER_LEN,
};

/// Something lost from a recording that otherwise opens.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Problem {
    /// The file ends inside a chunk (a killed writer, a full disk).
    Cut {
        file: String,
        chunk: u64,
        offset: u64,
        missing_bytes: u64,
    },
    /// The writer did not finish (no index at the end): chunks were found by scanning.
    Unfinished { file: String },
    /// A chunk failed its checks and was skipped.
    Damaged {
        file: String,
        chunk: u64,
        offset: u64,
        problem: String,
    },
    /// Bytes that held no readable chunk, skipped to the next chunk found.
    Skipped {
        file: String,
        offset: u64,
        bytes: u64,
    },
    /// A version-1 trace ended early or was damaged; what came before it replays.
    V1 { problem: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Cut {
                file,
                chunk,
                offset,
                missing_bytes,
            } => write!(
                f,
                "{file} was cut inside chunk {chunk} (at byte {offset}, {missing_bytes} bytes short): everything before that chunk replays"
            ),
            Problem::Unfinished { file } => write!(
                f,
                "{file} was not finished (no index at its end; the recorder was killed or the disk filled): its chunks were found by scanning"
            ),
            Problem::Damaged {
                file,
                chunk,
                offset,
                problem,
            } => write!(
                f,
                "{file}: chunk {chunk} at byte {offset} is damaged ({problem}): skipped, the rest replays"
            ),
            Problem::Skipped { file, offset, bytes } => write!(
                f,
                "{file}: {bytes} bytes from byte {offset} hold no readable chunk: skipped"
            ),
            Problem::V1 { problem } => write!(f, "{problem}"),
        }
    }
}

/// Where one chunk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// Which file of a segmented recording (0 for a plain one).
    pub file: usize,
    /// The chunk's position in its file, from 0 (the header chunk).
    pub ordinal: u64,
    pub offset: u64,
    pub header: ChunkHeader,
}

pub(crate) struct Storage {
    pub names: Vec<String>,
    pub files: Vec<File>,
}

impl Storage {
    pub fn read_at(&self, file: usize, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.files[file].read_exact_at(buf, offset)
    }
}

/// Reads and checks one chunk's payload: bounded by its header, CRC-checked, decompressed to
/// exactly the size the header says.
pub(crate) fn read_payload(storage: &Storage, c: &ChunkRef) -> Result<Vec<u8>, String> {
    // The header is read again with the payload: with an index, the copy on disk may be the
    // damaged one, and a damaged chunk is reported whichever part of it is hit.
    let mut buf = vec![0u8; HEADER_LEN + c.header.stored_len as usize];
    storage
        .read_at(c.file, c.offset, &mut buf)
        .map_err(|e| format!("reading it failed: {e}"))?;
    let (head, stored) = buf.split_at(HEADER_LEN);
    match ChunkHeader::decode(head.try_into().expect("48 bytes")) {
        Ok(h) if h == c.header => {}
        Ok(_) => return Err("its header differs from the index's copy".into()),
        Err(p) => return Err(p.to_string()),
    }
    if crc32c::crc32c(stored) != c.header.payload_crc {
        return Err("its payload fails its CRC-32C".into());
    }
    unpack(&c.header, stored)
}

/// The chunks listed by the index, when the file ends with a valid trailer and index.
pub(crate) fn read_index(file: &File, len: u64) -> Option<Vec<ChunkRef>> {
    if len < (FILE_MAGIC.len() + HEADER_LEN + TRAILER_LEN) as u64 {
        return None;
    }
    let mut t = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut t, len - TRAILER_LEN as u64).ok()?;
    let at = decode_trailer(&t)?;
    if at < FILE_MAGIC.len() as u64 || at + (HEADER_LEN + TRAILER_LEN) as u64 > len {
        return None;
    }
    let mut hb = [0u8; HEADER_LEN];
    file.read_exact_at(&mut hb, at).ok()?;
    let h = ChunkHeader::decode(&hb).ok()?;
    if h.kind != ChunkKind::Index
        || at + (HEADER_LEN as u64) + h.stored_len as u64 + TRAILER_LEN as u64 != len
    {
        return None;
    }
    let mut stored = vec![0u8; h.stored_len as usize];
    file.read_exact_at(&mut stored, at + HEADER_LEN as u64)
        .ok()?;
    if crc32c::crc32c(&stored) != h.payload_crc {
        return None;
    }
    let raw = unpack(&h, &stored).ok()?;
    let entry = 8 + HEADER_LEN;
    if raw.len() % entry != 0 || raw.len() / entry != h.items as usize {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() / entry);
    let mut next = FILE_MAGIC.len() as u64;
    for (i, e) in raw.chunks_exact(entry).enumerate() {
        let offset = u64::from_le_bytes(e[..8].try_into().expect("8"));
        let header = ChunkHeader::decode(e[8..].try_into().expect("48")).ok()?;
        // Chunks are contiguous and end where the index begins.
        if offset != next {
            return None;
        }
        next = offset + HEADER_LEN as u64 + header.stored_len as u64;
        out.push(ChunkRef {
            file: 0,
            ordinal: i as u64,
            offset,
            header,
        });
    }
    (next == at).then_some(out)
}

/// Finds the chunks by walking their headers from the start, resynchronising on the next chunk
/// magic after a damaged header.
pub(crate) fn scan(
    file: &File,
    len: u64,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Vec<ChunkRef> {
    let mut out = Vec::new();
    let mut at = FILE_MAGIC.len() as u64;
    let mut ordinal = 0u64;
    while at < len {
        if len - at < HEADER_LEN as u64 {
            problems.push(Problem::Cut {
                file: name.to_owned(),
                chunk: ordinal,
                offset: at,
                missing_bytes: HEADER_LEN as u64 - (len - at),
            });
            break;
        }
        let mut hb = [0u8; HEADER_LEN];
        if file.read_exact_at(&mut hb, at).is_err() {
            break;
        }
        match ChunkHeader::decode(&hb) {
            Ok(h) => {
                let end = at + HEADER_LEN as u64 + h.stored_len as u64;
                if end > len {
                    problems.push(Problem::Cut {
                        file: name.to_owned(),
                        chunk: ordinal,
                        offset: at,
                        missing_bytes: end - len,
                    });
                    break;
                }
                if h.kind == ChunkKind::Index {
                    break;
                }
                out.push(ChunkRef {
                    file: 0,
                    ordinal,
                    offset: at,
                    header: h,
                });
                ordinal += 1;
                at = end;
            }
            Err(problem) => {
                problems.push(Problem::Damaged {
                    file: name.to_owned(),
                    chunk: ordinal,
                    offset: at,
                    problem: problem.to_string(),
                });
                ordinal += 1;
                match resync(file, at + 1, len) {
                    Some(next) => {
                        if next > at + 1 {
                            problems.push(Problem::Skipped {
                                file: name.to_owned(),
                                offset: at,
                                bytes: next - at,
                            });
                        }
                        at = next;
                    }
                    None => {
                        problems.push(Problem::Skipped {
                            file: name.to_owned(),
                            offset: at,
                            bytes: len - at,
                        });
                        break;
                    }
                }
            }
        }
    }
    out
}

/// The offset of the next valid chunk header at or after `from`.
fn resync(file: &File, from: u64, len: u64) -> Option<u64> {
    const WINDOW: usize = 1 << 20;
    let mut buf = vec![0u8; WINDOW + HEADER_LEN];
    let mut base = from;
    while base < len {
        let n = ((len - base) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], base).ok()?;
        let mut i = 0;
        while i + 4 <= n {
            if &buf[i..i + 4] == CHUNK_MAGIC {
                let at = base + i as u64;
                let mut hb = [0u8; HEADER_LEN];
                if file.read_exact_at(&mut hb, at).is_ok() && ChunkHeader::decode(&hb).is_ok() {
                    return Some(at);
                }
            }
            i += 1;
        }
        if n < buf.len() {
            return None;
        }
        base += WINDOW as u64;
    }
    None
}
