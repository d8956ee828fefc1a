//! Which kind of kernel an ELF is, and the source that reads it.

use std::ops::Range;
use std::path::PathBuf;

use thiserror::Error;

use super::abi::AbiSource;
use super::xv6::{Xv6Error, Xv6Source};
use super::{Source, SourceError};
use crate::symbols::{Symbols, KERNEL_ELF_HINT};

/// Free-list nodes an xv6 source walks per snapshot when it reads through the gdb stub: none.
/// Each node is a round trip while the guest is stopped (~1.8 ms here under load), so even
/// 256 nodes stopped the guest for up to half a second; a full walk (32,000 pages on an idle
/// 128 MiB guest) would stop it for a minute. The allocator then shows no free counts.
pub const POLLED_FREE_LIST_BUDGET: usize = 0;

/// A kernel lockscope knows how to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// The lockscope kernel: its ABI root descriptor ([`lockscope_abi::ROOT_SYMBOL`]) is at
    /// `root`.
    Abi { root: u64 },
    /// An unmodified xv6-riscv kernel (a student's lab), read through its DWARF types.
    Xv6,
}

impl KernelKind {
    /// `lockscope` or `xv6`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Abi { .. } => "lockscope",
            KernelKind::Xv6 => "xv6",
        }
    }
}

/// Why an ELF is not a kernel lockscope can read. Each message says what was looked for.
#[derive(Debug, Error)]
pub enum DetectError {
    #[error("{} has no {root} symbol and no DWARF debug info, so lockscope cannot find its locks: rebuild it with -g (xv6's Makefile has -ggdb in CFLAGS: check that yours still has it), or pass --kernel with the lockscope kernel ELF, e.g. {KERNEL_ELF_HINT}", path.display(), root = lockscope_abi::ROOT_SYMBOL)]
    NoDebugInfo { path: PathBuf },
    #[error("{} is not a kernel lockscope can read: it has no {root} symbol (the lockscope kernel's ABI root), and its DWARF has no xv6 shape (lockscope looked for {looked_for}); pass the kernel ELF QEMU runs (kernel/kernel in an xv6 tree), or the lockscope kernel, e.g. {KERNEL_ELF_HINT}", path.display(), root = lockscope_abi::ROOT_SYMBOL)]
    Unrecognized {
        path: PathBuf,
        looked_for: &'static str,
    },
    #[error(transparent)]
    Xv6(Xv6Error),
}

/// Says which kind of kernel `symbols` is: [`lockscope_abi::ROOT_SYMBOL`] means ours;
/// otherwise DWARF with an xv6 `struct spinlock` and `cpus[]` means xv6.
pub fn detect(symbols: &Symbols) -> Result<KernelKind, DetectError> {
    if let Ok(root) = symbols.symbol(lockscope_abi::ROOT_SYMBOL) {
        return Ok(KernelKind::Abi { root: root.address });
    }
    let path = symbols.path().to_path_buf();
    if !symbols.has_debug_info() {
        return Err(DetectError::NoDebugInfo { path });
    }
    match Xv6Source::recognize(symbols) {
        Ok(()) => Ok(KernelKind::Xv6),
        Err(Xv6Error::NoDebugInfo { path }) => Err(DetectError::NoDebugInfo { path }),
        Err(Xv6Error::NotXv6 { path, looked_for }) => {
            Err(DetectError::Unrecognized { path, looked_for })
        }
        Err(e) => Err(DetectError::Xv6(e)),
    }
}

/// What a session knows about its target before reading it.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Guest RAM, when the session knows it (it booted QEMU, or joined one that did);
    /// otherwise the source assumes or finds it.
    pub ram: Option<Range<u64>>,
    /// Harts QEMU runs (`-smp`), when known.
    pub harts: Option<u32>,
    /// The source is read through the gdb stub, each read a round trip while the guest is
    /// stopped: keep walks short.
    pub polled: bool,
}

/// The source for a kernel of `kind`.
pub fn open(
    kind: KernelKind,
    symbols: &Symbols,
    options: &OpenOptions,
) -> Result<Box<dyn Source>, SourceError> {
    match kind {
        KernelKind::Abi { root } => Ok(Box::new(AbiSource::new(
            symbols,
            root,
            options.ram.clone(),
        )?)),
        KernelKind::Xv6 => {
            let mut s = match &options.ram {
                Some(ram) => Xv6Source::open_with_ram(symbols, ram.clone())?,
                None => Xv6Source::open(symbols)?,
            };
            if let Some(n) = options.harts {
                s.set_nharts(n);
            }
            if options.polled {
                s.set_free_list_budget(POLLED_FREE_LIST_BUDGET);
            }
            Ok(Box::new(s))
        }
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
        assert!(e.contains("struct spinlock"), "{e}");
        assert!(e.contains("cpus[NCPU]"), "{e}");
        assert!(e.contains("kernel/kernel"), "{e}");
        let e = detect(&fixture("fixture-nodwarf.elf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rebuild it with -g"), "{e}");
        assert!(e.contains("-ggdb"), "{e}");
    }
}
