//! Draining the per-hart event rings, seqlock style, without ever stopping the writer.

use std::mem::size_of;

use lockscope_abi as abi;

use super::error::AbiError;
use super::layout::Layout;
use super::pod::{read_pod, read_pods};
use crate::memory::GuestMemory;
use crate::model::{EventKind, LockEvent};

/// What one drain did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// Events delivered.
    pub events: u64,
    /// Events that were overwritten before they could be read.
    pub lost: u64,
    /// Slots inside the intact range that failed validation (wrong `seq`, kind, hart or lock).
    pub bad: u64,
    /// Event bytes copied from the guest.
    pub bytes: u64,
    /// Events still waiting in the rings because the budget ran out.
    pub pending: u64,
    /// Per hart: (delivered, lost).
    pub per_hart: Vec<(u64, u64)>,
}

/// Read cursors of every ring, and running totals.
pub struct RingDrain {
    next: Vec<u64>,
    lost: Vec<u64>,
    scratch: Vec<abi::Event>,
}

const EVENT: usize = size_of::<abi::Event>();

impl RingDrain {
    pub fn new(layout: &Layout) -> Self {
        let n = layout.nharts as usize;
        Self {
            next: vec![0; n],
            lost: vec![0; n],
            scratch: Vec::new(),
        }
    }

    pub fn total_lost(&self) -> u64 {
        self.lost.iter().sum()
    }

    fn headers<M: GuestMemory + ?Sized>(
        &self,
        layout: &Layout,
        mem: &mut M,
    ) -> Result<Vec<abi::RingHeader>, AbiError> {
        let headers: Vec<abi::RingHeader> = read_pods(mem, layout.rings, layout.nharts as usize)?;
        for (h, hdr) in headers.iter().enumerate() {
            if hdr.entries != layout.ring_entries {
                return Err(AbiError::corrupt(
                    format!("RingHeader[{h}].entries"),
                    hdr.entries as u64,
                    format!("Root.ring_entries says {}", layout.ring_entries),
                ));
            }
            if hdr.hart as usize != h {
                return Err(AbiError::corrupt(
                    format!("RingHeader[{h}].hart"),
                    hdr.hart as u64,
                    "does not match its slot in the ring table",
                ));
            }
            let len = hdr.entries as u64 * EVENT as u64;
            let end = hdr.events.checked_add(len);
            if hdr.events < layout.ram.start
                || end.is_none_or(|e| e > layout.ram.end)
                || hdr.events % 8 != 0
            {
                return Err(AbiError::corrupt(
                    format!("RingHeader[{h}].events"),
                    hdr.events,
                    format!("{len} bytes there are not inside guest RAM"),
                ));
            }
            if hdr.write < self.next[h] {
                return Err(AbiError::corrupt(
                    format!("RingHeader[{h}].write"),
                    hdr.write,
                    format!(
                        "went backwards from {}: the kernel rebooted or the ring is corrupt; reattach",
                        self.next[h]
                    ),
                ));
            }
        }
        Ok(headers)
    }

    /// Starts every cursor at the oldest event still in its ring.
    pub fn skip_to_history<M: GuestMemory + ?Sized>(
        &mut self,
        layout: &Layout,
        mem: &mut M,
    ) -> Result<(), AbiError> {
        let headers = self.headers(layout, mem)?;
        for (h, hdr) in headers.iter().enumerate() {
            self.next[h] = hdr.write.saturating_sub(hdr.entries as u64);
        }
        Ok(())
    }

    /// Copies new events of every ring into `out`, at most `budget_bytes` of them, shared fairly
    /// between harts. Events that do not fit stay in the ring for the next drain.
    pub fn drain<M: GuestMemory + ?Sized>(
        &mut self,
        layout: &Layout,
        mem: &mut M,
        budget_bytes: usize,
        out: &mut Vec<LockEvent>,
    ) -> Result<DrainStats, AbiError> {
        let headers = self.headers(layout, mem)?;
        let entries = layout.ring_entries as u64;
        let n = headers.len();
        let mut stats = DrainStats {
            per_hart: vec![(0, 0); n],
            ..Default::default()
        };

        // Oldest index worth copying per ring; anything older is already overwritten.
        let mut lo = vec![0u64; n];
        let mut need = vec![0u64; n];
        for (h, hdr) in headers.iter().enumerate() {
            lo[h] = self.next[h].max(hdr.write.saturating_sub(entries));
            need[h] = hdr.write - lo[h];
            let skipped = lo[h] - self.next[h];
            self.lost[h] += skipped;
            stats.lost += skipped;
            stats.per_hart[h].1 += skipped;
            self.next[h] = lo[h];
        }
        let grant = share_budget(&need, (budget_bytes / EVENT) as u64);

        let concurrent = mem.concurrent();
        for (h, hdr) in headers.iter().enumerate() {
            let take = grant[h];
            stats.pending += need[h] - take;
            if take == 0 {
                continue;
            }
            let (from, to) = (lo[h], lo[h] + take);
            self.copy(hdr, from, to, mem)?;
            stats.bytes += take * EVENT as u64;

            // A stopped guest cannot have touched the ring during the copy.
            let (first, end) = if concurrent {
                let at = layout.rings + (h * size_of::<abi::RingHeader>()) as u64;
                let after: u64 = read_pod(mem, at)?;
                abi::ring_intact_range(from, to, after, entries)
            } else {
                (from, to)
            };
            let torn = first - from;
            self.lost[h] += torn;
            stats.lost += torn;
            stats.per_hart[h].1 += torn;
            for i in first..end {
                let e = self.scratch[(i - from) as usize];
                match decode(&e, i, h, layout) {
                    Some(ev) => {
                        out.push(ev);
                        stats.events += 1;
                        stats.per_hart[h].0 += 1;
                    }
                    None => {
                        stats.bad += 1;
                    }
                }
            }
            self.next[h] = end;
        }
        Ok(stats)
    }

    /// Copies events `from..to` of one ring into `scratch`, in two chunks when they wrap.
    fn copy<M: GuestMemory + ?Sized>(
        &mut self,
        hdr: &abi::RingHeader,
        from: u64,
        to: u64,
        mem: &mut M,
    ) -> Result<(), AbiError> {
        let entries = hdr.entries as u64;
        let count = (to - from) as usize;
        self.scratch.clear();
        self.scratch.resize(count, bytemuck::Zeroable::zeroed());
        let start = abi::ring_slot(from, entries);
        let first_len = ((entries - start) as usize).min(count);
        let (a, b) = self.scratch.split_at_mut(first_len);
        mem.read(
            hdr.events + start * EVENT as u64,
            bytemuck::cast_slice_mut(a),
        )?;
        if !b.is_empty() {
            mem.read(hdr.events, bytemuck::cast_slice_mut(b))?;
        }
        Ok(())
    }
}

/// Splits `budget` events between rings that need `need[i]`, so that no ring starves: every ring
/// gets an equal share, and what a ring does not need goes to the others.
fn share_budget(need: &[u64], budget: u64) -> Vec<u64> {
    let mut grant = vec![0u64; need.len()];
    let mut left = budget;
    loop {
        let hungry: Vec<usize> = (0..need.len()).filter(|&i| grant[i] < need[i]).collect();
        if hungry.is_empty() || left == 0 {
            return grant;
        }
        let share = (left / hungry.len() as u64).max(1);
        for i in hungry {
            let give = share.min(need[i] - grant[i]).min(left);
            grant[i] += give;
            left -= give;
        }
    }
}

fn decode(e: &abi::Event, index: u64, hart: usize, layout: &Layout) -> Option<LockEvent> {
    if e.seq != index as u32 || e.hart as usize != hart || e.lock as u32 >= layout.max_locks {
        return None;
    }
    let kind = match abi::EventKind::from_u8(e.kind)? {
        abi::EventKind::Spin => EventKind::Spin,
        abi::EventKind::Acquired => EventKind::Acquired { contended: false },
        abi::EventKind::AcquiredContended => EventKind::Acquired { contended: true },
        abi::EventKind::Released => EventKind::Released,
    };
    Some(LockEvent {
        time_ns: layout.ns(e.ts),
        hart: hart as u32,
        lock: e.lock as u32,
        kind,
        pc: e.pc,
        mode: None,
        trylock: false,
    })
}

#[cfg(test)]
mod tests {
    use super::share_budget;

    #[test]
    fn budget_is_shared_fairly_and_fully() {
        assert_eq!(share_budget(&[100, 100], 50), vec![25, 25]);
        assert_eq!(share_budget(&[5, 100, 100], 65), vec![5, 30, 30]);
        assert_eq!(share_budget(&[5, 7], 1000), vec![5, 7]);
        assert_eq!(share_budget(&[0, 0], 10), vec![0, 0]);
        let g = share_budget(&[3, 3, 3], 2);
        assert_eq!(g.iter().sum::<u64>(), 2);
    }
}
