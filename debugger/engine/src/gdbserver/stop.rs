//! One saved stop of the guest: what the post-mortem server serves and a core file holds.

use std::ops::Range;

use crate::feed::StopInfo;
use crate::gdb::{GdbClient, HartRegisters, ThreadId};
use crate::memory::GuestMemory;
use crate::model::FullRegs;

/// CSRs saved at a stop besides the trap CSRs: enough to translate kernel addresses (satp),
/// see the trap state and the interrupt setup.
pub const SAVED_CSRS: &[(&str, u16)] = &[
    ("sstatus", 0x100),
    ("sie", 0x104),
    ("stvec", 0x105),
    ("sscratch", 0x140),
    ("sepc", 0x141),
    ("scause", 0x142),
    ("stval", 0x143),
    ("sip", 0x144),
    ("satp", 0x180),
    ("mstatus", 0x300),
    ("mepc", 0x341),
    ("mcause", 0x342),
    ("mtval", 0x343),
    ("mhartid", 0xf14),
];

/// The registers [`GdbClient::read_hart_registers`] read, plus the CSRs of [`SAVED_CSRS`]
/// (one `p` each; a CSR the stub does not have is left out).
pub fn full_registers(client: &mut GdbClient, thread: ThreadId, r: &HartRegisters) -> FullRegs {
    let mut csrs = Vec::with_capacity(SAVED_CSRS.len());
    for &(name, number) in SAVED_CSRS {
        let known = match number {
            0x141 => r.sepc,
            0x142 => r.scause,
            0x143 => r.stval,
            0x180 => r.satp,
            _ => None,
        };
        let value = match known {
            Some(v) => Some(v),
            None if client.register_number(name).is_some() => {
                client.read_register(thread, name).ok()
            }
            None => None,
        };
        if let Some(v) = value {
            csrs.push((number, v));
        }
    }
    FullRegs {
        x: r.core.x.to_vec(),
        pc: r.core.pc,
        privilege: r.privilege,
        csrs,
    }
}

/// One hart at the stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedHart {
    /// The hart id (QEMU's CPU index on `virt`): gdb shows it as thread `1.(hart+1)`.
    pub hart: u32,
    pub regs: FullRegs,
}

/// A stop to look at after the fact: every hart's registers and the guest's RAM.
pub struct PostMortemStop {
    pub harts: Vec<SavedHart>,
    /// The hart the stop is about (the panicking or deadlocked one): gdb selects it first.
    pub focus: Option<u32>,
    /// Guest physical RAM, as saved.
    pub ram: Box<dyn GuestMemory + Send>,
    /// The physical range `ram` covers.
    pub ram_range: Range<u64>,
    /// Why the guest stopped, for `info threads` ("panic", "deadlock", ...).
    pub reason: String,
}

impl PostMortemStop {
    /// A stop from a recording: the harts that carry every register (`HartStop::full`).
    /// Recordings made before full registers were captured have none: `None`.
    pub fn from_stop_info(
        info: &StopInfo,
        ram: Box<dyn GuestMemory + Send>,
        ram_range: Range<u64>,
    ) -> Option<Self> {
        let harts: Vec<SavedHart> = info
            .harts
            .iter()
            .filter_map(|h| h.full.clone().map(|regs| SavedHart { hart: h.hart, regs }))
            .collect();
        if harts.is_empty() {
            return None;
        }
        Some(Self {
            harts,
            focus: info.hart,
            ram,
            ram_range,
            reason: format!("{:?}", info.reason).to_lowercase(),
        })
    }

    pub fn hart(&self, hart: u32) -> Option<&SavedHart> {
        self.harts.iter().find(|h| h.hart == hart)
    }

    /// Harts in the order gdb learns them: the focus first.
    pub fn ordered(&self) -> Vec<&SavedHart> {
        let mut v: Vec<&SavedHart> = self.harts.iter().collect();
        v.sort_by_key(|h| (Some(h.hart) != self.focus, h.hart));
        v
    }
}

/// Captures the stop a stopped guest is at: every hart's registers through `client`, and the
/// RAM the caller saved (e.g. a copy of the shared-RAM file).
pub fn capture_stop(
    client: &mut GdbClient,
    ram: Box<dyn GuestMemory + Send>,
    ram_range: Range<u64>,
    reason: &str,
) -> Result<PostMortemStop, crate::gdb::GdbError> {
    let mut harts = Vec::new();
    for t in client.known_threads().to_vec() {
        let Some(hart) = t.cpu_index() else { continue };
        let r = client.read_hart_registers(t)?;
        harts.push(SavedHart {
            hart,
            regs: full_registers(client, t, &r),
        });
    }
    let focus = client
        .last_stop()
        .and_then(|s| s.thread.or(s.at_breakpoints.first().map(|(t, _)| *t)))
        .and_then(|t| t.cpu_index());
    Ok(PostMortemStop {
        harts,
        focus,
        ram,
        ram_range,
        reason: reason.to_string(),
    })
}
