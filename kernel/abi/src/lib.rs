//! The lockscope tracing ABI: every layout the kernel writes and the debugger reads.
//!
//! This crate is compiled into both halves, so a layout exists exactly once. All structs are
//! `#[repr(C)]`, little-endian, with explicit padding, and derive [`bytemuck::Pod`] so the reader
//! can decode them from bytes copied out of guest memory without `unsafe`. Sizes and field
//! offsets are pinned by the tests at the bottom of this file: changing one is an ABI change and
//! must bump [`ABI_VERSION`]. `docs/abi.md` explains every field for a reader with only the ELF.
//!
//! Addresses are guest physical addresses (the kernel direct-maps RAM, so they are also its
//! virtual addresses). Timestamps are ticks of the RISC-V `time` CSR at [`Root::timebase_hz`].
#![no_std]

use bytemuck::{Pod, Zeroable};

pub mod disk;

/// The ELF symbol of the [`Root`] descriptor.
pub const ROOT_SYMBOL: &str = "LOCKSCOPE_ROOT";
/// The ELF symbol of the function a panicking hart ends in; a debugger breaks here.
pub const PANIC_HALT_SYMBOL: &str = "lockscope_panic_halt";
/// `b"LOCKSCOP"` read as a little-endian u64.
pub const ROOT_MAGIC: u64 = u64::from_le_bytes(*b"LOCKSCOP");
/// Bumped on any change of a layout or of a field's meaning.
pub const ABI_VERSION: u32 = 1;

/// Capacity of every per-hart array.
pub const MAX_HARTS: usize = 8;
/// Capacity of the lock table.
pub const MAX_LOCKS: usize = 128;
/// Depth of each hart's held-lock stack.
pub const MAX_HELD: usize = 8;
/// Events per ring. A power of two; see docs/abi.md for the event rate it is sized for.
pub const RING_ENTRIES: usize = 16384;
/// Frames kept in the panic record.
pub const PANIC_FRAMES: usize = 32;
/// Bytes of panic message kept in the panic record.
pub const PANIC_MSG_LEN: usize = 192;
/// Bytes of the boot-argument copy.
pub const BOOTARGS_LEN: usize = 256;
/// Length of a lock name or class field, NUL padded.
pub const NAME_LEN: usize = 32;

/// A lock id or hart id field that names nothing.
pub const NONE: u32 = u32::MAX;

/// [`Root::flags`]: every pointer in the root is filled in and may be followed.
pub const FLAG_READY: u32 = 1 << 0;
/// [`Root::flags`]: the rings are being written (`trace=on`). Counters are kept either way.
pub const FLAG_TRACE: u32 = 1 << 1;
/// [`Root::flags`]: the kernel was built with its invariant checks.
pub const FLAG_CHECKS: u32 = 1 << 2;

/// The root descriptor, exported as [`ROOT_SYMBOL`].
///
/// The identity fields (`magic` through `bootargs_len`) are constant and present in the ELF file
/// itself. The pointer fields are zero in the ELF and filled in by the boot hart, which then sets
/// [`FLAG_READY`] with release ordering. A reader must see `FLAG_READY` before following any
/// pointer. The `live` block changes while the kernel runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Root {
    pub magic: u64,
    pub version: u32,
    /// `size_of::<Root>()`, so a reader can reject a mismatched build.
    pub root_size: u32,
    pub max_harts: u32,
    pub max_locks: u32,
    pub max_held: u32,
    pub ring_entries: u32,
    pub event_size: u32,
    pub lock_info_size: u32,
    pub hart_state_size: u32,
    pub ring_header_size: u32,
    pub kmem_hart_size: u32,
    pub bucket_info_size: u32,
    pub buf_info_size: u32,
    pub panic_record_size: u32,
    pub bootargs_len: u32,
    pub _pad0: u32,

    /// [`FLAG_READY`] | [`FLAG_TRACE`] | [`FLAG_CHECKS`].
    pub flags: u32,
    /// Harts the kernel started (ids `0..nharts`).
    pub nharts: u32,
    /// Valid entries at the start of the lock table. Grows as locks register; published with
    /// release ordering after the entry is filled.
    pub nlocks: u32,
    /// A [`Workload`] value.
    pub workload: u32,
    /// A [`KallocMode`] value.
    pub kalloc_mode: u32,
    /// A [`BcacheMode`] value.
    pub bcache_mode: u32,
    /// A [`Bug`] value.
    pub bug: u32,
    pub _pad1: u32,
    pub timebase_hz: u64,
    pub ram_base: u64,
    pub ram_size: u64,
    pub text_start: u64,
    pub text_end: u64,

    /// `[LockInfo; max_locks]`.
    pub locks: u64,
    /// `[HartState; max_harts]`.
    pub harts: u64,
    /// `[RingHeader; max_harts]`; each header points at its own events.
    pub rings: u64,
    /// `[KmemHart; max_harts]`.
    pub kmem: u64,
    /// A [`BcacheHeader`], or 0 when the kernel has no buffer cache.
    pub bcache: u64,
    /// The [`PanicRecord`].
    pub panic: u64,
    /// `[u8; bootargs_len]`: the boot arguments as received, NUL padded.
    pub bootargs: u64,

    pub live: Live,
}

/// The part of [`Root`] that changes while the kernel runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Live {
    /// xv6's `ticks`, incremented by hart 0's timer interrupt under `tickslock`.
    pub ticks: u64,
    /// A [`Phase`] value.
    pub phase: u32,
    /// A [`Outcome`] value.
    pub outcome: u32,
}

/// One registered lock. Counters are written only by the lock's holder, so they are exact
/// whether or not events are lost.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LockInfo {
    /// The lock's own name, for example `kmem3` or `bcache.bucket7`. NUL padded.
    pub name: [u8; NAME_LEN],
    /// Its class, shared by instances: `kmem`, `bcache.bucket`. NUL padded.
    pub class: [u8; NAME_LEN],
    /// Address of the lock word in kernel memory.
    pub addr: u64,
    /// Id of the hart holding it, or [`NONE`].
    pub holder: u32,
    pub _pad: u32,
    /// Successful acquisitions.
    pub acquires: u64,
    /// Acquisitions whose first test-and-set failed.
    pub contended: u64,
    /// Failed test-and-set attempts (the lab's `#test-and-set`).
    pub spins: u64,
    /// Sum and maximum of time from first failed test-and-set to acquisition, in timebase ticks.
    pub wait_total: u64,
    pub wait_max: u64,
    /// Sum and maximum of time from acquisition to release, in timebase ticks.
    pub hold_total: u64,
    pub hold_max: u64,
    /// Timestamp of the current holder's acquisition (meaningful while `holder != NONE`).
    pub acquired_at: u64,
}

/// A [`HartState::status`] value.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HartStatus {
    Offline = 0,
    Booting = 1,
    Running = 2,
    /// Finished its work; waits for interrupts.
    Idle = 3,
    /// Stopped because another hart panicked.
    Halted = 4,
    /// This hart panicked.
    Panicked = 5,
}

impl HartStatus {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Offline,
            1 => Self::Booting,
            2 => Self::Running,
            3 => Self::Idle,
            4 => Self::Halted,
            5 => Self::Panicked,
            _ => return None,
        })
    }
}

/// One entry of a hart's held-lock stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct HeldLock {
    pub lock: u32,
    pub _pad: u32,
    /// Return address into the code that acquired it.
    pub pc: u64,
    /// When it was acquired.
    pub since: u64,
}

/// What one hart is doing, readable at any stop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct HartState {
    /// Incremented by the hart's main loop for each unit of work done, and once per timer tick
    /// while idle or waiting at a workload barrier; never by a lock's spin loop. A running hart
    /// whose heartbeat stops has stalled.
    pub heartbeat: u64,
    /// A [`HartStatus`] value.
    pub status: u32,
    /// Valid entries in `held`, innermost last. May exceed [`MAX_HELD`]; extra locks are not
    /// listed.
    pub depth: u32,
    /// The lock this hart is spinning on, or [`NONE`].
    pub spin_lock: u32,
    /// push_off nesting depth.
    pub noff: u32,
    /// Return address into the code that is spinning, valid while `spin_lock != NONE`.
    pub spin_pc: u64,
    /// When the spin began.
    pub spin_since: u64,
    /// Workload operations completed (a kalloc/kfree pair, a block read or write).
    pub ops: u64,
    pub held: [HeldLock; MAX_HELD],
}

/// Header of one hart's event ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RingHeader {
    /// Index of the next event to write; never wraps in practice. Event `i` lives in slot
    /// `i % entries`. Stored with release ordering after event `write - 1` is complete.
    pub write: u64,
    /// `[Event; entries]`.
    pub events: u64,
    pub entries: u32,
    pub hart: u32,
}

/// An [`Event::kind`] value.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The first test-and-set failed; the hart starts spinning.
    Spin = 1,
    /// The lock was taken at the first attempt.
    Acquired = 2,
    /// The lock was taken after spinning (follows a `Spin` from the same hart).
    AcquiredContended = 3,
    /// The lock was released.
    Released = 4,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Spin,
            2 => Self::Acquired,
            3 => Self::AcquiredContended,
            4 => Self::Released,
            _ => return None,
        })
    }
}

/// One lock event, 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Event {
    /// Timestamp in timebase ticks.
    pub ts: u64,
    /// Return address into the caller of the lock operation.
    pub pc: u64,
    /// The low 32 bits of this event's ring index: a reader checks it to tell an intact event
    /// from a slot already reused.
    pub seq: u32,
    /// Lock id (index into the lock table).
    pub lock: u16,
    /// An [`EventKind`] value.
    pub kind: u8,
    pub hart: u8,
}

/// Page allocator counters of one hart. In `kalloc=global` mode the single list is entry 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct KmemHart {
    /// Pages on this hart's free list.
    pub free_pages: u64,
    /// Pages handed out and taken back by this hart.
    pub allocs: u64,
    pub frees: u64,
    /// Times this hart's list ran dry and it stole from another, and pages it took.
    pub steals: u64,
    pub pages_stolen: u64,
    /// Id of this list's lock, or [`NONE`] if the list is unused in this mode.
    pub lock: u32,
    pub _pad: u32,
}

/// The buffer cache, when present.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BcacheHeader {
    pub nbuf: u32,
    pub nbucket: u32,
    /// A [`BcacheMode`] value.
    pub mode: u32,
    /// Id of the eviction lock, or [`NONE`].
    pub evict_lock: u32,
    /// `[BucketInfo; nbucket]`.
    pub buckets: u64,
    /// `[BufInfo; nbuf]`.
    pub bufs: u64,
}

/// One hash bucket. In `bcache=global` mode there is one bucket, under the single lock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BucketInfo {
    pub lock: u32,
    /// Buffers currently in this bucket.
    pub nbuf: u32,
    /// Lookups that found their block here.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Buffers this bucket took from another bucket to serve a miss.
    pub steals: u64,
}

/// One buffer's metadata.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BufInfo {
    pub dev: u32,
    pub blockno: u32,
    pub refcnt: u32,
    /// 1 when the data has been read from disk.
    pub valid: u32,
    /// `ticks` at last use.
    pub timestamp: u64,
    /// Bucket it is in, or [`NONE`].
    pub bucket: u32,
    /// Id of the buffer's own lock, or [`NONE`].
    pub lock: u32,
}

/// A [`PanicRecord::state`] value: nothing has panicked.
pub const PANIC_NONE: u32 = 0;
/// A [`PanicRecord::state`] value: a hart is filling the record.
pub const PANIC_WRITING: u32 = 1;
/// A [`PanicRecord::state`] value: the record is complete (stored with release ordering).
pub const PANIC_DONE: u32 = 2;

/// Filled by the first hart to panic, before it stops the others.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PanicRecord {
    pub state: u32,
    pub hart: u32,
    /// 1 when the panic came from a trap and `scause`/`sepc`/`stval` are meaningful.
    pub from_trap: u32,
    pub nframes: u32,
    pub scause: u64,
    pub sepc: u64,
    pub stval: u64,
    /// The panicking code's pc, frame pointer and timestamp.
    pub pc: u64,
    pub fp: u64,
    pub ts: u64,
    /// Return addresses of the frame-pointer backtrace, innermost first.
    pub frames: [u64; PANIC_FRAMES],
    pub msg_len: u32,
    pub _pad: u32,
    /// The message, UTF-8, `msg_len` bytes.
    pub msg: [u8; PANIC_MSG_LEN],
}

macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $value:expr, $text:expr;)* }) => {
        $(#[$m])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $variant = $value,)* }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn from_u32(v: u32) -> Option<Self> {
                match v { $($value => Some(Self::$variant),)* _ => None }
            }

            /// The spelling used in boot arguments.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

code_enum! {
    /// `workload=`.
    Workload {
        Idle = 0, "idle";
        Kalloctest = 1, "kalloctest";
        Bcachetest = 2, "bcachetest";
        Mixed = 3, "mixed";
        /// `cargo xtask demo`'s workload: runs until QEMU stops, in phases (`Phase::Demo*`).
        Demo = 4, "demo";
    }
}

code_enum! {
    /// `kalloc=`.
    KallocMode {
        Percpu = 0, "percpu";
        Global = 1, "global";
    }
}

code_enum! {
    /// `bcache=`.
    BcacheMode {
        Hashed = 0, "hashed";
        Global = 1, "global";
    }
}

code_enum! {
    /// `bug=`: the student-bug scenarios.
    Bug {
        None = 0, "none";
        /// Panic on purpose after boot, to exercise the panic path.
        PanicTest = 1, "panic-test";
        BucketOrder = 2, "bucket-order";
        RefcntLeak = 3, "refcnt-leak";
        DoubleAcquire = 4, "double-acquire";
        NullNext = 5, "null-next";
        StaleTicks = 6, "stale-ticks";
        OrderInversion = 7, "order-inversion";
        KmemStealRace = 8, "kmem-steal-race";
    }
}

code_enum! {
    /// [`Live::phase`]: where the workload is.
    Phase {
        Boot = 0, "boot";
        Kalloctest = 1, "kalloctest";
        Test0 = 2, "bcachetest-test0";
        Test1 = 3, "bcachetest-test1";
        Mixed = 4, "mixed";
        Done = 5, "done";
        /// The demo's phases, in the order they cycle.
        DemoFiles = 6, "demo-files";
        DemoStarter = 7, "demo-starter";
        DemoSteal = 8, "demo-steal";
        DemoCrowd = 9, "demo-crowd";
    }
}

code_enum! {
    /// [`Live::outcome`]: the workload's verdict.
    Outcome {
        Running = 0, "running";
        Pass = 1, "pass";
        Fail = 2, "fail";
        Panic = 3, "panic";
    }
}

/// QEMU exit statuses the kernel ends with through the SiFive test device. Status 1 is QEMU's
/// own error status, so no kernel verdict uses it.
pub mod exit {
    /// The workload ran and passed (the test device's PASS).
    pub const PASS: i32 = 0;
    /// The workload ran and its own check failed (for example kalloctest FAIL).
    pub const FAIL: i32 = 2;
    /// Bad boot arguments, or a workload this kernel does not have.
    pub const BOOTARGS: i32 = 3;
    /// The kernel panicked with `panic=exit`.
    pub const PANIC: i32 = 4;
}

impl Workload {
    /// Whether this workload runs the buffer cache, which needs the disk image.
    pub const fn needs_disk(self) -> bool {
        matches!(
            self,
            Workload::Bcachetest | Workload::Mixed | Workload::Demo
        )
    }
}

impl Bug {
    /// Whether this scenario lives in the buffer cache (and so needs the disk image). Selecting
    /// one without a `workload=` runs bcachetest.
    pub const fn in_bcache(self) -> bool {
        matches!(
            self,
            Bug::BucketOrder
                | Bug::RefcntLeak
                | Bug::DoubleAcquire
                | Bug::NullNext
                | Bug::StaleTicks
                | Bug::OrderInversion
        )
    }
}

/// Whether boot arguments (`workload=... bug=...`) make the kernel use its disk image. Words the
/// kernel would reject are ignored here: the kernel itself says what is wrong with them.
pub fn bootargs_need_disk(bootargs: &str) -> bool {
    bootargs
        .split_whitespace()
        .any(|w| match w.split_once('=') {
            Some(("workload", v)) => Workload::parse(v).is_some_and(Workload::needs_disk),
            Some(("bug", v)) => Bug::parse(v).is_some_and(Bug::in_bcache),
            _ => false,
        })
}

/// The events of a ring that a reader may trust after copying slots without stopping the writer.
///
/// The reader loads `write` (acquire) as `before`, copies the slots it wants, then loads `write`
/// again as `after`. The writer may have been filling slot `after % entries` during the copy,
/// which holds event `after - entries`; every event at or below that index may be torn. So the
/// intact events are those with index in `[max(from, after - entries + 1), before)`, and each must
/// still carry `seq == index as u32`. Events in `[from, first)` were lost.
///
/// Returns `(first, end)`: the half-open range of indices to accept. `first >= from`.
pub fn ring_intact_range(from: u64, before: u64, after: u64, entries: u64) -> (u64, u64) {
    let oldest_safe = (after + 1).saturating_sub(entries);
    let first = from.max(oldest_safe).min(before);
    (first, before)
}

/// The slot of event `index` in a ring of `entries` (a power of two).
pub fn ring_slot(index: u64, entries: u64) -> u64 {
    index & (entries - 1)
}

/// The text of a NUL-padded name field, or `None` if it is not UTF-8.
pub fn name_str(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    core::str::from_utf8(&field[..end]).ok()
}

/// Copies `s` into a NUL-padded name field, cutting it at a character boundary if too long.
pub const fn name_field<const N: usize>(s: &str) -> [u8; N] {
    let bytes = s.as_bytes();
    let mut out = [0u8; N];
    let mut n = if bytes.len() < N { bytes.len() } else { N - 1 };
    // Do not cut a UTF-8 sequence in half.
    while n > 0 && n < bytes.len() && (bytes[n] & 0xC0) == 0x80 {
        n -= 1;
    }
    let mut i = 0;
    while i < n {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn disk_needs_follow_the_workload_and_the_bug() {
        assert!(bootargs_need_disk("workload=bcachetest"));
        assert!(bootargs_need_disk("secs=3 bug=refcnt-leak"));
        assert!(bootargs_need_disk("workload=mixed"));
        assert!(bootargs_need_disk("workload=demo secs=5"));
        assert!(!bootargs_need_disk(
            "workload=kalloctest bug=kmem-steal-race"
        ));
        assert!(!bootargs_need_disk("bug=panic-test"));
        assert!(!bootargs_need_disk("workload=bogus bug=bogus"));
        assert!(!bootargs_need_disk(""));
    }

    #[test]
    fn sizes_are_pinned() {
        assert_eq!(size_of::<Root>(), 216);
        assert_eq!(size_of::<Live>(), 16);
        assert_eq!(size_of::<LockInfo>(), 144);
        assert_eq!(size_of::<HeldLock>(), 24);
        assert_eq!(size_of::<HartState>(), 48 + 24 * MAX_HELD);
        assert_eq!(size_of::<RingHeader>(), 24);
        assert_eq!(size_of::<Event>(), 24);
        assert_eq!(size_of::<KmemHart>(), 48);
        assert_eq!(size_of::<BcacheHeader>(), 32);
        assert_eq!(size_of::<BucketInfo>(), 32);
        assert_eq!(size_of::<BufInfo>(), 32);
        assert_eq!(
            size_of::<PanicRecord>(),
            64 + 8 * PANIC_FRAMES + 8 + PANIC_MSG_LEN
        );
    }

    #[test]
    fn root_offsets_are_pinned() {
        assert_eq!(offset_of!(Root, magic), 0);
        assert_eq!(offset_of!(Root, version), 8);
        assert_eq!(offset_of!(Root, root_size), 12);
        assert_eq!(offset_of!(Root, ring_entries), 28);
        assert_eq!(offset_of!(Root, flags), 72);
        assert_eq!(offset_of!(Root, nharts), 76);
        assert_eq!(offset_of!(Root, nlocks), 80);
        assert_eq!(offset_of!(Root, timebase_hz), 104);
        assert_eq!(offset_of!(Root, locks), 144);
        assert_eq!(offset_of!(Root, harts), 152);
        assert_eq!(offset_of!(Root, rings), 160);
        assert_eq!(offset_of!(Root, kmem), 168);
        assert_eq!(offset_of!(Root, bcache), 176);
        assert_eq!(offset_of!(Root, panic), 184);
        assert_eq!(offset_of!(Root, bootargs), 192);
        assert_eq!(offset_of!(Root, live), 200);
        assert_eq!(offset_of!(Root, live) + offset_of!(Live, ticks), 200);
        assert_eq!(offset_of!(Root, live) + offset_of!(Live, phase), 208);
    }

    #[test]
    fn record_offsets_are_pinned() {
        assert_eq!(offset_of!(LockInfo, addr), 64);
        assert_eq!(offset_of!(LockInfo, holder), 72);
        assert_eq!(offset_of!(LockInfo, acquires), 80);
        assert_eq!(offset_of!(LockInfo, spins), 96);
        assert_eq!(offset_of!(LockInfo, hold_max), 128);
        assert_eq!(offset_of!(LockInfo, acquired_at), 136);
        assert_eq!(offset_of!(HartState, spin_lock), 16);
        assert_eq!(offset_of!(HartState, spin_pc), 24);
        assert_eq!(offset_of!(HartState, ops), 40);
        assert_eq!(offset_of!(HartState, held), 48);
        assert_eq!(offset_of!(RingHeader, write), 0);
        assert_eq!(offset_of!(RingHeader, events), 8);
        assert_eq!(offset_of!(Event, ts), 0);
        assert_eq!(offset_of!(Event, pc), 8);
        assert_eq!(offset_of!(Event, seq), 16);
        assert_eq!(offset_of!(Event, lock), 20);
        assert_eq!(offset_of!(Event, kind), 22);
        assert_eq!(offset_of!(Event, hart), 23);
        assert_eq!(offset_of!(BufInfo, timestamp), 16);
        assert_eq!(offset_of!(PanicRecord, scause), 16);
        assert_eq!(offset_of!(PanicRecord, frames), 64);
        assert_eq!(offset_of!(PanicRecord, msg), 64 + 8 * PANIC_FRAMES + 8);
    }

    #[test]
    fn magic_spells_lockscop() {
        assert_eq!(&ROOT_MAGIC.to_le_bytes(), b"LOCKSCOP");
    }

    #[test]
    fn ring_entries_is_a_power_of_two() {
        assert!(RING_ENTRIES.is_power_of_two());
        assert_eq!(ring_slot(RING_ENTRIES as u64 + 3, RING_ENTRIES as u64), 3);
    }

    #[test]
    fn intact_range_without_wrap_keeps_everything_new() {
        // Reader last stopped at 10; writer published up to 50 and did not move during the copy.
        assert_eq!(ring_intact_range(10, 50, 50, 64), (10, 50));
    }

    #[test]
    fn intact_range_drops_slots_the_writer_may_be_reusing() {
        // 64-entry ring, reader far behind: only the newest 63 events before `after` are safe.
        let (first, end) = ring_intact_range(0, 1000, 1000, 64);
        assert_eq!((first, end), (937, 1000));
        // The writer moved on by 10 during the copy: 10 more slots are suspect.
        let (first, end) = ring_intact_range(0, 1000, 1010, 64);
        assert_eq!((first, end), (947, 1000));
    }

    #[test]
    fn intact_range_is_empty_when_writer_lapped_the_copy() {
        let (first, end) = ring_intact_range(0, 100, 500, 64);
        assert_eq!(first, end);
    }

    #[test]
    fn enums_round_trip_through_boot_arg_spelling() {
        for w in Workload::ALL {
            assert_eq!(Workload::parse(w.as_str()), Some(*w));
            assert_eq!(Workload::from_u32(*w as u32), Some(*w));
        }
        for b in Bug::ALL {
            assert_eq!(Bug::parse(b.as_str()), Some(*b));
        }
        assert_eq!(Bug::parse("bucket-order"), Some(Bug::BucketOrder));
        assert_eq!(KallocMode::parse("nope"), None);
    }

    #[test]
    fn names_are_nul_padded_and_cut_on_char_boundaries() {
        let f: [u8; NAME_LEN] = name_field("bcache.bucket12");
        assert_eq!(name_str(&f), Some("bcache.bucket12"));
        let long = "a".repeat(40);
        let f: [u8; NAME_LEN] = name_field(&long);
        assert_eq!(name_str(&f).unwrap().len(), NAME_LEN - 1);
        let f: [u8; 4] = name_field("abé"); // 'é' is two bytes and only one fits: drop it whole.
        assert_eq!(name_str(&f), Some("ab"));
    }
}
