# QEMU virt with -bios none starts every hart here in M-mode with
# a0 = mhartid and a1 = the device tree address.
# Stack size per hart is 1 << STACK_SHIFT; must match STACK_SIZE in src/layout.rs and kernel.ld.
.equ STACK_SHIFT, 16
.equ MAX_HARTS, 8

    .section .text.entry
    .globl _entry
_entry:
    li t0, MAX_HARTS
    bgeu a0, t0, park
    # sp = boot_stack + (hartid + 1) * STACK_SIZE
    la sp, boot_stack
    addi t1, a0, 1
    slli t0, t1, STACK_SHIFT
    add sp, sp, t0
    # A zero frame pointer ends every backtrace.
    li s0, 0
    bnez a0, wait_bss

    # Hart 0 clears .bss: with a shared RAM file, RAM may hold a previous run's data.
    la t0, bss_start
    la t1, bss_end
1:  bgeu t0, t1, 2f
    sd zero, 0(t0)
    addi t0, t0, 8
    j 1b
2:  fence rw, rw
    la t0, bss_cleared
    li t1, 1
    sw t1, 0(t0)
    j 4f

wait_bss:
    la t0, bss_cleared
3:  lw t1, 0(t0)
    beqz t1, 3b
    fence rw, rw
4:  call start

park:
    wfi
    j park

    # In .data, so the ELF loader resets it on every boot.
    .section .data
    .balign 4
bss_cleared:
    .word 0
