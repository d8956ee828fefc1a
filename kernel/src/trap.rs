//! S-mode traps: timer and device interrupts, and the `kerneltrap` panic for everything else.

use crate::abi;
use crate::arch;
use crate::hart;
use crate::spinlock::SpinLock;
use core::sync::atomic::{AtomicU64, Ordering};
use riscv::register::{scause, sepc, sie, sstatus, stval, stvec};

pub static TICKSLOCK: SpinLock<()> = SpinLock::new("tickslock", "tickslock", ());

/// Timer interrupts per second on every hart.
pub const TICK_HZ: u64 = 100;

static TIMEBASE_HZ: AtomicU64 = AtomicU64::new(10_000_000);
/// When each hart's next 100 Hz tick is due (`time` CSR); [`nap`] may program an earlier
/// timer interrupt, which is then not a tick.
static NEXT_TICK: [AtomicU64; lockscope_abi::MAX_HARTS] =
    [const { AtomicU64::new(0) }; lockscope_abi::MAX_HARTS];

pub fn timebase_hz() -> u64 {
    TIMEBASE_HZ.load(Ordering::Relaxed)
}

extern "C" {
    fn kernelvec();
}

/// Hart 0, once.
pub fn init(timebase: u64) {
    TIMEBASE_HZ.store(timebase, Ordering::Relaxed);
}

/// Every hart: install the trap vector and enable timer and external interrupts.
pub fn init_hart() {
    // SAFETY: kernelvec is the 4-byte aligned trap entry in asm/kernelvec.S.
    unsafe {
        stvec::write(stvec::Stvec::new(
            kernelvec as *const () as usize,
            stvec::TrapMode::Direct,
        ))
    };
    // SAFETY: enabling interrupt sources; sstatus.SIE still gates them.
    unsafe {
        sie::set_stimer();
        sie::set_sext();
    }
    set_next_timer();
}

/// Interval between timer interrupts, in timebase ticks.
fn interval() -> u64 {
    timebase_hz() / TICK_HZ
}

fn set_next_timer() {
    let next = hart::now() + interval();
    NEXT_TICK[hart::id()].store(next, Ordering::Relaxed);
    arch::set_timer(next);
}

/// Sleeps in `wfi` until an interrupt, or for at most `max` timebase ticks. For a hart waiting
/// on something another hart's interrupt handler may finish (the disk): the host gets the CPU
/// back instead of a spinning vCPU, and the timeout bounds the wait when that handler ran on
/// another hart and nothing wakes this one. Call with interrupts off (after checking the
/// condition); returns with them off, so the caller enables them to take what woke it.
pub fn nap(max: u64) {
    let h = hart::id();
    let wake = (hart::now() + max).min(NEXT_TICK[h].load(Ordering::Relaxed));
    arch::set_timer(wake);
    riscv::asm::wfi();
}

const INTR_SOFTWARE: usize = 1;
const INTR_TIMER: usize = 5;
const INTR_EXTERNAL: usize = 9;

/// Called from kernelvec on the current kernel stack.
#[no_mangle]
extern "C" fn kerneltrap() {
    let sepc_v = sepc::read();
    let sstatus_v = sstatus::read();
    let cause = scause::read();
    assert!(
        sstatus_v.spp() == sstatus::SPP::Supervisor,
        "kerneltrap: not from supervisor mode"
    );
    assert!(!hart::intr_get(), "kerneltrap: interrupts enabled");
    if cause.is_interrupt() {
        match cause.code() {
            INTR_TIMER => clock_intr(),
            INTR_EXTERNAL => crate::plic::dev_intr(),
            INTR_SOFTWARE => arch::clear_soft_interrupt(),
            _ => unexpected(cause.bits(), sepc_v, stval::read()),
        }
    } else {
        unexpected(cause.bits(), sepc_v, stval::read());
    }
    // The handlers may have changed sepc/sstatus through nested use of the CSRs: restore them.
    // SAFETY: restores the values read on entry.
    unsafe {
        sepc::write(sepc_v);
        sstatus::write(sstatus_v);
    }
}

#[cold]
fn unexpected(cause: usize, sepc: usize, stval: usize) -> ! {
    println!("scause {cause:#x} sepc={sepc:#x} stval={stval:#x}");
    crate::panic::note_trap(cause as u64, sepc as u64, stval as u64);
    panic!("kerneltrap");
}

fn clock_intr() {
    crate::panic::check_halt();
    let me = hart::id();
    let due = NEXT_TICK[me].load(Ordering::Relaxed);
    if hart::now() < due {
        // An early wake-up from `nap`, not a tick.
        arch::set_timer(due);
        return;
    }
    if me == 0 {
        let _g = TICKSLOCK.lock();
        // Only this handler writes it, under tickslock.
        let t = abi::ticks();
        t.store(t.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    if abi::status(me) == lockscope_abi::HartStatus::Idle as u32 {
        abi::heartbeat(me);
    }
    set_next_timer();
}
