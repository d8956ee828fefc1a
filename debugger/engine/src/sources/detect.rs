//! Which kind of kernel an ELF is, and the source that reads it.

use std::ops::Range;
use std::path::PathBuf;

use thiserror::Error;

use super::abi::AbiSource;
use super::xv6::{Xv6Source, DEFAULT_RAM};
use super::{Source, SourceError};
use crate::symbols::{Symbols, KERNEL_ELF_HINT};

/// A kernel lockscope knows how to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// The lockscope kernel: its ABI root descriptor ([`lockscope_abi::ROOT_SYMBOL`]) is at
    /// `root`.
    Abi { root: u64 },
    /// An unmodified xv6 kernel: its DWARF has a `struct spinlock` and `cpus[]`.
    Xv6,
}

/// Why an ELF is not a kernel lockscope can read. Each message says what was looked for.
#[derive(Debug, Error)]
pub enum DetectError {
    #[error("{} has no {root} symbol and no DWARF debug info, so lockscope cannot find its locks: rebuild it with -g (xv6's Makefile has -ggdb), or pass --kernel with the lockscope kernel ELF, e.g. {KERNEL_ELF_HINT}", path.display(), root = lockscope_abi::ROOT_SYMBOL)]
    NoDebugInfo { path: PathBuf },
    #[error("{} is not a kernel lockscope can read: it has no {root} symbol (the lockscope kernel's ABI root); pass --kernel with the lockscope kernel ELF, e.g. {KERNEL_ELF_HINT}", path.display(), root = lockscope_abi::ROOT_SYMBOL)]
    Unrecognized { path: PathBuf },
}

/// Says which kind of kernel `symbols` is: [`lockscope_abi::ROOT_SYMBOL`] means ours.
pub fn detect(symbols: &Symbols) -> Result<KernelKind, DetectError> {
    if let Ok(root) = symbols.symbol(lockscope_abi::ROOT_SYMBOL) {
        return Ok(KernelKind::Abi { root: root.address });
    }
    let path = symbols.path().to_path_buf();
    if !symbols.has_debug_info() {
        return Err(DetectError::NoDebugInfo { path });
    }
    // An xv6-shaped kernel: reading its DWARF finds `struct spinlock` and `cpus[]`.
    if Xv6Source::open(symbols).is_ok() {
        return Ok(KernelKind::Xv6);
    }
    Err(DetectError::Unrecognized { path })
}

/// The source for a kernel of `kind`. `ram` is guest RAM when the session knows it (it booted
/// QEMU); otherwise the source finds out from the target.
pub fn open(
    kind: KernelKind,
    symbols: &Symbols,
    ram: Option<Range<u64>>,
) -> Result<Box<dyn Source>, SourceError> {
    match kind {
        KernelKind::Abi { root } => Ok(Box::new(AbiSource::new(symbols, root, ram)?)),
        KernelKind::Xv6 => Ok(Box::new(Xv6Source::open_with_ram(
            symbols,
            ram.unwrap_or(DEFAULT_RAM),
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixture(name: &str) -> Symbols {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/symbols")
            .join(name);
        Symbols::load(path).expect("loading a fixture ELF")
    }

    #[test]
    fn an_elf_that_is_no_known_kernel_is_refused_with_what_was_looked_for() {
        let e = detect(&fixture("fixture.elf")).unwrap_err().to_string();
        assert!(e.contains("LOCKSCOPE_ROOT"), "{e}");
        assert!(e.contains("lockscope kernel"), "{e}");
        let e = detect(&fixture("fixture-nodwarf.elf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rebuild it with -g"), "{e}");
    }
}
