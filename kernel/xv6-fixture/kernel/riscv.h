// Access to RISC-V control registers and page-table bits.

// CSRs by name, or by number for those the assembler may not know (stimecmp, menvcfg). The
// extra level of macros expands CSR_* names into their numbers before they are stringified.
#define STR_(x) #x
#define csr_read(csr) ({ uint64 v__; asm volatile("csrr %0, " STR_(csr) : "=r"(v__)); v__; })
#define csr_write(csr, val) asm volatile("csrw " STR_(csr) ", %0" : : "r"((uint64)(val)))
#define csr_set(csr, val) asm volatile("csrs " STR_(csr) ", %0" : : "r"((uint64)(val)))
#define csr_clear(csr, val) asm volatile("csrc " STR_(csr) ", %0" : : "r"((uint64)(val)))

#define CSR_STIMECMP 0x14d
#define CSR_MENVCFG 0x30a

#define MSTATUS_MPP_MASK (3L << 11)
#define MSTATUS_MPP_S (1L << 11)

#define SSTATUS_SPP (1L << 8) // trap came from supervisor mode
#define SSTATUS_SIE (1L << 1) // supervisor interrupts enabled

#define SIE_SEIE (1L << 9) // external
#define SIE_STIE (1L << 5) // timer
#define SIE_SSIE (1L << 1) // software
#define MIE_STIE (1L << 5)

#define SCAUSE_TIMER 0x8000000000000005L
#define SCAUSE_EXTERNAL 0x8000000000000009L

static inline uint64 r_tp(void)
{
  uint64 x;
  asm volatile("mv %0, tp" : "=r"(x));
  return x;
}

static inline uint64 r_time(void)
{
  uint64 x;
  asm volatile("csrr %0, time" : "=r"(x));
  return x;
}

static inline void intr_on(void) { csr_set(sstatus, SSTATUS_SIE); }
static inline void intr_off(void) { csr_clear(sstatus, SSTATUS_SIE); }
static inline int intr_get(void) { return (csr_read(sstatus) & SSTATUS_SIE) != 0; }

static inline void sfence_vma(void) { asm volatile("sfence.vma zero, zero"); }

// Sv39 page tables.
#define PTE_V (1L << 0)
#define PTE_R (1L << 1)
#define PTE_W (1L << 2)
#define PTE_X (1L << 3)
#define PTE_U (1L << 4)

#define PA2PTE(pa) ((((uint64)(pa)) >> 12) << 10)
#define PTE2PA(pte) (((pte) >> 10) << 12)
#define PXSHIFT(level) (12 + 9 * (level))
#define PX(level, va) ((((uint64)(va)) >> PXSHIFT(level)) & 0x1ff)
#define SATP_SV39 (8L << 60)
#define MAKE_SATP(pt) (SATP_SV39 | (((uint64)(pt)) >> 12))

#define PGROUNDUP(a) (((a) + PGSIZE - 1) & ~(uint64)(PGSIZE - 1))
#define PGROUNDDOWN(a) ((a) & ~(uint64)(PGSIZE - 1))
