//! lockscope-kernel: an RV64 teaching kernel for QEMU `virt`, after xv6, with the subsystems of
//! the 6.1810 locks lab and spinlocks that record what they do for the lockscope debugger.
//!
//! One kernel thread per hart, no processes: each hart runs the workload directly in S-mode.
#![no_std]
#![no_main]

#[macro_use]
pub mod console;
pub mod abi;
pub mod arch;
pub mod barrier;
pub mod bcachetest;
pub mod bio;
pub mod bootargs;
pub mod bugs;
pub mod demo;
pub mod exit;
pub mod fdt;
pub mod hart;
pub mod kalloc;
pub mod kalloctest;
pub mod layout;
pub mod panic;
pub mod plic;
pub mod spinlock;
pub mod start;
pub mod stats;
pub mod trap;
pub mod uart;
pub mod virtio_disk;
pub mod vm;

use core::sync::atomic::{AtomicBool, Ordering};

/// Set by hart 0 once everything is initialized and the ABI root is ready.
static STARTED: AtomicBool = AtomicBool::new(false);

/// S-mode entry of every hart (reached by `mret` from [`start::start`]).
#[no_mangle]
extern "C" fn main() -> ! {
    let id = hart::id();
    if id == 0 {
        boot_hart();
    } else {
        while !STARTED.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        let cfg = bootargs::config();
        if id >= cfg.harts as usize {
            hart::park();
        }
        abi::set_status(id, lockscope_abi::HartStatus::Booting);
        vm::init_hart();
        trap::init_hart();
        plic::init_hart();
    }
    run()
}

fn boot_hart() {
    // Hart 0, before any other hart leaves its wait loop.
    abi::init_identity();
    abi::set_status(0, lockscope_abi::HartStatus::Booting);
    uart::init();
    let info = fdt::read();
    console::init();
    let cfg = match bootargs::parse(info.bootargs()) {
        Ok(cfg) => cfg,
        Err(e) => {
            println!("{e}");
            bootargs::print_usage();
            exit::fail(lockscope_abi::exit::BOOTARGS);
        }
    };
    let harts = cfg.harts.min(info.nharts);
    bootargs::set_config(bootargs::Config { harts, ..cfg });
    let cfg = bootargs::config();
    bugs::init(&cfg);
    println!(
        "lockscope-kernel: {} of {} harts, {} MiB RAM, bootargs \"{}\"",
        harts,
        info.nharts,
        info.ram_size >> 20,
        info.bootargs()
    );
    spinlock::register_static_locks();
    kalloc::init(cfg.kalloc, harts as usize, info.free_end());
    vm::init(info.ram_base + info.ram_size);
    vm::init_hart();
    trap::init(info.timebase_hz);
    trap::init_hart();
    plic::init();
    plic::init_hart();
    init_disk(&cfg);
    // Hart 0, once, after the lock table and allocator exist and before other harts run.
    abi::publish(&info, &cfg);
    STARTED.store(true, Ordering::Release);
}

/// The disk and, when there is one, the buffer cache (before the ABI root is published).
fn init_disk(cfg: &bootargs::Config) {
    use lockscope_abi::disk::NBLOCKS;
    match virtio_disk::init() {
        Ok(()) if virtio_disk::nblocks() >= NBLOCKS => bio::init(cfg.bcache),
        Ok(()) => println!(
            "virtio_disk: the disk has {} blocks, a lockscope image has {NBLOCKS}; no buffer cache",
            virtio_disk::nblocks()
        ),
        Err(virtio_disk::InitError::NoDevice) => {}
        Err(virtio_disk::InitError::Driver(e)) => {
            println!("virtio_disk: {e}; no buffer cache")
        }
    }
}

/// The per-hart kernel thread: the workload, then idle.
fn run() -> ! {
    let cfg = bootargs::config();
    hart::intr_on();
    abi::set_status(hart::id(), lockscope_abi::HartStatus::Running);
    use lockscope_abi::Workload;
    if bugs::before_workload(&cfg) {
        hart::idle();
    }
    if hart::id() == 0 && !bugs::exercised_by(cfg.bug, cfg.workload) {
        println!(
            "note: bug={} changes code that workload={} does not run",
            cfg.bug.as_str(),
            cfg.workload.as_str()
        );
    }
    let w = cfg.workload;
    if w.needs_disk() && !bio::ready() {
        if hart::id() == 0 {
            println!(
                "workload={} needs the disk: attach target/kernel/disk.img (made by `cargo xtask build`; `cargo xtask qemu` attaches it), by hand: -global virtio-mmio.force-legacy=false -drive file=target/kernel/disk.img,if=none,format=raw,id=x0 -device virtio-blk-device,drive=x0,bus=virtio-mmio-bus.0",
                w.as_str()
            );
            exit::fail(lockscope_abi::exit::BOOTARGS);
        }
        hart::idle()
    }
    match w {
        Workload::Kalloctest => kalloctest::run(),
        Workload::Idle => {}
        Workload::Bcachetest => bcachetest::run(),
        Workload::Mixed => bcachetest::mixed(),
        Workload::Demo => demo::run(),
    }
    hart::idle()
}
