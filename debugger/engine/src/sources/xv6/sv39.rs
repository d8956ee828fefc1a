//! Sv39 address translation through a page table in guest memory.
//!
//! xv6 maps RAM at its physical address, but each process's kernel stack lives at a high
//! virtual address (`KSTACK(p)`, just below the trampoline). With no `satp` in shared RAM, the
//! root comes from the kernel's `kernel_pagetable` variable. [`VirtMemory`] wraps any
//! [`GuestMemory`] so that an unwinder can read a kernel stack by its virtual addresses.

use std::collections::HashMap;

use thiserror::Error;

use crate::memory::{GuestMemory, MemoryError};

pub const PAGE_SIZE: u64 = 4096;
const PTE_V: u64 = 1;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
/// Translations cached before the cache is reset.
const TLB_CAP: usize = 1024;

/// Why a virtual address did not translate.
#[derive(Debug, Error)]
pub enum Sv39Error {
    #[error("{va:#x} is not a valid Sv39 address (bits 63..39 must copy bit 38)")]
    NotCanonical { va: u64 },
    #[error("{va:#x} is not mapped (invalid PTE {pte:#x} at level {level})")]
    NotMapped { va: u64, level: u32, pte: u64 },
    #[error("the page table for {va:#x} is malformed at level {level} (PTE {pte:#x}): the kernel page table is corrupt or not a page table")]
    Malformed { va: u64, level: u32, pte: u64 },
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// An Sv39 page table whose root page is at physical address `root`.
#[derive(Clone, Debug)]
pub struct Sv39 {
    root: u64,
    tlb: HashMap<u64, u64>,
}

impl Sv39 {
    /// A table rooted at a physical page address (xv6's `kernel_pagetable`).
    pub fn new(root: u64) -> Self {
        Sv39 {
            root,
            tlb: HashMap::new(),
        }
    }

    /// From a `satp` value in Sv39 mode (mode 8).
    pub fn from_satp(satp: u64) -> Option<Self> {
        (satp >> 60 == 8).then(|| Sv39::new((satp & ((1 << 44) - 1)) * PAGE_SIZE))
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    /// The physical address of `va`. Superpages (1 GiB and 2 MiB leaves) are handled.
    pub fn translate(&mut self, mem: &mut dyn GuestMemory, va: u64) -> Result<u64, Sv39Error> {
        let page = va & !(PAGE_SIZE - 1);
        if let Some(&pa) = self.tlb.get(&page) {
            return Ok(pa | (va & (PAGE_SIZE - 1)));
        }
        let pa = self.walk(mem, va)?;
        if self.tlb.len() >= TLB_CAP {
            self.tlb.clear();
        }
        self.tlb.insert(page, pa & !(PAGE_SIZE - 1));
        Ok(pa)
    }

    /// Forgets cached translations (after the kernel changed its page table).
    pub fn flush(&mut self) {
        self.tlb.clear();
    }

    fn walk(&self, mem: &mut dyn GuestMemory, va: u64) -> Result<u64, Sv39Error> {
        let high = (va as i64) >> 38;
        if high != 0 && high != -1 {
            return Err(Sv39Error::NotCanonical { va });
        }
        let mut table = self.root;
        for level in (0..3u32).rev() {
            let vpn = (va >> (12 + 9 * level)) & 0x1ff;
            let mut b = [0u8; 8];
            mem.read(table + vpn * 8, &mut b)?;
            let pte = u64::from_le_bytes(b);
            if pte & PTE_V == 0 {
                return Err(Sv39Error::NotMapped { va, level, pte });
            }
            let ppn = (pte >> 10) & ((1 << 44) - 1);
            if pte & (PTE_R | PTE_X) == 0 {
                if pte & PTE_W != 0 || level == 0 {
                    return Err(Sv39Error::Malformed { va, level, pte });
                }
                table = ppn * PAGE_SIZE;
                continue;
            }
            // A leaf; a superpage's low PPN fields must be zero.
            let span_bits = 12 + 9 * level;
            let low_ppn_mask = (1u64 << (9 * level)) - 1;
            if ppn & low_ppn_mask != 0 {
                return Err(Sv39Error::Malformed { va, level, pte });
            }
            return Ok((ppn * PAGE_SIZE) | (va & ((1u64 << span_bits) - 1)));
        }
        unreachable!("the loop returns at level 0")
    }
}

/// Reads guest memory by virtual address, translating each page through an Sv39 table.
pub struct VirtMemory<'a> {
    pub mem: &'a mut dyn GuestMemory,
    pub table: &'a mut Sv39,
}

impl GuestMemory for VirtMemory<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let mut done = 0usize;
        while done < buf.len() {
            let va = addr
                .checked_add(done as u64)
                .ok_or_else(|| MemoryError::Failed {
                    addr,
                    len: buf.len(),
                    reason: "address overflows".into(),
                })?;
            let in_page = (PAGE_SIZE - (va & (PAGE_SIZE - 1))) as usize;
            let n = in_page.min(buf.len() - done);
            let pa = self.table.translate(self.mem, va).map_err(|e| match e {
                Sv39Error::Memory(m) => m,
                other => MemoryError::Failed {
                    addr: va,
                    len: n,
                    reason: other.to_string(),
                },
            })?;
            self.mem.read(pa, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn concurrent(&self) -> bool {
        self.mem.concurrent()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::ByteImage;

    const BASE: u64 = 0x8000_0000;

    /// A small RAM with a three-level table mapping one 4 KiB page at a high address, and a
    /// 2 MiB superpage.
    fn ram() -> (ByteImage, u64) {
        let mut img = ByteImage {
            base: BASE,
            bytes: vec![0; 64 * PAGE_SIZE as usize],
        };
        let page = |i: u64| BASE + i * PAGE_SIZE;
        let mut put = |addr: u64, v: u64| {
            let off = (addr - BASE) as usize;
            img.bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
        };
        let pte = |pa: u64, flags: u64| (pa / PAGE_SIZE) << 10 | flags | PTE_V;
        let (root, mid, leaf, data) = (page(1), page(2), page(3), page(10));
        let va: u64 = 0x3f_ffff_d000; // like xv6's KSTACK(0)
        put(root + ((va >> 30) & 0x1ff) * 8, pte(mid, 0));
        put(mid + ((va >> 21) & 0x1ff) * 8, pte(leaf, 0));
        put(leaf + ((va >> 12) & 0x1ff) * 8, pte(data, PTE_R | PTE_W));
        put(data + 0x18, 0x1234_5678);
        // 2 MiB superpage at va 0x4000_0000 -> BASE (identity-style).
        put(root + 8, pte(mid + PAGE_SIZE, 0));
        let mid2 = mid + PAGE_SIZE;
        put(mid2, pte(BASE, PTE_R | PTE_X));
        (img, root)
    }

    #[test]
    fn translates_pages_and_superpages() {
        let (mut img, root) = ram();
        let mut t = Sv39::new(root);
        assert_eq!(
            t.translate(&mut img, 0x3f_ffff_d018).unwrap(),
            BASE + 10 * PAGE_SIZE + 0x18
        );
        assert_eq!(t.translate(&mut img, 0x4000_1234).unwrap(), BASE + 0x1234);
        let mut v = VirtMemory {
            mem: &mut img,
            table: &mut t,
        };
        let mut b = [0u8; 8];
        v.read(0x3f_ffff_d018, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0x1234_5678);
    }

    #[test]
    fn unmapped_malformed_and_non_canonical_are_errors() {
        let (mut img, root) = ram();
        let mut t = Sv39::new(root);
        assert!(matches!(
            t.translate(&mut img, 0x3f_ffff_e000),
            Err(Sv39Error::NotMapped { .. })
        ));
        assert!(matches!(
            t.translate(&mut img, 0x80_0000_0000),
            Err(Sv39Error::NotCanonical { .. })
        ));
        // A root outside RAM is a memory error, not a panic.
        let mut bad = Sv39::new(0x1000);
        assert!(matches!(
            bad.translate(&mut img, 0x3f_ffff_d000),
            Err(Sv39Error::Memory(_))
        ));
        // A page of garbage as a table.
        let off = (root - BASE) as usize;
        for b in &mut img.bytes[off..off + PAGE_SIZE as usize] {
            *b = 0xff;
        }
        let mut t = Sv39::new(root);
        assert!(t.translate(&mut img, 0x3f_ffff_d000).is_err());
        // A read spanning into an unmapped page fails as a whole.
        let (mut img, root) = ram();
        let mut t = Sv39::new(root);
        let mut v = VirtMemory {
            mem: &mut img,
            table: &mut t,
        };
        let mut b = [0u8; 16];
        assert!(v.read(0x3f_ffff_dff8, &mut b).is_err());
    }
}
