//! The file's header, the control block lockscope writes while QEMU runs, and the layout the
//! header's counts give: where every other part of the file lies.

use bytemuck::{Pod, Zeroable};

use crate::hart::HartState;
use crate::ring::{Event, RingHeader};
use crate::watch::Watch;
use crate::{
    MAGIC, MAX_HARTS, MAX_RING_ENTRIES, MAX_THREADS, MAX_WATCH, MESSAGE_LEN, MIN_RING_ENTRIES,
    STATE_WAITING, VERSION,
};

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
    /// The thread table: [`MAX_THREADS`] u64 context addresses (see [`Event::thread`]).
    pub threads_off: u64,
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

/// Where every part of a file lies, for `nharts` harts, `ring_entries` events per ring and
/// `nwatch` watch entries. Both sides compute it from the header's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub control_off: u64,
    pub watch_off: u64,
    pub harts_off: u64,
    pub threads_off: u64,
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
        let threads_off = align(
            harts_off + nharts as u64 * core::mem::size_of::<HartState>() as u64,
            64,
        );
        let rings_off = align(threads_off + MAX_THREADS as u64 * 8, 4096);
        let ring_stride = align(
            RING_HEADER_AREA + ring_entries as u64 * core::mem::size_of::<Event>() as u64,
            4096,
        );
        Layout {
            control_off,
            watch_off,
            harts_off,
            threads_off,
            rings_off,
            ring_stride,
            file_size: rings_off + nharts as u64 * ring_stride,
        }
    }

    /// Offset of hart `h`'s published state.
    pub const fn hart(&self, h: u32) -> u64 {
        self.harts_off + h as u64 * core::mem::size_of::<HartState>() as u64
    }

    /// Offset of thread `index` (1-based, as events carry it) in the thread table.
    pub const fn thread(&self, index: u32) -> u64 {
        self.threads_off + (index as u64 - 1) * 8
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
            threads_off: l.threads_off,
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
            ("threads_off", self.threads_off, l.threads_off),
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
