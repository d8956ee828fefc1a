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

/// Writes a fresh disk image into `dir`, exactly as `cargo xtask build` makes it, and returns
/// its path. Each test gets its own: QEMU locks an image it writes, and test1 writes.
pub fn fresh_disk(dir: &Path) -> PathBuf {
    use lockscope_abi::disk::{stamp, BSIZE, NBLOCKS};
    let mut image = vec![0u8; NBLOCKS as usize * BSIZE];
    for (n, block) in image.chunks_exact_mut(BSIZE).enumerate() {
        stamp(block.try_into().unwrap(), n as u32, 0);
    }
    let path = dir.join("disk.img");
    std::fs::write(&path, image).expect("writing the test disk image");
    path
}

/// A finished boot with its own disk image and shared RAM file, kept for inspection.
pub struct DiskRun {
    pub c: Captured,
    pub disk: PathBuf,
    pub ram: PathBuf,
    /// Holds the files; deleted on drop.
    pub dir: tempfile::TempDir,
}

impl DiskRun {
    pub fn ram(&self) -> Ram {
        Ram::load(&self.ram)
    }
}

/// Boots with `smp` harts and `args`, a fresh disk image and a shared RAM file, to the end.
pub fn boot_with_disk(smp: u32, args: &str) -> DiskRun {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let disk = fresh_disk(dir.path());
    let ram = dir.path().join("ram");
    let c = boot_with(
        QemuConfig::new(kernel())
            .smp(smp)
            .bootargs(args)
            .disk(&disk)
            .disk_writable(true)
            .shared_ram(&ram),
    );
    DiskRun { c, disk, ram, dir }
}

/// What [`watch_for_hang`] saw.
pub struct Hang {
    /// Guest RAM when the hang was declared (QEMU killed right after).
    pub ram: Ram,
    /// From QEMU's start to the last heartbeat change of any running hart.
    pub stalled_after: Duration,
    pub console: String,
}

/// Boots `cfg` (which must have a shared RAM file and its console on stdio) through the
/// engine's QEMU harness and watches the harts' heartbeats in guest
/// RAM while it runs. Returns once every running hart's heartbeat has kept its value for
/// `quiet` (the guest is then killed), or `None` if QEMU exits, or `limit` passes, first.
pub fn watch_for_hang(cfg: QemuConfig, quiet: Duration, limit: Duration) -> Option<Hang> {
    use lockscope_abi::{HartState, HartStatus, Root, FLAG_READY, ROOT_SYMBOL};
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    use std::time::Instant;

    let ram_path = cfg
        .shared_ram
        .clone()
        .expect("watch_for_hang needs a shared RAM file");
    let elf = std::fs::read(kernel()).expect("reading the kernel ELF");
    let (root_addr, _) = symbol(&elf, ROOT_SYMBOL).expect("the root symbol");
    let start = Instant::now();
    let qemu = cfg.spawn().unwrap_or_else(|e| panic!("{e}"));
    let mut out = qemu.take_console().expect("the console on stdio");
    let drain = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).replace('\r', "")
    });
    let read = |file: &std::fs::File, addr: u64, len: usize| -> Option<Vec<u8>> {
        let mut v = vec![0u8; len];
        file.read_exact_at(&mut v, addr.checked_sub(RAM_BASE)?)
            .ok()?;
        Some(v)
    };
    let mut file = None;
    let mut last: Vec<u64> = Vec::new();
    let mut last_change = start;
    let mut hang = false;
    while start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
        if !qemu.is_alive() {
            break;
        }
        if file.is_none() {
            file = std::fs::File::open(&ram_path).ok();
        }
        let Some(f) = &file else { continue };
        let Some(root) = read(f, root_addr, std::mem::size_of::<Root>())
            .map(|b| bytemuck::pod_read_unaligned::<Root>(&b))
        else {
            continue;
        };
        if root.flags & FLAG_READY == 0 {
            continue;
        }
        let size = std::mem::size_of::<HartState>();
        let Some(states) = read(f, root.harts, size * root.nharts as usize) else {
            continue;
        };
        let beats: Vec<u64> = states
            .chunks_exact(size)
            .map(bytemuck::pod_read_unaligned::<HartState>)
            .filter(|s| s.status == HartStatus::Running as u32)
            .map(|s| s.heartbeat)
            .collect();
        if beats != last {
            last = beats;
            last_change = Instant::now();
        } else if !last.is_empty() && last_change.elapsed() >= quiet {
            hang = true;
            break;
        }
    }
    let ram = hang.then(|| Ram::load(&ram_path));
    qemu.kill();
    let console = drain.join().unwrap_or_default();
    ram.map(|ram| Hang {
        ram,
        stalled_after: last_change - start,
        console,
    })
}
