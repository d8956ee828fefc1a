//! Sv39 address translation over saved guest RAM, so a post-mortem debugger reads kernel
//! virtual addresses (xv6's kernel stacks, its trampoline) as the hart saw them.
//!
//! Hand-written: the walk is a dozen lines of the RISC-V privileged spec (4.4), and no
//! maintained crate walks page tables held in someone else's memory.

use thiserror::Error;

use crate::memory::GuestMemory;

pub const PAGE: u64 = 4096;
const PTE_V: u64 = 1 << 0;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PPN_MASK: u64 = (1 << 44) - 1;

/// Why a virtual address has no physical one.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TranslateError {
    #[error("{va:#x} is not a canonical Sv39 address (bits 63..39 must copy bit 38)")]
    NotCanonical { va: u64 },
    #[error("{va:#x} is not mapped (level-{level} PTE {pte:#x} is invalid)")]
    Unmapped { va: u64, level: u32, pte: u64 },
    #[error("{va:#x}: the page table at {table:#x} is not in the saved RAM")]
    TableOutsideRam { va: u64, table: u64 },
    #[error("satp {satp:#x} uses a paging mode other than Sv39")]
    Mode { satp: u64 },
}

/// How a hart sees memory: its `satp` and privilege level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressSpace {
    pub satp: Option<u64>,
    pub privilege: Option<u8>,
}

impl AddressSpace {
    /// Physical addressing: M-mode, or paging off (`satp` mode 0, or unknown).
    pub fn is_physical(&self) -> bool {
        self.privilege == Some(3) || self.satp.is_none_or(|s| s >> 60 == 0)
    }

    /// The physical address of `va`, with the page it lies in ending at the returned limit.
    pub fn translate(&self, mem: &mut dyn GuestMemory, va: u64) -> Result<u64, TranslateError> {
        match self.satp {
            Some(satp) if !self.is_physical() => translate(mem, satp, va),
            _ => Ok(va),
        }
    }
}

/// Walks the Sv39 page table of `satp` for `va`.
pub fn translate(mem: &mut dyn GuestMemory, satp: u64, va: u64) -> Result<u64, TranslateError> {
    leaf(mem, satp, va).map(|(pa, _)| pa)
}

/// Walks the Sv39 page table of `satp` for `va`: the physical address and the leaf PTE (its
/// permission bits: valid, R, W, X, U, G, A, D from bit 0 up).
pub fn leaf(mem: &mut dyn GuestMemory, satp: u64, va: u64) -> Result<(u64, u64), TranslateError> {
    if satp >> 60 != 8 {
        return Err(TranslateError::Mode { satp });
    }
    let top = (va as i64) >> 38;
    if top != 0 && top != -1 {
        return Err(TranslateError::NotCanonical { va });
    }
    let mut table = (satp & PPN_MASK) * PAGE;
    for level in (0..3u32).rev() {
        let index = (va >> (12 + 9 * level)) & 0x1ff;
        let at = table + index * 8;
        let mut b = [0u8; 8];
        mem.read(at, &mut b)
            .map_err(|_| TranslateError::TableOutsideRam { va, table })?;
        let pte = u64::from_le_bytes(b);
        if pte & PTE_V == 0 || (pte & PTE_R == 0 && pte & PTE_W != 0) {
            return Err(TranslateError::Unmapped { va, level, pte });
        }
        let ppn = (pte >> 10) & PPN_MASK;
        if pte & (PTE_R | PTE_X) != 0 {
            // A leaf; at a higher level it maps a superpage, whose low PPN bits must be 0.
            let span = 12 + 9 * level;
            let low_ppn = (1u64 << (9 * level)) - 1;
            if ppn & low_ppn != 0 {
                return Err(TranslateError::Unmapped { va, level, pte });
            }
            return Ok(((ppn << 12) | (va & ((1 << span) - 1)), pte));
        }
        if level == 0 {
            return Err(TranslateError::Unmapped { va, level, pte });
        }
        table = ppn * PAGE;
    }
    unreachable!("the walk returns at level 0")
}

/// Reads `buf.len()` bytes at virtual `va` page by page. Returns how many bytes were read
/// before the first unmapped or unsaved page (gdb takes a short read as a partial one).
pub fn read_virtual(
    mem: &mut dyn GuestMemory,
    space: AddressSpace,
    va: u64,
    buf: &mut [u8],
) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let a = va.wrapping_add(done as u64);
        let in_page = (PAGE - (a % PAGE)) as usize;
        let n = in_page.min(buf.len() - done);
        let Ok(pa) = space.translate(mem, a) else {
            break;
        };
        if mem.read(pa, &mut buf[done..done + n]).is_err() {
            break;
        }
        done += n;
    }
    done
}

/// Calls `f(va, pa, len)` for each mapped run of the Sv39 table of `satp`, coalescing
/// pages that are contiguous in both spaces. Bounded by the table itself: at most 512^3
/// entries are looked at, each table read once.
pub fn for_each_mapping(
    mem: &mut dyn GuestMemory,
    satp: u64,
    f: &mut dyn FnMut(u64, u64, u64),
) -> Result<(), TranslateError> {
    if satp >> 60 != 8 {
        return Err(TranslateError::Mode { satp });
    }
    let mut run: Option<(u64, u64, u64)> = None;
    let mut emit = |va: u64, pa: u64, len: u64, run: &mut Option<(u64, u64, u64)>| match run {
        Some((rva, rpa, rlen)) if *rva + *rlen == va && *rpa + *rlen == pa => *rlen += len,
        _ => {
            if let Some((a, b, c)) = run.take() {
                f(a, b, c);
            }
            *run = Some((va, pa, len));
        }
    };
    walk(mem, (satp & PPN_MASK) * PAGE, 2, 0, &mut |va, pa, len| {
        emit(va, pa, len, &mut run)
    })?;
    if let Some((a, b, c)) = run {
        f(a, b, c);
    }
    Ok(())
}

fn walk(
    mem: &mut dyn GuestMemory,
    table: u64,
    level: u32,
    base: u64,
    f: &mut dyn FnMut(u64, u64, u64),
) -> Result<(), TranslateError> {
    let mut raw = vec![0u8; PAGE as usize];
    mem.read(table, &mut raw)
        .map_err(|_| TranslateError::TableOutsideRam { va: base, table })?;
    for (i, e) in raw.chunks_exact(8).enumerate() {
        let pte = u64::from_le_bytes(e.try_into().unwrap_or_default());
        if pte & PTE_V == 0 || (pte & PTE_R == 0 && pte & PTE_W != 0) {
            continue;
        }
        let mut va = base | ((i as u64) << (12 + 9 * level));
        if va & (1 << 38) != 0 {
            va |= !((1u64 << 39) - 1); // sign-extend to a canonical address
        }
        let ppn = (pte >> 10) & PPN_MASK;
        if pte & (PTE_R | PTE_X) != 0 {
            f(va, ppn << 12, 1 << (12 + 9 * level));
        } else if level > 0 {
            // An unsaved next-level table only hides what it maps.
            let _ = walk(mem, ppn * PAGE, level - 1, va, f);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::ByteImage;

    const BASE: u64 = 0x8000_0000;

    /// A RAM image with a three-level table: root at +0, level 1 at +0x1000, level 0 at
    /// +0x2000; maps va 0x3f_ffff_e000 (a high, xv6-stack-like page) to pa BASE+0x5000, and a
    /// 1 GiB superpage identity-mapping BASE.
    fn image() -> (ByteImage, u64) {
        let mut bytes = vec![0u8; 0x8000];
        let mut put = |at: u64, v: u64| {
            let o = (at - BASE) as usize;
            bytes[o..o + 8].copy_from_slice(&v.to_le_bytes());
        };
        let pte = |pa: u64, flags: u64| ((pa >> 12) << 10) | flags | PTE_V;
        let va: u64 = 0x3f_ffff_e000;
        put(BASE + ((va >> 30) & 0x1ff) * 8, pte(BASE + 0x1000, 0));
        put(
            BASE + 0x1000 + ((va >> 21) & 0x1ff) * 8,
            pte(BASE + 0x2000, 0),
        );
        put(
            BASE + 0x2000 + ((va >> 12) & 0x1ff) * 8,
            pte(BASE + 0x5000, PTE_R | PTE_W),
        );
        put(
            BASE + ((BASE >> 30) & 0x1ff) * 8,
            pte(BASE, PTE_R | PTE_W | PTE_X),
        );
        put(BASE + 0x5000 + 0x10, 0x1122_3344_5566_7788);
        let satp = (8 << 60) | (BASE >> 12);
        (ByteImage { base: BASE, bytes }, satp)
    }

    #[test]
    fn walks_levels_and_superpages() {
        let (mut img, satp) = image();
        assert_eq!(translate(&mut img, satp, 0x3f_ffff_e010), Ok(BASE + 0x5010));
        assert_eq!(translate(&mut img, satp, BASE + 0x1234), Ok(BASE + 0x1234));
        assert!(matches!(
            translate(&mut img, satp, 0x1000),
            Err(TranslateError::Unmapped { .. })
        ));
        assert!(matches!(
            translate(&mut img, satp, 0x40_0000_0000),
            Err(TranslateError::NotCanonical { .. })
        ));
        assert!(matches!(
            translate(&mut img, 0, 0),
            Err(TranslateError::Mode { .. })
        ));
        let space = AddressSpace {
            satp: Some(satp),
            privilege: Some(1),
        };
        let mut buf = [0u8; 8];
        assert_eq!(read_virtual(&mut img, space, 0x3f_ffff_e010, &mut buf), 8);
        assert_eq!(u64::from_le_bytes(buf), 0x1122_3344_5566_7788);
        // The page after the last mapped one is unmapped: a short read.
        let mut long = vec![0u8; 0x2000];
        assert_eq!(
            read_virtual(&mut img, space, 0x3f_ffff_e000, &mut long),
            0x1000
        );
        // M-mode reads physical addresses.
        let m = AddressSpace {
            satp: Some(satp),
            privilege: Some(3),
        };
        assert_eq!(read_virtual(&mut img, m, BASE + 0x5010, &mut buf), 8);
    }

    #[test]
    fn lists_mappings() {
        let (mut img, satp) = image();
        let mut runs = Vec::new();
        for_each_mapping(&mut img, satp, &mut |va, pa, len| runs.push((va, pa, len))).unwrap();
        assert_eq!(
            runs,
            vec![
                (BASE, BASE, 1 << 30),
                (0x3f_ffff_e000, BASE + 0x5000, 0x1000)
            ]
        );
    }
}
