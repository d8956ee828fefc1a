//! The RISC-V registers the kernel touches by hand, in one place: CSRs (through the `riscv`
//! crate where it has the register), the frame pointer, `tp`, and the jump from M-mode into
//! S-mode. Inline asm lives here and in `asm/*.S`, nowhere else.
//!
//! `riscv` 0.16 has no `menvcfg` nor `stimecmp` (Sstc); those two are written by number here.

use riscv::register::{
    medeleg, mepc, mideleg, mie, mstatus, pmpaddr0, pmpcfg0, satp, sip, time, Permission, Range,
};

// `_entry` (every hart's first instructions) and `kernelvec` (the S-mode trap vector).
core::arch::global_asm!(include_str!("asm/entry.S"));
core::arch::global_asm!(include_str!("asm/kernelvec.S"));

/// `menvcfg` (M-mode environment configuration), not in the `riscv` crate.
const MENVCFG: usize = 0x30a;
/// `stimecmp` (Sstc's S-mode timer compare), not in the `riscv` crate.
const STIMECMP: usize = 0x14d;
/// Sstc enable bit in `menvcfg`: lets S-mode program its own timer through `stimecmp`.
const MENVCFG_STCE: u64 = 1 << 63;

// ---- M-mode, once per hart, from `start` (xv6's start.c) ----

/// M-mode configuration before the hart ever runs S-mode code: `mret` will enter `s_entry` in
/// S-mode with paging off, every exception and interrupt delegated to S-mode, all of physical
/// memory open to it, and its timer (Sstc) and `time` counter usable. Returns whether the CPU
/// has Sstc (`menvcfg.STCE` stuck); without it there are no S-mode timer interrupts.
///
/// # Safety
/// M-mode only, on the boot path of the calling hart, before it leaves M-mode.
pub unsafe fn machine_setup(s_entry: usize) -> bool {
    // SAFETY: the caller's contract: reconfiguring this hart's M-mode state is what the boot
    // path is for, and nothing runs in S-mode yet.
    unsafe {
        mstatus::set_mpp(mstatus::MPP::Supervisor);
        mepc::write(s_entry);
        // No paging until vm::init_hart.
        satp::set(satp::Mode::Bare, 0, 0);
        // Every exception and interrupt the registers can delegate goes to S-mode.
        medeleg::write(medeleg::Medeleg::from_bits(usize::MAX));
        mideleg::set_ssoft();
        mideleg::set_stimer();
        mideleg::set_sext();
        // S-mode may access all of physical memory: one TOR region up to the top.
        pmpaddr0::write(0x3f_ffff_ffff_ffff);
        pmpcfg0::set_pmp(0, Range::TOR, Permission::RWX, false);
        // Timer: S-mode timer interrupts, stimecmp through menvcfg.STCE (Sstc, QEMU >= 7.0), and
        // reading `time` from S-mode through mcounteren.TM.
        mie::set_stimer();
        core::arch::asm!("csrs {csr}, {v}", csr = const MENVCFG, v = in(reg) MENVCFG_STCE);
        riscv::register::mcounteren::set_tm();
    }
    let menvcfg: u64;
    // SAFETY: reads a CSR; no side effects.
    unsafe { core::arch::asm!("csrr {}, {csr}", out(reg) menvcfg, csr = const MENVCFG) };
    let sstc = menvcfg & MENVCFG_STCE != 0;
    if sstc {
        // Far in the future until trap::init_hart arms it.
        set_timer(u64::MAX);
    }
    sstc
}

/// Enters S-mode at the `s_entry` given to [`machine_setup`], on a fresh stack with `ra` and
/// `fp` zero so backtraces end there.
///
/// # Safety
/// M-mode, after [`machine_setup`]; `stack_top` is the top of this hart's own stack.
pub unsafe fn enter_supervisor(stack_top: usize) -> ! {
    // SAFETY: the caller's contract: mstatus.MPP and mepc are set, and the stack is ours.
    unsafe {
        core::arch::asm!(
            "mv sp, {top}",
            "li ra, 0",
            "li s0, 0",
            "mret",
            top = in(reg) stack_top,
            options(noreturn)
        )
    }
}

// ---- the hart id in `tp` ----

/// Keeps the hart id in `tp` for [`hart_id`] (which `kernelvec` never restores).
///
/// # Safety
/// Once per hart, in `start`, with the hart's own `mhartid`.
pub unsafe fn set_hart_id(id: usize) {
    // SAFETY: the caller's contract; nothing else uses `tp`.
    unsafe { core::arch::asm!("mv tp, {}", in(reg) id) };
}

/// This hart's id, kept in `tp` since M-mode start.
#[inline(always)]
pub fn hart_id() -> usize {
    let tp: usize;
    // SAFETY: reads a register; `tp` holds the hart id for the kernel's whole life.
    unsafe { core::arch::asm!("mv {}, tp", out(reg) tp) };
    tp
}

// ---- S-mode ----

/// The `time` CSR: ticks at the device tree's timebase-frequency (10 MHz on QEMU virt).
#[inline(always)]
pub fn now() -> u64 {
    time::read() as u64
}

/// Programs this hart's next timer interrupt (Sstc's `stimecmp`, enabled by
/// [`machine_setup`]).
pub fn set_timer(at: u64) {
    // SAFETY: writing stimecmp only schedules this hart's timer interrupt.
    unsafe { core::arch::asm!("csrw {csr}, {}", in(reg) at, csr = const STIMECMP) };
}

/// Acknowledges a supervisor software interrupt.
pub fn clear_soft_interrupt() {
    // SAFETY: clears this hart's own pending SSIP bit, which S-mode may write.
    unsafe { sip::clear_ssoft() };
}

/// Turns on Sv39 paging with the page table at physical page `root_ppn`.
///
/// # Safety
/// The table must map the running code, its stack and every device and datum the kernel uses
/// at the addresses it uses them (a direct map).
pub unsafe fn enable_paging(root_ppn: usize) {
    riscv::asm::sfence_vma_all();
    // SAFETY: the caller's contract.
    unsafe { satp::set(satp::Mode::Sv39, 0, root_ppn) };
    riscv::asm::sfence_vma_all();
}

// ---- frame records (`-C force-frame-pointers=yes`) ----

/// The frame pointer (`s0`) of the function this is inlined into.
#[inline(always)]
pub fn frame_pointer() -> usize {
    let fp: usize;
    // SAFETY: reads a register.
    unsafe { core::arch::asm!("mv {}, s0", out(reg) fp) };
    fp
}

/// The return address of the function this is inlined into, from its frame record: with frame
/// pointers forced, every function that makes calls saves `ra` at `fp - 8`.
#[inline(always)]
pub fn caller_pc() -> u64 {
    let fp = frame_pointer();
    // SAFETY: fp - 8 is the `ra` slot of the enclosing function's own frame record, inside its
    // stack frame (the caller must not be a leaf function without a frame).
    unsafe { *((fp - 8) as *const u64) }
}

/// One frame record of hart `me`'s stack: the return address at `fp - 8` and the caller's
/// frame pointer at `fp - 16`, or `None` if `fp` is misaligned or the record would lie outside
/// the stack (a corrupt or foreign frame pointer is never followed).
pub fn frame_record(me: usize, fp: usize) -> Option<(u64, usize)> {
    let (lo, hi) = crate::layout::stack_bounds(me);
    if !fp.is_multiple_of(8) || fp < lo + 16 || fp > hi {
        return None;
    }
    // SAFETY: fp-16..fp lies inside hart `me`'s stack (checked above), mapped RAM.
    Some(unsafe { (*((fp - 8) as *const u64), *((fp - 16) as *const usize)) })
}
