//! An unmodified xv6-riscv kernel (a student's locks lab, any year) read through its DWARF:
//! a second source of the same model as our own kernel's ABI reader.
//!
//! [`Xv6Source::open`] reads the DWARF types ([`Types`]) and discovers, by shape rather than by
//! name, the kernel's structures (see `layout`), every spinlock, sleeplock and reader-writer
//! lock inside a global variable (see `walk`), the buffer cache in any of the lab's shapes
//! (`bcache`) and the page allocator's free lists (`kmem`). Each [`Source::snapshot`] then
//! reads them through any [`GuestMemory`] with one bulk read per global, follows the lab's
//! `locks[]` registry to the locks in kalloc'd memory, walks the lists, and reports what
//! breaks the lab's invariants as [`Finding`](crate::model::Finding)s. docs/xv6.md says more.

mod bcache;
mod build;
mod findings;
mod image;
mod kmem;
mod layout;
mod objects;
mod procs;
mod read;
mod regions;
pub mod sv39;
mod walk;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::memory::{GuestMemory, MemoryError};
use crate::model::{Finding, KmemSnapshot, LockEvent, LockId, LockState, Snapshot};
use crate::symbols::types::{TypeId, Types, TypesError};
use crate::symbols::Symbols;

use super::{Drained, Source, SourceError};
use layout::{Core, Field};

pub use sv39::{Sv39, Sv39Error, VirtMemory};

/// Guest RAM on QEMU `virt` as xv6 uses it: 128 MiB at 0x80000000 (`PHYSTOP`).
pub const DEFAULT_RAM: Range<u64> = 0x8000_0000..0x8800_0000;
/// Default interval between walks of the free lists.
pub const FREE_WALK_INTERVAL: Duration = Duration::from_millis(500);
/// Locks tracked at most (xv6 registers a few hundred; the lab's `NLOCK` is 500).
const MAX_LOCKS: usize = 1 << 14;

/// Why an xv6 kernel could not be opened or read.
#[derive(Debug, Error)]
pub enum Xv6Error {
    #[error("{} has no DWARF debug info: rebuild with -g (xv6's Makefile has -ggdb in CFLAGS; check that your CFLAGS still has it)", path.display())]
    NoDebugInfo { path: PathBuf },
    #[error("{} is neither a lockscope kernel (no LOCKSCOPE_ROOT symbol) nor an xv6-shaped kernel: lockscope looked in its DWARF for {looked_for}; pass the kernel ELF (kernel/kernel in an xv6 tree)", path.display())]
    NotXv6 {
        path: PathBuf,
        looked_for: &'static str,
    },
    #[error("{} is a malformed ELF ({reason}); rebuild the kernel", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error(transparent)]
    Types(TypesError),
    #[error("the kernel running in QEMU is not {}: its code at {addr:#x} differs from the ELF's; pass the ELF QEMU was started with (rebuild with `make` if the tree changed)", path.display())]
    WrongKernel { path: PathBuf, addr: u64 },
    #[error(
        "this kernel has no `kernel_pagetable` variable, so kernel stacks cannot be translated"
    )]
    NoPageTable,
    #[error("the kernel page table at {root:#x} (from `kernel_pagetable`) is not in guest RAM: the kernel has not built it yet, or RAM is not what the ELF says")]
    BadPageTable { root: u64 },
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// A spinlock the source reports.
struct LockDef {
    addr: u64,
    /// Its variable path; `None` for a lock found only through the registry.
    path: Option<String>,
    /// What the last snapshot read: a lock freed from the registry keeps it.
    last: Option<LockState>,
}

/// What a lock is for, to check its name against the lab's `statslock` prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Allocator,
    Cache,
}

/// A reader-writer lock instance and its author's fields.
struct RwDef {
    path: String,
    addr: u64,
    lock: u64,
    fields: Vec<(String, Field, Option<TypeId>)>,
}

/// Reads an xv6 kernel's state. See the module docs.
pub struct Xv6Source {
    path: PathBuf,
    types: Arc<Types>,
    image: image::Image,
    core: Core,
    sleeplocks: Vec<(String, u64)>,
    rwlocks: Vec<RwDef>,
    bcache: Option<bcache::BcacheLayout>,
    kmem: Option<kmem::KmemLayout>,
    roles: HashMap<u64, Role>,
    /// The registry's own lock and the other locks of its unit (`lock_locks`), which the lab
    /// never names.
    exempt: HashSet<u64>,
    locks: Vec<LockDef>,
    ids: HashMap<u64, LockId>,
    regions: regions::Regions,
    names: HashMap<u64, String>,
    confirmed: HashSet<findings::Key>,
    marks: Vec<u16>,
    nharts: Option<u32>,
    free_walk_budget: usize,
    free_walk_interval: Duration,
    /// The last walk of the free lists: when, what it counted, its confirmed findings, and
    /// its candidates (confirmed against the next walk's).
    free_walk: Option<(Instant, KmemSnapshot, Vec<Finding>)>,
    free_walk_confirmed: HashSet<findings::Key>,
    page_table: Option<Sv39>,
}

impl std::fmt::Debug for Xv6Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xv6Source")
            .field("path", &self.path)
            .field("locks", &self.locks.len())
            .finish_non_exhaustive()
    }
}

impl Xv6Source {
    /// Opens the xv6 kernel `symbols` was loaded from, assuming [`DEFAULT_RAM`].
    pub fn open(symbols: &Symbols) -> Result<Self, Xv6Error> {
        Self::open_with_ram(symbols, DEFAULT_RAM)
    }

    /// Opens the kernel for a guest whose RAM is `ram` (QEMU's `-m`).
    pub fn open_with_ram(symbols: &Symbols, ram: Range<u64>) -> Result<Self, Xv6Error> {
        let types = Types::load(symbols).map_err(|e| match e {
            TypesError::NoDebugInfo { path } => Xv6Error::NoDebugInfo { path },
            other => Xv6Error::Types(other),
        })?;
        Self::with_types(symbols, Arc::new(types), ram)
    }

    /// Checks that `symbols` is an xv6-shaped kernel (a `struct spinlock` with `locked`,
    /// `name` and `cpu`, and the global array of the `struct cpu` it points to) without
    /// building a source: what kernel detection asks.
    pub fn recognize(symbols: &Symbols) -> Result<(), Xv6Error> {
        let types = Types::load(symbols).map_err(|e| match e {
            TypesError::NoDebugInfo { path } => Xv6Error::NoDebugInfo { path },
            other => Xv6Error::Types(other),
        })?;
        layout::find_core(&types, symbols.path()).map(|_| ())
    }

    /// Like [`Xv6Source::open_with_ram`], with types already read.
    pub fn with_types(
        symbols: &Symbols,
        types: Arc<Types>,
        ram: Range<u64>,
    ) -> Result<Self, Xv6Error> {
        let path = symbols.path().to_owned();
        let core = layout::find_core(&types, &path)?;
        let image = image::Image::new(symbols, ram.clone())?;
        build::build(path, types, image, core)
    }

    /// The DWARF types, for the analyses that need variables at a pc (panics, deadlocks).
    pub fn types(&self) -> &Arc<Types> {
        &self.types
    }

    /// Limits the harts reported to the first `n` (QEMU's `-smp`); otherwise every entry of
    /// `cpus[]` that has run.
    pub fn set_nharts(&mut self, n: u32) {
        self.nharts = Some(n);
    }

    /// Free-list nodes read per walk at most (default: every page of RAM). Through the gdb
    /// stub each node is a round trip: lower it there; 0 skips the walk.
    pub fn set_free_list_budget(&mut self, nodes: usize) {
        self.free_walk_budget = nodes;
    }

    /// How often the free lists are walked (default [`FREE_WALK_INTERVAL`]); snapshots in
    /// between repeat the last walk's counts. A walk reads every free page's first word (all of
    /// RAM's pages when the machine is idle): it is most of a snapshot's cost.
    pub fn set_free_list_interval(&mut self, every: Duration) {
        self.free_walk_interval = every;
    }

    /// How the buffer cache was found, e.g. `bcache.bucket[*]: 13 buckets, each a lock and a
    /// list head`; `None` without a buffer cache.
    pub fn bcache_layout(&self) -> Option<&str> {
        self.bcache.as_ref().map(|b| b.description.as_str())
    }

    /// Paths of the locks found in global variables, in id order.
    pub fn lock_paths(&self) -> impl Iterator<Item = &str> {
        self.locks.iter().filter_map(|l| l.path.as_deref())
    }

    /// The kernel's page table (`kernel_pagetable`), for reading kernel stacks at their
    /// virtual addresses with [`VirtMemory`]. Cached after the first success.
    pub fn kernel_page_table(&mut self, mem: &mut dyn GuestMemory) -> Result<Sv39, Xv6Error> {
        if let Some(t) = &self.page_table {
            return Ok(t.clone());
        }
        let addr = self.core.kernel_pagetable.ok_or(Xv6Error::NoPageTable)?;
        let mut b = [0u8; 8];
        mem.read(addr, &mut b)?;
        let root = u64::from_le_bytes(b);
        if root == 0 || root % sv39::PAGE_SIZE != 0 || !self.image.ram.contains(&root) {
            return Err(Xv6Error::BadPageTable { root });
        }
        let t = Sv39::new(root);
        self.page_table = Some(t.clone());
        Ok(t)
    }

    fn lock_id(&self, addr: u64) -> Option<LockId> {
        self.ids.get(&addr).copied()
    }
}

impl Source for Xv6Source {
    fn describe(&self) -> String {
        "xv6 (DWARF)".into()
    }

    /// Checks that the running kernel is this ELF (its first code bytes); QEMU loads the ELF
    /// before the first instruction, so this is true from the start.
    fn ready(&mut self, mem: &mut dyn GuestMemory, _from_boot: bool) -> Result<bool, SourceError> {
        let (addr, want) = &self.image.text_probe;
        if want.is_empty() {
            return Ok(true);
        }
        let mut got = vec![0u8; want.len()];
        mem.read(*addr, &mut got)?;
        if got.iter().all(|&b| b == 0) {
            return Ok(false);
        }
        if &got != want {
            return Err(Xv6Error::WrongKernel {
                path: self.path.clone(),
                addr: *addr,
            }
            .into());
        }
        Ok(true)
    }

    fn has_events(&self) -> bool {
        false
    }

    fn drain(
        &mut self,
        _mem: &mut dyn GuestMemory,
        _budget: usize,
        _out: &mut Vec<LockEvent>,
    ) -> Result<Drained, SourceError> {
        Ok(Drained::default())
    }

    fn snapshot(
        &mut self,
        mem: &mut dyn GuestMemory,
        now_ns: u64,
    ) -> Result<Snapshot, SourceError> {
        Ok(self.read_snapshot(mem, now_ns)?)
    }

    fn panicked(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let Some((addr, f)) = self.core.panicked else {
            return false;
        };
        let mut b = [0u8; 8];
        let len = f.end() as usize;
        mem.read(addr, &mut b[..len.min(8)]).is_ok() && f.get(&b).is_some_and(|v| v != 0)
    }
}
