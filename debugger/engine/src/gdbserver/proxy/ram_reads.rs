//! Memory reads (`m`) the proxy answers from the shared guest RAM file while the guest is
//! stopped, instead of relaying them to QEMU: a read through the relay costs two more process
//! wake-ups than one straight to QEMU, and gdb reads in packets of at most 2 KiB.
//!
//! Only what QEMU would answer the same way is served here: the hart `Hg` selected in S or U
//! mode, paging off or Sv39, every page of the range in RAM and readable in that mode with its
//! accessed bit set (QEMU's debug walk would set it). Anything else (M mode, whose `MPRV` changes
//! the translation; MMIO; an unmapped page; a page QEMU would mark accessed; a length QEMU
//! refuses) goes to QEMU as before. Each hart's `priv` and `satp` are read once per stop, by
//! their numbers in QEMU's own target description.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::gdb::hex::hex_encode;
use crate::gdbserver::sv39::{self, PAGE};
use crate::memory::{GuestMemory, SharedRam};

/// QEMU 7.2 answers `m` with `E22` beyond this many bytes.
const MAX_READ: usize = 2048;
const PTE_R: u64 = 1 << 1;
const PTE_U: u64 = 1 << 4;
const PTE_A: u64 = 1 << 6;
const PRV_U: u64 = 0;
const PRV_S: u64 = 1;

/// Where the guest's RAM file is.
#[derive(Clone, Debug)]
pub struct RamFile {
    pub path: PathBuf,
    /// The guest physical address of its first byte.
    pub base: u64,
}

/// How one hart translates, as far as read so far this stop.
#[derive(Clone, Copy, Debug, Default)]
struct Space {
    privilege: Option<Option<u64>>,
    satp: Option<Option<u64>>,
}

/// What serving a read needs first.
#[derive(Debug, PartialEq, Eq)]
pub enum Need {
    /// Read this register of the selected hart (`p<n>`) and report it with `learned`.
    Register(u32),
    /// Serve it: the reply payload.
    Reply(Vec<u8>),
    /// Relay it to QEMU.
    Relay,
}

pub struct RamReads {
    file: RamFile,
    /// Mapped at the first read (QEMU may create the file after the proxy starts).
    ram: Option<SharedRam>,
    priv_reg: u32,
    satp_reg: u32,
    spaces: HashMap<Vec<u8>, Space>,
}

/// `m ADDR,LEN` in hex.
pub fn parse_read(p: &[u8]) -> Option<(u64, usize)> {
    let rest = p.strip_prefix(b"m")?;
    let comma = rest.iter().position(|&b| b == b',')?;
    let hex = |b: &[u8]| {
        if b.is_empty() || b.len() > 16 {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
    };
    let addr = hex(&rest[..comma])?;
    let len = usize::try_from(hex(&rest[comma + 1..])?).ok()?;
    Some((addr, len))
}

impl RamReads {
    pub fn new(file: RamFile, (priv_reg, satp_reg): (u32, u32)) -> Self {
        Self {
            file,
            ram: None,
            priv_reg,
            satp_reg,
            spaces: HashMap::new(),
        }
    }

    /// The guest ran, or a register was written: every hart's mode and `satp` are read again.
    pub fn forget(&mut self) {
        self.spaces.clear();
    }

    /// A register read for `thread` came back (`None`: QEMU refused it).
    pub fn learned(&mut self, thread: &[u8], reg: u32, reply: &[u8]) {
        let value = register_value(reply);
        let s = self.spaces.entry(thread.to_vec()).or_default();
        if reg == self.priv_reg {
            s.privilege = Some(value);
        } else if reg == self.satp_reg {
            s.satp = Some(value);
        }
    }

    /// What reading `len` bytes at `addr` through `thread` (the hart `Hg` selected) needs.
    pub fn read(&mut self, thread: &[u8], addr: u64, len: usize) -> Need {
        if len == 0 || len > MAX_READ {
            return Need::Relay;
        }
        let s = self.spaces.get(thread).copied().unwrap_or_default();
        let Some(privilege) = s.privilege else {
            return Need::Register(self.priv_reg);
        };
        let privilege = match privilege {
            Some(p @ (PRV_U | PRV_S)) => p,
            _ => return Need::Relay,
        };
        let Some(satp) = s.satp else {
            return Need::Register(self.satp_reg);
        };
        let Some(satp) = satp else {
            return Need::Relay;
        };
        if self.ram.is_none() {
            match SharedRam::open(&self.file.path, self.file.base) {
                Ok(r) => self.ram = Some(r),
                Err(_) => return Need::Relay,
            }
        }
        let Some(ram) = self.ram.as_mut() else {
            return Need::Relay;
        };
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let va = addr.wrapping_add(done as u64);
            let n = ((PAGE - va % PAGE) as usize).min(len - done);
            let pa = match satp >> 60 {
                0 => va,
                8 => match sv39::leaf(ram, satp, va) {
                    Ok((pa, pte)) if readable(pte, privilege) => pa,
                    _ => return Need::Relay,
                },
                _ => return Need::Relay,
            };
            if ram.read(pa, &mut buf[done..done + n]).is_err() {
                return Need::Relay;
            }
            done += n;
        }
        Need::Reply(hex_encode(&buf).into_bytes())
    }
}

/// Readable in `privilege` the way QEMU's debug walk sees it, without it setting a bit.
fn readable(pte: u64, privilege: u64) -> bool {
    let user = pte & PTE_U != 0;
    // S mode reading a U page depends on sstatus.SUM: QEMU decides those.
    pte & PTE_R != 0 && pte & PTE_A != 0 && (user == (privilege == PRV_U))
}

/// A `p` reply: the register's bytes in target (little-endian) order, at most 8.
fn register_value(reply: &[u8]) -> Option<u64> {
    if reply.is_empty() || reply.len() > 16 || !reply.len().is_multiple_of(2) {
        return None;
    }
    let mut b = [0u8; 8];
    crate::gdb::hex::hex_decode_into(reply, &mut b[..reply.len() / 2]).ok()?;
    Some(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_register_replies_parse() {
        assert_eq!(parse_read(b"m80000000,800"), Some((0x8000_0000, 0x800)));
        assert_eq!(parse_read(b"m0,1"), Some((0, 1)));
        assert_eq!(parse_read(b"m,1"), None);
        assert_eq!(parse_read(b"m1"), None);
        assert_eq!(parse_read(b"M0,1:00"), None);
        assert_eq!(parse_read(b"m11111111111111111,1"), None);
        assert_eq!(register_value(b"0100000000000000"), Some(1));
        assert_eq!(register_value(b"0080"), Some(0x8000));
        assert_eq!(register_value(b"E14"), None);
        assert_eq!(register_value(b""), None);
    }

    #[test]
    fn only_pages_qemu_reads_the_same_are_readable() {
        let v = 1u64;
        assert!(readable(v | PTE_R | PTE_A, PRV_S));
        assert!(!readable(v | PTE_R, PRV_S), "QEMU would set A");
        assert!(!readable(v | PTE_R | PTE_A | PTE_U, PRV_S), "SUM decides");
        assert!(readable(v | PTE_R | PTE_A | PTE_U, PRV_U));
        assert!(!readable(v | PTE_R | PTE_A, PRV_U));
        assert!(!readable(v | PTE_A | (1 << 3), PRV_S), "execute-only");
    }
}
