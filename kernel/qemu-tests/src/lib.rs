//! Helpers for the QEMU boot tests in `tests/`: find (or build) the kernel, boot it, and read
//! ABI structures out of the ELF and out of a shared guest-RAM file.

use lockscope_engine::qemu::{Captured, QemuConfig, RAM_BASE};
use object::{Object, ObjectSymbol};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Generous: tests run two QEMUs at once on two cores, next to other builds.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// The kernel ELF: `$LOCKSCOPE_KERNEL` (set by `cargo xtask test`), or built here on first use.
pub fn kernel() -> &'static Path {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL.get_or_init(|| {
        if let Some(p) = std::env::var_os("LOCKSCOPE_KERNEL") {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "LOCKSCOPE_KERNEL={} does not exist; run `cargo xtask build`",
                p.display()
            );
            return p;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--manifest-path", "kernel/Cargo.toml"])
            .args(["--target", "riscv64gc-unknown-none-elf", "--release"])
            .args(["--target-dir", "target/kernel"])
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("running cargo to build the kernel");
        assert!(
            st.success(),
            "building the kernel failed; try `cargo xtask build`"
        );
        root.join("target/kernel/riscv64gc-unknown-none-elf/release/lockscope-kernel")
    })
}

/// Boots the kernel with `smp` harts and `args`, to the end, and returns what happened.
pub fn boot(smp: u32, args: &str) -> Captured {
    boot_with(QemuConfig::new(kernel()).smp(smp).bootargs(args))
}

pub fn boot_with(cfg: QemuConfig) -> Captured {
    let what = cfg.display();
    let c = cfg
        .run_captured(BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !c.timed_out,
        "{what} did not finish in {BOOT_TIMEOUT:?}; console:\n{}",
        c.console
    );
    c
}

/// The value of a `key= N` line (`tot= 12`).
pub fn number_after(console: &str, prefix: &str) -> Option<u64> {
    console
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Address and size of an ELF symbol.
pub fn symbol(elf: &[u8], name: &str) -> Option<(u64, u64)> {
    let file = object::File::parse(elf).ok()?;
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| (s.address(), s.size()))
}

/// The bytes of an ELF symbol's initial value, from the section that holds it.
pub fn symbol_bytes(elf: &[u8], name: &str) -> Option<Vec<u8>> {
    use object::ObjectSection;
    let file = object::File::parse(elf).ok()?;
    let sym = file.symbols().find(|s| s.name() == Ok(name))?;
    let section = file.section_by_index(sym.section_index()?).ok()?;
    let data = section.data().ok()?;
    let off = (sym.address() - section.address()) as usize;
    data.get(off..off + sym.size() as usize).map(<[u8]>::to_vec)
}

/// Guest RAM saved in a shared memory-backend file after QEMU exited.
pub struct Ram(pub Vec<u8>);

impl Ram {
    pub fn load(path: &Path) -> Ram {
        Ram(std::fs::read(path).expect("reading the shared RAM file"))
    }

    pub fn bytes(&self, addr: u64, len: usize) -> &[u8] {
        let off = addr.checked_sub(RAM_BASE).expect("address below RAM") as usize;
        &self.0[off..off + len]
    }

    /// A `Pod` value at guest address `addr`.
    pub fn read<T: bytemuck::Pod>(&self, addr: u64) -> T {
        bytemuck::pod_read_unaligned(self.bytes(addr, std::mem::size_of::<T>()))
    }

    /// Element `i` of an array of `T` at `addr`.
    pub fn index<T: bytemuck::Pod>(&self, addr: u64, i: usize) -> T {
        self.read(addr + (i * std::mem::size_of::<T>()) as u64)
    }
}

/// Symbolizes a return address (`pc - 1`) to `(file, line)` with the kernel's DWARF: the
/// innermost inlined frame that is kernel code, skipping Rust's library (a guard's release goes
/// through an inlined `core::ptr::drop_in_place`) and the lock module itself.
pub fn source_line(loader: &addr2line::Loader, pc: u64) -> Option<(String, u32)> {
    let mut frames = loader.find_frames(pc - 1).ok()?;
    while let Ok(Some(frame)) = frames.next() {
        let Some(loc) = frame.location else { continue };
        let (Some(file), Some(line)) = (loc.file, loc.line) else {
            continue;
        };
        if file.starts_with("/rustc/") || file.ends_with("src/spinlock.rs") {
            continue;
        }
        return Some((file.to_string(), line));
    }
    None
}
