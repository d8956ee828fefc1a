//! Reading guest memory, whatever the way in (shared RAM, the gdb stub, the ELF image).

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use thiserror::Error;

/// Why a read of guest memory failed.
#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("address range {addr:#x}..{end:#x} is outside guest RAM {base:#x}..{limit:#x}: the value is corrupt or the kernel does not match the ELF")]
    OutOfRange {
        addr: u64,
        end: u64,
        base: u64,
        limit: u64,
    },
    #[error("reading {len} bytes at {addr:#x} failed: {reason}")]
    Failed {
        addr: u64,
        len: usize,
        reason: String,
    },
    #[error("cannot map guest RAM file {path}: {source}; start QEMU with -object memory-backend-file,...,share=on or use the gdb stub")]
    Map {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A way to read guest physical memory.
pub trait GuestMemory {
    /// Fills `buf` from guest address `addr`, or fails without partial results.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// True when the guest may write this memory while it is being read (shared RAM of a running
    /// guest). Readers then validate what they copied; a stopped target is consistent.
    fn concurrent(&self) -> bool {
        false
    }
}

/// Checks that `addr..addr+len` lies inside `ram`, naming the whole range on failure.
pub fn check_range(ram: &Range<u64>, addr: u64, len: usize) -> Result<(), MemoryError> {
    let end = addr.checked_add(len as u64);
    match end {
        Some(end) if addr >= ram.start && end <= ram.end => Ok(()),
        _ => Err(MemoryError::OutOfRange {
            addr,
            end: end.unwrap_or(u64::MAX),
            base: ram.start,
            limit: ram.end,
        }),
    }
}

/// Guest RAM that QEMU keeps in a file (`-object memory-backend-file,...,share=on`), mapped
/// read-only. Reading it never pauses the guest.
pub struct SharedRam {
    map: memmap2::Mmap,
    base: u64,
}

impl SharedRam {
    /// Maps `path`, whose first byte is guest physical address `base`.
    pub fn open(path: &Path, base: u64) -> Result<Self, MemoryError> {
        let map_err = |source| MemoryError::Map {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(map_err)?;
        // SAFETY: the mapping is read-only and we never form references to its bytes: every access
        // goes through atomic loads, because QEMU writes the file concurrently.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(map_err)?;
        Ok(Self { map, base })
    }

    /// The guest physical range this file covers.
    pub fn range(&self) -> Range<u64> {
        self.base..self.base + self.map.len() as u64
    }

    /// Loads an aligned u64 with acquire ordering: the way to read a ring's write index.
    pub fn load_u64_acquire(&self, addr: u64) -> Result<u64, MemoryError> {
        check_range(&self.range(), addr, 8)?;
        let off = (addr - self.base) as usize;
        if !off.is_multiple_of(8) {
            return Err(MemoryError::Failed {
                addr,
                len: 8,
                reason: "unaligned atomic load".into(),
            });
        }
        // SAFETY: in bounds and 8-aligned (the map is page aligned); the memory is shared with
        // another process, so it is only ever accessed atomically.
        let a = unsafe { AtomicU64::from_ptr(self.map.as_ptr().add(off) as *mut u64) };
        Ok(a.load(Ordering::Acquire))
    }
}

impl GuestMemory for SharedRam {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        check_range(&self.range(), addr, buf.len())?;
        let start = (addr - self.base) as usize;
        let ptr = self.map.as_ptr();
        // Byte loads up to 8-byte alignment, then 8-byte loads, then the tail. Plain memcpy
        // would be a data race with QEMU's vCPU threads.
        let mut i = 0;
        while i < buf.len() && !(start + i).is_multiple_of(8) {
            // SAFETY: start + i is in bounds (checked above); atomic access, see `open`.
            buf[i] = unsafe { AtomicU8::from_ptr(ptr.add(start + i) as *mut u8) }
                .load(Ordering::Relaxed);
            i += 1;
        }
        while i + 8 <= buf.len() {
            // SAFETY: in bounds and 8-aligned; atomic access, see `open`.
            let v = unsafe { AtomicU64::from_ptr(ptr.add(start + i) as *mut u64) }
                .load(Ordering::Relaxed);
            buf[i..i + 8].copy_from_slice(&v.to_le_bytes());
            i += 8;
        }
        while i < buf.len() {
            // SAFETY: in bounds; atomic access, see `open`.
            buf[i] = unsafe { AtomicU8::from_ptr(ptr.add(start + i) as *mut u8) }
                .load(Ordering::Relaxed);
            i += 1;
        }
        std::sync::atomic::fence(Ordering::Acquire);
        Ok(())
    }

    fn concurrent(&self) -> bool {
        true
    }
}

/// A fixed byte image of guest memory: a dump, or a recorded fixture.
pub struct ByteImage {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl GuestMemory for ByteImage {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let range = self.base..self.base + self.bytes.len() as u64;
        check_range(&range, addr, buf.len())?;
        let off = (addr - self.base) as usize;
        buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn range_check_rejects_overflow_and_outside() {
        let ram = 0x8000_0000..0x8800_0000;
        assert!(check_range(&ram, 0x8000_0000, 16).is_ok());
        assert!(check_range(&ram, 0x87ff_fff0, 16).is_ok());
        assert!(check_range(&ram, 0x87ff_fff8, 16).is_err());
        assert!(check_range(&ram, 0x7fff_fff8, 16).is_err());
        assert!(check_range(&ram, u64::MAX - 4, 16).is_err());
    }

    #[test]
    fn shared_ram_reads_unaligned_spans_exactly() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        f.write_all(&data).unwrap();
        f.flush().unwrap();
        let mut ram = SharedRam::open(f.path(), 0x8000_0000).unwrap();
        for (off, len) in [(0usize, 8usize), (3, 29), (4090, 6), (13, 1), (0, 4096)] {
            let mut buf = vec![0; len];
            ram.read(0x8000_0000 + off as u64, &mut buf).unwrap();
            assert_eq!(buf, &data[off..off + len], "off {off} len {len}");
        }
        let mut buf = [0u8; 8];
        assert!(ram.read(0x8000_0000 + 4092, &mut buf).is_err());
        assert_eq!(
            ram.load_u64_acquire(0x8000_0008).unwrap(),
            u64::from_le_bytes(data[8..16].try_into().unwrap())
        );
        assert!(ram.load_u64_acquire(0x8000_0004).is_err());
    }
}
