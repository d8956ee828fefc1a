//! [`AbiSource`]: the lockscope kernel as a [`Source`].

use std::ops::Range;

use lockscope_abi as abi;

use super::error::AbiError;
use super::layout::Layout;
use super::pod::{read_pod, read_u32};
use super::reader::AbiReader;
use crate::memory::GuestMemory;
use crate::model::{LockEvent, Snapshot};
use crate::qemu::RAM_BASE;
use crate::sources::{Drained, Source, SourceError};
use crate::symbols::Symbols;

/// Guest RAM the reader assumes when the session does not know it and the kernel reports none
/// it can believe: QEMU's default, and what the kernel is tested with.
const DEFAULT_RAM: u64 = 128 << 20;
/// Largest RAM a kernel's own report is believed up to.
const MAX_RAM: u64 = 16 << 30;

/// The lockscope kernel, read through its ABI root descriptor.
pub struct AbiSource {
    root_addr: u64,
    /// Guest RAM, when the session knows it (it booted QEMU); else from the kernel's root.
    ram: Option<Range<u64>>,
    reader: Option<AbiReader>,
}

impl AbiSource {
    /// A source for the kernel whose root descriptor is at `root_addr`. Checks the root as
    /// built into the ELF (magic, ABI version, record sizes) before anything is booted, so a
    /// mismatched kernel is refused at once. `ram` is guest RAM when known.
    pub fn new(
        symbols: &Symbols,
        root_addr: u64,
        ram: Option<Range<u64>>,
    ) -> Result<Self, AbiError> {
        let root: abi::Root = read_pod(&mut symbols.elf_memory(), root_addr)?;
        Layout::check_identity(&root, root_addr)?;
        Ok(AbiSource {
            root_addr,
            ram,
            reader: None,
        })
    }

    /// The reader, once [`Source::ready`] has opened it.
    pub fn reader(&self) -> Option<&AbiReader> {
        self.reader.as_ref()
    }

    /// Guest RAM as the session knows it, else as the kernel reports it (bounded).
    fn ram(&self, mem: &mut dyn GuestMemory) -> Result<Range<u64>, AbiError> {
        if let Some(r) = &self.ram {
            return Ok(r.clone());
        }
        let root: abi::Root = read_pod(mem, self.root_addr)?;
        let size = if root.ram_base == RAM_BASE && root.ram_size > 0 && root.ram_size <= MAX_RAM {
            root.ram_size
        } else {
            DEFAULT_RAM
        };
        Ok(RAM_BASE..RAM_BASE + size)
    }

    fn opened(&mut self) -> Result<&mut AbiReader, AbiError> {
        self.reader.as_mut().ok_or(AbiError::NotReady)
    }
}

impl Source for AbiSource {
    fn describe(&self) -> String {
        format!("lockscope ABI v{}", abi::ABI_VERSION)
    }

    fn ready(&mut self, mem: &mut dyn GuestMemory, from_boot: bool) -> Result<bool, SourceError> {
        if self.reader.is_some() {
            return Ok(true);
        }
        let ram = self.ram(mem)?;
        match AbiReader::open(mem, self.root_addr, ram) {
            Ok(mut reader) => {
                if !from_boot {
                    // History before an attach is taken as far as the rings go, not counted
                    // as lost.
                    reader.skip_to_history(mem)?;
                }
                self.reader = Some(reader);
                Ok(true)
            }
            Err(AbiError::NotReady) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn has_events(&self) -> bool {
        true
    }

    fn drain(
        &mut self,
        mem: &mut dyn GuestMemory,
        budget: usize,
        out: &mut Vec<LockEvent>,
    ) -> Result<Drained, SourceError> {
        let stats = self.opened()?.drain(mem, budget, out)?;
        let lost = stats
            .per_hart
            .iter()
            .enumerate()
            .filter(|(_, (_, lost))| *lost > 0)
            .map(|(h, (_, lost))| (h as u32, *lost))
            .collect();
        Ok(Drained { lost })
    }

    fn snapshot(
        &mut self,
        mem: &mut dyn GuestMemory,
        now_ns: u64,
    ) -> Result<Snapshot, SourceError> {
        Ok(self.opened()?.snapshot(mem, now_ns)?)
    }

    fn panicked(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let Some(reader) = &self.reader else {
            return false;
        };
        read_u32(mem, reader.layout().panic).is_ok_and(|state| state == abi::PANIC_DONE)
    }
}
