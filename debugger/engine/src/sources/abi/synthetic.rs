//! A kernel image built from the ABI structs alone: for the reader's tests and the ingest
//! benchmark, where booting QEMU would measure QEMU.

use std::mem::size_of;

use bytemuck::Zeroable;
use lockscope_abi as abi;

use super::error::AbiError;
use super::reader::AbiReader;
use crate::memory::ByteImage;

pub const RAM: u64 = 0x8000_0000;
pub const ROOT: u64 = RAM + 0x1000;
pub const LOCKS: u64 = RAM + 0x2000;
pub const HARTS: u64 = RAM + 0x8000;
pub const RINGS: u64 = RAM + 0x9000;
pub const KMEM: u64 = RAM + 0x9800;
pub const PANIC: u64 = RAM + 0xa000;
pub const BOOTARGS: u64 = RAM + 0xb000;
pub const BCACHE: u64 = RAM + 0xc000;
pub const BUCKETS: u64 = RAM + 0xc100;
pub const BUFS: u64 = RAM + 0xd000;
pub const EVENTS: u64 = RAM + 0x10_0000;

/// A guest image with a valid root, `nharts` harts, three locks (`kmem0`, `kmem1`,
/// `bcache.bucket0`), a one-bucket buffer cache and rings of `entries` events.
pub struct SyntheticKernel {
    pub image: ByteImage,
    pub nharts: u32,
    pub entries: u32,
}

impl SyntheticKernel {
    /// Bytes between two harts' event arrays.
    pub fn ring_stride(&self) -> u64 {
        (self.entries as u64 * 24).next_multiple_of(0x1000)
    }

    pub fn ram_size(&self) -> u64 {
        self.image.bytes.len() as u64
    }

    pub fn new(nharts: u32, entries: u32) -> Self {
        let stride = (entries as u64 * 24).next_multiple_of(0x1000);
        let ram_size = (EVENTS - RAM) + stride * nharts as u64;
        let mut g = SyntheticKernel {
            image: ByteImage {
                base: RAM,
                bytes: vec![0; ram_size as usize],
            },
            nharts,
            entries,
        };
        let mut root = abi::Root::zeroed();
        root.magic = abi::ROOT_MAGIC;
        root.version = abi::ABI_VERSION;
        root.root_size = size_of::<abi::Root>() as u32;
        root.max_harts = abi::MAX_HARTS as u32;
        root.max_locks = abi::MAX_LOCKS as u32;
        root.max_held = abi::MAX_HELD as u32;
        root.ring_entries = entries;
        root.event_size = size_of::<abi::Event>() as u32;
        root.lock_info_size = size_of::<abi::LockInfo>() as u32;
        root.hart_state_size = size_of::<abi::HartState>() as u32;
        root.ring_header_size = size_of::<abi::RingHeader>() as u32;
        root.kmem_hart_size = size_of::<abi::KmemHart>() as u32;
        root.bucket_info_size = size_of::<abi::BucketInfo>() as u32;
        root.buf_info_size = size_of::<abi::BufInfo>() as u32;
        root.panic_record_size = size_of::<abi::PanicRecord>() as u32;
        root.bootargs_len = abi::BOOTARGS_LEN as u32;
        root.flags = abi::FLAG_READY | abi::FLAG_TRACE;
        root.nharts = nharts;
        root.nlocks = 3;
        root.workload = abi::Workload::Bcachetest as u32;
        root.kalloc_mode = abi::KallocMode::Percpu as u32;
        root.bcache_mode = abi::BcacheMode::Hashed as u32;
        root.timebase_hz = 10_000_000;
        root.ram_base = RAM;
        root.ram_size = ram_size;
        root.text_start = RAM;
        root.text_end = RAM + 0x1000;
        root.locks = LOCKS;
        root.harts = HARTS;
        root.rings = RINGS;
        root.kmem = KMEM;
        root.panic = PANIC;
        root.bootargs = BOOTARGS;
        root.bcache = BCACHE;
        root.live.ticks = 42;
        root.live.phase = abi::Phase::Test0 as u32;
        g.put(ROOT, &root);

        for (i, (name, class)) in [
            ("kmem0", "kmem"),
            ("kmem1", "kmem"),
            ("bcache.bucket0", "bcache.bucket"),
        ]
        .iter()
        .enumerate()
        {
            let mut l = abi::LockInfo::zeroed();
            l.name = abi::name_field(name);
            l.class = abi::name_field(class);
            l.holder = abi::NONE;
            l.acquires = 100 * (i as u64 + 1);
            l.contended = 3;
            l.spins = 17;
            l.wait_total = 50; // 5 us at 10 MHz
            l.hold_max = 2;
            g.put(LOCKS + (i * size_of::<abi::LockInfo>()) as u64, &l);
        }
        for h in 0..nharts {
            let mut s = abi::HartState::zeroed();
            s.status = abi::HartStatus::Running as u32;
            s.spin_lock = abi::NONE;
            s.heartbeat = 7 + h as u64;
            g.put(HARTS + h as u64 * size_of::<abi::HartState>() as u64, &s);
            let r = abi::RingHeader {
                write: 0,
                events: EVENTS + h as u64 * stride,
                entries,
                hart: h,
            };
            g.put(RINGS + h as u64 * size_of::<abi::RingHeader>() as u64, &r);
            let mut k = abi::KmemHart::zeroed();
            k.lock = h;
            k.free_pages = 1000 * (h as u64 + 1);
            g.put(KMEM + h as u64 * size_of::<abi::KmemHart>() as u64, &k);
        }
        let args: [u8; abi::BOOTARGS_LEN] = abi::name_field("workload=bcachetest");
        g.put(BOOTARGS, &args);
        let b = abi::BcacheHeader {
            nbuf: 2,
            nbucket: 1,
            mode: abi::BcacheMode::Hashed as u32,
            evict_lock: abi::NONE,
            buckets: BUCKETS,
            bufs: BUFS,
        };
        g.put(BCACHE, &b);
        let k = abi::BucketInfo {
            lock: 2,
            nbuf: 2,
            hits: 9,
            misses: 1,
            steals: 0,
        };
        g.put(BUCKETS, &k);
        for i in 0..2u32 {
            let f = abi::BufInfo {
                dev: 1,
                blockno: 10 + i,
                refcnt: i,
                valid: 1,
                timestamp: 40,
                bucket: 0,
                lock: abi::NONE,
            };
            g.put(BUFS + i as u64 * 32, &f);
        }
        g
    }

    pub fn put<T: bytemuck::Pod>(&mut self, addr: u64, v: &T) {
        let off = (addr - RAM) as usize;
        let b = bytemuck::bytes_of(v);
        self.image.bytes[off..off + b.len()].copy_from_slice(b);
    }

    pub fn get<T: bytemuck::Pod>(&self, addr: u64) -> T {
        let off = (addr - RAM) as usize;
        bytemuck::pod_read_unaligned(&self.image.bytes[off..off + size_of::<T>()])
    }

    pub fn root(&self) -> abi::Root {
        self.get(ROOT)
    }

    pub fn edit_root(&mut self, f: impl FnOnce(&mut abi::Root)) {
        let mut r = self.root();
        f(&mut r);
        self.put(ROOT, &r);
    }

    /// Appends an event to hart `h`'s ring the way the kernel does.
    pub fn push(&mut self, h: u32, kind: abi::EventKind, lock: u16, ts: u64) {
        let ra = RINGS + h as u64 * size_of::<abi::RingHeader>() as u64;
        let mut r: abi::RingHeader = self.get(ra);
        let e = abi::Event {
            ts,
            pc: 0x8000_1234 + lock as u64 * 0x10,
            seq: r.write as u32,
            lock,
            kind: kind as u8,
            hart: h as u8,
        };
        let slot = abi::ring_slot(r.write, r.entries as u64);
        self.put(r.events + slot * 24, &e);
        r.write += 1;
        self.put(ra, &r);
    }

    pub fn open(&mut self) -> Result<AbiReader, AbiError> {
        let end = RAM + self.ram_size();
        AbiReader::open(&mut self.image, ROOT, RAM..end)
    }
}
