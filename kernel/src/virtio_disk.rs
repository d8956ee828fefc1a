//! The virtio-blk disk on QEMU's virtio-mmio bus (modern interface), driven by the
//! `virtio-drivers` crate behind the `virtio_disk` lock.
//!
//! Several harts can have a request in flight: each hart owns one request slot. A hart submits
//! under `virtio_disk`, releases it, and waits with interrupts on (spinning briefly, then in
//! `wfi`). The completion interrupt (PLIC, on whichever hart takes it) completes every used
//! request under `virtio_disk` and marks the submitting hart's slot done.

use crate::hart;
use crate::layout::{PGSIZE, VIRTIO0, VIRTIO0_IRQ, VIRTIO_SLOTS};
use crate::spinlock::SpinLock;
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use lockscope_abi::disk::BSIZE;
use lockscope_abi::{MAX_HARTS, NONE};
use virtio_drivers::device::blk::{BlkReq, BlkResp, RespStatus, VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// How long a hart spins on its request before it sleeps, in microseconds.
const SPIN_US: u64 = 100;
/// Longest sleep between checks of a request's completion, in microseconds: the bound when
/// the completion interrupt was taken by another hart.
const NAP_US: u64 = 20;
/// Bytes of each virtio-mmio slot's register window on QEMU virt.
const MMIO_SIZE: usize = 0x200;
/// Pages for the virtqueue (a modern queue of 16 entries needs 2, a legacy one 2).
const DMA_PAGES: usize = 4;

#[repr(C, align(4096))]
struct DmaPool(UnsafeCell<[u8; DMA_PAGES * PGSIZE]>);

// SAFETY: pages are handed out once each by `dma_alloc` (an atomic bump), then owned by the
// virtqueue and the device.
unsafe impl Sync for DmaPool {}

static DMA: DmaPool = DmaPool(UnsafeCell::new([0; DMA_PAGES * PGSIZE]));
static DMA_USED: AtomicUsize = AtomicUsize::new(0);

/// virtio-drivers' view of this kernel: RAM is direct-mapped (physical == virtual), so sharing
/// a buffer with the device is just its address.
struct KernelHal;

// SAFETY: dma_alloc returns zeroed, page-aligned, never-aliased pages from a static pool;
// share/unshare hand the device the buffer's own (physical == virtual) address.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let first = DMA_USED.fetch_add(pages, Ordering::Relaxed);
        if first + pages > DMA_PAGES {
            // virtio-drivers turns a zero address into Error::DmaError.
            return (0, NonNull::dangling());
        }
        // SAFETY: pages `first..first + pages` of the pool are handed out once, here.
        let p = unsafe { (DMA.0.get() as *mut u8).add(first * PGSIZE) };
        // SAFETY: as above; the range is inside the pool.
        unsafe { core::ptr::write_bytes(p, 0, pages * PGSIZE) };
        (p as PhysAddr, NonNull::new(p).expect("static pool address"))
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        // The device lives as long as the kernel; the driver is never dropped.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO address is not null")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _dir: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _dir: BufferDirection) {}
}

type Blk = VirtIOBlk<KernelHal, MmioTransport<'static>>;

/// One hart's request while it is in flight or not yet collected.
struct Request {
    token: u16,
    write: bool,
    /// The block's data: owned by the submitting hart (it holds the buffer), which does not
    /// touch it until `done`.
    data: *mut u8,
    req: BlkReq,
    resp: BlkResp,
    done: bool,
    result: Result<(), virtio_drivers::Error>,
}

pub struct Disk {
    blk: Option<Blk>,
    slots: [Option<Request>; MAX_HARTS],
}

// SAFETY: the raw data pointers are only followed under the `virtio_disk` lock, while the
// submitting hart waits for its request and leaves the data alone.
unsafe impl Send for Disk {}

pub static DISK: SpinLock<Disk> = SpinLock::new(
    "virtio_disk",
    "virtio_disk",
    Disk {
        blk: None,
        slots: [const { None }; MAX_HARTS],
    },
);

/// Set by the interrupt handler when hart `h`'s request completed; read without the lock.
static DONE: [AtomicBool; MAX_HARTS] = [const { AtomicBool::new(false) }; MAX_HARTS];
/// The PLIC IRQ of the disk's slot, or NONE.
static IRQ: AtomicU32 = AtomicU32::new(NONE);
/// Blocks of BSIZE on the disk.
static NBLOCKS: AtomicU32 = AtomicU32::new(0);

/// Why the disk could not be used.
pub enum InitError {
    NoDevice,
    Driver(virtio_drivers::Error),
}

/// Hart 0, once, after paging is on: finds the first virtio-blk device on the virtio-mmio
/// bus and sets it up. Registers the `virtio_disk` lock.
pub fn init() -> Result<(), InitError> {
    DISK.raw().id();
    for slot in 0..VIRTIO_SLOTS {
        let base = VIRTIO0 + slot * PGSIZE;
        let header = NonNull::new(base as *mut VirtIOHeader).expect("MMIO address is not null");
        // SAFETY: QEMU virt has a virtio-mmio register window at each slot address, mapped by
        // vm::init; nothing else in the kernel touches it.
        let transport = match unsafe { MmioTransport::new(header, MMIO_SIZE) } {
            Ok(t) => t,
            // An empty slot (device id 0) or not a virtio device.
            Err(_) => continue,
        };
        if transport.device_type() != DeviceType::Block {
            continue;
        }
        let blk = VirtIOBlk::<KernelHal, _>::new(transport).map_err(InitError::Driver)?;
        let sectors_per_block = (BSIZE / SECTOR_SIZE) as u64;
        NBLOCKS.store(
            (blk.capacity() / sectors_per_block).min(u32::MAX as u64) as u32,
            Ordering::Relaxed,
        );
        DISK.lock().blk = Some(blk);
        IRQ.store(VIRTIO0_IRQ + slot as u32, Ordering::Release);
        return Ok(());
    }
    Err(InitError::NoDevice)
}

pub fn present() -> bool {
    IRQ.load(Ordering::Acquire) != NONE
}

/// Blocks of [`BSIZE`] bytes on the disk.
pub fn nblocks() -> u32 {
    NBLOCKS.load(Ordering::Relaxed)
}

/// The disk's PLIC IRQ, if there is a disk.
pub fn irq() -> Option<u32> {
    let irq = IRQ.load(Ordering::Acquire);
    (irq != NONE).then_some(irq)
}

/// Reads block `blockno` into `data`. The caller must hold no spinlock (interrupts on).
pub fn read(blockno: u32, data: &mut [u8; BSIZE]) {
    rw(blockno, data.as_mut_ptr(), false);
}

/// Writes `data` to block `blockno`. The caller must hold no spinlock (interrupts on).
pub fn write(blockno: u32, data: &[u8; BSIZE]) {
    rw(blockno, data.as_ptr() as *mut u8, true);
}

fn rw(blockno: u32, data: *mut u8, write: bool) {
    assert!(
        hart::intr_get(),
        "virtio_disk: waiting for the disk with interrupts off (a spinlock is held) would never end"
    );
    let me = hart::id();
    let sector = blockno as usize * (BSIZE / SECTOR_SIZE);
    DONE[me].store(false, Ordering::Relaxed);
    loop {
        let mut d = DISK.lock();
        let d = &mut *d;
        let blk = d.blk.as_mut().expect("virtio_disk: no disk");
        let r = d.slots[me].insert(Request {
            token: 0,
            write,
            data,
            req: BlkReq::default(),
            resp: BlkResp::default(),
            done: false,
            result: Ok(()),
        });
        // SAFETY: `data` is BSIZE bytes owned by this hart, which does not touch them until the
        // interrupt handler marks the request done; `req` and `resp` live in this hart's slot of
        // the static DISK and stay in place until then.
        let submitted = unsafe {
            let buf = core::slice::from_raw_parts_mut(data, BSIZE);
            if write {
                blk.write_blocks_nb(sector, &mut r.req, buf, &mut r.resp)
            } else {
                blk.read_blocks_nb(sector, &mut r.req, buf, &mut r.resp)
            }
        };
        match submitted {
            Ok(token) => {
                r.token = token;
                break;
            }
            Err(virtio_drivers::Error::QueueFull) => {
                // Other harts' requests fill the queue (3 descriptors each): wait for one.
                d.slots[me] = None;
            }
            Err(e) => panic!("virtio_disk: submitting block {blockno}: {e}"),
        }
        // The guard is dropped here; let completions in before trying again.
        core::hint::spin_loop();
    }
    // Spin a little (a request often completes within it, and waking a halted vCPU costs
    // QEMU tens of microseconds), then wait in wfi: spinning vCPUs would take the host's CPUs
    // from QEMU's disk emulation when there are more harts than host cores.
    let spin_until = hart::now() + crate::trap::timebase_hz() * SPIN_US / 1_000_000;
    while !DONE[me].load(Ordering::Acquire) {
        crate::panic::check_halt();
        if hart::now() < spin_until {
            core::hint::spin_loop();
            continue;
        }
        hart::intr_off();
        if !DONE[me].load(Ordering::Acquire) {
            crate::trap::nap(crate::trap::timebase_hz() * NAP_US / 1_000_000);
        }
        hart::intr_on();
    }
    let r = DISK.lock().slots[me]
        .take()
        .expect("virtio_disk: request vanished");
    let ok = matches!(r.result, Ok(())) && r.resp.status() == RespStatus::OK;
    if !ok {
        panic!(
            "virtio_disk: {} of block {blockno} failed: {:?} (status {:?})",
            if write { "write" } else { "read" },
            r.result,
            r.resp.status()
        );
    }
}

/// The disk's interrupt: completes every used request and wakes its hart.
pub fn intr() {
    let mut d = DISK.lock();
    let d = &mut *d;
    let Some(blk) = d.blk.as_mut() else {
        return;
    };
    blk.ack_interrupt();
    while let Some(token) = blk.peek_used() {
        let Some((h, r)) = d.slots.iter_mut().enumerate().find_map(|(h, s)| {
            s.as_mut()
                .filter(|r| !r.done && r.token == token)
                .map(|r| (h, r))
        }) else {
            panic!("virtio_disk: the device completed request {token}, which no hart submitted");
        };
        // SAFETY: the same buffers the request was submitted with (see `rw`); the submitting
        // hart does not touch them until `DONE[h]`.
        r.result = unsafe {
            let buf = core::slice::from_raw_parts_mut(r.data, BSIZE);
            if r.write {
                blk.complete_write_blocks(token, &r.req, buf, &mut r.resp)
            } else {
                blk.complete_read_blocks(token, &r.req, buf, &mut r.resp)
            }
        };
        r.done = true;
        DONE[h].store(true, Ordering::Release);
    }
}
