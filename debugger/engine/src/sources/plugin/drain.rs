//! Draining the plugin's rings and reading its per-hart state, without pausing the guest.

use std::mem::size_of;
use std::sync::atomic::{fence, Ordering};

use lockscope_plugin_abi::{self as abi, Event, EventKind, HartState, RingHeader};

use super::file::PluginFile;
use super::{PluginError, PluginEvent, PluginEventKind};
use crate::model::{HartId, LockMode};

/// What one drain did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainStats {
    pub events: u64,
    /// Events overwritten before they could be read, this drain.
    pub lost: u64,
    /// Slots in the intact range that failed validation.
    pub bad: u64,
    /// Events left in the rings because the budget ran out.
    pub pending: u64,
    /// Per hart: (delivered, lost).
    pub per_hart: Vec<(u64, u64)>,
}

/// A lock a hart holds, as the plugin published it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginHeld {
    /// The lock word (a reader-writer lock's inner spinlock for a read or write hold).
    pub addr: u64,
    /// `None` for a spinlock; a read or write hold of a reader-writer lock.
    pub mode: Option<LockMode>,
    pub site_pc: u64,
    pub since_ns: u64,
}

/// A hart spinning on a lock (or waiting for a read or write hold of a reader-writer lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginSpin {
    pub addr: u64,
    /// `None` for a spinlock; a read or write wait on a reader-writer lock.
    pub mode: Option<LockMode>,
    pub since_ns: u64,
    pub site_pc: u64,
    /// Failed test-and-sets so far (reader-writer: times it went back to waiting).
    pub spins: u64,
}

/// A tagged held-list or spin key: (lock address, mode).
fn untag(key: u64) -> (u64, Option<LockMode>) {
    let mode = match key & abi::HELD_TAG_MASK {
        abi::HELD_TAG_READ => Some(LockMode::Read),
        abi::HELD_TAG_WRITE => Some(LockMode::Write),
        _ => None,
    };
    (key & !abi::HELD_TAG_MASK, mode)
}

/// One hart's published state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginHartState {
    pub hart: HartId,
    pub spinning: Option<PluginSpin>,
    /// Outermost first.
    pub held: Vec<PluginHeld>,
    /// More are held than listed.
    pub held_truncated: bool,
    pub acquires: u64,
    /// Releases of lock words it was not seen taking.
    pub unseen_releases: u64,
    /// Acquisitions without a call site.
    pub no_site: u64,
    /// The thread running on it now (see [`PluginEvent::thread`]), and the context switches
    /// seen on it.
    pub thread: u32,
    pub switches: u32,
}

const EVENT: u64 = size_of::<Event>() as u64;

impl PluginFile {
    /// Events lost so far per hart (overwritten before they were read).
    pub fn lost_per_hart(&self) -> &[u64] {
        &self.cursors.lost
    }

    pub fn total_lost(&self) -> u64 {
        self.cursors.lost.iter().sum()
    }

    /// Slots that failed validation so far.
    pub fn total_bad(&self) -> u64 {
        self.cursors.bad
    }

    /// Starts every cursor at the oldest event still in its ring (attaching late).
    pub fn skip_to_history(&mut self) {
        for h in 0..self.nharts {
            let w = self.u64_at(self.layout.ring(h)).load(Ordering::Acquire);
            self.cursors.next[h as usize] = w.saturating_sub(self.entries - 1);
        }
    }

    /// Moves new events of every ring into `out` (each hart's in order), at most
    /// `budget_bytes` of them shared between harts; the rest stay for the next drain.
    pub fn drain(
        &mut self,
        budget_bytes: usize,
        out: &mut Vec<PluginEvent>,
    ) -> Result<DrainStats, PluginError> {
        let n = self.nharts as usize;
        let mut stats = DrainStats {
            per_hart: vec![(0, 0); n],
            ..Default::default()
        };
        let entries = self.entries;
        let mut lo = vec![0u64; n];
        let mut need = vec![0u64; n];
        for h in 0..n {
            let ring = self.layout.ring(h as u32);
            let mut hdr: RingHeader = bytemuck::Zeroable::zeroed();
            self.copy_out(ring, bytemuck::bytes_of_mut(&mut hdr));
            if hdr.write < self.cursors.next[h] {
                return Err(PluginError::Corrupt {
                    path: self.path.clone(),
                    reason: format!(
                        "ring {h} write index went back from {} to {}: the file was reused by another QEMU; restart the session",
                        self.cursors.next[h], hdr.write
                    ),
                });
            }
            // Before the plugin initialises a ring its header is zero.
            if hdr.write > 0 && (hdr.hart as usize != h || hdr.entries as u64 != entries) {
                return Err(PluginError::Corrupt {
                    path: self.path.clone(),
                    reason: format!(
                        "ring {h} header says hart {} with {} entries, the file header {entries}",
                        hdr.hart, hdr.entries
                    ),
                });
            }
            lo[h] = self.cursors.next[h].max(hdr.write.saturating_sub(entries));
            need[h] = hdr.write - lo[h];
            let skipped = lo[h] - self.cursors.next[h];
            self.cursors.lost[h] += skipped;
            stats.lost += skipped;
            stats.per_hart[h].1 += skipped;
            self.cursors.next[h] = lo[h];
        }
        let grant = share_budget(&need, budget_bytes as u64 / EVENT);
        for h in 0..n {
            let take = grant[h];
            stats.pending += need[h] - take;
            if take == 0 {
                continue;
            }
            let (from, to) = (lo[h], lo[h] + take);
            self.copy_ring(h as u32, from, to);
            fence(Ordering::Acquire);
            let after = self
                .u64_at(self.layout.ring(h as u32))
                .load(Ordering::Acquire);
            let (first, end) = abi::ring_intact_range(from, to, after, entries);
            let torn = first - from;
            self.cursors.lost[h] += torn;
            stats.lost += torn;
            stats.per_hart[h].1 += torn;
            for i in first..end {
                let e = self.cursors.scratch[(i - from) as usize];
                match decode(&e, i, h as u32) {
                    Some(ev) => {
                        out.push(ev);
                        stats.events += 1;
                        stats.per_hart[h].0 += 1;
                    }
                    None => {
                        self.cursors.bad += 1;
                        stats.bad += 1;
                    }
                }
            }
            self.cursors.next[h] = end;
        }
        Ok(stats)
    }

    /// Copies events `from..to` of ring `h` into scratch, in two chunks when they wrap.
    fn copy_ring(&mut self, h: u32, from: u64, to: u64) {
        let base = self.layout.ring(h) + abi::RING_HEADER_AREA;
        let count = (to - from) as usize;
        let mut scratch = std::mem::take(&mut self.cursors.scratch);
        scratch.clear();
        scratch.resize(count, Event::default());
        let start = from & (self.entries - 1);
        let first_len = ((self.entries - start) as usize).min(count);
        let (a, b) = scratch.split_at_mut(first_len);
        self.copy_out(base + start * EVENT, bytemuck::cast_slice_mut(a));
        if !b.is_empty() {
            self.copy_out(base, bytemuck::cast_slice_mut(b));
        }
        self.cursors.scratch = scratch;
    }

    /// Every hart's published state, each read consistently (seqlock). A hart whose state kept
    /// changing during `tries` reads is left out.
    pub fn hart_states(&self) -> Vec<PluginHartState> {
        (0..self.nharts)
            .filter_map(|h| self.hart_state(h))
            .collect()
    }

    /// One hart's published state.
    pub fn hart_state(&self, h: u32) -> Option<PluginHartState> {
        let off = self.layout.hart(h);
        let gen = self.u64_at(off + abi::HART_GEN_OFFSET as u64);
        for _ in 0..64 {
            let g1 = gen.load(Ordering::Acquire);
            if g1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut s: HartState = bytemuck::Zeroable::zeroed();
            self.copy_out(off, bytemuck::bytes_of_mut(&mut s));
            if gen.load(Ordering::Relaxed) != g1 {
                continue;
            }
            let listed = (s.depth as usize).min(abi::MAX_HELD);
            return Some(PluginHartState {
                hart: h,
                spinning: (s.spin_addr != 0).then(|| {
                    let (addr, mode) = untag(s.spin_addr);
                    PluginSpin {
                        addr,
                        mode,
                        since_ns: s.spin_since_ns,
                        site_pc: s.spin_site,
                        spins: s.spin_count,
                    }
                }),
                held: s.held[..listed]
                    .iter()
                    .map(|e| {
                        let (addr, mode) = untag(e.addr);
                        PluginHeld {
                            addr,
                            mode,
                            site_pc: e.site,
                            since_ns: e.since_ns,
                        }
                    })
                    .collect(),
                held_truncated: s.depth as usize > abi::MAX_HELD,
                acquires: s.acquires,
                unseen_releases: s.unseen_releases,
                no_site: s.no_site,
                thread: s.thread,
                switches: s.switches,
            });
        }
        None
    }
}

fn decode(e: &Event, index: u64, hart: u32) -> Option<PluginEvent> {
    if e.seq != index as u32 || e.hart as u32 != hart {
        return None;
    }
    let kind = match EventKind::from_u8(e.kind)? {
        EventKind::Attempt => PluginEventKind::Attempt,
        EventKind::Contended => PluginEventKind::Contended,
        EventKind::Acquired => PluginEventKind::Acquired,
        EventKind::Released => PluginEventKind::Released,
        EventKind::SleepAcquired => PluginEventKind::SleepAcquired,
        EventKind::SleepReleased => PluginEventKind::SleepReleased,
        EventKind::UnseenRelease => PluginEventKind::UnseenRelease,
    };
    Some(PluginEvent {
        time_ns: e.time_ns,
        hart,
        addr: e.addr,
        kind,
        site_pc: e.site,
        flags: e.flags,
        owner: (e.owner != abi::NO_HART).then_some(e.owner as u32),
        owners: if kind == PluginEventKind::Contended {
            e.value
        } else {
            0
        },
        wait_ns: if kind == PluginEventKind::Contended {
            0
        } else {
            e.value
        },
        spins: e.spins,
        thread: e.thread,
    })
}

/// Splits `budget` events between rings needing `need[i]`, equally, the unneeded rest to others.
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
