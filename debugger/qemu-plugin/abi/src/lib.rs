//! The file lockscope and its QEMU TCG plugin share: one header, a control block lockscope writes,
//! the watch table (what to instrument), per-hart published state, the thread table and one event
//! ring per vCPU.
//!
//! Both sides compile this crate, so a layout exists once. Every struct is `#[repr(C)]`,
//! little-endian, 8-byte aligned, with explicit padding, and derives [`bytemuck::Pod`]; the tests
//! pin sizes and offsets. Changing one bumps [`VERSION`]. `docs/plugin.md` describes the fields.
//!
//! Writers and readers of live fields use atomic accesses of the field's width: the plugin runs
//! in QEMU's vCPU threads while lockscope maps the same file.
#![no_std]

mod clock;
mod hart;
mod header;
mod ring;
mod watch;

pub use clock::monotonic_ns;
pub use hart::*;
pub use header::*;
pub use ring::*;
pub use watch::*;

/// `b"LSPLUGIN"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"LSPLUGIN");
/// Bumped on any change of a layout or of a field's meaning.
pub const VERSION: u32 = 2;

/// Most vCPUs a file can describe.
pub const MAX_HARTS: u32 = 64;
/// Depth of each hart's published held list.
pub const MAX_HELD: usize = 16;
/// Threads the plugin tells apart (by the address of their saved context: xv6's `p->context`
/// and each hart's scheduler `cpus[i].context`). xv6 has `NPROC` (64) + `NCPU` (8).
pub const MAX_THREADS: u32 = 1024;
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
        assert_eq!(size_of::<Header>(), 248);
        assert_eq!(size_of::<Control>(), 32);
        assert_eq!(size_of::<Watch>(), 24);
        assert_eq!(size_of::<RingHeader>(), 16);
        assert_eq!(size_of::<Event>(), 48);
        assert_eq!(size_of::<HeldEntry>(), 24);
        assert_eq!(size_of::<HartState>(), 80 + 24 * MAX_HELD);
    }

    #[test]
    fn offsets_are_pinned() {
        assert_eq!(offset_of!(Header, nharts), 24);
        assert_eq!(offset_of!(Header, control_off), 56);
        assert_eq!(offset_of!(Header, threads_off), 80);
        assert_eq!(offset_of!(Header, sleep_lk_off), 96);
        assert_eq!(PLUGIN_STATE_OFFSET, 104);
        assert_eq!(offset_of!(Header, message), 120);
        assert_eq!(offset_of!(Event, spins), 32);
        assert_eq!(offset_of!(Event, seq), 36);
        assert_eq!(offset_of!(Event, kind), 40);
        assert_eq!(offset_of!(Event, owner), 43);
        assert_eq!(offset_of!(Event, thread), 44);
        assert_eq!(offset_of!(HartState, spin_addr), 8);
        assert_eq!(offset_of!(HartState, depth), 64);
        assert_eq!(offset_of!(HartState, thread), 72);
        assert_eq!(offset_of!(HartState, held), 80);
        assert_eq!(offset_of!(Control, stop_began_ns), 8);
    }

    #[test]
    fn layout_is_aligned_and_validates() {
        let h = Header::new(3, 1024, 10);
        let l = h.validate(h.file_size).unwrap();
        assert_eq!(l.rings_off % 4096, 0);
        assert_eq!(l.ring_stride % 4096, 0);
        assert_eq!(l.ring(2) + l.ring_stride, l.file_size);
        assert!(l.hart(2) + size_of::<HartState>() as u64 <= l.threads_off);
        assert!(l.thread(MAX_THREADS) + 8 <= l.rings_off);
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
