//! The one panic path: Rust `panic!`, `kerneltrap` and the lock panics all end here.
//!
//! The first hart to panic prints the message and a frame-pointer backtrace, fills the ABI
//! panic record, stops the other harts, and ends in [`lockscope_panic_halt`].

use crate::abi;
use crate::arch;
use crate::bootargs::{self, PanicAction};
use crate::hart;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use lockscope_abi::{
    HartStatus, Outcome, MAX_HARTS, NONE, PANIC_DONE, PANIC_FRAMES, PANIC_MSG_LEN, PANIC_WRITING,
};

/// The hart that panicked first, or [`NONE`]. Other harts stop when they see it set.
static PANICKED: AtomicU32 = AtomicU32::new(NONE);

/// Trap details a hart leaves for the panic handler before `panic!("kerneltrap")`.
struct TrapSlot {
    valid: AtomicU32,
    scause: AtomicU64,
    sepc: AtomicU64,
    stval: AtomicU64,
}

static TRAPS: [TrapSlot; MAX_HARTS] = [const {
    TrapSlot {
        valid: AtomicU32::new(0),
        scause: AtomicU64::new(0),
        sepc: AtomicU64::new(0),
        stval: AtomicU64::new(0),
    }
}; MAX_HARTS];

/// Called by `kerneltrap` just before it panics, so the record carries the trap.
pub fn note_trap(scause: u64, sepc: u64, stval: u64) {
    let t = &TRAPS[hart::id()];
    t.scause.store(scause, Ordering::Relaxed);
    t.sepc.store(sepc, Ordering::Relaxed);
    t.stval.store(stval, Ordering::Relaxed);
    t.valid.store(1, Ordering::Relaxed);
}

pub fn panicking() -> bool {
    PANICKED.load(Ordering::Relaxed) != NONE
}

/// Stops this hart if another hart has panicked. Called from spin loops, the timer interrupt
/// and the workloads. Leaves the hart's held and spin state as it is, for the debugger.
#[inline(always)]
pub fn check_halt() {
    if panicking() {
        halt_stopped();
    }
}

#[cold]
fn halt_stopped() -> ! {
    let me = hart::id();
    if PANICKED.load(Ordering::Relaxed) == me as u32 {
        // We are the panicking hart (a nested call from the panic path): keep going there.
        halt_forever();
    }
    hart::intr_off();
    abi::set_status(me, HartStatus::Halted);
    halt_forever()
}

fn halt_forever() -> ! {
    hart::intr_off();
    loop {
        riscv::asm::wfi();
    }
}

/// Where every panicking hart ends (ABI `PANIC_HALT_SYMBOL`): a debugger breaks here.
#[no_mangle]
#[inline(never)]
pub extern "C" fn lockscope_panic_halt() -> ! {
    hart::intr_off();
    if bootargs::config().panic == PanicAction::Exit {
        crate::exit::fail(lockscope_abi::exit::PANIC);
    }
    loop {
        riscv::asm::wfi();
    }
}

/// Collects a message into a fixed buffer, cutting it at a char boundary when full.
struct MsgBuf {
    buf: [u8; PANIC_MSG_LEN],
    len: usize,
}

impl Write for MsgBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut tmp = [0u8; 4];
            let b = c.encode_utf8(&mut tmp).as_bytes();
            if self.len + b.len() > PANIC_MSG_LEN {
                return Ok(());
            }
            self.buf[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        }
        Ok(())
    }
}

/// Return addresses of a frame-pointer walk from `fp`, kept inside hart `me`'s stack.
fn backtrace(me: usize, mut fp: usize, out: &mut [u64; PANIC_FRAMES]) -> usize {
    let mut n = 0;
    // The walk must move up the stack.
    while n < PANIC_FRAMES {
        let Some((ra, prev)) = arch::frame_record(me, fp) else {
            break;
        };
        if ra == 0 {
            break;
        }
        out[n] = ra;
        n += 1;
        if prev <= fp {
            break;
        }
        fp = prev;
    }
    n
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hart::intr_off();
    let me = hart::id();
    if PANICKED
        .compare_exchange(NONE, me as u32, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        // Another hart got here first, or this hart panicked inside the panic path.
        if PANICKED.load(Ordering::Relaxed) != me as u32 {
            halt_stopped();
        }
        lockscope_panic_halt();
    }
    abi::set_status(me, HartStatus::Panicked);
    crate::console::no_locking();

    let mut msg = MsgBuf {
        buf: [0; PANIC_MSG_LEN],
        len: 0,
    };
    let _ = write!(msg, "{}", info.message());
    let text = core::str::from_utf8(&msg.buf[..msg.len]).unwrap_or("?");
    let trap = &TRAPS[me];
    let from_trap = trap.valid.load(Ordering::Relaxed) != 0;

    let fp = arch::frame_pointer();
    let mut frames = [0u64; PANIC_FRAMES];
    let nframes = backtrace(me, fp, &mut frames);

    println!("panic: {text}");
    if let Some(loc) = info.location() {
        println!("  at {}:{} (hart {me})", loc.file(), loc.line());
    }
    println!("backtrace:");
    for f in &frames[..nframes] {
        println!("{f:#x}");
    }

    // Only the hart that won PANICKED writes the record; readers wait for PANIC_DONE (stored
    // with release) before trusting the other fields.
    let rec = abi::panic_record();
    rec.state().store(PANIC_WRITING, Ordering::Relaxed);
    core::sync::atomic::fence(Ordering::Release);
    let set32 = |f: &AtomicU32, v: u32| f.store(v, Ordering::Relaxed);
    let set64 = |f: &AtomicU64, v: u64| f.store(v, Ordering::Relaxed);
    set32(rec.hart(), me as u32);
    set32(rec.from_trap(), from_trap as u32);
    set32(rec.nframes(), nframes as u32);
    if from_trap {
        let sepc = trap.sepc.load(Ordering::Relaxed);
        set64(rec.scause(), trap.scause.load(Ordering::Relaxed));
        set64(rec.sepc(), sepc);
        set64(rec.stval(), trap.stval.load(Ordering::Relaxed));
        set64(rec.pc(), sepc);
    } else {
        // The return address of the panic handler: inside core's panic machinery, just above
        // the code that panicked (frames[1..] continue from there).
        set64(rec.pc(), frames[0]);
    }
    set64(rec.fp(), fp as u64);
    set64(rec.ts(), hart::now());
    for (f, v) in rec.frames().iter().zip(frames) {
        set64(f, v);
    }
    set32(rec.msg_len(), msg.len as u32);
    abi::store_bytes(rec.msg(), &msg.buf);
    rec.state().store(PANIC_DONE, Ordering::Release);
    abi::set_outcome(Outcome::Panic);

    // Give the other harts a moment to notice (spin loops, timer ticks) and mark themselves
    // Halted, so the record and the hart states agree when a debugger looks.
    let timebase = crate::trap::timebase_hz();
    let t0 = hart::now();
    let nharts = bootargs::config().harts as usize;
    while hart::now().wrapping_sub(t0) < timebase / 5 {
        let all = (0..nharts).filter(|&h| h != me).all(|h| {
            let s = abi::status(h);
            s == HartStatus::Halted as u32
                || s == HartStatus::Offline as u32
                || s == HartStatus::Idle as u32
        });
        if all {
            break;
        }
        core::hint::spin_loop();
    }
    lockscope_panic_halt()
}
