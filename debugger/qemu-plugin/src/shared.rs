//! The mapped file: typed atomic access to the header, control block, hart states and rings.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use lockscope_plugin_abi::{self as abi, Event, HartState, HeldEntry, Layout};

/// The file, mapped shared and writable for the life of QEMU.
pub struct Shared {
    base: *mut u8,
    len: usize,
    pub layout: Layout,
    pub nharts: u32,
    pub mask: u64,
    /// Sleeplocks: offsets of the inner spinlock and of `locked` in the sleeplock.
    pub sleep_lk_off: u64,
    pub sleep_locked_off: u64,
}

// SAFETY: the mapping lives until the process exits and is only accessed through atomics.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    /// # Safety
    /// `base..base+len` is a live shared mapping that is never unmapped, and `layout` was
    /// validated against `len`.
    pub unsafe fn new(base: *mut u8, len: usize, layout: Layout, header: &abi::Header) -> Self {
        Self {
            base,
            len,
            layout,
            nharts: header.nharts,
            mask: header.ring_entries as u64 - 1,
            sleep_lk_off: header.sleep_lk_off as u64,
            sleep_locked_off: header.sleep_locked_off as u64,
        }
    }

    fn u64_at(&self, off: u64) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off as usize + 8 <= self.len);
        // SAFETY: in bounds and 8-aligned (every layout offset is; the map is page aligned);
        // the memory is shared with lockscope, so it is only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.base.add(off as usize) as *mut u64) }
    }

    fn u32_at(&self, off: u64) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off as usize + 4 <= self.len);
        // SAFETY: as in `u64_at`, 4-aligned.
        unsafe { AtomicU32::from_ptr(self.base.add(off as usize) as *mut u32) }
    }

    /// Time the VM spent stopped, as lockscope last wrote it.
    pub fn stopped_total(&self) -> u64 {
        self.u64_at(self.layout.control_off).load(Ordering::Acquire)
    }

    pub fn set_state(&self, state: u32) {
        self.u32_at(abi::PLUGIN_STATE_OFFSET as u64)
            .store(state, Ordering::Release);
    }

    pub fn set_header_u32(&self, off: usize, v: u32) {
        self.u32_at(off as u64).store(v, Ordering::Relaxed);
    }

    /// Writes `msg` into the header's message field (NUL padded, cut to fit).
    pub fn set_message(&self, msg: &str) {
        let off = offset_of!(abi::Header, message) as u64;
        let mut field = [0u8; abi::MESSAGE_LEN];
        let n = msg.len().min(abi::MESSAGE_LEN - 1);
        field[..n].copy_from_slice(&msg.as_bytes()[..n]);
        for (i, chunk) in field.chunks(8).enumerate() {
            let v = u64::from_le_bytes(chunk.try_into().expect("8-byte chunks"));
            self.u64_at(off + i as u64 * 8).store(v, Ordering::Relaxed);
        }
    }

    /// Appends one event to hart `hart`'s ring at index `i` and publishes `write = i + 1`.
    pub fn push_event(&self, hart: u32, i: u64, e: &Event) {
        let ring = self.layout.ring(hart);
        let slot = ring + abi::RING_HEADER_AREA + (i & self.mask) * size_of::<Event>() as u64;
        // Keeps the previous `write` store ahead of this slot's stores (the reader's seqlock).
        fence(Ordering::Release);
        let words: [u64; 6] = bytemuck::cast(*e);
        for (k, w) in words.iter().enumerate() {
            self.u64_at(slot + 8 * k as u64)
                .store(*w, Ordering::Relaxed);
        }
        self.u64_at(ring).store(i + 1, Ordering::Release);
    }

    /// Fills the ring headers (hart, entries); the write index starts at 0.
    pub fn init_rings(&self) {
        for h in 0..self.nharts {
            let ring = self.layout.ring(h);
            let entries = self.mask as u32 + 1;
            self.u64_at(ring).store(0, Ordering::Relaxed);
            let v = h as u64 | (entries as u64) << 32;
            self.u64_at(ring + 8).store(v, Ordering::Release);
        }
    }

    fn hart_field(&self, hart: u32, off: usize) -> &AtomicU64 {
        self.u64_at(self.layout.hart(hart) + off as u64)
    }

    /// A published per-hart field (u64 at byte offset `off` of [`HartState`]).
    pub fn hart_u64(&self, hart: u32, off: usize) -> &AtomicU64 {
        self.hart_field(hart, off)
    }

    /// Opens a seqlock write section on hart `hart`'s state.
    pub fn hart_begin(&self, hart: u32) {
        let g = self.hart_field(hart, offset_of!(HartState, gen));
        g.store(g.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// Closes it.
    pub fn hart_end(&self, hart: u32) {
        let g = self.hart_field(hart, offset_of!(HartState, gen));
        g.store(g.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
    }

    /// Stores `depth` and `held_overflow` (one 8-byte word).
    pub fn set_depth(&self, hart: u32, depth: u32, overflow: u32) {
        self.hart_field(hart, offset_of!(HartState, depth))
            .store(depth as u64 | (overflow as u64) << 32, Ordering::Relaxed);
    }

    pub fn set_held(&self, hart: u32, i: usize, e: &HeldEntry) {
        let off = offset_of!(HartState, held) + i * size_of::<HeldEntry>();
        self.hart_field(hart, off).store(e.addr, Ordering::Relaxed);
        self.hart_field(hart, off + 8)
            .store(e.site, Ordering::Relaxed);
        self.hart_field(hart, off + 16)
            .store(e.since_ns, Ordering::Relaxed);
    }

    /// Which hart lists `addr` as held, if any: read from the published states (other harts'
    /// private tables belong to their threads).
    pub fn owner_of(&self, addr: u64) -> Option<u32> {
        for h in 0..self.nharts {
            let depth = self
                .hart_field(h, offset_of!(HartState, depth))
                .load(Ordering::Relaxed) as u32 as usize;
            for i in 0..depth.min(abi::MAX_HELD) {
                let off = offset_of!(HartState, held) + i * size_of::<HeldEntry>();
                if self.hart_field(h, off).load(Ordering::Relaxed) == addr {
                    return Some(h);
                }
            }
        }
        None
    }
}
