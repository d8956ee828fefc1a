//! The validated shape of one kernel's ABI: every address and count checked once, at open.

use std::mem::size_of;
use std::ops::Range;

use lockscope_abi as abi;

use super::error::AbiError;
use super::pod::read_pod;
use crate::memory::GuestMemory;

/// Where everything is, after validation. Counts never exceed the capacities compiled into
/// `lockscope-abi`, and every table lies inside guest RAM.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root_addr: u64,
    pub ram: Range<u64>,
    pub timebase_hz: u64,
    /// Nanoseconds per tick when the timebase divides a second evenly (10 MHz: 100), so the hot
    /// path multiplies instead of dividing.
    pub ns_per_tick: Option<u64>,
    pub nharts: u32,
    pub max_harts: u32,
    pub max_locks: u32,
    pub ring_entries: u32,
    pub text: Range<u64>,
    pub locks: u64,
    pub harts: u64,
    pub rings: u64,
    pub kmem: u64,
    /// The buffer cache's header, its counts and table addresses validated.
    pub bcache: Option<abi::BcacheHeader>,
    pub panic: u64,
    pub bootargs: u64,
    pub bootargs_len: u32,
}

/// Largest buffer cache a reader accepts: far above the lab's 30 buffers and 13 buckets, far below
/// anything that would make a corrupt count expensive.
const MAX_BCACHE_BUFS: u32 = 4096;
const MAX_BCACHE_BUCKETS: u32 = 4096;
/// Largest ring a reader accepts (events per hart).
const MAX_RING_ENTRIES: u32 = 1 << 20;

fn check_size(field: &str, found: u32, expected: usize) -> Result<(), AbiError> {
    if found as usize != expected {
        return Err(AbiError::corrupt(
            format!("Root.{field}"),
            found as u64,
            format!(
                "this lockscope expects {expected}: the kernel was built from a different lockscope-abi; rebuild both (cargo xtask build)"
            ),
        ));
    }
    Ok(())
}

fn check_table(
    ram: &Range<u64>,
    field: &str,
    addr: u64,
    count: u64,
    elem: usize,
) -> Result<(), AbiError> {
    let len = count.checked_mul(elem as u64);
    let end = len.and_then(|l| addr.checked_add(l));
    match end {
        Some(end) if addr >= ram.start && end <= ram.end && addr.is_multiple_of(8) => Ok(()),
        _ => Err(AbiError::corrupt(
            field,
            addr,
            format!(
                "a table of {count} x {elem} bytes there is not 8-aligned inside guest RAM {:#x}..{:#x}",
                ram.start, ram.end
            ),
        )),
    }
}

impl Layout {
    /// Converts timebase ticks to nanoseconds.
    pub fn ns(&self, ticks: u64) -> u64 {
        match self.ns_per_tick {
            Some(k) => ticks.saturating_mul(k),
            None => ticks_to_ns(ticks, self.timebase_hz),
        }
    }

    /// Reads and validates the root descriptor at `root_addr`.
    pub fn read<M: GuestMemory + ?Sized>(
        mem: &mut M,
        root_addr: u64,
        ram: Range<u64>,
    ) -> Result<Self, AbiError> {
        let root: abi::Root = read_pod(mem, root_addr)?;
        Self::validate(&root, root_addr, ram, mem)
    }

    /// Checks the constant part of a root (as found in the ELF file or in memory): magic, version
    /// and record sizes. Needs no target.
    pub fn check_identity(root: &abi::Root, root_addr: u64) -> Result<(), AbiError> {
        if root.magic != abi::ROOT_MAGIC {
            return Err(AbiError::BadMagic {
                symbol: abi::ROOT_SYMBOL,
                addr: root_addr,
                found: root.magic,
                expected: abi::ROOT_MAGIC,
            });
        }
        if root.version != abi::ABI_VERSION {
            return Err(AbiError::Version {
                kernel: root.version,
                reader: abi::ABI_VERSION,
            });
        }
        check_size("root_size", root.root_size, size_of::<abi::Root>())?;
        check_size("event_size", root.event_size, size_of::<abi::Event>())?;
        check_size(
            "lock_info_size",
            root.lock_info_size,
            size_of::<abi::LockInfo>(),
        )?;
        check_size(
            "hart_state_size",
            root.hart_state_size,
            size_of::<abi::HartState>(),
        )?;
        check_size(
            "ring_header_size",
            root.ring_header_size,
            size_of::<abi::RingHeader>(),
        )?;
        check_size(
            "kmem_hart_size",
            root.kmem_hart_size,
            size_of::<abi::KmemHart>(),
        )?;
        check_size(
            "bucket_info_size",
            root.bucket_info_size,
            size_of::<abi::BucketInfo>(),
        )?;
        check_size(
            "buf_info_size",
            root.buf_info_size,
            size_of::<abi::BufInfo>(),
        )?;
        check_size(
            "panic_record_size",
            root.panic_record_size,
            size_of::<abi::PanicRecord>(),
        )?;
        check_size("max_held", root.max_held, abi::MAX_HELD)?;
        Ok(())
    }

    fn validate<M: GuestMemory + ?Sized>(
        root: &abi::Root,
        root_addr: u64,
        ram: Range<u64>,
        mem: &mut M,
    ) -> Result<Self, AbiError> {
        Self::check_identity(root, root_addr)?;
        if root.flags & abi::FLAG_READY == 0 {
            return Err(AbiError::NotReady);
        }
        let cap = |field: &str, v: u32, max: usize| -> Result<(), AbiError> {
            if v as usize > max || v == 0 {
                return Err(AbiError::corrupt(
                    format!("Root.{field}"),
                    v as u64,
                    format!("must be 1..={max}"),
                ));
            }
            Ok(())
        };
        cap("max_harts", root.max_harts, abi::MAX_HARTS)?;
        cap("max_locks", root.max_locks, abi::MAX_LOCKS)?;
        cap("nharts", root.nharts, root.max_harts as usize)?;
        if root.nlocks > root.max_locks {
            return Err(AbiError::corrupt(
                "Root.nlocks",
                root.nlocks as u64,
                format!("more than max_locks {}", root.max_locks),
            ));
        }
        if !root.ring_entries.is_power_of_two() || root.ring_entries > MAX_RING_ENTRIES {
            return Err(AbiError::corrupt(
                "Root.ring_entries",
                root.ring_entries as u64,
                format!("must be a power of two up to {MAX_RING_ENTRIES}"),
            ));
        }
        if root.bootargs_len as usize > 4096 {
            return Err(AbiError::corrupt(
                "Root.bootargs_len",
                root.bootargs_len as u64,
                "longer than 4096",
            ));
        }
        if root.timebase_hz == 0 || root.timebase_hz > 10_000_000_000 {
            return Err(AbiError::corrupt(
                "Root.timebase_hz",
                root.timebase_hz,
                "not a plausible timer frequency",
            ));
        }
        let kernel_ram = root.ram_base..root.ram_base.saturating_add(root.ram_size);
        if kernel_ram.start < ram.start || kernel_ram.end > ram.end || kernel_ram.is_empty() {
            return Err(AbiError::corrupt(
                "Root.ram_base",
                root.ram_base,
                format!(
                    "the kernel reports RAM {:#x}..{:#x} but the guest has {:#x}..{:#x}: is QEMU's -m the one this kernel booted with?",
                    kernel_ram.start, kernel_ram.end, ram.start, ram.end
                ),
            ));
        }
        if root.text_start >= root.text_end
            || root.text_start < ram.start
            || root.text_end > ram.end
        {
            return Err(AbiError::corrupt(
                "Root.text_start",
                root.text_start,
                "the kernel text range is not inside RAM",
            ));
        }

        let nh = root.max_harts as u64;
        check_table(
            &ram,
            "Root.locks",
            root.locks,
            root.max_locks as u64,
            size_of::<abi::LockInfo>(),
        )?;
        check_table(
            &ram,
            "Root.harts",
            root.harts,
            nh,
            size_of::<abi::HartState>(),
        )?;
        check_table(
            &ram,
            "Root.rings",
            root.rings,
            nh,
            size_of::<abi::RingHeader>(),
        )?;
        check_table(&ram, "Root.kmem", root.kmem, nh, size_of::<abi::KmemHart>())?;
        check_table(
            &ram,
            "Root.panic",
            root.panic,
            1,
            size_of::<abi::PanicRecord>(),
        )?;
        check_table(
            &ram,
            "Root.bootargs",
            root.bootargs,
            root.bootargs_len as u64,
            1,
        )?;

        let bcache = if root.bcache == 0 {
            None
        } else {
            check_table(
                &ram,
                "Root.bcache",
                root.bcache,
                1,
                size_of::<abi::BcacheHeader>(),
            )?;
            let h: abi::BcacheHeader = read_pod(mem, root.bcache)?;
            if h.nbuf == 0 || h.nbuf > MAX_BCACHE_BUFS {
                return Err(AbiError::corrupt(
                    "BcacheHeader.nbuf",
                    h.nbuf as u64,
                    format!("must be 1..={MAX_BCACHE_BUFS}"),
                ));
            }
            if h.nbucket == 0 || h.nbucket > MAX_BCACHE_BUCKETS {
                return Err(AbiError::corrupt(
                    "BcacheHeader.nbucket",
                    h.nbucket as u64,
                    format!("must be 1..={MAX_BCACHE_BUCKETS}"),
                ));
            }
            check_table(
                &ram,
                "BcacheHeader.buckets",
                h.buckets,
                h.nbucket as u64,
                size_of::<abi::BucketInfo>(),
            )?;
            check_table(
                &ram,
                "BcacheHeader.bufs",
                h.bufs,
                h.nbuf as u64,
                size_of::<abi::BufInfo>(),
            )?;
            Some(h)
        };

        Ok(Layout {
            root_addr,
            ram,
            timebase_hz: root.timebase_hz,
            ns_per_tick: (1_000_000_000 % root.timebase_hz == 0)
                .then(|| 1_000_000_000 / root.timebase_hz),
            nharts: root.nharts,
            max_harts: root.max_harts,
            max_locks: root.max_locks,
            ring_entries: root.ring_entries,
            text: root.text_start..root.text_end,
            locks: root.locks,
            harts: root.harts,
            rings: root.rings,
            kmem: root.kmem,
            bcache,
            panic: root.panic,
            bootargs: root.bootargs,
            bootargs_len: root.bootargs_len,
        })
    }
}

/// Converts timebase ticks to nanoseconds.
fn ticks_to_ns(ticks: u64, timebase_hz: u64) -> u64 {
    if timebase_hz == 0 {
        return 0;
    }
    (ticks as u128 * 1_000_000_000 / timebase_hz as u128).min(u64::MAX as u128) as u64
}
