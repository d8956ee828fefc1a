//! Per-hart basics: hart id, interrupt enable nesting (xv6's push_off/pop_off), time, parking.

use crate::abi;
use core::cell::UnsafeCell;
use lockscope_abi::{HartStatus, MAX_HARTS};
use riscv::register::sstatus;

pub use crate::arch::{hart_id as id, now};

pub fn intr_on() {
    // SAFETY: enabling S-mode interrupts; trap handling is set up before any caller runs.
    unsafe { sstatus::set_sie() };
}

pub fn intr_off() {
    // SAFETY: disabling interrupts is always safe.
    unsafe { sstatus::clear_sie() };
}

pub fn intr_get() -> bool {
    sstatus::read().sie()
}

struct Cpu {
    /// Depth of push_off nesting.
    noff: u32,
    /// Were interrupts enabled before the outermost push_off?
    intena: bool,
}

struct Cpus(UnsafeCell<[Cpu; MAX_HARTS]>);
// SAFETY: each hart touches only its own entry, with interrupts off.
unsafe impl Sync for Cpus {}

static CPUS: Cpus = Cpus(UnsafeCell::new(
    [const {
        Cpu {
            noff: 0,
            intena: false,
        }
    }; MAX_HARTS],
));

/// Disables interrupts, nesting: interrupts stay off until the matching number of `pop_off`s.
pub fn push_off() {
    let old = intr_get();
    intr_off();
    let id = id();
    // SAFETY: interrupts are off and the entry belongs to this hart.
    let c = unsafe { &mut (*CPUS.0.get())[id] };
    if c.noff == 0 {
        c.intena = old;
    }
    c.noff += 1;
    abi::set_noff(id, c.noff);
}

pub fn pop_off() {
    assert!(!intr_get(), "pop_off - interruptible");
    let id = id();
    // SAFETY: interrupts are off and the entry belongs to this hart.
    let c = unsafe { &mut (*CPUS.0.get())[id] };
    assert!(c.noff >= 1, "pop_off");
    c.noff -= 1;
    abi::set_noff(id, c.noff);
    if c.noff == 0 && c.intena {
        intr_on();
    }
}

/// Interrupts off, waiting forever; used by harts not asked to run (`harts=N`).
pub fn park() -> ! {
    intr_off();
    loop {
        riscv::asm::wfi();
    }
}

/// Done with the workload: take timer interrupts (which bump the heartbeat) forever.
pub fn idle() -> ! {
    abi::set_status(id(), HartStatus::Idle);
    intr_on();
    loop {
        riscv::asm::wfi();
    }
}
