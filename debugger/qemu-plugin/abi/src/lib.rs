//! The file lockscope and its QEMU TCG plugin share: one header, a control block lockscope writes,
//! the watch table (what to instrument), per-hart published state and one event ring per vCPU.
//!
//! Both sides compile this crate, so a layout exists once. Every struct is `#[repr(C)]`,
//! little-endian, 8-byte aligned, with explicit padding, and derives [`bytemuck::Pod`]; the tests
//! pin sizes and offsets. Changing one bumps [`VERSION`]. `docs/plugin.md` describes the fields.
//!
//! Writers and readers of live fields use atomic accesses of the field's width: the plugin runs
//! in QEMU's vCPU threads while lockscope maps the same file.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// `b"LSPLUGIN"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"LSPLUGIN");
/// Bumped on any change of a layout or of a field's meaning.
pub const VERSION: u32 = 1;

/// Most vCPUs a file can describe.
pub const MAX_HARTS: u32 = 64;
/// Depth of each hart's published held list.
pub const MAX_HELD: usize = 16;
/// Most watch entries a file can carry (a big kernel has a few thousand call sites).
pub const MAX_WATCH: u32 = 1 << 20;
/// Ring capacity bounds (events, a power of two).
pub const MIN_RING_ENTRIES: u32 = 64;
pub const MAX_RING_ENTRIES: u32 = 1 << 22;
/// Events per ring by default: 262,144 x 48 bytes = 12 MiB per hart (pages are touched only as
/// the ring fills). kalloctest on 3 harts writes up to about 400,000 events/s per hart, so a
/// ring holds 650 ms: a drainer starved for 200 ms on a loaded 2-core host (measured) loses
/// nothing.
pub const DEFAULT_RING_ENTRIES: u32 = 1 << 18;
/// Length of the plugin's message field.
pub const MESSAGE_LEN: usize = 128;

/// `Header::plugin_state`: the plugin has not mapped the file yet.
pub const STATE_WAITING: u32 = 0;
/// The plugin validated the file and instruments the guest.
pub const STATE_RUNNING: u32 = 1;
/// The plugin refused the file; `Header::message` says why.
pub const STATE_FAILED: u32 = 2;
/// QEMU is exiting (the plugin's atexit callback ran).
pub const STATE_EXITED: u32 = 3;

/// A hart or owner byte that names nothing.
pub const NO_HART: u8 = 0xff;

/// The file header, at offset 0. lockscope fills everything but the plugin fields before it
/// starts QEMU; the plugin checks it field by field and then fills the plugin fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Header {
    pub magic: u64,
    pub version: u32,
    /// `size_of::<Header>()`.
    pub header_size: u32,
    /// Bytes of the whole file.
    pub file_size: u64,
    /// Rings and hart states in the file: at least QEMU's `-smp`.
    pub nharts: u32,
    /// Events per ring, a power of two.
    pub ring_entries: u32,
    pub event_size: u32,
    pub hart_state_size: u32,
    pub ring_header_size: u32,
    pub watch_size: u32,
    pub control_size: u32,
    /// Entries of the watch table.
    pub nwatch: u32,
    pub control_off: u64,
    pub watch_off: u64,
    pub harts_off: u64,
    pub rings_off: u64,
    /// Sleeplocks (xv6 `struct sleeplock`): offset of the inner spinlock and of `locked`.
    pub sleep_lk_off: u32,
    pub sleep_locked_off: u32,
    /// Written by the plugin: `STATE_*` (release ordering, after the fields below).
    pub plugin_state: u32,
    /// Written by the plugin: the QEMU plugin API version it was built for.
    pub plugin_api: u32,
    /// Written by the plugin: vCPUs QEMU reported.
    pub qemu_vcpus: u32,
    pub _pad0: u32,
    /// Written by the plugin when it fails: why, NUL padded UTF-8.
    pub message: [u8; MESSAGE_LEN],
}

/// Written by lockscope while QEMU runs: the time the VM spent stopped, which the plugin takes
/// out of every timestamp. Plugin time is `CLOCK_MONOTONIC ns - stopped_total_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Control {
    /// Sum of every finished stop, ns. Updated (release) just before the VM resumes.
    pub stopped_total_ns: u64,
    /// `CLOCK_MONOTONIC` ns when the current stop began, or 0 while the VM runs.
    pub stop_began_ns: u64,
    /// Stops counted so far (lockscope's own and a user's gdb stops).
    pub stops: u64,
    pub _pad: u64,
}

/// What a watch entry makes the plugin do when its instruction runs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    /// A call into an acquire function: push `aux` (the return address) as the call site.
    Call = 1,
    /// A test-and-set on a lock word (amoswap/amoor/sc) in an acquire function: one attempt.
    /// `aux` is the instruction reached only after it succeeded, or 0 when unknown.
    Tas = 2,
    /// The instruction reached only after a successful test-and-set: the lock is taken.
    Acquired = 3,
    /// A return of an acquire function: the last attempt succeeded (used when a `Tas` has no
    /// known success instruction).
    Return = 4,
    /// The releasing store or AMO on the lock word in a release function.
    Release = 5,
    /// A store in a sleeplock's acquire function (`lk->locked = 1` is the one whose address
    /// matches the held inner spinlock).
    SleepAcquireStore = 6,
    /// A store in a sleeplock's release function (`lk->locked = 0`).
    SleepReleaseStore = 7,
    /// A call into a sleeplock acquire function: remember the call site for the sleeplock.
    SleepCall = 8,
    /// A call into a reader-writer lock function (`read_acquire`, `write_release`, ...): `aux`
    /// is the return address, `flags` says read or write and [`WATCH_RELEASE_SIDE`]. The rw
    /// lock is the first spinlock the function then takes (xv6's `rw->lk`, its first field).
    RwCall = 9,
    /// A return of a reader-writer lock function: the hold begins or ends here.
    RwReturn = 10,
}

/// `Watch::flags` of `RwCall`/`RwReturn`: a release function (`read_release`, `write_release`).
pub const WATCH_RELEASE_SIDE: u32 = 1 << 8;
/// `Watch::flags` of a `Call` made from inside a reader-writer lock function: the spinlock it
/// takes is the rw lock's own (an interrupt's acquisitions in between are not).
pub const WATCH_IN_RW: u32 = 1 << 9;

impl WatchKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Call,
            2 => Self::Tas,
            3 => Self::Acquired,
            4 => Self::Return,
            5 => Self::Release,
            6 => Self::SleepAcquireStore,
            7 => Self::SleepReleaseStore,
            8 => Self::SleepCall,
            9 => Self::RwCall,
            10 => Self::RwReturn,
            _ => return None,
        })
    }
}

/// One instruction to instrument. The table is sorted by `pc`; one pc may have several entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Watch {
    /// Guest virtual address of the instruction.
    pub pc: u64,
    /// Kind-specific: see [`WatchKind`].
    pub aux: u64,
    /// A [`WatchKind`].
    pub kind: u32,
    /// `FLAG_*` bits carried into the events this instruction causes (trylock, read, write).
    pub flags: u32,
}

/// Per-hart ring header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RingHeader {
    /// Index of the next event to write; starts at 0 (release ordering after the slot).
    pub write: u64,
    /// The hart (vCPU index) writing this ring.
    pub hart: u32,
    pub entries: u32,
}

/// Event kinds, in lock_stat's meaning.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An acquisition attempt that was abandoned before it succeeded (a trylock that failed).
    /// A normal acquisition's attempt is its `Contended` event, or its `Acquired` event when
    /// the first test-and-set succeeded: not writing a separate attempt saves a third of the
    /// events of an uncontended lock.
    Attempt = 1,
    /// The first test-and-set failed: the hart spins. `owner` holds it (or `NO_HART`). `time_ns`
    /// is when the spin began.
    Contended = 2,
    /// The lock is taken: `wait_ns` since the first attempt, `spins` failed test-and-sets.
    Acquired = 3,
    /// The lock word was released by this hart; `wait_ns` is the hold time.
    Released = 4,
    /// A sleeplock was taken (`lk->locked = 1`); `addr` is the sleeplock.
    SleepAcquired = 5,
    /// A sleeplock was released, possibly on another hart than it was taken.
    SleepReleased = 6,
    /// A releasing store to a lock word this hart was not seen taking: the lock was taken by a
    /// test-and-set outside the watched acquire functions (a trylock, a raw test-and-set).
    /// Not a release: nothing is paired with it.
    UnseenRelease = 7,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Attempt,
            2 => Self::Contended,
            3 => Self::Acquired,
            4 => Self::Released,
            5 => Self::SleepAcquired,
            6 => Self::SleepReleased,
            7 => Self::UnseenRelease,
            _ => return None,
        })
    }
}

/// Event and watch flag: the acquisition is a trylock (no waiting, no order edge).
pub const FLAG_TRYLOCK: u8 = 1 << 0;
/// A read (shared) hold of a reader-writer lock.
pub const FLAG_READ: u8 = 1 << 1;
/// A write (exclusive) hold of a reader-writer lock.
pub const FLAG_WRITE: u8 = 1 << 2;
/// No call site was seen for this acquisition (an indirect call, an inlined acquire, or a
/// sleeplock taken after sleeping).
pub const FLAG_NO_SITE: u8 = 1 << 3;
/// A sleeplock acquisition that slept before it got the lock.
pub const FLAG_SLEPT: u8 = 1 << 4;

/// Low bits a holder of a reader-writer lock is tagged with when the plugin looks one up
/// (lock words are 4-byte aligned): read.
pub const HELD_TAG_READ: u64 = 1;
/// Write.
pub const HELD_TAG_WRITE: u64 = 2;

/// One event, 48 bytes. Event `i` of a ring lives in slot `i & (entries - 1)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Event {
    /// Plugin time (stops taken out), ns.
    pub time_ns: u64,
    /// The lock word, aligned down to 4 bytes (a sleeplock's own address for sleep events).
    pub addr: u64,
    /// Return address of the call into the lock function (symbolize `site - 1`), or 0.
    pub site: u64,
    /// `Acquired`: wait since the first attempt; `Released`, `SleepReleased`: hold time.
    pub wait_ns: u64,
    /// `Acquired`, `Contended`: failed test-and-sets so far.
    pub spins: u32,
    /// Low 32 bits of this event's index.
    pub seq: u32,
    pub kind: u8,
    pub flags: u8,
    pub hart: u8,
    /// `Contended`: the hart holding the lock at that moment, or [`NO_HART`].
    pub owner: u8,
    pub _pad: u32,
}

/// One spinlock a hart holds. (Reader-writer holds are not listed: a thread may release one
/// on another hart, so lockscope pairs them by address from the events.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HeldEntry {
    pub addr: u64,
    pub site: u64,
    pub since_ns: u64,
}

/// What one hart is doing, published by the plugin for lockscope to read without a stop.
/// Written only by the vCPU's thread, inside a seqlock: `gen` is odd while it changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct HartState {
    /// Seqlock generation: odd while the fields below change.
    pub gen: u64,
    /// The lock word this hart spins on, or 0.
    pub spin_addr: u64,
    /// When the spin began (the first, failed attempt).
    pub spin_since_ns: u64,
    /// Call site of the acquisition that spins.
    pub spin_site: u64,
    /// Failed test-and-sets of the current spin (updated outside the seqlock, at every attempt).
    pub spin_count: u64,
    /// Acquisitions seen (all locks).
    pub acquires: u64,
    /// Releases to lock words this hart was not seen taking ([`EventKind::UnseenRelease`]).
    pub unseen_releases: u64,
    /// Acquisitions without a call site ([`FLAG_NO_SITE`]).
    pub no_site: u64,
    /// Locks held, including those past [`MAX_HELD`].
    pub depth: u32,
    /// Held entries dropped because the list was full.
    pub held_overflow: u32,
    /// Outermost first; the first `min(depth, MAX_HELD)` are valid.
    pub held: [HeldEntry; MAX_HELD],
}

/// Where every part of a file lies, for `nharts` harts, `ring_entries` events per ring and
/// `nwatch` watch entries. Both sides compute it from the header's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub control_off: u64,
    pub watch_off: u64,
    pub harts_off: u64,
    pub rings_off: u64,
    /// Bytes of one ring: its header, padded to 64, then its events.
    pub ring_stride: u64,
    pub file_size: u64,
}

const fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// The size of a ring's header area (header padded to a cache line).
pub const RING_HEADER_AREA: u64 = 64;

impl Layout {
    pub const fn new(nharts: u32, ring_entries: u32, nwatch: u32) -> Layout {
        let control_off = align(core::mem::size_of::<Header>() as u64, 64);
        let watch_off = align(control_off + core::mem::size_of::<Control>() as u64, 64);
        let harts_off = align(
            watch_off + nwatch as u64 * core::mem::size_of::<Watch>() as u64,
            64,
        );
        let rings_off = align(
            harts_off + nharts as u64 * core::mem::size_of::<HartState>() as u64,
            4096,
        );
        let ring_stride = align(
            RING_HEADER_AREA + ring_entries as u64 * core::mem::size_of::<Event>() as u64,
            4096,
        );
        Layout {
            control_off,
            watch_off,
            harts_off,
            rings_off,
            ring_stride,
            file_size: rings_off + nharts as u64 * ring_stride,
        }
    }

    /// Offset of hart `h`'s published state.
    pub const fn hart(&self, h: u32) -> u64 {
        self.harts_off + h as u64 * core::mem::size_of::<HartState>() as u64
    }

    /// Offset of hart `h`'s ring header; its events follow at [`RING_HEADER_AREA`].
    pub const fn ring(&self, h: u32) -> u64 {
        self.rings_off + h as u64 * self.ring_stride
    }
}

/// Why a header does not describe a usable file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    Magic(u64),
    Version(u32),
    /// A size field that does not match this build's struct: (field, found, expected).
    Size(&'static str, u64, u64),
    /// A count out of its bounds: (field, found, max).
    Count(&'static str, u64, u64),
    /// An offset that does not match the layout the counts give: (field, found, expected).
    Offset(&'static str, u64, u64),
}

impl core::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            HeaderError::Magic(m) => write!(
                f,
                "magic {m:#x} is not LSPLUGIN: the file is not a lockscope plugin file"
            ),
            HeaderError::Version(v) => write!(
                f,
                "layout version {v}, this build reads {VERSION}: lockscope and its plugin are from different builds; rebuild both (cargo xtask build)"
            ),
            HeaderError::Size(what, found, want) => write!(
                f,
                "{what} is {found}, this build's is {want}: lockscope and its plugin are from different builds; rebuild both"
            ),
            HeaderError::Count(what, found, max) => {
                write!(f, "{what} is {found}, out of its bounds (at most {max}): the file is corrupt")
            }
            HeaderError::Offset(what, found, want) => write!(
                f,
                "{what} is {found}, the layout says {want}: the file is corrupt"
            ),
        }
    }
}

impl Header {
    /// A header for a new file; plugin fields zero.
    pub fn new(nharts: u32, ring_entries: u32, nwatch: u32) -> Header {
        let l = Layout::new(nharts, ring_entries, nwatch);
        Header {
            magic: MAGIC,
            version: VERSION,
            header_size: core::mem::size_of::<Header>() as u32,
            file_size: l.file_size,
            nharts,
            ring_entries,
            event_size: core::mem::size_of::<Event>() as u32,
            hart_state_size: core::mem::size_of::<HartState>() as u32,
            ring_header_size: core::mem::size_of::<RingHeader>() as u32,
            watch_size: core::mem::size_of::<Watch>() as u32,
            control_size: core::mem::size_of::<Control>() as u32,
            nwatch,
            control_off: l.control_off,
            watch_off: l.watch_off,
            harts_off: l.harts_off,
            rings_off: l.rings_off,
            sleep_lk_off: 8,
            sleep_locked_off: 0,
            plugin_state: STATE_WAITING,
            plugin_api: 0,
            qemu_vcpus: 0,
            _pad0: 0,
            message: [0; MESSAGE_LEN],
        }
    }

    /// Checks every identity, size, count and offset field; returns the layout they describe.
    /// `file_len` is the real length of the file.
    pub fn validate(&self, file_len: u64) -> Result<Layout, HeaderError> {
        use core::mem::size_of;
        if self.magic != MAGIC {
            return Err(HeaderError::Magic(self.magic));
        }
        if self.version != VERSION {
            return Err(HeaderError::Version(self.version));
        }
        let sizes: [(&'static str, u32, usize); 6] = [
            ("header_size", self.header_size, size_of::<Header>()),
            ("event_size", self.event_size, size_of::<Event>()),
            (
                "hart_state_size",
                self.hart_state_size,
                size_of::<HartState>(),
            ),
            (
                "ring_header_size",
                self.ring_header_size,
                size_of::<RingHeader>(),
            ),
            ("watch_size", self.watch_size, size_of::<Watch>()),
            ("control_size", self.control_size, size_of::<Control>()),
        ];
        for (what, found, want) in sizes {
            if found as usize != want {
                return Err(HeaderError::Size(what, found as u64, want as u64));
            }
        }
        if self.nharts == 0 || self.nharts > MAX_HARTS {
            return Err(HeaderError::Count(
                "nharts",
                self.nharts as u64,
                MAX_HARTS as u64,
            ));
        }
        if !self.ring_entries.is_power_of_two()
            || !(MIN_RING_ENTRIES..=MAX_RING_ENTRIES).contains(&self.ring_entries)
        {
            return Err(HeaderError::Count(
                "ring_entries (a power of two, at least 64)",
                self.ring_entries as u64,
                MAX_RING_ENTRIES as u64,
            ));
        }
        if self.nwatch > MAX_WATCH {
            return Err(HeaderError::Count(
                "nwatch",
                self.nwatch as u64,
                MAX_WATCH as u64,
            ));
        }
        if self.sleep_lk_off > 4096 || self.sleep_locked_off > 4096 {
            return Err(HeaderError::Count(
                "sleep_lk_off/sleep_locked_off",
                self.sleep_lk_off.max(self.sleep_locked_off) as u64,
                4096,
            ));
        }
        let l = Layout::new(self.nharts, self.ring_entries, self.nwatch);
        let offsets = [
            ("control_off", self.control_off, l.control_off),
            ("watch_off", self.watch_off, l.watch_off),
            ("harts_off", self.harts_off, l.harts_off),
            ("rings_off", self.rings_off, l.rings_off),
            ("file_size", self.file_size, l.file_size),
        ];
        for (what, found, want) in offsets {
            if found != want {
                return Err(HeaderError::Offset(what, found, want));
            }
        }
        if file_len < l.file_size {
            return Err(HeaderError::Offset(
                "the file's length",
                file_len,
                l.file_size,
            ));
        }
        Ok(l)
    }
}

/// Byte offset of `plugin_state` in [`Header`] (read and written atomically).
pub const PLUGIN_STATE_OFFSET: usize = core::mem::offset_of!(Header, plugin_state);
/// Byte offset of `gen` in [`HartState`].
pub const HART_GEN_OFFSET: usize = core::mem::offset_of!(HartState, gen);

/// The indices of a ring that are intact after copying `[from, before)` while the writer moved
/// on to `after` (the seqlock rule of lockscope-abi's rings): `[max(from, after + 1 - entries),
/// before)`, empty when inverted.
pub fn ring_intact_range(from: u64, before: u64, after: u64, entries: u64) -> (u64, u64) {
    let oldest_safe = (after + 1).saturating_sub(entries);
    let first = from.max(oldest_safe).min(before);
    (first, before)
}

/// The text of a NUL-padded field, or `None` if it is not UTF-8.
pub fn text(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    core::str::from_utf8(&field[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn sizes_are_pinned() {
        assert_eq!(size_of::<Header>(), 240);
        assert_eq!(size_of::<Control>(), 32);
        assert_eq!(size_of::<Watch>(), 24);
        assert_eq!(size_of::<RingHeader>(), 16);
        assert_eq!(size_of::<Event>(), 48);
        assert_eq!(size_of::<HeldEntry>(), 24);
        assert_eq!(size_of::<HartState>(), 72 + 24 * MAX_HELD);
    }

    #[test]
    fn offsets_are_pinned() {
        assert_eq!(offset_of!(Header, nharts), 24);
        assert_eq!(offset_of!(Header, control_off), 56);
        assert_eq!(offset_of!(Header, sleep_lk_off), 88);
        assert_eq!(PLUGIN_STATE_OFFSET, 96);
        assert_eq!(offset_of!(Header, message), 112);
        assert_eq!(offset_of!(Event, spins), 32);
        assert_eq!(offset_of!(Event, seq), 36);
        assert_eq!(offset_of!(Event, kind), 40);
        assert_eq!(offset_of!(Event, owner), 43);
        assert_eq!(offset_of!(HartState, spin_addr), 8);
        assert_eq!(offset_of!(HartState, depth), 64);
        assert_eq!(offset_of!(HartState, held), 72);
        assert_eq!(offset_of!(Control, stop_began_ns), 8);
    }

    #[test]
    fn layout_is_aligned_and_validates() {
        let h = Header::new(3, 1024, 10);
        let l = h.validate(h.file_size).unwrap();
        assert_eq!(l.rings_off % 4096, 0);
        assert_eq!(l.ring_stride % 4096, 0);
        assert_eq!(l.ring(2) + l.ring_stride, l.file_size);
        assert!(l.hart(2) + size_of::<HartState>() as u64 <= l.rings_off);
        assert!(l.watch_off + 10 * 24 <= l.harts_off);
        assert!(matches!(
            h.validate(h.file_size - 1),
            Err(HeaderError::Offset(..))
        ));
    }

    #[test]
    fn every_bad_field_is_named() {
        let good = Header::new(2, 256, 0);
        let mut h = good;
        h.magic = 1;
        assert!(matches!(h.validate(u64::MAX), Err(HeaderError::Magic(1))));
        let mut h = good;
        h.version = 9;
        assert!(matches!(h.validate(u64::MAX), Err(HeaderError::Version(9))));
        let mut h = good;
        h.event_size = 24;
        assert!(matches!(
            h.validate(u64::MAX),
            Err(HeaderError::Size("event_size", 24, 48))
        ));
        let mut h = good;
        h.ring_entries = 1000;
        assert!(matches!(h.validate(u64::MAX), Err(HeaderError::Count(..))));
        let mut h = good;
        h.nharts = 0;
        assert!(matches!(
            h.validate(u64::MAX),
            Err(HeaderError::Count("nharts", 0, _))
        ));
        let mut h = good;
        h.nwatch = 5;
        assert!(matches!(h.validate(u64::MAX), Err(HeaderError::Offset(..))));
        let mut h = good;
        h.rings_off += 8;
        assert!(matches!(
            h.validate(u64::MAX),
            Err(HeaderError::Offset("rings_off", ..))
        ));
    }

    #[test]
    fn intact_range_matches_the_kernel_ring_rule() {
        assert_eq!(ring_intact_range(10, 50, 50, 64), (10, 50));
        assert_eq!(ring_intact_range(0, 1000, 1010, 64), (947, 1000));
        let (a, b) = ring_intact_range(0, 100, 500, 64);
        assert_eq!(a, b);
    }
}
