//! What planning takes and gives: the lock functions to look for, the watch plan, and what the
//! plugin cannot see.

use lockscope_plugin_abi::{Watch, WatchKind};

/// The lock functions of a kernel, by (demangled) symbol name. A name that is not in the ELF is
/// skipped; `acquire` and `release` must each resolve to at least one function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockFunctions {
    /// Functions that contain the test-and-set loop.
    pub acquire: Vec<String>,
    /// Functions whose callers are the acquisition's call site (`file:line`); calls between
    /// these and `acquire` are not sites. Empty: the `acquire` functions.
    pub entries: Vec<String>,
    /// Functions that release the lock word.
    pub release: Vec<String>,
    pub sleep_acquire: Vec<String>,
    pub sleep_release: Vec<String>,
    /// Reader-writer locks (the 2025 lab): their test-and-sets and releases, flagged.
    pub read_acquire: Vec<String>,
    pub read_release: Vec<String>,
    pub write_acquire: Vec<String>,
    pub write_release: Vec<String>,
    /// The context switch (xv6 `swtch(old, new)`: stores the running thread's registers at
    /// `a0`, loads the next one's from `a1`). Lets the plugin follow a thread across harts.
    pub switch: Vec<String>,
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl LockFunctions {
    /// xv6-riscv and its labs: `acquire`/`release`, sleeplocks, the 2025 lab's rwlock.
    pub fn xv6() -> Self {
        Self {
            acquire: names(&["acquire"]),
            entries: Vec::new(),
            release: names(&["release"]),
            sleep_acquire: names(&["acquiresleep"]),
            sleep_release: names(&["releasesleep"]),
            read_acquire: names(&["read_acquire"]),
            read_release: names(&["read_release"]),
            write_acquire: names(&["write_acquire"]),
            write_release: names(&["write_release"]),
            switch: names(&["swtch"]),
        }
    }

    /// lockscope's own kernel: every acquisition goes through `RawSpinLock::acquire_at`, entered
    /// from `acquire`, `SpinLock::lock` and `SleepLock::acquire` (whose callers are the sites).
    pub fn lockscope_kernel() -> Self {
        let p = "lockscope_kernel::spinlock::";
        Self {
            acquire: vec![format!("{p}RawSpinLock::acquire_at")],
            entries: vec![
                format!("{p}RawSpinLock::acquire_at"),
                format!("{p}RawSpinLock::acquire"),
                format!("{p}SpinLock<T>::lock"),
                format!("{p}SleepLock::acquire"),
            ],
            release: vec![format!("{p}RawSpinLock::release_at")],
            ..Default::default()
        }
    }
}

/// What could not be seen, found while planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blind {
    /// A test-and-set outside the lock functions: an inlined acquire, a trylock or a raw
    /// `__sync_lock_test_and_set`. Its acquisitions are not seen; a `release()` of such a lock
    /// shows as an unseen release, never as a release.
    TasOutside { pc: u64, function: String },
    /// An acquire function's address is taken here: calls through it have no call site.
    AddressTaken {
        pc: u64,
        function: String,
        target: String,
    },
    /// A tail call (`j acquire`): the acquisition's site is unknown.
    TailCall {
        pc: u64,
        function: String,
        target: String,
    },
    /// An acquire function test-and-set whose success instruction could not be found: its
    /// acquisition is taken at the function's return instead (still exact, a few instructions
    /// later).
    NoSuccessPc { pc: u64, function: String },
    /// No context switch lockscope knows (`LockFunctions::switch`): events name no thread, and
    /// what a thread was doing when it moved to another hart (a pending call site, a
    /// reader-writer function, a sleeplock acquisition) is lost.
    NoSwitch { names: String },
    /// A reader-writer function that takes no spinlock through a call lockscope sees (an
    /// implementation with atomics only, or an inlined acquire): its holds are not seen.
    RwWithoutInnerLock { function: String },
}

impl std::fmt::Display for Blind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blind::TasOutside { pc, function } => write!(
                f,
                "test-and-set outside the lock functions at {pc:#x} in {function}: an inlined acquire, a trylock or a raw __sync_lock_test_and_set; its acquisitions are not seen"
            ),
            Blind::AddressTaken { pc, function, target } => write!(
                f,
                "the address of {target} is taken at {pc:#x} in {function}: acquisitions through that pointer have no call site"
            ),
            Blind::TailCall { pc, function, target } => write!(
                f,
                "tail call to {target} at {pc:#x} in {function}: those acquisitions have no call site"
            ),
            Blind::NoSuccessPc { pc, function } => write!(
                f,
                "no success branch found after the test-and-set at {pc:#x} in {function}; acquisition taken at its return"
            ),
            Blind::NoSwitch { names } => write!(
                f,
                "no context switch found (looked for {names}): events name no thread, and a thread that moves to another hart inside a lock function loses its call site"
            ),
            Blind::RwWithoutInnerLock { function } => write!(
                f,
                "{function} takes no spinlock through a call lockscope sees (atomics only, or an inlined acquire): its read and write holds are not seen"
            ),
        }
    }
}

/// The watch table for the plugin file, and what it cannot see.
#[derive(Clone, Debug, Default)]
pub struct WatchPlan {
    /// Sorted by pc.
    pub watch: Vec<Watch>,
    pub blind: Vec<Blind>,
    /// Each lock function found: (name, start, end).
    pub functions: Vec<(String, u64, u64)>,
    /// Call sites into acquire functions.
    pub call_sites: usize,
    /// Functions that only reader-writer functions call (the lab's `read_acquire_inner`):
    /// their acquisitions are the rw lock's inner ones.
    pub rw_helpers: Vec<String>,
}

impl WatchPlan {
    pub fn count(&self, kind: WatchKind) -> usize {
        self.watch.iter().filter(|w| w.kind == kind as u32).count()
    }
}
