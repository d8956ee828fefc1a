# QEMU starts every hart here, in machine mode, at 0x80000000 (kernel.ld puts .text.entry
# first). Give each hart its own 4 KiB slice of stack0 and go to start() in C.
#include "param.h"

.section .text.entry
.globl _entry
_entry:
        csrr t0, mhartid
        li t1, NCPU
        bgeu t0, t1, park       # harts beyond NCPU have no cpus[] slot
        addi t0, t0, 1
        slli t0, t0, 12         # (hartid + 1) * 4096: the top of this hart's slice
        la sp, stack0
        add sp, sp, t0
        call start
park:
        wfi
        j park
