//! The kernel side of the lockscope ABI: the root descriptor and everything it points to.
//!
//! All of it lives in static memory at fixed addresses. The host may read any of it at any time
//! (through a shared RAM file, without stopping the guest), so every field a reader looks at is
//! written with an atomic store, and `docs/abi.md` says which orderings a reader can rely on.

use crate::bootargs::Config;
use crate::fdt::BootInfo;
use core::cell::UnsafeCell;
use core::mem::size_of;
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use lockscope_abi::*;

/// A static the kernel mutates through raw pointers and atomics.
#[repr(transparent)]
pub struct Shared<T>(UnsafeCell<T>);

// SAFETY: all access goes through atomics on individual fields, or happens on hart 0 before
// other harts are released; see each accessor.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub const fn new(v: T) -> Self {
        Self(UnsafeCell::new(v))
    }

    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// Only used for the ABI's `Pod` structs.
const fn zeroed<T>() -> T {
    // SAFETY: every caller passes an ABI struct, which is `Pod`: all-zero bits are valid.
    unsafe { core::mem::zeroed() }
}

/// The root descriptor at ELF symbol [`ROOT_SYMBOL`]. The identity fields are constants so a
/// reader finds them in the ELF file itself.
#[no_mangle]
#[used]
pub static LOCKSCOPE_ROOT: Shared<Root> = Shared::new(Root {
    magic: ROOT_MAGIC,
    version: ABI_VERSION,
    root_size: size_of::<Root>() as u32,
    max_harts: MAX_HARTS as u32,
    max_locks: MAX_LOCKS as u32,
    max_held: MAX_HELD as u32,
    ring_entries: RING_ENTRIES as u32,
    event_size: size_of::<Event>() as u32,
    lock_info_size: size_of::<LockInfo>() as u32,
    hart_state_size: size_of::<HartState>() as u32,
    ring_header_size: size_of::<RingHeader>() as u32,
    kmem_hart_size: size_of::<KmemHart>() as u32,
    bucket_info_size: size_of::<BucketInfo>() as u32,
    buf_info_size: size_of::<BufInfo>() as u32,
    panic_record_size: size_of::<PanicRecord>() as u32,
    bootargs_len: BOOTARGS_LEN as u32,
    ..zeroed()
});

static LOCKS: Shared<[LockInfo; MAX_LOCKS]> = Shared::new(zeroed());
static HARTS: Shared<[HartState; MAX_HARTS]> = Shared::new(zeroed());
static RINGS: Shared<[RingHeader; MAX_HARTS]> = Shared::new(zeroed());
static EVENTS: Shared<[[Event; RING_ENTRIES]; MAX_HARTS]> = Shared::new(zeroed());
static KMEM: Shared<[KmemHart; MAX_HARTS]> = Shared::new(zeroed());
static PANIC: Shared<PanicRecord> = Shared::new(zeroed());
static BCACHE: Shared<BcacheHeader> = Shared::new(zeroed());
static BUCKETS: Shared<[BucketInfo; crate::bio::NBUCKET]> = Shared::new(zeroed());
static BUFS: Shared<[BufInfo; crate::bio::NBUF]> = Shared::new(zeroed());
static BOOTARGS: Shared<[u8; BOOTARGS_LEN]> = Shared::new(zeroed());

/// `trace=on`: record events. Counters are kept either way.
static TRACE: AtomicBool = AtomicBool::new(false);

/// An atomic view of a `u64` field in ABI memory.
///
/// # Safety
/// `p` must point into one of this module's statics (aligned, valid for the kernel's life).
#[inline(always)]
pub unsafe fn a64(p: *mut u64) -> &'static AtomicU64 {
    // SAFETY: the caller guarantees `p` is an aligned pointer into a static.
    unsafe { AtomicU64::from_ptr(p) }
}

/// An atomic view of a `u32` field in ABI memory.
///
/// # Safety
/// As for [`a64`].
#[inline(always)]
pub unsafe fn a32(p: *mut u32) -> &'static AtomicU32 {
    // SAFETY: the caller guarantees `p` is an aligned pointer into a static.
    unsafe { AtomicU32::from_ptr(p) }
}

pub fn root() -> *mut Root {
    LOCKSCOPE_ROOT.get()
}

/// Lock table entry `id` (`id < MAX_LOCKS`).
#[inline(always)]
pub fn lock_info(id: u32) -> *mut LockInfo {
    assert!((id as usize) < MAX_LOCKS);
    // SAFETY: in bounds (checked above); no reference is formed.
    unsafe { (LOCKS.get() as *mut LockInfo).add(id as usize) }
}

/// The ABI state of hart `id` (`id < MAX_HARTS`).
#[inline(always)]
pub fn hart_state(id: usize) -> *mut HartState {
    assert!(id < MAX_HARTS);
    // SAFETY: in bounds (checked above); no reference is formed.
    unsafe { (HARTS.get() as *mut HartState).add(id) }
}

/// The allocator counters of hart `id`'s list.
#[inline(always)]
pub fn kmem_hart(id: usize) -> *mut KmemHart {
    assert!(id < MAX_HARTS);
    // SAFETY: in bounds (checked above); no reference is formed.
    unsafe { (KMEM.get() as *mut KmemHart).add(id) }
}

/// The buffer cache header (published in the root only when the cache exists).
pub fn bcache_header() -> *mut BcacheHeader {
    BCACHE.get()
}

/// Bucket `i`'s counters (`i < NBUCKET`).
#[inline(always)]
pub fn bucket_info(i: usize) -> *mut BucketInfo {
    assert!(i < crate::bio::NBUCKET);
    // SAFETY: in bounds (checked above); no reference is formed.
    unsafe { (BUCKETS.get() as *mut BucketInfo).add(i) }
}

/// Buffer `i`'s metadata (`i < NBUF`).
#[inline(always)]
pub fn buf_info(i: usize) -> *mut BufInfo {
    assert!(i < crate::bio::NBUF);
    // SAFETY: in bounds (checked above); no reference is formed.
    unsafe { (BUFS.get() as *mut BufInfo).add(i) }
}

/// Addresses of the bucket and buffer tables, for the header.
pub fn bcache_tables() -> (u64, u64) {
    (BUCKETS.get() as u64, BUFS.get() as u64)
}

pub fn panic_record() -> *mut PanicRecord {
    PANIC.get()
}

/// Fills what does not depend on the boot arguments. Hart 0 only, before anything else.
///
/// # Safety
/// No other hart may touch ABI memory yet.
pub unsafe fn init_identity() {
    for h in 0..MAX_HARTS {
        let hs = hart_state(h);
        // SAFETY: hart 0 has exclusive access (caller's contract); pointers are in bounds.
        unsafe {
            (*hs).spin_lock = NONE;
            for e in (*hs).held.iter_mut() {
                e.lock = NONE;
            }
            let r = (RINGS.get() as *mut RingHeader).add(h);
            (*r).write = 0;
            (*r).events = (EVENTS.get() as *mut [Event; RING_ENTRIES]).add(h) as u64;
            (*r).entries = RING_ENTRIES as u32;
            (*r).hart = h as u32;
            (*kmem_hart(h)).lock = NONE;
        }
    }
    // SAFETY: as above.
    unsafe { (*root()).live.phase = Phase::Boot as u32 };
}

/// Fills the root's configuration and pointers, then sets [`FLAG_READY`] with release ordering.
///
/// # Safety
/// Hart 0 only, once, before other harts are released.
pub unsafe fn publish(info: &BootInfo, cfg: &Config) {
    TRACE.store(cfg.trace, Ordering::Relaxed);
    let args = info.bootargs().as_bytes();
    let n = args.len().min(BOOTARGS_LEN - 1);
    let r = root();
    // SAFETY: hart 0 has exclusive access to the root's non-live fields (caller's contract).
    unsafe {
        (&mut *BOOTARGS.get())[..n].copy_from_slice(&args[..n]);
        (*r).nharts = cfg.harts;
        (*r).workload = cfg.workload as u32;
        (*r).kalloc_mode = cfg.kalloc as u32;
        (*r).bcache_mode = cfg.bcache as u32;
        (*r).bug = cfg.bug as u32;
        (*r).timebase_hz = info.timebase_hz;
        (*r).ram_base = info.ram_base as u64;
        (*r).ram_size = info.ram_size as u64;
        (*r).text_start = crate::layout::text_start() as u64;
        (*r).text_end = crate::layout::etext() as u64;
        (*r).locks = LOCKS.get() as u64;
        (*r).harts = HARTS.get() as u64;
        (*r).rings = RINGS.get() as u64;
        (*r).kmem = KMEM.get() as u64;
        (*r).bcache = if crate::bio::ready() {
            BCACHE.get() as u64
        } else {
            0
        };
        (*r).panic = PANIC.get() as u64;
        (*r).bootargs = BOOTARGS.get() as u64;
        let mut flags = FLAG_READY;
        if cfg.trace {
            flags |= FLAG_TRACE;
        }
        if cfg!(feature = "checks") {
            flags |= FLAG_CHECKS;
        }
        a32(&raw mut (*r).flags).store(flags, Ordering::Release);
    }
}

pub fn trace_on() -> bool {
    TRACE.load(Ordering::Relaxed)
}

pub fn set_status(h: usize, s: HartStatus) {
    // SAFETY: field of a static, in bounds.
    unsafe { a32(&raw mut (*hart_state(h)).status).store(s as u32, Ordering::Relaxed) };
}

pub fn status(h: usize) -> u32 {
    // SAFETY: field of a static, in bounds.
    unsafe { a32(&raw mut (*hart_state(h)).status).load(Ordering::Relaxed) }
}

pub fn set_noff(h: usize, noff: u32) {
    // SAFETY: field of a static, in bounds.
    unsafe { a32(&raw mut (*hart_state(h)).noff).store(noff, Ordering::Relaxed) };
}

/// One unit of work done (or one idle tick): a reader uses this to tell a stalled hart.
pub fn heartbeat(h: usize) {
    // SAFETY: field of a static, in bounds; only hart `h` writes it.
    let a = unsafe { a64(&raw mut (*hart_state(h)).heartbeat) };
    a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

pub fn add_ops(h: usize, n: u64) {
    // SAFETY: field of a static, in bounds; only hart `h` writes it.
    let a = unsafe { a64(&raw mut (*hart_state(h)).ops) };
    a.store(a.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

pub fn set_phase(p: Phase) {
    // SAFETY: field of a static.
    unsafe { a32(&raw mut (*root()).live.phase).store(p as u32, Ordering::Release) };
}

pub fn set_outcome(o: Outcome) {
    // SAFETY: field of a static.
    unsafe { a32(&raw mut (*root()).live.outcome).store(o as u32, Ordering::Release) };
}

/// xv6's `ticks`; only the timer interrupt on hart 0 writes it, under `tickslock`.
pub fn ticks() -> &'static AtomicU64 {
    // SAFETY: field of a static.
    unsafe { a64(&raw mut (*root()).live.ticks) }
}

/// Appends one event to hart `h`'s ring. Interrupts must be off (the caller holds a push_off),
/// so this hart is the ring's only writer; it never blocks.
#[inline(always)]
pub fn record(h: usize, kind: EventKind, lock: u32, pc: u64, ts: u64) {
    if !trace_on() {
        return;
    }
    // SAFETY: `h < MAX_HARTS` (the caller's hart id); only hart `h` writes ring `h`, with
    // interrupts off, so there is no concurrent writer. Slot fields are written with atomic
    // stores so a concurrent host reader sees whole fields.
    unsafe {
        let hdr = (RINGS.get() as *mut RingHeader).add(h);
        let w = a64(&raw mut (*hdr).write);
        let index = w.load(Ordering::Relaxed);
        let slot = (EVENTS.get() as *mut Event)
            .add(h * RING_ENTRIES + ring_slot(index, RING_ENTRIES as u64) as usize);
        // Keep the previous write-index store ahead of this slot's stores: a reader that saw
        // the older index must not see this slot half-rewritten.
        fence(Ordering::Release);
        a64(&raw mut (*slot).ts).store(ts, Ordering::Relaxed);
        a64(&raw mut (*slot).pc).store(pc, Ordering::Relaxed);
        // seq, lock, kind and hart share one aligned word: one store.
        let tail = (index as u32 as u64)
            | (u64::from(lock as u16) << 32)
            | ((kind as u64) << 48)
            | ((h as u64) << 56);
        a64(&raw mut (*slot).seq as *mut u64).store(tail, Ordering::Relaxed);
        w.store(index + 1, Ordering::Release);
    }
}
