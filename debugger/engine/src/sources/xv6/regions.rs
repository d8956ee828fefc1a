//! The guest memory one snapshot reads in bulk: every global that holds something the snapshot
//! needs, one read each, merged when close. Only the locks known solely through the registry
//! (in kalloc'd memory) and the free-list nodes are read one by one.

use crate::memory::{GuestMemory, MemoryError};

/// Globals larger than this are not bulk-read; what is needed in them is read piecewise.
const MAX_REGION: u64 = 1 << 20;
/// Ranges closer than this are read as one.
const MERGE_GAP: u64 = 1024;
/// The guest memory one snapshot reads in bulk.
pub(super) struct Regions {
    spans: Vec<(u64, Vec<u8>)>,
}

impl Regions {
    pub(super) fn new(mut ranges: Vec<(u64, u64)>) -> Regions {
        ranges.retain(|&(_, len)| len > 0 && len <= MAX_REGION);
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, len) in ranges {
            let end = a.saturating_add(len);
            match merged.last_mut() {
                Some((ma, mend))
                    if a <= mend.saturating_add(MERGE_GAP) && end - *ma <= MAX_REGION =>
                {
                    *mend = (*mend).max(end);
                }
                _ => merged.push((a, end)),
            }
        }
        Regions {
            spans: merged
                .into_iter()
                .map(|(a, end)| (a, vec![0; (end - a) as usize]))
                .collect(),
        }
    }

    pub(super) fn read(&mut self, mem: &mut dyn GuestMemory) -> Result<(), MemoryError> {
        for (a, buf) in &mut self.spans {
            mem.read(*a, buf)?;
        }
        Ok(())
    }

    /// The bytes at `addr..addr+len`, if one span holds them.
    pub(super) fn get(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let i = self.spans.partition_point(|(a, _)| *a <= addr);
        let (a, buf) = self.spans.get(i.checked_sub(1)?)?;
        let start = usize::try_from(addr - a).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        buf.get(start..end)
    }

    pub(super) fn bytes(&self) -> usize {
        self.spans.iter().map(|(_, b)| b.len()).sum()
    }
}

/// Reads `len` bytes at `addr`, from the regions when they hold them.
pub(super) fn fetch(
    regions: &Regions,
    mem: &mut dyn GuestMemory,
    addr: u64,
    len: u64,
) -> Option<Vec<u8>> {
    if let Some(b) = regions.get(addr, len) {
        return Some(b.to_vec());
    }
    let mut v = vec![0; usize::try_from(len).ok()?];
    mem.read(addr, &mut v).ok()?;
    Some(v)
}

pub(super) fn word(regions: &Regions, mem: &mut dyn GuestMemory, addr: u64) -> Option<u64> {
    if let Some(b) = regions.get(addr, 8) {
        return Some(u64::from_le_bytes(b.try_into().ok()?));
    }
    let mut b = [0u8; 8];
    mem.read(addr, &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}
