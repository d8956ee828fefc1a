//! Guest RAM saved at a stop: 1 MiB blocks, all-zero pages left out, zstd on the rest, read back
//! lazily as a [`GuestMemory`].
//!
//! A RAM chunk's header says which stop it belongs to (`items`) and which guest physical range it
//! covers (`t0..t1`); a block that is not in the recording is all zeros.
//!
//! ```text
//! payload = pages:varint bitmap(ceil(pages / 8) bytes, bit i = page i is stored) page*
//! ```

use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::format::{put_varint, Cursor};
use super::scan::{read_payload, ChunkRef, Storage};
use crate::memory::{check_range, GuestMemory, MemoryError};

const PAGE: usize = 4096;
/// Guest RAM is saved in blocks of this size; all-zero blocks are left out.
pub const RAM_BLOCK: u64 = 1 << 20;
/// Decompressed blocks kept in memory per open stop.
const CACHED_BLOCKS: usize = 8;

fn is_zero(page: &[u8]) -> bool {
    // Eight bytes at a time: the compiler vectorizes this; 128 MiB takes a few milliseconds.
    let (words, tail) = page.split_at(page.len() / 8 * 8);
    words
        .chunks_exact(8)
        .all(|w| u64::from_ne_bytes(w.try_into().expect("8")) == 0)
        && tail.iter().all(|&b| b == 0)
}

/// Encodes one block into `out`; `None` when every byte is zero (nothing to store).
pub(crate) fn encode_ram_block<'a>(block: &[u8], out: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    out.clear();
    let pages = block.len().div_ceil(PAGE);
    put_varint(out, pages as u64);
    let bitmap_at = out.len();
    out.resize(bitmap_at + pages.div_ceil(8), 0);
    let mut any = false;
    for (i, page) in block.chunks(PAGE).enumerate() {
        if !is_zero(page) {
            out[bitmap_at + i / 8] |= 1 << (i % 8);
            out.extend_from_slice(page);
            any = true;
        }
    }
    any.then_some(out.as_slice())
}

/// Decodes a block of `len` bytes.
fn decode_ram_block(raw: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut c = Cursor::new(raw);
    let pages = c.count(len.div_ceil(PAGE) as u64, "pages")?;
    if pages != len.div_ceil(PAGE) {
        return Err(format!("{pages} pages for a {len}-byte block"));
    }
    let bitmap = c.bytes(pages.div_ceil(8))?;
    let mut block = vec![0u8; len];
    for (i, page) in block.chunks_mut(PAGE).enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            page.copy_from_slice(c.bytes(page.len())?);
        }
    }
    if c.remaining() != 0 {
        return Err(format!("{} stray bytes after the pages", c.remaining()));
    }
    Ok(block)
}

/// The guest RAM of one recorded stop. Reads decompress the blocks they touch; at most
/// [`CACHED_BLOCKS`] are kept.
pub struct RecordedRam {
    storage: Arc<Storage>,
    range: Range<u64>,
    /// Sorted by address.
    blocks: Vec<ChunkRef>,
    /// Addresses of the blocks the writer stored, sorted: one of these without its chunk was
    /// lost to damage, not zero.
    stored: Vec<u64>,
    cache: Mutex<Vec<(u64, Arc<Vec<u8>>)>>,
}

impl RecordedRam {
    pub(crate) fn new(
        storage: Arc<Storage>,
        range: Range<u64>,
        mut blocks: Vec<ChunkRef>,
        mut stored: Vec<u64>,
    ) -> Self {
        blocks.sort_by_key(|c| c.header.t0);
        blocks.dedup_by_key(|c| c.header.t0);
        stored.sort_unstable();
        Self {
            storage,
            range,
            blocks,
            stored,
            cache: Mutex::new(Vec::new()),
        }
    }

    /// The guest physical range saved.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Blocks actually stored (the rest are zero).
    pub fn stored_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn block(&self, start: u64) -> Result<Option<Arc<Vec<u8>>>, MemoryError> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.iter().position(|(a, _)| *a == start) {
            let hit = cache.remove(p);
            cache.push(hit.clone());
            return Ok(Some(hit.1));
        }
        let Ok(i) = self.blocks.binary_search_by_key(&start, |c| c.header.t0) else {
            if self.stored.binary_search(&start).is_ok() {
                return Err(MemoryError::Failed {
                    addr: start,
                    len: RAM_BLOCK as usize,
                    reason: "the recording lost this RAM block (its chunk is damaged or cut)"
                        .into(),
                });
            }
            return Ok(None);
        };
        let c = &self.blocks[i];
        let fail = |reason: String| MemoryError::Failed {
            addr: start,
            len: RAM_BLOCK as usize,
            reason: format!(
                "the recording's RAM block (chunk {} at byte {}) is damaged: {reason}",
                c.ordinal, c.offset
            ),
        };
        let len = c.header.t1.saturating_sub(c.header.t0);
        if len == 0 || len > RAM_BLOCK {
            return Err(fail(format!("it claims {len} bytes")));
        }
        let raw = read_payload(&self.storage, c).map_err(&fail)?;
        let block = Arc::new(decode_ram_block(&raw, len as usize).map_err(&fail)?);
        if cache.len() == CACHED_BLOCKS {
            cache.remove(0);
        }
        cache.push((start, block.clone()));
        Ok(Some(block))
    }
}

impl GuestMemory for RecordedRam {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        check_range(&self.range, addr, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr + done as u64;
            let start = self.range.start + (a - self.range.start) / RAM_BLOCK * RAM_BLOCK;
            let off = (a - start) as usize;
            let n = (buf.len() - done).min(RAM_BLOCK as usize - off);
            let out = &mut buf[done..done + n];
            match self.block(start)? {
                Some(b) => {
                    let src = b.get(off..off + n).ok_or_else(|| MemoryError::Failed {
                        addr: a,
                        len: n,
                        reason: "the recording's RAM block is shorter than the RAM range".into(),
                    })?;
                    out.copy_from_slice(src);
                }
                None => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_zero_blocks_are_not_stored() {
        let mut out = Vec::new();
        assert!(encode_ram_block(&vec![0u8; 1 << 20], &mut out).is_none());
        let mut b = vec![0u8; 10_000];
        b[5000] = 7;
        b[9999] = 1;
        let raw = encode_ram_block(&b, &mut out).unwrap().to_vec();
        assert!(raw.len() < 2 * PAGE + 16, "two pages stored: {}", raw.len());
        assert_eq!(decode_ram_block(&raw, b.len()).unwrap(), b);
        assert!(decode_ram_block(&raw, 20_000).is_err());
        assert!(decode_ram_block(&raw[..raw.len() - 1], b.len()).is_err());
    }
}
